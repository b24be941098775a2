"""Load test of `lsg-graph serve` on loopback: latency and throughput of batched /distance requests.

Usage:  .venv/bin/python benchmarks/serve_load.py [--run DIR] [--requests 10000] [--clients 8] [--pairs 16]
                                                  [--sources 4] [--max-seconds 300] [--quick]

The service runs in its own process (uvicorn, one worker) bound to 127.0.0.1 on a free port, over `--run` or, by
default, a copy in a temporary folder of the benchmarks' default run (benchmarks/_models.py: the default model on
the embedded digits, trained once and cached, graph N = 1797, k = 20). `--clients` threads, each with its own keep-alive
httpx.Client, send `--requests` POST /distance requests in all, each with `--pairs` random node pairs drawn from
`--sources` distinct source nodes (one Dijkstra each); the run stops early after `--max-seconds`. Only 127.0.0.1 is
ever contacted. Reported: p50 / p90 / p99 / max latency, requests/s and pairs/s, the error count, and, as a baseline
in the same process as the clients, the same requests answered by `RunService.distance` directly (no HTTP).

Rows go to benchmarks/results/serve_load.json (serve_load_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import finish, machine, machine_line, table, write_json  # noqa: E402
from _models import trained  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_run(folder: Path, seed: int = 0) -> Path:
    """A copy of the benchmarks' default run (model and graph, k = 20) in `folder`, so serving leaves the cache as is."""
    model = trained("digits", seed)
    model.graph()  # built once into the cached run
    run = folder / "run"
    shutil.copytree(model.folder, run)
    return run


def start_server(run: Path, port: int, max_pairs: int) -> subprocess.Popen:
    """The service in a child process; returns once /health answers."""
    import httpx

    code = (
        "from lsg_graph.serve import ServiceLimits, serve_run; "
        f"serve_run({str(run)!r}, host='127.0.0.1', port={port}, limits=ServiceLimits(max_pairs={max_pairs}))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.perf_counter() + 120
    while time.perf_counter() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with code {process.returncode}")
    process.terminate()
    raise RuntimeError("the service did not answer /health within 120 s")


def request_bodies(n_requests: int, n_points: int, n_pairs: int, n_sources: int, seed: int) -> list[dict]:
    """Random /distance bodies: n_pairs pairs from n_sources distinct sources each."""
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(n_requests):
        sources = rng.choice(n_points, n_sources, replace=False)
        pairs = np.column_stack([rng.choice(sources, n_pairs), rng.integers(0, n_points, n_pairs)])
        bodies.append({"pairs": pairs.tolist()})
    return bodies


def load(port: int, bodies: list[dict], n_clients: int, max_seconds: float) -> dict:
    """Send the bodies from n_clients threads; latencies (s) of the answered ones, errors, wall seconds."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    cursor = iter(range(len(bodies)))
    lock = threading.Lock()
    stop_at = time.perf_counter() + max_seconds

    def client() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as session:
            while time.perf_counter() < stop_at:
                with lock:
                    index = next(cursor, None)
                if index is None:
                    return
                started = time.perf_counter()
                try:
                    answer = session.post("/distance", json=bodies[index])
                    ok = answer.status_code == 200 and len(answer.json()["distance"]) == len(bodies[index]["pairs"])
                except httpx.HTTPError as exc:
                    ok, answer = False, exc
                elapsed = time.perf_counter() - started
                with lock:
                    (latencies.append(elapsed) if ok else errors.append(str(answer)[:200]))

    threads = [threading.Thread(target=client) for _ in range(n_clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies": np.array(latencies), "errors": errors, "wall_s": time.perf_counter() - started}


def direct(run: Path, bodies: list[dict]) -> dict:
    """The same bodies answered by RunService.distance in this process (no HTTP), one after another."""
    from lsg_graph.serve import DistanceRequest, RunService, ServiceLimits

    service = RunService(run, "cpu", ServiceLimits(max_pairs=max(len(body["pairs"]) for body in bodies)))
    latencies = []
    started = time.perf_counter()
    for body in bodies:
        begin = time.perf_counter()
        service.distance(DistanceRequest(**body))
        latencies.append(time.perf_counter() - begin)
    return {"latencies": np.array(latencies), "errors": [], "wall_s": time.perf_counter() - started}


def summary(name: str, result: dict, n_pairs: int, n_clients: int) -> dict:
    """A table row from one load result."""
    latencies = result["latencies"]
    done = len(latencies)
    return {
        "mode": name, "clients": n_clients, "requests": done, "errors": len(result["errors"]),
        "p50_ms": 1e3 * float(np.median(latencies)) if done else None,
        "p90_ms": 1e3 * float(np.quantile(latencies, 0.9)) if done else None,
        "p99_ms": 1e3 * float(np.quantile(latencies, 0.99)) if done else None,
        "max_ms": 1e3 * float(latencies.max()) if done else None,
        "requests_per_s": done / result["wall_s"], "pairs_per_s": done * n_pairs / result["wall_s"],
        "wall_s": result["wall_s"],
    }


def main() -> None:
    """Run the load test and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--sources", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1000 requests")
    args = parser.parse_args()
    if args.quick:
        args.requests = 1000
    info = machine()
    print(machine_line(info))
    with tempfile.TemporaryDirectory() as folder:
        run = args.run or make_run(Path(folder))
        from lsg_graph.pipeline import load_graph

        n_points = load_graph(run).n_points
        bodies = request_bodies(args.requests, n_points, args.pairs, args.sources, args.seed)
        port = free_port()
        server = start_server(run, port, max(args.pairs, 16))
        try:
            served = load(port, bodies, args.clients, args.max_seconds)
            single = load(port, bodies[: max(1, args.requests // 10)], 1, args.max_seconds)
        finally:
            server.terminate()
            server.wait(timeout=30)
        baseline = direct(run, bodies[: max(1, args.requests // 10)])
    rows = [
        summary("HTTP", served, args.pairs, args.clients),
        summary("HTTP", single, args.pairs, 1),
        summary("in-process RunService.distance", baseline, args.pairs, 1),
    ]
    for row in rows:
        row["vs_in_process"] = rows[2]["requests_per_s"] and row["requests_per_s"] / rows[2]["requests_per_s"]
    print(
        table(
            f"POST /distance on 127.0.0.1: {args.pairs} pairs from {args.sources} sources per request, N = {n_points} "
            f"(load {os.getloadavg()[0]:.1f})",
            [
                ("mode", "mode", "str"), ("clients", "clients", "g"), ("requests", "requests", "g"),
                ("errors", "errors", "g"), ("p50_ms", "p50 ms", "s"), ("p90_ms", "p90 ms", "s"),
                ("p99_ms", "p99 ms", "s"), ("max_ms", "max ms", "s"), ("requests_per_s", "req/s", "g"),
                ("pairs_per_s", "pairs/s", "g"), ("vs_in_process", "throughput vs in-process", "x"),
            ],
            rows,
        )
    )
    if served["errors"]:
        print(f"first error: {served['errors'][0]}")
    payload = {"python": info["python"], "args": {k: str(v) for k, v in vars(args).items()}, "n_points": n_points,
               "rows": rows, "machine": finish(info)}
    print(f"wrote {write_json('serve_load_quick' if args.quick else 'serve_load', payload)}")


if __name__ == "__main__":
    main()
