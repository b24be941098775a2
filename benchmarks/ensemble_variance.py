"""Does a decoder ensemble disagree more off the data than on it? (Syrota, Moreno-Munoz, Hauberg 2024, measured.)

For each latent dimension d, the cached MNIST-5k model (`trained(f"mnist{d}")`, benchmarks/_models.py) encodes its
training digits; K mean decoders (MLP d -> 128 -> 256 -> D, tanh, sigmoid output; seeds 0..K-1) are trained on
posterior samples z ~ q(z|x) of those digits with squared error, `--epochs` epochs each. Per point, the ensemble
std is the pixel-mean standard deviation of the members' outputs. Reported:

* ensemble std (median) on the training codes, on the held-out codes and at off-data points (midpoints of random
  code pairs at least 1.5 median nearest-neighbour spacings from every training code), and off / on;
* the VAE's RBF sigma widened by the ensemble, sigma^2 = sigma_rbf^2 + var_ensemble: its off / on ratio and the
  held-out IWAE-16 (400 held-out digits) against the RBF head alone.

Run:  .venv/bin/python benchmarks/ensemble_variance.py [--dims 8 16] [--members 4] [--epochs 20]
Writes benchmarks/results/ensemble_variance.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import per_dimension, use_threads  # noqa: E402
from _models import trained  # noqa: E402

from lsg_graph.health import off_data_points  # noqa: E402
from lsg_graph.model import encode_codes, iwae_log_likelihood  # noqa: E402


def member(means: torch.Tensor, stds: torch.Tensor, x: torch.Tensor, seed: int, epochs: int) -> nn.Module:
    """One mean decoder trained on posterior samples (means, stds: (n, d)) of data x (n, D), squared error."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(means.shape[1], 128), nn.Tanh(), nn.Linear(128, 256), nn.Tanh(),
                        nn.Linear(256, x.shape[1]), nn.Sigmoid())
    optimizer = torch.optim.Adam(net.parameters(), 2e-3)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for begin in range(0, len(x), 128):
            rows = order[begin : begin + 128]
            z = means[rows] + stds[rows] * torch.randn(len(rows), means.shape[1], generator=generator)
            loss = (net(z) - x[rows]).square().sum(1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


def row_for(d: int, args: Any) -> dict[str, Any]:
    """The measurements at latent dimension d."""
    model = trained(f"mnist{d}")
    vae, data, (train, held) = model.vae(), model.dataset(), model.split()
    x = torch.as_tensor(data.images[train], dtype=torch.float32)
    codes = encode_codes(vae, data.images[train]).astype(np.float64)
    held_codes = encode_codes(vae, data.images[held]).astype(np.float64)
    off, _ = off_data_points(codes, 2000, np.random.default_rng(0))
    with torch.no_grad():
        means, stds = vae.encode(x)
    started = time.perf_counter()
    members = [member(means, stds, x, seed, args.epochs) for seed in range(args.members)]
    train_s = time.perf_counter() - started

    def spread(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([net(z) for net in members]).std(0)

    def median_of(values: torch.Tensor) -> float:
        return float(values.mean(1).median())

    as_tensor = lambda points: torch.as_tensor(points, dtype=torch.float32)  # noqa: E731
    row = {"d": d, "members": args.members, "epochs": args.epochs, "train_s": train_s,
           "ens_on": median_of(spread(as_tensor(codes))), "ens_held": median_of(spread(as_tensor(held_codes))),
           "ens_off": median_of(spread(as_tensor(off)))}
    row["ens_ratio"] = row["ens_off"] / row["ens_on"]
    held_x = data.images[held][:400]
    row["iwae_rbf"] = float(np.mean(iwae_log_likelihood(vae, held_x, "rbf", n_samples=16)))
    rbf_forward = vae.rbf_std.forward
    vae.rbf_std.forward = lambda z: torch.sqrt(rbf_forward(z).square() + spread(z).square())
    with torch.no_grad():
        widened_on, widened_off = median_of(vae.rbf_std(as_tensor(codes))), median_of(vae.rbf_std(as_tensor(off)))
    row["widened_ratio"] = widened_off / widened_on
    row["iwae_widened"] = float(np.mean(iwae_log_likelihood(vae, held_x, "rbf", n_samples=16)))
    row["iwae_change"] = 100.0 * (row["iwae_widened"] - row["iwae_rbf"]) / abs(row["iwae_rbf"])
    return row


COLUMNS = [("d", "d", "g"), ("members", "K", "g"), ("epochs", "epochs", "g"), ("ens_on", "ens std on", "g"),
           ("ens_held", "held-out", "g"), ("ens_off", "off", "g"), ("ens_ratio", "off/on", "x"),
           ("widened_ratio", "widened sigma off/on", "x"), ("iwae_rbf", "IWAE RBF", "g"),
           ("iwae_widened", "IWAE widened", "g"), ("iwae_change", "change %", "g"), ("train_s", "train s", "s")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--name", default="ensemble_variance")
    args = parser.parse_args(argv)
    use_threads(1)
    per_dimension(args, lambda d: [row_for(d, args)], COLUMNS, "Decoder-ensemble disagreement on and off the data")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
