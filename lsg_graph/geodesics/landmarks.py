"""Landmark geodesics: graph distances from L landmark nodes bound the distance between any two nodes.

For landmarks l_1..l_L with exact graph distances d(l, .) (one Dijkstra each), the triangle inequality gives, for
every pair of nodes (a, b),

    lower(a, b) = max_l |d(a, l) - d(b, l)|  <=  d(a, b)  <=  min_l d(a, l) + d(l, b) = upper(a, b),

where the upper bound is the length of an actual walk a -> l -> b. Both are exact when a or b is a landmark.
Landmarks are chosen by farthest-point sampling (each new landmark is the node farthest from those chosen, which
spreads them over the graph and reuses the Dijkstra row it needs anyway) or uniformly at random. The table costs
L Dijkstras and L x n float64 of memory; a pair then costs O(L).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse.csgraph import dijkstra

from lsg_graph._validation import check_choice, check_int
from lsg_graph._validation import check_seed as check_random_state
from lsg_graph.errors import InvalidInput
from lsg_graph.graph.latent_graph import LatentGraph

LANDMARK_METHODS = {
    "farthest": "farthest-point sampling: each landmark is the node farthest (geodesically) from those chosen",
    "random": "landmarks drawn uniformly without replacement",
}
ESTIMATES = {
    "lower": "the lower bound max_l |d(a, l) - d(b, l)|",
    "upper": "the upper bound: the shortest walk through one landmark (a real path length)",
    "midpoint": "(lower + upper) / 2",
}
# the lower bound has the smaller median and a far smaller tail error (the upper bound is poor for close pairs far
# from every landmark); docs/scale.md and benchmarks/landmarks.py give the figures
DEFAULT_ESTIMATE = "lower"
# Dijkstra sums edge lengths in a different order from each source, so the float triangle inequality can miss by a
# few ulps per edge along a path; the bounds are widened by this relative amount so that they hold for computed
# distances too (it covers paths of well over 10^4 edges).
BOUND_SLACK = 1e-12
_BLOCK_ELEMENTS = 1 << 22  # landmarks x pairs evaluated at once (32 MiB of float64)


@dataclass(frozen=True)
class LandmarkBounds:
    """Bounds on graph distances of m pairs: lower (m,) <= d <= upper (m,), and the estimate (m,) between them."""

    lower: np.ndarray
    upper: np.ndarray
    estimate: np.ndarray


@dataclass(frozen=True)
class Landmarks:
    """Landmark nodes (L,) int64 of a graph and their exact graph distances (L, n) float64 to every node."""

    indices: np.ndarray
    distances: np.ndarray
    method: str

    @property
    def n_landmarks(self) -> int:
        """Number of landmarks L."""
        return int(self.indices.shape[0])

    @property
    def n_points(self) -> int:
        """Number of graph nodes n."""
        return int(self.distances.shape[1])

    def bounds(self, sources: Any, targets: Any, estimate: str = DEFAULT_ESTIMATE) -> LandmarkBounds:
        """Lower and upper bounds and an estimate of d(sources[i], targets[i]) for m pairs of node indices (m,)."""
        check_choice(estimate, "landmark estimate", ESTIMATES)
        sources, targets = self._check_nodes(sources, "sources"), self._check_nodes(targets, "targets")
        if sources.shape != targets.shape:
            raise InvalidInput(
                f"sources and targets must have the same length; got {sources.shape[0]} and {targets.shape[0]}."
            )
        m = sources.shape[0]
        lower, upper = np.empty(m), np.empty(m)
        step = max(1, _BLOCK_ELEMENTS // self.n_landmarks)
        for start in range(0, m, step):
            part = slice(start, start + step)
            lower[part], upper[part] = self._block_bounds(self.distances[:, sources[part]], self.distances[:, targets[part]])
        same = sources == targets
        lower[same], upper[same] = 0.0, 0.0
        return LandmarkBounds(lower, upper, _estimate(lower, upper, estimate))

    def bounds_to(self, source: int, targets: Any = None, estimate: str = DEFAULT_ESTIMATE) -> LandmarkBounds:
        """Bounds and estimates of d(source, t) for every target node t (all nodes when `targets` is None)."""
        source_array = self._check_nodes([source], "source")
        targets = np.arange(self.n_points) if targets is None else self._check_nodes(targets, "targets")
        return self.bounds(np.repeat(source_array, len(targets)), targets, estimate)

    def _check_nodes(self, nodes: Any, name: str) -> np.ndarray:
        """Node indices (m,) int64 in [0, n), else InvalidInput naming the bad one."""
        try:
            array = np.atleast_1d(np.asarray(nodes))
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"{name} must be a 1-D array of node indices; could not read {nodes!r}: {exc}") from exc
        if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
            raise InvalidInput(f"{name} must be a non-empty 1-D array of node indices; got dtype {array.dtype}, shape {array.shape}.")
        bad = np.flatnonzero((array < 0) | (array >= self.n_points))
        if bad.size:
            raise InvalidInput(
                f"{name}[{int(bad[0])}] = {int(array[bad[0]])} is out of range; expected node indices in [0, {self.n_points})."
            )
        return array.astype(np.int64)

    @staticmethod
    def _block_bounds(to_sources: np.ndarray, to_targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bounds (m,), (m,) from landmark distances to sources and targets, both (L, m); inf-safe."""
        with np.errstate(invalid="ignore"):
            gaps = np.abs(to_sources - to_targets)  # inf - inf (both unreachable from a landmark): nan, no information
        gaps[np.isnan(gaps)] = 0.0
        lower = gaps.max(axis=0) * (1.0 - BOUND_SLACK)
        upper = (to_sources + to_targets).min(axis=0) * (1.0 + BOUND_SLACK)
        return lower, upper


def _estimate(lower: np.ndarray, upper: np.ndarray, estimate: str) -> np.ndarray:
    """The estimate named `estimate` (a key of ESTIMATES) from the bounds; finite where the pair is connected."""
    if estimate == "upper":
        return upper.copy()
    if estimate == "lower":
        return lower.copy()
    with np.errstate(invalid="ignore"):
        middle = 0.5 * (lower + upper)
    return np.where(np.isinf(upper), np.inf, middle)


def select_landmarks(
    graph: LatentGraph, n_landmarks: int, *, method: str = "farthest", random_state: Any = None
) -> Landmarks:
    """Choose `n_landmarks` landmark nodes of `graph` by `method` and compute their distances (L, n) to every node.

    Parameters
    ----------
    graph : the LatentGraph (its symmetric edge weights are searched; a disconnected graph gives inf distances).
    n_landmarks : L, 1 <= L <= n. Memory is L x n float64.
    method : a key of LANDMARK_METHODS: "farthest" (the first landmark is drawn at random) or "random".
    random_state : None or a non-negative int seed.

    Returns
    -------
    Landmarks with indices (L,) in the order chosen (farthest-point: every prefix is itself a farthest-point set).
    """
    if not isinstance(graph, LatentGraph):
        raise InvalidInput(f"graph must be a lsg_graph LatentGraph; got {type(graph).__name__}.")
    n_points = graph.n_points
    n_landmarks = check_int(n_landmarks, "n_landmarks", minimum=1, maximum=n_points)
    check_choice(method, "landmark selection method", LANDMARK_METHODS)
    rng = np.random.RandomState(check_random_state(random_state, "random_state"))
    distances = np.empty((n_landmarks, n_points), dtype=np.float64)
    if method == "random":
        indices = np.sort(rng.choice(n_points, n_landmarks, replace=False)).astype(np.int64)
        step = max(1, (1 << 23) // n_points)
        for start in range(0, n_landmarks, step):
            rows = indices[start : start + step]
            distances[start : start + len(rows)] = np.atleast_2d(dijkstra(graph.weights, directed=True, indices=rows))
        return Landmarks(indices, distances, method)
    indices = np.empty(n_landmarks, dtype=np.int64)
    closest = np.full(n_points, np.inf)
    chosen = np.zeros(n_points, dtype=bool)
    indices[0] = rng.randint(n_points)
    for position in range(n_landmarks):
        landmark = int(indices[position])
        chosen[landmark] = True
        distances[position] = dijkstra(graph.weights, directed=True, indices=landmark)
        if position + 1 == n_landmarks:
            break
        np.minimum(closest, distances[position], out=closest)
        candidates = np.where(chosen, -1.0, closest)  # unreachable nodes (inf) come first: they open new components
        indices[position + 1] = int(np.argmax(candidates))
    return Landmarks(indices, distances, method)

