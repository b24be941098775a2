"""distances="refined": graph paths refined into geodesics, checked against the exact distances of analytic surfaces.

Truth: SphereChart (great-circle angles), DevelopableSurface (a developed plane), and a flat latent space
(decoder=None) where the geodesic is the straight segment. Refined distances never exceed graph distances, and
pairs whose refinement fails or lengthens the curve keep the graph distance.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

import lsg_graph.geodesics.refine as refine_module
from lsg_graph.cluster import GeodesicKMeans
from lsg_graph.distances import GeodesicDistance, geodesic_distances
from lsg_graph.errors import ConvergenceWarning, InvalidInput
from lsg_graph.manifolds import DevelopableSurface, SphereChart

FAST = "gauss_newton"  # the batched solver alone: fast on tiny data and converged on these surfaces


def exact(decoder, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Exact distances (len(A), len(B)) of an analytic decoder."""
    rows, cols = np.meshgrid(np.arange(len(A)), np.arange(len(B)), indexing="ij")
    return decoder.distance(A[rows.ravel()], B[cols.ravel()]).reshape(len(A), len(B))


def relative_error(values: np.ndarray, truth: np.ndarray) -> np.ndarray:
    mask = truth > 1e-9
    return np.abs(values[mask] / truth[mask] - 1.0)


def test_refined_all_pairs_are_close_to_the_sphere_truth() -> None:
    decoder = SphereChart()
    X = decoder.sample(30, seed=0)
    truth = exact(decoder, X, X)
    graph = GeodesicDistance(decoder=decoder, n_neighbors=6).fit_transform(X)
    refined = GeodesicDistance(decoder=decoder, n_neighbors=6, distances="refined", refine_method=FAST).fit_transform(X)
    graph_error, refined_error = relative_error(graph, truth), relative_error(refined, truth)
    assert np.median(graph_error) > 1e-2  # kNN paths zig-zag: the graph distances are several percent long
    assert np.median(refined_error) < 1e-5 and np.percentile(refined_error, 90) < 1e-4
    assert np.all(refined <= graph) and np.all(refined >= truth * (1 - 1e-6))  # an actual curve: never below the truth
    np.testing.assert_array_equal(refined, refined.T)
    np.testing.assert_array_equal(np.diag(refined), 0.0)


def test_refined_transform_of_new_points_and_rows_independent() -> None:
    decoder = DevelopableSurface()
    X, new = decoder.sample(30, seed=1), decoder.sample(4, seed=2)
    truth = exact(decoder, new, X)
    graph = GeodesicDistance(decoder=decoder, n_neighbors=6).fit(X).transform(new)
    model = GeodesicDistance(decoder=decoder, n_neighbors=6, distances="refined", refine_method=FAST).fit(X)
    refined = model.transform(new)
    assert refined.shape == (4, 30) and np.all(refined <= graph)
    assert np.median(relative_error(refined, truth)) < 1e-5 < 1e-3 < np.median(relative_error(graph, truth))
    np.testing.assert_allclose(model.transform(new[2:3])[0], refined[2], rtol=1e-9)  # a row alone is the same row


def test_flat_space_refines_to_the_straight_distance() -> None:
    """decoder=None: the metric is the identity, the geodesic is the straight segment, so refined = |a - b|."""
    X = np.random.default_rng(3).uniform(-1, 1, size=(25, 2))
    truth = np.linalg.norm(X[:, None] - X[None], axis=2)
    graph = geodesic_distances(X, n_neighbors=5)
    refined = geodesic_distances(X, n_neighbors=5, distances="refined", refine_method=FAST)
    assert np.median(relative_error(graph, truth)) > 1e-2
    assert relative_error(refined, truth).max() < 1e-6


def test_kmeans_refined_medoid_distances_beat_the_graph_ones() -> None:
    decoder = SphereChart()
    X, new = decoder.sample(40, seed=4), decoder.sample(5, seed=5)
    settings = {"decoder": decoder, "n_neighbors": 6, "random_state": 0}
    graph = GeodesicKMeans(3, **settings).fit(X)
    refined = GeodesicKMeans(3, distances="refined", refine_method=FAST, **settings).fit(X)
    np.testing.assert_array_equal(refined.medoid_indices_, graph.medoid_indices_)  # medoids from graph distances
    centers = X[refined.medoid_indices_]
    train_truth, new_truth = exact(decoder, X, centers), exact(decoder, new, centers)
    fitted = refined.fit_transform(X)
    assert fitted.shape == (40, 3) and np.all(fitted <= graph.fit_transform(X))
    assert np.median(relative_error(fitted, train_truth)) < 1e-5
    assert np.median(relative_error(graph.transform(new), new_truth)) > 1e-3
    assert np.median(relative_error(refined.transform(new), new_truth)) < 1e-5
    np.testing.assert_array_equal(refined.labels_, np.argmin(fitted, axis=1))
    np.testing.assert_array_equal(refined.predict(new), np.argmin(refined.transform(new), axis=1))
    assert refined.inertia_ == pytest.approx(float(np.square(fitted.min(axis=1)).sum()), rel=1e-12)
    assert refined.inertia_ < graph.inertia_ and refined.timings_["refine_s"] > 0


def test_failed_or_longer_refinements_keep_the_graph_distance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unconverged pairs and converged curves longer than the graph path fall back to the graph distance."""
    real = refine_module.refine_geodesics

    def spoiled(metric, graph, pairs, method="auto", **kwargs):
        results = real(metric, graph, pairs, method=method, **kwargs)
        out = []
        for i, result in enumerate(results):
            if i % 3 == 0:  # not converged (but shorter): must not be used
                result = dataclasses.replace(result, converged=False, length=0.5 * result.graph_length)
            elif i % 3 == 1:  # converged but longer than the graph path: must not be used
                result = dataclasses.replace(result, length=1.5 * result.graph_length)
            out.append(result)
        return out

    monkeypatch.setattr(refine_module, "refine_geodesics", spoiled)
    decoder = SphereChart()
    X = decoder.sample(12, seed=6)
    graph = GeodesicDistance(decoder=decoder, n_neighbors=4).fit_transform(X)
    with pytest.warns(ConvergenceWarning, match=r"did not converge for 22 of 66 pairs; they keep their graph"):
        refined = GeodesicDistance(decoder=decoder, n_neighbors=4, distances="refined",
                                   refine_method=FAST).fit_transform(X)
    upper = np.column_stack(np.triu_indices(12, k=1))
    kept = refined[upper[:, 0], upper[:, 1]] == graph[upper[:, 0], upper[:, 1]]
    index = np.arange(len(upper))
    assert kept[index % 3 != 2].all()  # the spoiled pairs (both kinds) keep their graph distance
    assert (~kept[index % 3 == 2]).mean() > 0.5  # the others are refined (shorter)


@pytest.mark.parametrize(
    "params,match",
    [
        ({"distances": "exact"}, r"'distances' parameter of GeodesicDistance must be a str among \['graph', 'refined'\]"),
        ({"distances": "refined", "refine_method": "none"}, r"'refine_method' parameter .* must be a str among"),
        ({"distances": "refined", "refine_method": "newton"}, r"got 'newton'\."),
    ],
)
def test_bad_refinement_parameters(params: dict, match: str) -> None:
    X = SphereChart().sample(10, seed=0)
    with pytest.raises(InvalidInput, match=match):
        GeodesicDistance(**params).fit(X)


def test_precomputed_kmeans_refuses_refined() -> None:
    D = np.abs(np.subtract.outer(np.arange(6.0), np.arange(6.0)))
    with pytest.raises(InvalidInput, match="'distances' parameter of GeodesicKMeans must be 'graph' for metric="):
        GeodesicKMeans(2, metric="precomputed", distances="refined").fit(D)


def test_refined_estimators_round_trip_and_pickle(tmp_path) -> None:
    import pickle

    decoder = SphereChart()
    X, new = decoder.sample(20, seed=7), decoder.sample(3, seed=8)
    model = GeodesicKMeans(2, decoder=decoder, n_neighbors=5, random_state=0, distances="refined",
                           refine_method=FAST).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converged everywhere: no warning
        expected = model.transform(new)
    loaded = GeodesicKMeans.load(model.save(tmp_path / "km"), decoder=decoder)
    assert loaded.get_params()["distances"] == "refined" and loaded.get_params()["refine_method"] == FAST
    np.testing.assert_allclose(loaded.transform(new), expected, rtol=1e-12)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(model)).transform(new), expected, rtol=1e-12)


def test_leaf_graph_paths_never_pass_through_other_new_points() -> None:
    """A U of training codes; a new point bridging the arms' tops would shorten the other new point's paths in the
    plain attached graph, but not in leaf_graph, whose paths equal the leaf distances of the module docs."""
    from lsg_graph.distances import edge_metric, leaf_distances_to_all, leaf_edges, leaf_graph
    from lsg_graph.geodesics.shortest import shortest_paths
    from lsg_graph.graph.latent_graph import build_latent_graph

    arm = np.linspace(0.0, 4.0, 9)
    bottom = np.linspace(0.5, 1.5, 3)
    X = np.vstack([np.column_stack([np.zeros(9), arm]), np.column_stack([bottom, np.zeros(3)]),
                   np.column_stack([np.full(9, 2.0), arm])])
    metric = edge_metric(None, 2)
    graph = build_latent_graph(metric, X, k=2, n_nodes=1)
    new = np.array([[0.1, 4.0], [1.0, 4.0]])  # a point by the left arm's top; a point between the two tops
    attached = graph.attach(new, metric, k=2)
    reference = leaf_distances_to_all(graph.weights, leaf_edges(attached, graph.n_points))
    right_top = graph.n_points - 1
    pairs = np.array([[graph.n_points, right_top]])
    plain = shortest_paths(attached, pairs)[0].length
    isolated = shortest_paths(leaf_graph(attached, graph.n_points), pairs)[0].length
    assert plain < 0.5 * reference[0, right_top]  # the shortcut through the other new point
    assert isolated == pytest.approx(reference[0, right_top], rel=1e-12)
