"""Shared fixtures: a seed, the dtypes and devices to test in (with their tolerances), the digits, and one tiny
trained model and one tiny run directory built once per test session.

Modelled on scikit-learn's `global_dtype` and torchdiffeq's per-dtype tolerances: a test that takes `dtype` runs in
float32 and float64 and compares with `TOLERANCE[dtype]`; `device` adds "cuda" when one is present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SEED = 0
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}  # relative, for results computed two ways
TINY_VAE = {"hidden_dims": (32, 16), "epochs": 3, "rbf_epochs": 2, "n_centers": 8, "batch_size": 64}
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture
def seed() -> int:
    """The seed of the test suite."""
    return SEED


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    """Each floating dtype the library computes in; compare with TOLERANCE[dtype]."""
    return request.param


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """The CPU, and CUDA where a device is present."""
    return torch.device(request.param)


@pytest.fixture(scope="session")
def digits() -> np.ndarray:
    """scikit-learn's digits scaled to [0, 1], (1797, 64) float32."""
    from sklearn.datasets import load_digits

    return (load_digits().data / 16.0).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_vae(digits: np.ndarray):  # noqa: ANN201 - a lsg_graph.model.VAE
    """A VAE trained for 3 + 2 epochs on 300 digits (both stages fitted), once per session: share, do not modify."""
    from lsg_graph.model import VAEConfig, train_vae

    return train_vae(digits[:300], VAEConfig(input_dim=64, seed=SEED, **TINY_VAE), progress=False)[0]


@pytest.fixture(scope="session")
def tiny_run_dir() -> Path:
    """The tiny trained and built run of tests/tiny_run.py (shared: copy it with copy_tiny_run before writing)."""
    from tiny_run import tiny_root

    return tiny_root() / "run"
