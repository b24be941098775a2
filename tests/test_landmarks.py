"""Landmark geodesics: triangle bounds against exact Dijkstra, hand-solved graphs, estimate error, k-means at scale."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import make_blobs

from lsg_graph.cluster import GeodesicKMeans, clustering_scores
from lsg_graph.distances import all_pairs
from lsg_graph.errors import InvalidInput
from lsg_graph.geodesics.landmarks import ESTIMATES, LANDMARK_METHODS, induced_distances, select_landmarks
from lsg_graph.graph.latent_graph import LatentGraph, build_latent_graph
from lsg_graph.manifolds import SphereChart
from lsg_graph.metric import PullbackMetric

pytestmark = pytest.mark.filterwarnings("ignore::lsg_graph.errors.DisconnectedGraphWarning")

# A hand-solved path 0 -1- 1 -2- 2 -3- 3 -4- 4 (positions 0, 1, 3, 6, 10) plus an isolated node 5.
PATH_EDGES = [(0, 1, 1.0), (1, 2, 2.0), (2, 3, 3.0), (3, 4, 4.0)]
PATH_POSITIONS = np.array([0.0, 1.0, 3.0, 6.0, 10.0])


def graph_from_edges(edges: list[tuple[int, int, float]], n: int) -> LatentGraph:
    """A LatentGraph from explicit undirected edges, codes on the line x = node index."""
    rows, cols, lengths = (np.array(column) for column in zip(*edges))
    weights = sp.coo_matrix((np.r_[lengths, lengths], (np.r_[rows, cols], np.r_[cols, rows])), shape=(n, n)).tocsr()
    return LatentGraph(np.column_stack([np.arange(float(n)), np.zeros(n)]), weights)


@pytest.fixture(scope="module")
def sphere_graph() -> LatentGraph:
    """A kNN graph (k = 8) of 600 codes on the sphere chart, metric edge lengths."""
    chart = SphereChart()
    return build_latent_graph(PullbackMetric(chart), chart.sample(600, seed=3), k=8, device="cpu")


def test_hand_solved_path_bounds() -> None:
    """On a path with the landmark at one end, the lower bound is the exact distance and the upper bound the detour."""
    graph = graph_from_edges(PATH_EDGES, 5)
    table = select_landmarks(graph, 1, method="random", random_state=0)
    end = int(table.indices[0])
    a, b = np.meshgrid(np.arange(5), np.arange(5), indexing="ij")
    bounds = table.bounds(a.ravel(), b.ravel())
    exact = np.abs(PATH_POSITIONS[a.ravel()] - PATH_POSITIONS[b.ravel()])
    to_end = np.abs(PATH_POSITIONS - PATH_POSITIONS[end])
    detour = np.where(a.ravel() == b.ravel(), 0.0, to_end[a.ravel()] + to_end[b.ravel()])
    np.testing.assert_allclose(bounds.upper, detour, rtol=1e-11)
    if end in (0, 4):  # a landmark at an end of the path sees every distance exactly
        np.testing.assert_allclose(bounds.lower, exact, rtol=1e-11)
    assert np.all(bounds.lower <= exact) and np.all(exact <= bounds.upper)


def test_farthest_point_selection_by_hand() -> None:
    """From node 2 of the path, the farthest node is 4 (7 away), then 0 (3 from node 2, 10 from node 4)."""
    graph = graph_from_edges(PATH_EDGES, 5)
    for seed in range(20):
        table = select_landmarks(graph, 3, random_state=seed)
        if table.indices[0] == 2:
            assert table.indices.tolist() == [2, 4, 0]
            np.testing.assert_allclose(table.distances, np.abs(PATH_POSITIONS[[2, 4, 0], None] - PATH_POSITIONS))
            return
    pytest.fail("no seed in 0..19 drew node 2 first")


@pytest.mark.parametrize("method", list(LANDMARK_METHODS))
@pytest.mark.parametrize("n_landmarks", [1, 5, 40])
def test_bounds_hold_for_every_pair(sphere_graph: LatentGraph, method: str, n_landmarks: int) -> None:
    """lower <= exact Dijkstra <= upper for all 600^2 pairs, with no tolerance; exact at pairs with a landmark."""
    exact = all_pairs(sphere_graph)
    table = select_landmarks(sphere_graph, n_landmarks, method=method, random_state=1)
    a, b = (index.ravel() for index in np.meshgrid(np.arange(600), np.arange(600), indexing="ij"))
    for estimate in ESTIMATES:
        bounds = table.bounds(a, b, estimate=estimate)
        truth = exact[a, b]
        assert np.all(bounds.lower <= truth) and np.all(truth <= bounds.upper)
        assert np.all(bounds.lower <= bounds.estimate) and np.all(bounds.estimate <= bounds.upper)
    through = np.isin(a, table.indices)
    np.testing.assert_allclose(bounds.lower[through], exact[a, b][through], rtol=1e-11)
    np.testing.assert_allclose(bounds.upper[through], exact[a, b][through], rtol=1e-11)
    np.testing.assert_allclose(table.distances, exact[table.indices], rtol=0, atol=0)


def test_farthest_prefix_and_distinct(sphere_graph: LatentGraph) -> None:
    """Farthest-point landmarks are distinct, and each is the node farthest from the ones before it."""
    table = select_landmarks(sphere_graph, 12, random_state=4)
    assert len(np.unique(table.indices)) == 12
    for position in range(1, 12):
        closest = table.distances[:position].min(axis=0)
        assert closest[table.indices[position]] == pytest.approx(closest.max(), rel=1e-12)


def test_estimate_error_falls_with_landmarks() -> None:
    """Stated error of the default (lower-bound) estimate on the sphere chart, N = 2000, k = 10, 400 random pairs:
    median relative error below 2% at L = 32 (about 0.5% measured) and smaller at L = 128 than at L = 8."""
    chart = SphereChart()
    graph = build_latent_graph(PullbackMetric(chart), chart.sample(2000, seed=0), k=10, device="cpu")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2000, 400), rng.integers(0, 2000, 400)
    keep = a != b
    a, b = a[keep], b[keep]
    exact = all_pairs_rows(graph, a)[np.arange(len(a)), b]
    table = select_landmarks(graph, 128, random_state=0)
    medians = {}
    for n_landmarks in (8, 32, 128):
        prefix = type(table)(table.indices[:n_landmarks], table.distances[:n_landmarks], table.method)
        medians[n_landmarks] = float(np.median(np.abs(prefix.bounds(a, b).estimate - exact) / exact))
    assert medians[32] < 0.02
    assert medians[128] < medians[8]


def all_pairs_rows(graph: LatentGraph, sources: np.ndarray) -> np.ndarray:
    """Exact Dijkstra rows (s, n)."""
    from lsg_graph.distances import dijkstra_rows

    return dijkstra_rows(graph.weights, sources)


def test_disconnected_graph_bounds() -> None:
    """Node 5 is isolated: its bounds to the path are inf (lower: a landmark sees one side only), to itself 0."""
    graph = graph_from_edges(PATH_EDGES, 6)
    table = select_landmarks(graph, 2, random_state=0)  # farthest point from the first: the other component
    assert 5 in table.indices.tolist()
    bounds = table.bounds([0, 5, 5, 1], [5, 3, 5, 2])
    assert np.isinf(bounds.lower[:2]).all() and np.isinf(bounds.upper[:2]).all()
    assert bounds.lower[2] == bounds.upper[2] == 0.0
    assert bounds.lower[3] <= 2.0 <= bounds.upper[3]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda g: select_landmarks(g, 0), "'n_landmarks' parameter must be an int >= 1"),
        (lambda g: select_landmarks(g, 6), "'n_landmarks' parameter must be an int <= 5"),
        (lambda g: select_landmarks(g, 2, method="kmeans"), "Unknown landmark selection method 'kmeans'"),
        (lambda g: select_landmarks("graph", 2), "graph must be a lsg_graph LatentGraph"),
        (lambda g: select_landmarks(g, 2).bounds([0, 9], [1, 2]), r"sources\[1\] = 9 is out of range"),
        (lambda g: select_landmarks(g, 2).bounds([0.5], [1]), "must be a non-empty 1-D array of node indices"),
        (lambda g: select_landmarks(g, 2).bounds([0, 1], [1]), "same length"),
        (lambda g: select_landmarks(g, 2).bounds([0], [1], estimate="mean"), "Unknown landmark estimate 'mean'"),
        (lambda g: induced_distances(g, [0, 1, 2], [3]), "source 3 is not one of the subgraph's nodes"),
        (lambda g: induced_distances(g, [0, 7], [0]), r"nodes must be a non-empty array of node indices in \[0, 5\)"),
        (lambda g: select_landmarks(g, 2).lower_bound_costs([0], [1, 8]), r"members\[1\] = 8 is out of range"),
    ],
)
def test_bad_input_is_named(call, message: str) -> None:
    """Every bad argument raises InvalidInput naming it."""
    with pytest.raises(InvalidInput, match=message):
        call(graph_from_edges(PATH_EDGES, 5))


def test_induced_distances_by_hand() -> None:
    """On the path 0-1-2-3-4 (edges 1, 2, 3, 4): inside {0, 1, 2} the distances are exact; inside {0, 2, 3} node 0 is
    cut off from 2 and 3 (inf), which are joined by their edge."""
    graph = graph_from_edges(PATH_EDGES, 5)
    np.testing.assert_array_equal(induced_distances(graph, [2, 0, 1], [0, 2]), [[0.0, 1.0, 3.0], [3.0, 2.0, 0.0]])
    np.testing.assert_array_equal(induced_distances(graph, [0, 2, 3], [3]), [[np.inf, 3.0, 0.0]])


def test_induced_distances_bound_graph_distances(sphere_graph: LatentGraph) -> None:
    """Inside a geodesic ball (nodes within a radius of a centre) the distances from the centre are exact (every
    shortest path from it stays in the ball); from other sources they are upper bounds; the whole graph is exact."""
    exact = all_pairs(sphere_graph)
    ball = np.flatnonzero(exact[7] <= np.quantile(exact[7], 0.3))
    inside = induced_distances(sphere_graph, ball, ball[:20])
    truth = exact[np.ix_(ball[:20], ball)]
    assert np.all(inside >= truth * (1 - 1e-12))
    np.testing.assert_allclose(induced_distances(sphere_graph, ball, [7])[0], exact[7, ball], rtol=1e-12)
    assert (inside > truth * (1 + 1e-9)).any()  # some pairs of the ball are joined by shorter paths outside it
    np.testing.assert_allclose(induced_distances(sphere_graph, np.arange(600), [3, 9]), exact[[3, 9]], rtol=1e-12)


def test_lower_bound_costs_against_exact_costs(sphere_graph: LatentGraph) -> None:
    """Without sampling the estimate is the sum of squared landmark lower bounds (checked against `bounds`) and at
    most the exact cost; with a sample it is deterministic and within 15% of the full estimate (at most 5.1% measured)."""
    exact = all_pairs(sphere_graph)
    table = select_landmarks(sphere_graph, 24, random_state=2)
    members, candidates = np.arange(0, 600, 2), np.array([0, 10, 40, 300, 598])
    full = table.lower_bound_costs(candidates, members, sample=10_000)
    by_pairs = [np.square(table.bounds(np.full(300, c), members).lower).sum() for c in candidates]
    np.testing.assert_allclose(full, by_pairs, rtol=1e-5)  # float32 bounds
    assert np.all(full <= np.square(exact[np.ix_(candidates, members)]).sum(axis=1) * (1 + 1e-5))
    sampled = table.lower_bound_costs(candidates, members, sample=100)
    np.testing.assert_array_equal(sampled, table.lower_bound_costs(candidates, members, sample=100))
    np.testing.assert_allclose(sampled, full, rtol=0.15)


# ------------------------------------------------------------------------------------------------ GeodesicKMeans


def test_kmeans_with_landmarks_matches_exact_mode() -> None:
    """Landmark-ranked medoids on 3 blobs of 400: the same partition as exact mode, inertia within 1%."""
    codes, truth = make_blobs(1200, centers=[[-6, 0], [0, 6], [6, 0]], cluster_std=1.5, random_state=0)
    exact = GeodesicKMeans(3, random_state=0, exact_medoid_size=50).fit(codes)
    fast = GeodesicKMeans(3, random_state=0, exact_medoid_size=50, landmarks=16, graph=exact.graph_).fit(codes)
    assert clustering_scores(truth, fast.labels_)["ari"] > 0.95
    assert clustering_scores(exact.labels_, fast.labels_)["ari"] > 0.99
    assert fast.inertia_ <= 1.01 * exact.inertia_
    own = fast.fit_transform(codes)[np.arange(len(codes)), fast.labels_]
    assert fast.inertia_ == pytest.approx(float(np.square(own).sum()))
    assert fast.landmark_indices_.shape == (16,) and fast.timings_["landmarks_s"] >= 0


def test_kmeans_landmark_medoid_near_brute_force() -> None:
    """One large cluster: the landmark-ranked medoid costs at most 1% more than the brute-force medoid."""
    codes, _ = make_blobs(500, centers=[[0, 0]], cluster_std=[[3.0]], random_state=2)
    model = GeodesicKMeans(1, random_state=0, exact_medoid_size=20, n_medoid_candidates=8, landmarks=8).fit(codes)
    brute = np.square(all_pairs(model.graph_)).sum(axis=1)
    assert model.inertia_ <= 1.01 * brute.min()


@pytest.mark.parametrize(
    "params, message",
    [
        ({"landmarks": 0}, r"'landmarks' parameter of GeodesicKMeans must be an int in the range \[1, inf\)"),
        ({"landmarks": 2.5}, "'landmarks' parameter of GeodesicKMeans must be an int"),
        ({"landmarks": 500}, r"'landmarks' parameter of GeodesicKMeans must be an int in the range \[1, n_samples\]"),
    ],
)
def test_kmeans_bad_landmarks(params: dict, message: str) -> None:
    """Bad 'landmarks' values are named."""
    codes, _ = make_blobs(60, centers=2, random_state=0)
    with pytest.raises(InvalidInput, match=message):
        GeodesicKMeans(2, **params).fit(codes)


def test_kmeans_landmarks_refused_for_precomputed() -> None:
    """metric='precomputed' has no graph to put landmarks on."""
    with pytest.raises(InvalidInput, match="'landmarks' parameter of GeodesicKMeans must be None for metric='precomputed'"):
        GeodesicKMeans(2, metric="precomputed", landmarks=4).fit(np.zeros((4, 4)))
