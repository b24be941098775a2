"""A tiny trained and built run directory, made once per test process and shared (copy it before writing into it).

120 samples of 6 features in [0, 1] with 3 labels, latent dimension 2, a 16-unit MLP trained for 2 + 1 epochs,
the graph built with k = 4: about a second to make, so the integrity and hostile-input tests never need the real
default build.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

TINY = {"epochs": 2, "rbf_epochs": 1, "hidden_dims": (16,), "n_centers": 4}
N_SAMPLES = 120


@functools.lru_cache(maxsize=1)
def tiny_root() -> Path:
    """Folder holding data.npz (the samples) and run/ (model, graph, manifest), built on first use."""
    from lsg_graph.pipeline import build_run, train_run

    root = Path(tempfile.mkdtemp(prefix="lsg-tiny-"))
    atexit.register(shutil.rmtree, root, True)
    rng = np.random.default_rng(0)
    np.savez(root / "data.npz", x=rng.uniform(0, 1, (N_SAMPLES, 6)).astype(np.float32),
             y=rng.integers(0, 3, N_SAMPLES))
    train_run(root / "run", f"npz:{root / 'data.npz'}", seed=0, progress=False, **TINY)
    build_run(root / "run", k=4, progress=False)
    return root


def tiny_data() -> str:
    """The data spec of the tiny run."""
    return f"npz:{tiny_root() / 'data.npz'}"


def copy_tiny_run(destination: Path) -> Path:
    """A private copy of the tiny run at `destination` (which must not exist yet)."""
    return Path(shutil.copytree(tiny_root() / "run", destination, ignore=shutil.ignore_patterns(".lsg-graph.*")))
