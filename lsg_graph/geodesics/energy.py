"""Energy minimisation of discretised curves: L-BFGS on the latent midpoint energy (method "energy", the fallback)
and Levenberg-Marquardt on the output-space energy (method "gauss_newton", lsg_graph.geodesics.gn)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lsg_graph.errors import DecoderError
from lsg_graph.geodesics.gn import EnergyState
from lsg_graph.geodesics.ode import _working
from lsg_graph.geodesics.problem import _Candidate, _Options, _Problem, _resample
from lsg_graph.graph.weights import edge_lengths
from lsg_graph.metric import PullbackMetric

ENERGY_CHECK_EVERY = 20  # L-BFGS iterations between per-pair convergence checks
LBFGS_HISTORY = 20
START_OVERSAMPLING = 4  # the start curve is sampled at this many times the first level's segments, then re-placed
GN_QUADRATURE_NODES = 4  # Gauss-Legendre nodes per interval measuring Gauss-Newton splines (their intervals are short)
GN_CURVE_NODES = 128  # ... and at least this many per curve (16 segments: 8 per interval)


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


def _gauss_newton(metric: PullbackMetric, problems: Sequence[_Problem], options: _Options) -> list[_Candidate]:
    """Levenberg-Marquardt on the output-space energy (lsg_graph.geodesics.gn) from each problem's curve, or from the
    straight segment where that is shorter, at gn_segments segments; then, for pairs whose curve is still changing,
    again with twice the segments (started from the spline through the last nodes), until two levels agree in length
    to gn_rtol or gn_max_segments is reached. The shortest converged level is kept.

    With gn_spacing "latent" every level's start nodes are equally spaced in latent arc length along the previous
    curve (the start curve: sampled at START_OVERSAMPLING times the segments) and timed by its output arc length
    (gn.equal_spacing); with "equal" they sit at equal metric length. The result is the C2 cubic spline through the
    nodes (Hermite form, at equal parameter steps), measured by quadrature of the metric speed.
    """
    from lsg_graph.geodesics.gn import respaced, solve_in_chunks, upsample

    device, dtype = _working(metric)
    count = options.gn_segments
    latent = options.gn_spacing == "latent"
    fractions = np.linspace(0.0, 1.0, (START_OVERSAMPLING if latent else 1) * count + 1)
    starts = np.stack([_resample(p, fractions) for p in problems])
    straight = _straight_lengths(metric, starts[:, 0], starts[:, -1])
    shorter = straight < np.array([p.edges.sum() if len(p.edges) else np.inf for p in problems])
    line = starts[:, :1] + fractions[None, :, None] * (starts[:, -1:] - starts[:, :1])
    starts[shorter] = line[shorter]
    curves = torch.as_tensor(starts, dtype=dtype, device=device)
    times = None
    if latent:
        curves, times = respaced(metric, curves, count, smooth=False)
    rows = np.arange(len(problems))
    best: list[_Candidate | None] = [None] * len(problems)
    spent = np.zeros(len(problems), dtype=np.int64)
    while True:
        state = solve_in_chunks(
            metric, curves, options.gn_tol, options.gn_iter, options.ridge, options.gn_memory,
            options.gn_float32_jacobians, times,
        )
        level = _level_candidates(metric, state, options, count)
        going = []
        for row, candidate in zip(rows, level):
            spent[row] += candidate.n_iter
            candidate.n_iter = int(spent[row])
            previous = best[row]
            if previous is None or (candidate.converged and (candidate.length <= previous.length or not previous.converged)):
                best[row] = candidate
            elif previous.converged and candidate.converged:
                previous.n_iter = int(spent[row])
            agreed = previous is not None and abs(previous.length - candidate.length) <= options.gn_rtol * candidate.length
            going.append(candidate.converged and np.isfinite(candidate.length) and not agreed)
        keep = np.array(going, dtype=bool)
        if 2 * count > options.gn_max_segments or not keep.any():
            break
        count *= 2
        rows = rows[keep]
        solved = state.curves[torch.as_tensor(keep, device=state.curves.device)]
        if latent:
            curves, times = respaced(metric, solved, count, smooth=True)
        else:
            curves = upsample(solved, count)
    return [candidate for candidate in best if candidate is not None]


def _level_candidates(metric: PullbackMetric, state: EnergyState, options: _Options, count: int) -> list[_Candidate]:
    """Candidates from one Levenberg-Marquardt level: the splines through its nodes and their lengths."""
    from lsg_graph.geodesics.curves import hermite_lengths, spline_velocities

    curves = state.curves.detach().cpu().double().numpy()
    velocities = spline_velocities(curves)
    lengths = hermite_lengths(
        metric, state.curves, torch.as_tensor(velocities, dtype=state.curves.dtype, device=state.curves.device),
        ~state.failed, nodes=max(GN_QUADRATURE_NODES, -(-GN_CURVE_NODES // count)),
    )
    candidates = []
    for i in range(len(curves)):
        message = ""
        if bool(state.failed[i]):
            message = "gauss_newton: the decoder was not finite along the start curve, or no step lowered its energy"
        elif not bool(state.converged[i]):
            message = (
                f"gauss_newton ({count} segments): relative decrement {float(state.decrement[i]):.2e} above "
                f"gn_tol={options.gn_tol:g} after gn_iter={options.gn_iter} steps"
            )
        candidates.append(
            _Candidate(
                curves[i], lengths[i], bool(state.converged[i]), "gauss_newton", int(state.n_iter[i]),
                message=message, velocities=velocities[i],
            )
        )
    return candidates


def _straight_lengths(metric: PullbackMetric, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Metric lengths (n,) of the straight segments a -> b (Gauss-Legendre, 8 nodes); inf where the decoder fails."""
    try:
        return edge_lengths(metric, a, b)
    except DecoderError:
        if len(a) == 1:
            return np.array([np.inf])
    half = len(a) // 2
    return np.concatenate([_straight_lengths(metric, a[:half], b[:half]), _straight_lengths(metric, a[half:], b[half:])])
