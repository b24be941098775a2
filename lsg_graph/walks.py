"""Random walks in the latent space: Euclidean, Riemannian (covariance s M^-1) and Brownian motion (with the drift).

All walkers move together (batched); step t draws one standard normal eps (w, d) from a torch.Generator seeded with
`seed`, so a seed fixes the result, and walks of different kinds with the same seed share their noise (common random
numbers for paired comparisons). With step size s (latent units^2, a time step) and M = C C^T (Cholesky):

* euclidean:  z' = z + sqrt(s) eps                         (covariance s I)
* metric:     z' = z + sqrt(s) C^-T eps                    (covariance s C^-T C^-1 = s M(z)^-1; a triangular solve)
* brownian:   z' = z + s b(z) + sqrt(s) C^-T eps,  b^i = 1/2 (1/sqrt(det M)) d_j (sqrt(det M) M^ij)

The brownian kind is the Euler-Maruyama scheme of Brownian motion on the manifold (generator half the
Laplace-Beltrami operator); its long-run law is uniform w.r.t. the Riemannian volume, density sqrt(det M) in the
chart. The metric kind lacks the drift and has another long-run law (e.g. uniform in theta on the sphere chart).

Singular metrics: where M(z) is not numerically positive definite (non-finite, largest eigenvalue <= 0, smallest
eigenvalue <= rcond * largest, or a failed Cholesky) M^-1 is unbounded and no Euler step exists. Such a step is
*held*: a proposal landing on a singular point (or a non-finite proposal) is rejected and the walker stays where it
was, drawing fresh noise at the next step; a walker whose current point is singular (only possible at its start)
stays put. Euclidean walks do not use M, but a proposal where the decoder's mean or std is not finite is held in
the same way. Every held step is counted in `WalkResult.n_singular` and marked in `WalkResult.held`; nothing raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lsg_graph._threads import one_thread as _one_cpu_thread
from lsg_graph._validation import check_choice, check_codes, check_float, check_positive_int, check_seed
from lsg_graph.errors import InvalidInput
from lsg_graph.metric import PullbackMetric, as_metric
from lsg_graph.registry import DEFAULT_SEED, DEFAULT_WALK_KIND

__all__ = [
    "DRIFT_METHODS",
    "WALK_KINDS",
    "WalkResult",
    "brownian_drift",
    "decode_means",
    "expected_normal_norm",
    "matched_step_sizes",
    "random_walks",
    "step_covariance",
]

Boundary = Callable[[Tensor], Tensor]
RCOND_FACTOR = 100.0  # default rcond = RCOND_FACTOR * machine epsilon of the dtype the metric is computed in


@dataclass(frozen=True)
class WalkKind:
    """A named kind of walk: whether it needs the metric and the Brownian drift."""

    description: str
    uses_metric: bool
    uses_drift: bool


WALK_KINDS: dict[str, WalkKind] = {
    "euclidean": WalkKind("z' = z + sqrt(s) eps: covariance s I", uses_metric=False, uses_drift=False),
    "metric": WalkKind(
        "z' = z + sqrt(s) L eps, L L^T = M(z)^-1: covariance s M^-1", uses_metric=True, uses_drift=False
    ),
    "brownian": WalkKind(
        "the metric walk plus the drift s b(z): Brownian motion on the manifold", uses_metric=True, uses_drift=True
    ),
}


@dataclass(frozen=True)
class WalkResult:
    """Random walks: trajectories (w, n_steps + 1, d) float64 latent points, row 0 the starts.

    held (w, n_steps) bool marks steps rejected because M was singular/ill-conditioned (see the module docstring);
    n_singular is their number. decoded_means (w, n_steps + 1, D) holds the decoder mean at every point when the
    walk was run with decode=True, else None.
    """

    trajectories: np.ndarray
    kind: str
    step_size: float
    seed: int
    n_singular: int
    held: np.ndarray
    decoded_means: np.ndarray | None = None

    @property
    def n_walkers(self) -> int:
        """Number of walkers w."""
        return int(self.trajectories.shape[0])

    @property
    def n_steps(self) -> int:
        """Number of steps taken by each walker."""
        return int(self.trajectories.shape[1] - 1)

    def step_lengths(self) -> np.ndarray:
        """Euclidean latent length of every step (w, n_steps), latent units (0 for held steps)."""
        return np.linalg.norm(np.diff(self.trajectories, axis=1), axis=-1)

    @property
    def mean_step_length(self) -> float:
        """Mean Euclidean latent step length over all walkers and steps (held steps count as 0), latent units."""
        return float(self.step_lengths().mean())


# ----------------------------------------------------------------------------------------------------------------
# Local quantities: metric, Cholesky factor, singular mask, drift
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Local:
    """Quantities at the walkers' current points: Cholesky factors (w, d, d), singular mask (w,), drift (w, d)."""

    cholesky: Tensor
    singular: Tensor
    drift: Tensor | None

    def keep(self, other: _Local, rows: Tensor) -> _Local:
        """Rows from `other` where `rows` is True, else from self (rejected proposals keep the old point's values)."""
        drift = None if self.drift is None else torch.where(rows[:, None], other.drift, self.drift)
        return _Local(
            torch.where(rows[:, None, None], other.cholesky, self.cholesky),
            torch.where(rows, other.singular, self.singular),
            drift,
        )


def _on_metric_device(metric: PullbackMetric, z: Tensor) -> Tensor:
    """z on the metric's device and in its dtype (the decoder's, else z's own)."""
    return z.to(device=metric.device or z.device, dtype=metric.dtype or z.dtype)


def _default_rcond(metric: PullbackMetric) -> float:
    """RCOND_FACTOR * eps of the dtype the metric is computed in (float64 for parameter-free decoders)."""
    return RCOND_FACTOR * torch.finfo(metric.dtype or torch.float64).eps


def _singular_rows(metric_tensors: Tensor, rcond: float) -> Tensor:
    """Rows (n,) whose M (n, d, d) is non-finite, not positive or has eigenvalue ratio <= rcond."""
    finite = torch.isfinite(metric_tensors).flatten(1).all(dim=1)
    safe = torch.where(finite[:, None, None], metric_tensors, torch.eye(metric_tensors.shape[-1]).to(metric_tensors))
    eigenvalues = torch.linalg.eigvalsh(safe)
    largest, smallest = eigenvalues[:, -1], eigenvalues[:, 0]
    return ~finite | (largest <= 0) | (smallest <= rcond * largest)


def _cholesky(metric_tensors: Tensor, rcond: float) -> tuple[Tensor, Tensor]:
    """Lower Cholesky factors (n, d, d) float64 and singular mask (n,); singular rows get the identity factor."""
    metric_tensors = metric_tensors.to(torch.float64)
    singular = _singular_rows(metric_tensors, rcond)
    identity = torch.eye(metric_tensors.shape[-1], dtype=torch.float64, device=metric_tensors.device)
    safe = torch.where(singular[:, None, None], identity, metric_tensors)
    factor, info = torch.linalg.cholesky_ex(safe)
    singular = singular | (info != 0)
    return torch.where(singular[:, None, None], identity, factor), singular


def _metric_derivatives(metric: PullbackMetric, z: Tensor) -> tuple[Tensor, Tensor]:
    """M(z) (n, d, d) and its partial derivatives dM[:, j] = d_j M (n, d, d, d), by one batched forward-mode jvp."""
    z = _on_metric_device(metric, z)
    n, d = z.shape
    repeated = z.repeat(d, 1)
    tangents = torch.eye(d, device=z.device, dtype=z.dtype).repeat_interleave(n, dim=0)
    values, derivatives = torch.func.jvp(metric.metric_tensor, (repeated,), (tangents,))
    return values[:n], derivatives.reshape(d, n, d, d).transpose(0, 1)


def _expanded_drift(cholesky: Tensor, derivatives: Tensor) -> Tensor:
    """b = 1/2 div(M^-1) + 1/2 M^-1 grad log sqrt(det M) (n, d) from Cholesky factors and d_j M (float64).

    d_j (M^-1)^ij = -(M^-1 d_j M M^-1)^ij and d_j log sqrt(det M) = 1/2 tr(M^-1 d_j M).
    """
    n, d = cholesky.shape[:2]
    identity = torch.eye(d, dtype=cholesky.dtype, device=cholesky.device).expand(n, d, d)
    inverse = torch.cholesky_solve(identity, cholesky)
    derivatives = derivatives.to(cholesky.dtype)
    divergence = -torch.einsum("nia,njab,nbj->ni", inverse, derivatives, inverse)
    grad_log_volume = 0.5 * torch.einsum("nab,njba->nj", inverse, derivatives)
    return 0.5 * (divergence + torch.einsum("nij,nj->ni", inverse, grad_log_volume))


def _drift_expanded(metric: PullbackMetric, z: Tensor, rcond: float) -> Tensor:
    """Brownian drift (n, d) float64 by the expanded formula; NaN rows where M is singular."""
    with torch.no_grad():
        values, derivatives = _metric_derivatives(metric, z)
    cholesky, singular = _cholesky(values, rcond)
    drift = _expanded_drift(cholesky, derivatives)
    return torch.where(singular[:, None], torch.nan, drift)


def _drift_divergence(metric: PullbackMetric, z: Tensor, rcond: float) -> Tensor:
    """Brownian drift (n, d) float64 as 1/2 (1/sqrt det M) d_j F^ij, F = sqrt(det M) M^-1 differentiated by a jvp."""
    z = _on_metric_device(metric, z)
    with torch.no_grad():
        singular = _singular_rows(metric.metric_tensor(z).to(torch.float64), rcond)
    drift = torch.full(z.shape, torch.nan, dtype=torch.float64, device=z.device)
    regular = z[~singular]
    if len(regular) == 0:
        return drift

    def volume_weighted_inverse(points: Tensor) -> Tensor:
        metric_tensors = metric.metric_tensor(points)
        return torch.sqrt(torch.linalg.det(metric_tensors))[:, None, None] * torch.linalg.inv(metric_tensors)

    n, d = regular.shape
    tangents = torch.eye(d, device=z.device, dtype=z.dtype).repeat_interleave(n, dim=0)
    with torch.no_grad():
        _, derivatives = torch.func.jvp(volume_weighted_inverse, (regular.repeat(d, 1),), (tangents,))
        volume = torch.sqrt(torch.linalg.det(metric.metric_tensor(regular).to(torch.float64)))
    derivatives = derivatives.to(torch.float64).reshape(d, n, d, d)  # [j, n, i, k] = d_j F^ik
    drift[~singular] = 0.5 * torch.einsum("jnij->ni", derivatives) / volume[:, None]
    return drift


DRIFT_METHODS: dict[str, Callable[[PullbackMetric, Tensor, float], Tensor]] = {
    "expanded": _drift_expanded,
    "divergence": _drift_divergence,
}


def brownian_drift(metric: Any, z: Any, method: str = "expanded", rcond: float | None = None) -> np.ndarray:
    """Drift b(z) (n, d) float64 of Brownian motion on the manifold, b^i = 1/2 (1/sqrt det M) d_j (sqrt(det M) M^ij).

    method "expanded": 1/2 div(M^-1) + 1/2 M^-1 grad log sqrt(det M) with d_j M by forward-mode AD of metric_tensor
    (what the walks use); "divergence": forward-mode AD of z -> sqrt(det M(z)) M(z)^-1 itself (a reference). Units:
    latent units per unit time. Rows where M is singular (see the module docstring) are NaN.
    """
    metric = as_metric(metric, z)
    check_choice(method, "drift method", DRIFT_METHODS)
    points = torch.from_numpy(check_codes(z, "z", latent_dim=metric.latent_dim))
    rcond = _check_rcond(rcond, metric)
    with _one_cpu_thread(metric.device or torch.device("cpu")):
        return DRIFT_METHODS[method](metric, points, rcond).cpu().numpy()


def step_covariance(
    metric: Any, z: Any, step_size: float, kind: str = DEFAULT_WALK_KIND, rcond: float | None = None
) -> np.ndarray:
    """Exact covariance (n, d, d) float64 of one step of `kind` from each point z (n, d): s I or s M(z)^-1.

    Rows where M is singular (see the module docstring) are NaN: no step is taken there.
    """
    metric = as_metric(metric, z)
    check_choice(kind, "walk kind", WALK_KINDS)
    step_size = check_float(step_size, "step_size", minimum=0.0, strict_minimum=True)
    points = check_codes(z, "z", latent_dim=metric.latent_dim)
    identity = torch.eye(metric.latent_dim, dtype=torch.float64)
    if not WALK_KINDS[kind].uses_metric:
        return (step_size * identity).expand(len(points), -1, -1).numpy().copy()
    with torch.no_grad():
        metric_tensors = metric.metric_tensor(torch.from_numpy(points)).to(torch.float64).cpu()
    cholesky, singular = _cholesky(metric_tensors, _check_rcond(rcond, metric))
    covariance = step_size * torch.cholesky_solve(identity.expand_as(cholesky), cholesky)
    return torch.where(singular[:, None, None], torch.nan, covariance).numpy()


# ----------------------------------------------------------------------------------------------------------------
# The walk
# ----------------------------------------------------------------------------------------------------------------


def _local(metric: PullbackMetric, z: Tensor, kind: WalkKind, rcond: float) -> _Local:
    """Cholesky factors, singular mask and (brownian) drift at the points z (w, d) float64."""
    with torch.no_grad():
        if kind.uses_drift:
            values, derivatives = _metric_derivatives(metric, z)
        else:
            values, derivatives = metric.metric_tensor(_on_metric_device(metric, z)), None
    cholesky, singular = _cholesky(values.to(z.device), rcond)
    drift = None if derivatives is None else _expanded_drift(cholesky, derivatives.to(z.device))
    if drift is not None:
        drift = torch.where(singular[:, None], 0.0, drift)
    return _Local(cholesky, singular, drift)


def _increment(local: _Local | None, noise: Tensor, step_size: float) -> Tensor:
    """sqrt(s) eps (euclidean) or sqrt(s) C^-T eps (+ s b) for every walker (w, d)."""
    if local is None:
        return math.sqrt(step_size) * noise
    transposed = local.cholesky.transpose(1, 2)
    shaped = torch.linalg.solve_triangular(transposed, noise[:, :, None], upper=True)[:, :, 0]
    increment = math.sqrt(step_size) * shaped
    return increment if local.drift is None else increment + step_size * local.drift


def _apply_boundary(boundary: Boundary | None, proposal: Tensor) -> Tensor:
    """Map proposals through the user's chart boundary rule, checking the shape it returns."""
    if boundary is None:
        return proposal
    mapped = torch.as_tensor(boundary(proposal.clone()), dtype=proposal.dtype, device=proposal.device)
    if mapped.shape != proposal.shape:
        raise InvalidInput(
            f"boundary must return an array of shape {tuple(proposal.shape)}; got {tuple(mapped.shape)}."
        )
    return mapped


def _walk(
    metric: PullbackMetric,
    starts: Tensor,
    n_steps: int,
    step_size: float,
    kind: WalkKind,
    generator: torch.Generator,
    rcond: float,
    boundary: Boundary | None,
) -> tuple[Tensor, Tensor]:
    """Positions (w, n_steps + 1, d) float64 and held mask (w, n_steps) of all walkers, one batched step at a time."""
    z = starts
    # proposals beyond sqrt(max) of the decoder's dtype (a huge step size) overflow it: held like non-finite ones
    too_far = math.sqrt(torch.finfo(metric.dtype or torch.float64).max)
    local = _local(metric, z, kind, rcond) if kind.uses_metric else None
    stuck = None if local is not None else ~_decodes_finite(metric, z)  # euclidean: a start the decoder cannot take
    positions, held = [z], []
    for _ in range(n_steps):
        noise = torch.randn(z.shape, generator=generator, dtype=torch.float64).to(z.device)
        proposal = z + _increment(local, noise, step_size)
        stay = ~(torch.isfinite(proposal) & (proposal.abs() < too_far)).all(dim=1)
        if local is not None:
            stay = stay | local.singular
        else:
            stay = stay | stuck
        proposal = _apply_boundary(boundary, torch.where(stay[:, None], z, proposal))
        stay = stay | ~(torch.isfinite(proposal) & (proposal.abs() < too_far)).all(dim=1)
        proposal = torch.where(stay[:, None], z, proposal)
        if local is not None:
            new = _local(metric, proposal, kind, rcond)
            stay = stay | new.singular
            local = local.keep(new, ~stay)
        else:  # euclidean steps need no metric, but a proposal where the decoder gives NaN/inf is held the same way
            stay = stay | ~_decodes_finite(metric, proposal)
        z = torch.where(stay[:, None], z, proposal)
        positions.append(z)
        held.append(stay)
    return torch.stack(positions, dim=1), torch.stack(held, dim=1)


def _decodes_finite(metric: PullbackMetric, z: Tensor) -> Tensor:
    """Rows (w,) bool of points z (w, d) where the decoder's mean and std are finite (no gradients)."""
    dtype = metric.dtype or torch.float64
    with torch.no_grad():
        mean, std = metric.decoder(z.to(dtype=dtype, device=metric.device or z.device))
        finite = torch.isfinite(mean).flatten(1).all(dim=1)
        if std is not None:
            finite = finite & torch.isfinite(std).flatten(1).all(dim=1)
    return finite.to(z.device)


def _check_rcond(rcond: float | None, metric: PullbackMetric) -> float:
    """rcond in (0, 1), default RCOND_FACTOR * eps of the metric's dtype."""
    if rcond is None:
        return _default_rcond(metric)
    return check_float(rcond, "rcond", minimum=0.0, maximum=1.0, strict_minimum=True)


def decode_means(metric: Any, points: Any) -> np.ndarray:
    """Decoder means (..., D) float64 at latent points (..., d), batched by the metric's chunk size, no gradients."""
    metric = as_metric(metric, points)
    array = np.asarray(points, dtype=np.float64)
    flat = check_codes(array.reshape(-1, array.shape[-1]), "points", latent_dim=metric.latent_dim)
    device, dtype = metric.device, metric.dtype or torch.float64
    means = []
    with torch.no_grad():
        for start in range(0, len(flat), metric.chunk_size):
            z = torch.as_tensor(flat[start : start + metric.chunk_size], dtype=dtype, device=device)
            means.append(metric.decoder(z)[0].to(torch.float64).cpu().numpy())
    return np.concatenate(means).reshape(*array.shape[:-1], -1)


def random_walks(
    metric: Any,
    starts: Any,
    n_steps: int,
    step_size: float,
    kind: str = DEFAULT_WALK_KIND,
    seed: int = DEFAULT_SEED,
    decode: bool = False,
    rcond: float | None = None,
    boundary: Boundary | None = None,
) -> WalkResult:
    """Random walks in the latent space: w walkers for n_steps steps of size s of one kind.

    Parameters
    ----------
    metric : PullbackMetric or decoder
        The metric (a decoder is wrapped, lsg_graph.metric.as_metric).
    starts : array-like (w, d)
        Start points, one per walker.
    n_steps : int
        Steps per walker.
    step_size : float
        Step size s > 0, in latent units squared.
    kind : {"euclidean", "metric", "brownian"}, default "metric"
        Covariance s I, s M^-1, or s M^-1 plus the manifold drift (lsg_graph.registry.WALK_KINDS).
    seed : int, default 0
        Seed of the noise (same seed, same walks; kinds share the noise).
    decode : bool, default False
        Also return the decoder means at every point.
    rcond : float, optional
        Eigenvalue ratio below which M counts as singular (default 100 * eps of the metric's dtype); such steps are
        held and counted (module docstring).
    boundary : callable, optional
        Map applied to every proposal (w, d) tensor, e.g. to reflect a chart coordinate at its ends or wrap a
        periodic one; it must return equivalent chart points of the same shape.

    Returns
    -------
    WalkResult
        Trajectories (w, n_steps + 1, d), the step size, mean step length, held steps and optional decodings.
    """
    metric = as_metric(metric, starts)
    starts_array = check_codes(starts, "starts", latent_dim=metric.latent_dim)
    n_steps = check_positive_int(n_steps, "n_steps")
    step_size = check_float(step_size, "step_size", minimum=0.0, strict_minimum=True)
    kind_name = check_choice(kind, "walk kind", WALK_KINDS)
    seed = check_seed(seed)
    rcond = _check_rcond(rcond, metric)
    if boundary is not None and not callable(boundary):
        raise InvalidInput(f"boundary must be a callable mapping (w, d) tensors to (w, d) tensors; got {boundary!r}.")
    generator = torch.Generator().manual_seed(seed)
    device = metric.device or torch.device("cpu")
    starts_tensor = torch.as_tensor(starts_array, dtype=torch.float64, device=device)
    with _one_cpu_thread(device):
        positions, held = _walk(
            metric, starts_tensor, n_steps, step_size, WALK_KINDS[kind_name], generator, rcond, boundary
        )
    trajectories = positions.cpu().numpy()
    held_array = held.cpu().numpy()
    decoded = decode_means(metric, trajectories) if decode else None
    return WalkResult(trajectories, kind_name, step_size, seed, int(held_array.sum()), held_array, decoded)


# ----------------------------------------------------------------------------------------------------------------
# Matched step sizes
# ----------------------------------------------------------------------------------------------------------------


def expected_normal_norm(dim: int) -> float:
    """E||eps|| for eps ~ N(0, I_dim): sqrt(2) Gamma((dim + 1) / 2) / Gamma(dim / 2)."""
    return math.sqrt(2.0) * math.exp(math.lgamma((dim + 1) / 2) - math.lgamma(dim / 2))


def matched_step_sizes(
    metric: Any,
    starts: Any,
    target_mean_step: float,
    kinds: tuple[str, ...] = tuple(WALK_KINDS),
    n_steps: int = 20,
    n_rounds: int = 4,
    seed: int = DEFAULT_SEED,
    rcond: float | None = None,
    boundary: Boundary | None = None,
) -> dict[str, float]:
    """Step sizes s per kind so that walks from `starts` have mean latent step length `target_mean_step` (latent units).

    euclidean: exact, s = (target / E||eps||)^2. Other kinds: start from s = target^2 / mean tr(M^-1) at the starts,
    then n_rounds pilot walks of n_steps steps (seed `seed`) rescale s by (target / measured mean step)^2, since the
    noise part of a step scales with sqrt(s). Returns {kind: s}.
    """
    metric = as_metric(metric, starts)
    starts = check_codes(starts, "starts", latent_dim=metric.latent_dim)
    target = check_float(target_mean_step, "target_mean_step", minimum=0.0, strict_minimum=True)
    n_rounds = check_positive_int(n_rounds, "n_rounds")
    if isinstance(kinds, str):
        kinds = (kinds,)
    sizes = {}
    for kind in kinds:
        check_choice(kind, "walk kind", WALK_KINDS)
        if not WALK_KINDS[kind].uses_metric:
            sizes[kind] = (target / expected_normal_norm(metric.latent_dim)) ** 2
            continue
        traces = np.trace(step_covariance(metric, starts, 1.0, rcond=rcond), axis1=1, axis2=2)
        finite = traces[np.isfinite(traces)]
        step = target**2 / float(finite.mean()) if len(finite) else target**2
        for _ in range(n_rounds):
            walk = random_walks(metric, starts, n_steps, step, kind, seed, rcond=rcond, boundary=boundary)
            step *= (target / max(walk.mean_step_length, np.finfo(float).tiny)) ** 2
        sizes[kind] = step
    return sizes
