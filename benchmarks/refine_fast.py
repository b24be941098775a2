"""Fast batched refinement: the old default (shooting), the new default (auto) and a careful reference, side by side.

Usage:  python benchmarks/refine_fast.py [--cases surfaces,digits,mnist8,mnist16,mnist32,mnist64] [--pairs P]
                                        [--surface-pairs S] [--old-pairs O] [--careful-pairs C] [--previous-pairs R]
                                        [--float32] [--device cuda]

Cases (one process, one torch thread; --jobs J runs refine_geodesics with n_jobs=J, J threads over its batches):

* surfaces: SphereChart and DevelopableSurface, 1000 sampled codes, k = 12 graph, S pairs (default 50) farther
  apart than a quarter of the domain's diameter. Per method: the relative error of the reported length and of the
  returned curve sampled at 1000 points (GeodesicResult.sample) and measured as a polyline (Gauss-Legendre, 8 nodes
  per segment) against the exact distance.
* digits: the default model of the pipeline (train_run on "digits", default VAEConfig, d = 2), its graph with the
  build_latent_graph defaults; P random pairs (default 200).
* mnistD: MNIST-5k (pixels / 255) with the default VAEConfig at latent_dim D (fewer epochs: MNIST_TRAINING),
  graph with the defaults; P random pairs.

Models and graphs come from the shared cache (benchmarks/_models.py). VAE decoders run in a float64 copy (the
documented recommendation; --float32 uses the model's own float32). Methods: "old" = method "shooting" (the previous
default) on the first O pairs (default 20: it takes seconds per pair at d >= 8), "new" = method "auto" (the default)
on all pairs, "careful" = method "gauss_newton" with 128 segments (256 where they differ by 1e-5), gn_tol 1e-10
and 400 steps, on the first C pairs
(default all). Ratios are lengths over the careful reference's on the pairs both ran; "within" counts pairs with
ratio <= 1.001; "longer" counts curves longer than their graph path (must be 0). Results go to
benchmarks/results/refine_fast.json.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import far_pairs, finish, machine, table, use_threads, write_json  # noqa: E402
from _models import trained  # noqa: E402

from lsg_graph.errors import ConvergenceWarning  # noqa: E402
from lsg_graph.geodesics.refine import GeodesicResult, RefineOptions, refine_geodesics  # noqa: E402
from lsg_graph.graph.latent_graph import build_latent_graph  # noqa: E402
from lsg_graph.graph.weights import edge_lengths  # noqa: E402
from lsg_graph.manifolds import CAP_RADIUS, U_RANGE, V_RANGE, DevelopableSurface, SphereChart, arc_length  # noqa: E402
from lsg_graph.metric import PullbackMetric  # noqa: E402

CAREFUL = RefineOptions(gn_segments=128, gn_max_segments=256, gn_rtol=1e-5, gn_tol=1e-10, gn_iter=400)
PREVIOUS = RefineOptions(gn_segments=32, gn_spacing="equal")  # the previous default: 32 segments at equal times
SAMPLES = 1000
WITHIN = 1e-3


JOBS = [1]  # refine_geodesics n_jobs values (--jobs): the new default runs with each, the others with the first


def run(metric: PullbackMetric, graph: Any, pairs: np.ndarray, method: str, options: RefineOptions | None = None,
        n_jobs: int | None = None) -> tuple[list[GeodesicResult], float, int]:
    """Results, wall seconds and ConvergenceWarnings of one refine_geodesics call (n_jobs default JOBS[0])."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        started = time.perf_counter()
        results = refine_geodesics(metric, graph, pairs, method, options, n_jobs=n_jobs or JOBS[0])
        seconds = time.perf_counter() - started
    return results, seconds, sum(issubclass(w.category, ConvergenceWarning) for w in caught)


def polyline_length(metric: PullbackMetric, result: GeodesicResult, n: int = SAMPLES) -> float:
    """Length of result.sample(n) measured as a polyline (8-node Gauss-Legendre per segment)."""
    points = result.sample(n)
    return float(edge_lengths(metric, points[:-1], points[1:]).sum())


def summary(name: str, method: str, results: list[GeodesicResult], seconds: float, n_warnings: int,
            reference: list[GeodesicResult] | None) -> dict[str, Any]:
    """One table row."""
    lengths = np.array([r.length for r in results])
    graph = np.array([r.graph_length for r in results])
    row: dict[str, Any] = {
        "case": name, "method": method, "pairs": len(results), "seconds": seconds,
        "pairs_per_s": len(results) / seconds if seconds > 0 else None,
        "converged": int(sum(r.converged for r in results)), "warnings": n_warnings,
        "longer": int((lengths > graph * (1 + 1e-12)).sum()),
        "by": ", ".join(f"{m}:{sum(r.method == m for r in results)}" for m in sorted({r.method for r in results})),
        "stretch": float(np.median(graph / np.maximum(lengths, 1e-300))),
    }
    if reference is not None:
        count = min(len(reference), len(results))
        ratio = lengths[:count] / np.array([r.length for r in reference[:count]])
        row.update(ratio_median=float(np.median(ratio)), ratio_max=float(ratio.max()), ratio_min=float(ratio.min()),
                   within=int((ratio <= 1 + WITHIN).sum()), compared=count)
    return row


# ------------------------------------------------------------------------------------------------- surfaces


def surfaces(n_pairs: int) -> list[dict[str, Any]]:
    """Rows for the analytic surfaces: reported and polyline-at-1000 errors against exact distances."""
    diameters = {
        "sphere": 2.0 * CAP_RADIUS,
        "developable": float(np.hypot(arc_length(U_RANGE[1]) - arc_length(U_RANGE[0]), V_RANGE[1] - V_RANGE[0])),
    }
    rows = []
    for name, manifold in (("sphere", SphereChart()), ("developable", DevelopableSurface())):
        metric = PullbackMetric(manifold)
        codes = manifold.sample(1000, seed=0)
        graph = build_latent_graph(metric, codes, k=12)
        pairs = far_pairs(manifold, codes, diameters[name] / 4, n_pairs, 1)
        exact = manifold.distance(codes[pairs[:, 0]], codes[pairs[:, 1]])
        for method, label in (("shooting", "old"), ("auto", "new"), ("gauss_newton", "gauss_newton")):
            results, seconds, n_warnings = run(metric, graph, pairs, method)
            reported = np.abs(np.array([r.length for r in results]) - exact) / exact
            sampled = np.abs(np.array([polyline_length(metric, r) for r in results]) - exact) / exact
            row = summary(name, label, results, seconds, n_warnings, None)
            row.update(reported_median=float(np.median(reported)), reported_p90=float(np.percentile(reported, 90)),
                       sampled_median=float(np.median(sampled)), sampled_p90=float(np.percentile(sampled, 90)))
            rows.append(row)
            print(f"  {name} {label}: {seconds:.1f} s", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------- VAE models

MNIST_TRAINING = {"epochs": 60, "rbf_epochs": 20}  # fewer epochs than the default: under two minutes per d



def vae_case(
    name: str, n_pairs: int, old_pairs: int, careful_pairs: int, float32: bool, device: str = "cpu",
    previous_pairs: int = 0,
) -> list[dict[str, Any]]:
    """Rows for one cached VAE model: old, new and careful on random pairs."""
    model = trained(name) if name == "digits" else trained(name, **MNIST_TRAINING)
    vae, graph = model.vae(), model.graph()
    decoder = copy.deepcopy(vae.decoder(graph.params.get("variance", "rbf")))
    metric = PullbackMetric((decoder if float32 else decoder.double()).to(device))
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, graph.n_points, (4 * n_pairs, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]][:n_pairs]
    careful, seconds, n_warnings = run(metric, graph, pairs[:careful_pairs], "gauss_newton", CAREFUL)
    rows = [summary(name, "careful", careful, seconds, n_warnings, None)]
    print(f"  {name} careful: {seconds:.1f} s", flush=True)
    for jobs in JOBS:
        new, seconds, n_warnings = run(metric, graph, pairs, "auto", n_jobs=jobs)
        label = "new" if jobs == JOBS[0] else f"new, n_jobs={jobs}"
        rows.append(summary(name, label, new, seconds, n_warnings, careful))
    print(f"  {name} new: {seconds:.1f} s", flush=True)
    if previous_pairs > 0:
        earlier, seconds, n_warnings = run(metric, graph, pairs[:previous_pairs], "auto", PREVIOUS)
        rows.append(summary(name, "previous", earlier, seconds, n_warnings, careful))
        print(f"  {name} previous: {seconds:.1f} s", flush=True)
    if old_pairs > 0:
        old, seconds, n_warnings = run(metric, graph, pairs[:old_pairs], "shooting")
        rows.append(summary(name, "old", old, seconds, n_warnings, careful))
        print(f"  {name} old: {seconds:.1f} s", flush=True)
    for row in rows:
        row["latent_dim"] = graph.latent_dim
    return rows


COLUMNS = [
    ("case", "case", "str"), ("method", "method", "str"), ("pairs", "pairs", "g"), ("pairs_per_s", "pairs/s", "g"),
    ("converged", "conv", "g"), ("longer", "longer", "g"), ("stretch", "graph/L", "g"),
    ("ratio_median", "L/careful med", "g"), ("ratio_max", "max", "g"), ("within", "within 0.1%", "g"),
    ("by", "by", "str"),
]
SURFACE_COLUMNS = [
    ("case", "surface", "str"), ("method", "method", "str"), ("pairs", "pairs", "g"),
    ("pairs_per_s", "pairs/s", "g"), ("converged", "conv", "g"), ("reported_median", "length med", "e"),
    ("reported_p90", "p90", "e"), ("sampled_median", "sample(1000) med", "e"), ("sampled_p90", "p90", "e"),
    ("by", "by", "str"),
]


def main() -> None:
    """Run the selected cases, print the tables and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="surfaces,digits,mnist8,mnist16,mnist32,mnist64")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--surface-pairs", type=int, default=50)
    parser.add_argument("--old-pairs", type=int, default=20)
    parser.add_argument("--careful-pairs", type=int, default=None)
    parser.add_argument("--previous-pairs", type=int, default=0,
                        help="pairs for the previous default (auto with 32 segments at equal times)")
    parser.add_argument("--float32", action="store_true")
    parser.add_argument("--device", default="cpu", help="device of the VAE decoders (cpu, cuda)")
    parser.add_argument("--out", default="refine_fast")
    parser.add_argument("--jobs", default="1", help="refine_geodesics n_jobs values, comma-separated (threads over the batches)")
    args = parser.parse_args()
    use_threads(1)
    global JOBS
    JOBS = [int(value) for value in args.jobs.split(",")]
    cases = [case for case in args.cases.split(",") if case]
    payload: dict[str, Any] = {"machine": machine(), "arguments": vars(args), "surfaces": [], "vae": []}
    for case in cases:
        print(f"{case} ...", flush=True)
        if case == "surfaces":
            payload["surfaces"] = surfaces(args.surface_pairs)
        else:
            careful_pairs = args.careful_pairs if args.careful_pairs is not None else args.pairs
            payload["vae"] += vae_case(
                case, args.pairs, args.old_pairs, careful_pairs, args.float32, args.device, args.previous_pairs
            )
    finish(payload["machine"])
    if payload["surfaces"]:
        print(table("Analytic surfaces: relative error against the exact distance", SURFACE_COLUMNS,
                    payload["surfaces"]))
    if payload["vae"]:
        print(table("VAE models: pairs/s, converged, lengths against the careful reference", COLUMNS, payload["vae"]))
    print(f"wrote {write_json(args.out, payload)}")


if __name__ == "__main__":
    main()
