"""Benchmark GeodesicKMeans on 70,000 latent codes (k = 10) next to scikit-learn's KMeans on the same codes.

Codes: a 2-D Gaussian mixture of 10 unit-variance components with centres uniform in [-10, 10]^2 (seeded), the
size of MNIST. Graph: kNN with k = 10 and Euclidean edge lengths (decoder=None; the clustering's cost does not
depend on how edges were measured), built once and timed separately. Reported: seconds for the geodesic
k-means++ init, every iteration (medoid update + one multi-source Dijkstra assignment) and in total; peak Python
heap during the fit (tracemalloc, in a second, traced run: tracing slows allocation-heavy code); the process's
peak resident memory; agreement (ARI) with the mixture components. Writes benchmarks/results/cluster.json.

Run:  .venv/bin/python benchmarks/cluster.py [--n 70000] [--clusters 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import finish, machine, table, use_threads, write_json  # noqa: E402

from lsg_graph.cluster import GeodesicKMeans  # noqa: E402
from lsg_graph.errors import DisconnectedGraphWarning  # noqa: E402
from lsg_graph.graph.latent_graph import build_latent_graph  # noqa: E402
from lsg_graph.manifolds import LinearDecoder  # noqa: E402
from lsg_graph.metric import PullbackMetric  # noqa: E402

N_NEIGHBORS = 10


def mixture(n: int, n_components: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes (n, 2) from a Gaussian mixture with unit covariances, and the component of each (n,)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10.0, 10.0, size=(n_components, 2))
    component = rng.integers(n_components, size=n)
    return centres[component] + rng.normal(size=(n, 2)), component


def traced_peak_mb(fit: Callable[[], Any]) -> float:
    """Peak traced Python heap (MB, numpy buffers included) while `fit` runs."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    fit()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def timed(fit: Callable[[], Any]) -> tuple[Any, float]:
    """The result of `fit` and its wall-clock seconds."""
    started = time.perf_counter()
    result = fit()
    return result, time.perf_counter() - started


def main() -> None:
    """Build the graph, fit both methods, print the tables and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=70_000, help="number of codes")
    parser.add_argument("--clusters", type=int, default=10, help="number of clusters (and mixture components)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of both inits")
    args = parser.parse_args()
    use_threads(2)
    info = machine()

    codes, component = mixture(args.n, args.clusters, args.seed)
    metric = PullbackMetric(LinearDecoder.identity(2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DisconnectedGraphWarning)
        graph, graph_s = timed(lambda: build_latent_graph(metric, codes, k=N_NEIGHBORS, n_nodes=1, device="cpu"))
    geodesic = GeodesicKMeans(args.clusters, graph=graph, random_state=args.seed)
    euclidean = KMeans(args.clusters, n_init=1, random_state=args.seed)

    geodesic, geodesic_s = timed(lambda: geodesic.fit(codes))
    euclidean, euclidean_s = timed(lambda: euclidean.fit(codes))
    geodesic_mb = traced_peak_mb(lambda: GeodesicKMeans(args.clusters, graph=graph, random_state=args.seed).fit(codes))
    euclidean_mb = traced_peak_mb(lambda: KMeans(args.clusters, n_init=1, random_state=args.seed).fit(codes))
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    timings = geodesic.timings_
    rounds = [u + a for u, a in zip(timings["update_s"], timings["assign_s"] + [0.0])]
    rows = [
        {
            "method": "GeodesicKMeans (graph)",
            "n_iter": geodesic.n_iter_,
            "init": timings["init_s"],
            "per_iter": float(np.mean(rounds)),
            "fit": geodesic_s,
            "peak_mb": geodesic_mb,
            "ari": adjusted_rand_score(component, geodesic.labels_),
        },
        {
            "method": "sklearn KMeans (lloyd)",
            "n_iter": euclidean.n_iter_,
            "init": None,
            "per_iter": None,
            "fit": euclidean_s,
            "peak_mb": euclidean_mb,
            "ari": adjusted_rand_score(component, euclidean.labels_),
        },
    ]
    columns = [
        ("method", "method", "str"),
        ("n_iter", "iters", "g"),
        ("init", "init s", "s"),
        ("per_iter", "s/iter", "s"),
        ("fit", "fit s", "s"),
        ("peak_mb", "peak heap MB", "s"),
        ("ari", "ARI vs truth", "g"),
    ]
    iteration_rows = [
        {"iteration": i + 1, "update": u, "assign": a, "total": u + a}
        for i, (u, a) in enumerate(zip(timings["update_s"], timings["assign_s"] + [0.0]))
    ]
    iteration_columns = [("iteration", "iter", "g"), ("update", "update s", "s"), ("assign", "assign s", "s")]
    iteration_columns.append(("total", "total s", "s"))
    bridges = graph.params["n_bridges"]
    header = (
        f"{args.n} codes (2-D mixture of {args.clusters}), k = {args.clusters} clusters, kNN k = {N_NEIGHBORS}; "
        f"graph build {graph_s:.2f} s ({graph.n_edges} edges, {bridges} bridge(s)), not in the fit times"
    )
    print(header)
    print(table("Fit (graph build excluded)", columns, rows))
    print(table("GeodesicKMeans per iteration", iteration_columns, iteration_rows))
    agreement = adjusted_rand_score(geodesic.labels_, euclidean.labels_)
    print(f"ARI(geodesic, Euclidean) = {agreement:.4f}; process peak RSS {peak_rss_mb:.0f} MB (whole script)")

    path = write_json(
        "cluster",
        {
            "n_codes": args.n,
            "n_clusters": args.clusters,
            "seed": args.seed,
            "graph": {"seconds": graph_s, "n_edges": graph.n_edges, "n_bridges": bridges, "k": N_NEIGHBORS},
            "geodesic_kmeans": {**rows[0], "inertia": geodesic.inertia_, "timings": timings},
            "sklearn_kmeans": {**rows[1], "inertia": euclidean.inertia_},
            "ari_between": agreement,
            "peak_rss_mb": peak_rss_mb,
            "bridging_warnings": len(caught),
            "environment": {
                "python": info["python"],
                "numpy": np.__version__,
                "sklearn": sklearn.__version__,
                "torch": info["torch"],
                "cpu_count_visible": info["usable_cpus"],
            },
            "machine": finish(info),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
