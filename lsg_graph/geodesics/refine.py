"""Geodesic refinement: turn Dijkstra polylines through latent codes into true geodesics of the pullback metric.

Mathematics (design.md). A geodesic gamma: [0, 1] -> latent space solves gamma'' = -(J^T J)^-1 J^T h, with J the
Jacobian of the stacked decoder g = [mu; sigma] at gamma and h = d^2/ds^2 g(gamma + s gamma') at s = 0, a jvp of a
jvp (`PullbackMetric.geodesic_acceleration`; no Christoffel symbols). It is integrated with the classical fixed-step
Runge-Kutta method of order 4 (`exponential_map`), batched over all starts at once.

Methods (registry `REFINE_METHODS`):

* "shooting" (default): boundary-value shooting for gamma(0) = a, gamma(1) = b by damped Newton, batched over pairs
  (each pair its own step and line search, all integrations of a pass together). With `n_segments` K > 1 it is
  multiple shooting: K segments on local time [0, 1], unknowns the interior node positions and all segment
  velocities, equations continuity of position and velocity at the nodes and the end point b ((2K - 1) d unknowns
  per pair); K = 1 is single shooting, Exp_a(v0) = b. Initial guesses (registry `INITIAL_GUESSES`) come from the
  graph path, by default after a short, coarse energy minimisation of it ("energy"; "graph" uses the path as is).
  With K > 1 every pair is shot twice from its start, with K and 2K segments. Pairs where either pass fails, or
  the two disagree on the length, also go to the fallback (energy minimisation from the graph path), then shooting runs once more with
  2K segments and twice the steps, started from the fallback's curve and bounded by its length; the shorter
  converged curve is kept. Sensitivities (d x d for single, 2d x 2d per segment for multiple shooting) come from
  forward differences integrated in the same batch as the trajectories, at the start and whenever progress is
  slow; in between, Broyden rank-one updates of each segment's block keep a trial at one integration per segment.
* "energy": minimise the discrete curve energy `PullbackMetric.curve_energy` of the graph path resampled to
  `n_points` nodes over the interior nodes with `torch.optim.LBFGS` (strong Wolfe line search), batched over pairs,
  in coordinates that precondition the discrete Laplacian (a scaled sine basis). It is also the fallback.
* "none": the graph path itself.

Why these choices (measured on CPU; numbers in benchmarks/refine.py and the module's tests):
* Finite differences rather than autodiff for dExp/dv0: on the sphere chart (100 pairs, 32 steps) a Newton pass
  costs 0.41 s with forward differences (relative Jacobian error 1.5e-6), 1.49 s with reverse-mode autograd through
  the integrator and 1.82 s with forward-mode `torch.func.jvp` (exact). Newton converges as fast with the
  approximate Jacobian. The integrator stays differentiable for callers who want exact sensitivities.
* Multiple shooting first: one acceleration evaluation has a large fixed cost (nested forward-mode AD), so K
  segments of n_steps / K steps each, integrated side by side, need K times fewer sequential evaluations; each
  short segment is also nearly linear, so Newton converges from cruder guesses. On a VAE decoder (digits) single
  shooting from the graph path converged for 2/3 of the pairs and, for some, to a longer geodesic than the one
  the path approximates; 8-segment shooting from the smoothed path converged for 28/30 to the shortest one.
* A candidate from shooting is accepted only if it is no longer than its start curve (the smoothed path or the
  fallback's curve) and the graph path: a geodesic longer than a nearby curve is not the minimising one.
* Two passes (K and 2K segments) that must agree: the boundary-value problem can have several solutions, and a
  converged Newton run can sit on a longer geodesic than the one the graph path approximates. On the digits VAE
  (seed 0, pair 58 of benchmarks/refine.py) 8-segment shooting converged to a geodesic 1.97% longer than the
  careful energy minimisation while 16-segment shooting stalled; the energy fallback from the graph path and
  shooting from its curve then found the shorter one. One pass alone accepted the longer curve.
* Broyden between finite-difference Jacobians: on the VAE (100 pairs) it halved the time of a shooting pass with
  the same pairs converging, since a VAE acceleration row costs ~0.3 ms and a finite-difference pass 2d + 1 rows.

Lengths. A refined curve is kept only when its measured length is below the graph path's length; otherwise the
graph path comes back with method "graph". Shooting curves are measured as the C1 cubic Hermite spline through the
integrator's positions and velocities, by Gauss-Legendre quadrature (SPLINE_NODES nodes per step) of the metric
speed; energy curves and graph paths as polylines, Gauss-Legendre with 8 nodes per straight segment
(`lsg_graph.graph.weights.edge_lengths`, the same measure as the graph's edges). Both are lengths of actual curves,
so a refined length never undercuts the true distance by more than quadrature error.

Precision: everything runs on the metric's (decoder's) device and dtype; decoders without parameters compute in
float64. Float64 is recommended (for a float32 VAE: `PullbackMetric(copy.deepcopy(vae.decoder()).double())`): in
float32 the end-point tolerance is floored at 64 machine epsilons of the latent scale (~1e-5). On the digits VAE
float32 still converged for 10/10 pairs, lengths within 2e-6 of float64's, in about half the time.

Failures. A trajectory that leaves the path's neighbourhood (its bounding box widened by ESCAPE_FACTOR its side) or
meets non-finite decoder values fails for its own pair only: the pair goes on to the next stage and its result's
`message` records why. Only a decoder that is not finite at a path's own end points raises DecoderError (then
nothing can be done).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lsg_graph._threads import one_thread as _one_cpu_thread
from lsg_graph._validation import check_array, check_choice, check_float, check_int, check_positive_int
from lsg_graph.errors import ConvergenceWarning, DecoderError, InvalidInput
from lsg_graph.geodesics.shortest import GraphPath, check_sources, shortest_paths
from lsg_graph.graph.latent_graph import LatentGraph
from lsg_graph.graph.weights import edge_lengths, gauss_legendre
from lsg_graph.metric import PullbackMetric

__all__ = [
    "FALLBACKS",
    "INITIAL_GUESSES",
    "REFINE_METHODS",
    "GeodesicResult",
    "ShootingResult",
    "Trajectory",
    "exponential_map",
    "integrate_geodesic",
    "log_map",
    "refine_geodesics",
    "refine_path",
]

DEFAULT_STEPS = 32  # RK4 steps over t in [0, 1], shared among the segments
DEFAULT_TOL = 1e-8  # shooting: ||residual|| / ||b - a|| (end point, and continuity); energy: relative energy change
DEFAULT_MAX_ITER = 20  # Newton iterations (single and multiple shooting)
DEFAULT_SEGMENTS = 8  # shooting segments of the first pass (1: single shooting); the second pass uses twice as many
DEFAULT_POINTS = 64  # energy curve nodes
DEFAULT_ENERGY_ITER = 500  # L-BFGS iterations (energy method and fallback)
DEFAULT_RIDGE = 1e-8  # relative ridge added to M in the geodesic equation
ROUNDING_FLOOR = 64.0  # the end-point tolerance never goes below this many machine epsilons of the latent scale
MIN_STEP_FRACTION = 1.0 / 32.0  # Newton line search gives up below this step fraction (with a fresh Jacobian)
REFRESH_BELOW = 0.25  # a Broyden-updated Jacobian is recomputed when the line search falls below this fraction
SLOW_PROGRESS = 0.5  # ... or when an accepted step reduced ||F|| by less than this factor
ENERGY_CHECK_EVERY = 20  # L-BFGS iterations between per-pair convergence checks
LBFGS_HISTORY = 20
SPLINE_NODES = 8  # Gauss-Legendre nodes per integration step when measuring a shooting curve
WARM_POINTS = 17  # nodes of the coarse energy minimisation that smooths graph paths for initial="energy"
WARM_ITER = 40  # its L-BFGS iterations
WARM_TOL = 1e-6  # its relative energy change
WARM_SPACING = 1.0 / 8.0  # stencil spacing of the initial tangent on a smoothed path
ESCAPE_FACTOR = 1.0  # trajectories must stay in the path's bounding box widened by this many times its side
AGREE_RTOL = 1e-6  # the two shooting passes agree when their lengths are this close; else the fallback runs too
KEEP_RTOL = 1e-9  # a converged curve this close above the graph length means the graph path is already geodesic


# ----------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeodesicResult:
    """A refined curve from a to b and how it was found.

    points: (m, d) float64 latent curve from a to b (shooting: the integrator's nodes at equal times; energy: the
    optimised polyline; graph: the path's codes). length: its metric length, the length of an actual curve
    (shooting: the C1 Hermite spline through the nodes and their velocities, Gauss-Legendre with SPLINE_NODES
    nodes per step; energy and graph: the polyline, Gauss-Legendre with 8 nodes per segment). graph_length: the
    Dijkstra path's length. converged: the method that produced the curve met its tolerance. method: "shooting"
    (single), "multiple_shooting", "energy" or "graph" (the graph path was kept). n_iter: Newton or L-BFGS iterations
    of that method (for "graph" after a failed refinement, all iterations spent). endpoint_error: ||gamma(1) - b||
    in latent units (0 for polylines). initial_velocity: gamma'(0) (d,) for shooting results on t in [0, 1], the
    Riemannian log map Log_a(b). message: why earlier stages failed or a fallback was taken; empty when none did.
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

    @property
    def improvement(self) -> float:
        """Relative shortening (graph_length - length) / graph_length; 0 for a zero-length path."""
        return (self.graph_length - self.length) / self.graph_length if self.graph_length > 0 else 0.0


@dataclass(frozen=True)
class Trajectory:
    """Geodesics sampled at times (T,) in [0, 1]: positions (n, T, d) and velocities (n, T, d), latent units."""

    times: Tensor
    positions: Tensor
    velocities: Tensor


@dataclass(frozen=True)
class ShootingResult:
    """Initial velocities (n, d) with Exp_a(v) = b, end-point errors (n,), converged (n,) and Newton iterations (n,)."""

    velocities: Tensor
    endpoint_error: Tensor
    converged: Tensor
    n_iter: Tensor


@dataclass(frozen=True)
class _Options:
    """Validated refinement parameters shared by every method."""

    tol: float = DEFAULT_TOL
    max_iter: int = DEFAULT_MAX_ITER
    n_steps: int = DEFAULT_STEPS
    n_segments: int = DEFAULT_SEGMENTS
    n_points: int = DEFAULT_POINTS
    energy_iter: int = DEFAULT_ENERGY_ITER
    fallback: str = "energy"
    initial: str = "energy"
    ridge: float = DEFAULT_RIDGE


@dataclass(frozen=True)
class _Problem:
    """One pair to refine: a start curve (m, d) from a to b and its segment lengths (m - 1,); the graph path's
    length and node ids; `bound`, the length an accepted shooting curve may not exceed (graph or start curve)."""

    points: np.ndarray
    edges: np.ndarray
    graph_length: float
    source: int | None
    target: int | None
    bound: float = np.inf


@dataclass
class _Candidate:
    """A curve one method produced for one problem (mutable while the methods run)."""

    points: np.ndarray
    length: float
    converged: bool
    method: str
    n_iter: int
    endpoint_error: float = 0.0
    initial_velocity: np.ndarray | None = None
    message: str = ""
    within_bound: bool = True


# ----------------------------------------------------------------------------------------------------------------
# Integration of the geodesic equation
# ----------------------------------------------------------------------------------------------------------------

Acceleration = Callable[[Tensor, Tensor], Tensor]


def _rk4(acceleration: Acceleration, z: Tensor, v: Tensor, n_steps: int) -> tuple[Tensor, Tensor]:
    """Classical RK4 for gamma'' = a(gamma, gamma') over [0, 1]: positions and velocities (n, n_steps + 1, d)."""
    h = 1.0 / n_steps
    positions, velocities = [z], [v]
    for _ in range(n_steps):
        a1 = acceleration(z, v)
        a2 = acceleration(z + 0.5 * h * v, v + 0.5 * h * a1)
        a3 = acceleration(z + 0.5 * h * v + 0.25 * h * h * a1, v + 0.5 * h * a2)
        a4 = acceleration(z + h * v + 0.5 * h * h * a2, v + h * a3)
        z = z + h * v + (h * h / 6.0) * (a1 + a2 + a3)
        v = v + (h / 6.0) * (a1 + 2.0 * a2 + 2.0 * a3 + a4)
        positions.append(z)
        velocities.append(v)
    return torch.stack(positions, dim=1), torch.stack(velocities, dim=1)


class _GuardedAcceleration:
    """Geodesic acceleration (n, d) for a batch in which some rows may leave the decoder's finite domain.

    Rows whose state turns non-finite, leaves its box (lower, upper), or where the decoder fails, are marked in
    `failed` and frozen (zero acceleration, not evaluated), so one bad trajectory never stops the others and an
    escaping trajectory costs nothing more.
    """

    def __init__(self, metric: PullbackMetric, ridge: float, box: tuple[Tensor, Tensor]) -> None:
        """Guard a batch of len(box[0]) rows, each confined to lower <= z <= upper (n, d)."""
        self.metric, self.ridge, (self.lower, self.upper) = metric, ridge, box
        self.failed = torch.zeros(self.lower.shape[0], dtype=torch.bool, device=self.lower.device)

    def __call__(self, z: Tensor, v: Tensor) -> Tensor:
        """gamma'' (n, d); 0 on failed rows."""
        inside = ((z >= self.lower) & (z <= self.upper)).all(dim=1)
        self.failed |= ~(inside & torch.isfinite(v).all(dim=1))
        acceleration = torch.zeros_like(z)
        alive = (~self.failed).nonzero()[:, 0]
        if len(alive) == 0:
            return acceleration
        try:
            values = self.metric.geodesic_acceleration(z[alive], v[alive], ridge=self.ridge)
        except DecoderError:
            bad = self._bad_rows(z[alive], v[alive])
            if not bool(bad.any()):
                raise
            self.failed[alive[bad]] = True
            return self(z, v)
        acceleration[alive] = torch.where(torch.isfinite(values), values, 0.0)
        return acceleration

    def _bad_rows(self, z: Tensor, v: Tensor) -> Tensor:
        """Rows (n,) bool where the acceleration cannot be computed, found by bisection."""
        bad = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
        pending = [torch.arange(z.shape[0], device=z.device)]
        while pending:
            rows = pending.pop()
            try:
                with torch.no_grad():
                    self.metric.geodesic_acceleration(z[rows], v[rows], ridge=self.ridge)
            except DecoderError:
                if len(rows) == 1:
                    bad[rows] = True
                else:
                    pending += [rows[: len(rows) // 2], rows[len(rows) // 2 :]]
        return bad


def _working(metric: PullbackMetric) -> tuple[torch.device, torch.dtype]:
    """Device and dtype the refinement computes in: the decoder's, else CPU float64."""
    return metric.device or torch.device("cpu"), metric.dtype or torch.float64


def _latent(metric: PullbackMetric, values: Any, name: str) -> Tensor:
    """`values` as an (n, d) tensor on the working device and dtype (gradients kept for tensor inputs)."""
    device, dtype = _working(metric)
    if not isinstance(values, Tensor):
        values = torch.as_tensor(check_array(values, name, ndim=2, min_rows=0))
    if values.ndim != 2 or values.shape[1] != metric.latent_dim:
        raise InvalidInput(f"{name} must have shape (n, {metric.latent_dim}); got {tuple(values.shape)}.")
    return values.to(device=device, dtype=dtype)


def integrate_geodesic(
    metric: PullbackMetric, z0: Any, v0: Any, n_steps: int = DEFAULT_STEPS, ridge: float = DEFAULT_RIDGE
) -> Trajectory:
    """Geodesics from z0 (n, d) with initial velocities v0 (n, d) over t in [0, 1], by RK4 with n_steps steps.

    Differentiable w.r.t. z0 and v0 (autograd through the integrator). The decoder raises DecoderError where it
    is not finite along the way.
    """
    n_steps = check_positive_int(n_steps, "n_steps")
    ridge = check_float(ridge, "ridge", minimum=0.0)
    z0, v0 = _latent(metric, z0, "z0"), _latent(metric, v0, "v0")
    if z0.shape != v0.shape:
        raise InvalidInput(f"z0 and v0 must have the same shape; got {tuple(z0.shape)} and {tuple(v0.shape)}.")
    with _one_cpu_thread(z0.device):
        positions, velocities = _rk4(lambda z, v: metric.geodesic_acceleration(z, v, ridge), z0, v0, n_steps)
    times = torch.linspace(0.0, 1.0, n_steps + 1, dtype=z0.dtype, device=z0.device)
    return Trajectory(times, positions, velocities)


def exponential_map(
    metric: PullbackMetric,
    z0: Any,
    v0: Any,
    n_steps: int = DEFAULT_STEPS,
    return_path: bool = False,
    ridge: float = DEFAULT_RIDGE,
) -> Tensor:
    """Exp_z0(v0): end points (n, d) of the geodesics with gamma(0) = z0, gamma'(0) = v0 at t = 1 (RK4, n_steps).

    With return_path=True, the positions (n, n_steps + 1, d) at t = 0, 1/n_steps, ..., 1 instead. Batched over all
    starts in one integration; differentiable, so autograd gives the sensitivity dExp/dv0 (d x d per start).
    """
    trajectory = integrate_geodesic(metric, z0, v0, n_steps, ridge)
    return trajectory.positions if return_path else trajectory.positions[:, -1]


# ----------------------------------------------------------------------------------------------------------------
# Damped Newton, batched over independent problems
# ----------------------------------------------------------------------------------------------------------------

# residual(x (m, D), rows (m,), with_jacobian) -> F (m, D), dF/dx (m, D, D) or None, finite (m,), auxiliary (m, ...)
Residual = Callable[[Tensor, Tensor, bool], tuple[Tensor, "Tensor | None", Tensor, Tensor]]
# (row slice, column slice) of each Jacobian block that depends on the integration (the rest is constant)
Blocks = list[tuple[slice, slice]]


@dataclass
class _NewtonState:
    """Unknowns (n, D), residuals (n, D) and their norms (n,), Jacobians (n, D, D) and whether each is a fresh
    finite-difference one (n,), converged / failed (n,), Newton directions used (n,) and auxiliary data (n, ...)."""

    x: Tensor
    value: Tensor
    error: Tensor
    jacobian: Tensor
    fresh: Tensor
    converged: Tensor
    failed: Tensor
    n_iter: Tensor
    aux: Tensor


def _newton(residual: Residual, x0: Tensor, threshold: Tensor, max_iter: int, blocks: Blocks) -> _NewtonState:
    """Solve F(x) = 0 for each row by a damped quasi-Newton method; converged where ||F|| <= threshold.

    The Jacobian comes from finite differences at the start; after each accepted step it is corrected by a Broyden
    update restricted to the `blocks` that depend on the integration (for multiple shooting: each segment's own
    state sensitivity), so a trial costs one integration per segment instead of 2d + 1. Steps are damped by
    backtracking on ||F||; when an updated Jacobian gives no decrease by step fraction REFRESH_BELOW, or an accepted
    step reduced ||F|| by less than SLOW_PROGRESS, it is recomputed by finite differences. A row fails when its
    residual is not finite at the start or its line search stalls below MIN_STEP_FRACTION with a fresh Jacobian,
    and stops after max_iter Newton directions.
    """
    n, device = x0.shape[0], x0.device
    every = torch.arange(n, device=device)
    value, jacobian, finite, aux = residual(x0, every, True)
    error = value.norm(dim=1)
    flags = torch.zeros(n, dtype=torch.bool, device=device)
    state = _NewtonState(
        x0.clone(), value, error, jacobian, ~flags, finite & (error <= threshold), ~finite, flags.long(), aux
    )
    step, alpha = torch.zeros_like(x0), torch.ones(n, dtype=x0.dtype, device=device)
    _next_steps(state, every, step, max_iter)
    while True:
        rows = (~state.converged & ~state.failed).nonzero()[:, 0]
        if len(rows) == 0:
            return state
        trial_x = state.x[rows] + alpha[rows, None] * step[rows]
        trial_value, _, trial_finite, trial_aux = residual(trial_x, rows, False)
        trial_error = trial_value.norm(dim=1)
        accept = trial_finite & (trial_error < (1.0 - 1e-4 * alpha[rows]) * state.error[rows])
        kept, rejected = rows[accept], rows[~accept]
        slow = kept[trial_error[accept] > SLOW_PROGRESS * state.error[kept]]
        if len(kept):
            change, difference = trial_x[accept] - state.x[kept], trial_value[accept] - state.value[kept]
            state.jacobian[kept] = _broyden(state.jacobian[kept], change, difference, blocks)
            state.x[kept], state.value[kept], state.error[kept] = (
                trial_x[accept],
                trial_value[accept],
                trial_error[accept],
            )
            state.aux[kept], state.fresh[kept], alpha[kept] = trial_aux[accept], False, 1.0
            state.converged[kept] = trial_error[accept] <= threshold[kept]
            _next_steps(state, kept, step, max_iter)
        alpha[rejected] *= 0.5
        stale = rejected[~state.fresh[rejected] & (alpha[rejected] < REFRESH_BELOW)]
        slow = slow[~state.converged[slow] & ~state.failed[slow]]
        _refresh(state, residual, torch.cat([stale, slow]), step, alpha, max_iter)
        state.failed[rejected] |= state.fresh[rejected] & (alpha[rejected] < MIN_STEP_FRACTION)


def _refresh(state: _NewtonState, residual: Residual, rows: Tensor, step: Tensor, alpha: Tensor, max_iter: int) -> None:
    """Recompute the Jacobians of `rows` by finite differences at their current point and take new directions."""
    if len(rows) == 0:
        return
    value, jacobian, finite, aux = residual(state.x[rows], rows, True)
    state.value[rows], state.jacobian[rows], state.fresh[rows], alpha[rows] = value, jacobian, True, 1.0
    state.failed[rows[~finite]] = True
    _next_steps(state, rows[finite], step, max_iter, count=False)


def _broyden(jacobian: Tensor, change: Tensor, difference: Tensor, blocks: Blocks) -> Tensor:
    """Jacobians (m, D, D) after Broyden's rank-one secant update of each block, J dx = dF afterwards.

    The part of dF that J does not predict is attributed, block row by block row, to that row's variable block.
    """
    missed = difference - (jacobian @ change.unsqueeze(-1)).squeeze(-1)
    updated = jacobian.clone()
    for rows, columns in blocks:
        part = change[:, columns]
        squared = part.square().sum(dim=1)
        scale = torch.where(squared > 0, 1.0 / torch.where(squared > 0, squared, 1.0), 0.0)
        updated[:, rows, columns] += missed[:, rows, None] * part[:, None, :] * scale[:, None, None]
    return updated


def _next_steps(state: _NewtonState, rows: Tensor, step: Tensor, max_iter: int, count: bool = True) -> None:
    """New Newton directions for the given rows that are still going; rows out of iterations stop (not converged).

    count=False replaces the current iteration's direction (after a Jacobian refresh) without counting a new one.
    """
    going = ~state.converged[rows] & ~state.failed[rows]
    exhausted = going & (state.n_iter[rows] >= max_iter) if count else torch.zeros_like(going)
    state.failed[rows[exhausted]] = True
    more = rows[going & ~exhausted]
    if len(more):
        step[more] = _newton_step(state.jacobian[more], state.value[more])
        state.n_iter[more] += int(count)


def _newton_step(jacobian: Tensor, value: Tensor) -> Tensor:
    """Newton directions -J^-1 F (m, D); least-squares (pseudo-inverse) rows where J is singular or not finite."""
    if value.shape[0] == 0:
        return value.clone()
    safe = torch.where(torch.isfinite(jacobian), jacobian, 0.0)
    solution, info = torch.linalg.solve_ex(safe, -value.unsqueeze(-1))
    bad = (info != 0) | ~torch.isfinite(solution).all(dim=(1, 2))
    if bool(bad.any()):
        solution[bad] = torch.linalg.pinv(safe[bad]) @ (-value[bad].unsqueeze(-1))
    return torch.where(torch.isfinite(solution), solution, 0.0).squeeze(-1)


def _fd_step(x: Tensor) -> Tensor:
    """Forward-difference step per row (m,): sqrt(machine epsilon) times the row's scale."""
    scale = x.abs().amax(dim=1).clamp_min(1e-3)
    return torch.finfo(x.dtype).eps ** 0.5 * scale


# ----------------------------------------------------------------------------------------------------------------
# Single shooting
# ----------------------------------------------------------------------------------------------------------------


def _threshold(a: Tensor, b: Tensor, tol: float) -> Tensor:
    """End-point tolerance (n,): tol * ||b - a||, floored at ROUNDING_FLOOR machine epsilons of the latent scale."""
    scale = torch.maximum(a.abs().amax(dim=1), b.abs().amax(dim=1)).clamp_min(1.0)
    return tol * (b - a).norm(dim=1) + ROUNDING_FLOOR * torch.finfo(a.dtype).eps * scale


def _box(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """The region (n, d) a trajectory may visit: the bounding box (lower, upper) widened by ESCAPE_FACTOR its side."""
    side = (upper - lower).amax(dim=1, keepdim=True).clamp_min(torch.finfo(lower.dtype).eps)
    return lower - ESCAPE_FACTOR * side, upper + ESCAPE_FACTOR * side


def _path_box(problems: Sequence[_Problem], like: Tensor) -> tuple[Tensor, Tensor]:
    """_box of each problem's path points (n, d)."""
    lower = np.stack([problem.points.min(axis=0) for problem in problems])
    upper = np.stack([problem.points.max(axis=0) for problem in problems])
    return _box(*(torch.as_tensor(bound, dtype=like.dtype, device=like.device) for bound in (lower, upper)))


def _shooting_residual(
    metric: PullbackMetric, a: Tensor, b: Tensor, box: tuple[Tensor, Tensor], n_steps: int, ridge: float
) -> Residual:
    """Residual Exp_a(v) - b (m, d) with its forward-difference Jacobian; aux = trajectory (m, 2, T, d).

    Trajectories are confined to their pair's box (lower, upper) (n, d); one that leaves it fails that trial.
    """
    d = a.shape[1]

    def residual(v: Tensor, rows: Tensor, with_jacobian: bool) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        m, copies = v.shape[0], d + 1 if with_jacobian else 1
        h = _fd_step(v)
        eye = torch.eye(d, dtype=v.dtype, device=v.device)
        starts = a[rows].repeat(copies, 1)
        velocities = torch.cat([v] + [v + h[:, None] * eye[j] for j in range(copies - 1)])
        guard = _GuardedAcceleration(metric, ridge, (box[0][rows].repeat(copies, 1), box[1][rows].repeat(copies, 1)))
        with torch.no_grad():
            positions, speeds = _rk4(guard, starts, velocities, n_steps)
        ends = positions[:, -1].reshape(copies, m, d)
        jacobian = None
        if with_jacobian:
            jacobian = torch.stack([(ends[j + 1] - ends[0]) / h[:, None] for j in range(d)], dim=2)
        finite = ~guard.failed.reshape(copies, m).any(dim=0) & torch.isfinite(ends).all(dim=(0, 2))
        aux = torch.stack([positions[:m], speeds[:m]], dim=1)
        return ends[0] - b[rows], jacobian, finite, aux

    return residual


def log_map(
    metric: PullbackMetric,
    a: Any,
    b: Any,
    v0: Any = None,
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    n_steps: int = DEFAULT_STEPS,
    ridge: float = DEFAULT_RIDGE,
) -> ShootingResult:
    """Log_a(b) by single shooting: velocities v (n, d) with Exp_a(v) = b, from v0 (default b - a), batched.

    Converged where ||Exp_a(v) - b|| <= tol * ||b - a|| (floored at rounding level). Without a good v0 this finds
    the geodesic nearest the straight line, which need not be the shortest one; refine_geodesics starts from the
    graph path instead.
    """
    options = _check_options(tol=tol, max_iter=max_iter, n_steps=n_steps, ridge=ridge)
    a, b = _latent(metric, a, "a").detach(), _latent(metric, b, "b").detach()
    if a.shape != b.shape:
        raise InvalidInput(f"a and b must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}.")
    start = (b - a) if v0 is None else _latent(metric, v0, "v0").detach()
    if start.shape != a.shape:
        raise InvalidInput(f"v0 must have the shape of a {tuple(a.shape)}; got {tuple(start.shape)}.")
    residual = _shooting_residual(
        metric, a, b, _box(torch.minimum(a, b), torch.maximum(a, b)), options.n_steps, options.ridge
    )
    d = a.shape[1]
    with _one_cpu_thread(a.device):
        state = _newton(residual, start, _threshold(a, b, options.tol), options.max_iter, [(slice(0, d), slice(0, d))])
    return ShootingResult(state.x, state.error, state.converged, state.n_iter)


def _initial_velocity(problems: Sequence[_Problem], like: Tensor, spacing: float = 0.5) -> Tensor:
    """Tangent at a (n, d) of each path parametrised by metric arc length on [0, 1], by a one-sided difference.

    The quadratic through the path's points at fractions 0, h and 2h (h = spacing): v0 = (-3 p(0) + 4 p(h) -
    p(2h)) / (2h). For a graph path h = 1/2 sees the path's bend but not the zig-zag of its first edges; for an
    energy-smoothed path a short spacing is more accurate.
    """
    fractions = np.array([0.0, spacing, 2.0 * spacing])
    rows = [_resample(problem, fractions) for problem in problems]
    stencil = torch.as_tensor(np.stack(rows), dtype=like.dtype, device=like.device)
    return (-3.0 * stencil[:, 0] + 4.0 * stencil[:, 1] - stencil[:, 2]) / (2.0 * spacing)


def _resample(problem: _Problem, fractions: np.ndarray) -> np.ndarray:
    """Points (f, d) of the graph polyline at the given fractions of its metric length (linear within edges)."""
    cumulative = np.concatenate([[0.0], np.cumsum(problem.edges)])
    total = cumulative[-1]
    if total <= 0.0 or len(problem.points) < 2:
        return np.repeat(problem.points[:1], len(fractions), axis=0)
    return np.stack([np.interp(fractions * total, cumulative, column) for column in problem.points.T], axis=1)


def _single_shoot(
    metric: PullbackMetric, problems: Sequence[_Problem], options: _Options, n_steps: int
) -> list[_Candidate]:
    """Single shooting (Exp_a(v0) = b) for every problem from its start curve's tangent; one candidate each."""
    a, b = _ends(problems, metric)
    residual = _shooting_residual(metric, a, b, _path_box(problems, a), n_steps, options.ridge)
    spacing = 0.5 if options.initial == "graph" else WARM_SPACING
    start, d = _initial_velocity(problems, a, spacing), a.shape[1]
    state = _newton(residual, start, _threshold(a, b, options.tol), options.max_iter, [(slice(0, d), slice(0, d))])
    positions, velocities = state.aux[:, 0], state.aux[:, 1]
    lengths = _spline_lengths(metric, positions, velocities, state.converged)
    return [
        _Candidate(
            positions[i].detach().cpu().double().numpy(),
            lengths[i],
            bool(state.converged[i]),
            "shooting",
            int(state.n_iter[i]),
            float(state.error[i]),
            state.x[i].detach().cpu().double().numpy(),
            _failure_note("single shooting", state, i, options.max_iter),
        )
        for i in range(len(problems))
    ]


def _failure_note(what: str, state: _NewtonState, i: int, max_iter: int) -> str:
    """Why row i did not converge, or '' when it did."""
    if bool(state.converged[i]):
        return ""
    if int(state.n_iter[i]) == 0 or not bool(torch.isfinite(state.error[i])):
        return f"{what}: the first trajectories left the path's neighbourhood or met non-finite decoder values"
    if int(state.n_iter[i]) >= max_iter:
        return f"{what}: no convergence in max_iter={max_iter} Newton iterations (error {float(state.error[i]):.2e})"
    return f"{what}: the line search stalled (error {float(state.error[i]):.2e})"


def _spline_lengths(metric: PullbackMetric, positions: Tensor, velocities: Tensor, which: Tensor) -> list[float]:
    """Metric lengths of the C1 cubic Hermite splines through sampled curves (n, T, d) on [0, 1]; inf where not asked.

    The spline interpolates the integrator's positions and velocities; its length is integrated exactly as a
    curve, by Gauss-Legendre quadrature (SPLINE_NODES per step) of ||p'(t)||_M(p(t)). It is the length of an actual
    curve from a to gamma(1), so it never undercuts the geodesic distance (up to quadrature error), however coarse
    the integration was.
    """
    lengths = [float("inf")] * positions.shape[0]
    rows = which.nonzero()[:, 0]
    if len(rows) == 0:
        return lengths
    z, v = positions[rows], velocities[rows]
    h = 1.0 / (z.shape[1] - 1)
    nodes, weights = gauss_legendre(SPLINE_NODES)
    s = torch.as_tensor(nodes, dtype=z.dtype, device=z.device)[:, None, None, None]
    basis = (2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2)
    slopes = (6 * s**2 - 6 * s, 3 * s**2 - 4 * s + 1, -6 * s**2 + 6 * s, 3 * s**2 - 2 * s)
    ends = (z[:, :-1], h * v[:, :-1], z[:, 1:], h * v[:, 1:])
    points = sum(weight * end for weight, end in zip(basis, ends))
    tangents = sum(weight * end for weight, end in zip(slopes, ends)) / h
    d = z.shape[2]
    try:
        with torch.no_grad():
            speeds = metric.norm(points.reshape(-1, d), tangents.reshape(-1, d)).reshape(points.shape[:-1])
    except DecoderError:
        return lengths
    quadrature = torch.as_tensor(weights, dtype=z.dtype, device=z.device)
    values = (h * torch.einsum("q,qns->n", quadrature, speeds)).cpu().double().tolist()
    for row, value in zip(rows.tolist(), values):
        lengths[row] = value
    return lengths


def _ends(problems: Sequence[_Problem], metric: PullbackMetric) -> tuple[Tensor, Tensor]:
    """Start and end points (n, d) of the problems on the working device and dtype."""
    device, dtype = _working(metric)
    a = torch.as_tensor(np.stack([p.points[0] for p in problems]), dtype=dtype, device=device)
    b = torch.as_tensor(np.stack([p.points[-1] for p in problems]), dtype=dtype, device=device)
    return a, b


# ----------------------------------------------------------------------------------------------------------------
# Multiple shooting
# ----------------------------------------------------------------------------------------------------------------


def _segment_layout(d: int, k: int) -> tuple[int, list[int]]:
    """Number of unknowns (2K - 1) d and the first column of each segment's (x_k, u_k) block (segment 0: u_0 only)."""
    return (2 * k - 1) * d, [0] + [d + 2 * d * (s - 1) for s in range(1, k)]


def _segment_blocks(d: int, k: int) -> Blocks:
    """The Jacobian blocks of the segment sensitivities: rows of segment s's conditions, columns of its unknowns."""
    _, columns = _segment_layout(d, k)
    rows = [slice(2 * d * s, 2 * d * s + (2 * d if s < k - 1 else d)) for s in range(k)]
    return [(rows[s], slice(columns[s], columns[s] + (d if s == 0 else 2 * d))) for s in range(k)]


def _unpack(x: Tensor, a: Tensor, d: int, k: int) -> tuple[Tensor, Tensor]:
    """Segment starts (m, K, d) (the first is a) and segment velocities (m, K, d) from the unknowns (m, D)."""
    starts = [a] + [x[:, d + 2 * d * (s - 1) : d + 2 * d * (s - 1) + d] for s in range(1, k)]
    velocities = [x[:, :d]] + [x[:, 2 * d * s : 2 * d * s + d] for s in range(1, k)]
    return torch.stack(starts, dim=1), torch.stack(velocities, dim=1)


def _multiple_residual(
    metric: PullbackMetric, a: Tensor, b: Tensor, box: tuple[Tensor, Tensor], k: int, n_steps: int, ridge: float
) -> Residual:
    """Continuity and end-point residual (m, (2K - 1) d) of K segments, each on local time [0, 1], with its Jacobian.

    Segment s starts at (x_s, u_s) and ends at (y_s, w_s); residual rows: (y_s - x_{s+1}, w_s - u_{s+1}) for
    s < K - 1, then y_{K-1} - b. The state sensitivities of each segment (2d x 2d) come from forward differences
    integrated in the same batch. aux = positions and velocities (m, 2, K, T, d).
    """
    d = a.shape[1]
    size, columns = _segment_layout(d, k)

    def residual(x: Tensor, rows: Tensor, with_jacobian: bool) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        m, copies = x.shape[0], 2 * d + 1 if with_jacobian else 1
        starts, velocities = _unpack(x, a[rows], d, k)
        state = torch.cat([starts, velocities], dim=2).reshape(m * k, 2 * d)
        h = _fd_step(state)
        eye = torch.eye(2 * d, dtype=x.dtype, device=x.device)
        stacked = torch.cat([state] + [state + h[:, None] * eye[j] for j in range(copies - 1)])
        bounds = (bound[rows].repeat_interleave(k, dim=0).repeat(copies, 1) for bound in box)
        guard = _GuardedAcceleration(metric, ridge, tuple(bounds))
        with torch.no_grad():
            positions, speeds = _rk4(guard, stacked[:, :d], stacked[:, d:], n_steps)
        ends = torch.cat([positions[:, -1], speeds[:, -1]], dim=1).reshape(copies, m * k, 2 * d)
        value = _continuity(ends[0].reshape(m, k, 2 * d), x, b[rows])
        finite = ~guard.failed.reshape(copies, m, k).any(dim=(0, 2)) & torch.isfinite(value).all(dim=1)
        jacobian = None
        if with_jacobian:
            sensitivity = torch.stack([(ends[j + 1] - ends[0]) / h[:, None] for j in range(2 * d)], dim=2)
            jacobian = _assemble(sensitivity.reshape(m, k, 2 * d, 2 * d))
            finite &= torch.isfinite(jacobian).all(dim=(1, 2))
        aux = torch.stack([positions[: m * k], speeds[: m * k]], dim=1).reshape(m, k, 2, -1, d).transpose(1, 2)
        return value, jacobian, finite, aux

    def _continuity(ends: Tensor, x: Tensor, target: Tensor) -> Tensor:
        """Residual (m, D) from the segment end states (m, K, 2d) and the unknowns (m, D)."""
        m = x.shape[0]
        starts, velocities = _unpack(x, a.new_zeros(m, d), d, k)
        following = torch.cat([starts, velocities], dim=2)[:, 1:]
        return torch.cat([(ends[:, :-1] - following).reshape(m, -1), ends[:, -1, :d] - target], dim=1)

    def _assemble(phi: Tensor) -> Tensor:
        """Block Jacobian (m, D, D) from the segment sensitivities (m, K, 2d, 2d)."""
        jacobian = phi.new_zeros(phi.shape[0], size, size)
        identity = torch.eye(2 * d, dtype=phi.dtype, device=phi.device)
        for s in range(k):
            block = phi[:, s] if s > 0 else phi[:, 0, :, d:]
            width = block.shape[2]
            row = 2 * d * s
            height = 2 * d if s < k - 1 else d
            jacobian[:, row : row + height, columns[s] : columns[s] + width] = block[:, :height]
            if s < k - 1:
                jacobian[:, row : row + 2 * d, columns[s + 1] : columns[s + 1] + 2 * d] = -identity
        return jacobian

    return residual


def _multiple_start(problems: Sequence[_Problem], k: int, like: Tensor) -> Tensor:
    """Unknowns (n, (2K - 1) d) from the start curves: nodes at fractions s/K, velocities by finite differences.

    Points at half-segment spacing p_j (j = 0..2K); x_s = p_{2s}; u_0 = -3 p_0 + 4 p_1 - p_2 (one-sided), and
    u_s = p_{2s+1} - p_{2s-1} (centred), in segment-local time.
    """
    fractions = np.linspace(0.0, 1.0, 2 * k + 1)
    points = torch.as_tensor(
        np.stack([_resample(p, fractions) for p in problems]), dtype=like.dtype, device=like.device
    )
    parts = [-3.0 * points[:, 0] + 4.0 * points[:, 1] - points[:, 2]]
    for s in range(1, k):
        parts += [points[:, 2 * s], points[:, 2 * s + 1] - points[:, 2 * s - 1]]
    return torch.cat(parts, dim=1)


def _multiple_shoot(
    metric: PullbackMetric, problems: Sequence[_Problem], options: _Options, k: int, n_steps: int
) -> list[_Candidate]:
    """Multiple shooting with k segments of ceil(n_steps / k) steps for every problem; one candidate each."""
    a, b = _ends(problems, metric)
    d = a.shape[1]
    steps = max(2, -(-n_steps // k))
    residual = _multiple_residual(metric, a, b, _path_box(problems, a), k, steps, options.ridge)
    threshold = _threshold(a, b, options.tol)
    state = _newton(residual, _multiple_start(problems, k, a), threshold, options.max_iter, _segment_blocks(d, k))
    positions, velocities = state.aux[:, 0], state.aux[:, 1]  # (n, K, T, d)
    n = len(problems)
    segment_lengths = _spline_lengths(
        metric, positions.reshape(n * k, -1, d), velocities.reshape(n * k, -1, d), state.converged.repeat_interleave(k)
    )
    candidates = []
    for i in range(n):
        curve = torch.cat([positions[i, 0]] + [positions[i, s, 1:] for s in range(1, k)])
        candidates.append(
            _Candidate(
                curve.detach().cpu().double().numpy(),
                float(sum(segment_lengths[i * k : (i + 1) * k])),
                bool(state.converged[i]),
                "multiple_shooting",
                int(state.n_iter[i]),
                float(state.error[i]),
                (k * velocities[i, 0, 0]).detach().cpu().double().numpy(),
                _failure_note(f"multiple shooting ({k} segments)", state, i, options.max_iter),
            )
        )
    return candidates


# ----------------------------------------------------------------------------------------------------------------
# Energy minimisation
# ----------------------------------------------------------------------------------------------------------------


def _energy(metric: PullbackMetric, problems: Sequence[_Problem], options: _Options) -> list[_Candidate]:
    """Discrete curve-energy minimisation from the resampled graph paths; splits the batch where the decoder fails."""
    try:
        return _energy_batch(metric, problems, options)
    except DecoderError as exc:
        if len(problems) == 1:
            path = problems[0]
            note = f"energy: the decoder was not finite along the curve ({exc})"
            return [_Candidate(path.points, float("inf"), False, "energy", 0, message=note)]
    half = len(problems) // 2
    return _energy(metric, problems[:half], options) + _energy(metric, problems[half:], options)


def _energy_batch(metric: PullbackMetric, problems: Sequence[_Problem], options: _Options) -> list[_Candidate]:
    """L-BFGS on the interior nodes of all curves at once (objective sum_i E_i / E_i(start)), preconditioned.

    Every ENERGY_CHECK_EVERY iterations the pairs whose energy changed by at most tol (relative) are set aside and
    the optimiser restarts on the others, so one slow pair does not keep the whole batch iterating.
    """
    device, dtype = _working(metric)
    fractions = np.linspace(0.0, 1.0, options.n_points)
    curves = torch.as_tensor(np.stack([_resample(p, fractions) for p in problems]), dtype=dtype, device=device)
    basis = _sine_basis(options.n_points - 2, dtype, device)
    n = len(problems)
    converged = torch.zeros(n, dtype=torch.bool, device=device)
    n_iter = torch.zeros(n, dtype=torch.long, device=device)
    with torch.no_grad():
        energy = metric.curve_energy(curves)
    while True:
        active = (~converged & (n_iter < options.energy_iter)).nonzero()[:, 0]
        if len(active) == 0:
            break
        budget = min(ENERGY_CHECK_EVERY, options.energy_iter - int(n_iter[active].min()))
        updated, used = _lbfgs_block(metric, curves[active], energy[active], basis, budget)
        with torch.no_grad():
            current = metric.curve_energy(updated)
        converged[active] = (energy[active] - current).abs() <= options.tol * current.abs()
        curves[active], energy[active], n_iter[active] = updated, current, n_iter[active] + used
    final = curves.cpu().double().numpy()
    lengths = _polyline_lengths(metric, final)
    note = (
        f"energy: the relative energy change stayed above tol={options.tol:g} within energy_iter={options.energy_iter}"
    )
    return [
        _Candidate(
            final[i], lengths[i], bool(converged[i]), "energy", int(n_iter[i]), message="" if converged[i] else note
        )
        for i in range(n)
    ]


def _lbfgs_block(
    metric: PullbackMetric, start: Tensor, energy: Tensor, basis: Tensor, budget: int
) -> tuple[Tensor, int]:
    """Up to `budget` L-BFGS iterations on curves (m, N, d) with fixed ends: the new curves and iterations used."""
    a, b, inner = start[:, :1], start[:, -1:], start[:, 1:-1]
    coefficients = torch.zeros_like(inner, requires_grad=True)
    scale = torch.where(energy > 0, energy, torch.ones_like(energy))
    optimizer = torch.optim.LBFGS(
        [coefficients],
        lr=1.0,
        max_iter=budget,
        history_size=LBFGS_HISTORY,
        tolerance_grad=1e-30,
        tolerance_change=1e-30,
        line_search_fn="strong_wolfe",
    )

    def curves() -> Tensor:
        return torch.cat([a, inner + basis @ coefficients, b], dim=1)

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = (metric.curve_energy(curves()) / scale).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    used = int(optimizer.state[coefficients].get("n_iter", budget))
    return curves().detach(), max(1, used)


def _sine_basis(size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Preconditioner (size, size): the discrete sine basis scaled by lambda_k^(-1/2) of the Dirichlet Laplacian.

    The discrete energy of a curve with N = size + 2 nodes has the Hessian 2 (N - 1) M L in a flat metric, L the
    tridiagonal Laplacian, of condition number ~ N^2; in these coordinates it is the identity, so L-BFGS needs
    far fewer iterations.
    """
    k = torch.arange(1, size + 1, dtype=torch.float64)
    sines = torch.sin(torch.pi * k[:, None] * k[None, :] / (size + 1)) * (2.0 / (size + 1)) ** 0.5
    eigenvalues = 4.0 * torch.sin(0.5 * torch.pi * k / (size + 1)) ** 2 * (size + 1)
    return (sines / eigenvalues.sqrt()[None, :]).to(dtype=dtype, device=device)


def _polyline_segments(metric: PullbackMetric, curves: np.ndarray) -> np.ndarray:
    """Metric lengths (n, N - 1) of the straight segments of polylines (n, N, d): Gauss-Legendre, 8 nodes each."""
    n, count, d = curves.shape
    return edge_lengths(metric, curves[:, :-1].reshape(-1, d), curves[:, 1:].reshape(-1, d)).reshape(n, count - 1)


def _polyline_lengths(metric: PullbackMetric, curves: np.ndarray) -> list[float]:
    """Metric lengths (n,) of polylines (n, N, d), as `_polyline_segments` summed."""
    return _polyline_segments(metric, curves).sum(axis=1).tolist()


# ----------------------------------------------------------------------------------------------------------------
# Methods, fallbacks and the choice of curve
# ----------------------------------------------------------------------------------------------------------------


def _shooting(
    metric: PullbackMetric, problems: Sequence[_Problem], options: _Options, k: int, n_steps: int
) -> list[_Candidate]:
    """Single (k = 1) or multiple (k > 1) shooting with n_steps RK4 steps in all."""
    if k == 1:
        return _single_shoot(metric, problems, options, n_steps)
    return _multiple_shoot(metric, problems, options, k, n_steps)


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


def _mark_rejected(problem: _Problem, tried: list[_Candidate]) -> list[_Candidate]:
    """Note converged shooting candidates that were longer than the start curve or the graph path."""
    for candidate in tried:
        if candidate.converged and candidate.method != "energy" and candidate.length > _limit(problem):
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
    )


def _trivial(problem: _Problem) -> GeodesicResult:
    """Identical end points: length 0, converged, a two-point curve."""
    points = np.stack([problem.points[0], problem.points[-1]])
    return GeodesicResult(points, 0.0, problem.graph_length, True, "graph", 0, 0.0, problem.source, problem.target)


# ----------------------------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------------------------


def _check_options(**values: Any) -> _Options:
    """Validate refinement parameters (InvalidInput naming the bad one) and return them as _Options."""
    options = _Options(**values)
    check_float(options.tol, "tol", minimum=0.0, strict_minimum=True)
    check_positive_int(options.max_iter, "max_iter")
    check_positive_int(options.n_steps, "n_steps")
    check_positive_int(options.n_segments, "n_segments")
    check_int(options.n_points, "n_points", minimum=3)
    check_positive_int(options.energy_iter, "energy_iter")
    check_choice(options.fallback, "fallback", FALLBACKS)
    check_choice(options.initial, "initial guess", INITIAL_GUESSES)
    check_float(options.ridge, "ridge", minimum=0.0)
    return replace(options, tol=float(options.tol), ridge=float(options.ridge))


def _refine(
    metric: PullbackMetric, problems: list[_Problem], method: str, options: _Options, batch_size: int
) -> list[GeodesicResult]:
    """Refine problems in batches with `method`; trivial ones directly; warn once about non-convergence."""
    _check_endpoints(metric, problems)
    results: list[GeodesicResult | None] = [None] * len(problems)
    work = []
    for i, problem in enumerate(problems):
        if np.array_equal(problem.points[0], problem.points[-1]):
            results[i] = _trivial(problem)
        else:
            work.append(i)
    with _one_cpu_thread(_working(metric)[0]):
        for begin in range(0, len(work), batch_size):
            chunk = work[begin : begin + batch_size]
            tried = REFINE_METHODS[method](metric, [problems[i] for i in chunk], options)
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


def _warn_unconverged(results: Sequence[GeodesicResult], method: str, options: _Options) -> None:
    """One ConvergenceWarning naming the parameters to raise when the requested method failed for some pair."""
    if method == "none":
        return
    wanted = ("shooting", "multiple_shooting") if method == "shooting" else ("energy",)
    missed = [
        i
        for i, result in enumerate(results)
        if not (result.converged and (result.method in wanted or result.method == "graph"))
    ]
    if not missed:
        return
    kinds = {name: sum(results[i].method == name for i in missed) for name in ("energy", "graph")}
    returned = ", ".join(f"{count} by {name}" for name, count in kinds.items() if count)
    if method == "energy":
        advice = f"raise energy_iter (now {options.energy_iter}) or n_points (now {options.n_points}), or loosen tol"
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


def refine_geodesics(
    metric: PullbackMetric,
    graph: LatentGraph,
    pairs: Any,
    method: str = "shooting",
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    n_steps: int = DEFAULT_STEPS,
    n_segments: int = DEFAULT_SEGMENTS,
    n_points: int = DEFAULT_POINTS,
    energy_iter: int = DEFAULT_ENERGY_ITER,
    fallback: str = "energy",
    initial: str = "energy",
    ridge: float = DEFAULT_RIDGE,
    batch_size: int = 1024,
) -> list[GeodesicResult]:
    """Geodesics between node pairs (m, 2) of `graph`, refined from their Dijkstra paths; one result per pair.

    method: a key of REFINE_METHODS. tol: shooting end-point (and continuity) error relative to ||b - a|| (latent
    units), and the energy method's relative energy change over ENERGY_CHECK_EVERY iterations. max_iter: Newton
    iterations per shooting attempt. n_steps: RK4 steps over [0, 1], shared by the n_segments segments (1: single
    shooting). n_points, energy_iter: nodes and L-BFGS iterations of the energy method and fallback. fallback: a key
    of FALLBACKS, for pairs shooting cannot solve. initial: a key of INITIAL_GUESSES. ridge: relative ridge of the
    geodesic equation. Pairs are refined batch_size at a time, all integrations of a batch together.
    Raises DisconnectedGraph for pairs in different components and InvalidInput for bad arguments; pairs whose
    method did not converge give one ConvergenceWarning naming the parameters to raise.
    """
    options = _check_arguments(method, locals())
    batch_size = check_positive_int(batch_size, "batch_size")
    if graph.latent_dim != metric.latent_dim:
        raise InvalidInput(
            f"The graph's codes have dimension {graph.latent_dim} but the metric's latent_dim is {metric.latent_dim}."
        )
    paths = shortest_paths(graph, _check_pairs(graph, pairs))
    problems = [
        _Problem(path.points, _edge_weights(graph, path.nodes), float(path.length), path.source, path.target)
        for path in paths
    ]
    return _refine(metric, problems, method, options, batch_size)


def refine_path(
    metric: PullbackMetric,
    path: GraphPath | Any,
    method: str = "shooting",
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    n_steps: int = DEFAULT_STEPS,
    n_segments: int = DEFAULT_SEGMENTS,
    n_points: int = DEFAULT_POINTS,
    energy_iter: int = DEFAULT_ENERGY_ITER,
    fallback: str = "energy",
    initial: str = "energy",
    ridge: float = DEFAULT_RIDGE,
) -> GeodesicResult:
    """Refine one path: a GraphPath, or a polyline of latent points (m, d) from a to b.

    Same parameters and rules as refine_geodesics. For a bare polyline the length it must beat is its own, measured
    with Gauss-Legendre quadrature (8 nodes per segment); source and target are then None.
    """
    options = _check_arguments(method, locals())
    if isinstance(path, GraphPath):
        points, source, target = np.asarray(path.points, dtype=np.float64), path.source, path.target
    else:
        points, source, target = check_array(path, "path", ndim=2, min_rows=1, n_columns=metric.latent_dim), None, None
    edges = edge_lengths(metric, points[:-1], points[1:]) if len(points) > 1 else np.zeros(0)
    length = float(path.length) if isinstance(path, GraphPath) else float(edges.sum())
    return _refine(metric, [_Problem(points, edges, length, source, target)], method, options, 1)[0]


def _check_arguments(method: Any, arguments: dict[str, Any]) -> _Options:
    """Validate the method name and the shared options of the public entry points."""
    check_choice(method, "refinement method", REFINE_METHODS)
    names = [field.name for field in dataclasses.fields(_Options)]
    return _check_options(**{name: arguments[name] for name in names})
