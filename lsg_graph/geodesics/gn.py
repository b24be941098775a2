"""Levenberg-Marquardt (damped Gauss-Newton) on the discrete curve energy in output space, batched over pairs.

A curve from a to b is N + 1 latent nodes z_0 = a, z_1 .. z_{N-1}, z_N = b at times 0 = t_0 < ... < t_N = 1
(equal times unless given). Its discrete energy in the decoder's output space is

    E(z) = sum_i ||g(z_{i+1}) - g(z_i)||^2 / (t_{i+1} - t_i),   g = [mu; sigma] (the stacked decoder),

(N * sum_i ||g(z_{i+1}) - g(z_i)||^2 at equal times), whose minimisers are discrete geodesics: the decoded chords are
proportional to the time steps and, with interval weights w_i = 1 / (N (t_{i+1} - t_i)), the weighted second
difference of the decoded curve is normal to the decoder's tangent space at every interior node,

    J_k^T (w_k (g_{k+1} - g_k) - w_{k-1} (g_k - g_{k-1})) = 0,   J_k = J_g(z_k)   (the discrete geodesic equation).

The times only choose where along the geodesic the nodes sit. `equal_spacing` picks them so that the nodes are
equally spaced in latent arc length (the times follow the output arc length): a cubic spline through such nodes
represents a geodesic whose latent speed varies strongly (docs/geodesics.md) far better than one through nodes at
equal metric length.

Linearising the weighted residuals r_i = sqrt(w_i) (g(z_{i+1}) - g(z_i)) gives the Gauss-Newton normal equations
H dz = -b with b_k = J_k^T (w_{k-1} (g_k - g_{k-1}) - w_k (g_{k+1} - g_k)) (half the energy gradient over N, i.e.
minus the left-hand side above) and the block-tridiagonal H: H_kk = (w_{k-1} + w_k) J_k^T J_k,
H_{k,k+1} = -w_k J_k^T J_{k+1}. They are solved by a block Cholesky (Thomas)
recursion over the nodes, batched over pairs, O(N d^3) per pair. Each pair has its own Levenberg-Marquardt damping
lambda (H_kk + lambda s_k I, s_k = trace(H_kk) / d), a trial step is accepted when it lowers that pair's energy, and
lambda follows Nielsen's rule. Jacobians are computed at accepted points only (forward mode, the decoder's fused
pass when it has one); a trial costs one decoder evaluation per node.

Gauss-Newton converges linearly here (the energy has large residuals: the chords), so each iteration also tries an
Anderson extrapolation (type II, `memory` last accepted points x_j and their steps s_j): x + s - (dX + dS) gamma
with gamma the least-squares fit of s by the differences dS. It costs one more decoder evaluation per node and is
taken when it lowers the energy more than the plain step does.

Convergence (per pair): the Gauss-Newton decrement, the energy decrease the undamped model predicts for a full step,
delta^2 = -b^T dz with H dz = -b, is at most `tol` times sum_i ||r_i||^2 (E / N). As H is positive definite,
delta = 0 exactly where the discrete geodesic equation holds, and delta^2 / E bounds the relative energy (and so,
to first order, length) error of the nodes against the discrete geodesic. The tolerance is floored at
ROUNDING_FLOOR machine epsilons of the working dtype.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor, nn

from lsg_graph.errors import DecoderError
from lsg_graph.metric import PullbackMetric, _decoder_failures

ROUNDING_FLOOR = 64.0  # the relative decrement tolerance never goes below this many machine epsilons
RIDGE_FLOOR = 1e3  # the relative ridge of the blocks is at least this many machine epsilons (float32: 1.2e-4)
INITIAL_DAMPING = 1e-4  # lambda at the start, relative to each node's scale
MAX_DAMPING = 1e10  # a pair whose lambda exceeds this stalled (no step lowers its energy)
JACOBIAN_ELEMENTS = 1 << 20  # output elements of one Jacobian chunk (nodes x (d + 4) x P): bounds memory, stays in cache
VALUE_ROWS = 1 << 14  # decoder rows of one value chunk
ANDERSON_RIDGE = 1e-10  # relative ridge of its least-squares problem


@dataclass(frozen=True)
class EnergyState:
    """Result of `levenberg_marquardt`: nodes (n, N + 1, d), relative decrement (n,) (inf where never computed),
    converged / failed (n,) bool, iterations (trial steps) (n,) and energies E (n,)."""

    curves: Tensor
    decrement: Tensor
    converged: Tensor
    failed: Tensor
    n_iter: Tensor
    energy: Tensor
    n_jacobians: Tensor


def _guarded(fn: Callable[[Tensor], Tensor], z: Tensor, row: tuple[int, ...]) -> Tensor:
    """fn(z) (m, *row) row-wise; rows where the decoder raises DecoderError come back NaN (found by bisection)."""
    if z.shape[0] == 0:
        return z.new_zeros(0, *row)
    try:
        with torch.no_grad():
            return fn(z)
    except DecoderError:
        if z.shape[0] == 1:
            return torch.full((1, *row), torch.nan, dtype=z.dtype, device=z.device)
    half = z.shape[0] // 2
    return torch.cat([_guarded(fn, z[:half], row), _guarded(fn, z[half:], row)])


class _Decoded:
    """Values g(z) (m, P) and Jacobians J_g(z) (m, P, d) of the stacked decoder, chunked, NaN where not finite.

    With float32_jacobians, a float64 decoder module that has the fused pass gets its Jacobians from a float32 copy
    (`jacobian_dtype` says which dtype they come in); values stay in the decoder's dtype.
    """

    def __init__(self, metric: PullbackMetric, float32_jacobians: bool = False) -> None:
        """Bind to a metric; the output width P is probed once."""
        self.metric = metric
        self.d = metric.latent_dim
        with torch.no_grad():
            device, dtype = metric.device or torch.device("cpu"), metric.dtype or torch.float64
            self.width = metric._g(torch.zeros(1, self.d, device=device, dtype=dtype)).shape[1]
        self.fused = getattr(metric.decoder, "fused_jacobian_rows", None)
        self.jacobian_dtype = dtype
        if float32_jacobians and self.fused is not None and dtype == torch.float64 and isinstance(metric.decoder, nn.Module):
            self.fused = copy.deepcopy(metric.decoder).float().fused_jacobian_rows
            self.jacobian_dtype = torch.float32

    def values(self, z: Tensor) -> Tensor:
        """g(z) (m, P)."""
        chunks = range(0, len(z), VALUE_ROWS)
        parts = [_guarded(self._value_chunk, z[i : i + VALUE_ROWS], (self.width,)) for i in chunks]
        return torch.cat(parts) if parts else z.new_zeros(0, self.width)

    def _value_chunk(self, z: Tensor) -> Tensor:
        """g(z) for one chunk; DecoderError where the decoder raises."""
        with _decoder_failures("its output"):
            return self.metric._g(z)

    def jacobians(self, z: Tensor) -> Tensor:
        """Transposed Jacobians J_g(z)^T (m, d, P), contiguous, chunked so one chunk holds at most
        JACOBIAN_ELEMENTS output elements."""
        rows = max(1, JACOBIAN_ELEMENTS // ((self.d + 4) * self.width))
        row = (self.d, self.width)
        parts = [_guarded(self._jacobian_chunk, z[i : i + rows], row) for i in range(0, len(z), rows)]
        return torch.cat(parts) if len(parts) > 1 else parts[0] if parts else z.new_zeros(0, self.d, self.width)

    def _jacobian_chunk(self, z: Tensor) -> Tensor:
        """J_g(z)^T for one chunk; DecoderError where the decoder raises."""
        if self.fused is not None:
            with _decoder_failures("the Jacobian (the decoder's fused_jacobian_rows)"):
                return self.fused(z.to(self.jacobian_dtype))
        return self.metric._jacobian(z).transpose(1, 2).contiguous()


def block_tridiagonal_solve(diagonal: Tensor, upper: Tensor, rhs: Tensor) -> tuple[Tensor, Tensor]:
    """Solve symmetric positive definite block-tridiagonal systems, batched: x (n, K, d) and ok (n,) bool.

    diagonal (n, K, d, d) holds H_kk, upper (n, K - 1, d, d) holds H_{k,k+1} (H_{k+1,k} is its transpose), rhs
    (n, K, d). ok is False for systems where a pivot block was not positive definite (their x is 0). On the CPU at
    d <= BANDED_MAX_DIM all systems go to one LAPACK banded Cholesky (`_banded_solve`); elsewhere, or when that
    finds some system not positive definite, the batched block Cholesky recursion (`_block_cholesky_solve`).
    """
    if rhs.device.type == "cpu" and rhs.shape[-1] <= BANDED_MAX_DIM and rhs.shape[0] * rhs.shape[1] > 0:
        solution = _banded_solve(diagonal, upper, rhs)
        if solution is not None:
            return solution, torch.ones(rhs.shape[0], dtype=torch.bool, device=rhs.device)
    return _block_cholesky_solve(diagonal, upper, rhs)


BANDED_MAX_DIM = 4  # latent dimensions up to which one banded LAPACK solve beats the batched block recursion


def _banded_solve(diagonal: Tensor, upper: Tensor, rhs: Tensor) -> Tensor | None:
    """All n systems as one block-diagonal banded matrix (bandwidth 2d - 1) solved by LAPACK's banded Cholesky
    (scipy.linalg.solveh_banded); None when some system is not positive definite or the solution is not finite."""
    import scipy.linalg

    n, k, d = rhs.shape
    size, band = n * k * d, 2 * d - 1
    blocks = np.arange(n * k) * d  # first row of every diagonal block
    rows, columns = np.triu_indices(d)
    packed = np.zeros((band + 1, size))
    r, c = blocks[:, None] + rows, blocks[:, None] + columns
    packed[band + r - c, c] = diagonal.detach().cpu().double().numpy().reshape(n * k, d, d)[:, rows, columns]
    if k > 1:
        starts = (np.arange(n)[:, None] * k + np.arange(k - 1)).reshape(-1) * d  # H_{k,k+1} of each system
        rows, columns = (index.reshape(-1) for index in np.indices((d, d)))
        r, c = starts[:, None] + rows, starts[:, None] + d + columns
        packed[band + r - c, c] = upper.detach().cpu().double().numpy().reshape(-1, d, d)[:, rows, columns]
    try:
        solution = scipy.linalg.solveh_banded(packed, rhs.detach().cpu().double().numpy().reshape(-1), check_finite=False)
    except (np.linalg.LinAlgError, ValueError):
        return None
    if not np.isfinite(solution).all():
        return None
    return torch.as_tensor(solution.reshape(n, k, d), dtype=rhs.dtype, device=rhs.device)


def _block_cholesky_solve(diagonal: Tensor, upper: Tensor, rhs: Tensor) -> tuple[Tensor, Tensor]:
    """block_tridiagonal_solve by the block Cholesky (Thomas) recursion: K sequential steps of batched d x d
    factorisations; ok False (x = 0) for systems with a pivot block that is not positive definite."""
    n, k, d = rhs.shape
    ok = torch.ones(n, dtype=torch.bool, device=rhs.device)
    factors, reduced = [], []
    pivot, y = diagonal[:, 0], rhs[:, 0]
    for i in range(k):
        if i > 0:
            coupling = upper[:, i - 1]  # H_{i-1,i}
            solved = torch.cholesky_solve(coupling, factors[-1])  # P_{i-1}^-1 H_{i-1,i}
            pivot = diagonal[:, i] - coupling.transpose(1, 2) @ solved
            y = rhs[:, i] - (solved.transpose(1, 2) @ reduced[-1].unsqueeze(-1)).squeeze(-1)
        factor, info = torch.linalg.cholesky_ex(0.5 * (pivot + pivot.transpose(1, 2)))
        bad = info != 0
        if bool(bad.any()):
            ok &= ~bad
            factor = torch.where(bad[:, None, None], torch.eye(d, dtype=rhs.dtype, device=rhs.device), factor)
        factors.append(factor)
        reduced.append(y)
    x = [rhs.new_zeros(n, d)] * k
    x[k - 1] = torch.cholesky_solve(reduced[k - 1].unsqueeze(-1), factors[k - 1]).squeeze(-1)
    for i in range(k - 2, -1, -1):
        right = reduced[i] - (upper[:, i] @ x[i + 1].unsqueeze(-1)).squeeze(-1)
        x[i] = torch.cholesky_solve(right.unsqueeze(-1), factors[i]).squeeze(-1)
    solution = torch.stack(x, dim=1)
    ok &= torch.isfinite(solution).all(dim=(1, 2))
    return torch.where(ok[:, None, None], solution, 0.0), ok


def _energies(values: Tensor, weights: Tensor) -> Tensor:
    """sum_i w_i ||g_{i+1} - g_i||^2 (n,) from decoded nodes (n, N + 1, P) and interval weights (n, N); NaN where a
    node is not finite."""
    return ((values[:, 1:] - values[:, :-1]).square().sum(dim=2) * weights).sum(dim=1)


def _normal_equations(
    decoded: _Decoded, curves: Tensor, values: Tensor, weights: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gauss-Newton blocks at curves (m, N + 1, d) with interval weights (m, N): diagonal (m, K, d, d), upper
    (m, K - 1, d, d), b (m, K, d) and finite (m,), K = N - 1 interior nodes; chunked over pairs so the Jacobians of
    one chunk fit in memory."""
    m, count, d = curves.shape
    k = count - 2
    width = decoded.width
    per_chunk = max(1, JACOBIAN_ELEMENTS // ((d + 4) * width * k))
    diagonal = curves.new_empty(m, k, d, d)
    upper = curves.new_empty(m, max(k - 1, 0), d, d)
    gradient = curves.new_empty(m, k, d)
    for begin in range(0, m, per_chunk):
        rows = slice(begin, min(m, begin + per_chunk))
        flat = decoded.jacobians(curves[rows, 1:-1].reshape(-1, d)).to(curves.dtype)  # J_k^T of the nodes (count, d, P)
        transposed = flat.reshape(-1, k, d, width)
        w = weights[rows]
        residual = (values[rows, 1:] - values[rows, :-1]) * w[:, :, None]
        gram = transposed @ transposed.transpose(2, 3)
        diagonal[rows] = (w[:, :-1] + w[:, 1:])[:, :, None, None] * gram
        if k > 1:  # J_k^T J_{k+1} over the flat node sequence (contiguous operands; the products across pairs dropped)
            coupled = torch.bmm(flat[:-1], flat[1:].transpose(1, 2))
            coupled = torch.cat([coupled, coupled.new_zeros(1, d, d)]).reshape(-1, k, d, d)[:, :-1]
            upper[rows] = -w[:, 1:-1, None, None] * coupled
        combined = residual[:, :-1] - residual[:, 1:]  # w_{k-1} (g_k - g_{k-1}) - w_k (g_{k+1} - g_k)
        gradient[rows] = (transposed @ combined.unsqueeze(-1)).squeeze(-1)
    finite = torch.isfinite(diagonal).all(dim=(1, 2, 3)) & torch.isfinite(gradient).all(dim=(1, 2))
    return diagonal, upper, gradient, finite


def _damped(diagonal: Tensor, damping: Tensor, ridge: float) -> Tensor:
    """H_kk + (damping + ridge) s_k I with s_k = trace(H_kk) / d (1 where it is 0)."""
    d = diagonal.shape[-1]
    scale = torch.diagonal(diagonal, dim1=-2, dim2=-1).mean(dim=-1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    shift = (damping[:, None] + ridge) * scale
    return diagonal + shift[:, :, None, None] * torch.eye(d, dtype=diagonal.dtype, device=diagonal.device)


def levenberg_marquardt(
    metric: PullbackMetric, curves: Tensor, tol: float, max_iter: int, ridge: float = 1e-8,
    memory: int = 0, float32_jacobians: bool = False, times: Tensor | None = None,
) -> EnergyState:
    """Minimise the output-space discrete energy of curves (n, N + 1, d) (N >= 2) over their interior nodes.

    End nodes stay fixed. Each pair stops when converged (module docstring), failed (non-finite decoder values at
    its start nodes, or lambda above MAX_DAMPING: no step lowers its energy) or after max_iter trial steps.
    `memory` is the Anderson extrapolation's history (0: plain Levenberg-Marquardt steps); float32_jacobians takes
    the Jacobians of a float64 VAE decoder from a float32 copy (`_Decoded`): the products J^T J, J_k^T J_{k+1} and
    J^T r are still formed in float64 (an exact Gram matrix of the rounded Jacobians, so no float32 ridge); a tol
    below ROUNDING_FLOOR float32 epsilons (7.6e-6) keeps the float64 Jacobians it needs. `times` (n, N + 1),
    increasing from 0 to 1, are the nodes' times (None: equal times; module docstring).
    """
    float32_jacobians = float32_jacobians and float(tol) >= ROUNDING_FLOOR * torch.finfo(torch.float32).eps
    decoded = _Decoded(metric, float32_jacobians)
    curves = curves.detach().clone()
    n, count, d = curves.shape
    device, dtype = curves.device, curves.dtype
    threshold = max(float(tol), ROUNDING_FLOOR * torch.finfo(decoded.jacobian_dtype).eps)
    ridge = max(float(ridge), RIDGE_FLOOR * torch.finfo(dtype).eps)  # float32 Cholesky of a rank-deficient J^T J
    values = decoded.values(curves.reshape(-1, d)).reshape(n, count, -1)
    weights = _weights(times, n, count, curves)
    energy = _energies(values, weights)
    failed = ~torch.isfinite(energy)
    converged = torch.zeros(n, dtype=torch.bool, device=device)
    n_iter = torch.zeros(n, dtype=torch.long, device=device)
    decrement = torch.full((n,), torch.inf, dtype=dtype, device=device)
    damping = torch.full((n,), INITIAL_DAMPING, dtype=dtype, device=device)
    growth = torch.full((n,), 2.0, dtype=dtype, device=device)
    k = count - 2
    diagonal = curves.new_zeros(n, k, d, d)
    upper = curves.new_zeros(n, max(k - 1, 0), d, d)
    gradient = curves.new_zeros(n, k, d)
    stale = ~failed
    n_jacobians = torch.zeros(n, dtype=torch.long, device=device)
    history = _History(n, memory + 1 if memory > 0 else 0, k * d, curves)
    while True:
        rows = (stale & ~converged & ~failed).nonzero()[:, 0]
        if len(rows):
            blocks = _normal_equations(decoded, curves[rows], values[rows], weights[rows])
            diagonal[rows], upper[rows], gradient[rows] = blocks[:3]
            failed[rows[~blocks[3]]] = True
            step, ok = block_tridiagonal_solve(_damped(diagonal[rows], torch.zeros_like(damping[rows]), ridge), upper[rows], -gradient[rows])
            decrement[rows] = torch.where(ok, -(gradient[rows] * step).sum(dim=(1, 2)) / energy[rows], torch.inf)
            converged[rows] |= ok & (decrement[rows] <= threshold) & ~failed[rows]
            stale[rows] = False
            n_jacobians[rows] += 1
            history.moved[rows] = True
        rows = (~converged & ~failed & (n_iter < max_iter)).nonzero()[:, 0]
        if len(rows) == 0:
            break
        g = gradient[rows]
        step, ok = block_tridiagonal_solve(_damped(diagonal[rows], damping[rows], ridge), upper[rows], -g)
        trial = curves[rows].clone()
        trial[:, 1:-1] += step
        trial_values = values[rows].clone()
        trial_values[:, 1:-1] = decoded.values(trial[:, 1:-1].reshape(-1, d)).reshape(len(rows), k, -1)
        trial_energy = _energies(trial_values, weights[rows])
        if history.size:
            history.record(rows, curves[rows, 1:-1], step)
            _try_extrapolation(decoded, history, rows, ok, trial, trial_values, trial_energy, weights[rows])
        predicted = -(g * step).sum(dim=(1, 2))  # >= 0 for the damped (positive definite) system
        gain = (energy[rows] - trial_energy) / torch.where(predicted > 0, predicted, torch.ones_like(predicted))
        accept = ok & torch.isfinite(trial_energy) & (trial_energy < energy[rows])
        n_iter[rows] += 1
        kept, rejected = rows[accept], rows[~accept]
        curves[kept], values[kept], energy[kept] = trial[accept], trial_values[accept], trial_energy[accept]
        factor = torch.clamp(1.0 - (2.0 * gain[accept] - 1.0) ** 3, min=1.0 / 3.0)
        damping[kept] *= factor
        growth[kept] = 2.0
        stale[kept] = True
        damping[rejected] *= growth[rejected]
        growth[rejected] *= 2.0
        failed[rejected[damping[rejected] > MAX_DAMPING]] = True
    return EnergyState(curves, decrement, converged, failed, n_iter, energy * (count - 1), n_jacobians)


def _weights(times: Tensor | None, n: int, count: int, like: Tensor) -> Tensor:
    """Interval weights w_i = 1 / (N (t_{i+1} - t_i)) (n, N) of node times (n, N + 1); ones for equal times."""
    if times is None:
        return like.new_ones(n, count - 1)
    return 1.0 / ((count - 1) * (times[:, 1:] - times[:, :-1]).to(like))


class _History:
    """Per pair, the last `size` accepted points x_j and their steps s_j (flattened, oldest first) of the Anderson
    extrapolation; `moved` marks pairs whose current point is not recorded yet."""

    def __init__(self, n: int, size: int, width: int, like: Tensor) -> None:
        """Empty histories of n pairs (size 0: extrapolation off)."""
        self.size = size
        self.points = like.new_zeros(n, size, width)
        self.steps = like.new_zeros(n, size, width)
        self.count = torch.zeros(n, dtype=torch.long, device=like.device)
        self.moved = torch.zeros(n, dtype=torch.bool, device=like.device)

    def record(self, rows: Tensor, points: Tensor, steps: Tensor) -> None:
        """Record the current points (m, K, d) and steps of pairs `rows`: appended after a move (the oldest dropped
        when full), else replacing the last entry (the same point, a step with other damping)."""
        full = rows[self.moved[rows] & (self.count[rows] == self.size)]
        self.points[full] = self.points[full].roll(-1, dims=1)
        self.steps[full] = self.steps[full].roll(-1, dims=1)
        self.count[full] -= 1
        self.count[rows] += self.moved[rows].long()
        self.moved[rows] = False
        last = self.count[rows] - 1
        self.points[rows, last] = points.reshape(len(rows), -1)
        self.steps[rows, last] = steps.reshape(len(rows), -1)

    def extrapolate(self, rows: Tensor) -> Tensor:
        """Anderson (type II) points x + s - (dX + dS) gamma (m, width) of pairs `rows` with at least two entries,
        gamma = argmin ||s - dS gamma|| (ridge ANDERSON_RIDGE); the last entry is (x, s)."""
        count = self.count[rows]
        points, steps = self.points[rows], self.steps[rows]
        valid = (torch.arange(self.size - 1, device=rows.device) < (count - 1)[:, None]).to(points.dtype)[..., None]
        d_points = (points[:, 1:] - points[:, :-1]) * valid  # (m, size - 1, width), 0 beyond each history
        d_steps = (steps[:, 1:] - steps[:, :-1]) * valid
        index = torch.arange(len(rows), device=rows.device)
        x, s = points[index, count - 1], steps[index, count - 1]
        gram = d_steps @ d_steps.transpose(1, 2)
        scale = torch.diagonal(gram, dim1=1, dim2=2).sum(-1).clamp_min(torch.finfo(gram.dtype).tiny)
        eye = torch.eye(self.size - 1, dtype=gram.dtype, device=gram.device)
        gamma = torch.linalg.solve(gram + (ANDERSON_RIDGE * scale)[:, None, None] * eye, d_steps @ s.unsqueeze(-1))
        return x + s - ((d_points + d_steps).transpose(1, 2) @ gamma).squeeze(-1)


def _try_extrapolation(
    decoded: _Decoded, history: _History, rows: Tensor, ok: Tensor, trial: Tensor, trial_values: Tensor,
    trial_energy: Tensor, weights: Tensor,
) -> None:
    """Replace the trials (in place) of pairs `rows` by their Anderson extrapolations where those are finite and
    lower the energy below the plain trial's."""
    chosen = (ok & (history.count[rows] >= 2)).nonzero()[:, 0]
    if len(chosen) == 0:
        return
    m, count, d = len(chosen), trial.shape[1], trial.shape[2]
    proposal = trial[chosen].clone()
    proposal[:, 1:-1] = history.extrapolate(rows[chosen]).reshape(m, count - 2, d)
    values = trial_values[chosen].clone()
    values[:, 1:-1] = decoded.values(proposal[:, 1:-1].reshape(-1, d)).reshape(m, count - 2, -1)
    energy = _energies(values, weights[chosen])
    plain = torch.where(torch.isfinite(trial_energy[chosen]), trial_energy[chosen], torch.inf)
    better = torch.isfinite(energy) & (energy < plain)
    taken = chosen[better]
    trial[taken], trial_values[taken], trial_energy[taken] = proposal[better], values[better], energy[better]


def upsample(curves: Tensor, n_segments: int) -> Tensor:
    """Nodes (n, n_segments + 1, d) at equal times on the C2 cubic spline through curves (n, N + 1, d)."""
    from lsg_graph.geodesics.curves import hermite_sample, spline_velocities

    points = curves.detach().cpu().double().numpy()
    velocities = spline_velocities(points)
    times = torch.linspace(0.0, 1.0, n_segments + 1, dtype=torch.float64).numpy()
    resampled = [hermite_sample(p, v, times)[0] for p, v in zip(points, velocities)]
    out = torch.as_tensor(np.stack(resampled), dtype=curves.dtype, device=curves.device)
    out[:, 0], out[:, -1] = curves[:, 0], curves[:, -1]
    return out


def respaced(metric: PullbackMetric, curves: Tensor, n_segments: int, smooth: bool) -> tuple[Tensor, Tensor]:
    """`equal_spacing` of curves (n, M + 1, d), decoding their nodes with the metric's decoder."""
    n, count, d = curves.shape
    values = _Decoded(metric).values(curves.reshape(-1, d)).reshape(n, count, -1)
    return equal_spacing(curves, values, n_segments, smooth)


def equal_spacing(curves: Tensor, values: Tensor, n_segments: int, smooth: bool) -> tuple[Tensor, Tensor]:
    """Nodes (n, n_segments + 1, d) equally spaced in latent arc length along curves (n, M + 1, d), and their times
    (n, n_segments + 1): the fraction of output-space arc length before each node.

    Both arc lengths are measured by chords, latent ||z_{i+1} - z_i|| and output ||g_{i+1} - g_i|| from the decoded
    nodes `values` (n, M + 1, P). With `smooth` the new nodes lie on the C2 cubic spline through the nodes at equal
    times, else on their polyline. Times are floored at MIN_TIME_STEP of an equal step (then renormalised) so
    every interval keeps a finite weight.
    """
    from lsg_graph.geodesics.curves import hermite_sample, polyline_sample, spline_velocities

    points = curves.detach().cpu().double().numpy()
    decoded = values.detach().cpu().double().numpy()
    latent = np.linalg.norm(np.diff(points, axis=1), axis=2)
    output = np.linalg.norm(np.diff(decoded, axis=1), axis=2)
    m = points.shape[1] - 1
    grid = np.linspace(0.0, 1.0, m + 1)
    targets = np.linspace(0.0, 1.0, n_segments + 1)
    velocities = spline_velocities(points) if smooth else None
    nodes, times = [], []
    for i in range(len(points)):
        arc = _fractions(latent[i], grid)
        at = np.interp(targets, arc, grid)
        if smooth:
            nodes.append(hermite_sample(points[i], velocities[i], at)[0])
        else:
            nodes.append(polyline_sample(points[i], grid, at))
        steps = np.maximum(np.diff(np.interp(at, grid, _fractions(output[i], arc))), MIN_TIME_STEP / n_segments)
        times.append(np.concatenate([[0.0], np.cumsum(steps) / steps.sum()]))
    out = torch.as_tensor(np.stack(nodes), dtype=curves.dtype, device=curves.device)
    out[:, 0], out[:, -1] = curves[:, 0], curves[:, -1]
    return out, torch.as_tensor(np.stack(times), dtype=curves.dtype, device=curves.device)


MIN_TIME_STEP = 1e-2  # an interval's time is at least this fraction of an equal step


def _fractions(lengths: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Cumulative fractions (M + 1,) of interval lengths (M,), 0 to 1; `fallback` where they sum to 0 or are not
    finite (for output lengths: the latent fractions, which give the new nodes equal times)."""
    total = lengths.sum()
    if not np.isfinite(total) or total <= 0.0:
        return fallback
    return np.concatenate([[0.0], np.cumsum(lengths) / total])


BLOCK_ELEMENTS = 1 << 24  # elements of the d x d blocks held for one levenberg_marquardt call (bounds memory)


def solve_in_chunks(
    metric: PullbackMetric, curves: Tensor, tol: float, max_iter: int, ridge: float = 1e-8,
    memory: int = 0, float32_jacobians: bool = False, times: Tensor | None = None,
) -> EnergyState:
    """levenberg_marquardt on chunks of pairs so that each call holds at most BLOCK_ELEMENTS block elements."""
    n, count, d = curves.shape
    per_chunk = max(1, BLOCK_ELEMENTS // max(1, (count - 2) * d * d))
    if n <= per_chunk:
        return levenberg_marquardt(metric, curves, tol, max_iter, ridge, memory, float32_jacobians, times)
    parts = [
        levenberg_marquardt(
            metric, curves[i : i + per_chunk], tol, max_iter, ridge, memory, float32_jacobians,
            None if times is None else times[i : i + per_chunk],
        )
        for i in range(0, n, per_chunk)
    ]
    return EnergyState(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(EnergyState)))
