"""Do refined geodesic distances assign MNIST points to the GeodesicKMeans medoids better than graph distances?

For each latent dimension d (the cached MNIST-5k model `_models.mnist(d)` and its graph over all 5000 digits) and
each seed:

1. GeodesicKMeans(10, graph=graph, n_init, random_state=seed) on the graph's codes (as benchmarks/high_dim.py's
   cluster_scores does) and scikit-learn KMeans(10, n_init, random_state=seed) on the same codes;
2. a random subsample of P graph nodes (seeded by the seed); the geodesic from each of the 10 medoids
   (medoid_indices_) to each subsample point is refined with refine_geodesics(metric, graph, pairs, "auto",
   n_jobs=1), metric = PullbackMetric of a float64 copy of the RBF decoder (as benchmarks/refine_fast.py). Every
   result keeps its reported length, converged or not (unconverged and graph-kept results are counted); a point
   that is itself a medoid has distance 0 to it;
3. on the subsample: ARI against the true labels of the KMeans labels, of the GeodesicKMeans labels (argmin of the
   graph distances to the same medoids) and of the argmin of the refined lengths; how many points the refined
   lengths move to another medoid; the median graph/refined ratio over all point-medoid pairs and over each point's
   graph-nearest medoid; refinement seconds and pairs per second. The full-data ARIs (5000 digits) are recorded too.

Same-point pairs are not refined; identical (medoid, point) pairs across seeds are refined once (cached).

Run:  nice -n 10 .venv/bin/python benchmarks/cluster_refined.py [--dims 8 16] [--seeds 0 1 2] [--points 300]
      [--n-init 10] [--name cluster_refined]
Writes benchmarks/results/<name>.json after every seed.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import finish, machine, table, use_threads, write_json  # noqa: E402
from _models import mnist  # noqa: E402

from lsg_graph.cluster import GeodesicKMeans  # noqa: E402
from lsg_graph.distances import dijkstra_rows  # noqa: E402
from lsg_graph.errors import ConvergenceWarning  # noqa: E402
from lsg_graph.geodesics.refine import GeodesicResult, refine_geodesics  # noqa: E402
from lsg_graph.metric import PullbackMetric  # noqa: E402

N_CLUSTERS = 10
CHUNK = 320  # pairs per refine_geodesics call (a multiple of the CPU batch 512 // d at d = 8, 16): progress lines


def refine_all(metric: PullbackMetric, graph: Any, pairs: np.ndarray, cache: dict[tuple[int, int], GeodesicResult],
               label: str) -> tuple[list[GeodesicResult], float, int]:
    """Results for every pair (cached ones reused), seconds spent on the new ones and how many were new."""
    todo = [tuple(map(int, pair)) for pair in pairs if tuple(map(int, pair)) not in cache]
    todo = list(dict.fromkeys(todo))
    seconds = 0.0
    for start in range(0, len(todo), CHUNK):
        chunk = np.array(todo[start : start + CHUNK], dtype=np.int64)
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # counted below
            results = refine_geodesics(metric, graph, chunk, "auto", n_jobs=1)
        seconds += time.perf_counter() - started
        cache.update({(int(a), int(b)): result for (a, b), result in zip(chunk, results)})
        done = min(start + CHUNK, len(todo))
        rate = done / seconds
        print(f"  {label}: {done}/{len(todo)} pairs refined, {rate:.2f} pairs/s, "
              f"{(len(todo) - done) / rate:.0f} s left ({time.strftime('%H:%M:%S', time.gmtime())} UTC)", flush=True)
    return [cache[tuple(map(int, pair))] for pair in pairs], seconds, len(todo)


def seed_row(d: int, seed: int, graph: Any, labels: np.ndarray, metric: PullbackMetric, args: Any,
             cache: dict[tuple[int, int], GeodesicResult]) -> dict[str, Any]:
    """Every measurement of one (d, seed); see the module docstring."""
    codes = graph.codes
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        geodesic = GeodesicKMeans(N_CLUSTERS, graph=graph, n_init=args.n_init, random_state=seed).fit(codes)
    geodesic_s = time.perf_counter() - started
    started = time.perf_counter()
    kmeans = KMeans(N_CLUSTERS, n_init=args.n_init, random_state=seed).fit(codes)
    kmeans_s = time.perf_counter() - started
    medoids = geodesic.medoid_indices_
    graph_distances = dijkstra_rows(graph.weights, medoids)  # (k, n)
    assert np.array_equal(np.argmin(graph_distances, axis=0), geodesic.labels_), "labels_ != graph argmin"

    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(graph.n_points, size=args.points, replace=False))
    pairs = np.array([(m, p) for m in medoids for p in sample if m != p], dtype=np.int64)  # (medoid, point)
    results, refine_s, n_new = refine_all(metric, graph, pairs, cache, f"d={d} seed={seed}")
    lengths = dict(zip(map(tuple, pairs.tolist()), (r.length for r in results)))
    refined = np.array([[0.0 if m == p else lengths[(int(m), int(p))] for p in sample] for m in medoids])  # (k, P)
    on_graph = graph_distances[:, sample]
    refined_labels = np.argmin(refined, axis=0)
    graph_labels = geodesic.labels_[sample]
    assert np.array_equal(np.argmin(on_graph, axis=0), graph_labels)
    reported = np.array([r.graph_length for r in results])
    assert np.allclose(reported, [on_graph[list(medoids).index(m), np.searchsorted(sample, p)] for m, p in pairs],
                       rtol=1e-6), "GeodesicResult.graph_length != Dijkstra distance"
    ratio = np.array([r.graph_length / r.length for r in results if r.length > 0])
    nearest = np.array([on_graph[graph_labels[j], j] / refined[graph_labels[j], j]
                        for j in range(len(sample)) if refined[graph_labels[j], j] > 0])
    truth = labels[sample]
    return {
        "d": d, "seed": seed, "points": len(sample), "pairs": len(pairs), "pairs_new": n_new,
        "ari_kmeans": adjusted_rand_score(truth, kmeans.labels_[sample]),
        "ari_graph": adjusted_rand_score(truth, graph_labels),
        "ari_refined": adjusted_rand_score(truth, refined_labels),
        "moved": int((refined_labels != graph_labels).sum()),
        "converged": int(sum(r.converged for r in results)),
        "unconverged": int(sum(not r.converged for r in results)),
        "graph_kept": int(sum(r.method == "graph" for r in results)),
        "by": ", ".join(f"{m}:{sum(r.method == m for r in results)}" for m in sorted({r.method for r in results})),
        "ratio_median": float(np.median(ratio)), "ratio_nearest_median": float(np.median(nearest)),
        "refine_s": refine_s, "pairs_per_s": n_new / refine_s if refine_s > 0 else None,
        "full_ari_kmeans": adjusted_rand_score(labels, kmeans.labels_),
        "full_ari_graph": adjusted_rand_score(labels, geodesic.labels_),
        "geodesic_kmeans_s": geodesic_s, "kmeans_s": kmeans_s, "medoids": medoids.tolist(),
    }


MEANS = ["ari_kmeans", "ari_graph", "ari_refined", "moved", "ratio_median", "ratio_nearest_median", "pairs_per_s",
         "full_ari_kmeans", "full_ari_graph"]
SUMS = ["pairs", "pairs_new", "converged", "unconverged", "graph_kept", "refine_s"]


def summary(d: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds (sums for the counts) of one d's rows."""
    out: dict[str, Any] = {"d": d, "seeds": len(rows)}
    for key in MEANS:
        values = np.array([row[key] for row in rows if row[key] is not None], dtype=float)
        out[key], out[f"{key}_std"] = float(values.mean()), float(values.std())
    for key in SUMS:
        out[key] = float(sum(row[key] for row in rows)) if key == "refine_s" else int(sum(row[key] for row in rows))
    for key in ("ari_kmeans", "ari_graph", "ari_refined"):
        out[f"{key}_pm"] = f"{out[key]:.3f} +- {out[f'{key}_std']:.3f}"
    return out


SEED_COLUMNS = [
    ("d", "d", "g"), ("seed", "seed", "g"), ("ari_kmeans", "ARI KMeans", "g"), ("ari_graph", "ARI graph", "g"),
    ("ari_refined", "ARI refined", "g"), ("moved", "moved", "g"), ("converged", "conv", "g"), ("pairs", "pairs", "g"),
    ("graph_kept", "graph kept", "g"), ("ratio_median", "graph/refined", "g"),
    ("ratio_nearest_median", "nearest", "g"), ("refine_s", "refine s", "s"), ("pairs_per_s", "pairs/s", "g"),
    ("full_ari_kmeans", "full KMeans", "g"), ("full_ari_graph", "full graph", "g"),
]
SUMMARY_COLUMNS = [
    ("d", "d", "g"), ("seeds", "seeds", "g"), ("ari_kmeans_pm", "ARI KMeans", "str"),
    ("ari_graph_pm", "ARI graph geodesic", "str"), ("ari_refined_pm", "ARI refined geodesic", "str"),
    ("moved", "moved (mean)", "g"), ("converged", "converged", "g"), ("pairs", "of pairs", "g"),
    ("graph_kept", "graph kept", "g"), ("ratio_median", "graph/refined med", "g"),
    ("ratio_nearest_median", "nearest med", "g"), ("pairs_per_s", "pairs/s", "g"),
    ("full_ari_kmeans", "full KMeans", "g"), ("full_ari_graph", "full graph", "g"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--points", type=int, default=300)
    parser.add_argument("--n-init", type=int, default=10)
    parser.add_argument("--name", default="cluster_refined")
    args = parser.parse_args(argv)
    use_threads(1)
    torch.set_num_threads(1)
    info = machine()
    rows: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    with threadpool_limits(1):
        for d in args.dims:
            model = mnist(d)
            vae, graph = model.vae(), model.graph()
            labels = graph.labels if graph.labels is not None else model.dataset().labels
            metric = PullbackMetric(copy.deepcopy(vae.decoder("rbf")).double())
            cache: dict[tuple[int, int], GeodesicResult] = {}
            mine: list[dict[str, Any]] = []
            for seed in args.seeds:
                mine.append(seed_row(d, seed, graph, np.asarray(labels), metric, args, cache))
                print(table(f"MNIST-5k, d = {d}, seed {seed}", SEED_COLUMNS, mine[-1:]), flush=True)
                write_json(args.name, {
                    "machine": {**info, "load_avg_end": finish(info)["load_avg_end"], "nice": os.nice(0)},
                    "args": vars(args), "summary": summaries + [summary(d, mine)], "rows": rows + mine,
                })
            rows += mine
            summaries.append(summary(d, mine))
            print(table(f"MNIST-5k, d = {d}: mean +- std over {len(mine)} seeds (counts summed)", SUMMARY_COLUMNS,
                        summaries[-1:]), flush=True)
    print(table("MNIST-5k subsample: KMeans, graph and refined point-medoid assignment", SUMMARY_COLUMNS, summaries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
