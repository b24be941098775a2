"""Properties on random small inputs (hypothesis): the public API raises only LsgGraphError subclasses, graph
distances form a metric (symmetric, triangle inequality) that never undercuts the exact geodesic distance of a
linear decoder, and edge lengths are non-negative and do not depend on which end a segment starts from.

Inputs: 3-40 codes in 1-3 latent dimensions (duplicates and near-duplicates included, as hypothesis likes to make
them), random k (sometimes >= n, which must be refused cleanly), random backends, candidates and quadrature
nodes, and either a LinearDecoder with a random (possibly rank-deficient) matrix or a small smooth torch decoder.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lsg_graph.decoder import as_decoder
from lsg_graph.errors import LsgGraphError
from lsg_graph.geodesics.shortest import graph_distances, shortest_path, shortest_paths
from lsg_graph.graph.knn import knn
from lsg_graph.graph.latent_graph import build_latent_graph
from lsg_graph.graph.weights import edge_lengths
from lsg_graph.manifolds import LinearDecoder
from lsg_graph.metric import PullbackMetric

# LSG_HYPOTHESIS_EXAMPLES=500 for a longer hunt; the default keeps the file at a few seconds
MAX_EXAMPLES = int(os.environ.get("LSG_HYPOTHESIS_EXAMPLES", "25"))
SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RTOL = 1e-10  # float64 round-off allowance for sums of edge lengths along different paths
ATOL = 1e-12  # absolute allowance: metric norms of segments shorter than ~1e-150 underflow to 0


class SmoothDecoder:
    """A small smooth nonlinear decoder z (n, d) -> (tanh(z W + b), sum sin z) (n, 4), in the input's dtype."""

    def __init__(self, latent_dim: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.weight = torch.as_tensor(rng.normal(size=(latent_dim, 3)))
        self.bias = torch.as_tensor(rng.normal(size=3))

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(z @ self.weight.to(z.dtype) + self.bias.to(z.dtype))
        return torch.cat([hidden, torch.sin(z).sum(dim=1, keepdim=True)], dim=1)


def codes_strategy(min_rows: int = 3, max_rows: int = 40) -> st.SearchStrategy[np.ndarray]:
    """(n, d) float64 codes, n in [min_rows, max_rows], d in [1, 3], entries in [-3, 3] (subnormals and -0 included)."""
    shapes = st.tuples(st.integers(min_rows, max_rows), st.integers(1, 3))
    return shapes.flatmap(lambda shape: hnp.arrays(np.float64, shape, elements=st.floats(-3, 3)))


@st.composite
def linear_problem(draw: st.DrawFn) -> tuple[LinearDecoder, np.ndarray]:
    """A LinearDecoder with a random (D, d) matrix, D in [1, 4], and codes in its latent space."""
    codes = draw(codes_strategy())
    n_outputs = draw(st.integers(1, 4))
    matrix = draw(hnp.arrays(np.float64, (n_outputs, codes.shape[1]), elements=st.floats(-2, 2)))
    return LinearDecoder(matrix), codes


@st.composite
def any_problem(draw: st.DrawFn) -> tuple[PullbackMetric, np.ndarray]:
    """A metric (linear or smooth nonlinear decoder) and codes of its latent dimension."""
    if draw(st.booleans()):
        decoder, codes = draw(linear_problem())
        return PullbackMetric(decoder), codes
    codes = draw(codes_strategy())
    decoder = SmoothDecoder(codes.shape[1], draw(st.integers(0, 2**16)))
    # a parameter-free callable computes in the dtype of its probe (float32 by default): ask for float64
    return PullbackMetric(as_decoder(decoder, latent_dim=codes.shape[1]).to(torch.float64)), codes


build_options = st.fixed_dictionaries(
    {
        "k": st.integers(1, 45),
        "n_nodes": st.integers(1, 8),
        "candidates": st.integers(1, 3),
        "backend": st.sampled_from(["auto", "kdtree", "torch", "faiss"]),
        "connect": st.sampled_from(["bridge", "error"]),
    }
)


def quiet_build(metric: PullbackMetric, codes: np.ndarray, **options: object):  # noqa: ANN201
    """build_latent_graph without the bridging warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_latent_graph(metric, codes, **options)


def all_distances(graph) -> np.ndarray:  # noqa: ANN001
    """Graph distance matrix (n, n)."""
    return graph_distances(graph, np.arange(graph.n_points))


# ---------------------------------------------------------------------------------------------------------------
# Only LsgGraphError escapes
# ---------------------------------------------------------------------------------------------------------------


@SETTINGS
@given(problem=any_problem(), options=build_options, endpoints=st.lists(st.integers(-3, 45), min_size=2, max_size=4))
def test_public_api_raises_only_library_errors(problem, options, endpoints) -> None:  # noqa: ANN001
    """Building, measuring, path finding and attaching on random input raise nothing but LsgGraphError."""
    metric, codes = problem
    try:
        graph = quiet_build(metric, codes, **options)
    except LsgGraphError:
        return
    for source, target in zip(endpoints[::2], endpoints[1::2]):
        try:
            path = shortest_path(graph, source, target)
        except LsgGraphError:
            continue
        assert path.nodes[0] == source and path.nodes[-1] == target
        assert path.length >= 0.0 and np.isfinite(path.length)
    try:
        shortest_paths(graph, [endpoints[:2], endpoints[-2:]])
        extended = graph.attach(codes[:2] + 0.25, metric, k=min(options["k"], graph.n_points))
        assert extended.n_points == graph.n_points + 2
    except LsgGraphError:
        pass


junk_values = st.one_of(
    hnp.arrays(
        st.sampled_from([np.float64, np.float32, np.int64, np.bool_, np.complex128, np.uint8]),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
    ),
    hnp.arrays(np.dtype("U3"), (3, 2)),
    st.lists(st.lists(st.floats(allow_nan=True), max_size=3), max_size=4),
    st.none(),
    st.text(max_size=5),
)


@SETTINGS
@given(codes=junk_values, k=st.one_of(st.integers(-2, 6), st.floats(), st.none(), st.text(max_size=2)))
def test_junk_input_raises_only_library_errors(codes, k) -> None:  # noqa: ANN001
    """Arbitrary arrays (any dtype, 0-3 dims, NaN, inf, empty), lists, None and strings as codes or k."""
    metric = PullbackMetric(LinearDecoder(np.eye(2)))
    for call in (
        lambda: quiet_build(metric, codes, k=k),
        lambda: knn(codes, k),
        lambda: edge_lengths(metric, codes, codes),
        lambda: metric.inner(codes, codes),
    ):
        try:
            call()
        except LsgGraphError:
            pass


# ---------------------------------------------------------------------------------------------------------------
# Graph distances are a metric bounded below by the geodesic distance
# ---------------------------------------------------------------------------------------------------------------


@SETTINGS
@given(problem=any_problem(), k=st.integers(1, 6), candidates=st.integers(1, 2))
def test_graph_distances_are_symmetric_and_satisfy_the_triangle_inequality(problem, k, candidates) -> None:  # noqa: ANN001
    """d(i, j) = d(j, i), d(i, i) = 0, d >= 0, and d(i, k) <= d(i, j) + d(j, k) on every triple."""
    metric, codes = problem
    assume(k < len(codes))
    distances = all_distances(quiet_build(metric, codes, k=k, candidates=candidates))
    assert np.isfinite(distances).all()  # bridging joins every component
    assert (distances >= 0).all() and (np.diag(distances) == 0).all()
    np.testing.assert_allclose(distances, distances.T, rtol=RTOL, atol=ATOL)
    via = distances[:, :, None] + distances[None, :, :]  # via[i, j, k] = d(i, j) + d(j, k)
    excess = distances[:, None, :] - via
    assert (excess <= RTOL * via + ATOL).all(), float(excess.max())


@SETTINGS
@given(problem=linear_problem(), k=st.integers(1, 6), n_nodes=st.integers(1, 4))
def test_graph_distance_never_undercuts_the_linear_geodesic(problem, k, n_nodes) -> None:  # noqa: ANN001
    """For x = A z straight lines are geodesics: every graph distance >= ||A (b - a)||, edges equal to it."""
    decoder, codes = problem
    assume(k < len(codes))
    graph = quiet_build(PullbackMetric(decoder), codes, k=k, n_nodes=n_nodes)
    distances = all_distances(graph)
    n = len(codes)
    rows, cols = np.repeat(np.arange(n), n), np.tile(np.arange(n), n)
    exact = decoder.distance(codes[rows], codes[cols]).reshape(n, n)
    assert (distances >= exact * (1 - RTOL) - ATOL).all(), float((exact - distances).max())
    edges = graph.weights.tocoo()
    np.testing.assert_allclose(edges.data, exact[edges.row, edges.col], rtol=1e-9, atol=ATOL)


# ---------------------------------------------------------------------------------------------------------------
# Edge lengths
# ---------------------------------------------------------------------------------------------------------------


@st.composite
def segments(draw: st.DrawFn) -> tuple[PullbackMetric, np.ndarray, np.ndarray]:
    """A metric and segment ends a, b (m, d), m in [1, 20]."""
    metric, codes = draw(any_problem())
    ends = draw(hnp.arrays(np.float64, codes.shape, elements=st.floats(-3, 3)))
    m = min(len(codes), 20)
    return metric, codes[:m], ends[:m]


@SETTINGS
@given(problem=segments(), n_nodes=st.integers(1, 10))
def test_edge_lengths_are_non_negative_and_symmetric_in_the_ends(problem, n_nodes) -> None:  # noqa: ANN001
    """L(a, b) >= 0, L(a, b) = L(b, a) (Gauss-Legendre nodes are symmetric), L(a, a) = 0."""
    metric, starts, ends = problem
    forward = edge_lengths(metric, starts, ends, n_nodes=n_nodes)
    backward = edge_lengths(metric, ends, starts, n_nodes=n_nodes)
    assert forward.shape == (len(starts),) and forward.dtype == np.float64
    assert (forward >= 0).all() and np.isfinite(forward).all()
    np.testing.assert_allclose(forward, backward, rtol=1e-9, atol=ATOL)
    assert (edge_lengths(metric, starts, starts, n_nodes=n_nodes) == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_swap_invariance_in_the_decoder_dtype(dtype: torch.dtype) -> None:
    """The same symmetry in float32 and float64 decoders (one fixed example; the properties above use float64)."""
    decoder = as_decoder(SmoothDecoder(2, 0), latent_dim=2)
    decoder.to(dtype)
    metric = PullbackMetric(decoder)
    rng = np.random.default_rng(0)
    starts, ends = rng.uniform(-2, 2, (50, 2)), rng.uniform(-2, 2, (50, 2))
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(edge_lengths(metric, starts, ends), edge_lengths(metric, ends, starts), rtol=tolerance)
