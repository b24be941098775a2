"""Geodesic distances between latent codes, measured on a LatentGraph, in the manner of scikit-learn.

`geodesic_distances(X, Y)` is a pairwise function like `sklearn.metrics.pairwise_distances`; `GeodesicDistance` is
a transformer whose output feeds estimators with `metric="precomputed"` (KNeighborsClassifier, DBSCAN,
AgglomerativeClustering) and, through `geodesic_affinity`, spectral methods with `affinity="precomputed"`.

Graph distances are shortest-path lengths in the kNN graph of the training codes, whose edges carry the metric
length of the straight segment under the decoder's pullback metric. With `decoder=None` the edges carry their
Euclidean length instead: a plain kNN graph, whose geodesics are Isomap's. A new point is joined to its k nearest
training codes (`LatentGraph.attach`) as a *leaf*: its distance to training node j is min over its neighbours t of
(edge length to t + graph distance from t to j). Paths never pass through other new points, so a new point's row
does not depend on which other points are transformed with it.

Refined distances (`distances="refined"`): graph distances bound the geodesic distance from above and are loose
where kNN paths zig-zag. With "refined", the graph path of every pair that is returned is refined into a geodesic
(lsg_graph.geodesics.refine_geodesics, batched over the pairs, `refine_method`), and its length replaces the graph
distance when the refinement converged and the curve is no longer than the graph path; otherwise that pair keeps its
graph distance (one ConvergenceWarning counts those). So refined <= graph for every pair, and each refined value is
the length of an actual curve. The pairs of new points are refined in one batch on the training graph with edges out
of the new points only (`leaf_graph`), so their paths never pass through other new points and rows still do not
depend on each other. Measurements: docs/estimators.md.
"""

from __future__ import annotations

import time
import warnings
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import dijkstra
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from lsg_graph._threads import n_jobs_threads
from lsg_graph._validation import check_float_param, check_int_param, param_error, sklearn_errors
from lsg_graph.errors import ConvergenceWarning, DisconnectedGraph, InvalidInput
from lsg_graph.graph.latent_graph import LatentGraph, build_latent_graph
from lsg_graph.manifolds import LinearDecoder
from lsg_graph.metric import PullbackMetric, as_metric
from lsg_graph.registry import DEFAULT_CANDIDATES, DEFAULT_K, DEFAULT_N_NODES

BLOCK_BYTES = 64 * 2**20  # bound on one dense block of Dijkstra distances (rows x n float64)
DISTANCE_KINDS = {
    "graph": "shortest-path lengths in the kNN graph (upper bounds of the geodesic distances)",
    "refined": "graph paths refined into geodesics; a pair keeps its graph distance where refinement fails",
}


# ------------------------------------------------------------------------------------------------ graph helpers


EuclideanDecoder = LinearDecoder.identity  # the former identity decoder's name: LinearDecoder(I_d)


def edge_metric(decoder: Any, latent_dim: int) -> PullbackMetric:
    """The metric that measures edges: PullbackMetric(decoder), or Euclidean (identity decoder) when it is None."""
    if decoder is None:
        return PullbackMetric(LinearDecoder.identity(latent_dim))
    metric = as_metric(decoder, np.empty((0, latent_dim)))  # d from X on a copy: the parameter is not changed
    if metric.latent_dim != latent_dim:
        raise InvalidInput(
            f"The decoder expects latent codes of dimension {metric.latent_dim}; X has {latent_dim} columns."
        )
    return metric


def fit_graph(
    codes: np.ndarray,
    *,
    graph: LatentGraph | None,
    decoder: Any,
    n_neighbors: int,
    n_nodes: int,
    candidates: int,
    owner: str,
    verbose: Any = 0,
    n_jobs: Any = None,
) -> tuple[LatentGraph, PullbackMetric]:
    """The graph over `codes` (n, d), built (k = min(n_neighbors, n - 1)) or checked when given, and its edge metric."""
    metric = edge_metric(decoder, codes.shape[1])
    if graph is not None:
        check_graph_codes(graph, codes, owner)
        check_connected(graph)
        return graph, metric
    n_neighbors = check_int_param(n_neighbors, "n_neighbors", owner, 1)
    n_nodes = check_int_param(n_nodes, "n_nodes", owner, 1)
    candidates = check_int_param(candidates, "candidates", owner, 1)
    if codes.shape[0] < 2:
        raise InvalidInput(
            f"{owner} builds a kNN graph and needs at least 2 samples; got n_samples = {codes.shape[0]}."
        )
    k = min(n_neighbors, codes.shape[0] - 1)
    nodes = 1 if decoder is None else n_nodes  # one Gauss-Legendre node is exact for a constant metric
    built = build_latent_graph(metric, codes, k=k, n_nodes=nodes, candidates=candidates, device="cpu",
                               progress=bool(verbose), n_jobs=n_jobs)
    return built, metric


def check_graph_codes(graph: Any, codes: np.ndarray, owner: str) -> None:
    """Refuse a `graph` that is not a LatentGraph over exactly the codes X (n, d)."""
    if not isinstance(graph, LatentGraph):
        raise param_error(owner, "graph", "a LatentGraph or None", graph)
    if graph.codes.shape != codes.shape or not np.allclose(graph.codes, codes, rtol=1e-6, atol=1e-6):
        raise InvalidInput(
            f"X must be the codes of the given graph: the graph holds codes of shape {graph.codes.shape}, "
            f"X has shape {codes.shape}" + ("" if graph.codes.shape != codes.shape else " and different values") + "."
        )


def check_connected(graph: LatentGraph) -> None:
    """Raise DisconnectedGraph naming the nodes outside the largest component, if the graph is not connected."""
    n_components, component_of = graph.components()
    if n_components == 1:
        return
    largest = np.argmax(np.bincount(component_of))
    outside = np.flatnonzero(component_of != largest)
    raise DisconnectedGraph(
        f"The graph has {n_components} connected components; node(s) {outside[:10].tolist()}"
        f"{' ...' if len(outside) > 10 else ''} ({len(outside)} in all) cannot reach the largest one. "
        "Build it with connect='bridge' (the default) or a larger k."
    )


def dijkstra_rows(weights: sp.csr_matrix, sources: np.ndarray, limit: float = np.inf) -> np.ndarray:
    """Graph distances (s, n) from each source node over symmetric CSR `weights` (inf beyond `limit`)."""
    return np.atleast_2d(dijkstra(weights, directed=True, indices=np.asarray(sources, dtype=np.int64), limit=limit))


def block_rows(n_columns: int, block_bytes: int = BLOCK_BYTES) -> int:
    """Rows of a float64 block with `n_columns` columns that fit in `block_bytes` (at least 1)."""
    return max(1, block_bytes // (8 * max(1, n_columns)))


def attached_edges(graph: LatentGraph, metric: PullbackMetric, new_codes: np.ndarray) -> sp.csr_matrix:
    """Edges (m, n) CSR from each new code to its k nearest training nodes, with their metric lengths."""
    return leaf_edges(graph.attach(new_codes, metric), graph.n_points)


def leaf_edges(attached: LatentGraph, n_train: int) -> sp.csr_matrix:
    """The edges (m, n_train) CSR of the m nodes appended to a training graph of n_train nodes (LatentGraph.attach)."""
    return attached.weights[n_train:, :n_train].tocsr()


def leaf_distances_to(sources_to_train: np.ndarray, edges: sp.csr_matrix) -> np.ndarray:
    """Distances (m, s) from m new leaves to s targets: min over leaf edges (leaf, t) of length + distance(t, target).

    sources_to_train: (s, n) graph distances of the targets to every training node; edges: (m, n) CSR leaf edges.
    """
    if edges.nnz == 0:
        return np.full((edges.shape[0], sources_to_train.shape[0]), np.inf)
    through = edges.data[:, None] + sources_to_train[:, edges.indices].T  # (nnz, s)
    counts = np.diff(edges.indptr)
    result = np.full((edges.shape[0], sources_to_train.shape[0]), np.inf)
    filled = counts > 0
    result[filled] = np.minimum.reduceat(through, edges.indptr[:-1][filled], axis=0)
    return result


def leaf_distances_to_all(weights: sp.csr_matrix, edges: sp.csr_matrix) -> np.ndarray:
    """Distances (m, n) from m new leaves (edges (m, n) CSR) to every training node, one directed Dijkstra per block."""
    n, m = weights.shape[0], edges.shape[0]
    result = np.empty((m, n))
    step = block_rows(n)
    for start in range(0, m, step):
        block = edges[start : start + step]
        b = block.shape[0]
        augmented = sp.bmat([[weights, sp.csr_matrix((n, b))], [block, sp.csr_matrix((b, b))]], format="csr")
        result[start : start + b] = dijkstra_rows(augmented, n + np.arange(b))[:, :n]
    return result


def all_pairs(graph: LatentGraph) -> np.ndarray:
    """All-pairs graph distances (n, n) float64 (n^2 memory: use on training sets that fit)."""
    return dijkstra_rows(graph.weights, np.arange(graph.n_points))


# ------------------------------------------------------------------------------------------------ refined distances


def check_distances(value: Any, owner: str) -> str:
    """The `distances` parameter: a key of DISTANCE_KINDS, else a sklearn-worded InvalidInput."""
    if not isinstance(value, str) or value not in DISTANCE_KINDS:
        raise param_error(owner, "distances", f"a str among {sorted(DISTANCE_KINDS)}", value)
    return value


def check_refine_method(value: Any, owner: str) -> str:
    """The `refine_method` parameter: a refinement method of lsg_graph.geodesics.refine other than "none"."""
    from lsg_graph.geodesics.refine import REFINE_METHODS

    methods = sorted(name for name in REFINE_METHODS if name != "none")
    if not isinstance(value, str) or value not in methods:
        raise param_error(owner, "refine_method", f"a str among {methods}", value)
    return value


@dataclass
class RefineTally:
    """Counts over the refined pairs of one call: refined, kept the graph distance (not converged), seconds."""

    n_pairs: int = 0
    n_unconverged: int = 0
    seconds: float = 0.0

    def warn(self, owner: str, method: str) -> None:
        """One ConvergenceWarning when some pairs kept their graph distance."""
        if self.n_unconverged:
            warnings.warn(
                f"{owner}: refinement ({method!r}) did not converge for {self.n_unconverged} of {self.n_pairs} pairs; "
                "they keep their graph distances (try another refine_method, or more n_neighbors).",
                ConvergenceWarning,
                stacklevel=3,
            )


def refine_pair_distances(
    metric: PullbackMetric, graph: LatentGraph, pairs: np.ndarray, graph_distances: np.ndarray, method: str,
    tally: RefineTally,
) -> np.ndarray:
    """Refined distances (m,) of node pairs (m, 2) of `graph`, graph_distances (m,) where refinement fails.

    Pairs with equal end points, zero or infinite graph distance keep their graph distance unrefined. A refined
    length is used only when its refinement converged and it is no longer than the graph distance.
    """
    from lsg_graph.geodesics.refine import refine_geodesics

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    result = np.asarray(graph_distances, dtype=np.float64).reshape(-1).copy()
    todo = np.flatnonzero((pairs[:, 0] != pairs[:, 1]) & np.isfinite(result) & (result > 0))
    if todo.size == 0:
        return result
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # counted in the tally, warned once by the caller
        results = refine_geodesics(metric, graph, pairs[todo], method=method)
    lengths = np.array([item.length for item in results], dtype=np.float64)
    converged = np.array([bool(item.converged) for item in results])
    usable = converged & np.isfinite(lengths) & (lengths <= result[todo])
    result[todo[usable]] = lengths[usable]
    tally.n_pairs += int(todo.size)
    tally.n_unconverged += int((~converged).sum())
    tally.seconds += time.perf_counter() - started
    return result


def refine_leaf_distances(
    metric: PullbackMetric, attached: LatentGraph, n_train: int, targets: np.ndarray, graph_distances: np.ndarray,
    method: str, tally: RefineTally,
) -> np.ndarray:
    """Refined distances (m, s) from the m attached nodes of `attached` to the training nodes `targets` (s,).

    graph_distances (m, s): the leaf graph distances (the fallback). All m s pairs are refined in one batch on
    `leaf_graph(attached, n_train)`, where no path can pass through another new point, so a new point's row does
    not depend on the other new points.
    """
    targets = np.asarray(targets, dtype=np.int64)
    graph_distances = np.asarray(graph_distances, dtype=np.float64)
    m = graph_distances.shape[0]
    pairs = np.column_stack([np.repeat(n_train + np.arange(m), len(targets)), np.tile(targets, m)])
    refined = refine_pair_distances(metric, leaf_graph(attached, n_train), pairs, graph_distances.reshape(-1), method,
                                    tally)
    return refined.reshape(graph_distances.shape)


def leaf_graph(attached: LatentGraph, n_train: int) -> LatentGraph:
    """`attached` without its edges into the new nodes: new nodes are sources only (edges new -> training).

    Shortest paths (Dijkstra on the CSR rows, as lsg_graph.geodesics.shortest runs it) from a new node then follow
    training edges only: the leaf paths of the module docs.
    """
    coo = attached.weights.tocoo()
    keep = ~((coo.row < n_train) & (coo.col >= n_train))
    weights = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=attached.weights.shape)
    return LatentGraph(attached.codes, weights, None, attached.params)


# ------------------------------------------------------------------------------------------------ public API


class GeodesicDistance(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Transformer: codes (m, d) -> geodesic distances (m, n_train) to the training codes, for metric="precomputed".

    fit(X) builds the kNN graph over the training codes X (n_train, d) (`n_neighbors`, clipped to n_train - 1;
    edge lengths from `decoder` with `n_nodes` quadrature nodes; `candidates` as in `build_latent_graph`), or
    takes `graph`, a prebuilt LatentGraph whose codes are X. `decoder` is a decoder, a VAE or a PullbackMetric;
    None means Euclidean edge lengths (a plain kNN graph, Isomap's geodesics). It also measures the edges that
    join new points in transform, so pass the one a prebuilt graph was built with.
    fit_transform(X) returns the training distances (n_train, n_train) (symmetric, zero diagonal);
    transform(X_new) returns (m, n_train), each new point joined to the graph as a leaf (see the module docs).
    Distances are in the metric's length units (decoder output units), float64. verbose > 0 shows the edge-weighting
    bar of fit on stderr.

    distances: "graph" (default; shortest-path lengths, upper bounds) or "refined": every returned distance is the
    length of its graph path refined into a geodesic by `refine_method` (a method of
    lsg_graph.geodesics.refine_geodesics, default "auto"), or the graph distance where that did not converge (see the
    module docs). Refinement costs one geodesic per returned entry: n_train (n_train - 1) / 2 in fit_transform,
    m n_train in transform; use it on small sets or through GeodesicKMeans (distances to the medoids only).
    n_jobs: torch CPU threads for fit and transform (None: the automatic choice, docs/estimators.md: an enclosing
    scope, set_threads(), else the free cores; -1: all cores; k >= 1: k), restored afterwards.

    Parameters
    ----------
    decoder : decoder, VAE or PullbackMetric, optional
        Measures the edges (and the edges of new points in transform); None: Euclidean edge lengths.
    n_neighbors : int, default registry.DEFAULT_K
        Neighbours per code in the graph, clipped to n_train - 1.
    n_nodes : int, default registry.DEFAULT_N_NODES
        Gauss-Legendre nodes per edge.
    candidates : int, default registry.DEFAULT_CANDIDATES
        Metric-aware neighbours: candidates * n_neighbors Euclidean neighbours measured, the shortest kept.
    graph : LatentGraph, optional
        A prebuilt graph whose codes are the training codes (then no graph is built).
    verbose : int, default 0
        > 0: the edge-weighting progress bar of fit on stderr.
    distances : {"graph", "refined"}, default "graph"
        Shortest-path lengths, or those paths refined into geodesics.
    refine_method : str, default "auto"
        Refinement method with distances="refined" (not "none").
    n_jobs : int, optional
        torch CPU threads for fit and transform (see above).

    Attributes
    ----------
    graph_ : LatentGraph
        The graph over the training codes.
    edge_metric_ : PullbackMetric
        The metric that measures edges (the identity decoder's with decoder=None).
    n_train_ : int
        Number of training codes.
    n_features_in_ : int
        Latent dimension d.
    """

    def __init__(
        self,
        *,
        decoder: Any = None,
        n_neighbors: int = DEFAULT_K,
        n_nodes: int = DEFAULT_N_NODES,
        candidates: int = DEFAULT_CANDIDATES,
        graph: LatentGraph | None = None,
        verbose: int = 0,
        distances: str = "graph",
        refine_method: str = "auto",
        n_jobs: int | None = None,
    ) -> None:
        """Store the parameters (validated in fit); verbose > 0 shows the edge-weighting bar on stderr."""
        self.decoder = decoder
        self.n_neighbors = n_neighbors
        self.n_nodes = n_nodes
        self.candidates = candidates
        self.graph = graph
        self.verbose = verbose
        self.distances = distances
        self.refine_method = refine_method
        self.n_jobs = n_jobs

    def _threads(self) -> AbstractContextManager[None]:
        """The torch thread count n_jobs asks for, for one call."""
        return n_jobs_threads(self.n_jobs)

    def _check_refinement(self) -> None:
        """Validate distances and refine_method."""
        owner = type(self).__name__
        if check_distances(self.distances, owner) == "refined":
            check_refine_method(self.refine_method, owner)

    def fit(self, X: Any, y: Any = None) -> GeodesicDistance:
        """Build (or check) the graph over the training codes.

        Parameters
        ----------
        X : array-like (n_train, d)
            Training codes.
        y : ignored

        Returns
        -------
        GeodesicDistance
            self, fitted.
        """
        self._check_refinement()
        with self._threads():
            with sklearn_errors():
                X = validate_data(self, X, dtype=np.float64)
            self.graph_, self.edge_metric_ = fit_graph(
                X,
                graph=self.graph,
                decoder=self.decoder,
                n_neighbors=self.n_neighbors,
                n_nodes=self.n_nodes,
                candidates=self.candidates,
                owner=type(self).__name__,
                verbose=self.verbose,
                n_jobs=self.n_jobs,
            )
        self.n_train_ = int(X.shape[0])
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Geodesic distances from new codes to every training code.

        Parameters
        ----------
        X : array-like (m, d)
            New codes, each joined to the graph as a leaf.

        Returns
        -------
        ndarray (m, n_train) float64
            Distances in the metric's length units; inf to training codes in other components.
        """
        with sklearn_errors():
            check_is_fitted(self, "graph_")
            X = validate_data(self, X, dtype=np.float64, reset=False)
        self._check_refinement()
        with self._threads():
            attached = self.graph_.attach(X, self.edge_metric_)
            graph_distances = leaf_distances_to_all(self.graph_.weights, leaf_edges(attached, self.n_train_))
            if self.distances == "graph":
                return graph_distances
            tally = RefineTally()
            refined = refine_leaf_distances(self.edge_metric_, attached, self.n_train_, np.arange(self.n_train_),
                                            graph_distances, self.refine_method, tally)
        tally.warn(type(self).__name__, self.refine_method)
        return refined

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit on the training codes and return their pairwise distances.

        Parameters
        ----------
        X : array-like (n_train, d)
            Training codes.
        y : ignored

        Returns
        -------
        ndarray (n_train, n_train) float64
            Symmetric distances, zero diagonal.
        """
        graph_distances = all_pairs(self.fit(X, y).graph_)
        if self.distances == "graph":
            return graph_distances
        upper = np.column_stack(np.triu_indices(self.n_train_, k=1))
        tally = RefineTally()
        with self._threads():
            values = refine_pair_distances(self.edge_metric_, self.graph_, upper, graph_distances[upper[:, 0], upper[:, 1]],
                                           self.refine_method, tally)
        tally.warn(type(self).__name__, self.refine_method)
        refined = graph_distances.copy()
        refined[upper[:, 0], upper[:, 1]] = values
        refined[upper[:, 1], upper[:, 0]] = values
        return refined

    def save(self, path: Any) -> Any:
        """Write the fitted transformer to the directory `path` (safetensors + JSON, no pickle); see estimator_io.

        Parameters
        ----------
        path : str or Path
            A new directory, or one holding an earlier save (replaced).

        Returns
        -------
        Path
            The directory written.
        """
        from lsg_graph.estimator_io import save_estimator

        return save_estimator(self, path)

    @classmethod
    def load(cls, path: Any, decoder: Any = None) -> GeodesicDistance:
        """Read a fitted transformer saved by `save`, validated; pass the decoder it was fitted with (not stored).

        Parameters
        ----------
        path : str or Path
            A directory written by `save`.
        decoder : decoder, VAE or PullbackMetric, optional
            The decoder it was fitted with (None if it was fitted without one).

        Returns
        -------
        GeodesicDistance
            The fitted estimator.
        """
        from lsg_graph.estimator_io import load_estimator

        return load_estimator(path, decoder, expected=cls)

    @property
    def _n_features_out(self) -> int:
        """One output column per training code."""
        return self.n_train_

    def __sklearn_tags__(self) -> Any:
        """Transformer tags: float64 output."""
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags


def geodesic_distances(
    X: Any = None,
    Y: Any = None,
    *,
    graph: LatentGraph | None = None,
    decoder: Any = None,
    n_neighbors: int = DEFAULT_K,
    n_nodes: int = DEFAULT_N_NODES,
    candidates: int = DEFAULT_CANDIDATES,
    distances: str = "graph",
    refine_method: str = "auto",
    n_jobs: int | None = None,
) -> np.ndarray:
    """Geodesic distances (n_X, n_Y) float64 between codes X (n_X, d) and Y (n_Y, d), like sklearn's pairwise_distances.

    A graph is built over X (see GeodesicDistance for the parameters, distances="refined" among them), or `graph`
    is reused (then X may be None, meaning its codes). Y None gives the all-pairs matrix of X (n_X, n_X; n_X^2
    memory); otherwise every row of Y is attached to the graph as a leaf, and entry (i, j) is the distance from X[i]
    to Y[j].

    Parameters
    ----------
    X : array-like (n_X, d), optional
        Codes the graph is built over (None: the codes of `graph`).
    Y : array-like (n_Y, d), optional
        Other codes (None: X itself).
    graph : LatentGraph, optional
        A prebuilt graph over X.
    decoder, n_neighbors, n_nodes, candidates, distances, refine_method, n_jobs
        As in GeodesicDistance.

    Returns
    -------
    ndarray (n_X, n_Y) float64
        Geodesic distances in the metric's length units; inf between components.

    Raises
    ------
    InvalidInput
        When neither X nor graph is given, or for a bad parameter.
    """
    if X is None:
        if graph is None:
            raise InvalidInput("geodesic_distances needs X, or a graph whose codes are X; got neither.")
        X = graph.codes
    estimator = GeodesicDistance(
        decoder=decoder, n_neighbors=n_neighbors, n_nodes=n_nodes, candidates=candidates, graph=graph,
        distances=distances, refine_method=refine_method, n_jobs=n_jobs,
    )
    if Y is None:
        return estimator.fit_transform(X)
    return estimator.fit(X).transform(Y).T.copy()


def geodesic_affinity(distances: Any, gamma: float | None = None) -> np.ndarray:
    """Affinity exp(-gamma * D^2) (same shape as D) for spectral methods; gamma None: 1 / median(D[D > 0])^2.

    Infinite distances (disconnected points) get affinity 0. Feed it to SpectralClustering(affinity="precomputed").

    Parameters
    ----------
    distances : array-like (m, n)
        Non-negative distances (inf allowed), e.g. from GeodesicDistance.
    gamma : float, optional
        Scale > 0 (None: 1 / median of the positive finite distances squared).

    Returns
    -------
    ndarray (m, n) float64
        Affinities in [0, 1].
    """
    D = np.asarray(distances, dtype=np.float64)
    if D.ndim != 2 or np.isnan(D).any() or (D < 0).any():
        raise InvalidInput(f"distances must be a 2-D array of non-negative numbers without NaN; got shape {D.shape}.")
    if gamma is None:
        positive = D[np.isfinite(D) & (D > 0)]
        gamma = 1.0 / float(np.median(positive)) ** 2 if positive.size else 1.0
    gamma = check_float_param(gamma, "gamma", "geodesic_affinity")
    return np.exp(-gamma * np.square(D))


# ------------------------------------------------------------------------------------------------ bounds


@dataclass(frozen=True)
class DistanceBounds:
    """Bounds on geodesic distances between pairs of graph nodes, in metric (output) units.

    Attributes
    ----------
    pairs : ndarray (m, 2) int64
        The (source, target) node pairs.
    lower : ndarray (m,)
        Output-space chords ||g(a) - g(b)||, g = [mu; sigma]: no curve from a to b is shorter.
    upper : ndarray (m,)
        Graph distances: lengths of actual curves (the polylines of graph paths), so no geodesic is longer.
    """

    pairs: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    @property
    def ratio(self) -> np.ndarray:
        """upper / lower (m,): how tight the pair of bounds is (1 is exact; inf where the chord is 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.lower > 0, self.upper / self.lower, np.where(self.upper > 0, np.inf, 1.0))


def distance_bounds(metric: Any, graph: LatentGraph, pairs: Any) -> DistanceBounds:
    """Lower (output-space chord) and upper (graph path length) bounds on the geodesic distance of node pairs.

    Parameters
    ----------
    metric : PullbackMetric or anything PullbackMetric accepts (a decoder, a VAE decoder module)
        The metric whose geodesic distances are bounded; it must be the one that weighted the graph's edges.
    graph : LatentGraph
        The graph; its codes are the nodes.
    pairs : array-like (m, 2) of int
        Node index pairs.

    Returns
    -------
    DistanceBounds
        ``lower <= d_geodesic <= upper`` for every pair (up to the quadrature error of the edge lengths).
    """
    if not isinstance(graph, LatentGraph):
        raise InvalidInput(f"graph must be a LatentGraph; got {type(graph).__name__}.")
    metric = metric if isinstance(metric, PullbackMetric) else PullbackMetric(metric)
    if metric.latent_dim != graph.latent_dim:
        raise InvalidInput(f"The metric's latent dimension {metric.latent_dim} differs from the graph's {graph.latent_dim}.")
    index = np.asarray(pairs)
    if index.ndim != 2 or index.shape[1] != 2 or not np.issubdtype(index.dtype, np.integer):
        raise InvalidInput(f"pairs must be an int array of shape (m, 2); got {index.dtype} shape {index.shape}.")
    if index.size and (index.min() < 0 or index.max() >= graph.n_points):
        raise InvalidInput(f"pairs hold node indices outside [0, {graph.n_points}); got {index.min()}..{index.max()}.")
    index = index.astype(np.int64)
    upper = np.empty(len(index))
    for source in np.unique(index[:, 0]):
        rows = index[:, 0] == source
        upper[rows] = dijkstra(graph.weights, directed=False, indices=int(source))[index[rows, 1]]
    with torch.no_grad():
        codes = graph.codes
        lower = metric.chord(codes[index[:, 0]], codes[index[:, 1]]).double().cpu().numpy()
    return DistanceBounds(index, np.minimum(lower, upper), upper)
