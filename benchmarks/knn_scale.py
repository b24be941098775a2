"""kNN at scale: the approximate faiss backends ('faiss-ivf', 'faiss-hnsw') against exact search, recall and time.

Usage:  .venv/bin/python benchmarks/knn_scale.py [--n 100000,1000000] [--dims 8,16] [--k 10] [--sample 1000]
                                                 [--backends kdtree,faiss-ivf,faiss-hnsw] [--seed S] [--quick]

Codes: the real MNIST sample (/work/data/mnist_5k.csv.gz, pixels / 255) projected on its first d principal
components, a 10-component Gaussian mixture (full covariances) fitted to those 5000 points, and N codes sampled from
it: synthetic codes with the clusters, elongations and density contrasts of real data, in d = 8-16 dimensions.

For each (N, d) and backend: the seconds of `knn(codes, k, backend=...)` (the all-points kNN of a graph build:
index construction plus every query), and recall@k on `--sample` random points against the exact neighbours
(IndexFlatL2 brute force on the sample, re-ranked in float64 by the same code path as every backend, so ties are
broken alike). 'kdtree' is the exact backend that backend='auto' uses for d <= 16 on a CPU; it is the baseline of
the time ratios; above n x d = `--kdtree-max-work` (default 4e6: N = 10^6 at d = 8 and 16)
its time is projected from `--projection-queries` queries (column "projected"; exact by construction,
so its recall is 1). faiss runs on the threads faiss.omp_set_num_threads allows (OMP_NUM_THREADS); the kd-tree queries
use all the process's CPUs (workers=-1); run under `taskset -c 0` to compare on one core.

Rows go to benchmarks/results/knn_scale.json (knn_scale_quick.json with --quick: N = 2e4).
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import table, write_json  # noqa: E402

from lsg_graph.graph.knn import APPROXIMATE_BACKENDS, knn  # noqa: E402

MNIST = Path("/work/data/mnist_5k.csv.gz")


def load_average() -> str:
    """The 1-minute load average, for the record."""
    return f"{os.getloadavg()[0]:.1f}"


def mixture_sampler(dims: list[int], seed: int) -> dict[int, object]:
    """d -> a GaussianMixture fitted to the MNIST sample's first d principal components."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    with gzip.open(MNIST, "rt") as handle:
        pixels = np.loadtxt(handle, delimiter=",", dtype=np.float64)[:, :-1] / 255.0
    projected = PCA(max(dims), random_state=seed).fit_transform(pixels)
    return {d: GaussianMixture(10, covariance_type="full", random_state=seed).fit(projected[:, :d]) for d in dims}


def recall(found: np.ndarray, expected: np.ndarray) -> float:
    """Mean fraction of each row of `expected` (m, k) present in the same row of `found` (m, k)."""
    hits = [np.intersect1d(a, b, assume_unique=True).size for a, b in zip(found, expected)]
    return float(np.sum(hits) / expected.size)


def projected_kdtree_seconds(codes: np.ndarray, k: int, n_queries: int, seed: int) -> float:
    """Seconds of the exact kd-tree kNN of all n codes, projected from a run with `n_queries` of them as queries:
    tree build + (that run - tree build) x n / n_queries (the queries dominate and cost about the same each)."""
    from scipy.spatial import cKDTree

    started = time.perf_counter()
    cKDTree(codes.astype(np.float32), balanced_tree=False, compact_nodes=False)  # as the backend builds it
    build_s = time.perf_counter() - started
    queries = codes[np.random.default_rng(seed + 2).choice(codes.shape[0], n_queries, replace=False)]
    started = time.perf_counter()
    knn(codes, k + 1, queries, backend="kdtree")  # k + 1: the query itself is among the data
    sample_s = time.perf_counter() - started
    return build_s + max(0.0, sample_s - build_s) * codes.shape[0] / n_queries


def main() -> None:
    """Measure every (N, d, backend) and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="100000,1000000")
    parser.add_argument("--dims", default="8,16")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--backends", default="kdtree,faiss-ivf,faiss-hnsw")
    parser.add_argument("--kdtree-max-work", type=float, default=4e6, help="above n x d, kdtree time is projected")
    parser.add_argument("--projection-queries", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="N = 20000, d = 8")
    args = parser.parse_args()
    if args.quick:
        args.n, args.dims = "20000", "8"
    sizes = [int(v) for v in args.n.split(",") if v]
    dims = [int(v) for v in args.dims.split(",") if v]
    backends = [v for v in args.backends.split(",") if v]
    import faiss

    print(
        f"python {platform.python_version()}, faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads), "
        f"{len(os.sched_getaffinity(0))} CPUs usable, load {load_average()}"
    )
    samplers = mixture_sampler(dims, args.seed)
    rows = []
    for n in sizes:
        for d in dims:
            mixture = samplers[d]
            mixture.set_params(random_state=args.seed + n + d)
            codes = mixture.sample(n)[0]
            codes = codes[np.random.default_rng(args.seed).permutation(n)]  # sample() groups by component
            sample = np.sort(np.random.default_rng(args.seed + 1).choice(n, args.sample, replace=False))
            started = time.perf_counter()
            truth = knn(codes, args.k + 1, codes[sample], backend="faiss")  # brute force; the point itself first
            truth_s = time.perf_counter() - started
            expected = truth.indices[:, 1:]
            baseline = None
            for backend in backends:
                load = load_average()
                if backend == "kdtree" and n * d > args.kdtree_max_work:
                    seconds, found = projected_kdtree_seconds(codes, args.k, args.projection_queries, args.seed), None
                else:
                    started = time.perf_counter()
                    found = knn(codes, args.k, backend=backend, seed=args.seed)
                    seconds = time.perf_counter() - started
                row = {
                    "n": n, "d": d, "k": args.k, "backend": backend, "seconds": seconds, "projected": found is None,
                    "recall": 1.0 if found is None else recall(found.indices[sample], expected),
                    "exact_rows": 1.0 if found is None else float(np.mean((found.indices[sample] == expected).all(axis=1))),
                    "load": float(load), "truth_sample_s": truth_s,
                }
                if backend == "kdtree":
                    baseline = seconds
                row["time_vs_kdtree"] = None if baseline is None else seconds / baseline
                print(row, flush=True)
                rows.append(row)
                del found
            del codes
    print(
        table(
            f"kNN of all points, k = {args.k}; recall@k on {args.sample} points vs brute force (load {load_average()})",
            [
                ("n", "N", "g"), ("d", "d", "g"), ("backend", "backend", "str"), ("seconds", "seconds", "s"),
                ("time_vs_kdtree", "time vs kdtree", "x"), ("recall", f"recall@{args.k}", "g"),
                ("exact_rows", "rows all right", "g"), ("projected", "projected", "str"), ("load", "load", "g"),
            ],
            [dict(row, projected="yes" if row["projected"] else "") for row in rows],
        )
    )
    payload = {
        "python": platform.python_version(), "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(),
        "cpus": len(os.sched_getaffinity(0)), "load_end": load_average(), "args": vars(args),
        "defaults": APPROXIMATE_BACKENDS, "rows": rows,
    }
    print(f"wrote {write_json('knn_scale_quick' if args.quick else 'knn_scale', payload)}")


if __name__ == "__main__":
    main()
