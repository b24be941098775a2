"""GeodesicEmbedding (landmark MDS of graph distances, against exact distances on straight codes) and
GeodesicKMeans(algorithm="embedding")."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.spatial.distance import pdist
from sklearn.datasets import make_blobs, make_moons
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from lsg_graph.cluster import GeodesicKMeans
from lsg_graph.embedding import GeodesicEmbedding
from lsg_graph.errors import InvalidInput
from lsg_graph.manifolds import LinearDecoder
from lsg_graph.metric import PullbackMetric

pytestmark = pytest.mark.filterwarnings("ignore::lsg_graph.errors.DisconnectedGraphWarning")

MATRIX = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0]])  # x = A z: metric A^T A, distance ||A (b - a)||


def collinear_codes(n: int = 40, seed: int = 0) -> np.ndarray:
    """Codes (n, 2) on the line z = t * (1, 2): every graph path between them is straight, so distances are exact."""
    t = np.sort(np.random.default_rng(seed).uniform(-1.0, 1.0, n))
    return t[:, None] * np.array([1.0, 2.0])


@parametrize_with_checks([GeodesicEmbedding(n_components=2, n_landmarks=20)])
def test_sklearn_conventions(estimator: GeodesicEmbedding, check) -> None:
    """scikit-learn's estimator checks (tiny datasets may need bridges, hence the warnings filter)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


@pytest.mark.parametrize("n_landmarks", [40, 8])
def test_collinear_codes_embed_isometrically(n_landmarks: int) -> None:
    """On a line the graph distances are exact and Euclidean of rank 1, so classical MDS (all codes landmarks) and
    its landmark triangulation (8 of 40) both reproduce every pairwise distance, in one component."""
    codes = collinear_codes()
    model = GeodesicEmbedding(n_components=3, n_landmarks=n_landmarks, random_state=0).fit(codes)
    assert model.n_components_ == 1 and model.embedding_.shape == (40, 1)
    np.testing.assert_allclose(pdist(model.embedding_), pdist(codes), rtol=1e-9, atol=1e-12)


def test_linear_decoder_distances_and_new_points() -> None:
    """x = A z: embedded distances are ||A (b - a)||; new codes on the line are placed at their exact distances, and
    the training codes transform to their own fitted coordinates."""
    codes = collinear_codes()
    metric = PullbackMetric(LinearDecoder(MATRIX))
    model = GeodesicEmbedding(n_components=2, n_landmarks=10, decoder=metric, random_state=1).fit(codes)
    np.testing.assert_allclose(pdist(model.embedding_), pdist(codes @ MATRIX.T), rtol=1e-9, atol=1e-12)
    queries = collinear_codes(7, seed=1) * 0.9  # inside the training range: their graph paths are straight too
    placed = model.transform(queries)
    expected = np.linalg.norm((queries[:, None] - codes[None, :]) @ MATRIX.T, axis=-1)
    got = np.linalg.norm(placed[:, None] - model.embedding_[None, :], axis=-1)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(model.transform(codes), model.embedding_, rtol=1e-9, atol=1e-9)


def test_same_seed_same_embedding_and_graph_is_reused() -> None:
    """The landmark draw is seeded; a prebuilt graph gives the same coordinates as building it again."""
    codes, _ = make_moons(200, noise=0.05, random_state=0)
    first = GeodesicEmbedding(n_components=2, n_landmarks=30, n_neighbors=8, random_state=3).fit(codes)
    again = GeodesicEmbedding(n_components=2, n_landmarks=30, graph=first.graph_, random_state=3).fit(codes)
    np.testing.assert_array_equal(first.landmark_indices_, again.landmark_indices_)
    np.testing.assert_allclose(first.embedding_, again.embedding_, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("params", "match"), [
    ({"n_components": 0}, "n_components"), ({"n_landmarks": 1}, "n_landmarks"), ({"n_components": 2.5}, "n_components"),
])
def test_bad_parameters_name_the_value(params: dict, match: str) -> None:
    """Invalid parameters are refused in fit with a message naming the parameter."""
    with pytest.raises(InvalidInput, match=match):
        GeodesicEmbedding(**params).fit(collinear_codes())


def test_coincident_codes_are_refused() -> None:
    """All codes at one point: no distance to embed, a clear error."""
    with pytest.raises(InvalidInput, match="coincide"):
        GeodesicEmbedding(n_landmarks=5).fit(np.zeros((10, 2)))


# ------------------------------------------------------------------------------ GeodesicKMeans(algorithm="embedding")


@parametrize_with_checks([GeodesicKMeans(3, algorithm="embedding", n_components=2, landmarks=20)])
def test_kmeans_embedding_sklearn_conventions(estimator: GeodesicKMeans, check) -> None:
    """scikit-learn's estimator checks for the embedding algorithm."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


def test_kmeans_embedding_recovers_separated_blobs_and_predicts_consistently() -> None:
    """Three separated blobs (Euclidean graph, bridged): labels match the blobs exactly; predict on the training
    codes gives labels_, transform gives distances to the centres, and each medoid is a member of its cluster."""
    codes, truth = make_blobs(150, centers=[[0, 0], [6, 0], [0, 6]], cluster_std=0.5, random_state=0)
    model = GeodesicKMeans(3, algorithm="embedding", n_components=4, landmarks=40, n_neighbors=8, n_init=5,
                           random_state=0).fit(codes)
    assert adjusted_rand_score(truth, model.labels_) == 1.0
    np.testing.assert_array_equal(model.predict(codes), model.labels_)
    distances = model.transform(codes)
    assert distances.shape == (150, 3)
    np.testing.assert_array_equal(np.argmin(distances, axis=1), model.labels_)
    assert np.array_equal(model.labels_[model.medoid_indices_], np.arange(3))
    np.testing.assert_allclose(model.inertia_, np.square(distances.min(axis=1)).sum(), rtol=1e-6)
    again = GeodesicKMeans(3, algorithm="embedding", n_components=4, landmarks=40, graph=model.graph_, n_init=5,
                           random_state=0).fit(codes)
    np.testing.assert_array_equal(again.labels_, model.labels_)
    started = GeodesicKMeans(3, algorithm="embedding", n_components=4, landmarks=40, graph=model.graph_,
                             init=[0, 1, 2], random_state=0).fit(codes)  # an array init: those codes' coordinates
    assert adjusted_rand_score(truth, started.labels_) == 1.0
    with pytest.raises(InvalidInput, match="landmarks"):
        GeodesicKMeans(3, algorithm="embedding", landmarks=1).fit(codes)


@pytest.mark.parametrize(("params", "match"), [
    ({"algorithm": "lloyd"}, "algorithm"),
    ({"algorithm": "embedding", "metric": "precomputed"}, "metric"),
    ({"algorithm": "embedding", "distances": "refined"}, "distances"),
    ({"algorithm": "embedding", "n_components": 0}, "n_components"),
])
def test_kmeans_embedding_bad_parameters(params: dict, match: str) -> None:
    """Bad algorithm settings are refused in fit, naming the parameter."""
    with pytest.raises(InvalidInput, match=match):
        GeodesicKMeans(2, **params).fit(collinear_codes())


def test_kmeans_embedding_save_and_load_round_trip(tmp_path) -> None:
    """A saved embedding clustering loads with the same labels, predictions and distances; a tampered centroid
    table is refused."""
    from lsg_graph import _io
    from lsg_graph.errors import ArtifactError
    from lsg_graph.estimator_io import KMEANS_FILE, KMEANS_KIND

    codes, _ = make_blobs(90, centers=[[0, 0], [6, 0], [0, 6]], cluster_std=0.5, random_state=1)
    model = GeodesicKMeans(3, algorithm="embedding", n_components=3, landmarks=30, n_neighbors=6, random_state=0)
    model.fit(codes)
    path = model.save(tmp_path / "model")
    loaded = GeodesicKMeans.load(path)
    assert loaded.algorithm == "embedding" and loaded.n_components == 3
    queries = codes[:10] + 0.1
    np.testing.assert_array_equal(loaded.labels_, model.labels_)
    np.testing.assert_array_equal(loaded.predict(queries), model.predict(queries))
    np.testing.assert_allclose(loaded.transform(queries), model.transform(queries), rtol=1e-12, atol=1e-12)
    tensors, meta = _io.load_tensors(path / KMEANS_FILE, KMEANS_KIND)
    coordinates = tensors["embedding_coordinates"].clone()
    tensors["embedding_coordinates"] = coordinates + 1.0  # shapes right, values not what the graph gives
    _io.save_tensors(path / KMEANS_FILE, tensors, meta)
    with pytest.raises(ArtifactError, match="does not match its graph"):
        GeodesicKMeans.load(path)
    tensors["embedding_coordinates"] = coordinates
    tensors["centroids"] = tensors["centroids"][:2]
    _io.save_tensors(path / KMEANS_FILE, tensors, meta)
    with pytest.raises(ArtifactError, match="centroids"):
        GeodesicKMeans.load(path)


def test_kmeans_embedding_isolated_outlier_joins_a_cluster() -> None:
    """Three blobs plus one code 100 units away: k-means in the embedding would give it a centre of its own; with
    min_cluster_size it joins a blob, and the blobs are found (ARI 1 on them) for every seed."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    truth = np.repeat(np.arange(3), 100)
    codes = np.vstack([centres[truth] + rng.normal(size=(300, 2)), [[100.0, 100.0]]])
    graph = GeodesicEmbedding(n_neighbors=10).fit(codes).graph_
    for seed in range(3):
        model = GeodesicKMeans(3, algorithm="embedding", n_components=4, landmarks=50, graph=graph, n_init=3,
                               random_state=seed).fit(codes)
        assert np.bincount(model.labels_, minlength=3).min() >= 5
        assert adjusted_rand_score(truth, model.labels_[:300]) == pytest.approx(1.0)
    alone = GeodesicKMeans(3, algorithm="embedding", n_components=4, landmarks=50, graph=graph, n_init=3,
                           random_state=0, min_cluster_size=1).fit(codes)
    assert np.bincount(alone.labels_, minlength=3).min() == 1  # what the re-weighting prevents


def test_auto_picks_the_embedding_from_latent_dimension_8_and_medoids_otherwise(tmp_path) -> None:
    """algorithm="auto" (the default): medoids at d = 2, the embedding at d = 8, medoids at d = 8 with landmarks or
    precomputed distances; a saved auto-embedding model loads as one."""
    from scipy.spatial.distance import cdist

    low, _ = make_blobs(60, n_features=2, centers=3, random_state=0)
    high, truth = make_blobs(60, n_features=8, centers=3, random_state=0)
    assert GeodesicKMeans(3, random_state=0).fit(low).algorithm_ == "medoids"
    model = GeodesicKMeans(3, random_state=0, n_neighbors=8).fit(high)
    assert model.algorithm == "auto" and model.algorithm_ == "embedding"
    assert adjusted_rand_score(truth, model.labels_) == 1.0
    assert GeodesicKMeans(3, random_state=0, landmarks=4).fit(high).algorithm_ == "medoids"
    assert GeodesicKMeans(3, metric="precomputed", random_state=0).fit(cdist(high, high)).algorithm_ == "medoids"
    loaded = GeodesicKMeans.load(model.save(tmp_path / "model"))
    assert loaded.algorithm == "auto" and loaded.algorithm_ == "embedding"
    np.testing.assert_allclose(loaded.transform(high[:5]), model.transform(high[:5]), rtol=1e-12, atol=1e-12)
