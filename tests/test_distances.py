"""Geodesic distances as scikit-learn pairwise function and transformer; pipelines with metric='precomputed'."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.cluster import DBSCAN, AgglomerativeClustering, SpectralClustering
from sklearn.datasets import make_blobs, make_moons
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from lsg_graph.cluster import clustering_scores
from lsg_graph.distances import GeodesicDistance, geodesic_affinity, geodesic_distances
from lsg_graph.errors import InvalidInput
from lsg_graph.manifolds import LinearDecoder
from lsg_graph.metric import PullbackMetric

# Separated clusters give disconnected kNN graphs, which build_latent_graph joins by bridges (and says so): expected.
pytestmark = pytest.mark.filterwarnings("ignore::lsg_graph.errors.DisconnectedGraphWarning")

MATRIX = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0]])  # x = A z: metric A^T A, distance ||A (b - a)||


def collinear_codes(n: int = 40, seed: int = 0) -> np.ndarray:
    """Codes (n, 2) on the line z = t * (1, 2), t uniform: every graph path between them is straight."""
    t = np.sort(np.random.default_rng(seed).uniform(-1.0, 1.0, n))
    return t[:, None] * np.array([1.0, 2.0])


@parametrize_with_checks([GeodesicDistance()])
def test_sklearn_conventions(estimator: GeodesicDistance, check) -> None:
    """scikit-learn's estimator checks (tiny datasets may need bridges, hence the warnings filter)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


def test_euclidean_graph_on_a_line_is_exact() -> None:
    """decoder=None: on collinear codes the kNN graph distance is the Euclidean distance; symmetric, zero diagonal."""
    codes = collinear_codes()
    distances = geodesic_distances(codes)
    expected = np.linalg.norm(codes[:, None] - codes[None, :], axis=-1)
    np.testing.assert_allclose(distances, expected, rtol=1e-12, atol=1e-12)


def test_decoder_none_is_the_identity_linear_decoder() -> None:
    """decoder=None measures edges with LinearDecoder.identity (the one identity decoder): same numbers as I_d."""
    from lsg_graph.distances import EuclideanDecoder, edge_metric

    codes = np.random.default_rng(3).normal(size=(30, 3))
    metric = edge_metric(None, 3)
    assert isinstance(metric.decoder, LinearDecoder) and np.array_equal(metric.decoder.matrix, np.eye(3))
    assert isinstance(EuclideanDecoder(3), LinearDecoder)  # the former name still builds the same decoder
    explicit = geodesic_distances(codes, decoder=PullbackMetric(LinearDecoder(np.eye(3))))
    np.testing.assert_allclose(geodesic_distances(codes), explicit, rtol=1e-14)
    with pytest.raises(InvalidInput, match="latent_dim"):
        LinearDecoder.identity(0)


def test_linear_decoder_distances_are_exact() -> None:
    """x = A z on collinear codes: graph distance = ||A (b - a)||, with Y attached as leaves."""
    codes = collinear_codes()
    metric = PullbackMetric(LinearDecoder(MATRIX))
    queries = collinear_codes(7, seed=1)
    distances = geodesic_distances(codes, queries, decoder=metric)
    expected = np.linalg.norm((codes[:, None] - queries[None, :]) @ MATRIX.T, axis=-1)
    assert distances.shape == (40, 7)
    np.testing.assert_allclose(distances, expected, rtol=1e-9)


def test_graph_is_reused_and_rows_are_independent() -> None:
    """A prebuilt graph gives the same matrix; transforming a subset gives the same rows as the full batch."""
    codes, _ = make_blobs(120, centers=2, random_state=0)
    model = GeodesicDistance(n_neighbors=8).fit(codes)
    again = geodesic_distances(graph=model.graph_)
    np.testing.assert_array_equal(again, model.fit_transform(codes))
    new = codes[:30] + 0.05
    full = model.transform(new)
    np.testing.assert_allclose(model.transform(new[10:20]), full[10:20], rtol=1e-12)
    np.testing.assert_allclose(geodesic_distances(codes, new, n_neighbors=8), full.T, rtol=1e-12)


def test_training_transform_matches_fit_transform() -> None:
    """transform(X_train) equals the training distances (each point attaches to itself at length ~0)."""
    codes, _ = make_blobs(80, centers=[[0, 0]], random_state=1)
    model = GeodesicDistance()
    training = model.fit_transform(codes)
    np.testing.assert_allclose(model.transform(codes), training, atol=1e-9)
    assert training.shape == (80, 80) and np.allclose(training, training.T)


def test_pipeline_with_precomputed_knn() -> None:
    """GeodesicDistance + KNeighborsClassifier(metric='precomputed') fits, predicts and cross-validates."""
    codes, labels = make_moons(300, noise=0.08, random_state=0)
    pipeline = Pipeline(
        [("geo", GeodesicDistance(n_neighbors=8)), ("knn", KNeighborsClassifier(5, metric="precomputed"))]
    )
    pipeline.fit(codes[:200], labels[:200])
    assert pipeline.predict(codes[200:]).shape == (100,)
    assert pipeline.score(codes[200:], labels[200:]) > 0.95
    assert cross_val_score(pipeline, codes, labels, cv=3).mean() > 0.95


def test_precomputed_clusterers_use_the_distances() -> None:
    """Average-linkage agglomerative, DBSCAN and spectral clustering (via the affinity) separate two moons."""
    codes, labels = make_moons(200, noise=0.05, random_state=0)
    distances = geodesic_distances(codes, n_neighbors=8)
    agglomerative = AgglomerativeClustering(2, metric="precomputed", linkage="single").fit(distances)
    assert clustering_scores(labels, agglomerative.labels_)["ari"] > 0.95
    average = AgglomerativeClustering(2, metric="precomputed", linkage="average").fit(distances)
    assert len(set(average.labels_)) == 2
    dbscan = DBSCAN(eps=0.3, min_samples=5, metric="precomputed").fit(distances)
    assert clustering_scores(labels, dbscan.labels_)["ari"] > 0.95
    affinity = geodesic_affinity(distances, gamma=10.0)
    spectral = SpectralClustering(2, affinity="precomputed", random_state=0).fit(affinity)
    assert clustering_scores(labels, spectral.labels_)["ari"] > 0.9


def test_affinity_values_and_default_gamma() -> None:
    """exp(-gamma D^2); default gamma = 1 / median(D > 0)^2; inf gives 0; bad input is refused."""
    distances = np.array([[0.0, 1.0, np.inf], [1.0, 0.0, 2.0], [np.inf, 2.0, 0.0]])
    np.testing.assert_allclose(geodesic_affinity(distances, 0.5), np.exp(-0.5 * np.square(distances)))
    default = geodesic_affinity(distances)
    assert default[0, 1] == pytest.approx(np.exp(-1.0 / 1.5**2)) and default[0, 2] == 0.0
    with pytest.raises(InvalidInput, match="non-negative"):
        geodesic_affinity(-distances)
    with pytest.raises(InvalidInput, match=r"The 'gamma' parameter of geodesic_affinity must be a float"):
        geodesic_affinity(distances, -1.0)


def test_bad_input() -> None:
    """Unfitted use, wrong widths, a foreign graph and bad parameters are refused with named causes."""
    codes = collinear_codes()
    with pytest.raises(NotFittedError):
        GeodesicDistance().transform(codes)
    model = GeodesicDistance().fit(codes)
    with pytest.raises(ValueError, match="X has 3 features, but GeodesicDistance is expecting 2"):
        model.transform(np.zeros((2, 3)))
    with pytest.raises(InvalidInput, match="X must be the codes of the given graph"):
        GeodesicDistance(graph=model.graph_).fit(codes[:10])
    with pytest.raises(InvalidInput, match=r"The 'n_neighbors' parameter of GeodesicDistance must be an int .*; got 0"):
        GeodesicDistance(n_neighbors=0).fit(codes)
    with pytest.raises(InvalidInput, match="needs X, or a graph"):
        geodesic_distances()
