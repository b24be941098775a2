"""Small decoders shared by the tests (not analytic: see lsg_graph.manifolds for those with exact answers)."""

from __future__ import annotations

import torch


class MLPDecoder(torch.nn.Module):
    """A small smooth stochastic decoder: tanh MLP with a mean head and a softplus std head."""

    def __init__(self, latent_dim: int = 3, output_dim: int = 5, hidden: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.latent_dim, self.output_dim = latent_dim, output_dim
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.hidden = torch.nn.Linear(latent_dim, hidden)
            self.mean = torch.nn.Linear(hidden, output_dim)
            self.std = torch.nn.Linear(hidden, output_dim)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (n, D) and std (n, D) of z (n, d)."""
        h = torch.tanh(self.hidden(z))
        return self.mean(h), torch.nn.functional.softplus(self.std(h)) + 1e-3


class Bend(torch.nn.Module):
    """x = (z, scale * sin(z1) z2): a curved 2-D surface in R^3, weights in one parameter."""

    def __init__(self, scale: float = 2.0) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(scale, dtype=torch.float64))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([z, self.scale * torch.sin(z[:, :1]) * z[:, 1:]], dim=1)


class WarpedPlane:
    """x = (sinh(c z1) / c, z2): a flat plane in a chart whose scale grows as cosh(c z1) (c = 3: 1 to 45 on
    |z1| <= 1.5). Exact distance: the Euclidean one between the images. Geodesics are straight in the image, so
    their latent speed varies by the same factor along the curve."""

    latent_dim, output_dim = 2, 2

    def __init__(self, c: float = 3.0) -> None:
        self.c = c

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        return torch.stack([torch.sinh(self.c * z[:, 0]) / self.c, z[:, 1]], dim=1), None

    def distance(self, a, b):
        """Exact distances (n,) between rows of float64 arrays a, b (n, 2)."""
        import numpy as np

        image = lambda z: np.stack([np.sinh(self.c * z[:, 0]) / self.c, z[:, 1]], axis=1)  # noqa: E731
        return np.linalg.norm(image(a) - image(b), axis=1)
