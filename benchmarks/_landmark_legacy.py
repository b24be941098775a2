"""The landmark medoid update of GeodesicKMeans as it was before the induced-subgraph checks (commit e370a86).

benchmarks/landmarks.py --legacy puts it in place of lsg_graph.cluster._LandmarkGraphSpace to time the former code
path against the current one in the same process, on the same graph. Not used by the library.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lsg_graph import cluster
from lsg_graph.distances import dijkstra_rows


class LegacyLandmarkGraphSpace(cluster._GraphSpace):
    """Rank the n_candidates pool by per-candidate landmark estimates over all members; check the best 2 by a
    Dijkstra over the whole graph (cut off at the cluster's radius)."""

    def __init__(self, graph: Any, exact_size: int, n_candidates: int, landmarks: Any) -> None:
        """Keep the graph, the medoid-update settings and the landmark table."""
        super().__init__(graph, exact_size, n_candidates)
        self.landmarks, self.seconds, self.stats = landmarks, 0.0, {}

    def medoid(self, members: np.ndarray, current: int, distance: np.ndarray) -> int:
        """The former update (see the class)."""
        if len(members) <= self.exact_size:
            return super().medoid(members, current, distance)
        candidates = self._candidates(members, current, distance)
        table = self.landmarks.distances
        at_members = table[:, members]
        estimated = np.array([np.square(np.abs(at_members - table[:, [c]]).max(axis=0)).sum() for c in candidates])
        ranked = candidates[np.argsort(estimated, kind="stable")]
        ahead = ranked[: int(np.flatnonzero(ranked == current)[0])]
        shortlist = ahead[:2]
        if shortlist.size == 0:
            return int(current)
        own = distance[members]
        limit = (float(own.max()) + float(distance[shortlist].max())) * (1.0 + 1e-9) + 1e-300
        costs = np.square(dijkstra_rows(self.graph.weights, shortlist, limit)[:, members]).sum(axis=1)
        contenders = np.concatenate([[current], shortlist])
        return cluster._best_candidate(contenders, np.concatenate([[np.square(own).sum()], costs]), current)


def install() -> Any:
    """Put the legacy class in place; returns the current one (to restore)."""
    current = cluster._LandmarkGraphSpace
    cluster._LandmarkGraphSpace = LegacyLandmarkGraphSpace
    return current
