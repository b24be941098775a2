"""GeodesicKMeans: scikit-learn conformance, hand-solved graphs, brute-force medoids, bad input."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from lsg_graph.cluster import GeodesicKMeans, cluster_latent_graph, clustering_f_measure, clustering_scores
from lsg_graph.distances import all_pairs
from lsg_graph.errors import DisconnectedGraph, InvalidInput
from lsg_graph.graph.latent_graph import LatentGraph

# Separated blobs give disconnected kNN graphs, which build_latent_graph joins by bridges (and says so): expected here.
pytestmark = pytest.mark.filterwarnings("ignore::lsg_graph.errors.DisconnectedGraphWarning")

# A hand-solved ring of 7 nodes (edge lengths on the arcs), codes on a straight line x = node index:
#
#   0 -1- 1 -1- 2 -4- 3 -1- 4 -2- 5 -2- 6 -3- back to 0        arc positions 0, 1, 2, 6, 7, 9, 11 (circumference 14)
#
# From init medoids [0, 3]: node 6 is 3 from node 0 but 5 from node 3 -> clusters A = {0, 1, 2, 6}, B = {3, 4, 5}.
# Update: costs in A (sum of squared distances) 0: 14, 1: 18, 2: 30, 6: 50 -> 0 stays;
#         costs in B 3: 10, 4: 5, 5: 13 -> 4. Reassigning to [0, 4] changes nothing; the next update neither.
# (Euclidean k-medoids on the line would put node 6, at x = 6, with B.)
RING_EDGES = [(0, 1, 1.0), (1, 2, 1.0), (2, 3, 4.0), (3, 4, 1.0), (4, 5, 2.0), (5, 6, 2.0), (6, 0, 3.0)]
RING_INIT = [0, 3]
RING_LABELS = [0, 0, 0, 1, 1, 1, 0]
RING_MEDOIDS = [0, 4]
RING_INERTIA = 19.0  # A: 0 + 1 + 4 + 9, B: 1 + 0 + 4
RING_N_ITER = 2
RING_TO_MEDOIDS = [[0, 7], [1, 6], [2, 5], [6, 1], [7, 0], [5, 2], [3, 4]]


def graph_from_edges(edges: list[tuple[int, int, float]], n: int = 7) -> LatentGraph:
    """A LatentGraph from explicit undirected edges (symmetric CSR weights), codes on the line x = node index."""
    rows, cols, lengths = (np.array(column) for column in zip(*edges))
    weights = sp.coo_matrix((np.r_[lengths, lengths], (np.r_[rows, cols], np.r_[cols, rows])), shape=(n, n)).tocsr()
    return LatentGraph(np.column_stack([np.arange(float(n)), np.zeros(n)]), weights)


def ring_graph() -> LatentGraph:
    """The hand-solved ring above."""
    return graph_from_edges(RING_EDGES)


def ring_distances() -> np.ndarray:
    """The ring's geodesic distance matrix (7, 7), from the arc positions."""
    position = np.array([0.0, 1, 2, 6, 7, 9, 11])
    gap = np.abs(position[:, None] - position[None, :])
    return np.minimum(gap, 14.0 - gap)


def blobs(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated 2-D Gaussian blobs: codes (n, 2) and labels (n,)."""
    return make_blobs(n, centers=[[-6, 0], [0, 6], [6, 0]], cluster_std=1.0, random_state=seed)


def expected_failed_checks(estimator: GeodesicKMeans) -> dict[str, str]:
    """Checks that cannot apply, each with its reason."""
    if estimator.metric == "precomputed":
        return {
            "check_clustering": "it fits (n, 2) feature arrays; metric='precomputed' needs an (n, n) distance matrix",
        }
    return {}


@parametrize_with_checks(
    [GeodesicKMeans(), GeodesicKMeans(metric="precomputed")], expected_failed_checks=expected_failed_checks
)
def test_sklearn_conventions(estimator: GeodesicKMeans, check) -> None:
    """scikit-learn's estimator checks (tiny datasets may need bridges, hence the warnings filter)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


# ------------------------------------------------------------------------------------------------ exact answers


def test_hand_solved_ring() -> None:
    """Labels, medoids, inertia, iterations and distances match the table worked out by hand."""
    graph = ring_graph()
    model = GeodesicKMeans(2, init=np.array(RING_INIT), graph=graph)
    distances = model.fit_transform(graph.codes)
    assert model.labels_.tolist() == RING_LABELS
    assert model.medoid_indices_.tolist() == RING_MEDOIDS
    assert model.inertia_ == RING_INERTIA
    assert model.n_iter_ == RING_N_ITER
    np.testing.assert_array_equal(model.cluster_centers_, graph.codes[RING_MEDOIDS])
    np.testing.assert_array_equal(distances, RING_TO_MEDOIDS)


def test_precomputed_ring_agrees_with_graph() -> None:
    """The same ring given as a distance matrix gives the same clustering; cluster_centers_ is None."""
    model = GeodesicKMeans(2, init=RING_INIT, metric="precomputed").fit(ring_distances())
    assert model.labels_.tolist() == RING_LABELS
    assert model.medoid_indices_.tolist() == RING_MEDOIDS
    assert model.inertia_ == RING_INERTIA
    assert model.cluster_centers_ is None
    np.testing.assert_array_equal(model.transform(ring_distances()), RING_TO_MEDOIDS)
    assert model.predict(ring_distances()[[6, 3]]).tolist() == [0, 1]


def test_single_cluster_is_brute_force_medoid() -> None:
    """With one cluster, the medoid is the argmin of the summed squared all-pairs distances."""
    codes, _ = make_blobs(150, centers=[[0, 0]], random_state=1)
    model = GeodesicKMeans(1, random_state=0).fit(codes)
    brute = np.square(all_pairs(model.graph_)).sum(axis=1)
    assert model.medoid_indices_[0] == np.argmin(brute)
    assert model.inertia_ == pytest.approx(brute.min(), rel=1e-12)


def test_large_cluster_approximation_is_near_exact() -> None:
    """Candidate-based medoids of large clusters cost at most 1% more than the exact (brute-force) medoid."""
    codes, _ = make_blobs(500, centers=[[0, 0]], cluster_std=[[3.0]], random_state=2)
    exact = GeodesicKMeans(1, random_state=0).fit(codes)
    approximate = GeodesicKMeans(1, random_state=0, exact_medoid_size=20, n_medoid_candidates=8).fit(codes)
    brute = np.square(all_pairs(exact.graph_)).sum(axis=1)
    assert exact.inertia_ == pytest.approx(brute.min(), rel=1e-12)
    assert approximate.inertia_ <= 1.01 * brute.min()


def test_blobs_are_recovered_and_inertia_is_consistent() -> None:
    """Three separated blobs are found; inertia_ is the sum of squared transform distances to the own medoid."""
    codes, truth = blobs()
    model = GeodesicKMeans(3, random_state=0).fit(codes)
    assert clustering_scores(truth, model.labels_)["ari"] > 0.95
    own = model.fit_transform(codes)[np.arange(len(codes)), model.labels_]
    assert model.inertia_ == pytest.approx(float(np.square(own).sum()))
    assert model.n_iter_ >= 1 and set(model.timings_) >= {"graph_s", "init_s", "update_s", "assign_s", "total_s"}


def test_same_seed_same_labels_and_n_init_keeps_best() -> None:
    """Fits with the same seed agree; n_init=4 is never worse than its first run."""
    codes, _ = blobs(200, seed=3)
    first = GeodesicKMeans(4, random_state=7).fit(codes)
    second = GeodesicKMeans(4, random_state=7).fit(codes)
    assert first.labels_.tolist() == second.labels_.tolist()
    assert first.medoid_indices_.tolist() == second.medoid_indices_.tolist()
    several = GeodesicKMeans(4, random_state=7, n_init=4, init="random").fit(codes)
    single = GeodesicKMeans(4, random_state=7, n_init=1, init="random").fit(codes)
    assert several.inertia_ <= single.inertia_


def test_predict_new_points_matches_nearby_training_labels() -> None:
    """New points next to training codes get those codes' labels (attached to the graph as leaves)."""
    codes, _ = blobs()
    model = GeodesicKMeans(3, random_state=0).fit(codes)
    nearby = codes[:40] + 1e-3
    assert (model.predict(nearby) == model.labels_[:40]).all()
    assert model.transform(nearby).shape == (40, 3)


def test_empty_cluster_is_reseeded_with_a_warning() -> None:
    """Two coincident initial medoids leave one cluster empty; it is re-seeded with the farthest point."""
    x = np.array([0.0, 0.0, 1.0, 10.0, 11.0, 20.0])  # points 0 and 1 coincide
    distances = np.abs(x[:, None] - x[None, :])
    with pytest.warns(
        UserWarning, match=r"cluster\(s\) \[1\] became empty; re-seeded with the farthest point\(s\) \[5\]"
    ):
        model = GeodesicKMeans(3, init=[0, 1, 3], metric="precomputed").fit(distances)
    assert sorted(np.bincount(model.labels_).tolist()) == [1, 2, 3]
    assert 5 in model.medoid_indices_.tolist()


def test_cluster_latent_graph_result() -> None:
    """The CLI's one call: labels, medoids, scores against the graph's labels, a JSON-ready summary."""
    graph = ring_graph()
    graph.labels = np.array([0, 0, 0, 1, 1, 1, 0])
    result = cluster_latent_graph(graph, 2, random_state=0)
    assert result.scores == {"ari": 1.0, "nmi": 1.0, "f_measure": 1.0}
    assert sorted(result.cluster_sizes.tolist()) == [3, 4]
    json.dumps(result.to_dict())


def test_f_measure_by_hand() -> None:
    """Class-to-cluster F: classes {a: 3, b: 1} vs clusters {x: 2 a, y: 1 a + 1 b}; F = 3/4 * 0.8 + 1/4 * 2/3."""
    assert clustering_f_measure([0, 0, 0, 1], [0, 0, 1, 1]) == pytest.approx(0.75 * 0.8 + 0.25 * 2 / 3)


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("n_clusters", [0, 8, -1])
def test_n_clusters_out_of_range(n_clusters: int) -> None:
    """n_clusters must lie in [1, n_samples]; the message names parameter, rule and value."""
    message = (
        f"The 'n_clusters' parameter of GeodesicKMeans must be an int in the range [1, n_samples] (n_samples = 7); "
        f"got {n_clusters}."
    )
    with pytest.raises(InvalidInput, match=re.escape(message)):
        GeodesicKMeans(n_clusters, metric="precomputed").fit(ring_distances())
    with pytest.raises(InvalidInput, match=re.escape(message)):
        GeodesicKMeans(n_clusters, graph=ring_graph()).fit(ring_graph().codes)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"init": "kmeans"}, "The 'init' parameter of GeodesicKMeans must be a str among"),
        ({"init": [0, 0]}, "The 'init' parameter of GeodesicKMeans must be an array-like of 2 distinct sample indices"),
        ({"n_init": 0}, "The 'n_init' parameter of GeodesicKMeans must be an int in the range [1, inf); got 0"),
        ({"tol": -1.0}, "The 'tol' parameter of GeodesicKMeans must be a float in the range [0.0, inf); got -1.0"),
        ({"metric": "euclidean"}, "The 'metric' parameter of GeodesicKMeans must be a str among"),
    ],
)
def test_bad_parameters_are_named(params: dict, message: str) -> None:
    """Each bad parameter is refused with a sklearn-style message."""
    with pytest.raises(InvalidInput, match=re.escape(message)):
        GeodesicKMeans(2, **{"metric": "precomputed", **params}).fit(ring_distances())


def test_precomputed_matrix_must_be_square_and_non_negative() -> None:
    """Non-square and negative matrices are refused."""
    with pytest.raises(InvalidInput, match=r"must be square \(n, n\); got shape \(7, 6\)"):
        GeodesicKMeans(2, metric="precomputed").fit(ring_distances()[:, :6])
    negative = ring_distances()
    negative[2, 5] = -1.0
    with pytest.raises(InvalidInput, match=r"Negative values in data .* X\[2, 5\] = -1"):
        GeodesicKMeans(2, metric="precomputed").fit(negative)


def test_precomputed_inf_names_disconnected_points() -> None:
    """Infinite distances: the points cut off from the largest group are named."""
    distances = ring_distances()
    distances[:, [2, 5]] = distances[[2, 5], :] = np.inf
    distances[2, 2] = distances[5, 5] = distances[2, 5] = distances[5, 2] = 0.0
    with pytest.raises(InvalidInput, match=r"2 disconnected groups; point\(s\) \[2, 5\] \(2 in all\) are disconnected"):
        GeodesicKMeans(2, metric="precomputed").fit(distances)


def test_predict_before_fit() -> None:
    """Using an unfitted estimator raises scikit-learn's NotFittedError."""
    with pytest.raises(NotFittedError):
        GeodesicKMeans(2).predict(ring_graph().codes)


def test_graph_must_hold_x_and_be_connected() -> None:
    """A prebuilt graph over other codes, or a disconnected one, is refused."""
    with pytest.raises(InvalidInput, match="X must be the codes of the given graph"):
        GeodesicKMeans(2, graph=ring_graph()).fit(ring_graph().codes + 1.0)
    broken = graph_from_edges([edge for edge in RING_EDGES if 3 not in edge[:2]])  # node 3 cut off
    with pytest.raises(DisconnectedGraph, match=r"node\(s\) \[3\]"):
        GeodesicKMeans(2, graph=broken).fit(broken.codes)


def test_an_isolated_outlier_never_gets_a_cluster_of_its_own() -> None:
    """Three blobs plus one code 100 units away: every run of 5 seeds finds the blobs (ARI 1 on them), while the
    pre-fix seeding (min_cluster_size=1 and uncapped D^2 draws pick the outlier almost surely) would not."""
    from sklearn.metrics import adjusted_rand_score

    from lsg_graph.cluster import GeodesicKMeans

    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    truth = np.repeat(np.arange(3), 100)
    codes = np.vstack([centres[truth] + rng.normal(size=(300, 2)), [[100.0, 100.0]]])
    for seed in range(5):
        model = GeodesicKMeans(3, n_neighbors=10, n_init=3, random_state=seed).fit(codes)
        sizes = np.bincount(model.labels_, minlength=3)
        assert sizes.min() >= 5, sizes
        assert adjusted_rand_score(truth, model.labels_[:300]) == pytest.approx(1.0)
    with pytest.raises(InvalidInput, match="min_cluster_size"):
        GeodesicKMeans(3, min_cluster_size=0).fit(codes)
