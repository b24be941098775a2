"""Refined distances in the estimators: accuracy against analytic truth and cost against graph distances.

GeodesicKMeans(distances="refined") refines every training point's distance to every medoid (k n geodesics);
GeodesicDistance(distances="refined").transform refines every new-point-to-training-code distance (m n). On the
analytic surfaces of lsg_graph.manifolds the exact distances are known, so the table gives the relative error of
the graph distances and of the refined ones (median, p90, max), the refinement's share of the time and the
time ratio refined / graph, all in one process:

    .venv/bin/python benchmarks/refined_distances.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import finish, machine, table, write_json  # noqa: E402

from lsg_graph.cluster import GeodesicKMeans  # noqa: E402
from lsg_graph.distances import GeodesicDistance  # noqa: E402
from lsg_graph.manifolds import DevelopableSurface, SphereChart  # noqa: E402


def exact(decoder, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(len(A)), np.arange(len(B)), indexing="ij")
    return decoder.distance(A[rows.ravel()], B[cols.ravel()]).reshape(len(A), len(B))


def errors(values: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    mask = truth > 1e-9
    error = np.abs(values[mask] / truth[mask] - 1.0)
    return float(np.median(error)), float(np.percentile(error, 90)), float(error.max())


def timed(function):
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = function()
    return value, time.perf_counter() - started, len(caught)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sets (a smoke run)")
    args = parser.parse_args()
    n, m, k = (40, 5, 3) if args.quick else (200, 20, 5)
    info = machine()
    rows = []
    GeodesicKMeans(2, decoder=SphereChart(), n_neighbors=4, distances="refined").fit(SphereChart().sample(12))  # warm-up
    for decoder in (SphereChart(), DevelopableSurface()):
        X, new = decoder.sample(n, seed=0), decoder.sample(m, seed=1)
        settings = {"decoder": decoder, "n_neighbors": 8, "random_state": 0}
        graph, graph_s, _ = timed(lambda: GeodesicKMeans(k, **settings).fit(X))
        centers = X[graph.medoid_indices_]
        train_truth, new_truth = exact(decoder, X, centers), exact(decoder, new, centers)
        row = {"surface": type(decoder).__name__, "task": f"k-means fit (k={k}, n={n})", "method": "graph",
               "pairs": k * n, "seconds": graph_s, "ratio": 1.0, "warnings": 0}
        row["median"], row["p90"], row["max"] = errors(graph.fit_transform(X), train_truth)
        rows.append(row)
        for method in ("gauss_newton", "auto"):
            model, seconds, caught = timed(lambda: GeodesicKMeans(k, distances="refined", refine_method=method,
                                                                 **settings).fit(X))
            row = {"surface": type(decoder).__name__, "task": f"k-means fit (k={k}, n={n})", "method": method,
                   "pairs": k * n, "seconds": seconds, "ratio": seconds / graph_s, "warnings": caught,
                   "same_medoids": bool(np.array_equal(model.medoid_indices_, graph.medoid_indices_))}
            row["median"], row["p90"], row["max"] = errors(model._medoid_distances.T, train_truth)
            rows.append(row)
            transformed, seconds_t, caught_t = timed(lambda: model.transform(new))
            _, graph_t, _ = timed(lambda: graph.transform(new))
            row = {"surface": type(decoder).__name__, "task": f"k-means transform (m={m})", "method": method,
                   "pairs": k * m, "seconds": seconds_t, "ratio": seconds_t / graph_t, "warnings": caught_t}
            row["median"], row["p90"], row["max"] = errors(transformed, new_truth)
            rows.append(row)
        row = {"surface": type(decoder).__name__, "task": f"k-means transform (m={m})", "method": "graph",
               "pairs": k * m, "seconds": graph_t, "ratio": 1.0, "warnings": 0}
        row["median"], row["p90"], row["max"] = errors(graph.transform(new), new_truth)
        rows.append(row)
        base = GeodesicDistance(decoder=decoder, n_neighbors=8).fit(X)
        plain, plain_s, _ = timed(lambda: base.transform(new))
        refined_model = GeodesicDistance(decoder=decoder, n_neighbors=8, distances="refined",
                                         refine_method="gauss_newton").fit(X)
        refined, refined_s, caught = timed(lambda: refined_model.transform(new))
        truth = exact(decoder, new, X)
        for method, values, seconds, ratio, count in (("graph", plain, plain_s, 1.0, 0),
                                                      ("gauss_newton", refined, refined_s, refined_s / plain_s, caught)):
            row = {"surface": type(decoder).__name__, "task": f"GeodesicDistance transform (m={m}, n={n})",
                   "method": method, "pairs": m * n, "seconds": seconds, "ratio": ratio, "warnings": count}
            row["median"], row["p90"], row["max"] = errors(values, truth)
            rows.append(row)
    columns = [("surface", "surface", "str"), ("task", "task", "str"), ("method", "distances", "str"),
               ("pairs", "pairs", "g"), ("median", "err med", "e"), ("p90", "err p90", "e"), ("max", "err max", "e"),
               ("seconds", "seconds", "s"), ("ratio", "vs graph", "x"), ("warnings", "warnings", "g")]
    load = info["load_avg_start"][0]
    print(table(f"Refined vs graph distances (relative error against the exact distance; load {load:.1f})",
                columns, rows))
    write_json("refined_distances_quick" if args.quick else "refined_distances",
               {"load_average": load, "n": n, "m": m, "k": k, "rows": rows, "machine": finish(info)})


if __name__ == "__main__":
    main()
