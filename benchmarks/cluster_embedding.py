"""Geodesic k-means as k-means in the geodesic embedding, against scikit-learn KMeans on the codes (issue 12, item 5).

For each latent dimension d (the cached `mnist<d>` models of benchmarks/_models.py, the paper RBF head, and their
graph over all 5000 MNIST-5k codes: k = 20, T = 8) and each seed, in one process:

* "embedding": GeodesicKMeans(10, algorithm="embedding", n_init, random_state=seed): `GeodesicEmbedding`
  (landmark MDS of the graph distances; --landmarks codes, --components dimensions) and then scikit-learn KMeans on
  the coordinates, with its outlier re-weighting (min_cluster_size "auto");
* "KMeans": scikit-learn KMeans(10, n_init) with the seed on the codes;
* "medoids": GeodesicKMeans (k-medoids on graph distances) with the same n_init, read from
  benchmarks/results/high_dim_ari10.json (10 seeds, n_init 10, the same models and graph settings) when present;
* "medoids, Euclidean": GeodesicKMeans(metric="precomputed") on the Euclidean distance matrix of the codes
  (--euclidean-medoids), which shows how much of the medoid method's loss is the method rather than the metric.

ARI against the digit labels, mean +- std over seeds, and the embedding fit's seconds per seed.

Run:  .venv/bin/python benchmarks/cluster_embedding.py [--dims 2 4 8 16 32] [--seeds 10] [--n-init 10]
      [--components 32] [--landmarks 1000] [--euclidean-medoids]
Writes benchmarks/results/cluster_embedding.json after every dimension.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import finish, machine, table, use_threads, write_json  # noqa: E402
from _models import mnist  # noqa: E402

from lsg_graph.cluster import GeodesicKMeans  # noqa: E402
from lsg_graph.registry import DEFAULT_EMBEDDING_COMPONENTS, DEFAULT_EMBEDDING_LANDMARKS  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = [
    ("d", "d", "g"), ("embedding", "GeodesicKMeans (embedding)", "str"), ("kmeans", "KMeans on codes", "str"),
    ("medoids", "GeodesicKMeans (medoids)", "str"), ("medoids_euclidean", "medoids, Euclidean", "str"),
    ("embedding_s", "fit s / seed", "s"), ("components", "components kept", "g"),
]


def mean_std(values: list[float]) -> str:
    """'mean +- std' to three decimals ('' for no values)."""
    return f"{np.mean(values):.3f} +- {np.std(values):.3f}" if values else ""


def previous_medoids() -> dict[int, tuple[float, float]]:
    """GeodesicKMeans ARI (mean, std) per d from high_dim_ari10.json (paper head), if that file exists."""
    path = RESULTS / "high_dim_ari10.json"
    if not path.exists():
        return {}
    rows = json.loads(path.read_text())["rows"]
    return {row["d"]: (row["ari_geodesic"], row["ari_geodesic_std"]) for row in rows if row["variant"].startswith("paper")}


def dimension_row(d: int, args: Any, medoids: dict[int, tuple[float, float]]) -> dict[str, Any]:
    """Every method's ARI over the seeds at latent dimension d (module docstring)."""
    model = mnist(d)
    graph = model.graph()
    codes, labels = graph.codes, graph.labels
    embedded, euclidean, seconds, kept, medoids_euclidean = [], [], [], [], []
    distances = cdist(codes, codes) if args.euclidean_medoids else None
    for seed in range(args.seeds):
        started = time.perf_counter()
        fitted = GeodesicKMeans(10, algorithm="embedding", n_components=args.components, landmarks=args.landmarks,
                                graph=graph, n_init=args.n_init, random_state=seed).fit(codes)
        seconds.append(time.perf_counter() - started)
        kept.append(fitted.embedding_.n_components_)
        embedded.append(adjusted_rand_score(labels, fitted.labels_))
        euclidean.append(adjusted_rand_score(labels, KMeans(10, n_init=args.n_init, random_state=seed).fit(codes).labels_))
        if distances is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fitted = GeodesicKMeans(10, metric="precomputed", n_init=args.n_init, random_state=seed).fit(distances)
            medoids_euclidean.append(adjusted_rand_score(labels, fitted.labels_))
        print(f"d = {d}, seed {seed}: embedding {embedded[-1]:.3f}, KMeans {euclidean[-1]:.3f}", flush=True)
    previous = medoids.get(d)
    return {
        "d": d, "embedding": mean_std(embedded), "kmeans": mean_std(euclidean),
        "medoids": "" if previous is None else f"{previous[0]:.3f} +- {previous[1]:.3f}",
        "medoids_euclidean": mean_std(medoids_euclidean), "embedding_s": float(np.mean(seconds)),
        "components": int(np.min(kept)), "ari_embedding": embedded, "ari_kmeans": euclidean,
        "ari_medoids_euclidean": medoids_euclidean,
    }


def main(argv: list[str] | None = None) -> int:
    """Run every dimension and write benchmarks/results/cluster_embedding.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--n-init", type=int, default=10)
    parser.add_argument("--components", type=int, default=DEFAULT_EMBEDDING_COMPONENTS)
    parser.add_argument("--landmarks", type=int, default=DEFAULT_EMBEDDING_LANDMARKS)
    parser.add_argument("--euclidean-medoids", action="store_true")
    parser.add_argument("--name", default="cluster_embedding")
    args = parser.parse_args(argv)
    use_threads(1)
    info = machine()
    medoids = previous_medoids()
    rows: list[dict[str, Any]] = []
    for d in args.dims:
        rows.append(dimension_row(d, args, medoids))
        print(table(f"MNIST-5k, latent dimension {d}: ARI over {args.seeds} seeds", COLUMNS, rows[-1:]), flush=True)
        write_json(args.name, {
            "machine": {"platform": info["platform"], "cpus": info["cpus"], "load": info["load_avg_start"],
                        "torch": info["torch"], "threads": 1, "load_avg_end": finish(info)["load_avg_end"]},
            "args": vars(args), "rows": rows,
        })
    print(table(f"MNIST-5k: geodesic k-means in the embedding against KMeans ({args.seeds} seeds)", COLUMNS, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
