"""Which RBF gate makes sigma rise off the data at each latent dimension, and what it costs in held-out likelihood.

For each latent dimension d, the cached MNIST-5k model (`trained(f"mnist{d}")`, benchmarks/_models.py) keeps its
fitted RBF network W v(z); each gate is placed around its training codes and multiplied in (no refit, so every
variant shares encoder, mean decoder and W and only the gate differs). Per variant:

* sigma on / off: median pixel-mean sigma on the training codes and at off-data points (midpoints of random code
  pairs at least 1.5 median nearest-neighbour spacings from every training code), and their ratio (target >= 3);
* held-out IWAE-16 on 400 held-out digits (nats per digit) and its change against no gate (target >= -1%);
* active: latent directions whose code variance is at least 1e-2 of the largest (collapsed units are the rest).

With `--free-bits F` the models are trained with VAEConfig(free_bits=F) (fewer collapsed units at high d).

Run:  .venv/bin/python benchmarks/gate_variance.py [--dims 2 4 8 16 32 64] [--free-bits 0]
Writes benchmarks/results/gate_variance.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import per_dimension, use_threads  # noqa: E402
from _models import mnist, with_gate  # noqa: E402

from lsg_graph.health import off_data_points  # noqa: E402
from lsg_graph.model import VAE, encode_codes, iwae_log_likelihood  # noqa: E402
from lsg_graph.model.train import active_directions  # noqa: E402

GATES: dict[str, dict[str, Any]] = {
    "none": {"rbf_gate": "none"},
    "codes 1.0": {"rbf_gate": "codes", "gate_scale": 1.0},
    "codes 1.2": {"rbf_gate": "codes", "gate_scale": 1.2},
    "shell 0.02/50": {"rbf_gate": "shell", "shell_quantile": 0.02, "shell_sharpness": 50.0},
    "shell 0.03/50": {"rbf_gate": "shell", "shell_quantile": 0.03, "shell_sharpness": 50.0},
}


@torch.no_grad()
def pixel_sigma(vae: VAE, points: np.ndarray) -> float:
    """Median over points (n, d) of the pixel-mean RBF sigma."""
    return float(np.median(vae.rbf_std(torch.as_tensor(points, dtype=torch.float32)).mean(1).numpy()))


def rows_for(d: int, free_bits: float = 0.0) -> list[dict[str, Any]]:
    """Every gate's row at latent dimension d (model trained with `free_bits`, 0: the plain ELBO)."""
    model = mnist(d, free_bits)
    base, data, (train, held) = model.vae(), model.dataset(), model.split()
    codes = encode_codes(base, data.images[train]).astype(np.float64)
    off, spacing = off_data_points(codes, 2000, np.random.default_rng(0))
    active = int(active_directions(codes)[2].sum())
    rows = []
    for name, changes in GATES.items():
        vae = with_gate(base, codes, **changes)
        iwae = float(np.mean(iwae_log_likelihood(vae, data.images[held][:400], "rbf", n_samples=16)))
        on, off_sigma = pixel_sigma(vae, codes), pixel_sigma(vae, off)
        rows.append({"d": d, "free_bits": free_bits, "active": active, "gate": name, "sigma_on": on, "sigma_off": off_sigma,
                     "ratio": off_sigma / on, "iwae": iwae, "n_off": len(off), "spacing": spacing})
        rows[-1]["iwae_change"] = 100.0 * (iwae - rows[0]["iwae"]) / abs(rows[0]["iwae"])
    return rows


COLUMNS = [("d", "d", "g"), ("active", "active", "g"), ("gate", "gate", "str"), ("sigma_on", "sigma on", "g"),
           ("sigma_off", "sigma off", "g"), ("ratio", "off/on", "x"), ("iwae", "IWAE-16", "g"),
           ("iwae_change", "IWAE change %", "g")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    parser.add_argument("--free-bits", type=float, default=0.0, help="models trained with free bits (VAEConfig)")
    parser.add_argument("--name", default="gate_variance")
    args = parser.parse_args(argv)
    use_threads(1)
    per_dimension(args, lambda d: rows_for(d, args.free_bits), COLUMNS,
                  "MNIST-5k: sigma off/on the data and held-out IWAE per gate and latent dimension", {"gates": GATES})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
