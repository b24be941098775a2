"""Geodesic refinement benchmark: exact surfaces, and a VAE against a careful energy minimisation.

Usage:  .venv/bin/python benchmarks/refine.py [--quick] [--pairs P] [--surface-pairs S] [--seed S]

1. Exact surfaces. SphereChart and DevelopableSurface: N = 1500 sampled codes, k = 12 graph, S random pairs (default
   50) whose exact distance exceeds a quarter of the domain's diameter. Relative error |L - d| / d of the graph
   (Dijkstra) length and of the refined length (default method "shooting") against the exact distance d.
2. VAE. The default model (benchmarks/_models.py: `lsg-graph train` on the digits, cached), the RBF decoder in a
   float64 copy, a k = 10 graph over the codes of all 1797 digits, P random pairs of codes (default 100). For each method ("shooting", "energy", "none" =
   graph only): wall time, pairs per second, violations (refined length > graph length), outcomes (converged by
   shooting, by the energy fallback, graph kept) and the relative difference (L - L_ref) / L_ref to a careful
   energy minimisation from the same graph paths (200 nodes, up to 3000 L-BFGS iterations, tol 1e-10); negative
   means shorter than the reference. Lengths are lengths of actual curves (see lsg_graph.geodesics.refine), so the
   shorter of two is the better one.
3. The same VAE pairs with the decoder on CUDA, when a GPU is present.

Refinement runs on one CPU thread (lsg_graph.geodesics.refine does that itself). Tables are printed; the rows go to
benchmarks/results/refine.json.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import far_pairs, finish, machine, machine_line, table, write_json  # noqa: E402
from _models import trained  # noqa: E402

from lsg_graph.errors import ConvergenceWarning  # noqa: E402
from lsg_graph.geodesics.refine import GeodesicResult, refine_geodesics  # noqa: E402
from lsg_graph.graph.latent_graph import build_latent_graph  # noqa: E402
from lsg_graph.manifolds import CAP_RADIUS, U_RANGE, V_RANGE, DevelopableSurface, SphereChart, arc_length  # noqa: E402
from lsg_graph.metric import PullbackMetric  # noqa: E402

SURFACE_CODES = 1500
SURFACE_K = 12
VAE_K = 10
REFERENCE = {"n_points": 200, "energy_iter": 3000, "tol": 1e-10}
QUICK_REFERENCE = {"n_points": 200, "energy_iter": 1500, "tol": 1e-10}
TARGET_DIFFERENCE = 0.005  # the brief: within 0.5 % of the careful energy minimisation ...
TARGET_SPEEDUP = 20.0  # ... at 20x its speed or better


# ------------------------------------------------------------------------------------------------- helpers


def timed_refine(
    metric: PullbackMetric, graph: Any, pairs: np.ndarray, method: str, **options: Any
) -> tuple[list[GeodesicResult], float, int]:
    """Results, wall seconds and the number of ConvergenceWarnings of one refine_geodesics call."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        started = time.perf_counter()
        results = refine_geodesics(metric, graph, pairs, method, **options)
        seconds = time.perf_counter() - started
    return results, seconds, sum(issubclass(w.category, ConvergenceWarning) for w in caught)


def outcome(results: list[GeodesicResult]) -> dict[str, int]:
    """Counts of converged shooting, energy (converged or not) and graph results."""
    counts = Counter(r.method for r in results)
    shooting = sum(r.converged for r in results if r.method == "shooting")
    return {"by_shooting": shooting, "by_energy": counts["energy"], "graph_kept": counts["graph"]}


# ------------------------------------------------------------------------------------------------- 1. surfaces


def surface_study(n_pairs: int, seed: int) -> list[dict[str, Any]]:
    """Rows of section 1: graph and refined relative errors against exact distances, per surface."""
    diameters = {
        "sphere": 2.0 * CAP_RADIUS,
        "developable": float(np.hypot(arc_length(U_RANGE[1]) - arc_length(U_RANGE[0]), V_RANGE[1] - V_RANGE[0])),
    }
    rows = []
    for name, manifold in (("sphere", SphereChart()), ("developable", DevelopableSurface())):
        metric = PullbackMetric(manifold)
        codes = manifold.sample(SURFACE_CODES, seed=seed)
        graph = build_latent_graph(metric, codes, k=SURFACE_K)
        pairs = far_pairs(manifold, codes, diameters[name] / 4, n_pairs, seed + 1)
        exact = manifold.distance(codes[pairs[:, 0]], codes[pairs[:, 1]])
        results, seconds, n_warnings = timed_refine(metric, graph, pairs, "shooting")
        refined = np.abs(np.array([r.length for r in results]) - exact) / exact
        graph_error = (np.array([r.graph_length for r in results]) - exact) / exact
        rows.append(
            {
                "surface": name,
                "pairs": n_pairs,
                "graph_median": float(np.median(graph_error)),
                "graph_p90": float(np.percentile(graph_error, 90)),
                "refined_median": float(np.median(refined)),
                "refined_p90": float(np.percentile(refined, 90)),
                "refined_max": float(refined.max()),
                **outcome(results),
                "warnings": n_warnings,
                "seconds": seconds,
                "pairs_per_s": n_pairs / seconds,
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------- 2. VAE


def default_vae(seed: int) -> tuple[Any, np.ndarray, float]:
    """The shared default model (trained once, cached), the codes of all 1797 digits, and its training seconds."""
    from lsg_graph.model import encode_codes

    model = trained("digits", seed)
    vae = model.vae()
    return vae, encode_codes(vae, model.dataset().images), model.train_seconds


def compare(results: list[GeodesicResult], reference: np.ndarray) -> dict[str, Any]:
    """Relative differences (L - L_ref) / L_ref: median, p90, max, min, count above TARGET_DIFFERENCE."""
    difference = (np.array([r.length for r in results]) - reference) / reference
    return {
        "diff_median": float(np.median(difference)),
        "diff_p90": float(np.percentile(difference, 90)),
        "diff_max": float(difference.max()),
        "diff_min": float(difference.min()),
        "over_target": int((difference > TARGET_DIFFERENCE).sum()),
    }


def vae_rows(
    metric: PullbackMetric, graph: Any, pairs: np.ndarray, reference: dict[str, Any], device: str
) -> list[dict[str, Any]]:
    """Rows of sections 2/3: one per method plus the reference, on `device`."""
    runs = {
        "shooting": timed_refine(metric, graph, pairs, "shooting"),
        "energy": timed_refine(metric, graph, pairs, "energy"),
        "none (graph)": timed_refine(metric, graph, pairs, "none"),
    }
    ref_results, ref_seconds = reference["results"], reference["seconds"]
    ref_lengths = np.array([r.length for r in ref_results])
    rows = []
    for name, (results, seconds, n_warnings) in [
        *runs.items(),
        ("reference energy", (ref_results, ref_seconds, reference["warnings"])),
    ]:
        lengths = np.array([r.length for r in results])
        graph_lengths = np.array([r.graph_length for r in results])
        rows.append(
            {
                "device": device,
                "method": name,
                "pairs": len(pairs),
                "seconds": seconds,
                "pairs_per_s": len(pairs) / seconds,
                "speedup": ref_seconds / seconds,
                "violations": int((lengths > graph_lengths).sum()),
                **outcome(results),
                "warnings": n_warnings,
                "shortening_median": float(np.median((graph_lengths - lengths) / graph_lengths)),
                **compare(results, ref_lengths),
            }
        )
    return rows


def vae_study(n_pairs: int, seed: int, quick: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Section 2 (and 3 with CUDA): the default VAE, P pairs, every method against the careful reference."""
    vae, codes, train_seconds = default_vae(seed)
    decoder = copy.deepcopy(vae.decoder("rbf")).double()
    metric = PullbackMetric(decoder)
    started = time.perf_counter()
    graph = build_latent_graph(metric, codes, k=VAE_K)
    graph_seconds = time.perf_counter() - started
    pairs = np.random.default_rng(seed).integers(0, len(codes), (n_pairs, 2))
    settings = QUICK_REFERENCE if quick else REFERENCE
    results, seconds, n_warnings = timed_refine(metric, graph, pairs, "energy", **settings)
    reference = {"results": results, "seconds": seconds, "warnings": n_warnings}
    rows = vae_rows(metric, graph, pairs, reference, "cpu")
    if torch.cuda.is_available():
        cuda_metric = PullbackMetric(copy.deepcopy(decoder).to("cuda"))
        rows += vae_rows(cuda_metric, graph, pairs, reference, "cuda")
    info = {
        "train_seconds": train_seconds,
        "graph_seconds": graph_seconds,
        "codes": len(codes),
        "k": VAE_K,
        "reference": settings,
        "reference_converged": sum(r.converged for r in results),
    }
    return rows, info


# ------------------------------------------------------------------------------------------------- main


SURFACE_COLUMNS = [
    ("surface", "surface", "str"),
    ("pairs", "pairs", "g"),
    ("graph_median", "graph med", "e"),
    ("graph_p90", "graph p90", "e"),
    ("refined_median", "refined med", "e"),
    ("refined_p90", "refined p90", "e"),
    ("refined_max", "refined max", "e"),
    ("by_shooting", "shooting", "g"),
    ("by_energy", "energy", "g"),
    ("graph_kept", "graph", "g"),
    ("seconds", "time s", "s"),
    ("pairs_per_s", "pairs/s", "g"),
]
VAE_COLUMNS = [
    ("device", "dev", "str"),
    ("method", "method", "str"),
    ("seconds", "time s", "s"),
    ("pairs_per_s", "pairs/s", "g"),
    ("speedup", "vs ref", "x"),
    ("violations", "L>graph", "g"),
    ("by_shooting", "shooting", "g"),
    ("by_energy", "energy", "g"),
    ("graph_kept", "graph", "g"),
    ("shortening_median", "shorter med", "pct"),
    ("diff_median", "dref med", "pct"),
    ("diff_p90", "dref p90", "pct"),
    ("diff_max", "dref max", "pct"),
    ("diff_min", "dref min", "pct"),
    ("over_target", ">0.5%", "g"),
]


def conclusion(rows: list[dict[str, Any]]) -> list[str]:
    """One line per device on the brief's target: within 0.5 % of the reference at 20x its speed."""
    lines = []
    for row in rows:
        if row["method"] != "shooting":
            continue
        met = row["over_target"] == 0 and row["speedup"] >= TARGET_SPEEDUP
        lines.append(
            f"{row['device']}: shooting is {row['speedup']:.1f}x faster than the reference; {row['over_target']} of "
            f"{row['pairs']} pairs more than 0.5% longer than it (max {row['diff_max']:.3%}); "
            f"{row['violations']} longer than the graph path. Target {'met' if met else 'NOT met'}."
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run both studies, print the tables, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 VAE pairs, 20 surface pairs, a lighter reference")
    parser.add_argument("--pairs", type=int, default=None, help="VAE pairs (default 100; quick: 20)")
    parser.add_argument("--surface-pairs", type=int, default=None, help="pairs per surface (default 50; quick: 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed for codes, pairs and the VAE (default 0)")
    args = parser.parse_args(argv)
    n_pairs = args.pairs or (20 if args.quick else 100)
    n_surface = args.surface_pairs or (20 if args.quick else 50)
    started = time.perf_counter()
    info_machine = machine()
    print(
        f"lsg-graph refinement benchmark  seed={args.seed} quick={args.quick} cuda {torch.cuda.is_available()}\n"
        f"{machine_line(info_machine)}\n"
    )
    surfaces = surface_study(n_surface, args.seed)
    print(
        table(
            f"1. Relative error of distances vs exact ({SURFACE_CODES} codes, k={SURFACE_K}, pairs with "
            "d > diameter/4; refined = method 'shooting' with defaults)",
            SURFACE_COLUMNS,
            surfaces,
        )
    )
    rows, info = vae_study(n_pairs, args.seed, args.quick)
    print(
        f"\nVAE: the default model (digits), trained in {info['train_seconds']:.1f}s; rbf decoder (float64 copy); "
        f"graph k={VAE_K} over {info['codes']} codes in {info['graph_seconds']:.1f}s; reference = energy with "
        f"{info['reference']['n_points']} nodes, <= {info['reference']['energy_iter']} L-BFGS iterations, "
        f"tol {info['reference']['tol']:g} ({info['reference_converged']}/{n_pairs} converged)."
    )
    print(
        table(
            f"2. VAE, {n_pairs} random pairs: speed, outcomes, shortening vs graph, "
            "difference dref = (L - L_ref)/L_ref",
            VAE_COLUMNS,
            rows,
        )
    )
    lines = conclusion(rows)
    print("\n" + "\n".join(lines))
    total = time.perf_counter() - started
    path = write_json(
        "refine",
        {
            "seed": args.seed,
            "quick": args.quick,
            "python": info_machine["python"],
            "torch": info_machine["torch"],
            "machine": finish(info_machine),
            "surfaces": surfaces,
            "vae": rows,
            "vae_info": info,
            "conclusion": lines,
            "total_seconds": total,
        },
    )
    print(f"\n({total:.0f}s; wrote {path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
