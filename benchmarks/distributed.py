"""Distributed edge weighting on a local Ray cluster: edges/s with 1, 2 and 4 actors against the local build.

Usage:  .venv/bin/python benchmarks/distributed.py [--n 10000] [--k 10] [--workers 1,2,4] [--epochs 3] [--repeats 2]
                                                   [--quick]

Model: the default MLP VAE (VAEConfig defaults, latent 2, RBF precision decoder) on the real MNIST sample
(/work/data/mnist_5k.csv.gz, D = 784, pixels / 255), from the shared model cache (benchmarks/_models.py,
`trained("mnist2", S, epochs=E, rbf_epochs=1)`: `train_run` on the 80/20 split, trained once and cached), trained
briefly (`--epochs` E; speed does not depend on the fit). Codes: N samples of a 10-component Gaussian mixture fitted
to the codes of all 5000 MNIST digits. Edges: the unique kNN pairs
(k neighbours) of the build, T = 8.

Rows, all on the same edges in one process (Ray started once with max(CPUs, W) logical CPUs):
  local, 1 thread / local, 2 threads   `edge_lengths` in this process (torch.set_num_threads)
  ray, W workers                       RayExecutor(n_workers=W) with one thread per actor: a warm-up call starts
                                       the actors (its seconds are "startup"), then the timed calls.
For each W, `--repeats` rounds of: the local build with 1 thread (and with min(W, 2) threads), then the Ray build,
so that every Ray timing is compared with local timings taken just before it (the load of a shared machine
drifts over minutes). Each result is compared with the first local one (max relative difference; 0 means bit for
bit). Overhead at W workers = (adjacent local 1-thread edges/s x min(W, CPUs)) / Ray edges/s - 1, i.e. against
perfect scaling of the local single-thread rate on the CPUs there; also the plain ratio to the adjacent local build
with min(W, 2) threads ("vs local, same CPUs").
Memory: each actor's resident set after its work. The projection: hours for 1.5e7 edges (10^6 codes, k = 20) at
the measured per-worker rate, for 8 / 64 workers of this kind.

Rows go to benchmarks/results/distributed.json (distributed_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import finish, machine, table, use_threads, write_json  # noqa: E402
from _models import trained  # noqa: E402

from lsg_graph.graph.knn import knn  # noqa: E402
from lsg_graph.graph.latent_graph import _unique_pairs  # noqa: E402
from lsg_graph.graph.weights import edge_lengths  # noqa: E402
from lsg_graph.metric import PullbackMetric  # noqa: E402
from lsg_graph.model import encode_codes  # noqa: E402

EDGES_1M = 1.5e7  # about 10^6 codes at k = 20


def main() -> None:
    """Measure and write the JSON."""
    import ray
    from sklearn.mixture import GaussianMixture

    from lsg_graph.distributed import RayExecutor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="N = 2000, 1 epoch, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.n, args.epochs, args.repeats = 2000, 1, 1
    cpus = os.cpu_count() or 1
    use_threads(1)
    info = machine()
    print(f"python {info['python']}, torch {info['torch']}, {cpus} CPUs, load {os.getloadavg()[0]:.1f}")

    model = trained("mnist2", args.seed, epochs=args.epochs, rbf_epochs=1)
    vae = model.vae()
    images = model.dataset().images
    print(f"mnist2 ({args.epochs} epochs) trained in {model.train_seconds:.1f} s (benchmarks/_models.py cache)")
    mixture = GaussianMixture(10, covariance_type="full", random_state=args.seed).fit(encode_codes(vae, images))
    codes = mixture.sample(args.n)[0].astype(np.float64)
    rows, cols = _unique_pairs(knn(codes, args.k, backend="kdtree", device="cpu").indices)
    starts, ends = codes[rows], codes[cols]
    metric = PullbackMetric(vae.decoder("rbf"))
    n_edges = len(rows)
    print(f"N = {args.n}, {n_edges} edges, D = 784")

    worker_counts = [int(value) for value in args.workers.split(",") if value]

    def local(threads: int) -> tuple[float, np.ndarray]:
        """Seconds and lengths of the local build with `threads` torch threads."""
        torch.set_num_threads(threads)
        started = time.perf_counter()
        lengths = edge_lengths(metric, starts, ends)
        seconds = time.perf_counter() - started
        torch.set_num_threads(1)
        return seconds, lengths

    reference = local(1)[1]  # also warms this process up
    results = []
    started = time.perf_counter()
    # logical CPUs: W > cores oversubscribes the cores (4 actors on 2 cores measure the overhead of contention)
    ray.init(num_cpus=max([cpus, *worker_counts]), include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_init_s = time.perf_counter() - started
    for n_workers in worker_counts:
        executor = RayExecutor(n_workers=n_workers, model=vae)
        started = time.perf_counter()
        executor.edge_lengths(metric, starts[:64], ends[:64])
        startup = time.perf_counter() - started
        for repeat in range(args.repeats):  # each Ray timing right after the local ones it is compared with
            same = min(n_workers, 2)
            local_times = {threads: local(threads) for threads in sorted({1, same})}
            for threads, (seconds, lengths) in local_times.items():
                results.append({
                    "mode": f"local, {threads} thread(s)", "workers": 0, "threads": threads, "seconds": seconds,
                    "edges_per_s": n_edges / seconds, "paired_with": n_workers, "repeat": repeat,
                    "max_rel_diff": float(np.max(np.abs(lengths - reference) / reference)),
                    "bitwise": bool(np.array_equal(lengths, reference)), "load": os.getloadavg()[0],
                })
            started = time.perf_counter()
            lengths = executor.edge_lengths(metric, starts, ends)
            seconds = time.perf_counter() - started
            rate = n_edges / seconds
            local_rate = n_edges / local_times[1][0]
            results.append({
                "mode": f"ray, {n_workers} worker(s)", "workers": n_workers, "threads": 1, "seconds": seconds,
                "startup_s": startup if repeat == 0 else None, "edges_per_s": rate, "repeat": repeat,
                "per_worker_edges_per_s": rate / min(n_workers, cpus),
                "overhead_vs_ideal": local_rate * min(n_workers, cpus) / rate - 1.0,
                "vs_local_same_cpus": rate / (n_edges / local_times[same][0]),
                "max_rel_diff": float(np.max(np.abs(lengths - reference) / reference)),
                "bitwise": bool(np.array_equal(lengths, reference)),
                "worker_rss_mb": [value / 2**20 for value in executor.stats_["worker_rss_bytes"]],
                "blocks": executor.stats_["blocks"], "blocks_per_worker": executor.stats_["blocks_per_worker"],
                "load": os.getloadavg()[0],
            })
            print(results[-1], flush=True)
        executor.shutdown_workers()
    ray.shutdown()

    for row in results:
        row["mean_rss_mb"] = float(np.mean(row["worker_rss_mb"])) if row.get("worker_rss_mb") else None
    print(
        table(
            f"Edge weighting, {n_edges} edges, MNIST-size MLP decoder (D = 784), T = 8 (load {os.getloadavg()[0]:.1f})",
            [
                ("mode", "mode", "str"), ("seconds", "seconds", "s"), ("startup_s", "actor startup s", "s"),
                ("edges_per_s", "edges/s", "g"), ("overhead_vs_ideal", "overhead vs ideal", "pct"),
                ("vs_local_same_cpus", "vs local, same CPUs", "x"), ("max_rel_diff", "max rel diff", "e"),
                ("bitwise", "bit for bit", "str"), ("mean_rss_mb", "RSS per worker MB", "g"), ("load", "load", "g"),
            ],
            [dict(row, bitwise=str(row.get("bitwise", "-"))) for row in results],
        )
    )
    summary = {}
    for n_workers in worker_counts:
        mine = [row for row in results if row["workers"] == n_workers]
        summary[n_workers] = {
            "median_overhead_vs_ideal": float(np.median([row["overhead_vs_ideal"] for row in mine])),
            "median_vs_local_same_cpus": float(np.median([row["vs_local_same_cpus"] for row in mine])),
            "median_edges_per_s": float(np.median([row["edges_per_s"] for row in mine])),
        }
        print(f"{n_workers} worker(s): median over {len(mine)} repeats: " + ", ".join(f"{k} {v:.3f}" for k, v in summary[n_workers].items()))
    per_worker = max(row["per_worker_edges_per_s"] for row in results if row["workers"])
    projection = {f"{w}_workers_hours": EDGES_1M / (per_worker * w) / 3600 for w in (8, 64)}
    print(f"Ray init {ray_init_s:.1f} s. 1.5e7 edges at {per_worker:.0f} edges/s per worker: "
          + ", ".join(f"{name.split('_')[0]} workers {hours:.2f} h" for name, hours in projection.items()))
    payload = {"python": info["python"], "torch": info["torch"], "cpus": cpus, "args": vars(args),
               "n_edges": n_edges, "ray_init_s": ray_init_s, "rows": results, "summary": summary, "projection": projection,
               "load_end": os.getloadavg()[0], "machine": finish(info)}
    print(f"wrote {write_json('distributed_quick' if args.quick else 'distributed', payload)}")


if __name__ == "__main__":
    main()
