"""Damped quasi-Newton for F(x) = 0, batched over independent problems (rows), each its own step and line search.

The residual function returns F (m, D), optionally its Jacobian (m, D, D), which rows are finite, and auxiliary
data kept with the accepted point. Jacobians are refreshed when progress is slow and corrected by block Broyden
updates in between (shooting: one integration per trial instead of 2d + 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["damped_newton"]

MIN_STEP_FRACTION = 1.0 / 32.0  # Newton line search gives up below this step fraction (with a fresh Jacobian)
REFRESH_BELOW = 0.25  # a Broyden-updated Jacobian is recomputed when the line search falls below this fraction
SLOW_PROGRESS = 0.5  # ... or when an accepted step reduced ||F|| by less than this factor

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



damped_newton = _newton
