"""Shortest paths on the latent graph: Dijkstra (scipy.sparse.csgraph) distances and node paths."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse.csgraph import dijkstra

from lsg_graph._validation import check_float, check_index
from lsg_graph.errors import DisconnectedGraph, InvalidInput
from lsg_graph.graph.latent_graph import LatentGraph

NO_PREDECESSOR = -9999  # scipy's marker for "no predecessor"
# LatentGraph weights are symmetric, so directed=True gives the undirected distances without scipy symmetrising the
# matrix on every call.


@dataclass(frozen=True)
class GraphPath:
    """A shortest graph path: node indices (m,), their codes (m, d), graph length and straight Euclidean distance."""

    source: int
    target: int
    nodes: np.ndarray
    points: np.ndarray
    length: float
    euclidean_distance: float

    @property
    def n_edges(self) -> int:
        """Number of edges along the path."""
        return int(len(self.nodes) - 1)


@dataclass(frozen=True)
class ShortestDistances:
    """Graph distances from each source (s,) to every node: distances (s, n), predecessors (s, n) int64."""

    sources: np.ndarray
    distances: np.ndarray
    predecessors: np.ndarray


def check_sources(graph: LatentGraph, sources: Any, name: str = "sources") -> np.ndarray:
    """Validate node indices.

    Parameters
    ----------
    graph : LatentGraph
        The graph the indices refer to (n nodes).
    sources : array-like (s,) of int
        Node indices, s >= 1; a scalar is one index.
    name : str, default "sources"
        The parameter's name in error messages.

    Returns
    -------
    ndarray (s,) int64
        The indices, each in [0, n).

    Raises
    ------
    InvalidInput
        Not a non-empty 1-D integer array, or an index outside [0, n) (named in the message).
    """
    try:
        array = np.atleast_1d(np.asarray(sources))
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{name} must be a non-empty 1-D array of node indices; could not read {sources!r}: {exc}") from exc
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise InvalidInput(f"{name} must be a non-empty 1-D array of node indices; got {sources!r}.")
    for index in array[(array < 0) | (array >= graph.n_points)][:1]:
        check_index(int(index), name, graph.n_points)
    return array.astype(np.int64)


def shortest_distances(graph: LatentGraph, sources: Any, limit: float = np.inf) -> ShortestDistances:
    """Dijkstra from every source (one scipy call for all of them).

    Parameters
    ----------
    graph : LatentGraph
    sources : array-like (s,) of int
        Source node indices.
    limit : float, default inf
        Search radius > 0: nodes farther than it get distance inf.

    Returns
    -------
    ShortestDistances
        The sources (s,), distances (s, n) in metric length units (inf where unreachable) and predecessors (s, n).
    """
    sources = check_sources(graph, sources)
    limit = _check_limit(limit)
    distances, predecessors = dijkstra(graph.weights, directed=True, indices=sources, return_predecessors=True, limit=limit)
    return ShortestDistances(sources, np.atleast_2d(distances), np.atleast_2d(predecessors).astype(np.int64))


def _check_limit(limit: Any) -> float:
    """Return the Dijkstra search radius as a float > 0 (inf allowed), else raise InvalidInput."""
    if isinstance(limit, (int, float, np.integer, np.floating)) and not isinstance(limit, bool) and limit == np.inf:
        return np.inf
    return check_float(limit, "limit", minimum=0.0, strict_minimum=True)


def nearest_source_distances(graph: LatentGraph, sources: Any) -> tuple[np.ndarray, np.ndarray]:
    """Distance from every node to its nearest source, in one Dijkstra from all sources at once.

    Parameters
    ----------
    graph : LatentGraph
    sources : array-like (s,) of int
        Source node indices.

    Returns
    -------
    distances : ndarray (n,) float64
        Graph distance to the nearest source; inf where no source is reachable.
    position : ndarray (n,) int64
        Position in `sources` of that nearest source; -1 where none is reachable.
    """
    sources = check_sources(graph, sources)
    distances, _, nearest = dijkstra(graph.weights, directed=True, indices=sources, min_only=True, return_predecessors=True)
    position = np.full(graph.n_points, -1, dtype=np.int64)
    reached = nearest >= 0
    position[reached] = np.searchsorted(np.sort(sources), nearest[reached])
    order = np.argsort(sources, kind="stable")
    position[reached] = order[position[reached]]
    return distances, position


def path_nodes(predecessors: np.ndarray, source: int, target: int) -> np.ndarray:
    """The path's nodes read off one row of Dijkstra predecessors.

    Parameters
    ----------
    predecessors : ndarray (n,) int
        Predecessor of each node on its shortest path from `source` (scipy's row for that source).
    source, target : int
        End node indices.

    Returns
    -------
    ndarray (m,) int64
        Node indices from source to target, both included.

    Raises
    ------
    DisconnectedGraph
        When target is not reachable from source.
    """
    nodes = [target]
    while nodes[-1] != source:
        previous = int(predecessors[nodes[-1]])
        if previous == NO_PREDECESSOR or previous < 0:
            raise DisconnectedGraph(f"Node {target} cannot be reached from node {source}: they lie in different components.")
        nodes.append(previous)
    return np.array(nodes[::-1], dtype=np.int64)


def shortest_path(graph: LatentGraph, source: int, target: int) -> GraphPath:
    """The shortest graph path between two nodes.

    Parameters
    ----------
    graph : LatentGraph
    source, target : int
        Node indices in [0, n).

    Returns
    -------
    GraphPath
        Node indices, their codes, the graph length and the Euclidean distance of the end points.
    """
    source = check_index(source, "source", graph.n_points)
    target = check_index(target, "target", graph.n_points)
    return shortest_paths(graph, [(source, target)])[0]


def shortest_paths(graph: LatentGraph, pairs: Sequence[tuple[int, int]] | np.ndarray) -> list[GraphPath]:
    """Shortest graph paths for many (source, target) pairs, one Dijkstra per distinct source.

    Parameters
    ----------
    graph : LatentGraph
    pairs : array-like (m, 2) of int
        Node index pairs, m >= 1.

    Returns
    -------
    list of GraphPath
        One per pair, in order.
    """
    try:
        pairs = np.asarray(pairs)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"pairs must be an array of shape (m, 2) of node indices; could not read {pairs!r}: {exc}") from exc
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.shape[0] == 0:
        raise InvalidInput(f"pairs must be an array of shape (m, 2) with m >= 1; got shape {pairs.shape}.")
    check_sources(graph, pairs[:, 0], "source")
    check_sources(graph, pairs[:, 1], "target")
    unique_sources = np.unique(pairs[:, 0])
    result = shortest_distances(graph, unique_sources)
    row_of = {int(source): row for row, source in enumerate(unique_sources)}
    paths = []
    for source, target in pairs.tolist():
        row = row_of[source]
        nodes = path_nodes(result.predecessors[row], source, target)
        euclidean = float(np.linalg.norm(graph.codes[target] - graph.codes[source]))
        length = float(result.distances[row, target])
        paths.append(GraphPath(source, target, nodes, graph.codes[nodes], length, euclidean))
    return paths


def graph_distances(graph: LatentGraph, sources: Any, targets: Any = None) -> np.ndarray:
    """Graph distance matrix between source and target nodes.

    Parameters
    ----------
    graph : LatentGraph
    sources : array-like (s,) of int
        Source node indices.
    targets : array-like (t,) of int, optional
        Target node indices (default: all nodes).

    Returns
    -------
    ndarray (s, t) float64
        Shortest-path lengths; inf between components.
    """
    result = shortest_distances(graph, sources)
    if targets is None:
        return result.distances
    return result.distances[:, check_sources(graph, targets, "targets")]
