"""Scale benchmark: building the latent graph of 1k, 10k and 70k codes, stage by stage, against the decoder's limits.

Usage:  .venv/bin/python benchmarks/scale.py [--sizes 1000,10000,70000] [--conv-sizes 1000,10000]
                                             [--device auto|cpu|cuda] [--quick] [--seed S]

Models (benchmarks/_models.py: trained once by `train_run` with seed S on its 80/20 split, cached):
  * "mlp": the default model `trained("digits")` (VAEConfig defaults: latent 2, tanh MLP 2-128-256-64, RBF
    precision decoder) on the 8x8 digits; --quick: 20 epochs, 5 RBF epochs.
  * "conv": the convolutional VAE `trained("digits28", architecture="conv")` on the digits upsampled to 28x28
    (MNIST-sized inputs, D = 784), trained briefly (15 epochs, 5 RBF epochs; --quick 3 and 2): this benchmark
    measures speed, not model quality.
Inputs for N codes: N training images drawn with replacement plus pixel noise (std 0.05, clipped to [0, 1]).

For each model and N, `lsg_graph.pipeline`'s build path is run stage by stage exactly as `build_run` does it:
encode (`encode_codes`), `build_latent_graph` (k = 10, T = 8; its own stage timings: kNN, edge weights,
components) and `LatentGraph.save`, each (model, device, N) in a fresh process. Per stage: seconds and the peak
resident memory above that process's level after loading the model and the inputs (sampled every 2 ms from
/proc/self/statm; on CUDA also torch's peak allocated bytes of the whole build).

Limits (same decoder, same quadrature points of the first 50,000 (conv: 5,000) graph edges, the library's chunk size):
  forward  plain batched forward passes of [mean; std]        edges/s equivalent = points/s / T
  jvp      plain batched torch.func.jvp with one tangent each  (the generic JVP limit)
  fused    the decoder's fused forward-mode pass (lsg_graph.forward_mode), when it has one
The edge weighting of the build is given as edges/s and as a ratio to each limit.

Tables are printed; rows go to benchmarks/results/scale.json (scale_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import best_of, finish, machine, sync, table, write_json  # noqa: E402
from _models import CachedModel, trained  # noqa: E402

from lsg_graph._validation import resolve_device  # noqa: E402
from lsg_graph.data import load_dataset  # noqa: E402
from lsg_graph.errors import DisconnectedGraphWarning  # noqa: E402
from lsg_graph.graph.latent_graph import build_latent_graph  # noqa: E402
from lsg_graph.graph.weights import default_points_per_chunk, gauss_legendre  # noqa: E402
from lsg_graph.metric import PullbackMetric  # noqa: E402
from lsg_graph.model import VAE, encode_codes  # noqa: E402

K = 10
T_NODES = 8
LIMIT_EDGES = {"mlp": 50_000, "conv": 5_000}  # edges the limits are measured on, per model
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024.0**2


# ------------------------------------------------------------------------------------------------- memory


def resident_bytes() -> int:
    """Resident set size of this process in bytes (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class PeakSampler:
    """A background thread sampling the resident set size every `interval` seconds; `peak()` since `reset()`."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self._peak = resident_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, resident_bytes())
            time.sleep(self.interval)

    def reset(self) -> None:
        """Start a new window."""
        self._peak = resident_bytes()

    def peak(self) -> int:
        """Peak resident bytes seen since the last reset."""
        time.sleep(2 * self.interval)
        return max(self._peak, resident_bytes())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def stage(sampler: PeakSampler, record: dict[str, Any], name: str, device: torch.device, base: int) -> Iterator[None]:
    """Time a stage and record its peak resident memory above `base` bytes, in MB."""
    sync(device)
    sampler.reset()
    started = time.perf_counter()
    yield
    sync(device)
    record[f"{name}_s"] = time.perf_counter() - started
    record[f"{name}_mb"] = (sampler.peak() - base) / MB


# ------------------------------------------------------------------------------------------------- models, data


def cached_model(name: str, seed: int, quick: bool) -> CachedModel:
    """The benchmark's model `name` ("mlp": the digits, "conv": the digits upsampled to 28 x 28) from the cache."""
    if name == "mlp":
        return trained("digits", seed, **({"epochs": 20, "rbf_epochs": 5} if quick else {}))
    epochs = {"epochs": 3, "rbf_epochs": 2} if quick else {"epochs": 15, "rbf_epochs": 5}
    return trained("digits28", seed, architecture="conv", **epochs)


def noisy_inputs(images: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n rows drawn with replacement from `images`, plus N(0, 0.05^2) pixel noise, clipped to [0, 1]."""
    rng = np.random.default_rng(seed)
    rows = images[rng.integers(0, len(images), n)]
    return np.clip(rows + rng.normal(0.0, 0.05, rows.shape), 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------------- build


def build_row(model: str, vae: VAE, inputs: np.ndarray, device: torch.device) -> tuple[dict[str, Any], Any, PullbackMetric]:
    """One end-to-end build of len(inputs) codes on `device`: stage seconds, peak MB above the start, edges/s."""
    row: dict[str, Any] = {"model": model, "device": device.type, "n": len(inputs)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sampler = PeakSampler()
    base = resident_bytes()
    row["base_mb"] = base / MB
    started = time.perf_counter()
    with stage(sampler, row, "encode", device, base):
        codes = encode_codes(vae, inputs)
    metric = PullbackMetric(vae.decoder("rbf"))
    with stage(sampler, row, "build", device, base), warnings.catch_warnings():
        warnings.simplefilter("ignore", DisconnectedGraphWarning)
        graph = build_latent_graph(metric, codes, k=K, n_nodes=T_NODES, device=str(device))
    with tempfile.TemporaryDirectory() as folder, stage(sampler, row, "save", device, base):
        graph.save(folder)
    row["total_s"] = time.perf_counter() - started
    sampler.close()
    timings = graph.params["timings"]
    row.update({name: timings[f"{name}_s"] for name in ("knn", "edge_lengths", "components")})
    row["edges"] = graph.n_edges
    row["bridges"] = graph.params["n_bridges"]
    row["edge_eps"] = (graph.n_edges - graph.params["n_bridges"]) / timings["edge_lengths_s"]
    if device.type == "cuda":
        row["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / MB
    return row, graph, metric


def worker(
    run_dir: str, data: str, model: str, n: int, device: str, seed: int, repeats: int
) -> tuple[dict, dict | None]:
    """In a fresh process (clean memory baseline): load the model and its data, build N codes; limits when repeats > 0."""
    torch_device = torch.device(device)
    vae = VAE.load(run_dir, device=device).eval()
    images = load_dataset(data).images
    inputs = noisy_inputs(images, n, seed + n)
    row, graph, metric = build_row(model, vae, inputs, torch_device)
    limits = limit_row(model, graph, metric, row["edge_eps"], repeats) if repeats > 0 else None
    return row, limits


# ------------------------------------------------------------------------------------------------- limits


def quadrature_points(graph: Any, metric: PullbackMetric, n_edges: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points and tangents (E*T, d) of the first `n_edges` graph edges, on the metric's device and dtype."""
    upper = graph.weights.tocoo()
    keep = upper.row < upper.col
    rows, cols = upper.row[keep][:n_edges], upper.col[keep][:n_edges]
    start = torch.as_tensor(graph.codes[rows], dtype=metric.dtype, device=metric.device)
    step = torch.as_tensor(graph.codes[cols], dtype=metric.dtype, device=metric.device) - start
    nodes = torch.as_tensor(gauss_legendre(T_NODES)[0], dtype=metric.dtype, device=metric.device)
    points = (start[:, None, :] + nodes[None, :, None] * step[:, None, :]).reshape(-1, start.shape[1])
    return points, step[:, None, :].expand(-1, T_NODES, -1).reshape(-1, start.shape[1]).contiguous()


def limit_runs(metric: PullbackMetric, points: torch.Tensor, tangents: torch.Tensor) -> dict[str, Callable[[], None]]:
    """Plain passes over all points in the library's chunks: forward, torch.func.jvp and (if any) the fused jvp."""
    decoder = metric.decoder
    chunk = default_points_per_chunk(points.device)

    def stacked(z: torch.Tensor) -> torch.Tensor:
        mean, std = decoder(z)
        return torch.cat([mean, std], dim=1)

    def chunked(fn: Callable[[torch.Tensor, torch.Tensor], Any]) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                for begin in range(0, points.shape[0], chunk):
                    fn(points[begin : begin + chunk], tangents[begin : begin + chunk])

        return run

    runs = {
        "forward": chunked(lambda z, v: stacked(z)),
        "jvp": chunked(lambda z, v: torch.func.jvp(stacked, (z,), (v,))),
        "inner": chunked(lambda z, v: metric.inner(z, v).sqrt()),
    }
    if hasattr(decoder, "fused_jvp"):
        runs["fused"] = chunked(decoder.fused_jvp)
    return runs


def limit_row(model: str, graph: Any, metric: PullbackMetric, build_eps: float, repeats: int) -> dict[str, Any]:
    """Edges/s of the limits (best of `repeats`, contenders interleaved) and the build's edge rate against them."""
    points, tangents = quadrature_points(graph, metric, LIMIT_EDGES[model])
    n_edges = points.shape[0] // T_NODES
    runs = limit_runs(metric, points, tangents)
    best = {name: min(seconds) for name, seconds in best_of(runs, repeats, points.device).items()}
    rates = {f"{name}_eps": n_edges / seconds for name, seconds in best.items()}
    row = {"model": model, "device": points.device.type, "n": graph.n_points, "limit_edges": n_edges, **rates}
    row["build_eps"] = build_eps
    row["build_over_jvp"] = build_eps / rates["jvp_eps"]
    row["build_over_forward"] = build_eps / rates["forward_eps"]
    row["jvp_over_forward"] = rates["jvp_eps"] / rates["forward_eps"]
    if "fused_eps" in rates:
        row["build_over_fused"] = build_eps / rates["fused_eps"]
        row["fused_over_jvp"] = rates["fused_eps"] / rates["jvp_eps"]
    return row


# ------------------------------------------------------------------------------------------------- main

BUILD_COLUMNS = [
    ("model", "model", "str"),
    ("device", "dev", "str"),
    ("n", "N", "g"),
    ("edges", "edges", "g"),
    ("encode_s", "encode s", "s"),
    ("knn", "kNN s", "s"),
    ("edge_lengths", "edges s", "s"),
    ("components", "comp s", "s"),
    ("save_s", "save s", "s"),
    ("total_s", "total s", "s"),
    ("edge_eps", "edges/s", "g"),
    ("encode_mb", "enc MB", "g"),
    ("build_mb", "build MB", "g"),
    ("save_mb", "save MB", "g"),
    ("cuda_peak_mb", "cuda MB", "g"),
    ("base_mb", "base MB", "g"),
]
LIMIT_COLUMNS = [
    ("model", "model", "str"),
    ("device", "dev", "str"),
    ("n", "N", "g"),
    ("forward_eps", "forward e/s", "g"),
    ("jvp_eps", "jvp e/s", "g"),
    ("fused_eps", "fused e/s", "g"),
    ("inner_eps", "inner e/s", "g"),
    ("build_eps", "build e/s", "g"),
    ("build_over_jvp", "build/jvp", "x"),
    ("build_over_fused", "build/fused", "x"),
    ("fused_over_jvp", "fused/jvp", "x"),
    ("jvp_over_forward", "jvp/fwd", "x"),
]


def parse_sizes(text: str) -> list[int]:
    """'1000,10000' -> [1000, 10000] (empty text: no sizes)."""
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    """Train both models, build every size on every device, print the tables, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,70000", help="codes N for the MLP model")
    parser.add_argument("--conv-sizes", default="1000,10000", help="codes N for the conv model ('' to skip)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, and the CPU), cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="short training, sizes 1000 and 5000")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each limit measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="results name under benchmarks/results (default scale, scale_quick)")
    args = parser.parse_args(argv)
    sizes = {"mlp": parse_sizes(args.sizes), "conv": parse_sizes(args.conv_sizes)}
    if args.quick:
        sizes = {"mlp": [1000, 5000], "conv": [1000] if sizes["conv"] else []}
    devices = [torch.device("cpu")]
    if args.device in ("auto", "cuda") and resolve_device(args.device).type == "cuda":
        devices = [torch.device("cuda")] + ([] if args.device == "cuda" else devices)
    elif args.device == "cpu":
        devices = [torch.device("cpu")]
    started = time.perf_counter()
    machine_info = machine()
    print(
        f"lsg-graph scale benchmark  python {machine_info['python']} torch {machine_info['torch']} threads "
        f"{machine_info['threads']} cuda {torch.cuda.is_available()} load {os.getloadavg()}\n"
    )
    builds, limits, info = [], [], {}
    context = multiprocessing.get_context("spawn")
    for model, model_sizes in sizes.items():
        if not model_sizes:
            continue
        cached = cached_model(model, args.seed, args.quick)
        input_dim = cached.dataset().n_features
        info[model] = {"train_s": cached.train_seconds, "input_dim": input_dim}
        print(f"{model}: trained in {cached.train_seconds:.1f}s (D = {input_dim}; benchmarks/_models.py cache); "
              f"load {os.getloadavg()}")
        for device in devices:
            for n in model_sizes:
                repeats = args.repeats if n == max(model_sizes) else 0
                with context.Pool(1) as pool:
                    row, limit = pool.apply(
                        worker, (str(cached.folder), cached.data, model, n, device.type, args.seed, repeats)
                    )
                builds.append(row)
                limits += [limit] if limit else []
                print(f"  {device.type} N={n}: {row['total_s']:.1f}s ({row['edge_eps']:.0f} edges/s)", flush=True)
    print()
    print(table(f"Build stages (k={K}, T={T_NODES}): seconds and peak resident MB above each stage's start", BUILD_COLUMNS, builds))
    print()
    print(
        table(
            "Edge weighting against the decoder's limits (edges/s on the first edges of the largest build: "
            f"{LIMIT_EDGES}; build = the build's own rate)",
            LIMIT_COLUMNS,
            limits,
        )
    )
    total = time.perf_counter() - started
    path = write_json(
        args.out or ("scale_quick" if args.quick else "scale"),
        {
            "python": machine_info["python"],
            "torch": machine_info["torch"],
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "models": info,
            "builds": builds,
            "limits": limits,
            "load_end": os.getloadavg(),
            "total_seconds": total,
            "machine": finish(machine_info),
        },
    )
    print(f"\n({total:.0f}s; load {os.getloadavg()}; wrote {path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
