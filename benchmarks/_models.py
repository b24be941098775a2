"""The one place benchmarks get a model: trained once the way `lsg-graph train` trains it, cached on disk.

Every benchmark that needs a trained VAE asks this module for it by name:

* ``digits``: the default model of the pipeline, ``lsg_graph.pipeline.train_run(run, "digits", seed)`` (the default
  VAEConfig, the 80/20 split of `lsg-graph train`), and its graph with the `build_run` defaults (k = 20) over all
  1797 digits: exactly what ``lsg-graph train && lsg-graph build`` makes.
* ``mnist<d>`` (e.g. ``mnist8``): the same pipeline on the MNIST-5k digits (benchmarks/_mnist.py, pixels / 255) at
  latent dimension d.
* ``digits28``: the digits upsampled to 28 x 28 (the D = 784 images of benchmarks/scale.py's conv model; pass
  ``architecture="conv"`` for it).

Keyword overrides (VAEConfig fields, e.g. ``epochs=60``) and the seed are part of the cache key, so a benchmark
that needs a variant gets its own entry trained by the same code; `refit` derives RBF-head variants
(`lsg_graph.model.refit_rbf`) of a cached model, cached too. Entries live in benchmarks/.cache/models/ (gitignored;
``LSG_BENCH_CACHE`` moves it); an entry that no longer loads (an older format) is trained again. Each entry is a
complete run directory (model, graph, manifest), so `serve` and the CLI can use it as it is.

`untrained` makes the random-weight models (no training, nothing cached) that some benchmarks time instead of a
trained decoder of the same size.

Usage:  python benchmarks/_models.py [NAME ...]     (train and cache; names: digits, digits28, mnist<d>)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CACHE = Path(os.environ.get("LSG_BENCH_CACHE", Path(__file__).resolve().parent / ".cache")) / "models"
FORMAT = 1  # bump to retrain every entry after a change of how models are made here
META = "benchmark.json"


@dataclass(frozen=True)
class CachedModel:
    """A cached, trained run: the run directory and how it was made.

    Attributes
    ----------
    name : str
        "digits" or "mnist<d>".
    folder : Path
        The run directory (model, manifest; the graph once `graph()` was called).
    data : str
        The data spec the model was trained on.
    seed : int
        Seed of training and of the split.
    train_seconds : float
        Seconds the training took when the entry was made (not now: a cached entry loads in well under one).
    """

    name: str
    folder: Path
    data: str
    seed: int
    train_seconds: float

    def vae(self, device: str = "cpu") -> Any:
        """The trained VAE (lsg_graph.model.VAE), in evaluation mode on `device`."""
        from lsg_graph.model import VAE

        return VAE.load(self.folder, device=device).eval()

    def dataset(self) -> Any:
        """The data set it was trained on (lsg_graph.data.Dataset)."""
        from lsg_graph.data import load_dataset

        return load_dataset(self.data)

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """The train and held-out row indices of `dataset()` (the split train_run made)."""
        from lsg_graph.pipeline import _split

        return _split(self.dataset(), self.seed)

    def graph(self) -> Any:
        """The latent graph with the `build_run` defaults over the whole data set, built once and cached."""
        from lsg_graph.errors import DisconnectedGraphWarning
        from lsg_graph.graph.latent_graph import GRAPH_FILE, LatentGraph
        from lsg_graph.pipeline import build_run

        if not (self.folder / GRAPH_FILE).exists():
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DisconnectedGraphWarning)
                build_run(self.folder, self.data, seed=self.seed, progress=False, device="cpu")
            print(f"{self.name}: graph built in {time.perf_counter() - started:.0f} s (cached)", flush=True)
        return LatentGraph.load(self.folder)


def digits28_npz() -> Path:
    """The 1797 digits upsampled to 28 x 28 (linear interpolation, clipped to [0, 1]) as an npz, written once."""
    path = CACHE.parent / "digits28.npz"
    if not path.is_file():
        from scipy.ndimage import zoom

        from lsg_graph.data import load_dataset

        digits = load_dataset("digits")
        squares = digits.images.reshape(-1, 8, 8)
        images = np.clip(zoom(squares, (1, 3.5, 3.5), order=1), 0.0, 1.0).reshape(len(squares), -1)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f"digits28.tmp-{os.getpid()}.npz")
        np.savez(temp, x=images.astype(np.float32), y=digits.labels, image_shape=np.array([28, 28]))
        temp.replace(path)
    return path


def data_spec(name: str) -> tuple[str, dict[str, Any]]:
    """The data spec and the VAEConfig fields that a model name implies ("digits", "digits28", "mnist<d>")."""
    if name == "digits":
        return "digits", {}
    if name == "digits28":
        return f"npz:{digits28_npz()}", {}
    if name.startswith("mnist") and name[len("mnist"):].isdigit() and int(name[len("mnist"):]) >= 1:
        from _mnist import mnist_csv

        return f"csv:{mnist_csv()}?label=last&scale=255", {"latent_dim": int(name[len("mnist"):])}
    raise SystemExit(f"unknown model {name!r}; expected 'digits', 'digits28' or 'mnist<d>' (e.g. mnist8)")


def _key(payload: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able record."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _loads(folder: Path) -> bool:
    """Whether a cache entry is complete and its model still loads."""
    from lsg_graph.model import VAE

    if not (folder / META).is_file():
        return False
    try:
        VAE.load(folder)
    except Exception:  # written by an older version: made again
        return False
    return True


def trained(name: str = "digits", seed: int = 0, **overrides: Any) -> CachedModel:
    """The model `name` trained by `train_run` with `seed` and VAEConfig `overrides`, cached on disk.

    Parameters
    ----------
    name : str
        "digits" (the default model), "digits28" (digits upsampled to 28 x 28) or "mnist<d>" (MNIST-5k at latent
        dimension d).
    seed : int
        Seed of the split and of training.
    **overrides
        VAEConfig fields (e.g. epochs, rbf_epochs, rbf_gate); part of the cache key.

    Returns
    -------
    CachedModel
        The cached run.
    """
    from lsg_graph.pipeline import train_run

    data, implied = data_spec(name)
    config = {**implied, **overrides}
    folder = CACHE / f"{name}-s{seed}-{_key({'format': FORMAT, 'name': name, 'seed': seed, 'config': config})}"
    if _loads(folder):
        meta = json.loads((folder / META).read_text())
        return CachedModel(name, folder, data, seed, float(meta["train_seconds"]))
    shutil.rmtree(folder, ignore_errors=True)
    temp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    temp.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train_run(temp, data, seed=seed, progress=False, device="cpu", **config)
    seconds = time.perf_counter() - started
    (temp / META).write_text(json.dumps({"name": name, "data": data, "seed": seed, "config": config,
                                         "train_seconds": seconds}, indent=2) + "\n")
    try:
        temp.rename(folder)  # atomic: a concurrent benchmark sees a complete entry or none
    except OSError:  # another process cached the same entry first: use theirs
        shutil.rmtree(temp, ignore_errors=True)
    print(f"{name}: trained in {seconds:.0f} s (cached in {folder})", flush=True)
    return CachedModel(name, folder, data, seed, seconds)


def mnist(latent_dim: int, free_bits: float = 0.0) -> CachedModel:
    """The cached MNIST-5k model at `latent_dim`, trained on the plain ELBO or with `free_bits` (VAEConfig)."""
    return trained(f"mnist{latent_dim}", free_bits=free_bits) if free_bits else trained(f"mnist{latent_dim}")


def refit(model: CachedModel, **changes: Any) -> Any:
    """`model`'s VAE with its RBF head refitted on its training split (`refit_rbf(**changes)`), cached.

    Parameters
    ----------
    model : CachedModel
        A cached model (`trained`).
    **changes
        Arguments of `lsg_graph.model.refit_rbf` (e.g. rbf_gate="codes"); part of the cache key.

    Returns
    -------
    VAE
        The refitted model, in evaluation mode on the CPU.
    """
    from lsg_graph.model import VAE, refit_rbf

    folder = model.folder.with_name(f"{model.folder.name}-rbf-{_key(changes)}")
    if (folder / "model.safetensors").is_file():
        try:
            return VAE.load(folder).eval()
        except Exception:  # an older format: fitted again
            pass
    train, _ = model.split()
    vae = refit_rbf(model.vae(), model.dataset().images[train], **changes)
    temp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    vae.save(temp)
    shutil.rmtree(folder, ignore_errors=True)
    temp.rename(folder)
    return vae.eval()


def with_gate(base: Any, codes: np.ndarray, **changes: Any) -> Any:
    """A copy of the VAE `base` with the gate `changes` (VAEConfig fields: rbf_gate, gate_scale, shell_quantile, ...)
    placed around its training `codes` (n, d), and its fitted RBF network W v(z) kept (no stage-2 refit)."""
    import dataclasses

    import torch

    from lsg_graph.model import VAE
    from lsg_graph.model.train import _gate_kernels, _shell, active_projection

    config = dataclasses.replace(base.config, n_gate_centers=len(codes), **changes)
    vae = VAE(config)
    vae.load_state_dict(base.state_dict(), strict=False)
    vae.rbf_fitted = base.rbf_fitted
    std = vae.rbf_std
    with torch.no_grad():
        if config.rbf_gate == "codes":
            projection = active_projection(codes)
            centres, scales = _gate_kernels(codes, len(codes), config.gate_scale, config.seed, projection)
            std.gate_centers.copy_(torch.as_tensor(centres))
            std.gate_scales.copy_(torch.as_tensor(scales))
            std.gate_projection.copy_(torch.as_tensor(projection))
        elif config.rbf_gate == "shell":
            mean, whiten, bounds = _shell(codes, config.shell_quantile)
            std.shell_mean.copy_(torch.as_tensor(mean))
            std.shell_whiten.copy_(torch.as_tensor(whiten))
            std.shell_bounds.copy_(torch.as_tensor(bounds))
    return vae.eval()


def untrained(input_dim: int, seed: int = 0, device: Any = "cpu", **config: Any) -> Any:
    """A VAE of the default architecture (plus `config`) with random weights, its RBF centres drawn from N(0, I).

    Parameters
    ----------
    input_dim : int
        Data dimension D.
    seed : int
        Seed of the weights and of the centres.
    device : str or torch.device
        Where the model lives.
    **config
        Other VAEConfig fields.

    Returns
    -------
    VAE
        A model that decodes at the cost of a trained one of the same size, marked fitted, in evaluation mode.
    """
    import torch

    from lsg_graph.model import VAE, VAEConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = VAE(VAEConfig(input_dim=input_dim, seed=seed, **{"mean_output": "sigmoid", **config}))
        with torch.no_grad():
            vae.rbf_std.centers.copy_(torch.randn_like(vae.rbf_std.centers))
            vae.rbf_std.weight_free.normal_(0.0, 1.0)
    vae.rbf_fitted = True
    return vae.eval().to(device)


if __name__ == "__main__":
    for model_name in sys.argv[1:] or ("digits",):
        trained(model_name).graph()
