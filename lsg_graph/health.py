"""A geometry health check a user can read: does the decoder's variance rise off the data, and are the graph's
distances close to true geodesics?

Two numbers decide whether latent distances from a run can be trusted:

* sigma ratio: the median pixel-mean decoder sigma at off-data points (midpoints of random code pairs that lie at
  least OFF_DATA_SPACINGS median nearest-neighbour spacings from every code) over its median on the codes. Below
  MIN_SIGMA_RATIO the variance does not push geodesics towards the data (the paper's central point fails).
* stretch: graph (Dijkstra) length over refined geodesic length for a few random code pairs. Above MAX_STRETCH
  the graph measures itself more than the manifold; refined distances should be used instead.

It also counts the active latent directions (code variance at least 1e-2 of the largest): a VAE whose other
units collapsed to the prior has a geometry of that many dimensions, whatever its latent_dim.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree

from lsg_graph._validation import check_int, check_positive_int, check_seed
from lsg_graph.errors import InvalidInput
from lsg_graph.geodesics.refine import refine_geodesics
from lsg_graph.graph.latent_graph import LatentGraph
from lsg_graph.metric import PullbackMetric
from lsg_graph.model.train import active_directions
from lsg_graph.registry import DEFAULT_HEALTH_PAIRS, DEFAULT_SEED

OFF_DATA_SPACINGS = 1.5
MIN_SIGMA_RATIO = 3.0
MAX_STRETCH = 1.05


@dataclass(frozen=True)
class GeometryHealth:
    """The health check's numbers; `problems` holds one readable sentence per failed check (empty: trustworthy)."""

    sigma_on: float | None
    sigma_off: float | None
    sigma_ratio: float | None
    n_off_data: int
    stretch_median: float
    stretch_max: float
    n_pairs: int
    n_converged: int
    active_units: int = 0
    latent_dim: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def trustworthy(self) -> bool:
        """Whether every check passed."""
        return not self.problems

    def summary(self) -> str:
        """One line a user can read."""
        sigma = "deterministic decoder" if self.sigma_ratio is None else f"sigma off/on the data {self.sigma_ratio:.2f}x"
        return (
            f"{sigma}; graph distances are within {100 * (self.stretch_median - 1):.1f}% (median, max "
            f"{100 * (self.stretch_max - 1):.1f}%) of refined geodesics on {self.n_pairs} pairs "
            f"({self.n_converged} converged); {self.active_units} of {self.latent_dim} latent directions active"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus `trustworthy`."""
        return {**asdict(self), "trustworthy": self.trustworthy}


def off_data_points(codes: np.ndarray, n_points: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Midpoints of random code pairs at least OFF_DATA_SPACINGS median NN spacings from every code (<= n_points)."""
    tree = cKDTree(codes)
    spacing = float(np.median(tree.query(codes, k=2)[0][:, 1]))
    first, second = rng.integers(0, len(codes), (2, 40 * n_points))
    mids = 0.5 * (codes[first] + codes[second])
    return mids[tree.query(mids)[0] >= OFF_DATA_SPACINGS * spacing][:n_points], spacing


def geometry_health(
    metric: PullbackMetric, graph: LatentGraph, *, n_pairs: int = DEFAULT_HEALTH_PAIRS, n_off_data: int = 500, seed: int = DEFAULT_SEED
) -> GeometryHealth:
    """Measure the sigma ratio and the graph's stretch of a run (see the module docstring).

    Parameters
    ----------
    metric : PullbackMetric
        The metric that weighted the graph's edges.
    graph : LatentGraph
        The latent graph; its codes are the on-data points.
    n_pairs : int
        Random code pairs refined to measure the stretch (refinement cost grows with it).
    n_off_data : int
        Off-data points at which sigma is measured.
    seed : int
        Seed of the pairs and the off-data points.

    Returns
    -------
    GeometryHealth
    """
    if not isinstance(metric, PullbackMetric) or not isinstance(graph, LatentGraph):
        raise InvalidInput("geometry_health needs a PullbackMetric and a LatentGraph.")
    n_pairs = check_positive_int(n_pairs, "n_pairs")
    n_off_data = check_int(n_off_data, "n_off_data", minimum=1)
    rng = np.random.default_rng(check_seed(seed))
    codes = np.asarray(graph.codes, dtype=np.float64)
    problems: list[str] = []
    sigma_on = sigma_off = ratio = None
    off, _ = off_data_points(codes, n_off_data, rng)
    with torch.no_grad():
        on_std = _pixel_sigma(metric, codes)
        off_std = _pixel_sigma(metric, off) if len(off) else None
    if on_std is not None and off_std is not None:
        sigma_on, sigma_off = float(np.median(on_std)), float(np.median(off_std))
        ratio = sigma_off / sigma_on
        if ratio < MIN_SIGMA_RATIO:
            problems.append(
                f"the decoder's sigma off the data is only {ratio:.2f}x its sigma on the codes (want >= "
                f"{MIN_SIGMA_RATIO:g}x): geodesics are not pushed towards the data; try a gated RBF head "
                "(--rbf-gate shell from about 16 active latent directions, else --rbf-gate codes; see docs/geometry.md)"
            )
    pairs = rng.choice(graph.n_points, size=(n_pairs, 2), replace=graph.n_points < 2 * n_pairs)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = refine_geodesics(metric, graph, pairs) if len(pairs) else []
    stretch = np.array([r.graph_length / r.length for r in results if r.length > 0]) if results else np.ones(1)
    health = GeometryHealth(
        sigma_on, sigma_off, ratio, int(len(off)), float(np.median(stretch)), float(stretch.max()), len(results),
        int(sum(r.converged for r in results)), int(active_directions(codes)[2].sum()), graph.latent_dim, problems,
    )
    if health.stretch_median > MAX_STRETCH:
        problems.append(
            f"graph distances are {100 * (health.stretch_median - 1):.1f}% longer than refined geodesics (median; "
            f"want <= {100 * (MAX_STRETCH - 1):.0f}%): use refined distances (a kNN graph zig-zags at high d; more "
            "neighbours (--k) help only slowly, see docs/geometry.md)"
        )
    return health


def _pixel_sigma(metric: PullbackMetric, points: np.ndarray) -> np.ndarray | None:
    """Pixel-mean decoder std (n,) at latent points, None for a deterministic decoder."""
    z = metric._tensor(points, "points", ndim=2)
    mean, std = metric.decoder(z[:1])
    if std is None:
        return None
    return np.concatenate([metric.decoder(z[i : i + 4096])[1].mean(1).double().cpu().numpy()
                           for i in range(0, len(z), 4096)])
