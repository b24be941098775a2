"""Levenberg-Marquardt on the output-space energy: the block-tridiagonal solver and geodesics with known lengths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lsg_graph.geodesics.curves import hermite_lengths, spline_velocities
from lsg_graph.geodesics.gn import (
    BANDED_MAX_DIM,
    MIN_TIME_STEP,
    block_tridiagonal_solve,
    equal_spacing,
    levenberg_marquardt,
    respaced,
    upsample,
)
from lsg_graph.manifolds import LinearDecoder, SphereChart
from lsg_graph.metric import PullbackMetric


@pytest.mark.parametrize("d", [3, 6])  # 3: one banded LAPACK solve; 6: the batched block recursion
def test_block_tridiagonal_solve_matches_a_dense_solve(d: int) -> None:
    """Random SPD block-tridiagonal systems (4 of them, 5 blocks of d x d) against torch.linalg.solve."""
    assert (d <= BANDED_MAX_DIM) == (d == 3)
    generator = torch.Generator().manual_seed(0)
    n, k = 4, 5
    dense = torch.zeros(n, k * d, k * d, dtype=torch.float64)
    for i in range(k):
        for j in (i, i + 1):
            if j < k:
                block = torch.randn(n, d, d, dtype=torch.float64, generator=generator)
                dense[:, i * d : (i + 1) * d, j * d : (j + 1) * d] += block
                if j != i:
                    dense[:, j * d : (j + 1) * d, i * d : (i + 1) * d] += block.transpose(1, 2)
    dense = dense + dense.transpose(1, 2)  # symmetric, block tridiagonal
    dense = dense + 4.0 * k * torch.eye(k * d, dtype=torch.float64)  # positive definite
    diagonal = torch.stack([dense[:, i * d : (i + 1) * d, i * d : (i + 1) * d] for i in range(k)], dim=1)
    upper = torch.stack([dense[:, i * d : (i + 1) * d, (i + 1) * d : (i + 2) * d] for i in range(k - 1)], dim=1)
    rhs = torch.randn(n, k, d, dtype=torch.float64, generator=generator)
    x, ok = block_tridiagonal_solve(diagonal, upper, rhs)
    expected = torch.linalg.solve(dense, rhs.reshape(n, k * d, 1)).reshape(n, k, d)
    assert bool(ok.all())
    torch.testing.assert_close(x, expected, rtol=1e-10, atol=1e-12)
    diagonal[1, 2] = -diagonal[1, 2]  # not positive definite: flagged, others unaffected
    x, ok = block_tridiagonal_solve(diagonal, upper, rhs)
    assert ok.tolist() == [True, False, True, True]
    torch.testing.assert_close(x[ok], expected[ok], rtol=1e-10, atol=1e-12)


def straight(a: np.ndarray, b: np.ndarray, count: int, bend: float = 0.0) -> torch.Tensor:
    """Curves (n, count, d) from a to b at uneven times, bent sideways by `bend`."""
    t = np.linspace(0.0, 1.0, count)
    s = t + 0.3 * t * (1 - t)
    normal = np.stack([-(b - a)[:, 1], (b - a)[:, 0]], axis=1)
    curve = a[:, None] + s[None, :, None] * (b - a)[:, None] + bend * (t * (1 - t))[None, :, None] * normal[:, None]
    return torch.as_tensor(curve)


def test_linear_decoder_gives_equally_spaced_straight_nodes() -> None:
    """x = A z: the discrete geodesic is the straight segment at equal steps; the energy is quadratic, so a few
    (damped) Gauss-Newton steps solve it. The decrement tolerance is on the energy: nodes to about its root."""
    metric = PullbackMetric(LinearDecoder())
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-1, 1, (5, 2)), rng.uniform(-1, 1, (5, 2))
    state = levenberg_marquardt(metric, straight(a, b, 17, bend=0.4), tol=1e-15, max_iter=20)
    t = np.linspace(0.0, 1.0, 17)[None, :, None]
    assert bool(state.converged.all()) and int(state.n_iter.max()) <= 6
    np.testing.assert_allclose(state.curves.numpy(), a[:, None] + t * (b - a)[:, None], atol=1e-7)


def test_sphere_lengths_match_great_circle_distances() -> None:
    """From bent, unevenly timed curves: converged, spline lengths within 1e-8 of the great-circle angles."""
    sphere = SphereChart()
    metric = PullbackMetric(sphere)
    a, b = sphere.sample(20, seed=1), sphere.sample(20, seed=2)
    state = levenberg_marquardt(metric, straight(a, b, 33, bend=0.2), tol=1e-12, max_iter=100)
    assert bool(state.converged.all()) and not bool(state.failed.any())
    velocities = torch.as_tensor(spline_velocities(state.curves.numpy()))
    lengths = np.array(hermite_lengths(metric, state.curves, velocities))
    exact = sphere.distance(a, b)
    np.testing.assert_allclose(lengths, exact, rtol=1e-8)
    assert np.all(np.sqrt(state.energy.numpy()) <= exact * (1 + 1e-12))  # the chord energy is a lower bound
    finer = levenberg_marquardt(metric, upsample(state.curves, 64), tol=1e-12, max_iter=100)
    assert bool(finer.converged.all()) and int(finer.n_iter.max()) <= 5  # warm start from the spline


class HalfPlaneNaN:
    """A flat plane, NaN where z_0 > 0.5."""

    latent_dim, output_dim = 2, 2

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        return torch.where(z[:, :1] > 0.5, torch.nan, z), None


def test_non_finite_start_fails_only_its_own_pair() -> None:
    """A start curve through the NaN region fails; the other pair converges to its straight segment."""
    metric = PullbackMetric(HalfPlaneNaN())
    a = np.array([[-1.0, 0.0], [-1.0, -1.0]])
    b = np.array([[1.0, 0.0], [0.0, 1.0]])
    state = levenberg_marquardt(metric, straight(a, b, 9), tol=1e-12, max_iter=20)
    assert state.failed.tolist() == [True, False] and state.converged.tolist() == [False, True]


def test_chunked_solve_equals_one_call(monkeypatch) -> None:
    """solve_in_chunks with a tiny block budget (one pair per call) gives the same curves as one batched call."""
    import lsg_graph.geodesics.gn as gn

    sphere = SphereChart()
    metric = PullbackMetric(sphere)
    start = straight(sphere.sample(3, seed=1), sphere.sample(3, seed=2), 9, bend=0.2)
    whole = gn.levenberg_marquardt(metric, start, tol=1e-12, max_iter=50)
    monkeypatch.setattr(gn, "BLOCK_ELEMENTS", 1)
    chunked = gn.solve_in_chunks(metric, start, tol=1e-12, max_iter=50)
    torch.testing.assert_close(chunked.curves, whole.curves, rtol=0, atol=1e-12)
    assert torch.equal(chunked.n_iter, whole.n_iter) and torch.equal(chunked.converged, whole.converged)


def test_anderson_extrapolation_solves_a_linear_fixed_point_iteration() -> None:
    """For x -> A x + c (steps s = (A - I) x + c), type-II Anderson with memory >= dim(x) lands on the fixed point
    (I - A)^-1 c exactly, whatever the points; with less memory it still beats the plain step."""
    from lsg_graph.geodesics.gn import _History

    rng = np.random.default_rng(3)
    width = 3
    a = np.diag([0.9, 0.5, -0.3]) @ np.eye(width)
    c = rng.normal(size=width)
    fixed = np.linalg.solve(np.eye(width) - a, c)
    history = _History(1, width + 1, width, torch.zeros(1, dtype=torch.float64))
    x = rng.normal(size=width)
    for _ in range(width + 1):
        history.moved[:] = True
        step = (a - np.eye(width)) @ x + c
        history.record(torch.tensor([0]), torch.as_tensor(x[None]), torch.as_tensor(step[None]))
        x = x + step
    np.testing.assert_allclose(history.extrapolate(torch.tensor([0]))[0].numpy(), fixed, atol=1e-8)
    short = _History(1, 2, width, torch.zeros(1, dtype=torch.float64))
    for point in (rng.normal(size=width), rng.normal(size=width)):
        short.moved[:] = True
        short.record(torch.tensor([0]), torch.as_tensor(point[None]), torch.as_tensor(((a - np.eye(width)) @ point + c)[None]))
    plain = point + (a - np.eye(width)) @ point + c
    extrapolated = short.extrapolate(torch.tensor([0]))[0].numpy()
    assert np.linalg.norm(extrapolated - fixed) < np.linalg.norm(plain - fixed)


def test_history_replaces_the_last_entry_until_the_point_moves() -> None:
    """A rejected trial (the point did not move) overwrites the last step; a full history drops its oldest."""
    from lsg_graph.geodesics.gn import _History

    history = _History(2, 2, 1, torch.zeros(1, dtype=torch.float64))
    rows = torch.tensor([0, 1])
    record = lambda x, s: history.record(rows, torch.tensor([[x], [x]], dtype=torch.float64), torch.tensor([[s], [s]], dtype=torch.float64))  # noqa: E731
    history.moved[:] = True
    record(1.0, 0.5)
    record(1.0, 0.25)  # same point, other damping
    assert history.count.tolist() == [1, 1] and history.steps[0, 0, 0] == 0.25
    for x in (2.0, 3.0):
        history.moved[:] = True
        record(x, x / 10)
    assert history.count.tolist() == [2, 2] and history.points[0, :, 0].tolist() == [2.0, 3.0]


@pytest.mark.parametrize("memory", [0, 3])
def test_anderson_memory_reaches_the_same_discrete_geodesic_with_fewer_jacobians(memory: int) -> None:
    """On the sphere chart both variants converge to the same nodes (the minimiser does not depend on the steps);
    the extrapolation needs fewer Jacobian evaluations in total (counted, not timed)."""
    sphere = SphereChart()
    metric = PullbackMetric(sphere)
    a, b = sphere.sample(12, seed=4), sphere.sample(12, seed=5)
    start = straight(a, b, 33, bend=0.3)
    plain = levenberg_marquardt(metric, start, tol=1e-13, max_iter=200, memory=0)
    state = levenberg_marquardt(metric, start, tol=1e-13, max_iter=200, memory=memory)
    assert bool(state.converged.all())
    np.testing.assert_allclose(state.energy.numpy(), plain.energy.numpy(), rtol=1e-10)
    np.testing.assert_allclose(state.curves.numpy(), plain.curves.numpy(), atol=1e-5)
    if memory:
        assert int(state.n_jacobians.sum()) < int(plain.n_jacobians.sum())


def test_float32_jacobians_of_a_float64_vae_reach_the_same_discrete_geodesic(tiny_vae, digits) -> None:
    """A float64 VAE decoder: Jacobians from the float32 copy are float32 and within float32 rounding of the float64
    ones; Levenberg-Marquardt with them follows the float64 solver to the same discrete geodesics (values and the
    products of the normal equations stay float64). Decoders without the fused pass keep their own dtype."""
    import copy

    from lsg_graph.geodesics.gn import _Decoded
    from lsg_graph.model import encode_codes

    decoder = copy.deepcopy(tiny_vae.decoder("rbf")).double()
    metric = PullbackMetric(decoder)
    codes = torch.as_tensor(encode_codes(tiny_vae, digits[:40]), dtype=torch.float64)
    fast, exact = _Decoded(metric, float32_jacobians=True), _Decoded(metric)
    assert fast.jacobian_dtype == torch.float32 and exact.jacobian_dtype == torch.float64
    got, want = fast.jacobians(codes), exact.jacobians(codes)
    assert got.dtype == torch.float32
    assert float((got.double() - want).norm() / want.norm()) < 1e-5
    assert _Decoded(PullbackMetric(SphereChart()), float32_jacobians=True).jacobian_dtype == torch.float64

    start = straight(codes[:8].numpy(), codes[8:16].numpy(), 17, bend=0.1)
    mixed = levenberg_marquardt(metric, start, tol=1e-5, max_iter=100, float32_jacobians=True)
    full = levenberg_marquardt(metric, start, tol=1e-5, max_iter=100)  # the same steps with float64 Jacobians
    assert bool(mixed.converged.all()) and bool(full.converged.all())
    assert mixed.curves.dtype == torch.float64
    np.testing.assert_allclose(mixed.energy.numpy(), full.energy.numpy(), rtol=1e-5)
    np.testing.assert_allclose(mixed.curves.numpy(), full.curves.numpy(), atol=1e-3)
    tight = levenberg_marquardt(metric, start, tol=1e-9, max_iter=30, float32_jacobians=True)  # below float32's floor
    assert torch.equal(tight.curves, levenberg_marquardt(metric, start, tol=1e-9, max_iter=30).curves)


def test_timed_nodes_of_a_linear_decoder_sit_at_their_times() -> None:
    """x = A z with node times t_i: the discrete geodesic puts node i at a + t_i (b - a) (energy sum |dx|^2 / dt)."""
    metric = PullbackMetric(LinearDecoder())
    rng = np.random.default_rng(3)
    a, b = rng.uniform(-1, 1, (4, 2)), rng.uniform(-1, 1, (4, 2))
    times = np.sort(rng.uniform(0, 1, (4, 11)), axis=1)
    times[:, 0], times[:, -1] = 0.0, 1.0
    state = levenberg_marquardt(
        metric, straight(a, b, 11, bend=0.3), tol=1e-15, max_iter=30, times=torch.as_tensor(times)
    )
    assert bool(state.converged.all())
    expected = a[:, None] + times[:, :, None] * (b - a)[:, None]
    np.testing.assert_allclose(state.curves.numpy(), expected, atol=1e-7)
    equal = levenberg_marquardt(metric, straight(a, b, 11, bend=0.3), tol=1e-15, max_iter=30)
    same = levenberg_marquardt(
        metric, straight(a, b, 11, bend=0.3), tol=1e-15, max_iter=30,
        times=torch.linspace(0, 1, 11, dtype=torch.float64).expand(4, -1),
    )
    torch.testing.assert_close(same.curves, equal.curves, rtol=0, atol=1e-14)  # equal times are the default


def test_equal_spacing_places_nodes_by_latent_and_times_by_output_arc_length() -> None:
    """Nodes equally spaced along the polyline in latent arc length; times the output chord-length fractions."""
    curve = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 3.0]]], dtype=torch.float64)  # latent lengths 1 and 3
    values = torch.tensor([[[0.0], [3.0], [4.0]]], dtype=torch.float64)  # output lengths 3 and 1
    nodes, times = equal_spacing(curve, values, 4, smooth=False)
    np.testing.assert_allclose(nodes[0].numpy(), [[0, 0], [1, 0], [1, 1], [1, 2], [1, 3]], atol=1e-12)
    np.testing.assert_allclose(times[0].numpy(), [0, 0.75, 0.75 + 1 / 12, 0.75 + 2 / 12, 1], atol=1e-12)
    flat = torch.tensor([[[0.0], [0.0], [0.0]]], dtype=torch.float64)  # no output length: equal times
    _, times = equal_spacing(curve, flat, 4, smooth=False)
    np.testing.assert_allclose(times[0].numpy(), np.linspace(0, 1, 5), atol=1e-12)
    stuck = torch.tensor([[[0.0], [1.0], [1.0]]], dtype=torch.float64)  # the second half has no output length
    _, times = equal_spacing(curve, stuck, 4, smooth=False)
    assert float(torch.diff(times[0]).min()) >= MIN_TIME_STEP / 4 / (1 + MIN_TIME_STEP) - 1e-15


def test_latent_spacing_resolves_a_strongly_varying_chart() -> None:
    """WarpedPlane (latent speed varies 45x along its geodesics), one level of 16 segments from the straight
    segment: latent spacing gets the exact distance to 1e-6 (measured 2e-8 to 1e-7), at least 100x closer than equal
    times (measured 2e-5 to 7e-5)."""
    from lsg_graph.geodesics.energy import _gauss_newton
    from lsg_graph.geodesics.problem import RefineOptions, _Problem
    from tests.decoders import WarpedPlane

    plane = WarpedPlane()
    metric = PullbackMetric(plane)
    a = np.array([[-1.5, 0.0], [-1.4, 1.0], [-1.2, -0.5]])
    b = np.array([[1.5, 1.0], [1.3, -1.0], [1.4, 0.8]])
    exact = plane.distance(a, b)
    from lsg_graph.graph.weights import edge_lengths

    segment = edge_lengths(metric, a, b)  # the start: the straight segment as a one-edge path
    problems = [_Problem(np.stack([p, q]), np.array([e]), e, None, None) for p, q, e in zip(a, b, segment)]
    errors = {}
    for spacing in ("latent", "equal"):
        options = RefineOptions(gn_segments=16, gn_max_segments=16, gn_spacing=spacing, gn_tol=1e-10)
        lengths = np.array([candidate.length for candidate in _gauss_newton(metric, problems, options)])
        errors[spacing] = (lengths - exact) / exact
    assert np.all(errors["latent"] >= -1e-9) and np.all(errors["equal"] >= -1e-9)  # actual curves: never shorter
    assert errors["latent"].max() <= 1e-6
    assert np.all(errors["latent"] * 100 <= errors["equal"])


def test_respaced_decodes_the_nodes() -> None:
    """respaced = equal_spacing with the decoder's values (here the identity: output = latent arc length)."""
    metric = PullbackMetric(LinearDecoder.identity(2))
    curve = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 3.0]]], dtype=torch.float64)
    nodes, times = respaced(metric, curve, 4, smooth=False)
    np.testing.assert_allclose(times[0].numpy(), np.linspace(0, 1, 5), atol=1e-12)
    np.testing.assert_allclose(nodes[0].numpy(), [[0, 0], [1, 0], [1, 1], [1, 2], [1, 3]], atol=1e-12)
