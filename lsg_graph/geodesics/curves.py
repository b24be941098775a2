"""Curves from a to b on t in [0, 1] as the solvers represent them, sampled and measured the same way.

Two representations:

* Cubic Hermite: positions p_i (m, d) at equal times t_i = i / (m - 1) and velocities p'(t_i) (m, d). Shooting
  gives both from the integrator; for the nodes of an energy solver the velocities are those of the C2 cubic
  spline through the nodes (not-a-knot end conditions, `spline_velocities`), so the Hermite form *is* that spline.
* Polyline: points joined by straight segments (graph paths), at given times (default: by metric arc length).

Lengths are integrals of the metric speed ||c'(t)||_M(c(t)) by Gauss-Legendre quadrature, QUADRATURE_NODES per
interval (polylines: per straight segment, as the graph's own edges), so a length is that of the curve `sample`
returns points of.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.interpolate import CubicSpline
from torch import Tensor

from lsg_graph.errors import DecoderError
from lsg_graph.graph.weights import gauss_legendre
from lsg_graph.metric import PullbackMetric

QUADRATURE_NODES = 8  # Gauss-Legendre nodes per interval of a Hermite curve


def spline_velocities(points: np.ndarray) -> np.ndarray:
    """Velocities (..., m, d) at equal times on [0, 1] of the C2 cubic spline (not-a-knot) through points (..., m, d)."""
    points = np.asarray(points, dtype=np.float64)
    m = points.shape[-2]
    if m < 2:
        return np.zeros_like(points)
    if m == 2:
        return np.broadcast_to(points[..., 1:, :] - points[..., :1, :], points.shape).copy()
    times = np.linspace(0.0, 1.0, m)
    return CubicSpline(times, points, axis=points.ndim - 2)(times, 1)


def _hermite_basis(s: Tensor | np.ndarray) -> tuple[tuple, tuple]:
    """Cubic Hermite basis (h00, h10, h01, h11) and its derivatives at local parameters s in [0, 1]."""
    values = (2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2)
    slopes = (6 * s**2 - 6 * s, 3 * s**2 - 4 * s + 1, -6 * s**2 + 6 * s, 3 * s**2 - 2 * s)
    return values, slopes


def hermite_sample(points: np.ndarray, velocities: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions and velocities (f, d) at `times` (f,) in [0, 1] of the Hermite curve through points, velocities (m, d)."""
    m = points.shape[0]
    h = 1.0 / (m - 1)
    times = np.clip(np.asarray(times, dtype=np.float64), 0.0, 1.0)
    index = np.minimum((times / h).astype(np.int64), m - 2)
    s = (times - index * h) / h
    (h00, h10, h01, h11), (d00, d10, d01, d11) = _hermite_basis(s[:, None])
    p0, p1, v0, v1 = points[index], points[index + 1], h * velocities[index], h * velocities[index + 1]
    positions = h00 * p0 + h10 * v0 + h01 * p1 + h11 * v1
    derivative = (d00 * p0 + d10 * v0 + d01 * p1 + d11 * v1) / h
    return positions, derivative


def polyline_sample(points: np.ndarray, times: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Positions (f, d) at `at` (f,) of the polyline through points (m, d) placed at increasing times (m,)."""
    at = np.clip(np.asarray(at, dtype=np.float64), times[0], times[-1])
    return np.stack([np.interp(at, times, column) for column in points.T], axis=1)


def hermite_lengths(
    metric: PullbackMetric, positions: Tensor, velocities: Tensor, which: Tensor | None = None,
    nodes: int = QUADRATURE_NODES,
) -> list[float]:
    """Metric lengths of Hermite curves (n, T, d) on [0, 1]; inf where not in `which` (n,) or not finite.

    Gauss-Legendre quadrature with `nodes` nodes per interval of ||p'(t)||_M(p(t)): the length of an actual curve
    from positions[:, 0] to positions[:, -1], never below the geodesic distance up to quadrature error.
    """
    n = positions.shape[0]
    lengths = [float("inf")] * n
    rows = torch.arange(n, device=positions.device) if which is None else which.nonzero()[:, 0]
    if len(rows) == 0:
        return lengths
    z, v = positions[rows], velocities[rows]
    h = 1.0 / (z.shape[1] - 1)
    abscissae, weights = gauss_legendre(nodes)
    s = torch.as_tensor(abscissae, dtype=z.dtype, device=z.device)[:, None, None, None]
    basis, slopes = _hermite_basis(s)
    ends = (z[:, :-1], h * v[:, :-1], z[:, 1:], h * v[:, 1:])
    points = sum(weight * end for weight, end in zip(basis, ends))
    tangents = sum(weight * end for weight, end in zip(slopes, ends)) / h
    speeds = _speeds(metric, points, tangents)
    quadrature = torch.as_tensor(weights, dtype=z.dtype, device=z.device)
    values = (h * torch.einsum("q,qns->n", quadrature, speeds)).cpu().double().tolist()
    for row, value in zip(rows.tolist(), values):
        lengths[row] = value if np.isfinite(value) else float("inf")
    return lengths


def _speeds(metric: PullbackMetric, points: Tensor, tangents: Tensor) -> Tensor:
    """Metric speeds (q, n, s) at points and tangents (q, n, s, d); NaN for curves (axis n) where the decoder fails."""
    d = points.shape[-1]
    try:
        with torch.no_grad():
            return metric.norm(points.reshape(-1, d), tangents.reshape(-1, d)).reshape(points.shape[:-1])
    except DecoderError:
        if points.shape[1] == 1:
            return torch.full(points.shape[:-1], torch.nan, dtype=points.dtype, device=points.device)
    half = points.shape[1] // 2
    return torch.cat(
        [_speeds(metric, points[:, :half], tangents[:, :half]), _speeds(metric, points[:, half:], tangents[:, half:])],
        dim=1,
    )
