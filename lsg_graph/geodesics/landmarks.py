"""Landmark geodesics: graph distances from L landmark nodes bound the distance between any two nodes.

For landmarks l_1..l_L with exact graph distances d(l, .) (one Dijkstra each), the triangle inequality gives, for
every pair of nodes (a, b),

    lower(a, b) = max_l |d(a, l) - d(b, l)|  <=  d(a, b)  <=  min_l d(a, l) + d(l, b) = upper(a, b),

where the upper bound is the length of an actual walk a -> l -> b. Both are exact when a or b is a landmark.
Landmarks are chosen by farthest-point sampling (each new landmark is the node farthest from those chosen, which
spreads them over the graph and reuses the Dijkstra row it needs anyway) or uniformly at random. The table costs
L Dijkstras and L x n float64 of memory; a pair then costs O(L).

For k-medoids on large graphs two helpers rank and check medoid candidates without a Dijkstra over the whole
graph: `Landmarks.lower_bound_costs` estimates a candidate's within-cluster cost sum_i d(c, i)^2 from the lower
bounds (vectorised over candidates, on a fixed sample of the members), and `induced_distances` runs Dijkstra inside
the subgraph induced by the members only, whose distances are upper bounds of the graph distances (a path inside
the subgraph is a path of the graph), so a cost computed from them is an upper bound of the exact cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
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
COST_SAMPLE = 4096  # lower_bound_costs: members (a fixed random sample) over which a candidate's cost is estimated


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

    def lower_bound_costs(self, candidates: Any, members: Any, sample: int = COST_SAMPLE) -> np.ndarray:
        """Estimates (C,) of sum_i d(c, i)^2 over the members i for each candidate node c, from landmark lower bounds.

        Each d(c, i) is replaced by max_l |d(c, l) - d(i, l)| (a lower bound, so each estimate is at most the exact
        cost up to the sampling). With more than `sample` members the sum runs over a fixed random sample of them
        (the same for every candidate, drawn from a generator seeded by the member count, so the ranking of the
        candidates is deterministic) and is scaled by members / sample. The bounds are taken in float32: the
        result ranks candidates, it is not a distance bound.
        """
        candidates = self._check_nodes(candidates, "candidates")
        members = self._check_nodes(members, "members")
        sample = check_int(sample, "sample", minimum=1)
        scale = 1.0
        if members.shape[0] > sample:
            picked = np.random.default_rng(members.shape[0]).choice(members.shape[0], sample, replace=False)
            scale, members = members.shape[0] / sample, members[np.sort(picked)]
        # column gathers come back in Fortran order; the loop below needs contiguous rows
        at_members = np.ascontiguousarray(self.distances[:, members], dtype=np.float32)  # (L, s)
        at_candidates = np.ascontiguousarray(self.distances[:, candidates], dtype=np.float32)  # (L, C)
        lower = np.zeros((candidates.shape[0], members.shape[0]), dtype=np.float32)  # (C, s)
        finite = bool(np.isfinite(at_members).all() and np.isfinite(at_candidates).all())
        with np.errstate(invalid="ignore"):
            for landmark in range(self.n_landmarks):  # one (C, s) plane at a time: far faster than an (C, L, s) block
                gaps = np.abs(at_candidates[landmark][:, None] - at_members[landmark][None, :])
                if not finite:
                    gaps[np.isnan(gaps)] = 0.0  # inf - inf: both unreachable from this landmark, no information
                np.maximum(lower, gaps, out=lower)
        # a member in another component than the candidate: some landmark reaches one of them only, the gap is inf
        return np.square(lower.astype(np.float64)).sum(axis=1) * scale

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



def induced_subgraph(weights: sp.csr_matrix, nodes: np.ndarray) -> sp.csr_matrix:
    """The (m, m) CSR subgraph of `weights` (n, n) induced by the sorted distinct node indices `nodes` (m,)."""
    local = np.full(weights.shape[0], -1, dtype=np.int64)
    local[nodes] = np.arange(nodes.shape[0])
    rows = weights[nodes]  # CSR row gather
    columns = local[rows.indices]
    keep = columns >= 0
    owner = np.repeat(np.arange(nodes.shape[0]), np.diff(rows.indptr))[keep]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=nodes.shape[0]))])
    return sp.csr_matrix((rows.data[keep], columns[keep], indptr), shape=(nodes.shape[0], nodes.shape[0]))


def induced_distances(graph: LatentGraph, nodes: Any, sources: Any) -> np.ndarray:
    """Distances (s, m) from each source to each node, along paths that stay inside the subgraph induced by `nodes`.

    Parameters
    ----------
    graph : the LatentGraph.
    nodes : (m,) distinct node indices spanning the subgraph; they are sorted, and the columns follow that order.
    sources : (s,) node indices, each one of `nodes`.

    Returns
    -------
    (s, m) float64: upper bounds of the graph distances (exact wherever a shortest path stays inside), inf where
    the subgraph does not join the two nodes. Costs O(edges among `nodes`) per source instead of the whole graph.
    """
    if not isinstance(graph, LatentGraph):
        raise InvalidInput(f"graph must be a lsg_graph LatentGraph; got {type(graph).__name__}.")
    nodes = np.unique(np.asarray(nodes, dtype=np.int64))
    sources = np.atleast_1d(np.asarray(sources, dtype=np.int64))
    if nodes.size == 0 or nodes[0] < 0 or nodes[-1] >= graph.n_points:
        raise InvalidInput(f"nodes must be a non-empty array of node indices in [0, {graph.n_points}).")
    position = np.searchsorted(nodes, sources)
    outside = (position >= nodes.size) | (nodes[np.minimum(position, nodes.size - 1)] != sources)
    if outside.any():
        raise InvalidInput(f"source {int(sources[outside][0])} is not one of the subgraph's nodes.")
    subgraph = induced_subgraph(graph.weights.tocsr(), nodes)
    return np.atleast_2d(dijkstra(subgraph, directed=True, indices=position))
