"""Threads: a graph build with torch's default thread count against the count lsg-graph chooses, on a busy machine.

torch starts with one intra-op thread per core of the machine. When other processes keep cores busy, those
threads wait on each other at every barrier and the batched forward-mode passes of the edge weighting slow down
several times. `lsg_graph._threads.default_threads()` (what every CLI command uses unless `--threads` is given)
counts the cores this process may use minus the busy ones. This script builds the same latent graph (a VAE decoder
with D = 784 outputs, random weights: the cost of a trained one) with

* torch's default (the thread count torch started with),
* the chosen count (`default_threads()` measured with the load present),
* one thread,

first on the machine as it is, then with `--busy` CPU-bound processes beside it, every configuration in the same
process, best of `--repeats`. The graphs must be byte-identical (the thread count changes only the speed).
Run without OMP_NUM_THREADS in the environment (it would fix torch's default):

    env -u OMP_NUM_THREADS .venv/bin/python benchmarks/threads.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from _common import finish, machine, table, write_json  # noqa: E402
from _models import untrained  # noqa: E402

from lsg_graph._threads import available_cpus, busy_cpus, default_threads, torch_threads  # noqa: E402
from lsg_graph.graph.latent_graph import build_latent_graph  # noqa: E402
from lsg_graph.metric import PullbackMetric  # noqa: E402

SPIN = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


def build_seconds(metric: PullbackMetric, codes: np.ndarray, k: int, threads: int, repeats: int) -> tuple[float, bytes]:
    """Best-of-`repeats` seconds of one build at `threads` torch threads, and the edge weights' bytes."""
    best, weights = np.inf, b""
    with torch_threads(threads):
        for _ in range(repeats):
            started = time.perf_counter()
            graph = build_latent_graph(metric, codes, k=k, backend="kdtree", device="cpu")
            best = min(best, time.perf_counter() - started)
            weights = graph.weights.data.tobytes()
    return best, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="800 codes instead of 3000")
    parser.add_argument("--n", type=int, default=None, help="number of codes")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--busy", type=int, default=1, help="CPU-bound processes started beside the build")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    n = args.n or (800 if args.quick else 3000)
    torch_default = torch.get_num_threads()
    info = machine()
    vae = untrained(784, seed=0, latent_dim=2)  # benchmarks/_models.py: random weights, a trained one's cost
    metric = PullbackMetric(vae.decoder("standard"))
    codes = np.random.default_rng(0).normal(size=(n, 2))
    print(f"{available_cpus()} usable cores, torch default {torch_default} threads, n = {n}, k = {args.k}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}")
    build_seconds(metric, codes[:100], 5, 1, 1)  # warm-up
    rows, reference = [], None
    for busy in (0, args.busy):
        spinners = [subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=3600)]) for _ in range(busy)]
        try:
            if busy:
                time.sleep(2.0)  # let the spinners start
            load = busy_cpus()
            chosen = default_threads(own_load=0.0)
            configs = {"torch default": torch_default, "chosen": chosen, "one thread": 1}
            seconds = {}
            for name, threads in configs.items():
                seconds[name], weights = build_seconds(metric, codes, args.k, threads, args.repeats)
                reference = reference or weights
                assert weights == reference, f"{name}: the graph changed with the thread count"
            for name, threads in configs.items():
                rows.append({
                    "busy": busy, "load": load, "config": name, "threads": threads, "seconds": seconds[name],
                    "vs_default": seconds["torch default"] / seconds[name],
                })
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()
    print(table(
        "Graph build (D = 784 VAE decoder, edge weighting dominates): best of "
        f"{args.repeats}; speed-up = default seconds / seconds",
        [("busy", "busy procs", "g"), ("load", "load avg", "g"), ("config", "threads from", "str"),
         ("threads", "threads", "g"), ("seconds", "seconds", "s"), ("vs_default", "speed-up", "x")],
        rows,
    ))
    path = write_json("threads", {"n": n, "k": args.k, "cores": available_cpus(), "torch_default": torch_default,
                                  "rows": rows, "identical_graphs": True, "machine": finish(info)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
