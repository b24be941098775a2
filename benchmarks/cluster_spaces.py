"""How well does each space cluster MNIST digits: latent codes, decoded means, pixels (KMeans ARI per latent dim d).

The pullback metric measures how much the decoded image changes, so geodesic distances are bounded below by the
output-space chord ||g(a) - g(b)|| (g = [mu; sigma]). This benchmark asks how well that output space separates
the digit classes in the first place: scikit-learn KMeans (10 clusters, `--n-init`, `--seeds` seeds) on

* the latent codes (what Euclidean KMeans in `lsg-graph cluster` compares against),
* the decoded means mu(z) of the codes (the space the metric's chord lives in),
* the decoded [mu; sigma] (the full chord space),
* the pixels themselves (no model).

For each latent dimension, the cached MNIST-5k model (`trained(f"mnist{d}")`, benchmarks/_models.py) encodes all
5000 digits. Compare with the geodesic k-means column of benchmarks/high_dim.py.

Run:  .venv/bin/python benchmarks/cluster_spaces.py [--dims 2 4 8 16 32 64] [--seeds 10] [--n-init 10]
Writes benchmarks/results/cluster_spaces.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import per_dimension, use_threads  # noqa: E402
from _models import trained  # noqa: E402

from lsg_graph.model import encode_codes  # noqa: E402


def ari(points: np.ndarray, labels: np.ndarray, args: Any) -> tuple[float, float]:
    """Mean and std over seeds of the ARI of KMeans(10, n_init) on points (n, p)."""
    scores = [adjusted_rand_score(labels, KMeans(10, n_init=args.n_init, random_state=seed).fit(points).labels_)
              for seed in range(args.seeds)]
    return float(np.mean(scores)), float(np.std(scores))


def row_for(d: int, args: Any, pixels: dict[str, float]) -> dict[str, Any]:
    """ARI of every space at latent dimension d (the pixel score is computed once and reused)."""
    model = trained(f"mnist{d}")
    vae, data = model.vae(), model.dataset()
    codes = encode_codes(vae, data.images)
    with torch.no_grad():
        mean, std = vae.decoder("rbf")(torch.as_tensor(codes, dtype=torch.float32))
    mean, std = mean.double().numpy(), std.double().numpy()
    if not pixels:
        pixels["mean"], pixels["std"] = ari(data.images, data.labels, args)
    row: dict[str, Any] = {"d": d}
    for name, points in (("codes", codes), ("mu", mean), ("mu_sigma", np.hstack([mean, std]))):
        row[f"ari_{name}"], row[f"ari_{name}_std"] = ari(points, data.labels, args)
    row["ari_pixels"], row["ari_pixels_std"] = pixels["mean"], pixels["std"]
    return row


COLUMNS = [("d", "d", "g"), ("ari_codes", "ARI codes", "g"), ("ari_codes_std", "+-", "g"), ("ari_mu", "ARI mu(z)", "g"),
           ("ari_mu_std", "+-", "g"), ("ari_mu_sigma", "ARI [mu; sigma]", "g"), ("ari_mu_sigma_std", "+-", "g"),
           ("ari_pixels", "ARI pixels", "g")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--n-init", type=int, default=10)
    parser.add_argument("--name", default="cluster_spaces")
    args = parser.parse_args(argv)
    use_threads(1)
    pixels: dict[str, float] = {}
    per_dimension(args, lambda d: [row_for(d, args, pixels)], COLUMNS,
                  "MNIST-5k: KMeans ARI in latent, decoded and pixel space")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
