"""The harness every benchmark shares: machine record, thread setting, fixed-width tables, JSON output.

A benchmark calls `machine()` at its start (platform, python, torch, cores, load average), `use_threads(1)` for the
one-thread setting (torch and, when loaded, faiss), prints its rows with `table`, and ends with
`write_json(name, payload)` after `finish(info)` adds the load average at the end. Models come from
benchmarks/_models.py. ``LSG_BENCH_RESULTS`` writes the JSON to another folder (a smoke run that must not replace
the recorded results).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS_DIR = Path(os.environ.get("LSG_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages, rounded (NaN where the platform has none)."""
    if not hasattr(os, "getloadavg"):
        return [math.nan] * 3
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """What a result depends on: platform, python, torch, cores (all / usable), threads, load average now."""
    from lsg_graph._threads import available_cpus

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "usable_cpus": available_cpus(),
        "threads": torch.get_num_threads(),
        "load_avg_start": load_average(),
    }


def finish(info: dict[str, Any]) -> dict[str, Any]:
    """`info` (from `machine`) with the load average at the end added; returned for chaining."""
    info["load_avg_end"] = load_average()
    return info


def machine_line(info: dict[str, Any]) -> str:
    """One line for the top of a benchmark's output."""
    one, five, fifteen = info["load_avg_start"]
    return (f"python {info['python']} torch {info['torch']} threads {info['threads']} ({info['usable_cpus']} of "
            f"{info['cpus']} cores usable); load avg {one} / {five} / {fifteen} (1/5/15 min)")


def use_threads(n: int | None = 1) -> int:
    """Set the process's thread count (torch via lsg_graph.set_threads; faiss too when it is loaded); return it."""
    from lsg_graph import set_threads

    threads = set_threads(n)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(threads)
    return threads


def fmt(value: Any, kind: str = "g") -> str:
    """Format one cell: 'e' scientific (2 digits), 'pct' percent (3 significant), 's' seconds, 'x' ratio, else str."""
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if kind == "e":
            return f"{value:.2e}"
        if kind == "pct":
            return f"{100.0 * value:.3f}%" if abs(value) < 0.1 else f"{100.0 * value:.2f}%"
        if kind == "s":
            return f"{value:.2f}"
        if kind == "x":
            return f"{value:.2f}x"
        return f"{value:.4g}"
    return str(value)


def table(title: str, columns: Sequence[tuple[str, str, str]], rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table: columns are (key, header, kind); numbers right-aligned, text left-aligned."""
    cells = [[fmt(row.get(key), kind) for key, _, kind in columns] for row in rows]
    headers = [header for _, header, _ in columns]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    text_cols = [kind == "str" for _, _, kind in columns]

    def line(values: Sequence[str]) -> str:
        parts = [v.ljust(w) if is_text else v.rjust(w) for v, w, is_text in zip(values, widths, text_cols)]
        return "  ".join(parts).rstrip()

    rule = "-" * len(line(headers))
    out = [title, rule, line(headers), rule]
    out += [line(c) for c in cells]
    out.append(rule)
    return "\n".join(out)


def _jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays (and nested containers) to plain JSON types; NaN/inf become None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write `payload` to benchmarks/results/<name>.json (folder created if needed); return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temp.write_text(json.dumps(_jsonable(payload), indent=2) + "\n")
    temp.replace(path)  # atomic: a reader sees the old file or the new one
    return path


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_of(contenders: dict[str, Callable[[], Any]], repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds of every repeat of each contender, interleaved within each repeat (the first repeat also warms up)."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            sync(device)
            started = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - started)
    return times


def far_pairs(manifold: Any, codes: np.ndarray, minimum: float, count: int, seed: int) -> np.ndarray:
    """`count` random node pairs (count, 2) whose exact distance (manifold.distance) exceeds `minimum`."""
    rng = np.random.default_rng(seed)
    pairs: list[tuple[int, int]] = []
    while len(pairs) < count:
        i, j = rng.integers(0, len(codes), 2)
        if manifold.distance(codes[[i]], codes[[j]])[0] > minimum:
            pairs.append((int(i), int(j)))
    return np.array(pairs)


def per_dimension(
    args: Any, rows_for: Callable[[int], list[dict[str, Any]]], columns: Sequence[tuple[str, str, str]], title: str,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run `rows_for(d)` for every d in args.dims, printing each d's rows and rewriting benchmarks/results/
    <args.name>.json ({"machine", "args", **extra, "rows"}) after each, so a long run keeps what it measured; then
    print the whole table under `title` and return the rows."""
    info = machine()
    rows: list[dict[str, Any]] = []
    for d in args.dims:
        new = rows_for(d)
        rows += new
        print(table(f"MNIST-5k, latent dimension {d}", columns, new), flush=True)
        write_json(args.name, {"machine": {**info, "load_avg_end": finish(info)["load_avg_end"]}, "args": vars(args),
                               **(extra or {}), "rows": rows})
    print(table(title, columns, rows))
    return rows
