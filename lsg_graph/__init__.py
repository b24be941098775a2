"""lsg-graph: latent-space geometry of deep generative models (Arvanitidis, Hansen, Hauberg, ICLR 2018).

The public API, loaded lazily so that `import lsg_graph` stays light (no torch, scikit-learn or matplotlib until used).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_dataset": "lsg_graph.data",
    "make_dataset": "lsg_graph.data",
    "Dataset": "lsg_graph.data",
    "VAE": "lsg_graph.model",
    "VAEConfig": "lsg_graph.model",
    "train_vae": "lsg_graph.model",
    "encode_codes": "lsg_graph.model",
    "as_decoder": "lsg_graph.decoder",
    "PullbackMetric": "lsg_graph.metric",
    "LatentGraph": "lsg_graph.graph.latent_graph",
    "build_latent_graph": "lsg_graph.graph.latent_graph",
    "edge_lengths": "lsg_graph.graph.weights",
    "knn": "lsg_graph.graph.knn",
    "shortest_path": "lsg_graph.geodesics.shortest",
    "shortest_paths": "lsg_graph.geodesics.shortest",
    "graph_distances": "lsg_graph.geodesics.shortest",
    "GeodesicResult": "lsg_graph.geodesics.refine",
    "refine_geodesics": "lsg_graph.geodesics.refine",
    "refine_path": "lsg_graph.geodesics.refine",
    "RefineOptions": "lsg_graph.geodesics.refine",
    "GeodesicKMeans": "lsg_graph.cluster",
    "GeodesicDistance": "lsg_graph.distances",
    "geodesic_distances": "lsg_graph.distances",
    "GeodesicEmbedding": "lsg_graph.embedding",
    "save_pipeline": "lsg_graph.estimator_io",
    "load_pipeline": "lsg_graph.estimator_io",
    "random_walks": "lsg_graph.walks",
    "set_threads": "lsg_graph._threads",
    "default_threads": "lsg_graph._threads",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lsg_graph' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    """Public names, for tab completion."""
    return sorted(__all__)
