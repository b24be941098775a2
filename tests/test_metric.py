"""PullbackMetric against exact answers (analytic manifolds) and against autograd Jacobians (a small MLP)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from decoders import MLPDecoder

from lsg_graph.errors import DecoderError, InvalidInput
from lsg_graph.manifolds import MANIFOLDS, DevelopableSurface, LinearDecoder, SphereChart
from lsg_graph.metric import PullbackMetric

DTYPES = [torch.float64, torch.float32]
# Relative tolerance per dtype (absolute tolerance = RTOL * scale of the compared quantity, set per test).
RTOL = {torch.float64: 1e-10, torch.float32: 1e-4}
ATOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def assert_close(actual: torch.Tensor, expected, dtype: torch.dtype, scale: float = 1.0) -> None:
    """Compare within the module tolerances for `dtype` (atol scaled by `scale`)."""
    expected = torch.as_tensor(expected, dtype=actual.dtype, device=actual.device)
    torch.testing.assert_close(actual, expected, rtol=RTOL[dtype], atol=ATOL[dtype] * scale)


class NaNBeyondOne:
    """Deterministic decoder that returns NaN where z_0 > 1 (finite on the probe points in [-0.5, 0.5])."""

    latent_dim, output_dim = 2, 3

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        x = torch.cat([z, z[:, :1] ** 2], dim=1)
        return torch.where(z[:, :1] > 1, torch.nan, x), None


def reference_metric(decoder: MLPDecoder, z: torch.Tensor) -> torch.Tensor:
    """J^T J per point from torch.autograd.functional.jacobian of the stacked decoder (n, d, d)."""

    def stacked(point: torch.Tensor) -> torch.Tensor:
        return torch.cat(decoder(point[None]), dim=1)[0]

    jacobians = [torch.autograd.functional.jacobian(stacked, point) for point in z]
    return torch.stack([jacobian.T @ jacobian for jacobian in jacobians])


def points(manifold, n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Sample n points from an analytic manifold's domain as a tensor of `dtype`."""
    return torch.as_tensor(manifold.sample(n, seed=seed), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(MANIFOLDS))
def test_metric_tensor_matches_exact_metric(name: str, dtype: torch.dtype) -> None:
    manifold = MANIFOLDS[name]()
    z = points(manifold, 50, dtype)
    result = PullbackMetric(manifold).metric_tensor(z)
    assert result.shape == (50, 2, 2) and result.dtype == dtype
    assert_close(result, manifold.metric_tensor(z.double()), dtype, scale=10.0)


def test_metric_tensor_linear_is_a_transpose_a() -> None:
    matrix = np.random.default_rng(0).normal(size=(4, 3))
    z = torch.randn(7, 3, dtype=torch.float64)
    result = PullbackMetric(LinearDecoder(matrix)).metric_tensor(z)
    assert_close(result, np.tile(matrix.T @ matrix, (7, 1, 1)), torch.float64, scale=10.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_metric_tensor_matches_autograd_jacobian_on_mlp(dtype: torch.dtype) -> None:
    decoder = MLPDecoder().double()
    z = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = reference_metric(decoder, z)
    result = PullbackMetric(decoder.to(dtype)).metric_tensor(z)
    assert result.dtype == dtype
    assert_close(result, expected, dtype, scale=float(expected.abs().max()))
    assert torch.equal(result, result.transpose(1, 2))


@pytest.mark.parametrize("dtype", DTYPES)
def test_inner_and_norm_equal_quadratic_form(dtype: torch.dtype) -> None:
    decoder = MLPDecoder().to(dtype)
    generator = torch.Generator().manual_seed(2)
    z = torch.randn(20, 3, dtype=dtype, generator=generator)
    v = torch.randn(20, 3, dtype=dtype, generator=generator)
    metric = PullbackMetric(decoder)
    with torch.no_grad():
        tensors = metric.metric_tensor(z)
    expected = torch.einsum("ni,nij,nj->n", v, tensors, v)
    with torch.no_grad():
        assert_close(metric.inner(z, v), expected, dtype, scale=float(expected.max()))
        assert_close(metric.norm(z, v), expected.sqrt(), dtype, scale=float(expected.max()))


def test_deterministic_decoder_omits_sigma_term() -> None:
    decoder = MLPDecoder().double()
    z = torch.randn(5, 3, dtype=torch.float64)
    # A mean-only decoder (std None) gives J_mu^T J_mu alone.
    deterministic = PullbackMetric(_MeanOnly(decoder))
    jacobians = [torch.autograd.functional.jacobian(lambda p: decoder(p[None])[0][0], point) for point in z]
    expected = torch.stack([jac.T @ jac for jac in jacobians])
    assert deterministic.stacked(z).shape == (5, 5)
    assert_close(deterministic.metric_tensor(z), expected, torch.float64, scale=10.0)


class _MeanOnly(torch.nn.Module):
    """Wrap an MLPDecoder, returning (mean, None)."""

    def __init__(self, decoder: MLPDecoder) -> None:
        super().__init__()
        self.inner, self.latent_dim, self.output_dim = decoder, decoder.latent_dim, decoder.output_dim

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.inner(z)[0], None


@pytest.mark.parametrize("dtype", DTYPES)
def test_magnification_on_sphere_is_abs_sin_theta(dtype: torch.dtype) -> None:
    z = points(SphereChart(), 40, dtype)
    metric = PullbackMetric(SphereChart())
    assert_close(metric.magnification(z), torch.sin(z[:, 0]).abs(), dtype)
    assert_close(metric.log_magnification(z), torch.log(torch.sin(z[:, 0]).abs()), dtype)


def test_magnification_linear_and_singular_metrics() -> None:
    matrix = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 1.0]])
    z = torch.randn(4, 2, dtype=torch.float64)
    expected = math.sqrt(np.linalg.det(matrix.T @ matrix))
    assert_close(PullbackMetric(LinearDecoder(matrix)).magnification(z), [expected] * 4, torch.float64)
    for singular in (np.array([[1.0, 0.0], [2.0, 0.0]]), np.array([[1.0, 2.0]])):  # zero column; fewer outputs than d
        metric = PullbackMetric(LinearDecoder(singular))
        assert torch.equal(metric.magnification(z), torch.zeros(4, dtype=torch.float64))
        assert torch.equal(metric.log_magnification(z), torch.full((4,), -torch.inf, dtype=torch.float64))


def test_curve_length_of_great_circle_converges_to_angle() -> None:
    sphere = SphereChart()
    a, b = sphere.sample(5, seed=1), sphere.sample(5, seed=2)
    angle = sphere.distance(a, b)
    metric = PullbackMetric(sphere)
    errors = [np.abs(metric.curve_length(sphere.geodesic(a, b, n)).numpy() - angle).max() for n in (5, 20, 80, 320)]
    assert all(later < 0.1 * earlier for earlier, later in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 1e-5


@pytest.mark.parametrize("name", sorted(MANIFOLDS))
def test_curve_length_of_exact_geodesics_equals_distance(name: str) -> None:
    manifold = MANIFOLDS[name]()
    a, b = manifold.sample(10, seed=3), manifold.sample(10, seed=4)
    length = PullbackMetric(manifold).curve_length(manifold.geodesic(a, b, 400)).numpy()
    np.testing.assert_allclose(length, manifold.distance(a, b), rtol=1e-5)


def test_curve_energy_and_length_batched_and_differentiable() -> None:
    metric = PullbackMetric(MLPDecoder().double())
    curves = torch.randn(2, 3, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    length, energy = metric.curve_length(curves), metric.curve_energy(curves)
    assert length.shape == energy.shape == (2, 3)
    assert torch.all(energy >= length**2 * (1 - 1e-12))  # Cauchy-Schwarz
    single = metric.curve_length(curves[1, 2])
    assert_close(single, length[1, 2], torch.float64)
    # A straight, constant-speed curve under a linear decoder: energy = length^2 = ||A (b - a)||^2.
    linear = PullbackMetric(LinearDecoder())
    line = torch.as_tensor(LinearDecoder().geodesic(np.zeros((1, 2)), np.ones((1, 2)), 7))
    assert_close(linear.curve_energy(line), linear.curve_length(line) ** 2, torch.float64)
    curve = curves[0, 0].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(metric.curve_energy, (curve,))
    assert torch.autograd.gradcheck(metric.curve_length, (curve,))


def test_curve_length_zero_segment_has_finite_gradient() -> None:
    curve = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]], dtype=torch.float64, requires_grad=True)
    PullbackMetric(LinearDecoder()).curve_length(curve).backward()
    assert torch.isfinite(curve.grad).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_geodesic_acceleration_matches_christoffel_symbols(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(6)
    sphere_z = points(SphereChart(), 30, dtype)
    velocity = torch.randn(30, 2, dtype=dtype, generator=generator)
    theta, dtheta, dphi = sphere_z[:, 0], velocity[:, 0], velocity[:, 1]
    expected = torch.stack(
        [torch.sin(theta) * torch.cos(theta) * dphi**2, -2 * torch.cos(theta) / torch.sin(theta) * dtheta * dphi], 1
    )
    result = PullbackMetric(SphereChart()).geodesic_acceleration(sphere_z, velocity, ridge=0.0)
    assert_close(result, expected, dtype, scale=100.0)
    developable_z = points(DevelopableSurface(), 30, dtype)
    u, du = developable_z[:, 0], velocity[:, 0]
    expected = torch.stack([-u / (1 + u**2) * du**2, torch.zeros_like(u)], 1)
    result = PullbackMetric(DevelopableSurface()).geodesic_acceleration(developable_z, velocity, ridge=0.0)
    assert_close(result, expected, dtype, scale=100.0)
    linear = PullbackMetric(LinearDecoder()).geodesic_acceleration(points(LinearDecoder(), 30, dtype), velocity)
    assert torch.equal(linear, torch.zeros_like(linear))


def test_geodesic_acceleration_singular_metric_is_finite() -> None:
    metric = PullbackMetric(LinearDecoder(np.array([[1.0, 0.0], [2.0, 0.0]])))
    result = metric.geodesic_acceleration(torch.ones(3, 2, dtype=torch.float64), torch.ones(3, 2), ridge=0.0)
    assert torch.equal(result, torch.zeros(3, 2, dtype=torch.float64))


def test_inputs_are_not_mutated() -> None:
    metric = PullbackMetric(MLPDecoder().double())
    z = torch.randn(6, 3, dtype=torch.float64)
    v = torch.randn(6, 3, dtype=torch.float64)
    curve = torch.randn(2, 4, 3, dtype=torch.float64)
    copies = [t.clone() for t in (z, v, curve)]
    metric.metric_tensor(z), metric.inner(z, v), metric.norm(z, v), metric.magnification(z), metric.stacked(z)
    metric.geodesic_acceleration(z, v), metric.curve_length(curve), metric.curve_energy(curve)
    for original, copy in zip((z, v, curve), copies, strict=True):
        assert torch.equal(original, copy)


def test_chunking_gives_the_same_results() -> None:
    decoder = MLPDecoder().double()
    whole, chunked = PullbackMetric(decoder), PullbackMetric(decoder, chunk_size=4)
    generator = torch.Generator().manual_seed(7)
    z = torch.randn(11, 3, dtype=torch.float64, generator=generator)
    v = torch.randn(11, 3, dtype=torch.float64, generator=generator)
    curve = torch.randn(3, 5, 3, dtype=torch.float64, generator=generator)
    pairs = [
        (whole.metric_tensor(z), chunked.metric_tensor(z)),
        (whole.inner(z, v), chunked.inner(z, v)),
        (whole.log_magnification(z), chunked.log_magnification(z)),
        (whole.geodesic_acceleration(z, v), chunked.geodesic_acceleration(z, v)),
        (whole.curve_energy(curve), chunked.curve_energy(curve)),
        (whole.stacked(z), chunked.stacked(z)),
    ]
    for expected, result in pairs:  # equal up to rounding of BLAS kernels that depend on the batch size
        torch.testing.assert_close(result, expected, rtol=1e-13, atol=1e-14)


def test_non_finite_decoder_output_raises_decoder_error() -> None:
    metric = PullbackMetric(NaNBeyondOne())
    z = torch.tensor([[0.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    calls = (metric.metric_tensor, metric.log_magnification, metric.stacked, metric.magnification)
    for call in (*calls, lambda x: metric.inner(x, x), lambda x: metric.geodesic_acceleration(x, x)):
        with pytest.raises(DecoderError, match="non-finite"):
            call(z)
    with pytest.raises(DecoderError, match="non-finite"):
        metric.curve_length(z[None])
    assert torch.isfinite(metric.metric_tensor(z[:1])).all()


def test_bad_inputs_raise_invalid_input() -> None:
    metric = PullbackMetric(SphereChart())
    with pytest.raises(InvalidInput, match="NaN"):
        metric.inner(torch.tensor([[torch.nan, 0.0]]), torch.ones(1, 2))
    with pytest.raises(InvalidInput, match=r"\(5, 3\)"):
        metric.metric_tensor(torch.zeros(5, 3))
    with pytest.raises(InvalidInput, match="same shape"):
        metric.inner(torch.ones(2, 2), torch.ones(3, 2))
    with pytest.raises(InvalidInput, match="at least 2 points"):
        metric.curve_length(torch.ones(1, 2))
    with pytest.raises(InvalidInput, match="chunk_size"):
        PullbackMetric(SphereChart(), chunk_size=0)
    with pytest.raises(InvalidInput, match="ridge"):
        metric.geodesic_acceleration(torch.ones(1, 2), torch.ones(1, 2), ridge=-1.0)


def test_dtype_and_device_follow_the_decoder() -> None:
    metric = PullbackMetric(MLPDecoder())  # float32 parameters
    assert metric.metric_tensor(np.zeros((2, 3))).dtype == torch.float32
    assert metric.inner(torch.zeros(2, 3, dtype=torch.float64), np.ones((2, 3))).dtype == torch.float32
    free = PullbackMetric(SphereChart())  # no parameters: follows the input
    assert free.metric_tensor(np.full((2, 2), 1.0)).dtype == torch.float64
    assert free.metric_tensor(torch.ones(2, 2, dtype=torch.float32)).dtype == torch.float32
    assert free.metric_tensor(torch.ones(0, 2)).shape == (0, 2, 2)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    decoder = MLPDecoder().double()
    z = torch.randn(9, 3, dtype=torch.float64)
    v = torch.randn(9, 3, dtype=torch.float64)
    cpu = PullbackMetric(decoder)
    expected = (cpu.metric_tensor(z), cpu.inner(z, v), cpu.log_magnification(z), cpu.geodesic_acceleration(z, v))
    gpu = PullbackMetric(decoder.to("cuda"))
    result = (gpu.metric_tensor(z), gpu.inner(z, v), gpu.log_magnification(z), gpu.geodesic_acceleration(z, v))
    for exp, res in zip(expected, result, strict=True):
        assert res.device.type == "cuda"
        torch.testing.assert_close(res.cpu(), exp, rtol=1e-10, atol=1e-12)
    sphere = PullbackMetric(SphereChart())
    on_gpu = torch.as_tensor(SphereChart().sample(5), device="cuda")
    torch.testing.assert_close(sphere.magnification(on_gpu).cpu(), torch.sin(on_gpu[:, 0]).abs().cpu())
