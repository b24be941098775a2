"""Cached models for benchmarks/refine_fast.py: the default digits run (d = 2) and MNIST-5k runs at d = 8 .. 64.

Each model is trained once with the project's pipeline (`lsg_graph.pipeline.train_run` with the default VAEConfig,
fewer epochs for MNIST so training stays under two minutes per d on one thread) and its latent graph built with
the `build_latent_graph` defaults (`build_run`); both are saved under benchmarks/.cache/<name>/ (gitignored).

Usage:  python benchmarks/_refine_models.py [NAME ...]     (names: digits, mnist8, mnist16, mnist32, mnist64)
"""

from __future__ import annotations

import gzip
import sys
import time
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"
MNIST_CSV = Path("/work/data/mnist_5k.csv.gz")
MNIST_EPOCHS = 60
MNIST_RBF_EPOCHS = 20
MNIST_DIMS = (8, 16, 32, 64)
NAMES = ("digits",) + tuple(f"mnist{d}" for d in MNIST_DIMS)


def mnist_npz() -> Path:
    """MNIST-5k as an npz (pixels scaled to [0, 1], label in the last CSV column), written once into the cache."""
    path = CACHE / "mnist_5k.npz"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with gzip.open(MNIST_CSV, "rt") as stream:
            table = np.loadtxt(stream, delimiter=",", dtype=np.float64)
        images, labels = (table[:, :-1] / 255.0).astype(np.float32), table[:, -1].astype(np.int64)
        temp = path.with_suffix(".tmp.npz")
        np.savez(temp, x=images, y=labels, image_shape=np.array([28, 28]))
        temp.replace(path)
    return path


def run_dir(name: str) -> Path:
    """The cache folder of a model, trained and with its graph (built on first use)."""
    from lsg_graph.pipeline import build_run, train_run

    if name not in NAMES:
        raise SystemExit(f"unknown model {name!r}; expected one of {NAMES}")
    folder = CACHE / name
    if (folder / "graph.npz").exists() or any(folder.glob("graph*")):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if name == "digits":
        train_run(folder, "digits", progress=False, device="cpu")
        data = "digits"
    else:
        data = str(mnist_npz())
        d = int(name[len("mnist"):])
        train_run(folder, data, progress=False, device="cpu", latent_dim=d, epochs=MNIST_EPOCHS,
                  rbf_epochs=MNIST_RBF_EPOCHS)
    trained = time.perf_counter() - started
    build_run(folder, data, progress=False, device="cpu")
    print(f"{name}: trained in {trained:.0f} s, graph in {time.perf_counter() - started - trained:.0f} s", flush=True)
    return folder


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    for model in sys.argv[1:] or NAMES:
        run_dir(model)
