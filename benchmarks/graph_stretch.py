"""The stretch a kNN graph adds by itself: Dijkstra over Euclidean kNN graphs of Gaussian points, per d and k.

With the Euclidean metric the geodesic between two points is the straight segment, so Dijkstra length / straight
length is the graph's own stretch, with no decoder and no refinement in the way. This is the floor under the
"Dijkstra / refined" column of benchmarks/high_dim.py: a path through the nodes must zig-zag, because among k
neighbours in d dimensions none points far along the target direction (the best cosine of k random directions
falls like sqrt(2 log k / d)).

For each d, n standard Gaussian points (the shape of a VAE's code cloud), a symmetric kNN graph with Euclidean edge
lengths for each k, and the median and 90th percentile of the stretch over random pairs.

Run:  .venv/bin/python benchmarks/graph_stretch.py [--n 5000] [--dims 2 4 8 16 32 64] [--ks 10 20 50 200]
Writes benchmarks/results/graph_stretch.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra
from sklearn.neighbors import NearestNeighbors

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import finish, machine, table, write_json  # noqa: E402


def stretch(points: np.ndarray, k: int, pairs: np.ndarray) -> np.ndarray:
    """Dijkstra / straight length (p,) for node pairs (p, 2) on the symmetric Euclidean kNN graph of points (n, d)."""
    n = len(points)
    distances, neighbours = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    rows = np.repeat(np.arange(n), k)
    weights = sp.csr_matrix((distances[:, 1:].ravel(), (rows, neighbours[:, 1:].ravel())), shape=(n, n))
    weights = weights.maximum(weights.T)
    graph = dijkstra(weights, indices=pairs[:, 0])[np.arange(len(pairs)), pairs[:, 1]]
    return graph / np.linalg.norm(points[pairs[:, 0]] - points[pairs[:, 1]], axis=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 20, 50, 200])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--name", default="graph_stretch")
    args = parser.parse_args(argv)
    info = machine()
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for d in args.dims:
        points = rng.normal(size=(args.n, d))
        pairs = rng.choice(args.n, size=(args.pairs, 2), replace=False)
        for k in args.ks:
            ratio = stretch(points, k, pairs)
            rows.append({"d": d, "k": k, "median": float(np.median(ratio)), "p90": float(np.quantile(ratio, 0.9))})
    columns = [("d", "d", "g"), ("k", "k", "g"), ("median", "Dijkstra/straight median", "g"), ("p90", "p90", "g")]
    print(table(f"Euclidean kNN graph stretch, {args.n} Gaussian points", columns, rows))
    write_json(args.name, {"machine": {**info, "load_avg_end": finish(info)["load_avg_end"]}, "args": vars(args),
                           "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
