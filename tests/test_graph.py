"""LatentGraph: edge lengths against exact and reference values, graph distances against analytic geodesics,
components and bridges, save/load and its failures, attaching points, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lsg_graph.errors import ArtifactError, DecoderError, DisconnectedGraph, DisconnectedGraphWarning, InvalidInput
from lsg_graph.geodesics.shortest import graph_distances
from lsg_graph.graph.latent_graph import LatentGraph, build_latent_graph
from lsg_graph.graph.weights import edge_lengths, gauss_legendre
from lsg_graph.manifolds import DevelopableSurface, LinearDecoder, SphereChart
from lsg_graph.metric import PullbackMetric

# Stated tolerances: graph distances are polyline lengths, so they over-estimate the geodesic distance; at
# these sizes the median relative error must stay under MEDIAN_TOL (the full study is in benchmarks/).
MEDIAN_TOL = 0.05


def embedded_polyline_length(decoder, start: np.ndarray, end: np.ndarray, n_points: int = 20001) -> float:
    """Reference length of a straight latent segment: a fine polyline through the embedding (independent of metric.py)."""
    t = np.linspace(0.0, 1.0, n_points)[:, None]
    points = torch.as_tensor(start + t * (end - start), dtype=torch.float64)
    embedded = decoder(points)[0].numpy()
    return float(np.linalg.norm(np.diff(embedded, axis=0), axis=1).sum())


def test_gauss_legendre_is_exact_for_polynomials() -> None:
    """T nodes integrate t^p exactly on [0, 1] for p <= 2T - 1."""
    for n_nodes in (1, 4, 8):
        nodes, weights = gauss_legendre(n_nodes)
        assert weights.sum() == pytest.approx(1.0)
        for power in range(2 * n_nodes):
            assert weights @ nodes**power == pytest.approx(1.0 / (power + 1), rel=1e-12)


def test_linear_edge_lengths_are_exact() -> None:
    """For x = A z every segment length is ||A (b - a)||."""
    rng = np.random.default_rng(0)
    decoder = LinearDecoder(rng.normal(size=(5, 3)))
    starts, ends = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    lengths = edge_lengths(PullbackMetric(decoder), starts, ends, n_nodes=2)
    np.testing.assert_allclose(lengths, decoder.distance(starts, ends), rtol=1e-5)


@pytest.mark.parametrize("surface", [SphereChart(), DevelopableSurface()], ids=["sphere", "developable"])
def test_curved_edge_lengths_match_fine_reference(surface) -> None:
    """T = 8 Gauss-Legendre lengths of kNN-sized segments agree with a 20001-point embedded polyline to 1e-6."""
    starts = surface.sample(20, seed=1)
    ends = starts + np.random.default_rng(2).normal(scale=0.05, size=starts.shape)
    metric = PullbackMetric(surface)
    lengths = edge_lengths(metric, starts, ends, n_nodes=8)
    reference = np.array([embedded_polyline_length(surface, a, b) for a, b in zip(starts, ends)])
    np.testing.assert_allclose(lengths, reference, rtol=1e-6)


def test_chunking_does_not_change_lengths() -> None:
    """Any chunk size gives the same edge lengths."""
    surface = SphereChart()
    starts, ends = surface.sample(37, seed=3), surface.sample(37, seed=4)
    metric = PullbackMetric(surface)
    whole = edge_lengths(metric, starts, ends)
    chunked = edge_lengths(metric, starts, ends, points_per_chunk=24)
    np.testing.assert_allclose(chunked, whole, rtol=1e-12)


@pytest.mark.parametrize("surface", [SphereChart(), DevelopableSurface()], ids=["sphere", "developable"])
def test_graph_distances_approach_analytic_geodesics(surface) -> None:
    """Median relative error of graph distances against the exact geodesic distance stays below MEDIAN_TOL."""
    codes = surface.sample(1500, seed=0)
    graph = build_latent_graph(PullbackMetric(surface), codes, k=15)
    rng = np.random.default_rng(5)
    sources = rng.choice(len(codes), 10, replace=False)
    distances = graph_distances(graph, sources)
    targets = rng.choice(len(codes), 30, replace=False)
    exact = surface.distance(np.repeat(codes[sources], len(targets), 0), np.tile(codes[targets], (len(sources), 1)))
    measured = distances[:, targets].reshape(-1)
    keep = exact > 0.25 * exact.max()
    relative = (measured[keep] - exact[keep]) / exact[keep]
    assert np.median(relative) < MEDIAN_TOL
    assert relative.min() > -1e-6  # a graph path is a curve: never shorter than the geodesic


def test_metric_aware_neighbours_do_not_lengthen_paths() -> None:
    """Keeping the k metrically shortest of 3k candidates gives distances no worse than plain kNN on average."""
    surface = DevelopableSurface()
    codes = surface.sample(800, seed=0)
    metric = PullbackMetric(surface)
    plain = graph_distances(build_latent_graph(metric, codes, k=8), [0, 1, 2])
    aware = graph_distances(build_latent_graph(metric, codes, k=8, candidates=3), [0, 1, 2])
    assert np.mean(aware) <= np.mean(plain) * 1.001


def test_weights_are_symmetric_and_positive() -> None:
    """The CSR edge lengths form a symmetric matrix of positive entries."""
    surface = SphereChart()
    graph = build_latent_graph(PullbackMetric(surface), surface.sample(300, seed=0), k=6)
    assert abs(graph.weights - graph.weights.T).max() == 0
    assert (graph.weights.data > 0).all()
    assert graph.n_edges >= 300 * 6 / 2


def two_blobs(n: int = 60) -> np.ndarray:
    """Two far-apart clusters of codes in 2-D."""
    rng = np.random.default_rng(0)
    return np.vstack([rng.normal(0, 0.1, (n, 2)), rng.normal(10, 0.1, (n, 2))])


def test_disconnected_graph_is_bridged_with_warning() -> None:
    """Two clusters with small k are joined by a bridge; the warning says how many and what to raise."""
    metric = PullbackMetric(LinearDecoder(np.eye(2)))
    with pytest.warns(DisconnectedGraphWarning, match=r"2 connected components.*1 .*bridge.*Raise 'k'"):
        graph = build_latent_graph(metric, two_blobs(), k=3)
    assert graph.components()[0] == 1
    assert graph.params["n_bridges"] == 1
    assert np.isfinite(graph_distances(graph, [0])).all()


def test_disconnected_graph_refused_on_request() -> None:
    """connect='error' raises DisconnectedGraph naming the number of components."""
    metric = PullbackMetric(LinearDecoder(np.eye(2)))
    with pytest.raises(DisconnectedGraph, match="2 connected components"):
        build_latent_graph(metric, two_blobs(), k=3, connect="error")


def test_duplicate_codes_are_joined_at_zero_length() -> None:
    """Duplicated codes get (effectively) zero-length edges and distance 0, and stay in one component."""
    codes = np.vstack([SphereChart().sample(100, seed=0), np.repeat([[1.5, 1.0]], 4, axis=0)])
    graph = build_latent_graph(PullbackMetric(SphereChart()), codes, k=5)
    distances = graph_distances(graph, [100])[0]
    np.testing.assert_allclose(distances[101:104], 0.0, atol=1e-300)
    assert graph.components()[0] == 1


def test_save_load_round_trip(tmp_path) -> None:
    """Saving and loading gives the same codes, labels, weights and parameters."""
    surface = SphereChart()
    codes = surface.sample(200, seed=0)
    graph = build_latent_graph(PullbackMetric(surface), codes, np.arange(200) % 3, k=5)
    graph.save(tmp_path)
    loaded = LatentGraph.load(tmp_path)
    np.testing.assert_array_equal(loaded.codes, graph.codes)
    np.testing.assert_array_equal(loaded.labels, graph.labels)
    assert (loaded.weights != graph.weights).nnz == 0
    assert loaded.params == {name: value for name, value in graph.params.items() if name != "timings"}  # timings: manifest only


def test_same_inputs_give_byte_identical_file(tmp_path) -> None:
    """Building twice from the same codes writes byte-identical graph files."""
    surface = SphereChart()
    codes = surface.sample(200, seed=0)
    for name in ("a", "b"):
        graph = build_latent_graph(PullbackMetric(surface), codes, k=5)
        graph.params.pop("timings")
        graph.save(tmp_path / name)
    assert (tmp_path / "a" / "graph.npz").read_bytes() == (tmp_path / "b" / "graph.npz").read_bytes()


def test_missing_truncated_and_foreign_graph_files(tmp_path) -> None:
    """A missing, truncated or foreign graph.npz raises ArtifactError with the path."""
    with pytest.raises(ArtifactError, match="does not exist"):
        LatentGraph.load(tmp_path)
    surface = SphereChart()
    build_latent_graph(PullbackMetric(surface), surface.sample(100, seed=0), k=5).save(tmp_path)
    path = tmp_path / "graph.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="graph.npz"):
        LatentGraph.load(tmp_path)
    np.savez(path, codes=np.zeros((3, 2)))
    with pytest.raises(ArtifactError, match="not written by lsg-graph"):
        LatentGraph.load(tmp_path)


def test_attach_new_points_without_rebuilding() -> None:
    """Attached points become nodes n..n+m-1 with k metric-weighted edges; old distances are unchanged or shorter."""
    surface = SphereChart()
    codes = surface.sample(400, seed=0)
    metric = PullbackMetric(surface)
    graph = build_latent_graph(metric, codes, k=8)
    extended = graph.attach(surface.sample(3, seed=9), metric)
    assert extended.n_points == 403
    assert extended.weights[400:].getnnz(axis=1).tolist() == [8, 8, 8]
    assert abs(extended.weights - extended.weights.T).max() == 0
    new_to_old = graph_distances(extended, [400])[0][:400]
    assert np.isfinite(new_to_old).all()
    assert (graph.weights != extended.weights[:400, :400]).nnz == 0


def test_to_networkx_matches_csr() -> None:
    """The networkx view has the same nodes, edges and weights."""
    surface = SphereChart()
    graph = build_latent_graph(PullbackMetric(surface), surface.sample(50, seed=0), np.arange(50), k=4)
    nx_graph = graph.to_networkx()
    assert nx_graph.number_of_nodes() == 50 and nx_graph.number_of_edges() == graph.n_edges
    u, v = next(iter(nx_graph.edges))
    assert nx_graph[u][v]["weight"] == graph.weights[u, v]
    assert nx_graph.nodes[3]["label"] == 3


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"k": 0}, r"'k' parameter must be an int >= 1; got 0"),
        ({"k": 50}, r"'k' parameter must be < the number of points \(50\); got 50"),
        ({"backend": "annoy"}, r"Unknown kNN backend 'annoy'; expected one of: 'auto', 'faiss', 'torch', 'kdtree'"),
        ({"n_nodes": 0}, r"'n_nodes' parameter must be an int >= 1; got 0"),
        ({"candidates": 0}, r"'candidates' parameter must be an int >= 1; got 0"),
        ({"connect": "maybe"}, r"Unknown connect mode 'maybe'"),
    ],
)
def test_bad_parameters_are_named(kwargs, match) -> None:
    """Each bad parameter gets InvalidInput naming it, the rule and the value."""
    surface = SphereChart()
    with pytest.raises(InvalidInput, match=match):
        build_latent_graph(PullbackMetric(surface), surface.sample(50, seed=0), **kwargs)


def test_bad_codes_are_named() -> None:
    """NaN codes and codes of the wrong dimension are refused."""
    surface = SphereChart()
    codes = surface.sample(50, seed=0)
    codes[7, 1] = np.nan
    with pytest.raises(InvalidInput, match=r"NaN or inf.*\[7\]"):
        build_latent_graph(PullbackMetric(surface), codes)
    with pytest.raises(InvalidInput, match=r"dimension 3 but the decoder expects latent dimension 2"):
        build_latent_graph(PullbackMetric(surface), np.zeros((50, 3)))


def test_decoder_returning_nan_is_reported() -> None:
    """A decoder that yields NaN on part of the latent space raises DecoderError, not a NaN graph."""

    def bad_decoder(z: torch.Tensor) -> torch.Tensor:
        return torch.where(z[:, :1] > 0.5, torch.nan, 1.0) * torch.cat([z, z**2], dim=1)

    from lsg_graph.decoder import as_decoder

    decoder = as_decoder(bad_decoder, latent_dim=2, check=False)
    codes = np.random.default_rng(0).uniform(0, 1, (60, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DecoderError, match="non-finite"):
            build_latent_graph(PullbackMetric(decoder), codes, k=5)
