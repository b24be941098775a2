"""Dijkstra on hand-solved graphs and against networkx."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from lsg_graph.errors import DisconnectedGraph, InvalidInput
from lsg_graph.geodesics.shortest import graph_distances, nearest_source_distances, shortest_path, shortest_paths
from lsg_graph.graph.latent_graph import LatentGraph

# A hand-solved weighted graph (undirected):
#   0 -1- 1 -1- 2
#   |           |
#   5           1
#   |           |
#   4 ----2---- 3        node 5 is isolated
EDGES = [(0, 1, 1.0), (1, 2, 1.0), (2, 3, 1.0), (3, 4, 2.0), (0, 4, 5.0)]
EXPECTED_FROM_0 = [0.0, 1.0, 2.0, 3.0, 5.0, np.inf]  # 0->4: via 1,2,3 costs 5, direct edge costs 5 too
EXPECTED_PATH_0_TO_3 = [0, 1, 2, 3]


def hand_graph() -> LatentGraph:
    """The hand-solved graph above as a LatentGraph (codes on a line, irrelevant to distances)."""
    rows, cols, lengths = (np.array(column) for column in zip(*EDGES))
    weights = sp.coo_matrix((np.r_[lengths, lengths], (np.r_[rows, cols], np.r_[cols, rows])), shape=(6, 6)).tocsr()
    codes = np.column_stack([np.arange(6.0), np.zeros(6)])
    return LatentGraph(codes, weights)


def test_distances_match_hand_solved_table() -> None:
    """Single-source distances equal the table worked out by hand."""
    np.testing.assert_array_equal(graph_distances(hand_graph(), 0)[0], EXPECTED_FROM_0)


def test_path_matches_hand_solved_path() -> None:
    """The node path and its length from 0 to 3."""
    path = shortest_path(hand_graph(), 0, 3)
    assert path.nodes.tolist() == EXPECTED_PATH_0_TO_3
    assert path.length == 3.0
    assert path.n_edges == 3
    assert path.euclidean_distance == 3.0
    np.testing.assert_array_equal(path.points[:, 0], [0, 1, 2, 3])


def test_identical_endpoints_give_zero_length_single_node_path() -> None:
    """A path from a node to itself has length 0 and one node."""
    path = shortest_path(hand_graph(), 2, 2)
    assert path.length == 0.0 and path.nodes.tolist() == [2]


def test_many_pairs_share_dijkstra_runs() -> None:
    """Paths for several pairs, including repeated sources, match single calls."""
    graph = hand_graph()
    pairs = [(0, 3), (0, 4), (3, 0), (1, 4)]
    for path, (source, target) in zip(shortest_paths(graph, pairs), pairs):
        single = shortest_path(graph, source, target)
        assert path.length == single.length and path.nodes.tolist() == single.nodes.tolist()


def test_unreachable_node_is_named() -> None:
    """A pair across components raises DisconnectedGraph naming both nodes."""
    with pytest.raises(DisconnectedGraph, match="Node 5 cannot be reached from node 0"):
        shortest_path(hand_graph(), 0, 5)


@pytest.mark.parametrize("bad", [-1, 6, 100])
def test_out_of_range_index_is_named(bad: int) -> None:
    """Indices outside [0, n) are refused with the range in the message."""
    with pytest.raises(InvalidInput, match=rf"index {bad} is out of range; expected 0 <= .* < 6"):
        shortest_path(hand_graph(), 0, bad)


def test_bad_pairs_shape() -> None:
    """Pairs must be (m, 2)."""
    with pytest.raises(InvalidInput, match=r"shape \(m, 2\)"):
        shortest_paths(hand_graph(), np.zeros((3, 3), dtype=int))


def test_nearest_source_assignment() -> None:
    """Multi-source Dijkstra gives each node its nearest source's position in the sources list."""
    distances, position = nearest_source_distances(hand_graph(), [3, 0])
    np.testing.assert_array_equal(distances, [0, 1, 1, 0, 2, np.inf])
    np.testing.assert_array_equal(position[:5], [1, 1, 0, 0, 0])
    assert position[5] == -1


def test_against_networkx_on_random_graph() -> None:
    """Dijkstra distances equal networkx's on a random weighted graph."""
    import networkx as nx

    rng = np.random.default_rng(0)
    n = 60
    rows, cols = np.triu_indices(n, 1)
    keep = rng.random(len(rows)) < 0.08
    rows, cols = rows[keep], cols[keep]
    lengths = rng.uniform(0.1, 2.0, len(rows))
    weights = sp.coo_matrix((np.r_[lengths, lengths], (np.r_[rows, cols], np.r_[cols, rows])), shape=(n, n)).tocsr()
    graph = LatentGraph(rng.normal(size=(n, 2)), weights)
    reference = nx.single_source_dijkstra_path_length(graph.to_networkx(), 7)
    ours = graph_distances(graph, 7)[0]
    for node in range(n):
        assert ours[node] == pytest.approx(reference.get(node, np.inf))
