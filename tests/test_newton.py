"""The generic batched damped Newton solver on problems with known roots."""

from __future__ import annotations

import math

import torch

from lsg_graph.geodesics.newton import damped_newton


def square_minus(targets: torch.Tensor):
    """Residual F(x) = x^2 - c per row (1 unknown), exact Jacobian 2x; aux = x."""

    def residual(x: torch.Tensor, rows: torch.Tensor, with_jacobian: bool):
        value = x.square() - targets[rows, None]
        jacobian = (2.0 * x).unsqueeze(-1) if with_jacobian else None
        return value, jacobian, torch.isfinite(value).all(dim=1), x.clone()

    return residual


def test_newton_finds_square_roots_batched() -> None:
    """x^2 - c = 0 from x0 = 1 for c = 2, 9, 0.25: the positive roots to 1e-12, each row its own iterations."""
    targets = torch.tensor([2.0, 9.0, 0.25], dtype=torch.float64)
    state = damped_newton(square_minus(targets), torch.ones(3, 1, dtype=torch.float64),
                          torch.full((3,), 1e-13, dtype=torch.float64), 50, [(slice(0, 1), slice(0, 1))])
    assert bool(state.converged.all())
    torch.testing.assert_close(state.x[:, 0], targets.sqrt(), rtol=0, atol=1e-12)
    assert abs(float(state.x[0, 0]) - math.sqrt(2.0)) <= 1e-12
    assert len(set(state.n_iter.tolist())) > 1  # rows stop on their own


def test_newton_fails_without_a_root_and_stops() -> None:
    """x^2 + 1 = 0 has no real root: the row fails (stalled or out of iterations), the solvable row converges."""
    targets = torch.tensor([-1.0, 2.0], dtype=torch.float64)
    state = damped_newton(square_minus(targets), torch.ones(2, 1, dtype=torch.float64),
                          torch.full((2,), 1e-12, dtype=torch.float64), 30, [(slice(0, 1), slice(0, 1))])
    assert state.converged.tolist() == [False, True] and bool(state.failed[0])
