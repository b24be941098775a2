"""Random walks against exact answers: step covariance s M^-1 (linear decoder), the Brownian drift and its long-run
law on the sphere (uniform, which the drift-free metric walk misses), determinism, singular metrics, bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from decoders import MLPDecoder

from lsg_graph.errors import InvalidInput
from lsg_graph.manifolds import LinearDecoder, SphereChart
from lsg_graph.metric import PullbackMetric
from lsg_graph.walks import (
    DRIFT_METHODS,
    WALK_KINDS,
    brownian_drift,
    decode_means,
    expected_normal_norm,
    matched_step_sizes,
    random_walks,
    step_covariance,
)

# Statistical tolerances: N samples of a Gaussian give sample-covariance entries with relative standard error about
# sqrt(2 / N) and means with standard error 1 / sqrt(N) (whitened); the checks allow 5 standard errors.
COVARIANCE_WALKERS = 20_000
COVARIANCE_TOL = 5 * math.sqrt(2 / COVARIANCE_WALKERS)  # 0.05
MEAN_TOL = 5 / math.sqrt(COVARIANCE_WALKERS)  # 0.035

# Sphere: 2000 walkers, 300 steps of s = 0.01 (time 3; the slowest mode of the Brownian colatitude decays as e^-t).
# Under the uniform law cos(theta) ~ U(-1, 1): E cos^2 = 1/3, each of 10 histogram bins holds 0.1 (standard error
# 0.0067 per bin, 0.0067 for E cos^2). The drift-free metric walk tends to theta ~ U(0, pi): E cos^2 = 1/2 and the
# end bins hold arccos(0.8) / pi = 0.205.
SPHERE_WALKERS, SPHERE_STEPS, SPHERE_STEP = 2000, 300, 0.01
UNIFORM_BIN_TOL = 0.035
UNIFORM_MOMENT_TOL = 0.03


class CubicRadius:
    """g(z) = ||z||^2 z: the Jacobian ||z||^2 I + 2 z z^T vanishes at z = 0 only (M = 0 there, cond(M) = 9 elsewhere)."""

    latent_dim, output_dim = 2, 2

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        return (z**2).sum(dim=1, keepdim=True) * z, None


class FlatHalfPlane:
    """g(z) = (relu(z1)^2, z2): M = diag(4 relu(z1)^2, 1) is singular on the whole half plane z1 <= 0."""

    latent_dim, output_dim = 2, 2

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        return torch.cat([torch.relu(z[:, :1]) ** 2, z[:, 1:]], dim=1), None


def wrap_sphere(z: torch.Tensor) -> torch.Tensor:
    """Canonical chart point theta in [0, pi], phi in [0, 2 pi) of (theta, phi) rows.

    The embedding (sin th cos ph, sin th sin ph, cos th) is 2 pi periodic in both coordinates and maps (-th, ph) and
    (2 pi - th, ph) to the same point as (th, ph + pi): taking theta mod 2 pi, reflecting it into [0, pi] and then
    turning phi by pi is the identity on the sphere, so a walker crossing a pole continues on the other side.
    """
    theta = torch.remainder(z[:, 0], 2 * math.pi)
    flip = theta > math.pi
    theta = torch.where(flip, 2 * math.pi - theta, theta)
    phi = torch.remainder(z[:, 1] + torch.where(flip, math.pi, 0.0), 2 * math.pi)
    return torch.stack([theta, phi], dim=1)


@pytest.fixture(scope="module")
def sphere() -> PullbackMetric:
    return PullbackMetric(SphereChart())


@pytest.fixture(scope="module")
def linear() -> PullbackMetric:
    return PullbackMetric(LinearDecoder())


STARTS = np.array([[1.0, 0.5], [2.0, -1.0], [0.7, 2.5]])


# ------------------------------------------------------------------------------------------------ determinism, shapes


@pytest.mark.parametrize("kind", list(WALK_KINDS))
def test_same_seed_same_walks_other_seed_other_walks(sphere: PullbackMetric, kind: str) -> None:
    first = random_walks(sphere, STARTS, 10, 0.01, kind, seed=3)
    again = random_walks(sphere, STARTS, 10, 0.01, kind, seed=3)
    other = random_walks(sphere, STARTS, 10, 0.01, kind, seed=4)
    np.testing.assert_array_equal(first.trajectories, again.trajectories)
    assert not np.allclose(first.trajectories[:, 1:], other.trajectories[:, 1:])
    assert (first.seed, first.kind, first.step_size) == (3, kind, 0.01)


def test_shapes_decoded_means_and_inputs_untouched(sphere: PullbackMetric) -> None:
    starts = STARTS.copy()
    result = random_walks(sphere, starts, 7, 0.01, "brownian", decode=True)
    assert result.trajectories.shape == (3, 8, 2) and result.trajectories.dtype == np.float64
    assert result.held.shape == (3, 7) and result.held.dtype == bool
    assert result.decoded_means.shape == (3, 8, 3)
    assert (result.n_walkers, result.n_steps, result.n_singular) == (3, 7, 0)
    np.testing.assert_array_equal(result.trajectories[:, 0], STARTS)
    np.testing.assert_array_equal(starts, STARTS)
    np.testing.assert_allclose(result.decoded_means, SphereChart.to_sphere(result.trajectories), atol=1e-12)
    np.testing.assert_allclose(result.step_lengths(), np.linalg.norm(np.diff(result.trajectories, axis=1), axis=-1))
    assert random_walks(sphere, STARTS, 2, 0.01).decoded_means is None


def test_walks_with_a_float32_module_decoder() -> None:
    metric = PullbackMetric(MLPDecoder(latent_dim=2).float())
    result = random_walks(metric, np.zeros((4, 2)), 5, 0.01, "brownian", decode=True)
    assert np.isfinite(result.trajectories).all() and result.n_singular == 0
    np.testing.assert_allclose(result.decoded_means, decode_means(metric, result.trajectories))


# ------------------------------------------------------------------------------------------------ step covariance


def test_metric_step_covariance_is_s_times_inverse_metric(linear: PullbackMetric) -> None:
    """One step from one point: whitened by M^(1/2) / sqrt(s) the steps must have mean 0 and covariance I."""
    step, start = 0.04, np.array([[0.3, -0.2]])
    result = random_walks(linear, np.repeat(start, COVARIANCE_WALKERS, axis=0), 1, step, "metric", seed=5)
    steps = result.trajectories[:, 1] - result.trajectories[:, 0]
    matrix = LinearDecoder().matrix
    eigenvalues, vectors = np.linalg.eigh(matrix.T @ matrix)
    root = vectors @ np.diag(np.sqrt(eigenvalues)) @ vectors.T  # M^(1/2)
    whitened = steps @ root / math.sqrt(step)
    np.testing.assert_allclose(np.cov(whitened.T), np.eye(2), atol=COVARIANCE_TOL)
    np.testing.assert_allclose(whitened.mean(axis=0), 0.0, atol=MEAN_TOL)
    expected = step * np.linalg.inv(matrix.T @ matrix)
    np.testing.assert_allclose(step_covariance(linear, start, step), expected[None], rtol=1e-12)


def test_euclidean_step_covariance_is_s_identity(linear: PullbackMetric) -> None:
    step = 0.04
    result = random_walks(linear, np.zeros((COVARIANCE_WALKERS, 2)), 1, step, "euclidean", seed=5)
    steps = result.trajectories[:, 1] / math.sqrt(step)
    np.testing.assert_allclose(np.cov(steps.T), np.eye(2), atol=COVARIANCE_TOL)
    np.testing.assert_allclose(step_covariance(linear, np.zeros((1, 2)), step, "euclidean"), step * np.eye(2)[None])


def test_linear_decoder_has_no_drift_so_brownian_equals_metric(linear: PullbackMetric) -> None:
    np.testing.assert_allclose(brownian_drift(linear, STARTS), 0.0, atol=1e-12)
    brownian = random_walks(linear, STARTS, 20, 0.05, "brownian", seed=2)
    metric = random_walks(linear, STARTS, 20, 0.05, "metric", seed=2)
    np.testing.assert_allclose(brownian.trajectories, metric.trajectories, atol=1e-12)


# ------------------------------------------------------------------------------------------------ the drift


@pytest.mark.parametrize("method", list(DRIFT_METHODS))
def test_sphere_drift_is_half_cot_theta(sphere: PullbackMetric, method: str) -> None:
    """M = diag(1, sin^2 th): b^th = 1/2 (1/sin th) d_th (sin th) = cot(th) / 2, b^ph = 0."""
    expected = np.stack([0.5 / np.tan(STARTS[:, 0]), np.zeros(3)], axis=1)
    np.testing.assert_allclose(brownian_drift(sphere, STARTS, method), expected, rtol=1e-10, atol=1e-12)


def test_drift_methods_agree_on_a_stochastic_mlp() -> None:
    """Divergence form by autodiff of sqrt(det M) M^-1 == 1/2 div(M^-1) + 1/2 M^-1 grad log sqrt(det M)."""
    metric = PullbackMetric(MLPDecoder(latent_dim=3).double())
    points = np.random.default_rng(0).normal(size=(6, 3))
    divergence = brownian_drift(metric, points, "divergence")
    expanded = brownian_drift(metric, points, "expanded")
    assert np.abs(expanded).max() > 1e-3
    np.testing.assert_allclose(expanded, divergence, rtol=1e-8, atol=1e-10)


def test_drift_is_stationary_for_the_volume_density(sphere: PullbackMetric) -> None:
    """Fokker-Planck: -d_i(b^i p) + 1/2 d_i d_j (M^ij p) = 0 for p = sqrt(det M) = sin th (finite differences in th)."""
    theta, h = np.linspace(0.4, 2.7, 9), 1e-3

    def flux(th: np.ndarray) -> np.ndarray:  # b^th p - 1/2 d_th (M^thth p): the probability current, must vanish
        points = np.stack([th, np.zeros_like(th)], axis=1)
        drift = brownian_drift(sphere, points)[:, 0]
        return drift * np.sin(th) - 0.5 * (np.sin(th + h) - np.sin(th - h)) / (2 * h)

    np.testing.assert_allclose(flux(theta), 0.0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ long-run law


def _cos_theta_statistics(metric: PullbackMetric, kind: str) -> tuple[np.ndarray, float, int]:
    """Histogram (10 bins on [-1, 1]) and E cos^2 of cos(theta) at the end of the sphere walks, and n_singular."""
    starts = np.tile([[1.0, 0.5]], (SPHERE_WALKERS, 1))
    result = random_walks(metric, starts, SPHERE_STEPS, SPHERE_STEP, kind, seed=1, boundary=wrap_sphere)
    assert np.isfinite(result.trajectories).all()
    assert (result.trajectories[:, 1:, 0] >= 0).all() and (result.trajectories[:, 1:, 0] <= math.pi).all()
    cosine = np.cos(result.trajectories[:, -1, 0])
    histogram = np.histogram(cosine, bins=10, range=(-1.0, 1.0))[0] / len(cosine)
    return histogram, float((cosine**2).mean()), result.n_singular


def test_brownian_walk_flattens_cos_theta_and_the_metric_walk_does_not(sphere: PullbackMetric) -> None:
    """Brownian motion on the sphere tends to the uniform law (cos theta ~ U(-1, 1)); without the drift it does not."""
    histogram, second_moment, _ = _cos_theta_statistics(sphere, "brownian")
    assert np.abs(histogram - 0.1).max() < UNIFORM_BIN_TOL, histogram
    assert abs(second_moment - 1 / 3) < UNIFORM_MOMENT_TOL, second_moment
    histogram, second_moment, n_singular = _cos_theta_statistics(sphere, "metric")
    assert np.abs(histogram - 0.1).max() > 2 * UNIFORM_BIN_TOL, histogram
    assert second_moment > 1 / 3 + 3 * UNIFORM_MOMENT_TOL, second_moment
    assert n_singular <= 5  # landing within ~1e-7 of a pole (sin^2 theta below rcond) is held; it is rare


# ------------------------------------------------------------------------------------------------ matched step sizes


def test_matched_step_sizes_give_the_target_mean_step(sphere: PullbackMetric) -> None:
    starts = SphereChart().sample(50, seed=0)
    sizes = matched_step_sizes(sphere, starts, 0.05, n_steps=20, seed=0)
    assert set(sizes) == set(WALK_KINDS)
    assert sizes["euclidean"] == pytest.approx((0.05 / expected_normal_norm(2)) ** 2)
    for kind, step in sizes.items():
        measured = random_walks(sphere, starts, 20, step, kind, seed=0).mean_step_length
        assert measured == pytest.approx(0.05, rel=0.03), kind
    assert expected_normal_norm(1) == pytest.approx(math.sqrt(2 / math.pi))


# ------------------------------------------------------------------------------------------------ singular metrics


@pytest.mark.parametrize("kind", ["metric", "brownian"])
def test_walkers_on_a_singular_point_are_held_and_counted(kind: str) -> None:
    starts = np.array([[0.0, 0.0], [0.0, 0.0], [0.8, 0.3], [-0.5, 0.9]])
    result = random_walks(CubicRadius(), starts, 15, 0.001, kind, seed=0)
    assert result.n_singular == 2 * 15 == int(result.held.sum())
    assert result.held[:2].all() and not result.held[2:].any()
    np.testing.assert_array_equal(result.trajectories[:2], 0.0)
    assert np.isfinite(result.trajectories).all()
    assert (np.linalg.norm(np.diff(result.trajectories[2:], axis=1), axis=-1) > 0).all()


@pytest.mark.parametrize("kind", ["metric", "brownian"])
def test_proposals_into_a_singular_region_are_rejected(kind: str) -> None:
    result = random_walks(FlatHalfPlane(), np.tile([[0.05, 0.0]], (50, 1)), 30, 0.01, kind, seed=0)
    assert result.n_singular == int(result.held.sum()) > 0
    assert (result.trajectories[..., 0] > 0).all()  # never entered z1 <= 0, where M is singular
    moves = np.diff(result.trajectories, axis=1)
    np.testing.assert_array_equal(moves[result.held], 0.0)
    assert (np.abs(moves[~result.held]).sum(axis=-1) > 0).all()


def test_step_covariance_and_drift_are_nan_where_singular() -> None:
    points = np.array([[0.0, 0.0], [0.5, 0.5]])
    covariance = step_covariance(CubicRadius(), points, 0.1)
    assert np.isnan(covariance[0]).all() and np.isfinite(covariance[1]).all()
    for method in DRIFT_METHODS:
        drift = brownian_drift(CubicRadius(), points, method)
        assert np.isnan(drift[0]).all() and np.isfinite(drift[1]).all()


# ------------------------------------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    "arguments, match",
    [
        ({"n_steps": 0}, "'n_steps' parameter must be an int >= 1; got 0"),
        ({"n_steps": 2.5}, "'n_steps' parameter must be an int"),
        ({"step_size": 0.0}, "'step_size' parameter must be > 0.0; got 0.0"),
        ({"step_size": -1.0}, "'step_size' parameter must be > 0.0"),
        ({"step_size": float("nan")}, "'step_size' parameter must be finite; got nan"),
        ({"step_size": float("inf")}, "'step_size' parameter must be finite"),
        ({"kind": "levy"}, "Unknown walk kind 'levy'; expected one of: 'euclidean', 'metric', 'brownian'"),
        ({"starts": np.zeros((3, 3))}, "starts have dimension 3 but the decoder expects latent dimension 2"),
        ({"starts": np.zeros(2)}, "starts must be a 2-D array"),
        ({"starts": np.array([[0.1, np.nan]])}, "starts contains NaN or inf"),
        ({"seed": -1}, "'seed' parameter must be an int >= 0"),
        ({"rcond": 0.0}, "'rcond' parameter must be > 0.0"),
        ({"boundary": 3}, "boundary must be a callable"),
        ({"boundary": lambda z: z[:, :1]}, "boundary must return an array of shape"),
    ],
)
def test_bad_inputs_raise_invalid_input(sphere: PullbackMetric, arguments: dict, match: str) -> None:
    call = {"starts": STARTS, "n_steps": 3, "step_size": 0.01, "kind": "metric"} | arguments
    with pytest.raises(InvalidInput, match=match.replace("(", r"\(").replace(")", r"\)")):
        random_walks(sphere, **call)


def test_bad_drift_and_matching_arguments(sphere: PullbackMetric) -> None:
    with pytest.raises(InvalidInput, match="Unknown drift method 'exact'; expected one of: 'expanded', 'divergence'"):
        brownian_drift(sphere, STARTS, "exact")
    with pytest.raises(InvalidInput, match="'target_mean_step' parameter must be > 0.0"):
        matched_step_sizes(sphere, STARTS, 0.0)
    with pytest.raises(InvalidInput, match="Unknown walk kind 'jump'"):
        matched_step_sizes(sphere, STARTS, 0.1, kinds=("metric", "jump"))
