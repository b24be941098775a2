"""Curve representations: Hermite sampling, spline velocities and quadrature lengths against exact values."""

from __future__ import annotations

import numpy as np
import torch

from lsg_graph.geodesics.curves import hermite_lengths, hermite_sample, polyline_sample, spline_velocities
from lsg_graph.manifolds import LinearDecoder
from lsg_graph.metric import PullbackMetric


def cubic(t: np.ndarray) -> np.ndarray:
    """A cubic curve (f, 2) and, below, its derivative."""
    return np.stack([1.0 + 2.0 * t - t**3, 0.5 * t**2 + t**3], axis=1)


def cubic_derivative(t: np.ndarray) -> np.ndarray:
    return np.stack([2.0 - 3.0 * t**2, t + 3.0 * t**2], axis=1)


def test_spline_through_nodes_of_a_cubic_reproduces_it() -> None:
    """Not-a-knot splines are exact for cubics: velocities at the nodes and samples between them."""
    nodes = np.linspace(0.0, 1.0, 9)
    points = cubic(nodes)
    velocities = spline_velocities(points)
    np.testing.assert_allclose(velocities, cubic_derivative(nodes), atol=1e-12)
    at = np.random.default_rng(0).uniform(0.0, 1.0, 50)
    positions, derivative = hermite_sample(points, velocities, at)
    np.testing.assert_allclose(positions, cubic(at), atol=1e-12)
    np.testing.assert_allclose(derivative, cubic_derivative(at), atol=1e-11)


def test_polyline_sample_interpolates_at_its_times() -> None:
    """Points at the given times come back, and the midpoint of the first segment lies between its ends."""
    points = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 2.0]])
    times = np.array([0.0, 1.0 / 3.0, 1.0])
    np.testing.assert_allclose(polyline_sample(points, times, times), points)
    np.testing.assert_allclose(polyline_sample(points, times, np.array([1.0 / 6.0])), [[0.5, 0.0]])


def test_hermite_length_of_a_straight_line_is_exact() -> None:
    """A linear decoder: the length of a straight Hermite curve with uneven speed is ||A (b - a)||."""
    linear = LinearDecoder()
    metric = PullbackMetric(linear)
    nodes = np.linspace(0.0, 1.0, 6)
    a, b = np.array([0.1, -0.3]), np.array([0.7, 0.4])
    s = nodes + 0.2 * nodes * (1 - nodes)  # a monotone reparametrisation
    points = a + s[:, None] * (b - a)
    velocities = (1 + 0.2 * (1 - 2 * nodes))[:, None] * (b - a)
    (length,) = hermite_lengths(metric, torch.as_tensor(points[None]), torch.as_tensor(velocities[None]))
    assert abs(length - float(linear.distance(a[None], b[None])[0])) <= 1e-12
