"""Save a fitted GeodesicKMeans to a run-style directory and load it back: safetensors + JSON, no pickle.

Layout of the directory:

* `kmeans.safetensors`: labels_, medoid_indices_, cluster_centers_ and the training points' distances to the
  medoids, with the parameters, fitted scalars and a content checksum in its header (format "geodesic-kmeans");
* `graph.npz` and `manifest.json`: the latent graph (metric="graph"), as `LatentGraph.save` writes it;
* `kmeans.json`: a human-readable copy of the parameters and fitted scalars (the safetensors header is authoritative).

A decoder is code, which is never stored: an estimator fitted with `decoder=` records the checksum of the
decoder's weights (its floating parameters and buffers), and `load(path, decoder=...)` must be given a decoder with
the same weights, or it refuses. Pickling the estimator keeps working as before (for scikit-learn users).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsg_graph import _io
from lsg_graph.errors import ArtifactError, InvalidInput, NotFittedError
from lsg_graph.graph.latent_graph import GRAPH_FILE, LatentGraph

KMEANS_KIND = "geodesic-kmeans"
KMEANS_FILE = "kmeans.safetensors"
SUMMARY_FILE = "kmeans.json"
JSON_PARAMS = (
    "n_clusters", "n_init", "max_iter", "tol", "metric", "n_neighbors", "n_nodes", "candidates",
    "exact_medoid_size", "n_medoid_candidates", "landmarks",
    "min_cluster_size",
)


def decoder_digest(decoder: Any) -> str | None:
    """sha256 of a decoder's floating parameters and buffers (of the module behind a PullbackMetric), None if none."""
    module = _module_of(decoder)
    if module is None:
        return None
    state = {name: tensor for name, tensor in module.state_dict().items() if tensor.is_floating_point()}
    if not state:
        return None
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu", torch.float64).contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def _module_of(decoder: Any) -> torch.nn.Module | None:
    """The torch module holding a decoder's weights: itself, or the decoder inside a PullbackMetric."""
    if isinstance(decoder, torch.nn.Module):
        return decoder
    pending = getattr(decoder, "_pending", None)  # a PullbackMetric whose latent dimension is not bound yet
    inner = pending if pending is not None else decoder.__dict__.get("decoder") if hasattr(decoder, "__dict__") else None
    return inner if isinstance(inner, torch.nn.Module) else None


def _json_value(name: str, value: Any) -> Any:
    """A parameter as JSON (init arrays as lists; a RandomState cannot be stored)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.random.RandomState):
        return None
    return value


def save_kmeans(estimator: Any, path: str | Path) -> Path:
    """Write a fitted GeodesicKMeans into the directory `path` (created); return the path."""
    if not hasattr(estimator, "medoid_indices_"):
        raise NotFittedError("This GeodesicKMeans instance is not fitted yet; call fit before save.")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InvalidInput(f"save needs a directory path; {str(path)!r} is a file.")
    path.mkdir(parents=True, exist_ok=True)
    params = {name: _json_value(name, getattr(estimator, name)) for name in JSON_PARAMS}
    params["init"] = _json_value("init", estimator.init)
    params["random_state"] = _json_value("random_state", estimator.random_state)
    graph = getattr(estimator, "graph_", None)
    meta = {
        "format": KMEANS_KIND,
        "format_version": _io.FORMAT_VERSION,
        "params": params,
        "graph_given": estimator.graph is not None,
        "decoder": None if estimator.decoder is None else type(estimator.decoder).__name__,
        "decoder_sha256": None if estimator.decoder is None else decoder_digest(estimator.decoder),
        "fitted": {
            "inertia_": float(estimator.inertia_),
            "n_iter_": int(estimator.n_iter_),
            "n_features_in_": int(estimator.n_features_in_),
            "timings_": {name: np.asarray(value).tolist() for name, value in estimator.timings_.items()},
            "has_graph": graph is not None,
        },
        "library_versions": _io.library_versions(),
    }
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        meta["fitted"]["feature_names_in_"] = [str(name) for name in names]
    tensors = {
        "labels": torch.from_numpy(np.ascontiguousarray(estimator.labels_)),
        "medoid_indices": torch.from_numpy(np.ascontiguousarray(estimator.medoid_indices_)),
        "medoid_distances": torch.from_numpy(np.ascontiguousarray(estimator._medoid_distances)),
    }
    if estimator.cluster_centers_ is not None:
        tensors["cluster_centers"] = torch.from_numpy(np.ascontiguousarray(estimator.cluster_centers_))
    if getattr(estimator, "landmark_indices_", None) is not None:
        tensors["landmark_indices"] = torch.from_numpy(np.ascontiguousarray(estimator.landmark_indices_))
    if graph is not None:
        graph.save(path)
        meta["graph_sha256"] = _io.sha256_file(path / GRAPH_FILE)
    _io.save_tensors(path / KMEANS_FILE, tensors, meta)
    _io.write_json(path / SUMMARY_FILE, {**meta, "note": f"Human-readable copy; {KMEANS_FILE} is authoritative."})
    return path


def load_kmeans(cls: type, path: str | Path, decoder: Any = None) -> Any:
    """A GeodesicKMeans (`cls`) read and validated from `path`; `decoder` must match the saved decoder's weights."""
    from lsg_graph.distances import edge_metric

    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"No saved GeodesicKMeans at {str(path)!r}: expected a directory holding {KMEANS_FILE}.")
    tensors, meta = _io.load_tensors(path / KMEANS_FILE, KMEANS_KIND)
    params, fitted = meta.get("params"), meta.get("fitted")
    if not isinstance(params, dict) or not isinstance(fitted, dict):
        raise ArtifactError(f"{str(path / KMEANS_FILE)!r} is malformed: 'params' and 'fitted' must be JSON objects.")
    _check_decoder(meta, decoder, path)
    try:
        estimator = cls(**params, decoder=decoder)
    except TypeError as exc:
        raise ArtifactError(f"{str(path / KMEANS_FILE)!r} has parameters this GeodesicKMeans does not take: {exc}") from exc
    labels = tensors.get("labels")
    medoids = tensors.get("medoid_indices")
    distances = tensors.get("medoid_distances")
    if labels is None or medoids is None or distances is None:
        raise ArtifactError(f"{str(path / KMEANS_FILE)!r} lacks labels, medoid_indices or medoid_distances.")
    labels, medoids, distances = labels.numpy().copy(), medoids.numpy().copy(), distances.numpy().copy()
    n, k = labels.shape[0], medoids.shape[0]
    if distances.shape != (k, n) or (k and (medoids.min() < 0 or medoids.max() >= n)) or \
            (n and (labels.min() < 0 or labels.max() >= k)):
        raise ArtifactError(
            f"{str(path / KMEANS_FILE)!r} is inconsistent: {n} labels, {k} medoids, distances {distances.shape}."
        )
    graph = None
    if fitted.get("has_graph"):
        graph_file = path / GRAPH_FILE
        if not graph_file.is_file() or meta.get("graph_sha256") != _io.sha256_file(graph_file):
            raise ArtifactError(
                f"{str(path / GRAPH_FILE)!r} is missing or is not the graph this clustering was fitted on (checksum)."
            )
        graph = LatentGraph.load(path)
        if graph.n_points != n:
            raise ArtifactError(f"{str(path)!r}: the graph has {graph.n_points} points but the clustering {n} labels.")
        estimator.graph_ = graph
        estimator.edge_metric_ = edge_metric(decoder, graph.latent_dim)
        if meta.get("graph_given"):
            estimator.graph = graph
    centers = tensors.get("cluster_centers")
    landmarks = tensors.get("landmark_indices")
    if landmarks is not None:
        landmarks = landmarks.numpy().copy()
        if landmarks.ndim != 1 or (landmarks.size and (landmarks.min() < 0 or landmarks.max() >= n)):
            raise ArtifactError(f"{str(path / KMEANS_FILE)!r} is inconsistent: landmark indices outside [0, {n}).")
        estimator.landmark_indices_ = landmarks
    estimator.labels_ = labels
    estimator.medoid_indices_ = medoids
    estimator.cluster_centers_ = None if centers is None else centers.numpy().copy()
    estimator._medoid_distances = distances
    estimator.inertia_ = float(fitted["inertia_"])
    estimator.n_iter_ = int(fitted["n_iter_"])
    estimator.n_features_in_ = int(fitted["n_features_in_"])
    estimator.timings_ = dict(fitted.get("timings_", {}))
    if "feature_names_in_" in fitted:
        estimator.feature_names_in_ = np.asarray(fitted["feature_names_in_"], dtype=object)
    return estimator


def _check_decoder(meta: dict[str, Any], decoder: Any, path: Path) -> None:
    """Refuse a missing, extra or different decoder (by the checksum of its weights)."""
    saved = meta.get("decoder")
    if saved is None:
        if decoder is not None:
            raise InvalidInput(f"The GeodesicKMeans in {str(path)!r} was fitted without a decoder (Euclidean edges); "
                               "load it without decoder=.")
        return
    if decoder is None:
        raise InvalidInput(
            f"The GeodesicKMeans in {str(path)!r} was fitted with a decoder ({saved}); decoders are code and are not "
            "stored: pass the same one, load(path, decoder=...)."
        )
    expected, got = meta.get("decoder_sha256"), decoder_digest(decoder)
    if expected is not None and got != expected:
        raise ArtifactError(
            f"The decoder passed to load has other weights than the one {str(path)!r} was fitted with "
            f"(sha256 {str(got)[:12]}... against {expected[:12]}...)."
        )
