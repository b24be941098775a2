"""Single and multiple shooting for gamma(0) = a, gamma(1) = b by damped Newton (lsg_graph.geodesics.newton).

Single shooting solves Exp_a(v0) = b for v0 (d unknowns per pair). Multiple shooting with K segments on local time
[0, 1] takes the interior node positions and all segment velocities as unknowns ((2K - 1) d per pair) and the
continuity of position and velocity at the nodes and the end point b as equations. Sensitivities come from forward
differences integrated in the same batch as the trajectories; trajectories that leave the path's neighbourhood or
meet non-finite decoder values fail for their own pair only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lsg_graph.errors import InvalidInput
from lsg_graph.geodesics.curves import hermite_lengths, hermite_sample
from lsg_graph.geodesics.newton import Blocks, Residual, _fd_step, _newton, _NewtonState
from lsg_graph.geodesics.ode import _GuardedAcceleration, _latent, _one_cpu_thread, _rk4, _working
from lsg_graph.geodesics.problem import (
    DEFAULT_MAX_ITER,
    DEFAULT_RIDGE,
    DEFAULT_STEPS,
    DEFAULT_TOL,
    RefineOptions,
    _Candidate,
    _Options,
    _Problem,
    _resample,
)
from lsg_graph.metric import PullbackMetric

__all__ = ["ShootingResult", "log_map"]

ROUNDING_FLOOR = 64.0  # the end-point tolerance never goes below this many machine epsilons of the latent scale
WARM_SPACING = 1.0 / 8.0  # stencil spacing of the initial tangent on a smoothed path
ESCAPE_FACTOR = 1.0  # trajectories must stay in the path's bounding box widened by this many times its side


@dataclass(frozen=True)
class ShootingResult:
    """Initial velocities (n, d) with Exp_a(v) = b, end-point errors (n,), converged (n,) and Newton iterations (n,)."""

    velocities: Tensor
    endpoint_error: Tensor
    converged: Tensor
    n_iter: Tensor



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
    options = RefineOptions(tol=tol, max_iter=max_iter, n_steps=n_steps, ridge=ridge)
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



def _single_shoot(
    metric: PullbackMetric, problems: Sequence[_Problem], options: _Options, n_steps: int
) -> list[_Candidate]:
    """Single shooting (Exp_a(v0) = b) for every problem from its start curve's tangent; one candidate each."""
    a, b = _ends(problems, metric)
    residual = _shooting_residual(metric, a, b, _path_box(problems, a), n_steps, options.ridge)
    spacing = 0.5 if options.initial == "graph" else WARM_SPACING
    start, d = _initial_velocity(problems, a, spacing), a.shape[1]
    hermite = [i for i, p in enumerate(problems) if p.velocities is not None]
    if hermite:
        start[hermite] = torch.as_tensor(np.stack([problems[i].velocities[0] for i in hermite]), dtype=a.dtype, device=a.device)
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
            velocities=velocities[i].detach().cpu().double().numpy(),
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
    """Metric lengths of the C1 cubic Hermite splines through the integrator's positions and velocities (n, T, d)."""
    return hermite_lengths(metric, positions, velocities, which)


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
    if all(p.velocities is not None for p in problems):
        return _hermite_start(problems, k, like)
    fractions = np.linspace(0.0, 1.0, 2 * k + 1)
    points = torch.as_tensor(
        np.stack([_resample(p, fractions) for p in problems]), dtype=like.dtype, device=like.device
    )
    parts = [-3.0 * points[:, 0] + 4.0 * points[:, 1] - points[:, 2]]
    for s in range(1, k):
        parts += [points[:, 2 * s], points[:, 2 * s + 1] - points[:, 2 * s - 1]]
    return torch.cat(parts, dim=1)


def _hermite_start(problems: Sequence[_Problem], k: int, like: Tensor) -> Tensor:
    """Unknowns (n, (2K - 1) d) from start curves in Hermite form (equal times): x_s = c(s/K), u_s = c'(s/K) / K."""
    fractions = np.linspace(0.0, 1.0, k + 1)[:-1]
    rows = []
    for problem in problems:
        positions, velocities = hermite_sample(problem.points, problem.velocities, fractions)
        parts = [velocities[0] / k] + [np.concatenate([positions[s], velocities[s] / k]) for s in range(1, k)]
        rows.append(np.concatenate(parts))
    return torch.as_tensor(np.stack(rows), dtype=like.dtype, device=like.device)


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
        speeds = torch.cat([velocities[i, 0]] + [velocities[i, s, 1:] for s in range(1, k)])
        candidates.append(
            _Candidate(
                curve.detach().cpu().double().numpy(),
                float(sum(segment_lengths[i * k : (i + 1) * k])),
                bool(state.converged[i]),
                "shooting",
                int(state.n_iter[i]),
                float(state.error[i]),
                (k * velocities[i, 0, 0]).detach().cpu().double().numpy(),
                _failure_note(f"multiple shooting ({k} segments)", state, i, options.max_iter),
                velocities=(k * speeds).detach().cpu().double().numpy(),
            )
        )
    return candidates


def _shooting(
    metric: PullbackMetric, problems: Sequence[_Problem], options: _Options, k: int, n_steps: int
) -> list[_Candidate]:
    """Single (k = 1) or multiple (k > 1) shooting with n_steps RK4 steps in all."""
    if k == 1:
        return _single_shoot(metric, problems, options, n_steps)
    return _multiple_shoot(metric, problems, options, k, n_steps)
