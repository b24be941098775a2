"""Edge weighting on a Ray cluster (the optional extra `ray`): one actor per CPU group holding the decoder.

Why Ray (not Dask): edge weighting needs a stateful worker (the decoder, built once, kept warm) fed a stream of
small tasks; Ray's actors are exactly that, with per-actor resources (CPUs, GPUs) and a failure signal per task
(RayActorError) that lets the driver redo a lost chunk. Dask's futures suit stateless tasks over partitioned data.

How it runs (`RayExecutor.edge_lengths`, called by `build_latent_graph(..., executor=RayExecutor(...))`):

* The model travels as data, not as a pickled module: the VAE's config (a JSON dict) and its state dict (numpy
  arrays, zero-copy through Ray's object store); each actor rebuilds `VAE(config)`, loads the tensors and wraps
  `PullbackMetric(vae.decoder(variance))`. A metric that is not a VAE's is shipped through Ray's own serializer
  (cloudpickle) as the fallback. Before any work each actor decodes the same probe points as the driver's metric;
  a mismatch is refused.
* The edges are cut into blocks of whole local chunks (the chunk size `edge_lengths` uses on the CPU), so each
  actor evaluates exactly the local build's chunks; blocks are dispatched in increasing order, at most
  `IN_FLIGHT` per actor, and results are placed by block index, so the output does not depend on timing. On a CPU
  with one thread per actor the lengths are bit-for-bit those of the local build (the tests check that; in
  general they agree to rounding, well within 1e-6 relative).
* A block whose actor dies (RayActorError, e.g. the process was killed) is queued again and redone by another
  actor; a replacement actor is started while `max_restarts` allows. Progress is one bar over all workers
  (`progress=True`) and/or `progress_callback(done_edges, total_edges)`.
* After a run, `stats_` holds edges/s, blocks per worker, redone blocks, restarts and each worker's resident memory.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lsg_graph._validation import check_codes, check_int, check_positive_int
from lsg_graph.errors import InvalidInput, LsgGraphError
from lsg_graph.graph.weights import check_metric, default_points_per_chunk, edge_lengths
from lsg_graph.metric import PullbackMetric
from lsg_graph.registry import DEFAULT_N_NODES, DEFAULT_VARIANCE

CHUNKS_PER_BLOCK = 8  # local chunks per task: 8 x 512 edges (T = 8) keeps a task well above Ray's ~1 ms overhead
IN_FLIGHT = 2  # tasks queued per actor, so an actor never waits for the driver between blocks
PROBE_POINTS = 16
PROBE_RTOL = 1e-6


def ray_available() -> bool:
    """Whether Ray can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _import_ray() -> Any:
    """Import ray or say how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise LsgGraphError("Distributed edge weighting needs Ray: pip install 'lsg-graph[ray]'.") from exc
    return ray


def model_spec(vae: Any, variance: str = DEFAULT_VARIANCE) -> dict[str, Any]:
    """The VAE as plain data: {"kind": "vae", "config": JSON dict, "state": {name: ndarray}, "rbf_fitted", "variance"}."""
    from lsg_graph.model import VAE

    if not isinstance(vae, VAE):
        raise InvalidInput(f"model must be a lsg_graph VAE; got {type(vae).__name__}.")
    vae.decoder(variance)  # refuses an unknown variance or an unfitted RBF network now, not on the workers
    state = {name: tensor.detach().cpu().numpy() for name, tensor in vae.state_dict().items()}
    return {"kind": "vae", "config": vae.config.to_dict(), "state": state, "rbf_fitted": bool(vae.rbf_fitted), "variance": variance}


def metric_from_spec(spec: dict[str, Any], threads: int = 1) -> PullbackMetric:
    """Rebuild the pullback metric a worker evaluates (CPU, `threads` torch threads) from `model_spec` data."""
    torch.set_num_threads(threads)
    if spec["kind"] == "metric":
        return spec["metric"]
    from lsg_graph.model import VAE, VAEConfig

    vae = VAE(VAEConfig.from_dict(spec["config"]))
    tensors = {name: torch.from_numpy(np.array(array)) for name, array in spec["state"].items()}
    vae.to(next(iter(tensors.values())).dtype)
    vae.load_state_dict(tensors)
    vae.rbf_fitted = spec["rbf_fitted"]
    return PullbackMetric(vae.eval().decoder(spec["variance"]))


class _EdgeWorker:
    """The actor: a decoder's metric, kept warm; measures blocks of edges."""

    def __init__(self, spec: dict[str, Any], threads: int) -> None:
        """Rebuild the metric from the spec."""
        self.metric = metric_from_spec(spec, threads)

    def probe(self, points: np.ndarray) -> np.ndarray:
        """g(z) at probe points (p, d), float64."""
        with torch.no_grad():
            return self.metric.stacked(points).double().cpu().numpy()

    def lengths(self, block: int, starts: np.ndarray, ends: np.ndarray, n_nodes: int, points_per_chunk: int) -> tuple:
        """(block, lengths (e,), seconds) of one block of edges, chunked exactly like the local build."""
        started = time.perf_counter()
        result = edge_lengths(self.metric, starts, ends, n_nodes=n_nodes, points_per_chunk=points_per_chunk)
        return block, result, time.perf_counter() - started

    def info(self) -> dict[str, int]:
        """Process id and resident memory in bytes."""
        with open("/proc/self/statm") as handle:
            resident = int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return {"pid": os.getpid(), "rss_bytes": resident}


class RayExecutor:
    """Measures edge lengths on Ray actors; pass it as `build_latent_graph(..., executor=...)`.

    Parameters
    ----------
    address : "local" (start a Ray instance on this machine), "auto" (join the running cluster, else start a local
        one) or "ray://HOST:PORT" (a Ray client connection). Ignored when Ray is already initialised.
    n_workers : actors to start; None: one per `cpus_per_worker` CPUs of the cluster.
    cpus_per_worker : CPUs each actor reserves (its torch thread count).
    model : the VAE whose decoder the metric is (shipped as config + tensors); None: `run_dir`'s model, else the
        metric itself through Ray's serializer.
    run_dir : a run directory whose model.safetensors is the metric's decoder (loaded when edge_lengths is first called).
    max_restarts : replacement actors started in all for actors that die.
    chunks_per_block : local chunks per task.
    progress_callback : called as f(done_edges, total_edges) after every block.
    """

    def __init__(
        self,
        address: str = "auto",
        n_workers: int | None = None,
        *,
        cpus_per_worker: int = 1,
        model: Any = None,
        run_dir: str | Path | None = None,
        max_restarts: int = 2,
        chunks_per_block: int = CHUNKS_PER_BLOCK,
        progress_callback: Callable[[int, int], None] | None = None,
    ) -> None:
        """Check and store the settings; Ray starts on the first call."""
        if not isinstance(address, str) or not (address in ("auto", "local") or address.startswith("ray://")):
            raise InvalidInput(f"The cluster address must be 'auto', 'local' or 'ray://HOST:PORT'; got {address!r}.")
        self.address = address
        self.n_workers = None if n_workers is None else check_positive_int(n_workers, "n_workers")
        self.cpus_per_worker = check_positive_int(cpus_per_worker, "cpus_per_worker")
        self.model, self.run_dir = model, None if run_dir is None else Path(run_dir)
        self.max_restarts = check_int(max_restarts, "max_restarts", minimum=0)
        self.chunks_per_block = check_positive_int(chunks_per_block, "chunks_per_block")
        self.progress_callback = progress_callback
        self.actors_: list[Any] = []
        self.stats_: dict[str, Any] = {}
        self._spec_key: tuple | None = None

    # ------------------------------------------------------------------------------------------------ cluster

    def _connect(self) -> Any:
        """Initialise Ray (unless it already is) and return the module."""
        ray = _import_ray()
        if ray.is_initialized():
            return ray
        options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if self.address == "local":
            ray.init(**options)
        elif self.address == "auto":
            try:
                ray.init(address="auto", **options)
            except (ConnectionError, RuntimeError):
                ray.init(**options)
        else:
            ray.init(address=self.address, **options)
        return ray

    def _spec(self, metric: PullbackMetric) -> dict[str, Any]:
        """What the actors rebuild the metric from (see the module docstring)."""
        variance = getattr(metric.decoder, "variance", "rbf")
        model = self.model
        if model is None and self.run_dir is not None:
            from lsg_graph.model import VAE

            model = VAE.load(self.run_dir)
        if model is not None:
            return model_spec(model, variance)
        return {"kind": "metric", "metric": metric}

    def _start(self, metric: PullbackMetric) -> Any:
        """Start the actors (once per metric) and check that they decode like `metric`."""
        ray = self._connect()
        key = (id(metric), id(self.model), self.run_dir)
        if self.actors_ and self._spec_key == key:
            return ray
        self.shutdown_workers()
        n_workers = self.n_workers
        cluster_cpus = int(ray.cluster_resources().get("CPU", 0))
        if n_workers is None:
            n_workers = max(1, cluster_cpus // self.cpus_per_worker)
        if n_workers * self.cpus_per_worker > cluster_cpus:  # the extra actors would wait forever for CPUs
            raise InvalidInput(
                f"{n_workers} worker(s) x {self.cpus_per_worker} CPU(s) need {n_workers * self.cpus_per_worker} CPUs; "
                f"the Ray cluster has {cluster_cpus}. Use fewer workers (or start Ray with more logical CPUs)."
            )
        self._remote = ray.remote(num_cpus=self.cpus_per_worker)(_EdgeWorker)
        self._spec_ref = ray.put(self._spec(metric))
        self.actors_ = [self._new_actor() for _ in range(n_workers)]
        rng = np.random.default_rng(0)
        probe = rng.normal(size=(PROBE_POINTS, metric.latent_dim))
        with torch.no_grad():
            expected = metric.stacked(probe).double().cpu().numpy()
        for answer in ray.get([actor.probe.remote(probe) for actor in self.actors_]):
            if answer.shape != expected.shape or not np.allclose(answer, expected, rtol=PROBE_RTOL, atol=1e-9):
                self.shutdown_workers()
                raise InvalidInput(
                    "The workers' decoder does not match the metric's: pass the VAE the metric was made from as "
                    "RayExecutor(model=...) (or its run_dir), with the same variance."
                )
        self._spec_key = key
        return ray

    def _new_actor(self) -> Any:
        """One more actor from the stored spec."""
        return self._remote.remote(self._spec_ref, self.cpus_per_worker)

    def shutdown_workers(self) -> None:
        """Stop this executor's actors (Ray itself keeps running)."""
        if self.actors_:
            ray = _import_ray()
            for actor in self.actors_:
                try:
                    ray.kill(actor)
                except Exception:  # noqa: BLE001 - an actor that is already gone
                    pass
        self.actors_, self._spec_key = [], None

    # ------------------------------------------------------------------------------------------------ the work

    def edge_lengths(
        self,
        metric: PullbackMetric,
        starts: Any,
        ends: Any,
        n_nodes: int = DEFAULT_N_NODES,
        progress: bool = False,
    ) -> np.ndarray:
        """Metric lengths (E,) float64 of the segments starts[e] -> ends[e] (E, d), like `weights.edge_lengths`."""
        check_metric(metric)
        starts = check_codes(starts, "starts", latent_dim=metric.latent_dim, min_rows=0)
        ends = check_codes(ends, "ends", latent_dim=metric.latent_dim, min_rows=0)
        if starts.shape != ends.shape:
            raise InvalidInput(f"starts and ends must have the same shape; got {starts.shape} and {ends.shape}.")
        n_nodes = check_positive_int(n_nodes, "n_nodes")
        n_edges = starts.shape[0]
        if n_edges == 0:
            return np.empty(0, dtype=np.float64)
        ray = self._start(metric)
        points_per_chunk = default_points_per_chunk("cpu")
        block_edges = max(1, points_per_chunk // n_nodes) * self.chunks_per_block
        blocks = deque((index, begin, min(begin + block_edges, n_edges)) for index, begin in enumerate(range(0, n_edges, block_edges)))
        bounds = {index: (begin, stop) for index, begin, stop in blocks}
        lengths = np.empty(n_edges, dtype=np.float64)
        pending: dict[Any, tuple[int, int]] = {}  # future -> (block, actor position)
        per_worker = [0] * len(self.actors_)
        redone, restarts, done, worker_seconds = 0, 0, 0, 0.0
        started = time.perf_counter()

        def submit(position: int) -> None:
            while blocks and sum(1 for _, owner in pending.values() if owner == position) < IN_FLIGHT:
                index, begin, stop = blocks.popleft()
                actor = self.actors_[position]
                future = actor.lengths.remote(index, starts[begin:stop], ends[begin:stop], n_nodes, points_per_chunk)
                pending[future] = (index, position)

        with tqdm(total=n_edges, desc="edge lengths (ray)", unit="edge", disable=not progress, leave=False) as bar:
            for position in range(len(self.actors_)):
                submit(position)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                future = ready[0]
                index, position = pending.pop(future)
                try:
                    _, result, seconds = ray.get(future)
                except ray.exceptions.RayActorError:
                    redone += 1
                    blocks.appendleft((index, *bounds[index]))
                    lost = [f for f, (_, owner) in pending.items() if owner == position]
                    for other in lost:  # the dead actor's other blocks are redone too
                        other_index, _ = pending.pop(other)
                        blocks.appendleft((other_index, *bounds[other_index]))
                        redone += 1
                    if restarts < self.max_restarts:
                        self.actors_[position] = self._new_actor()
                        restarts += 1
                    else:
                        self.actors_[position] = None
                    live = [p for p, actor in enumerate(self.actors_) if actor is not None]
                    if not live:
                        raise LsgGraphError(
                            f"Every Ray worker died and the {self.max_restarts} restart(s) are spent; "
                            f"{len(blocks)} block(s) of edges were not measured."
                        ) from None
                    for live_position in live:
                        submit(live_position)
                    continue
                begin, stop = bounds[index]
                lengths[begin:stop] = result
                per_worker[position] += 1
                worker_seconds += seconds
                done += stop - begin
                bar.update(stop - begin)
                if self.progress_callback is not None:
                    self.progress_callback(done, n_edges)
                if self.actors_[position] is not None:
                    submit(position)
                for live_position, actor in enumerate(self.actors_):  # a restarted or idle actor picks up work
                    if actor is not None:
                        submit(live_position)
        self.actors_ = [actor for actor in self.actors_ if actor is not None]
        elapsed = time.perf_counter() - started
        memory = [info["rss_bytes"] for info in ray.get([actor.info.remote() for actor in self.actors_])]
        self.stats_ = {
            "n_edges": n_edges, "seconds": elapsed, "edges_per_s": n_edges / max(elapsed, 1e-12),
            "n_workers": len(self.actors_), "blocks": len(bounds), "block_edges": block_edges,
            "blocks_per_worker": per_worker, "redone_blocks": redone, "restarts": restarts,
            "worker_busy_s": worker_seconds, "worker_rss_bytes": memory,
        }
        if not np.isfinite(lengths).all():
            from lsg_graph.errors import DecoderError

            bad = np.flatnonzero(~np.isfinite(lengths))[:5].tolist()
            raise DecoderError(f"The decoder gave non-finite metric lengths on the workers (first edges: {bad}).")
        return lengths
