"""GeodesicKMeans: k-medoids under graph geodesic distances (Arvanitidis et al., ICLR 2018), a scikit-learn estimator;
with algorithm="embedding", k-means in the geodesic embedding of lsg_graph.embedding instead (its docstring).

One iteration = one assignment + one medoid update:

* Assignment: every point goes to its geodesically nearest medoid, found by ONE multi-source Dijkstra from all
  medoids (`nearest_source_distances`); no (n, n) matrix is ever formed on the graph path.
* Update: each cluster's medoid becomes the member c minimising the within-cluster sum of squared geodesic distances
  sum_i d(c, i)^2. The cost of a candidate is always exact (one Dijkstra from c over the whole graph, cut off at
  d(c, m) + max_i d(m, i) >= every d(c, i) by the triangle inequality, m the current medoid). Clusters with at most
  `exact_medoid_size` members try every member (the exact medoid). Larger clusters try only
  `n_medoid_candidates` members (half nearest the current medoid, half nearest the Euclidean mean of the members'
  codes) and the current medoid: an approximation that never increases the cost and is repeated every iteration.
  A medoid only moves when the cost strictly drops, so the inertia strictly decreases and the loop terminates.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.sparse.csgraph import connected_components
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from lsg_graph._threads import n_jobs_threads
from lsg_graph._validation import check_float_param, check_int_param, param_error, sklearn_errors
from lsg_graph.distances import (
    RefineTally,
    block_rows,
    check_distances,
    check_refine_method,
    dijkstra_rows,
    fit_graph,
    leaf_distances_to,
    leaf_edges,
    refine_leaf_distances,
    refine_pair_distances,
)
from lsg_graph.embedding import GeodesicEmbedding
from lsg_graph.errors import InvalidInput
from lsg_graph.geodesics.landmarks import Landmarks, induced_distances, select_landmarks
from lsg_graph.geodesics.shortest import nearest_source_distances
from lsg_graph.graph.latent_graph import LatentGraph
from lsg_graph.progress import track
from lsg_graph.registry import (
    CLUSTER_ALGORITHMS,
    DEFAULT_CANDIDATES,
    DEFAULT_CLUSTER_ALGORITHM,
    DEFAULT_EMBEDDING_COMPONENTS,
    DEFAULT_EMBEDDING_LANDMARKS,
    DEFAULT_K,
    DEFAULT_N_CLUSTERS,
    DEFAULT_N_NODES,
)

INIT_METHODS = {
    "k-means++": "D^2 sampling with geodesic distances, one Dijkstra per chosen medoid",
    "random": "n_clusters distinct points drawn uniformly",
}
METRICS = {"graph": "X holds latent codes; distances are shortest paths in a LatentGraph", "precomputed": "X is (n, n)"}
LANDMARK_VERIFIED = 2  # landmark mode: best-ranked candidates per cluster whose cost is checked (induced subgraph)
LANDMARK_POOL = 64  # landmark mode: candidates per large cluster ranked by landmark estimates (cheap, no Dijkstra)
COST_TOLERANCE = 1e-12  # a medoid moves only if it lowers its cluster's cost by more than this relative amount
SEEDING_CAP_QUANTILE = 0.99  # k-means++ D^2 weights are capped at this quantile (outliers are not favoured)
MIN_CLUSTER_FRACTION = 0.05  # min_cluster_size="auto": this fraction of the mean cluster size n / n_clusters
MAX_RESEEDS_PER_CLUSTER = 3
AUTO_EMBEDDING_DIM = 8  # algorithm="auto": the embedding from this latent dimension on (docs/estimators.md)
OWNER = "GeodesicKMeans"


# ------------------------------------------------------------------------------------------------ distance spaces


class _GraphSpace:
    """Geodesic distances on a LatentGraph, never as an (n, n) matrix."""

    def __init__(self, graph: LatentGraph, exact_size: int, n_candidates: int) -> None:
        """Keep the graph and the medoid-update settings."""
        self.graph, self.exact_size, self.n_candidates = graph, exact_size, n_candidates
        self.n_points = graph.n_points

    def nearest(self, medoids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance (n,) to the nearest medoid and its position (n,) in `medoids`: one multi-source Dijkstra."""
        return nearest_source_distances(self.graph, medoids)

    def from_point(self, index: int) -> np.ndarray:
        """Distances (n,) from one node to every node."""
        return dijkstra_rows(self.graph.weights, np.array([index]))[0]

    def to_medoids(self, medoids: np.ndarray) -> np.ndarray:
        """Distances (k, n) from each medoid to every node: one Dijkstra per medoid."""
        return dijkstra_rows(self.graph.weights, medoids)

    def medoid(self, members: np.ndarray, current: int, distance: np.ndarray) -> int:
        """The member with the least sum of squared distances to the members, among the candidates (see module)."""
        candidates = self._candidates(members, current, distance)
        radius = float(distance[members].max())
        costs = np.empty(len(candidates))
        step = block_rows(self.n_points)
        for start in range(0, len(candidates), step):
            batch = candidates[start : start + step]
            limit = (radius + float(distance[batch].max())) * (1.0 + 1e-9) + 1e-300
            costs[start : start + step] = np.square(dijkstra_rows(self.graph.weights, batch, limit)[:, members]).sum(1)
        return _best_candidate(candidates, costs, current)

    def _candidates(self, members: np.ndarray, current: int, distance: np.ndarray) -> np.ndarray:
        """All members of a small cluster; else the current medoid, members nearest it and nearest the mean code."""
        if len(members) <= self.exact_size:
            return members
        half = max(1, self.n_candidates // 2)
        near_medoid = members[np.argsort(distance[members], kind="stable")[:half]]
        codes = self.graph.codes[members]
        offsets = np.square(codes - codes.mean(axis=0)).sum(axis=1)
        near_mean = members[np.argsort(offsets, kind="stable")[: self.n_candidates - half]]
        return np.unique(np.concatenate([[current], near_medoid, near_mean]))


class _LandmarkGraphSpace(_GraphSpace):
    """_GraphSpace for large graphs: a large cluster's candidates are ranked by landmark estimates of their cost.

    The pool: the current medoid, the LANDMARK_POOL / 2 members nearest it and as many nearest the mean code (at
    least n_candidates in all). Their costs are estimated from landmark lower bounds, max_l |d(c, l) - d(i, l)|, on a
    fixed sample of the members (Landmarks.lower_bound_costs; no Dijkstra). Only the LANDMARK_VERIFIED best-ranked
    candidates, and only those ranked above the current medoid, are checked: their cost is computed from Dijkstra
    inside the subgraph induced by the members (induced_distances: an upper bound of the exact cost, at the price of
    the cluster's edges rather than the whole graph's) and compared with the current medoid's exact cost, so a
    medoid still moves only when its exact cost strictly drops. Clusters of at most `exact_size` members get the
    exact medoid as in _GraphSpace.
    """

    def __init__(self, graph: LatentGraph, exact_size: int, n_candidates: int, landmarks: Landmarks) -> None:
        """Keep the graph, the medoid-update settings and the landmark table."""
        super().__init__(graph, exact_size, n_candidates)
        self.landmarks, self.seconds = landmarks, 0.0
        self.stats = {"landmark_rank_s": 0.0, "landmark_check_s": 0.0, "landmark_checked": 0, "landmark_moves": 0}

    def medoid(self, members: np.ndarray, current: int, distance: np.ndarray) -> int:
        """The best of the landmark-ranked candidates if its cost beats the current medoid's exact cost, else current."""
        if len(members) <= self.exact_size:
            return super().medoid(members, current, distance)
        started = time.perf_counter()
        candidates = self._pool(members, current, distance)
        estimated = self.landmarks.lower_bound_costs(candidates, members)
        ranked = candidates[np.argsort(estimated, kind="stable")]
        shortlist = ranked[: int(np.flatnonzero(ranked == current)[0])][:LANDMARK_VERIFIED]  # ranked above current
        checked = time.perf_counter()
        self.stats["landmark_rank_s"] += checked - started
        if shortlist.size == 0:  # no candidate is estimated cheaper: no Dijkstra at all
            return int(current)
        inside = induced_distances(self.graph, members, shortlist)  # (s, m), columns in the order of members
        costs = np.square(inside).sum(axis=1)  # upper bounds of the exact costs
        own = np.square(distance[members]).sum()  # exact: the assignment's Dijkstra from the current medoid
        self.stats["landmark_check_s"] += time.perf_counter() - checked
        self.stats["landmark_checked"] += int(shortlist.size)
        best = _best_candidate(np.concatenate([[current], shortlist]), np.concatenate([[own], costs]), current)
        self.stats["landmark_moves"] += int(best != current)
        return best

    def _pool(self, members: np.ndarray, current: int, distance: np.ndarray) -> np.ndarray:
        """The current medoid and the members nearest it and nearest the mean code (LANDMARK_POOL in all)."""
        size = max(self.n_candidates, LANDMARK_POOL)
        half = size // 2
        near_medoid = members[np.argpartition(distance[members], min(half, members.size - 1))[:half]]
        codes = self.graph.codes[members]
        offsets = np.square(codes - codes.mean(axis=0)).sum(axis=1)
        near_mean = members[np.argpartition(offsets, min(size - half, members.size - 1))[: size - half]]
        return np.unique(np.concatenate([[current], near_medoid, near_mean]))


class _PrecomputedSpace:
    """Distances given as a dense (n, n) matrix: entry (i, j) is the distance from point i to point j."""

    def __init__(self, distances: np.ndarray) -> None:
        """Keep the matrix."""
        self.distances = distances
        self.n_points = distances.shape[0]

    def nearest(self, medoids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance (n,) to the nearest medoid and its position (n,) (ties: the first medoid)."""
        to_medoids = self.distances[:, medoids]
        position = np.argmin(to_medoids, axis=1)
        return to_medoids[np.arange(self.n_points), position], position.astype(np.int64)

    def from_point(self, index: int) -> np.ndarray:
        """Distances (n,) from every point to one point."""
        return self.distances[:, index]

    def to_medoids(self, medoids: np.ndarray) -> np.ndarray:
        """Distances (k, n) between each medoid and every point."""
        return self.distances[:, medoids].T

    def medoid(self, members: np.ndarray, current: int, distance: np.ndarray) -> int:
        """The exact medoid: the member with the least sum of squared distances from the members."""
        costs = np.square(self.distances[np.ix_(members, members)]).sum(axis=0)
        return _best_candidate(members, costs, current)


def _best_candidate(candidates: np.ndarray, costs: np.ndarray, current: int) -> int:
    """The cheapest candidate if it beats `current` by more than COST_TOLERANCE (relative), else `current`."""
    best = int(np.argmin(costs))
    at_current = np.flatnonzero(candidates == current)
    if at_current.size and costs[best] >= costs[at_current[0]] * (1.0 - COST_TOLERANCE):
        return int(current)
    return int(candidates[best])


# ------------------------------------------------------------------------------------------------ one run


@dataclass
class _Run:
    """One k-medoids run: medoids (k,), labels (n,), distance to own medoid (n,), inertia, iterations, timings."""

    medoids: np.ndarray
    labels: np.ndarray
    distance: np.ndarray
    inertia: float
    n_iter: int
    timings: dict[str, Any] = field(default_factory=dict)


def _capped_weights(closest: np.ndarray, excluded: Any) -> np.ndarray:
    """D^2 sampling weights, capped at their SEEDING_CAP_QUANTILE quantile so that isolated outliers (whose
    squared distance can be 10^4 times the typical one) are no likelier to be drawn than ordinary far points."""
    weights = np.square(closest)
    finite = weights[np.isfinite(weights)]
    if finite.size:
        np.minimum(weights, np.quantile(finite, SEEDING_CAP_QUANTILE), out=weights)
    weights[excluded] = 0.0
    return weights


def _draw(weights: np.ndarray, rng: np.random.RandomState, fallback: np.ndarray) -> int:
    """An index drawn with probability proportional to `weights`, else uniformly from `fallback`."""
    total = float(weights.sum())
    if total > 0 and np.isfinite(total):
        pick = int(np.searchsorted(np.cumsum(weights), rng.uniform(0.0, total), side="right"))
        return min(pick, len(weights) - 1)
    return int(rng.choice(fallback))


def _kmeans_plus_plus(space: Any, n_clusters: int, rng: np.random.RandomState) -> np.ndarray:
    """Geodesic k-means++ seeding: capped D^2 sampling, one single-source Dijkstra per chosen medoid."""
    chosen = [int(rng.randint(space.n_points))]
    closest = space.from_point(chosen[0]).copy()
    for _ in range(1, n_clusters):
        others = np.setdiff1d(np.arange(space.n_points), chosen)  # every point on a medoid: draw among the others
        chosen.append(_draw(_capped_weights(closest, chosen), rng, others))
        np.minimum(closest, space.from_point(chosen[-1]), out=closest)
    return np.array(chosen, dtype=np.int64)


def _reseed_small(
    space: Any, medoids: np.ndarray, labels: np.ndarray, distance: np.ndarray, min_size: int,
    rng: np.random.RandomState,
) -> tuple[np.ndarray, bool]:
    """Move the medoid of every cluster with fewer than `min_size` members to a point drawn by capped D^2
    sampling among the members of the clusters that are large enough; returns the medoids and whether any moved."""
    sizes = np.bincount(labels, minlength=len(medoids))
    small = np.flatnonzero(sizes < min_size)
    if small.size == 0 or small.size == len(medoids):
        return medoids, False
    medoids = medoids.copy()
    excluded = np.isin(labels, small) | np.isin(np.arange(len(labels)), medoids)
    for cluster in small:
        candidates = np.flatnonzero(~excluded)
        if candidates.size == 0:
            break
        pick = _draw(_capped_weights(distance, excluded), rng, candidates)
        medoids[cluster] = pick
        excluded[pick] = True
    return medoids, True


def _initial_medoids(space: Any, init: Any, n_clusters: int, rng: np.random.RandomState) -> np.ndarray:
    """Initial medoid indices (k,) by the `init` method, or `init` itself when it is an array of indices."""
    if isinstance(init, str) and init == "k-means++":
        return _kmeans_plus_plus(space, n_clusters, rng)
    if isinstance(init, str) and init == "random":
        return rng.choice(space.n_points, n_clusters, replace=False).astype(np.int64)
    return np.asarray(init, dtype=np.int64).copy()


def _assign(space: Any, medoids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Assign points to their nearest medoid, re-seeding empty clusters once with the farthest points (warns).

    Returns medoids (k,) (possibly re-seeded), labels (n,) and distance to the own medoid (n,).
    """
    distance, labels = space.nearest(medoids)
    empty = np.flatnonzero(np.bincount(labels, minlength=len(medoids)) == 0)
    if empty.size == 0:
        return medoids, labels, distance
    order = np.argsort(-distance, kind="stable")
    farthest = [int(i) for i in order if distance[i] > 0 and i not in set(medoids.tolist())][: empty.size]
    medoids = medoids.copy()
    medoids[empty[: len(farthest)]] = farthest
    warnings.warn(
        f"GeodesicKMeans: cluster(s) {empty.tolist()} became empty; re-seeded "
        f"{'with the farthest point(s) ' + str(farthest) if farthest else 'impossible: every point sits on a medoid'}"
        f"{'' if len(farthest) == empty.size else ' (too few distinct points, some stay empty)'}.",
        UserWarning,
        stacklevel=4,
    )
    distance, labels = space.nearest(medoids)
    return medoids, labels, distance


def _update(space: Any, medoids: np.ndarray, labels: np.ndarray, distance: np.ndarray, stale: np.ndarray) -> np.ndarray:
    """New medoids (k,): each `stale` cluster (members or medoid changed last round) gets its (approximate) medoid."""
    updated = medoids.copy()
    for cluster in np.flatnonzero(stale):
        members = np.flatnonzero(labels == cluster)
        if members.size:
            updated[cluster] = space.medoid(members, int(medoids[cluster]), distance)
    return updated


def _run(
    space: Any, init: Any, n_clusters: int, max_iter: int, tol: float, rng: np.random.RandomState, min_size: int = 1
) -> _Run:
    """One k-medoids run from `init` until the medoids stop moving, the inertia stalls (tol) or max_iter.

    Clusters with fewer than `min_size` members are re-seeded (at most MAX_RESEEDS_PER_CLUSTER times each per run)
    before the medoid updates start, so no cluster ends up as one isolated outlier.
    """
    started = time.perf_counter()
    medoids, labels, distance = _assign(space, _initial_medoids(space, init, n_clusters, rng))
    for _ in range(MAX_RESEEDS_PER_CLUSTER if min_size > 1 else 0):
        medoids, moved = _reseed_small(space, medoids, labels, distance, min_size, rng)
        if not moved:
            break
        medoids, labels, distance = _assign(space, medoids)
    inertia = float(np.square(distance).sum())
    timings: dict[str, Any] = {"init_s": time.perf_counter() - started, "update_s": [], "assign_s": []}
    previous, previous_medoids = np.full_like(labels, -1), np.full_like(medoids, -1)
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        started = time.perf_counter()
        stale = _changed_clusters(previous, labels, n_clusters) | (medoids != previous_medoids)
        new_medoids = _update(space, medoids, labels, distance, stale)
        timings["update_s"].append(time.perf_counter() - started)
        if np.array_equal(new_medoids, medoids):
            break
        started = time.perf_counter()
        previous, previous_medoids = labels, medoids
        medoids, labels, distance = _assign(space, new_medoids)
        new_inertia = float(np.square(distance).sum())
        timings["assign_s"].append(time.perf_counter() - started)
        stalled = inertia - new_inertia <= tol * inertia
        inertia = new_inertia
        if stalled:
            break
    return _Run(medoids, labels, distance, inertia, n_iter, timings)


def _changed_clusters(previous: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Boolean (k,): clusters whose member set differs between two labelings (their medoid must be recomputed)."""
    changed = np.zeros(n_clusters, dtype=bool)
    moved = previous != labels
    changed[np.unique(labels[moved])] = True
    changed[np.unique(previous[moved][previous[moved] >= 0])] = True
    return changed


# ------------------------------------------------------------------------------------------------ the estimator


class GeodesicKMeans(ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, BaseEstimator):
    """k-medoids clustering under geodesic distances of a latent graph (or any precomputed distance matrix).

    Parameters
    ----------
    n_clusters : number of clusters, 1 <= n_clusters <= n_samples.
    init : "k-means++" (geodesic D^2 sampling), "random", or an array (n_clusters,) of distinct sample indices.
    n_init : runs from different seeds; the one with the least inertia is kept (an array init runs once).
    max_iter : most assignment/update rounds per run.
    tol : stop when the inertia drops by at most tol * inertia in a round; 0 (default) runs until the medoids stop
        moving, which always happens (the inertia strictly decreases).
    random_state : None, int or numpy RandomState; seeds init.
    metric : "graph" (X holds latent codes (n, d); distances are shortest paths in a LatentGraph) or
        "precomputed" (X is an (n, n) distance matrix, entry (i, j) the distance from i to j).
    graph : a prebuilt LatentGraph whose codes are X (metric="graph"); None builds one in fit from the next four.
    decoder : a decoder, VAE or PullbackMetric measuring edges (also those joining new points in predict);
        None means Euclidean edge lengths, i.e. a plain kNN graph (Isomap-style geodesics).
    n_neighbors : k of the kNN graph (clipped to n_samples - 1). n_nodes : quadrature nodes per edge (Euclidean
        edges use 1, which is exact). candidates : metric-aware neighbour candidates, as in `build_latent_graph`.
    exact_medoid_size : clusters with at most this many members get the exact medoid (all members tried).
    n_medoid_candidates : members tried per larger cluster (half nearest its medoid, half nearest its mean code).
    verbose : 0 (default) silent; > 0 shows the edge-weighting bar of the graph build and a bar over the n_init
        runs on stderr.
    landmarks : None (default) or L >= 1 (metric="graph"): for large graphs, the candidates of clusters larger than
        exact_medoid_size are ranked by landmark lower bounds of their cost (L farthest-point landmarks, seeded by
        random_state; see lsg_graph.geodesics.landmarks) and only the best LANDMARK_VERIFIED are checked, by Dijkstra
        inside the cluster's induced subgraph (an upper bound of their exact cost).
    min_cluster_size : "auto" (5% of n_samples / n_clusters, rounded down; 1 below 20 points per cluster) or an int >= 1. Outliers: k-means++ draws
        with squared distances capped at their 99th percentile, and after the first assignment every cluster with
        fewer members is re-seeded (up to 3 times), so an isolated code never becomes a cluster of its own (with
        n_init > 1 such runs would otherwise win, having the least inertia). 1 turns re-seeding off.
    distances : "graph" (default) or "refined" (metric="graph"): the medoids are found on graph distances as
        always, then every training point's distance to every medoid is refined into a geodesic length (n_clusters
        * n_samples geodesics, batched; lsg_graph.distances explains the fallback to the graph distance), and the
        final labels_, inertia_ and transform/predict use those refined point-to-medoid distances.
    refine_method : the refinement method for distances="refined" (a method of refine_geodesics; default "auto").
    algorithm : "auto" (default), "medoids" (the k-medoids above) or "embedding" (metric="graph", distances="graph"):
        scikit-learn's KMeans (init, n_init, max_iter, tol and random_state passed on; an array init starts from
        those points' coordinates) on the coordinates of `lsg_graph.embedding.GeodesicEmbedding`, landmark MDS of
        the graph distances with `n_components` dimensions and `landmarks` random landmark codes (None:
        registry.DEFAULT_EMBEDDING_LANDMARKS). Centres need not be codes; medoid_indices_ are the members nearest
        each centre, transform gives distances to the centres in the embedding, and inertia_ sums the squared
        distances of all codes to their nearest centre. Outliers: while a cluster has fewer than min_cluster_size
        members, KMeans runs again with those members weighted 0, so they join their nearest cluster.
        "auto" runs "embedding" for codes of latent dimension >= AUTO_EMBEDDING_DIM (8) with metric="graph",
        distances="graph" and landmarks=None, and "medoids" otherwise (the better one on each side, measured on
        MNIST-5k: docs/estimators.md); `algorithm_` says which ran.
    n_components : embedding dimensions for algorithm="embedding" (registry.DEFAULT_EMBEDDING_COMPONENTS).
    n_jobs : torch CPU threads for fit, transform and predict (None: the automatic choice, docs/estimators.md:
        an enclosing scope, set_threads(), else the free cores; -1: all cores; k >= 1: k), restored afterwards.

    Attributes
    ----------
    labels_ (n,) int64; medoid_indices_ (k,) int64; cluster_centers_ (k, d) medoid codes, None for "precomputed"
    (use medoid_indices_); inertia_: sum of squared geodesic distances to the assigned medoid; n_iter_;
    graph_ and edge_metric_ (metric="graph"); timings_: seconds of the graph build ("graph_s"; 0-ish for a given
    graph), and of the kept run's init ("init_s"), medoid updates ("update_s", one per iteration) and assignments
    ("assign_s", one per iteration that moved a medoid), and "total_s"; n_features_in_; landmark_indices_ (L,)
    when landmarks is set ("landmarks_s" in timings_: seconds of the landmark Dijkstras, part of graph_s;
    "landmark_rank_s" / "landmark_check_s": seconds ranking and checking candidates, "landmark_checked" and
    "landmark_moves": candidates checked and medoids moved by them).
    """

    def __init__(
        self,
        n_clusters: int = DEFAULT_N_CLUSTERS,
        *,
        init: Any = "k-means++",
        n_init: int = 1,
        max_iter: int = 100,
        tol: float = 0.0,
        random_state: Any = None,
        metric: str = "graph",
        graph: LatentGraph | None = None,
        decoder: Any = None,
        n_neighbors: int = DEFAULT_K,
        n_nodes: int = DEFAULT_N_NODES,
        candidates: int = DEFAULT_CANDIDATES,
        exact_medoid_size: int = 256,
        n_medoid_candidates: int = 16,
        verbose: int = 0,
        landmarks: int | None = None,
        min_cluster_size: Any = "auto",
        distances: str = "graph",
        refine_method: str = "auto",
        algorithm: str = DEFAULT_CLUSTER_ALGORITHM,
        n_components: int = DEFAULT_EMBEDDING_COMPONENTS,
        n_jobs: int | None = None,
    ) -> None:
        """Store the parameters (validated in fit); verbose > 0 shows the graph build and the runs on stderr."""
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.metric = metric
        self.graph = graph
        self.decoder = decoder
        self.n_neighbors = n_neighbors
        self.n_nodes = n_nodes
        self.candidates = candidates
        self.exact_medoid_size = exact_medoid_size
        self.n_medoid_candidates = n_medoid_candidates
        self.verbose = verbose
        self.landmarks = landmarks
        self.min_cluster_size = min_cluster_size
        self.distances = distances
        self.refine_method = refine_method
        self.algorithm = algorithm
        self.n_components = n_components
        self.n_jobs = n_jobs

    # -------------------------------------------------------------------------------------------- fit

    def fit(self, X: Any, y: Any = None) -> GeodesicKMeans:
        """Cluster X: latent codes (n, d) for metric="graph", an (n, n) distance matrix for "precomputed".

        Parameters
        ----------
        X : array-like (n, d) or (n, n)
            Codes (metric="graph") or a distance matrix (metric="precomputed").
        y : ignored

        Returns
        -------
        GeodesicKMeans
            self, fitted.
        """
        settings = self._check_params()
        with n_jobs_threads(self.n_jobs):
            return self._fit(X, settings)

    def _fit(self, X: Any, settings: dict[str, Any]) -> GeodesicKMeans:
        """fit with checked parameters, inside the n_jobs thread scope."""
        started = time.perf_counter()
        with sklearn_errors():
            space = self._fit_space(X)
        graph_s = time.perf_counter() - started
        n_samples = space.n_points
        upper = f"n_samples] (n_samples = {n_samples})"
        n_clusters = check_int_param(self.n_clusters, "n_clusters", OWNER, 1, n_samples, upper)
        init = self._check_init(space.n_points, n_clusters)
        self.algorithm_ = self._resolved_algorithm()
        if self.algorithm_ == "embedding":
            self._fit_embedding(n_clusters, init, settings, graph_s)
            return self
        rng = check_random_state(self.random_state)
        n_runs = 1 if not isinstance(init, str) else settings["n_init"]
        min_size = self._check_min_cluster_size(n_samples, n_clusters)
        runs = [
            _run(space, init, n_clusters, settings["max_iter"], settings["tol"], rng, min_size)
            for _ in track(range(n_runs), "geodesic k-means runs", unit="run", show=bool(self.verbose))
        ]
        best = min(runs, key=lambda run: run.inertia)
        self._set_fitted(space, best, graph_s)
        if self.distances == "refined":
            self._refine_fitted()
        return self

    def _resolved_algorithm(self) -> str:
        """The algorithm that runs: `algorithm`, with "auto" resolved (see the class docstring)."""
        if self.algorithm != "auto":
            return self.algorithm
        graph_only = self.metric == "graph" and self.distances == "graph" and self.landmarks is None
        return "embedding" if graph_only and self.n_features_in_ >= AUTO_EMBEDDING_DIM else "medoids"

    def _fit_embedding(self, n_clusters: int, init: Any, settings: dict[str, Any], graph_s: float) -> None:
        """algorithm="embedding": KMeans on the GeodesicEmbedding coordinates of the graph's codes."""
        from sklearn.cluster import KMeans

        rng = check_random_state(self.random_state)
        started = time.perf_counter()
        landmarks = DEFAULT_EMBEDDING_LANDMARKS if self.landmarks is None else self.landmarks
        self.embedding_ = GeodesicEmbedding(
            self.n_components, n_landmarks=landmarks, graph=self.graph_, decoder=self.decoder,
            random_state=int(rng.randint(2**31 - 1)),
        ).fit(self.graph_.codes)
        coordinates = self.embedding_.embedding_
        embedding_s = time.perf_counter() - started
        started = time.perf_counter()
        start = init if isinstance(init, str) else coordinates[init]
        kmeans = KMeans(n_clusters, init=start, n_init=settings["n_init"] if isinstance(init, str) else 1,
                        max_iter=settings["max_iter"], tol=settings["tol"], random_state=rng)
        fitted = _kmeans_without_small_clusters(kmeans, coordinates, self._check_min_cluster_size(len(coordinates), n_clusters))
        self.centroids_ = fitted.cluster_centers_
        self._medoid_distances = _euclidean(self.centroids_, coordinates)
        self.labels_ = np.argmin(self._medoid_distances, axis=0).astype(np.int64)
        self.inertia_ = float(np.square(self._medoid_distances.min(axis=0)).sum())
        self.n_iter_ = int(fitted.n_iter_)
        self.medoid_indices_ = _nearest_members(self._medoid_distances, self.labels_)
        self.cluster_centers_ = self.graph_.codes[self.medoid_indices_].copy()
        kmeans_s = time.perf_counter() - started
        self.timings_ = {"graph_s": graph_s, "embedding_s": embedding_s, "kmeans_s": kmeans_s,
                         "total_s": graph_s + embedding_s + kmeans_s}

    def _refine_fitted(self) -> None:
        """Refine every training point's distance to every medoid; labels_ and inertia_ follow the refined ones."""
        k, n = self._medoid_distances.shape
        medoids = np.repeat(self.medoid_indices_, n)
        pairs = np.column_stack([medoids, np.tile(np.arange(n), k)])
        tally = RefineTally()
        refined = refine_pair_distances(self.edge_metric_, self.graph_, pairs, self._medoid_distances.reshape(-1),
                                        self.refine_method, tally).reshape(k, n)
        tally.warn(OWNER, self.refine_method)
        self._medoid_distances = refined
        self.labels_ = np.argmin(refined, axis=0).astype(np.int64)
        self.inertia_ = float(np.square(refined.min(axis=0)).sum())
        self.timings_["refine_s"] = tally.seconds
        self.timings_["total_s"] += tally.seconds

    def _check_params(self) -> dict[str, Any]:
        """Validate the parameters that do not depend on the data; return the checked values."""
        if not isinstance(self.metric, str) or self.metric not in METRICS:
            raise param_error(OWNER, "metric", f"a str among {set(METRICS)}", self.metric)
        if self.random_state is not None and not isinstance(self.random_state, (int, np.integer)):
            if not isinstance(self.random_state, np.random.RandomState):
                rule = "an int, an instance of 'numpy.random.RandomState' or None"
                raise param_error(OWNER, "random_state", rule, self.random_state)
        if not isinstance(self.algorithm, str) or self.algorithm not in CLUSTER_ALGORITHMS:
            raise param_error(OWNER, "algorithm", f"a str among {set(CLUSTER_ALGORITHMS)}", self.algorithm)
        if self.algorithm == "embedding":
            check_int_param(self.n_components, "n_components", OWNER, 1)
            if self.landmarks is not None:  # the embedding's landmark count: MDS needs at least two
                check_int_param(self.landmarks, "landmarks", OWNER, 2)
            if self.metric != "graph":
                raise param_error(OWNER, "metric", "'graph' for algorithm='embedding'", self.metric)
            if self.distances != "graph":
                raise param_error(OWNER, "distances", "'graph' for algorithm='embedding'", self.distances)
        if check_distances(self.distances, OWNER) == "refined":
            check_refine_method(self.refine_method, OWNER)
            if self.metric == "precomputed":
                raise param_error(OWNER, "distances", "'graph' for metric='precomputed' (no curves to refine)",
                                  self.distances)
        check_int_param(self.exact_medoid_size, "exact_medoid_size", OWNER, 1)
        check_int_param(self.n_medoid_candidates, "n_medoid_candidates", OWNER, 1)
        if self.landmarks is not None:
            check_int_param(self.landmarks, "landmarks", OWNER, 1)
        return {
            "n_init": check_int_param(self.n_init, "n_init", OWNER, 1),
            "max_iter": check_int_param(self.max_iter, "max_iter", OWNER, 1),
            "tol": check_float_param(self.tol, "tol", OWNER),
        }

    def _check_min_cluster_size(self, n_samples: int, n_clusters: int) -> int:
        """min_cluster_size as an int: "auto" is int(MIN_CLUSTER_FRACTION * n_samples / n_clusters) (at least 1), capped so
        that every cluster can have it (1 turns re-seeding off)."""
        if isinstance(self.min_cluster_size, str) and self.min_cluster_size == "auto":
            size = max(1, int(MIN_CLUSTER_FRACTION * n_samples / n_clusters))
        else:
            size = check_int_param(self.min_cluster_size, "min_cluster_size", OWNER, 1)
        return max(1, min(size, n_samples // n_clusters))

    def _check_init(self, n_samples: int, n_clusters: int) -> Any:
        """The init method name, or an int64 array (n_clusters,) of distinct indices in [0, n_samples)."""
        if isinstance(self.init, str):
            if self.init not in INIT_METHODS:
                raise param_error(OWNER, "init", f"a str among {set(INIT_METHODS)} or an array-like", self.init)
            return self.init
        rule = f"an array-like of {n_clusters} distinct sample indices in [0, {n_samples})"
        try:
            indices = np.asarray(self.init)
        except Exception as exc:  # noqa: BLE001 - any conversion failure is the user's input
            raise param_error(OWNER, "init", rule, self.init) from exc
        valid = indices.shape == (n_clusters,) and np.issubdtype(indices.dtype, np.integer)
        if not valid or len(np.unique(indices)) != n_clusters or indices.min() < 0 or indices.max() >= n_samples:
            raise param_error(OWNER, "init", rule, self.init)
        return indices.astype(np.int64)

    def _fit_space(self, X: Any) -> Any:
        """Validate X, build or check the graph (metric="graph") or the distance matrix; return the distance space."""
        if self.metric == "precomputed":
            if self.landmarks is not None:
                raise param_error(OWNER, "landmarks", "None for metric='precomputed'", self.landmarks)
            for stale in ("graph_", "edge_metric_", "landmark_indices_"):  # left by an earlier fit with metric="graph"
                self.__dict__.pop(stale, None)
            X = validate_data(self, X, dtype=np.float64, ensure_all_finite=False)
            return _PrecomputedSpace(check_distance_matrix(X))
        X = validate_data(self, X, dtype=np.float64)
        n_samples = X.shape[0]
        if n_samples < 2:
            rule = f"an int in the range [1, n_samples] and n_samples >= 2 for a graph (n_samples = {n_samples})"
            raise param_error(OWNER, "n_clusters", rule, self.n_clusters)
        self.graph_, self.edge_metric_ = fit_graph(
            X,
            graph=self.graph,
            decoder=self.decoder,
            n_neighbors=self.n_neighbors,
            n_nodes=self.n_nodes,
            candidates=self.candidates,
            owner=OWNER,
            verbose=self.verbose,
            n_jobs=self.n_jobs,
        )
        for stale in ("landmark_indices_", "embedding_", "centroids_"):  # left by an earlier fit
            self.__dict__.pop(stale, None)
        if self.landmarks is None or self.algorithm == "embedding":
            return _GraphSpace(self.graph_, self.exact_medoid_size, self.n_medoid_candidates)
        n_landmarks = check_int_param(self.landmarks, "landmarks", OWNER, 1, n_samples, "n_samples]")
        started = time.perf_counter()
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        table = select_landmarks(self.graph_, n_landmarks, random_state=seed)
        self.landmark_indices_ = table.indices.copy()
        space = _LandmarkGraphSpace(self.graph_, self.exact_medoid_size, self.n_medoid_candidates, table)
        space.seconds = time.perf_counter() - started
        return space

    def _set_fitted(self, space: Any, run: _Run, graph_s: float) -> None:
        """Store the fitted attributes of the kept run."""
        self.labels_ = run.labels.astype(np.int64)
        self.medoid_indices_ = run.medoids.astype(np.int64)
        self.inertia_ = run.inertia
        self.n_iter_ = run.n_iter
        self._medoid_distances = space.to_medoids(self.medoid_indices_)
        graph = getattr(space, "graph", None)
        self.cluster_centers_ = None if graph is None else graph.codes[self.medoid_indices_].copy()
        rounds = float(np.sum(run.timings["update_s"]) + np.sum(run.timings["assign_s"]))
        self.timings_ = {"graph_s": graph_s, **run.timings, "total_s": graph_s + run.timings["init_s"] + rounds}
        if isinstance(space, _LandmarkGraphSpace):
            self.timings_["landmarks_s"] = space.seconds
            self.timings_.update(space.stats)

    # -------------------------------------------------------------------------------------------- use

    def transform(self, X: Any) -> np.ndarray:
        """Geodesic distances (m, n_clusters) float64 from new points to the medoids.

        metric="graph": X holds codes (m, d), each attached to the graph as a leaf (its k nearest training codes);
        metric="precomputed": X is (m, n_train), distances to the training points.

        Parameters
        ----------
        X : array-like (m, d) or (m, n_train)
            New codes (metric="graph") or their distances to the training points (metric="precomputed").

        Returns
        -------
        ndarray (m, n_clusters) float64
            Distances to the medoids.
        """
        with sklearn_errors():
            return self._transform(X)

    def _transform(self, X: Any) -> np.ndarray:
        """transform without the error translation."""
        check_is_fitted(self, "medoid_indices_")
        if self.metric == "precomputed":
            distances = check_distance_matrix(check_array(X, dtype=np.float64, ensure_all_finite=False), square=False)
            validate_data(self, X, reset=False, skip_check_array=True)  # n_features_in_ = n_train, feature names
            return distances[:, self.medoid_indices_]
        X = validate_data(self, X, dtype=np.float64, reset=False)
        if getattr(self, "algorithm_", "medoids") == "embedding":
            with n_jobs_threads(self.n_jobs):
                return _euclidean(self.embedding_.transform(X), self.centroids_)
        with n_jobs_threads(self.n_jobs):
            attached = self.graph_.attach(X, self.edge_metric_)
            n = self.graph_.n_points
            graph_distances = leaf_distances_to(self._graph_medoid_distances(), leaf_edges(attached, n))
            if getattr(self, "distances", "graph") != "refined":
                return graph_distances
            tally = RefineTally()
            refined = refine_leaf_distances(self.edge_metric_, attached, n, self.medoid_indices_, graph_distances,
                                            self.refine_method, tally)
        tally.warn(OWNER, self.refine_method)
        return refined

    def _graph_medoid_distances(self) -> np.ndarray:
        """Graph distances (k, n) from the medoids to every training node (the refined ones replace them in fit)."""
        if getattr(self, "distances", "graph") != "refined":
            return self._medoid_distances
        return dijkstra_rows(self.graph_.weights, self.medoid_indices_)

    def predict(self, X: Any) -> np.ndarray:
        """Index (m,) int64 of the geodesically nearest medoid of each new point (see transform for X).

        Parameters
        ----------
        X : array-like (m, d) or (m, n_train)
            New codes (metric="graph") or their distances to the training points (metric="precomputed").

        Returns
        -------
        ndarray (m,) int64
            Cluster labels.
        """
        return np.argmin(self.transform(X), axis=1).astype(np.int64)

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit and return labels_ (n,).

        Parameters
        ----------
        X : array-like (n, d) or (n, n)
            Codes (metric="graph") or a distance matrix (metric="precomputed").
        y : ignored

        Returns
        -------
        ndarray (n,) int64
            Cluster labels of the training points.
        """
        return self.fit(X, y).labels_

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit and return the training points' geodesic distances to the medoids (n, n_clusters).

        Parameters
        ----------
        X : array-like (n, d) or (n, n)
            Codes (metric="graph") or a distance matrix (metric="precomputed").
        y : ignored

        Returns
        -------
        ndarray (n, n_clusters) float64
            Distances of the training points to the medoids.
        """
        return self.fit(X, y)._medoid_distances.T.copy()

    @property
    def _n_features_out(self) -> int:
        """One output column per cluster."""
        return int(self.medoid_indices_.shape[0])

    def save(self, path: Any) -> Any:
        """Write the fitted estimator to the directory `path` (safetensors + JSON, no pickle); see lsg_graph.estimator_io.

        Parameters
        ----------
        path : str or Path
            A new directory, or one holding an earlier save (replaced).

        Returns
        -------
        Path
            The directory written.
        """
        from lsg_graph.estimator_io import save_kmeans

        return save_kmeans(self, path)

    @classmethod
    def load(cls, path: Any, decoder: Any = None) -> GeodesicKMeans:
        """Read a fitted estimator saved by `save`, validated; pass the decoder it was fitted with (not stored).

        Parameters
        ----------
        path : str or Path
            A directory written by `save`.
        decoder : decoder, VAE or PullbackMetric, optional
            The decoder it was fitted with (None if it was fitted without one).

        Returns
        -------
        GeodesicKMeans
            The fitted estimator.
        """
        from lsg_graph.estimator_io import load_estimator

        return load_estimator(path, decoder, expected=cls)

    def __sklearn_tags__(self) -> Any:
        """Pairwise, non-negative input for metric="precomputed"; float64 output."""
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = self.metric == "precomputed"
        tags.input_tags.positive_only = self.metric == "precomputed"
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags


# ------------------------------------------------------------------------------------------------ helpers


def _kmeans_without_small_clusters(kmeans: Any, coordinates: np.ndarray, min_size: int) -> Any:
    """kmeans fitted on coordinates (n, m); while a cluster has fewer than min_size members, fit again with the
    members of such clusters weighted 0 (up to MAX_RESEEDS_PER_CLUSTER times per cluster), so that isolated codes
    join their nearest cluster instead of holding a centre of their own."""
    weights = np.ones(len(coordinates))
    fitted = kmeans.fit(coordinates)
    for _ in range(MAX_RESEEDS_PER_CLUSTER * kmeans.n_clusters):
        labels = fitted.predict(coordinates)
        sizes = np.bincount(labels, minlength=kmeans.n_clusters)
        small = np.isin(labels, np.flatnonzero(sizes < min_size))
        if not small.any() or np.count_nonzero(weights * ~small) < kmeans.n_clusters:
            break
        weights[small] = 0.0
        fitted = kmeans.fit(coordinates, sample_weight=weights)
    return fitted


def _euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances (len(a), len(b)) between the rows of a and b."""
    from scipy.spatial.distance import cdist

    return cdist(a, b)


def _nearest_members(distances: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per cluster j, the member nearest its centre (distances (k, n)); the nearest point overall if j is empty."""
    chosen = np.empty(distances.shape[0], dtype=np.int64)
    for j in range(distances.shape[0]):
        members = np.flatnonzero(labels == j)
        chosen[j] = members[np.argmin(distances[j, members])] if len(members) else int(np.argmin(distances[j]))
    return chosen


def check_distance_matrix(X: np.ndarray, square: bool = True) -> np.ndarray:
    """Refuse a distance matrix with NaN, negative or infinite entries, or that is not square (if asked).

    Infinite entries mean disconnected points: the message names the points outside the largest connected group.
    """
    if np.isnan(X).any():
        rows = np.unique(np.argwhere(np.isnan(X))[:, 0])[:10].tolist()
        raise InvalidInput(f"The precomputed distance matrix X contains NaN (rows {rows}); distances must be numbers.")
    if (X < 0).any():
        first = tuple(np.argwhere(X < 0)[0].tolist())
        raise InvalidInput(
            f"Negative values in data passed to {OWNER} (metric='precomputed'): distances must be >= 0; "
            f"X[{first[0]}, {first[1]}] = {X[first]:g}."
        )
    if np.isinf(X).any():
        raise InvalidInput(_disconnected_message(X, square and X.shape[0] == X.shape[1]))
    if square and X.shape[0] != X.shape[1]:
        raise InvalidInput(f"A precomputed distance matrix X must be square (n, n); got shape {X.shape}.")
    return X


def _disconnected_message(X: np.ndarray, square: bool) -> str:
    """Name the points that infinite distances cut off (from the largest group, or rows with an inf entry)."""
    if not square:
        rows = np.unique(np.argwhere(np.isinf(X))[:, 0])
        return f"X has infinite distances: point(s) {rows[:10].tolist()} are disconnected from some training points."
    n_groups, group_of = connected_components(np.isfinite(X), directed=False)
    largest = np.argmax(np.bincount(group_of))
    outside = np.flatnonzero(group_of != largest)
    if outside.size == 0:
        rows = np.unique(np.argwhere(np.isinf(X))[:, 0])
        return f"X has infinite distances in the row(s) of point(s) {rows[:10].tolist()}; all must be finite."
    more = " ..." if outside.size > 10 else ""
    return (
        f"X has infinite distances: the points form {n_groups} disconnected groups; point(s) "
        f"{outside[:10].tolist()}{more} ({outside.size} in all) are disconnected from the largest group."
    )


def clustering_f_measure(labels_true: Any, labels_pred: Any) -> float:
    """Class-to-cluster F-measure in [0, 1]: sum over classes c of (n_c / n) * max over clusters k of F1(c, k).

    F1(c, k) = 2 P R / (P + R) with precision P = n_ck / n_k and recall R = n_ck / n_c (Larsen & Aone, 1999).
    """
    table = contingency_matrix(labels_true, labels_pred).astype(np.float64)  # (classes, clusters)
    class_sizes, cluster_sizes = table.sum(axis=1, keepdims=True), table.sum(axis=0, keepdims=True)
    f1 = 2.0 * table / (class_sizes + cluster_sizes)  # 2 P R / (P + R) simplifies to 2 n_ck / (n_c + n_k)
    return float((class_sizes[:, 0] / table.sum() * f1.max(axis=1)).sum())


def clustering_scores(labels_true: Any, labels_pred: Any) -> dict[str, float]:
    """ARI, NMI and class-to-cluster F-measure of a clustering against known labels."""
    return {
        "ari": float(adjusted_rand_score(labels_true, labels_pred)),
        "nmi": float(normalized_mutual_info_score(labels_true, labels_pred)),
        "f_measure": clustering_f_measure(labels_true, labels_pred),
    }


@dataclass(frozen=True)
class ClusterResult:
    """Geodesic k-medoids of a graph: labels (n,), medoid indices (k,) and codes (k, d), inertia, scores vs labels."""

    labels: np.ndarray
    medoid_indices: np.ndarray
    medoid_codes: np.ndarray
    inertia: float
    n_iter: int
    seconds: float
    scores: dict[str, float] | None

    @property
    def cluster_sizes(self) -> np.ndarray:
        """Members per cluster (k,)."""
        return np.bincount(self.labels, minlength=len(self.medoid_indices))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no per-point arrays)."""
        return {
            "n_clusters": int(len(self.medoid_indices)),
            "medoid_indices": self.medoid_indices.tolist(),
            "cluster_sizes": self.cluster_sizes.tolist(),
            "inertia": self.inertia,
            "n_iter": self.n_iter,
            "seconds": round(self.seconds, 4),
            "scores": self.scores,
        }


def cluster_latent_graph(
    graph: LatentGraph,
    n_clusters: int = DEFAULT_N_CLUSTERS,
    *,
    init: str = "k-means++",
    n_init: int = 1,
    max_iter: int = 100,
    random_state: int | None = 0,
    verbose: int = 0,
    algorithm: str = DEFAULT_CLUSTER_ALGORITHM,
) -> ClusterResult:
    """Geodesic k-means of a saved or built LatentGraph (the CLI's one call; `algorithm` as for GeodesicKMeans);
    scores when the graph has labels."""
    estimator = GeodesicKMeans(
        n_clusters, init=init, n_init=n_init, max_iter=max_iter, random_state=random_state, graph=graph,
        verbose=verbose, algorithm=algorithm,
    ).fit(graph.codes)
    scores = None if graph.labels is None else clustering_scores(graph.labels, estimator.labels_)
    return ClusterResult(
        estimator.labels_,
        estimator.medoid_indices_,
        estimator.cluster_centers_,
        estimator.inertia_,
        estimator.n_iter_,
        estimator.timings_["total_s"],
        scores,
    )
