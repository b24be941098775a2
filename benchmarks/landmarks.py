"""Landmark geodesics at scale: estimate error against exact Dijkstra, and GeodesicKMeans with landmarks.

Usage:  .venv/bin/python benchmarks/landmarks.py [--n 100000] [--k 10] [--landmarks 16,64,256,1000] [--pairs 1000]
                                                 [--kmeans-n 100000] [--kmeans-landmarks 64] [--exact-kmeans-max 100000]
                                                 [--kmeans-edges decoder|euclidean] [--legacy] [--out NAME] [--quick]
                                                 [--seed S]

Codes: the benchmarks' default model (benchmarks/_models.py, `trained("digits", S)`: VAEConfig defaults, latent 2,
RBF precision decoder, the 80/20 split of `lsg-graph train`, trained once and cached; --quick: 20 epochs, 5 RBF
epochs); a 10-component Gaussian mixture (scikit-learn, full covariances) is fitted to the codes of all 1797 digits
and N codes are sampled from it. The graph: build_latent_graph with that decoder's pullback metric, k neighbours, T = 8.

1. Estimate error. `--pairs` random pairs (a != b); exact graph distances by Dijkstra from each pair's source.
   Farthest-point and random landmark tables of the largest L are computed once; smaller L use their prefixes (a
   prefix of a farthest-point sequence is the farthest-point set of that size; of a random one, a random set). For
   every L, method and estimate: median / p90 / p99 relative error |estimate - exact| / exact, the median relative
   width (upper - lower) / exact, and whether every bound held (lower <= exact <= upper).
2. GeodesicKMeans (10 clusters, k-means++, random_state S) on the same kind of graph for each `--kmeans-n`:
   exact mode (landmarks=None; skipped above `--exact-kmeans-max`) and landmarks=`--kmeans-landmarks`, same graph,
   same seed: seconds (landmark table, init, iterations), iterations, inertia ratio, and the ARI between the two
   partitions. `--legacy` adds a row with the former landmark update (benchmarks/_landmark_legacy.py: per-candidate
   estimates over all members, checks by Dijkstra over the whole graph) on the same graph; without exact mode it
   is the reference of the ratios. Per stage: landmark table, init (k-means++ and first assignment), medoid
   updates (of which ranking and checking candidates), assignments, other (the final medoid distances). `--kmeans-edges euclidean` builds those graphs with Euclidean edge lengths (the same kNN graph,
   T = 1) instead of the decoder's metric, to reach N = 10^6 on a small machine (the decoder build of 10^6 codes
   alone takes about half an hour on one core); `--pairs 0` skips section 1.

Tables are printed; rows go to benchmarks/results/landmarks.json (landmarks_quick.json with --quick; --out NAME
to choose another name).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import finish, machine, machine_line, table, write_json  # noqa: E402
from _models import trained  # noqa: E402

from lsg_graph.cluster import GeodesicKMeans  # noqa: E402
from lsg_graph.distances import dijkstra_rows  # noqa: E402
from lsg_graph.errors import DisconnectedGraphWarning  # noqa: E402
from lsg_graph.geodesics.landmarks import ESTIMATES, Landmarks, select_landmarks  # noqa: E402
from lsg_graph.graph.latent_graph import LatentGraph, build_latent_graph  # noqa: E402
from lsg_graph.metric import PullbackMetric  # noqa: E402
from lsg_graph.model import encode_codes  # noqa: E402

N_CLUSTERS = 10


def load_average() -> str:
    """The 1-minute load average (Linux), for the record."""
    return f"{os.getloadavg()[0]:.1f}"


def synthetic_codes(seed: int, quick: bool) -> tuple[Any, Any, float]:
    """(metric, sampler, train seconds): the default model's pullback metric, a function n -> codes (n, 2) from a GMM
    of its codes, and the seconds its training took when it was cached."""
    from sklearn.mixture import GaussianMixture

    model = trained("digits", seed, **({"epochs": 20, "rbf_epochs": 5} if quick else {}))
    vae = model.vae()
    codes = encode_codes(vae, model.dataset().images)
    mixture = GaussianMixture(10, covariance_type="full", random_state=seed).fit(codes)

    def sample(n: int) -> np.ndarray:
        mixture.set_params(random_state=seed + n)
        return mixture.sample(n)[0].astype(np.float64)

    return PullbackMetric(vae.decoder("rbf")), sample, model.train_seconds


def build(metric: PullbackMetric, codes: np.ndarray, k: int, n_nodes: int = 8) -> tuple[LatentGraph, float]:
    """The latent graph of `codes` and its build seconds."""
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DisconnectedGraphWarning)
        graph = build_latent_graph(metric, codes, k=k, n_nodes=n_nodes, device="cpu")
    return graph, time.perf_counter() - started


def prefix(landmarks: Landmarks, n_landmarks: int) -> Landmarks:
    """The first `n_landmarks` landmarks of a table."""
    return Landmarks(landmarks.indices[:n_landmarks], landmarks.distances[:n_landmarks], landmarks.method)


def estimate_errors(graph: LatentGraph, sizes: list[int], n_pairs: int, seed: int) -> tuple[list[dict], dict]:
    """Rows of relative errors per (method, L, estimate) on `n_pairs` random pairs, and the timings."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, graph.n_points, 2 * n_pairs)
    b = rng.integers(0, graph.n_points, 2 * n_pairs)
    keep = np.flatnonzero(a != b)[:n_pairs]
    a, b = a[keep], b[keep]
    started = time.perf_counter()
    exact = np.empty(len(a))
    for start in range(0, len(a), 50):
        rows = dijkstra_rows(graph.weights, a[start : start + 50])
        exact[start : start + 50] = rows[np.arange(len(rows)), b[start : start + 50]]
    timings = {"exact_pairs_s": time.perf_counter() - started, "exact_s_per_dijkstra": (time.perf_counter() - started) / len(a)}
    rows_out = []
    for method in ("farthest", "random"):
        started = time.perf_counter()
        full = select_landmarks(graph, max(sizes), method=method, random_state=seed)
        timings[f"{method}_table_s"] = time.perf_counter() - started
        for n_landmarks in sizes:
            part = prefix(full, n_landmarks)
            started = time.perf_counter()
            bounds = part.bounds(a, b)
            seconds = time.perf_counter() - started
            held = bool(np.all(bounds.lower <= exact) and np.all(exact <= bounds.upper))
            width = float(np.median((bounds.upper - bounds.lower) / exact))
            for estimate in ESTIMATES:
                values = part.bounds(a, b, estimate=estimate).estimate
                relative = np.abs(values - exact) / exact
                rows_out.append(
                    {
                        "method": method, "landmarks": n_landmarks, "estimate": estimate,
                        "median": float(np.median(relative)), "p90": float(np.quantile(relative, 0.9)),
                        "p99": float(np.quantile(relative, 0.99)), "max": float(relative.max()),
                        "width": width, "bounds_held": held, "pairs_per_s": len(a) / max(seconds, 1e-9),
                    }
                )
        del full
    return rows_out, timings


def kmeans_rows(graph: LatentGraph, n_landmarks: int, run_exact: bool, seed: int, legacy: bool = False) -> list[dict]:
    """GeodesicKMeans in exact mode, the former landmark update (legacy) and the current landmark mode, one graph."""
    import _landmark_legacy
    from sklearn.metrics import adjusted_rand_score

    from lsg_graph import cluster

    rows, labels = [], {}
    current = f"landmarks={n_landmarks}"
    modes = ([("exact", None)] if run_exact else []) + [(current, n_landmarks)]
    modes += [(current + " (before)", n_landmarks)] if legacy else []
    for name, landmarks in modes:
        restore = _landmark_legacy.install() if name.endswith("(before)") else None
        load = load_average()
        started = time.perf_counter()
        try:
            model = GeodesicKMeans(N_CLUSTERS, random_state=seed, graph=graph, landmarks=landmarks).fit(graph.codes)
        finally:
            if restore is not None:
                cluster._LandmarkGraphSpace = restore
        seconds = time.perf_counter() - started
        labels[name] = model.labels_
        timings = model.timings_
        rows.append(
            {
                "n": graph.n_points, "mode": name, "seconds": seconds, "landmarks_s": timings.get("landmarks_s", 0.0),
                "init_s": timings["init_s"], "update_s": float(np.sum(timings["update_s"])),
                "assign_s": float(np.sum(timings["assign_s"])), "n_iter": model.n_iter_, "inertia": model.inertia_,
                "rank_s": timings.get("landmark_rank_s"), "check_s": timings.get("landmark_check_s"),
                "checked": timings.get("landmark_checked"), "moves": timings.get("landmark_moves"),
                "other_s": seconds - timings["total_s"],
                "load_start": float(load), "load_end": float(load_average()),
            }
        )
        print(rows[-1], flush=True)
    reference = "exact" if run_exact else (current + " (before)" if legacy else None)
    if reference is not None:
        base = next(row for row in rows if row["mode"] == reference)
        for row in rows:
            row["time_ratio"] = row["seconds"] / base["seconds"]
            row["inertia_ratio"] = row["inertia"] / base["inertia"]
            row["ari_vs_exact"] = float(adjusted_rand_score(labels[reference], labels[row["mode"]]))
            row["reference"] = reference
    return rows


def main() -> None:
    """Run both sections and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--landmarks", default="16,64,256,1000")
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--kmeans-n", default="100000")
    parser.add_argument("--kmeans-landmarks", type=int, default=64)
    parser.add_argument("--exact-kmeans-max", type=int, default=100_000)
    parser.add_argument("--kmeans-edges", choices=("decoder", "euclidean"), default="decoder")
    parser.add_argument("--legacy", action="store_true", help="also time the former landmark update (same graph)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--quick", action="store_true", help="N = 10^4, L up to 256, 300 pairs, brief training")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.n, args.landmarks, args.pairs, args.kmeans_n = 10_000, "16,64,256", 300, "10000"
    sizes = [int(value) for value in args.landmarks.split(",") if value]
    kmeans_sizes = [int(value) for value in args.kmeans_n.split(",") if value]
    torch.manual_seed(args.seed)
    info = machine()
    print(machine_line(info))

    started = time.perf_counter()
    metric, sample, train_s = synthetic_codes(args.seed, args.quick)
    print(f"model trained in {train_s:.1f} s (benchmarks/_models.py cache; loaded in {time.perf_counter() - started:.1f} s)")
    errors, timings, build_s = [], {}, None
    if args.pairs > 0:
        graph, build_s = build(metric, sample(args.n), args.k)
        print(f"graph N = {graph.n_points}, {graph.n_edges} edges, built in {build_s:.1f} s")
        errors, timings = estimate_errors(graph, sizes, args.pairs, args.seed)
        report_errors(errors, timings, graph, args, sizes)
        del graph

    clusters = []
    if args.kmeans_edges == "euclidean":
        from lsg_graph.manifolds import LinearDecoder

        metric = PullbackMetric(LinearDecoder.identity(2))
    for n in kmeans_sizes:
        kgraph, kbuild_s = build(metric, sample(n), args.k, 1 if args.kmeans_edges == "euclidean" else 8)
        print(f"k-means graph N = {n}: {kgraph.n_edges} edges, built in {kbuild_s:.1f} s ({args.kmeans_edges} edges)")
        rows = kmeans_rows(kgraph, args.kmeans_landmarks, n <= args.exact_kmeans_max, args.seed, args.legacy)
        for row in rows:
            row["build_s"] = kbuild_s
            row["edges"] = args.kmeans_edges
        clusters += rows
        del kgraph
    print(
        table(
            f"GeodesicKMeans, {N_CLUSTERS} clusters, k-means++ (load {load_average()})",
            [
                ("n", "N", "g"), ("edges", "edges", "str"), ("mode", "mode", "str"), ("seconds", "fit s", "s"),
                ("landmarks_s", "landmarks s", "s"), ("init_s", "init s", "s"), ("update_s", "updates s", "s"),
                ("rank_s", "rank s", "s"), ("check_s", "check s", "s"), ("checked", "checked", "g"),
                ("assign_s", "assign s", "s"), ("other_s", "other s", "s"), ("n_iter", "iters", "g"),
                ("time_ratio", "time vs ref", "x"), ("inertia_ratio", "inertia vs ref", "g"),
                ("ari_vs_exact", "ARI vs ref", "g"), ("build_s", "graph build s", "s"),
            ],
            clusters,
        )
    )
    payload = {
        "python": info["python"], "torch": info["torch"], "threads": torch.get_num_threads(),
        "load_end": load_average(), "machine": finish(info), "args": vars(args), "train_s": train_s, "build_s": build_s,
        "timings": timings, "errors": errors, "kmeans": clusters,
    }
    name = args.out or ("landmarks_quick" if args.quick else "landmarks")
    print(f"wrote {write_json(name, payload)}")


def report_errors(errors: list[dict], timings: dict, graph: LatentGraph, args: Any, sizes: list[int]) -> None:
    """Print section 1."""
    print(
        table(
            f"Landmark estimates vs exact Dijkstra: {args.pairs} random pairs, N = {graph.n_points}, k = {args.k} "
            f"(load {load_average()})",
            [
                ("method", "selection", "str"), ("landmarks", "L", "g"), ("estimate", "estimate", "str"),
                ("median", "median", "pct"), ("p90", "p90", "pct"), ("p99", "p99", "pct"), ("max", "max", "pct"),
                ("width", "median (upper-lower)/d", "pct"), ("bounds_held", "bounds held", "str"),
            ],
            [dict(row, bounds_held=str(row["bounds_held"])) for row in errors],
        )
    )
    print(
        f"exact Dijkstra: {timings['exact_s_per_dijkstra'] * 1e3:.1f} ms per source; landmark tables (L = {max(sizes)}): "
        f"farthest {timings['farthest_table_s']:.1f} s, random {timings['random_table_s']:.1f} s"
    )


if __name__ == "__main__":
    main()
