"""Geometry at latent dimension 2-64 on real MNIST digits: the paper's RBF head ("before") against the gated heads.

For each latent dimension d, one VAE is trained on the MNIST-5k training split (4000 digits; the shared model
cache of benchmarks/_models.py, `trained(f"mnist{d}")`), and its RBF precision network is refitted with each gate (`refit_rbf(rbf_gate=...)`), so
all variants share encoder and mean decoder (variants: "paper", "codes" gate, "shell" gate). Per variant:

* variance: median over points of the pixel-mean sigma on the training codes ("on") and at off-data points
  (midpoints of random code pairs at least 1.5 median nearest-neighbour spacings from every training code),
  their ratio, and the held-out IWAE bound (nats per digit);
* graph: `build_latent_graph` (k = 20, T = 8) over the codes of all 5000 digits, build seconds;
* distances: for random code pairs, Dijkstra length, straight-segment length and the lower bound (output chord),
  each divided by the length of the refined geodesic (`refine_geodesics`, method "auto"); converged count;
* clustering: ARI of GeodesicKMeans (n_init as given) against scikit-learn KMeans with the same n_init, per seed.

Run:  .venv/bin/python benchmarks/high_dim.py [--dims 2 4 8 16 32 64] [--pairs 20] [--seeds 3] [--n-init 10] [--variants paper codes shell] [--free-bits 0]
Writes benchmarks/results/high_dim.json after every dimension.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import finish, machine, table, use_threads, write_json  # noqa: E402
from _models import mnist, refit  # noqa: E402

from lsg_graph.cluster import GeodesicKMeans  # noqa: E402
from lsg_graph.distances import distance_bounds  # noqa: E402
from lsg_graph.geodesics.refine import refine_geodesics  # noqa: E402
from lsg_graph.graph.latent_graph import build_latent_graph  # noqa: E402
from lsg_graph.graph.weights import edge_lengths  # noqa: E402
from lsg_graph.health import off_data_points  # noqa: E402
from lsg_graph.metric import PullbackMetric  # noqa: E402
from lsg_graph.model import encode_codes, iwae_log_likelihood  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {  # name -> refit_rbf changes; "paper" is the trained model itself
    "paper": {},
    "codes": {"rbf_gate": "codes", "gate_scale": 1.0},
    "shell": {"rbf_gate": "shell"},
}
LABELS = {"paper": "paper RBF (before)", "codes": "gated RBF (codes)", "shell": "gated RBF (shell)"}


@torch.no_grad()
def pixel_sigma(vae: Any, points: np.ndarray) -> np.ndarray:
    """Pixel-mean decoder sigma (n,) of the RBF head at latent points (n, d)."""
    return vae.rbf_std(torch.as_tensor(points, dtype=torch.float32)).mean(1).double().numpy()


def variant_row(name: str, vae: Any, data: Any, train: np.ndarray, held: np.ndarray, args: Any) -> dict[str, Any]:
    """Every measurement of one model variant (see the module docstring)."""
    rng = np.random.default_rng(0)
    train_codes = encode_codes(vae, data.images[train]).astype(np.float64)
    off, spacing = off_data_points(train_codes, 2000, rng)
    on_sigma, off_sigma = float(np.median(pixel_sigma(vae, train_codes))), float(np.median(pixel_sigma(vae, off)))
    iwae = float(np.mean(iwae_log_likelihood(vae, data.images[held][: args.held_out], "rbf", n_samples=args.iwae)))
    codes = encode_codes(vae, data.images)
    metric = PullbackMetric(vae.decoder("rbf"))
    started = time.perf_counter()
    graph = build_latent_graph(metric, codes, data.labels, k=20, n_nodes=8)
    build_s = time.perf_counter() - started
    pairs = rng.choice(len(codes), size=(args.pairs, 2), replace=False)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = refine_geodesics(metric, graph, pairs)
    refine_s = time.perf_counter() - started
    refined = np.array([r.length for r in results])
    converged = int(sum(r.converged for r in results))
    bounds = distance_bounds(metric, graph, pairs)
    straight = edge_lengths(metric, graph.codes[pairs[:, 0]], graph.codes[pairs[:, 1]], n_nodes=64)
    stretch = bounds.upper / refined
    row = {
        "variant": name, "d": vae.latent_dim, "spacing": spacing, "n_off": len(off),
        "sigma_on": on_sigma, "sigma_off": off_sigma, "sigma_ratio": off_sigma / on_sigma, "iwae": iwae,
        "build_s": build_s, "refine_s": refine_s, "converged": converged, "n_pairs": len(pairs),
        "stretch_median": float(np.median(stretch)), "stretch_p90": float(np.quantile(stretch, 0.9)),
        "straight_ratio": float(np.median(straight / refined)), "lower_ratio": float(np.median(bounds.lower / refined)),
    }
    row.update(cluster_scores(graph, codes, data.labels, args))
    return row


def cluster_scores(graph: Any, codes: np.ndarray, labels: np.ndarray, args: Any) -> dict[str, Any]:
    """Mean and std ARI over seeds: GeodesicKMeans on the graph and KMeans on the codes, same n_init."""
    geodesic, euclidean = [], []
    for seed in range(args.seeds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = GeodesicKMeans(10, graph=graph, n_init=args.n_init, random_state=seed).fit(codes)
        geodesic.append(adjusted_rand_score(labels, model.labels_))
        kmeans = KMeans(10, n_init=args.n_init, random_state=seed).fit(codes)
        euclidean.append(adjusted_rand_score(labels, kmeans.labels_))
    return {"ari_geodesic": float(np.mean(geodesic)), "ari_geodesic_std": float(np.std(geodesic)),
            "ari_kmeans": float(np.mean(euclidean)), "ari_kmeans_std": float(np.std(euclidean))}


COLUMNS = [
    ("d", "d", "g"), ("variant", "variant", "str"), ("sigma_ratio", "sigma off/on", "x"), ("iwae", "IWAE", "g"),
    ("stretch_median", "Dijkstra/refined med", "g"), ("stretch_p90", "p90", "g"), ("straight_ratio", "straight/refined", "g"),
    ("lower_ratio", "chord/refined", "g"), ("converged", "converged", "g"), ("build_s", "build s", "s"),
    ("refine_s", "refine s", "s"), ("ari_geodesic", "ARI geodesic", "g"), ("ari_kmeans", "ARI KMeans", "g"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-init", type=int, default=10)
    parser.add_argument("--held-out", type=int, default=500)
    parser.add_argument("--iwae", type=int, default=32)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["paper", "codes", "shell"])
    parser.add_argument("--free-bits", type=float, default=0.0, help="models trained with free bits (VAEConfig)")
    parser.add_argument("--name", default="high_dim")
    args = parser.parse_args(argv)
    use_threads(1)
    info = machine()
    rows: list[dict[str, Any]] = []
    for d in args.dims:
        model = mnist(d, args.free_bits)
        data, (train, held) = model.dataset(), model.split()
        for variant in args.variants:
            vae = refit(model, **VARIANTS[variant]) if VARIANTS[variant] else model.vae()
            rows.append(variant_row(LABELS[variant], vae, data, train, held, args))
            print(table(f"MNIST-5k, latent dimension {d}", COLUMNS, rows[-1:]), flush=True)
        write_json(args.name, {
            "machine": {"platform": info["platform"], "cpus": info["cpus"], "load": info["load_avg_start"],
                        "torch": info["torch"], "threads": 1, "load_avg_end": finish(info)["load_avg_end"]},
            "args": vars(args), "variants": {name: VARIANTS[name] for name in args.variants}, "rows": rows,
        })
    print(table("MNIST-5k: before (paper RBF) and after (gated RBF), per latent dimension", COLUMNS, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
