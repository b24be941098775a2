"""Geodesic refinement: turn Dijkstra polylines through latent codes into geodesics of the pullback metric.

The strategy and public API. Methods (registry REFINE_METHODS; the measured rationale is in docs/geodesics.md):

* "auto" (default): Levenberg-Marquardt on the output-space discrete energy ("gauss_newton") for every pair; at
  latent dimension <= polish_dim, when the metric computes in float64, the curve is then polished by multiple
  shooting from it (kept when it converges and is no longer); at d <= SHOOTING_FALLBACK_DIM pairs where
  Gauss-Newton did not converge also go through it.
* "gauss_newton": lsg_graph.geodesics.gn from the graph path resampled by metric arc length, or from the straight
  segment where that is shorter.
* "shooting": multiple (n_segments > 1) or single shooting (lsg_graph.geodesics.shooting) from the graph path
  smoothed by a short energy minimisation, with a second pass at 2 n_segments, the fallback and a retry.
* "energy": L-BFGS on the latent midpoint energy (lsg_graph.geodesics.energy).
* "none": the graph path itself.

Every result's `method` is the registry name of the method that produced its curve, or "graph" when the graph
path was kept. A refined curve is kept only when its measured length (quadrature of the metric speed along the
curve `GeodesicResult.sample` returns points of) is below the graph path's length, so a returned length is that of
an actual curve and never undercuts the true distance beyond quadrature error. Everything runs on the metric's
(decoder's) device and dtype; decoders without parameters compute in float64.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from lsg_graph._threads import resolve_threads
from lsg_graph._validation import check_array, check_choice, check_int, check_positive_int
from lsg_graph.errors import ConvergenceWarning, DecoderError, InvalidInput
from lsg_graph.geodesics.curves import hermite_sample, polyline_sample
from lsg_graph.geodesics.energy import _energy, _gauss_newton, _polyline_segments
from lsg_graph.geodesics.ode import Trajectory, _one_cpu_thread, _working, exponential_map, integrate_geodesic
from lsg_graph.geodesics.problem import (
    KEEP_RTOL,
    RefineOptions,
    _Candidate,
    _Options,
    _Problem,
)
from lsg_graph.geodesics.shooting import ShootingResult, _shooting, log_map
from lsg_graph.geodesics.shortest import GraphPath, check_sources, shortest_paths
from lsg_graph.graph.latent_graph import LatentGraph
from lsg_graph.graph.weights import edge_lengths
from lsg_graph.metric import PullbackMetric

__all__ = [
    "FALLBACKS",
    "INITIAL_GUESSES",
    "REFINE_METHODS",
    "GeodesicResult",
    "RefineOptions",
    "ShootingResult",
    "Trajectory",
    "exponential_map",
    "integrate_geodesic",
    "log_map",
    "refine_geodesics",
    "refine_path",
]

AGREE_RTOL = 1e-6  # the two shooting passes agree when their lengths are this close; else the fallback runs too
WARM_POINTS = 17  # nodes of the coarse energy minimisation that smooths graph paths for initial="energy"
WARM_ITER = 40  # its L-BFGS iterations
WARM_TOL = 1e-6  # its relative energy change
SHOOTING_FALLBACK_DIM = 8  # "auto" tries shooting for unconverged Gauss-Newton pairs up to this d (it costs O(d) more)
POLISH_RTOL = 1e-8  # "auto" keeps a converged shooting curve up to this much longer than the Gauss-Newton one


@dataclass(frozen=True)
class GeodesicResult:
    """A refined curve from a to b and how it was found.

    Attributes
    ----------
    points : ndarray (m, d) float64
        The latent curve from a to b.
    length : float
        The metric length of that curve (quadrature of the metric speed: Gauss-Legendre, 8 nodes per interval or
        straight segment, 4 per interval of a Gauss-Newton spline): the length of an actual curve, in output units.
    graph_length : float
        The Dijkstra path's length.
    converged : bool
        The method that produced the curve met its tolerance.
    method : str
        The REFINE_METHODS name of that method ("gauss_newton", "shooting", "energy"), or "graph" (the graph path
        was kept).
    n_iter : int
        That method's iterations (for "graph" after a failed refinement, all iterations spent).
    endpoint_error : float
        ||gamma(1) - b|| in latent units (0 unless shooting).
    source, target : int or None
        The graph nodes of the end points (None for a bare polyline).
    initial_velocity : ndarray (d,) or None
        gamma'(0) for shooting results: the Riemannian log map Log_a(b).
    message : str
        Why earlier stages failed or a fallback was taken.
    velocities : ndarray (m, d) or None
        The curve's velocities at equal times t_i = i / (m - 1) when it is a cubic Hermite curve (shooting: the
        integrator's; gauss_newton: the C2 cubic spline's through its nodes); None for a polyline.
    times : ndarray (m,) or None
        A polyline's parameter at its points (by metric arc length; None: equal times).
    """

    points: np.ndarray
    length: float
    graph_length: float
    converged: bool
    method: str
    n_iter: int
    endpoint_error: float
    source: int | None = None
    target: int | None = None
    initial_velocity: np.ndarray | None = None
    message: str = ""
    velocities: np.ndarray | None = None
    times: np.ndarray | None = None

    @property
    def improvement(self) -> float:
        """Relative shortening (graph_length - length) / graph_length; 0 for a zero-length path."""
        return (self.graph_length - self.length) / self.graph_length if self.graph_length > 0 else 0.0

    def sample(self, n: int) -> np.ndarray:
        """The curve at n equally spaced times of its parameter on [0, 1].

        Interpolates the solver's own representation (cubic Hermite through points and velocities, else the
        polyline), so the points lie on the curve whose `length` is reported.

        Parameters
        ----------
        n : int
            Number of points, at least 2.

        Returns
        -------
        ndarray (n, d) float64
            Latent points from a to b.
        """
        n = check_int(n, "n", minimum=2)
        at = np.linspace(0.0, 1.0, n)
        if len(self.points) < 2:
            return np.repeat(self.points[:1], n, axis=0)
        if self.velocities is not None:
            return hermite_sample(self.points, self.velocities, at)[0]
        times = self.times if self.times is not None else np.linspace(0.0, 1.0, len(self.points))
        return polyline_sample(self.points, times, at)

    def decode(self, decoder: Any, n: int = 16) -> np.ndarray:
        """The decoded means along the curve, at `sample(n)`.

        Parameters
        ----------
        decoder : PullbackMetric or decoder
            A PullbackMetric or anything lsg_graph.decoder.as_decoder accepts (a VAE, its decoder, a callable).
        n : int, default 16
            Number of points along the curve.

        Returns
        -------
        ndarray (n, D) float64
            Decoder means in data units.
        """
        metric = decoder if isinstance(decoder, PullbackMetric) else PullbackMetric(decoder)
        device, dtype = _working(metric)
        with torch.no_grad():
            mean, _ = metric.decoder(torch.as_tensor(self.sample(n), dtype=dtype, device=device))
        return mean.detach().cpu().double().numpy()


# ----------------------------------------------------------------------------------------------------------------
# Methods, fallbacks and the choice of curve
# ----------------------------------------------------------------------------------------------------------------


def _run_shooting(metric: PullbackMetric, problems: Sequence[_Problem], options: _Options) -> list[list[_Candidate]]:
    """Shooting from the initial guesses with n_segments and (n_segments > 1) with 2 * n_segments segments; for the
    pairs where a pass failed or the two disagree (the boundary-value problem can have several solutions), the
    fallback (from the graph path), then shooting again with twice the segments and steps, started from the
    fallback's curve and bounded by its length. Candidates per problem, in the order tried (the caller keeps the
    shortest converged one)."""
    starts = list(INITIAL_GUESSES[options.initial](metric, problems, options))
    attempts = [[c] for c in _shooting(metric, starts, options, options.n_segments, options.n_steps)]
    if options.n_segments > 1:  # single shooting (K = 1) is what the caller asked for: no second pass
        for tried, candidate in zip(attempts, _shooting(metric, starts, options, 2 * options.n_segments, options.n_steps)):
            tried.append(candidate)
    failing = [i for i, tried in enumerate(attempts) if not _agreed(starts[i], tried)]
    fallback = FALLBACKS[options.fallback]
    if failing and fallback is not None:
        curves = fallback(metric, [problems[i] for i in failing], options)
        for i, candidate in zip(failing, curves):
            attempts[i].append(candidate)
        for i, start in zip(failing, _starts_from(metric, [starts[i] for i in failing], curves)):
            starts[i] = start
    if failing:
        retry = _shooting(metric, [starts[i] for i in failing], options, 2 * options.n_segments, 2 * options.n_steps)
        for i, candidate in zip(failing, retry):
            attempts[i].append(candidate)
    return [_mark_rejected(start, tried) for start, tried in zip(starts, attempts)]


def _starts_from(metric: PullbackMetric, starts: Sequence[_Problem], curves: Sequence[_Candidate]) -> list[_Problem]:
    """Start problems on the given curves where they are finite and shorter than the start's bound, with that bound."""
    better = [i for i, (s, c) in enumerate(zip(starts, curves)) if np.isfinite(c.length) and c.length < _limit(s)]
    updated = list(starts)
    if not better:
        return updated
    segments = _polyline_segments(metric, np.stack([curves[i].points for i in better]))
    for i, edges in zip(better, segments):
        updated[i] = replace(starts[i], points=curves[i].points, edges=edges, bound=float(edges.sum()))
    return updated


def _run_gauss_newton(metric: PullbackMetric, problems: Sequence[_Problem], options: _Options) -> list[list[_Candidate]]:
    """Gauss-Newton (Levenberg-Marquardt) on the output-space energy alone."""
    return [[candidate] for candidate in _gauss_newton(metric, problems, options)]


def _run_auto(metric: PullbackMetric, problems: Sequence[_Problem], options: _Options) -> list[list[_Candidate]]:
    """Gauss-Newton for every pair; then multiple shooting (n_segments, n_steps) started from its curve and bounded
    by its length, for every pair at latent dimension <= polish_dim when the metric computes in float64 and, at
    d <= SHOOTING_FALLBACK_DIM, for pairs where Gauss-Newton did not converge; the caller keeps the shortest
    converged candidate."""
    tried = _run_gauss_newton(metric, problems, options)
    polish = metric.latent_dim <= options.polish_dim and _working(metric)[1] == torch.float64
    rescue = metric.latent_dim <= SHOOTING_FALLBACK_DIM
    chosen = [i for i, (candidate,) in enumerate(tried) if polish or (rescue and not candidate.converged)]
    chosen = [i for i in chosen if np.isfinite(tried[i][0].length)]
    if not chosen:
        return tried
    # the Hermite start needs no metric edge lengths (latent ones serve the path's bounding box and resampling)
    segments = [np.linalg.norm(np.diff(tried[i][0].points, axis=0), axis=1) for i in chosen]
    starts = [
        replace(
            problems[i], points=tried[i][0].points, edges=edges, bound=tried[i][0].length * (1.0 + POLISH_RTOL),
            velocities=tried[i][0].velocities,
        )
        for i, edges in zip(chosen, segments)
    ]
    shot = _shooting(metric, starts, options, options.n_segments, options.n_steps)
    for i, start, candidate in zip(chosen, starts, shot):
        if candidate.converged and candidate.length <= _limit(start):
            tried[i] = [candidate]  # the exact solution of the geodesic equation, as short as the discrete one
        else:
            tried[i] = _mark_rejected(start, tried[i] + [candidate])
    return tried


def _mark_rejected(problem: _Problem, tried: list[_Candidate]) -> list[_Candidate]:
    """Note converged shooting candidates that were longer than the start curve or the graph path."""
    for candidate in tried:
        if candidate.converged and candidate.method == "shooting" and candidate.length > _limit(problem):
            candidate.within_bound = False
            candidate.message = (
                f"{candidate.method}: converged to a geodesic of length {candidate.length:.6g}, longer than the "
                f"start curve or graph path ({min(problem.bound, problem.graph_length):.6g}): not the shortest one"
            )
    return tried


def _run_energy(metric: PullbackMetric, problems: Sequence[_Problem], options: _Options) -> list[list[_Candidate]]:
    """Energy minimisation alone (from the graph path)."""
    return [[candidate] for candidate in _energy(metric, problems, options)]


def _run_none(metric: PullbackMetric, problems: Sequence[_Problem], options: _Options) -> list[list[_Candidate]]:
    """No refinement: no candidates (the graph path is returned, converged)."""
    return [[] for _ in problems]


def _graph_start(metric: PullbackMetric, problems: Sequence[_Problem], options: _Options) -> Sequence[_Problem]:
    """Shooting starts from the graph paths themselves."""
    return problems


def _energy_start(metric: PullbackMetric, problems: Sequence[_Problem], options: _Options) -> Sequence[_Problem]:
    """The graph paths smoothed by a short, coarse energy minimisation (WARM_POINTS nodes, WARM_ITER iterations).

    Shooting from a graph path can converge to a longer geodesic than the one the path approximates (another
    local solution of the boundary-value problem); from a curve already near the minimising geodesic it rarely
    does, and Newton needs few iterations. The smoothed curve's length becomes the problem's bound.
    """
    coarse = replace(options, n_points=WARM_POINTS, energy_iter=WARM_ITER, tol=WARM_TOL)
    return _starts_from(metric, problems, _energy(metric, problems, coarse))


INITIAL_GUESSES: dict[str, Callable[[PullbackMetric, Sequence[_Problem], _Options], Sequence[_Problem]]] = {
    "energy": _energy_start,
    "graph": _graph_start,
}

REFINE_METHODS: dict[str, Callable[[PullbackMetric, Sequence[_Problem], _Options], list[list[_Candidate]]]] = {
    "auto": _run_auto,
    "gauss_newton": _run_gauss_newton,
    "shooting": _run_shooting,
    "energy": _run_energy,
    "none": _run_none,
}

FALLBACKS: dict[str, Callable[[PullbackMetric, Sequence[_Problem], _Options], list[_Candidate]] | None] = {
    "energy": _energy,
    "none": None,
}


def _limit(problem: _Problem) -> float:
    """The longest accepted shooting curve: the start curve's or the graph path's length, whichever is shorter."""
    return min(problem.bound, problem.graph_length) * (1.0 + KEEP_RTOL)


def _agreed(problem: _Problem, tried: Sequence[_Candidate]) -> bool:
    """Whether every candidate converged within the problem's limit, all to the same length (AGREE_RTOL)."""
    lengths = [c.length for c in tried if c.converged and c.length <= _limit(problem)]
    return len(lengths) == len(tried) > 0 and max(lengths) <= min(lengths) * (1.0 + AGREE_RTOL)


def _settled(problem: _Problem, tried: Sequence[_Candidate]) -> bool:
    """Whether some candidate converged to a curve within the problem's limit."""
    return any(candidate.converged and candidate.length <= _limit(problem) for candidate in tried)


def _choose(problem: _Problem, tried: list[_Candidate], method: str) -> GeodesicResult:
    """The result for one problem: the shortest converged candidate within the limit and below the graph length;
    else the shortest candidate below the graph length (converged or not); else the graph path."""
    graph = GeodesicResult(
        problem.points.copy(),
        problem.graph_length,
        problem.graph_length,
        method == "none",
        "graph",
        0,
        0.0,
        problem.source,
        problem.target,
        times=_arc_times(problem.edges),
    )
    notes = "; ".join(candidate.message for candidate in tried if candidate.message)
    good = [c for c in tried if c.converged and c.within_bound and c.length < problem.graph_length]
    if good:
        return _result(problem, min(good, key=lambda candidate: candidate.length), notes)
    shorter = [candidate for candidate in tried if candidate.length < problem.graph_length]
    if shorter:
        return _result(problem, min(shorter, key=lambda candidate: candidate.length), notes)
    for candidate in tried:
        if candidate.converged and candidate.length <= problem.graph_length * (1.0 + KEEP_RTOL):
            note = f"{candidate.method} converged to the graph path's length: the graph path is already geodesic"
            return replace(graph, converged=True, n_iter=candidate.n_iter, message=note)
    if tried:
        spent = sum(candidate.n_iter for candidate in tried)
        return replace(graph, n_iter=spent, message=(notes or "no refined curve was shorter than the graph path"))
    return graph


def _result(problem: _Problem, candidate: _Candidate, notes: str) -> GeodesicResult:
    """A GeodesicResult from a kept candidate."""
    return GeodesicResult(
        np.asarray(candidate.points, dtype=np.float64),
        float(candidate.length),
        problem.graph_length,
        candidate.converged,
        candidate.method,
        candidate.n_iter,
        candidate.endpoint_error,
        problem.source,
        problem.target,
        candidate.initial_velocity,
        notes,
        None if candidate.velocities is None else np.asarray(candidate.velocities, dtype=np.float64),
        None if candidate.velocities is not None else _arc_times(_polyline_edges(candidate.points, problem)),
    )


def _arc_times(edges: np.ndarray) -> np.ndarray | None:
    """Polyline parameter (m,) by cumulative edge length on [0, 1]; None (equal times) for a zero-length path."""
    total = float(np.sum(edges))
    if not np.isfinite(total) or total <= 0.0:
        return None
    return np.concatenate([[0.0], np.cumsum(edges)]) / total


def _polyline_edges(points: np.ndarray, problem: _Problem) -> np.ndarray:
    """Latent edge lengths of a candidate polyline, a proxy for its parameter (the problem's own edges if it is the
    problem's curve)."""
    if points.shape == problem.points.shape and np.array_equal(points, problem.points):
        return problem.edges
    return np.linalg.norm(np.diff(points, axis=0), axis=1)


def _trivial(problem: _Problem) -> GeodesicResult:
    """Identical end points: length 0, converged, a two-point curve."""
    points = np.stack([problem.points[0], problem.points[-1]])
    return GeodesicResult(points, 0.0, problem.graph_length, True, "graph", 0, 0.0, problem.source, problem.target)


# ----------------------------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------------------------


CPU_BATCH_WORK = 512  # pairs x latent dimension of one batch on the CPU (at least 8 pairs); batches run on n_jobs threads


def _refine(
    metric: PullbackMetric, problems: list[_Problem], method: str, options: _Options, batch_size: int,
    n_jobs: Any = 1,
) -> list[GeodesicResult]:
    """Refine problems in batches with `method`; trivial ones directly; warn once about non-convergence.

    On the CPU a batch holds at most max(8, CPU_BATCH_WORK // d) pairs. For decoders with the fused forward-mode passes (VAE
    decoders: no torch.func, whose lazy set-up is not thread-safe) they run on `resolve_threads(n_jobs)` Python
    threads, each on one torch thread (the decoder passes release the GIL). The batches are the same for every
    n_jobs, so are the results.
    """
    _check_endpoints(metric, problems)
    results: list[GeodesicResult | None] = [None] * len(problems)
    work = []
    for i, problem in enumerate(problems):
        if np.array_equal(problem.points[0], problem.points[-1]):
            results[i] = _trivial(problem)
        else:
            work.append(i)
    device = _working(metric)[0]
    size = min(batch_size, max(8, CPU_BATCH_WORK // metric.latent_dim)) if device.type == "cpu" else batch_size
    batches = [work[begin : begin + size] for begin in range(0, len(work), size)]
    fused = all(hasattr(metric.decoder, name) for name in ("fused_jvp", "fused_jacobian_rows"))
    workers = min(len(batches), resolve_threads(n_jobs)) if device.type == "cpu" and fused else 1

    def run(chunk: list[int]) -> list[list[_Candidate]]:
        return REFINE_METHODS[method](metric, [problems[i] for i in chunk], options)

    with _one_cpu_thread(device):
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                outcomes = list(pool.map(run, batches))
        else:
            outcomes = [run(chunk) for chunk in batches]
    for chunk, tried in zip(batches, outcomes):
        for i, candidates in zip(chunk, tried):
            results[i] = _choose(problems[i], candidates, method)
    final = [result for result in results if result is not None]
    _warn_unconverged(final, method, options)
    return final


def _check_endpoints(metric: PullbackMetric, problems: Sequence[_Problem]) -> None:
    """Raise DecoderError when the decoder is not finite at some pair's end points (nothing can be done there)."""
    if not problems:
        return
    device, dtype = _working(metric)
    ends = np.concatenate([np.stack([p.points[0], p.points[-1]]) for p in problems])
    try:
        with torch.no_grad():
            metric.stacked(torch.as_tensor(ends, dtype=dtype, device=device))
    except DecoderError as exc:
        raise DecoderError(
            f"The decoder is not finite at an end point of the path(s) to refine, so they cannot be refined: {exc}"
        ) from exc


WANTED = {"auto": ("gauss_newton", "shooting"), "gauss_newton": ("gauss_newton",), "shooting": ("shooting",)}


def _warn_unconverged(results: Sequence[GeodesicResult], method: str, options: _Options) -> None:
    """One ConvergenceWarning naming the parameters to raise when the requested method failed for some pair."""
    if method == "none":
        return
    wanted = WANTED.get(method, (method,))
    missed = [
        i
        for i, result in enumerate(results)
        if not (result.converged and (result.method in wanted or result.method == "graph"))
    ]
    if not missed:
        return
    names = sorted({results[i].method for i in missed})
    kinds = {name: sum(results[i].method == name for i in missed) for name in names}
    returned = ", ".join(
        f"{count} by {name}" + (" (not converged)" if name in wanted else "") for name, count in kinds.items()
    )
    if method == "energy":
        advice = f"raise energy_iter (now {options.energy_iter}) or n_points (now {options.n_points}), or loosen tol"
    elif method in ("auto", "gauss_newton"):
        advice = (
            f"raise gn_iter (now {options.gn_iter}) or gn_max_segments (now {options.gn_max_segments}), or loosen "
            f"gn_tol (now {options.gn_tol:g})"
        )
    else:
        advice = (
            f"raise max_iter (now {options.max_iter}), n_segments (now {options.n_segments}) or n_steps "
            f"(now {options.n_steps}); raise ridge (now {options.ridge:g}) where trajectories escape"
        )
    first = results[missed[0]]
    warnings.warn(
        f"{method} did not converge for {len(missed)} of {len(results)} pair(s) (first: {_pair_name(first, missed[0])}"
        f"{': ' + first.message if first.message else ''}); {advice}. Returned instead: {returned}.",
        ConvergenceWarning,
        stacklevel=3,
    )


def _pair_name(result: GeodesicResult, index: int) -> str:
    """'nodes 3 -> 17' when the node ids are known, else 'pair 5'."""
    if result.source is not None and result.target is not None:
        return f"nodes {result.source} -> {result.target}"
    return f"pair {index}"


def _edge_weights(graph: LatentGraph, nodes: np.ndarray) -> np.ndarray:
    """Graph edge lengths (m - 1,) along a node path."""
    if len(nodes) < 2:
        return np.zeros(0)
    return np.asarray(graph.weights[nodes[:-1], nodes[1:]], dtype=np.float64).reshape(-1)


def _check_pairs(graph: LatentGraph, pairs: Any) -> np.ndarray:
    """Node pairs (m, 2) int64 within [0, n), else InvalidInput naming the bad value."""
    array = np.asarray(pairs)
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] == 0:
        raise InvalidInput(
            f"pairs must be an array of node indices of shape (m, 2) with m >= 1; got shape {array.shape}."
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise InvalidInput(f"pairs must hold integer node indices; got dtype {array.dtype}.")
    check_sources(graph, array[:, 0], "source")
    check_sources(graph, array[:, 1], "target")
    return array.astype(np.int64)


def _options(options: RefineOptions | None, overrides: dict[str, Any]) -> RefineOptions:
    """RefineOptions from `options` (default: the defaults) with keyword overrides (each validated)."""
    if options is not None and not isinstance(options, RefineOptions):
        raise InvalidInput(f"options must be a RefineOptions or None; got {type(options).__name__}.")
    names = {field.name for field in dataclasses.fields(RefineOptions)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise InvalidInput(
            f"Unknown refinement option(s) {', '.join(map(repr, unknown))}; expected RefineOptions fields: "
            f"{', '.join(sorted(names))}."
        )
    return replace(options or RefineOptions(), **overrides)


def refine_geodesics(
    metric: PullbackMetric,
    graph: LatentGraph,
    pairs: Any,
    method: str = "auto",
    options: RefineOptions | None = None,
    *,
    batch_size: int = 1024,
    n_jobs: int | None = None,
    **overrides: Any,
) -> list[GeodesicResult]:
    """Geodesics between node pairs of `graph`, refined from their Dijkstra paths; one result per pair.

    Parameters
    ----------
    metric : PullbackMetric
        The metric whose geodesics are sought (its latent dimension is the graph's).
    graph : LatentGraph
        The graph whose shortest paths start the refinement.
    pairs : array-like (m, 2) of int
        Node index pairs (source, target).
    method : str, default "auto"
        A key of REFINE_METHODS (see the module docstring): "auto", "gauss_newton", "shooting", "energy" or "none".
    options : RefineOptions, optional
        Solver settings (default: RefineOptions()).
    batch_size : int, default 1024
        Pairs refined together, all decoder evaluations of a batch in one call (on the CPU at most
        max(8, CPU_BATCH_WORK // d)).
    n_jobs : int or None, default None
        CPU threads over the batches for decoders with the fused passes (VAE decoders; others run on one): None,
        the free cores (or the enclosing scope's or set_threads() count); -1, all cores. The results do not depend
        on it. Ignored on CUDA.
    **overrides
        Any RefineOptions field (tol=..., gn_iter=..., max_iter=...), overriding `options`.

    Returns
    -------
    list of GeodesicResult
        One per pair, in order; never longer than its graph path (the graph path itself where refinement failed).

    Raises
    ------
    DisconnectedGraph
        For a pair in different components.
    InvalidInput
        For a bad argument.

    Warns
    -----
    ConvergenceWarning
        Once, when the method did not converge for some pairs, naming the parameters to raise.
    """
    check_choice(method, "refinement method", REFINE_METHODS)
    options = _options(options, overrides)
    batch_size = check_positive_int(batch_size, "batch_size")
    resolve_threads(n_jobs)  # validates
    if graph.latent_dim != metric.latent_dim:
        raise InvalidInput(
            f"The graph's codes have dimension {graph.latent_dim} but the metric's latent_dim is {metric.latent_dim}."
        )
    paths = shortest_paths(graph, _check_pairs(graph, pairs))
    problems = [
        _Problem(path.points, _edge_weights(graph, path.nodes), float(path.length), path.source, path.target)
        for path in paths
    ]
    return _refine(metric, problems, method, options, batch_size, n_jobs)


def refine_path(
    metric: PullbackMetric,
    path: GraphPath | Any,
    method: str = "auto",
    options: RefineOptions | None = None,
    **overrides: Any,
) -> GeodesicResult:
    """Refine one path into a geodesic.

    Same rules as `refine_geodesics`. For a bare polyline the length it must beat is its own, measured with
    Gauss-Legendre quadrature (8 nodes per segment); source and target of the result are then None.

    Parameters
    ----------
    metric : PullbackMetric
        The metric whose geodesic is sought.
    path : GraphPath or array-like (m, d)
        A shortest graph path (`shortest_path`), or a polyline of latent points from a to b.
    method : str, default "auto"
        A key of REFINE_METHODS, as in `refine_geodesics`.
    options : RefineOptions, optional
        Solver settings (default: RefineOptions()).
    **overrides
        Any RefineOptions field, overriding `options`.

    Returns
    -------
    GeodesicResult
        The refined curve, never longer than the path.
    """
    check_choice(method, "refinement method", REFINE_METHODS)
    options = _options(options, overrides)
    if isinstance(path, GraphPath):
        points, source, target = np.asarray(path.points, dtype=np.float64), path.source, path.target
    else:
        points, source, target = check_array(path, "path", ndim=2, min_rows=1, n_columns=metric.latent_dim), None, None
    edges = edge_lengths(metric, points[:-1], points[1:]) if len(points) > 1 else np.zeros(0)
    length = float(path.length) if isinstance(path, GraphPath) else float(edges.sum())
    return _refine(metric, [_Problem(points, edges, length, source, target)], method, options, 1)[0]
