"""Euclidean coordinates whose distances follow the graph's geodesic distances: landmark MDS on the latent graph
(Isomap with metric edge lengths), as a scikit-learn transformer.

`GeodesicEmbedding.fit(X)` runs Dijkstra from L landmark codes (drawn at random, seeded by random_state), embeds the
landmarks by classical MDS (the top n_components eigenpairs of the double-centred squared landmark distances) and
places every code by landmark-MDS triangulation (de Silva and Tenenbaum, "Sparse multidimensional scaling using
landmark points", 2004):

    x = -1/2 P^T (delta_x - mean_delta),   P = V Lambda^(-1/2) (L, m),

with delta_x the squared graph distances from x to the landmarks and mean_delta their mean over the landmarks. With
all codes as landmarks this is classical MDS of the full distance matrix. `transform` joins new codes to the graph
as leaves (lsg_graph.distances: paths never pass through other new points) and places them the same way.

Euclidean k-means in these coordinates is k-means under the geodesic distance with centres that need not be codes;
`GeodesicKMeans(algorithm="embedding")` runs exactly that (docs/estimators.md has the measurements).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from lsg_graph._threads import n_jobs_threads
from lsg_graph._validation import check_int_param, sklearn_errors
from lsg_graph.distances import dijkstra_rows, fit_graph, leaf_distances_to, leaf_edges
from lsg_graph.errors import InvalidInput
from lsg_graph.graph.latent_graph import LatentGraph
from lsg_graph.registry import (
    DEFAULT_CANDIDATES,
    DEFAULT_EMBEDDING_COMPONENTS,
    DEFAULT_EMBEDDING_LANDMARKS,
    DEFAULT_K,
    DEFAULT_N_NODES,
)

EIGEN_FLOOR = 1e-10  # MDS eigenvalues below this fraction of the largest are dropped (the coordinates they give are noise)


class GeodesicEmbedding(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Transformer: codes (m, d) -> coordinates (m, n_components) whose Euclidean distances follow geodesic ones.

    fit(X) builds the kNN graph over the training codes X (n, d) as GeodesicDistance does (or takes `graph`, whose
    codes must be X) and embeds them by landmark MDS of the graph distances (module docs). Coordinates are in the
    metric's length units.

    Parameters
    ----------
    n_components : int, default registry.DEFAULT_EMBEDDING_COMPONENTS
        Output dimensions m (fewer when the landmark distances have fewer positive MDS eigenvalues).
    n_landmarks : int, default registry.DEFAULT_EMBEDDING_LANDMARKS
        Landmark codes L, drawn at random (clipped to n); Dijkstra runs from each, so fit costs L shortest-path
        trees and L x n memory.
    decoder, n_neighbors, n_nodes, candidates, graph, verbose, n_jobs
        As for lsg_graph.distances.GeodesicDistance (decoder None: Euclidean edge lengths, i.e. Isomap).
    random_state : int, RandomState or None
        Seeds the landmark draw.

    Attributes
    ----------
    embedding_ : ndarray (n, n_components_) float64
        Coordinates of the training codes.
    landmark_indices_ : ndarray (L,) int64
        Training nodes used as landmarks.
    n_components_ : int
        Output dimensions kept.
    eigenvalues_ : ndarray (n_components_,)
        The landmark MDS eigenvalues (squared length units), largest first.
    graph_, edge_metric_, n_features_in_
        As for GeodesicDistance.
    """

    def __init__(
        self,
        n_components: int = DEFAULT_EMBEDDING_COMPONENTS,
        *,
        n_landmarks: int = DEFAULT_EMBEDDING_LANDMARKS,
        decoder: Any = None,
        n_neighbors: int = DEFAULT_K,
        n_nodes: int = DEFAULT_N_NODES,
        candidates: int = DEFAULT_CANDIDATES,
        graph: LatentGraph | None = None,
        random_state: Any = None,
        verbose: int = 0,
        n_jobs: int | None = None,
    ) -> None:
        """Store the parameters (validated in fit)."""
        self.n_components = n_components
        self.n_landmarks = n_landmarks
        self.decoder = decoder
        self.n_neighbors = n_neighbors
        self.n_nodes = n_nodes
        self.candidates = candidates
        self.graph = graph
        self.random_state = random_state
        self.verbose = verbose
        self.n_jobs = n_jobs

    def _threads(self) -> AbstractContextManager[None]:
        """The torch thread count n_jobs asks for, for one call."""
        return n_jobs_threads(self.n_jobs)

    def fit(self, X: Any, y: Any = None) -> GeodesicEmbedding:
        """Build (or check) the graph over the training codes and embed them.

        Parameters
        ----------
        X : array-like (n, d)
            Training codes.
        y : ignored

        Returns
        -------
        GeodesicEmbedding
            self, fitted.
        """
        owner = type(self).__name__
        n_components = check_int_param(self.n_components, "n_components", owner, 1)
        n_landmarks = check_int_param(self.n_landmarks, "n_landmarks", owner, 2)
        with self._threads():
            with sklearn_errors():
                X = validate_data(self, X, dtype=np.float64)
            self.graph_, self.edge_metric_ = fit_graph(
                X, graph=self.graph, decoder=self.decoder, n_neighbors=self.n_neighbors, n_nodes=self.n_nodes,
                candidates=self.candidates, owner=owner, verbose=self.verbose, n_jobs=self.n_jobs,
            )
        n = X.shape[0]
        rng = check_random_state(self.random_state)
        self.landmark_indices_ = np.sort(rng.choice(n, size=min(n_landmarks, n), replace=False)).astype(np.int64)
        self._to_train = dijkstra_rows(self.graph_.weights, self.landmark_indices_)  # (L, n)
        squared = np.square(self._to_train[:, self.landmark_indices_])
        self._projection, self.eigenvalues_ = _landmark_mds(squared, n_components)
        self._mean_squared = squared.mean(axis=0)
        self.n_components_ = int(self.eigenvalues_.shape[0])
        self.embedding_ = self._place(np.square(self._to_train.T))
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Coordinates of new codes, each joined to the graph as a leaf.

        Parameters
        ----------
        X : array-like (m, d)
            New codes.

        Returns
        -------
        ndarray (m, n_components_) float64
        """
        with sklearn_errors():
            check_is_fitted(self, "embedding_")
            X = validate_data(self, X, dtype=np.float64, reset=False)
        with self._threads():
            attached = self.graph_.attach(X, self.edge_metric_)
        distances = leaf_distances_to(self._to_train, leaf_edges(attached, self.graph_.n_points))  # (m, L)
        return self._place(np.square(distances))

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit and return the training coordinates.

        Parameters
        ----------
        X : array-like (n, d)
            Training codes.
        y : ignored

        Returns
        -------
        ndarray (n, n_components_) float64
            `embedding_`.
        """
        return self.fit(X, y).embedding_

    def _place(self, squared: np.ndarray) -> np.ndarray:
        """Triangulated coordinates (m, n_components_) from squared distances (m, L) to the landmarks."""
        return -0.5 * (squared - self._mean_squared[None, :]) @ self._projection

    @property
    def _n_features_out(self) -> int:
        """One output column per kept component."""
        return self.n_components_

    def __sklearn_tags__(self) -> Any:
        """Transformer tags: float64 output."""
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags


def _landmark_mds(squared: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Classical MDS of squared landmark distances (L, L): the triangulation matrix P (L, m) and eigenvalues (m,).

    Keeps the top n_components eigenpairs of B = -1/2 J squared J (J the centring matrix) whose eigenvalues are
    above EIGEN_FLOOR of the largest; raises InvalidInput when none is (all landmarks at one point).
    """
    if not np.isfinite(squared).all():
        raise InvalidInput("The landmarks are not all connected in the graph; build it with connect='bridge'.")
    centred = squared - squared.mean(axis=0)[None, :] - squared.mean(axis=1)[:, None] + squared.mean()
    values, vectors = np.linalg.eigh(-0.5 * centred)
    values, vectors = values[::-1][:n_components], vectors[:, ::-1][:, :n_components]
    keep = values > EIGEN_FLOOR * max(values[0], 0.0)
    if not keep.any():
        raise InvalidInput("The landmark distances are all zero: the codes coincide, there is nothing to embed.")
    values, vectors = values[keep], vectors[:, keep]
    return vectors / np.sqrt(values)[None, :], values
