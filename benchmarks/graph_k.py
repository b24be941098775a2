"""Does a larger k bring graph distances closer to geodesics at latent dimension 8-16, and at what build cost?

Issue 12 asks for median Dijkstra / geodesic <= 1.05 on MNIST-5k with a build at most 3x today's (k = 20), and
lists "k that grows with d" as a direction. For each latent dimension d (the cached `mnist<d>` models of
benchmarks/_models.py, the paper RBF head) and each k, this builds `build_latent_graph` (T = 8) over the codes of
all 5000 digits and reports, in one process:

* build seconds and their ratio to the first k;
* Dijkstra / reference length for random code pairs (median, p90), where the reference is, per pair, the shortest
  refined curve (`refine_geodesics`, "auto") over the graphs of every k: all are lengths of actual curves, so the
  shortest is the best upper bound of the geodesic distance (converged counts per k are given);
* ARI of GeodesicKMeans on that graph and of scikit-learn KMeans (same n_init), mean over seeds.

Run:  .venv/bin/python benchmarks/graph_k.py [--dims 8 16] [--ks 20 40 80] [--pairs 20] [--seeds 3] [--n-init 10]
Writes benchmarks/results/graph_k.json after every dimension.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import finish, machine, table, use_threads, write_json  # noqa: E402
from _models import mnist  # noqa: E402
from high_dim import cluster_scores  # noqa: E402

from lsg_graph.distances import distance_bounds  # noqa: E402
from lsg_graph.geodesics.refine import refine_geodesics  # noqa: E402
from lsg_graph.graph.latent_graph import build_latent_graph  # noqa: E402
from lsg_graph.metric import PullbackMetric  # noqa: E402
from lsg_graph.model import encode_codes  # noqa: E402

COLUMNS = [
    ("d", "d", "g"), ("k", "k", "g"), ("build_s", "build s", "s"), ("build_ratio", "build / first k", "x"),
    ("stretch_median", "Dijkstra/ref med", "g"), ("stretch_p90", "p90", "g"), ("converged", "refined converged", "g"),
    ("refined_ratio", "refined/ref med", "g"), ("ari_geodesic", "ARI geodesic", "g"), ("ari_kmeans", "ARI KMeans", "g"),
]


def dimension_rows(d: int, args: Any) -> list[dict[str, Any]]:
    """Every k's row at latent dimension d (module docstring)."""
    model = mnist(d)
    vae, data = model.vae(), model.dataset()
    codes = encode_codes(vae, data.images)
    metric = PullbackMetric(vae.decoder("rbf"))
    pairs = np.random.default_rng(0).choice(len(codes), size=(args.pairs, 2), replace=False)
    rows, refined = [], []
    for k in args.ks:
        started = time.perf_counter()
        graph = build_latent_graph(metric, codes, data.labels, k=k, n_nodes=8)
        build_s = time.perf_counter() - started
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = refine_geodesics(metric, graph, pairs)
        refined.append(np.array([r.length for r in results]))
        upper = distance_bounds(metric, graph, pairs).upper
        row = {"d": d, "k": k, "build_s": build_s, "upper": upper.tolist(), "refined": refined[-1].tolist(),
               "converged": int(sum(r.converged for r in results)), "n_pairs": len(pairs)}
        row.update(cluster_scores(graph, codes, data.labels, args))
        rows.append(row)
        print(f"d = {d}, k = {k}: build {build_s:.1f} s, ARI {row['ari_geodesic']:.3f}", flush=True)
    reference = np.min(np.stack(refined), axis=0)
    for row in rows:
        stretch = np.array(row["upper"]) / reference
        row.update(build_ratio=row["build_s"] / rows[0]["build_s"], stretch_median=float(np.median(stretch)),
                   stretch_p90=float(np.quantile(stretch, 0.9)),
                   refined_ratio=float(np.median(np.array(row["refined"]) / reference)))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the k sweep per latent dimension and write benchmarks/results/graph_k.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--ks", type=int, nargs="+", default=[20, 40, 80])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-init", type=int, default=10)
    parser.add_argument("--name", default="graph_k")
    args = parser.parse_args(argv)
    use_threads(1)
    info = machine()
    rows: list[dict[str, Any]] = []
    for d in args.dims:
        rows.extend(dimension_rows(d, args))
        print(table(f"MNIST-5k, latent dimension {d}", COLUMNS, [r for r in rows if r["d"] == d]), flush=True)
        write_json(args.name, {
            "machine": {"platform": info["platform"], "cpus": info["cpus"], "load": info["load_avg_start"],
                        "torch": info["torch"], "threads": 1, "load_avg_end": finish(info)["load_avg_end"]},
            "args": vars(args), "rows": rows,
        })
    print(table("MNIST-5k: graph distances and clustering against k", COLUMNS, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
