"""Analytic decoders with exact metrics, distances and geodesics: the truth that tests and benchmarks compare to.

Each decoder is a plain callable (no nn.Module, no parameters) z (n, d) -> (embedding (n, D), None) that computes in
the input's dtype and device. Each also offers the exact `metric_tensor(z)`, the exact geodesic `distance(a, b)`, the
exact `geodesic(a, b, n_points)` and `sample(n, seed)` drawing points from a domain (stated in `domain`) that is
geodesically convex in the chart, so the shortest path between two sampled points never leaves it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from lsg_graph._validation import check_array, check_int, check_positive_int, check_seed
from lsg_graph.errors import InvalidInput
from lsg_graph.registry import DEFAULT_SEED


class AnalyticDecoder:
    """Base class: a deterministic decoder with exact geometry; subclasses define the embedding and the truth."""

    latent_dim: int
    output_dim: int
    domain: str

    def __call__(self, z: Tensor) -> tuple[Tensor, None]:
        """Return the embedding (n, output_dim) of latent points z (n, latent_dim), and None (no std)."""
        return self.embed(z), None

    def embed(self, z: Tensor) -> Tensor:
        """Embedding (n, output_dim) in z's dtype and device."""
        raise NotImplementedError

    def _metric(self, z: Tensor) -> Tensor:
        """Exact metric tensors (n, d, d) in z's dtype and device."""
        raise NotImplementedError

    def metric_tensor(self, z: Any) -> Any:
        """Return the exact metric tensors (n, d, d): a tensor for a tensor input, else a float64 numpy array."""
        if isinstance(z, Tensor):
            return self._metric(z)
        points = check_array(z, "z", ndim=2, n_columns=self.latent_dim)
        return self._metric(torch.from_numpy(points)).numpy()

    def distance(self, a: Any, b: Any) -> np.ndarray:
        """Return the exact geodesic distances (n,) between rows of a (n, d) and b (n, d), float64."""
        a, b = self._pair(a, b)
        return self._distance(a, b)

    def _distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Exact distances (n,) for validated float64 arrays."""
        raise NotImplementedError

    def geodesic(self, a: Any, b: Any, n_points: int = 100) -> np.ndarray:
        """Return the exact constant-speed geodesics from a (n, d) to b (n, d) as (n, n_points, d) float64."""
        a, b = self._pair(a, b)
        n_points = check_int(n_points, "n_points", minimum=2)
        t = np.linspace(0.0, 1.0, n_points)[None, :, None]
        return self._geodesic(a[:, None, :], b[:, None, :], t)

    def _geodesic(self, a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Exact geodesic points for a, b (n, 1, d) at times t (1, m, 1) in [0, 1]."""
        raise NotImplementedError

    def sample(self, n: int, seed: int | None = DEFAULT_SEED) -> np.ndarray:
        """Return n points (n, d) float64 drawn from `domain` with a numpy Generator seeded by `seed`."""
        n = check_positive_int(n, "n")
        return self._sample(n, np.random.default_rng(check_seed(seed)))

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw n points from the domain."""
        raise NotImplementedError

    def _pair(self, a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validate two (n, d) float64 arrays of the same shape."""
        a = check_array(a, "a", ndim=2, n_columns=self.latent_dim)
        b = check_array(b, "b", ndim=2, n_columns=self.latent_dim)
        if a.shape != b.shape:
            raise InvalidInput(f"a and b must have the same shape; got {a.shape} and {b.shape}.")
        return a, b

    def __repr__(self) -> str:
        """Short description."""
        return f"{type(self).__name__}(latent_dim={self.latent_dim}, output_dim={self.output_dim})"


DEFAULT_MATRIX = np.array([[1.0, 0.5], [0.0, 2.0], [1.0, -1.0]])


class LinearDecoder(AnalyticDecoder):
    """x = A z with A (D, d): M = A^T A everywhere, geodesics are straight, distance ||A (b - a)||."""

    domain = "the cube [-1, 1]^d (any convex set would do: every straight segment is a geodesic)"

    def __init__(self, matrix: Any = None) -> None:
        """Use `matrix` A (D, d), default the fixed 3 x 2 DEFAULT_MATRIX (rank 2)."""
        matrix = DEFAULT_MATRIX if matrix is None else matrix
        self.matrix = check_array(matrix, "matrix", ndim=2).copy()
        self.output_dim, self.latent_dim = self.matrix.shape

    @classmethod
    def identity(cls, latent_dim: int) -> LinearDecoder:
        """The identity decoder of dimension d: M = I, edge lengths and distances are Euclidean.

        Parameters
        ----------
        latent_dim : int
            Latent (and output) dimension d >= 1.

        Returns
        -------
        LinearDecoder
            The decoder x = I_d z.
        """
        return cls(np.eye(check_positive_int(latent_dim, "latent_dim")))

    def _matrix(self, like: Tensor) -> Tensor:
        """A as a tensor in like's dtype and device (made per call: a cache would keep tensors from inside jvp)."""
        return torch.as_tensor(self.matrix, dtype=like.dtype, device=like.device)

    def embed(self, z: Tensor) -> Tensor:
        """Return A z for every row: (n, D)."""
        return z @ self._matrix(z).T

    def _metric(self, z: Tensor) -> Tensor:
        """A^T A repeated for each point: (n, d, d)."""
        matrix = self._matrix(z)
        return (matrix.T @ matrix).expand(z.shape[0], -1, -1).clone()

    def _distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """||A (b - a)|| per row."""
        return np.linalg.norm((b - a) @ self.matrix.T, axis=1)

    def _geodesic(self, a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Straight segments a + t (b - a)."""
        return a + t * (b - a)

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Uniform in [-1, 1]^d."""
        return rng.uniform(-1.0, 1.0, size=(n, self.latent_dim))


CAP_CENTRE = np.array([0.0, 1.0, 0.0])  # theta = pi/2, phi = pi/2
CAP_RADIUS = np.pi / 3


class SphereChart(AnalyticDecoder):
    """Unit sphere in spherical coordinates (theta, phi) -> (sin th cos ph, sin th sin ph, cos th); M = diag(1, sin^2 th).

    Domain: the spherical cap of angular radius pi/3 around (theta, phi) = (pi/2, pi/2). A cap of radius < pi/2 is
    geodesically convex, so the great-circle arc between two of its points stays in it; in the chart the cap lies in
    theta in [pi/6, 5 pi/6] (sin theta >= 1/2, away from the poles where the chart degenerates) and phi in
    [pi/6, 5 pi/6] (away from the seam phi = 0). A latitude band would not do: the great circle between two points
    of a band can pass over the pole.
    """

    latent_dim = 2
    output_dim = 3
    domain = "spherical cap of angular radius pi/3 centred at (theta, phi) = (pi/2, pi/2)"

    def embed(self, z: Tensor) -> Tensor:
        """Return unit vectors (n, 3) for (theta, phi) rows."""
        theta, phi = z[:, 0], z[:, 1]
        return torch.stack([torch.sin(theta) * torch.cos(phi), torch.sin(theta) * torch.sin(phi), torch.cos(theta)], 1)

    def _metric(self, z: Tensor) -> Tensor:
        """diag(1, sin^2 theta) per point: (n, 2, 2)."""
        return torch.diag_embed(torch.stack([torch.ones_like(z[:, 0]), torch.sin(z[:, 0]) ** 2], dim=1))

    @staticmethod
    def to_sphere(z: np.ndarray) -> np.ndarray:
        """Unit vectors (..., 3) for chart points (..., 2)."""
        theta, phi = z[..., 0], z[..., 1]
        return np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=-1)

    @staticmethod
    def to_chart(x: np.ndarray) -> np.ndarray:
        """Chart points (..., 2) (theta in [0, pi], phi in (-pi, pi]) for unit vectors (..., 3)."""
        theta = np.arccos(np.clip(x[..., 2], -1.0, 1.0))
        return np.stack([theta, np.arctan2(x[..., 1], x[..., 0])], axis=-1)

    def _distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Great-circle angle atan2(|x cross y|, x . y), accurate for near and far points."""
        x, y = self.to_sphere(a), self.to_sphere(b)
        return np.arctan2(np.linalg.norm(np.cross(x, y), axis=-1), np.sum(x * y, axis=-1))

    def _geodesic(self, a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Great-circle arcs by spherical linear interpolation, mapped back to the chart."""
        x, y = self.to_sphere(a), self.to_sphere(b)
        angle = self._distance(a[:, 0], b[:, 0])[:, None, None]
        safe = np.where(angle > 1e-12, np.sin(angle), 1.0)
        start = np.where(angle > 1e-12, np.sin((1.0 - t) * angle) / safe, 1.0 - t)
        end = np.where(angle > 1e-12, np.sin(t * angle) / safe, t)
        return self.to_chart(start * x + end * y)

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Uniform (by area) on the cap."""
        cos_angle = rng.uniform(np.cos(CAP_RADIUS), 1.0, size=n)
        azimuth = rng.uniform(0.0, 2.0 * np.pi, size=n)
        sin_angle = np.sqrt(1.0 - cos_angle**2)
        x = sin_angle * np.cos(azimuth)
        z = sin_angle * np.sin(azimuth)
        return self.to_chart(np.stack([x, cos_angle, z], axis=1))


U_RANGE = (0.5, 3.0)
V_RANGE = (0.0, 3.0)


def arc_length(u: np.ndarray) -> np.ndarray:
    """S(u) = (u sqrt(1 + u^2) + asinh u) / 2, the arc length of the spiral (u cos u, u sin u) from 0 to u."""
    return 0.5 * (u * np.sqrt(1.0 + u**2) + np.arcsinh(u))


def inverse_arc_length(s: np.ndarray, tol: float = 1e-14) -> np.ndarray:
    """u with S(u) = s, by Newton's method (S is increasing and convex for u >= 0)."""
    u = np.sqrt(2.0 * np.abs(s)) * np.sign(s)  # S(u) ~ u for small u, ~ u^2/2 for large u; a safe start
    for _ in range(100):
        step = (arc_length(u) - s) / np.sqrt(1.0 + u**2)
        u = u - step
        if np.max(np.abs(step), initial=0.0) < tol * max(1.0, float(np.max(np.abs(u), initial=0.0))):
            break
    return u


class DevelopableSurface(AnalyticDecoder):
    """f(u, v) = (u cos u, v, u sin u): a cylinder over an Archimedean spiral; M = diag(1 + u^2, 1).

    The surface is developable (flat): (u, v) -> (S(u), v), S the spiral's arc length, is an isometry onto a plane
    region. Domain: u in [0.5, 3], v in [0, 3]. S is increasing, so the domain unrolls onto the rectangle
    [S(0.5), S(3)] x [0, 3], which is convex: the geodesic between two points is the straight line in (S, v), it
    stays in the domain, and distance = sqrt((S(u1) - S(u2))^2 + (v1 - v2)^2). The lower bound 0.5 keeps away from
    the spiral's centre; the upper bound 3 < 2 pi keeps the surface free of self-intersections in R^3.
    """

    latent_dim = 2
    output_dim = 3
    domain = "rectangle u in [0.5, 3], v in [0, 3] (unrolls onto a convex rectangle)"

    def embed(self, z: Tensor) -> Tensor:
        """Return (u cos u, v, u sin u) rows (n, 3)."""
        u, v = z[:, 0], z[:, 1]
        return torch.stack([u * torch.cos(u), v, u * torch.sin(u)], dim=1)

    def _metric(self, z: Tensor) -> Tensor:
        """diag(1 + u^2, 1) per point: (n, 2, 2)."""
        return torch.diag_embed(torch.stack([1.0 + z[:, 0] ** 2, torch.ones_like(z[:, 1])], dim=1))

    def _distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Euclidean distance in the developed coordinates (S(u), v)."""
        return np.hypot(arc_length(a[:, 0]) - arc_length(b[:, 0]), a[:, 1] - b[:, 1])

    def _geodesic(self, a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Straight lines in (S(u), v), mapped back to (u, v)."""
        s = arc_length(a[..., 0]) + t[..., 0] * (arc_length(b[..., 0]) - arc_length(a[..., 0]))
        v = a[..., 1] + t[..., 0] * (b[..., 1] - a[..., 1])
        return np.stack([inverse_arc_length(s), v], axis=-1)

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Uniform in the (u, v) rectangle."""
        return np.stack([rng.uniform(*U_RANGE, size=n), rng.uniform(*V_RANGE, size=n)], axis=1)


MANIFOLDS: dict[str, type[AnalyticDecoder]] = {
    "linear": LinearDecoder,
    "sphere": SphereChart,
    "developable": DevelopableSurface,
}
