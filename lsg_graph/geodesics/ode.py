"""Integration of the geodesic equation gamma'' = -(J^T J)^-1 J^T h by fixed-step RK4, batched over starts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lsg_graph._threads import one_thread as _one_cpu_thread
from lsg_graph._validation import check_array, check_float, check_positive_int
from lsg_graph.errors import DecoderError, InvalidInput
from lsg_graph.geodesics.problem import DEFAULT_RIDGE, DEFAULT_STEPS
from lsg_graph.metric import PullbackMetric

__all__ = ["Trajectory", "exponential_map", "integrate_geodesic"]


@dataclass(frozen=True)
class Trajectory:
    """Geodesics sampled at times (T,) in [0, 1]: positions (n, T, d) and velocities (n, T, d), latent units."""

    times: Tensor
    positions: Tensor
    velocities: Tensor



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
