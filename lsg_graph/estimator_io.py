"""Save fitted lsg-graph estimators and scikit-learn pipelines holding them to directories: safetensors + JSON, no pickle.

* `save_kmeans`/`load_kmeans` (GeodesicKMeans.save/load), `save_distance`/`load_distance` (GeodesicDistance),
  `save_estimator`/`load_estimator` (either, by type or by what the directory holds);
* `save_pipeline(pipeline, path)`/`load_pipeline(path, decoder=...)`: a fitted sklearn Pipeline whose steps are
  lsg-graph estimators or plain scikit-learn estimators (see "Pipelines" below).

Layout of a GeodesicKMeans directory:

* `kmeans.safetensors`: labels_, medoid_indices_, cluster_centers_ and the training points' distances to the
  medoids, with the parameters, fitted scalars and a content checksum in its header (format "geodesic-kmeans");
* `graph.npz` and `manifest.json`: the latent graph (metric="graph"), as `LatentGraph.save` writes it;
* `kmeans.json`: a human-readable copy of the parameters and fitted scalars (the safetensors header is authoritative).

A decoder is code, which is never stored: an estimator fitted with `decoder=` records the checksum of the
decoder's weights (its floating parameters and buffers), and `load(path, decoder=...)` must be given a decoder with
the same weights, or it refuses. Pickling the estimator keeps working as before (for scikit-learn users).

A GeodesicDistance directory holds `distance.safetensors` (format "geodesic-distance": parameters and fitted
scalars in the header), `distance.json` (readable copy) and the graph (`graph.npz`, `manifest.json`).

Pipelines. `save_pipeline` writes `pipeline.json` (format "sklearn-pipeline": the steps in order, their kinds and
the sha256 of every file of every step) and one folder per step, `step-0`, `step-1`, ...: an lsg-graph estimator
in its own format, or a plain scikit-learn estimator as `estimator.safetensors` whose header holds its class path,
its parameters and its fitted attributes as JSON, the arrays among them as tensors. Only estimators of scikit-learn
itself (class in a `sklearn.` module) whose parameters and fitted attributes are numbers, strings, None, lists,
tuples, dicts of those, numpy dtypes and numeric or string arrays can be stored; any other step (a nested
estimator, a callable, a custom class) is refused with an error naming the step. The whole directory is written
into a sibling staging folder and renamed into place, so a crash leaves the old pipeline or none, never a mix; an
existing directory is replaced only when it holds a saved pipeline. `load_pipeline` checks the format, the file
checksums and each step, and refuses anything else with an ArtifactError naming the file.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsg_graph import _io
from lsg_graph.errors import ArtifactError, InvalidInput, NotFittedError
from lsg_graph.graph.latent_graph import GRAPH_FILE, LatentGraph
from lsg_graph.registry import DEFAULT_CLUSTER_ALGORITHM

KMEANS_KIND = "geodesic-kmeans"
KMEANS_FILE = "kmeans.safetensors"
SUMMARY_FILE = "kmeans.json"
JSON_PARAMS = (
    "n_clusters", "n_init", "max_iter", "tol", "metric", "n_neighbors", "n_nodes", "candidates",
    "exact_medoid_size", "n_medoid_candidates", "landmarks",
    "min_cluster_size", "distances", "refine_method", "n_jobs", "verbose",
)
DISTANCE_KIND = "geodesic-distance"
DISTANCE_FILE = "distance.safetensors"
DISTANCE_SUMMARY = "distance.json"
DISTANCE_PARAMS = ("n_neighbors", "n_nodes", "candidates", "distances", "refine_method", "n_jobs", "verbose")
PIPELINE_KIND = "sklearn-pipeline"
PIPELINE_FILE = "pipeline.json"
SKLEARN_KIND = "sklearn-estimator"
SKLEARN_FILE = "estimator.safetensors"
STEP_DIR = re.compile(r"step-\d{1,4}")


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
    path = _directory_for_save(path)
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
    if estimator.algorithm != DEFAULT_CLUSTER_ALGORITHM:  # files of default-parameter fits keep their contents
        params["algorithm"] = estimator.algorithm
    if getattr(estimator, "algorithm_", "medoids") == "embedding":
        params["n_components"] = _json_value("n_components", estimator.n_components)
        meta["fitted"]["algorithm_"] = "embedding"
        tensors.update(_embedding_tensors(estimator))
    if graph is not None:
        graph.save(path)
        meta["graph_sha256"] = _io.sha256_file(path / GRAPH_FILE)
    _io.save_tensors(path / KMEANS_FILE, tensors, meta)
    _io.write_json(path / SUMMARY_FILE, {**meta, "note": f"Human-readable copy; {KMEANS_FILE} is authoritative."})
    return path


def load_kmeans(cls: type, path: str | Path, decoder: Any = None) -> Any:
    """A GeodesicKMeans (`cls`) read and validated from `path`; `decoder` must match the saved decoder's weights."""
    path = Path(path)
    tensors, meta, params, fitted = _read_saved(path, KMEANS_FILE, KMEANS_KIND, "GeodesicKMeans", decoder)
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
    if fitted.get("has_graph"):
        graph = _attach_graph(estimator, path, meta, decoder, "clustering")
        if graph.n_points != n:
            raise ArtifactError(f"{str(path)!r}: the graph has {graph.n_points} points but the clustering {n} labels.")
    centers = tensors.get("cluster_centers")
    landmarks = tensors.get("landmark_indices")
    if landmarks is not None:
        landmarks = landmarks.numpy().copy()
        if landmarks.ndim != 1 or (landmarks.size and (landmarks.min() < 0 or landmarks.max() >= n)):
            raise ArtifactError(f"{str(path / KMEANS_FILE)!r} is inconsistent: landmark indices outside [0, {n}).")
        estimator.landmark_indices_ = landmarks
    estimator.algorithm_ = fitted.get("algorithm_", "medoids")
    if estimator.algorithm_ not in ("medoids", "embedding"):
        raise ArtifactError(f"{str(path / KMEANS_FILE)!r} names an unknown fitted algorithm {estimator.algorithm_!r}.")
    if estimator.algorithm_ == "embedding":
        if not fitted.get("has_graph"):
            raise ArtifactError(f"{str(path / KMEANS_FILE)!r} is an embedding clustering without its graph.")
        _restore_embedding(estimator, tensors, n, k, path / KMEANS_FILE)
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


EMBEDDING_TENSORS = ("centroids", "embedding_landmarks", "embedding_projection", "embedding_mean_squared",
                     "embedding_eigenvalues", "embedding_coordinates")


def _embedding_tensors(estimator: Any) -> dict[str, torch.Tensor]:
    """The fitted state of GeodesicKMeans(algorithm="embedding"): its centres and its GeodesicEmbedding (the landmark
    distances are not stored: load recomputes them from the saved graph)."""
    embedding = estimator.embedding_
    values = (estimator.centroids_, embedding.landmark_indices_, embedding._projection, embedding._mean_squared,
              embedding.eigenvalues_, embedding.embedding_)
    return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in zip(EMBEDDING_TENSORS, values)}


def _restore_embedding(estimator: Any, tensors: dict[str, torch.Tensor], n: int, k: int, file: Path) -> None:
    """Set centroids_ and a fitted GeodesicEmbedding (embedding_) on a loaded GeodesicKMeans, validated; graph_ and
    edge_metric_ must be set."""
    from lsg_graph.distances import dijkstra_rows
    from lsg_graph.embedding import GeodesicEmbedding

    missing = [name for name in EMBEDDING_TENSORS if name not in tensors]
    if missing:
        raise ArtifactError(f"{str(file)!r} is an embedding clustering but lacks {', '.join(missing)}.")
    centroids, landmarks, projection, mean_squared, eigenvalues, coordinates = (
        tensors[name].numpy().copy() for name in EMBEDDING_TENSORS
    )
    m, count = eigenvalues.shape[0], landmarks.shape[0]
    consistent = (
        centroids.shape == (k, m) and projection.shape == (count, m) and mean_squared.shape == (count,)
        and coordinates.shape == (n, m) and landmarks.ndim == 1 and count >= 1
        and landmarks.min() >= 0 and landmarks.max() < n
    )
    if not consistent:
        raise ArtifactError(
            f"{str(file)!r} is inconsistent: centroids {centroids.shape}, {count} landmarks, projection "
            f"{projection.shape}, coordinates {coordinates.shape} for {n} codes, {k} clusters and {m} components."
        )
    embedding = GeodesicEmbedding(estimator.n_components, n_landmarks=count, graph=estimator.graph_)
    embedding.graph_, embedding.edge_metric_ = estimator.graph_, estimator.edge_metric_
    embedding.landmark_indices_, embedding._projection = landmarks.astype(np.int64), projection
    embedding._mean_squared, embedding.eigenvalues_, embedding.embedding_ = mean_squared, eigenvalues, coordinates
    embedding.n_components_, embedding.n_features_in_ = m, estimator.graph_.latent_dim
    embedding._to_train = dijkstra_rows(estimator.graph_.weights, embedding.landmark_indices_)
    placed = embedding._place(np.square(embedding._to_train.T))
    if not np.allclose(placed, coordinates, rtol=1e-6, atol=1e-6 * max(1.0, float(np.abs(coordinates).max(initial=0.0)))):
        raise ArtifactError(
            f"{str(file)!r} does not match its graph: the saved embedding is not what its landmarks give on it."
        )
    estimator.embedding_, estimator.centroids_ = embedding, centroids


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


# ------------------------------------------------------------------------------------------------ GeodesicDistance


def save_distance(estimator: Any, path: str | Path) -> Path:
    """Write a fitted GeodesicDistance into the directory `path` (created); return the path."""
    if not hasattr(estimator, "graph_"):
        raise NotFittedError("This GeodesicDistance instance is not fitted yet; call fit before save.")
    path = _directory_for_save(path)
    params = {name: _json_value(name, getattr(estimator, name)) for name in DISTANCE_PARAMS}
    estimator.graph_.save(path)
    meta = {
        "format": DISTANCE_KIND,
        "format_version": _io.FORMAT_VERSION,
        "params": params,
        "graph_given": estimator.graph is not None,
        "decoder": None if estimator.decoder is None else type(estimator.decoder).__name__,
        "decoder_sha256": None if estimator.decoder is None else decoder_digest(estimator.decoder),
        "fitted": {"n_train_": int(estimator.n_train_), "n_features_in_": int(estimator.n_features_in_)},
        "graph_sha256": _io.sha256_file(path / GRAPH_FILE),
        "library_versions": _io.library_versions(),
    }
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        meta["fitted"]["feature_names_in_"] = [str(name) for name in names]
    _io.save_tensors(path / DISTANCE_FILE, {"n_train": torch.tensor([int(estimator.n_train_)])}, meta)
    _io.write_json(path / DISTANCE_SUMMARY, {**meta, "note": f"Human-readable copy; {DISTANCE_FILE} is authoritative."})
    return path


def load_distance(cls: type, path: str | Path, decoder: Any = None) -> Any:
    """A GeodesicDistance (`cls`) read and validated from `path`; `decoder` must match the saved decoder's weights."""
    path = Path(path)
    _, meta, params, fitted = _read_saved(path, DISTANCE_FILE, DISTANCE_KIND, "GeodesicDistance", decoder)
    try:
        estimator = cls(**params, decoder=decoder)
        n_train, n_features = int(fitted["n_train_"]), int(fitted["n_features_in_"])
    except (TypeError, KeyError, ValueError) as exc:
        raise ArtifactError(f"{str(path / DISTANCE_FILE)!r} has parameters or fitted values this GeodesicDistance "
                            f"does not take: {exc}") from exc
    graph = _attach_graph(estimator, path, meta, decoder, "transformer")
    if graph.n_points != n_train or graph.latent_dim != n_features:
        raise ArtifactError(f"{str(path)!r}: the graph has {graph.n_points} codes of dimension {graph.latent_dim}, "
                            f"the transformer records {n_train} of dimension {n_features}.")
    estimator.n_train_ = n_train
    estimator.n_features_in_ = n_features
    if "feature_names_in_" in fitted:
        estimator.feature_names_in_ = np.asarray(fitted["feature_names_in_"], dtype=object)
    return estimator


def _read_saved(
    path: Path, file: str, kind: str, name: str, decoder: Any
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The tensors, metadata, params and fitted records of estimator `name` saved in `path`/`file` (format `kind`),
    its decoder checked against `decoder`; ArtifactError when the directory, file or records are not that."""
    if not path.is_dir():
        raise ArtifactError(f"No saved {name} at {str(path)!r}: expected a directory holding {file}.")
    tensors, meta = _io.load_tensors(path / file, kind)
    params, fitted = meta.get("params"), meta.get("fitted")
    if not isinstance(params, dict) or not isinstance(fitted, dict):
        raise ArtifactError(f"{str(path / file)!r} is malformed: 'params' and 'fitted' must be JSON objects.")
    _check_decoder(meta, decoder, path)
    return tensors, meta, params, fitted


def _attach_graph(estimator: Any, path: Path, meta: dict[str, Any], decoder: Any, what: str) -> LatentGraph:
    """Load the graph saved beside an estimator (its checksum must match the one recorded) and set graph_,
    edge_metric_ (and graph, when it was given) on the estimator; `what` names the estimator in errors."""
    from lsg_graph.distances import edge_metric

    graph_file = path / GRAPH_FILE
    if not graph_file.is_file() or meta.get("graph_sha256") != _io.sha256_file(graph_file):
        raise ArtifactError(f"{str(graph_file)!r} is missing or is not the graph this {what} was fitted on (checksum).")
    graph = LatentGraph.load(path)
    estimator.graph_ = graph
    estimator.edge_metric_ = edge_metric(decoder, graph.latent_dim)
    if meta.get("graph_given"):
        estimator.graph = graph
    return graph


def save_estimator(estimator: Any, path: str | Path) -> Path:
    """Write a fitted GeodesicKMeans or GeodesicDistance to the directory `path`; return the path."""
    from lsg_graph.cluster import GeodesicKMeans
    from lsg_graph.distances import GeodesicDistance

    if isinstance(estimator, GeodesicKMeans):
        return save_kmeans(estimator, path)
    if isinstance(estimator, GeodesicDistance):
        return save_distance(estimator, path)
    raise InvalidInput(f"save_estimator saves GeodesicKMeans and GeodesicDistance; got {type(estimator).__name__} "
                       "(use save_pipeline for a Pipeline).")


def load_estimator(path: str | Path, decoder: Any = None, expected: type | None = None) -> Any:
    """The lsg-graph estimator saved in `path` (which one: by the file it holds); `expected`: refuse another class."""
    from lsg_graph.cluster import GeodesicKMeans
    from lsg_graph.distances import GeodesicDistance

    path = Path(path)
    found = [(cls, name) for cls, name in ((GeodesicKMeans, KMEANS_FILE), (GeodesicDistance, DISTANCE_FILE))
             if (path / name).exists()]
    if not path.is_dir() or not found:
        what = expected.__name__ if expected is not None else "GeodesicKMeans or GeodesicDistance"
        raise ArtifactError(f"No saved {what} at {str(path)!r}: expected a directory holding {KMEANS_FILE} or "
                            f"{DISTANCE_FILE}.")
    cls = found[0][0]
    if expected is not None and not issubclass(cls, expected) and not issubclass(expected, cls):
        raise ArtifactError(f"{str(path)!r} holds a saved {cls.__name__}, not a {expected.__name__}.")
    target = expected if expected is not None else cls
    return load_kmeans(target, path, decoder) if cls is GeodesicKMeans else load_distance(target, path, decoder)


def _directory_for_save(path: str | Path) -> Path:
    """`path` as a directory (created), refusing a file in its place."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InvalidInput(f"save needs a directory path; {str(path)!r} is a file.")
    path.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------------------------------------ plain sklearn steps


class _Unstorable(Exception):
    """A value that the JSON + array encoding cannot hold; the message says which and why."""


def _encode(value: Any, where: str, arrays: dict[str, torch.Tensor]) -> Any:
    """`value` as JSON, arrays moved into `arrays` (referenced by key); raises _Unstorable naming `where`."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, np.generic) and not isinstance(value, (np.object_, np.str_, np.bytes_, np.void)):
        return {"$scalar": np.dtype(value.dtype).str, "value": _encode(value.item(), where, arrays)}
    if isinstance(value, np.str_):
        return str(value)
    if isinstance(value, np.ndarray):
        return _encode_array(value, where, arrays)
    if isinstance(value, (list, tuple)):
        items = [_encode(item, f"{where}[{i}]", arrays) for i, item in enumerate(value)]
        return items if isinstance(value, list) else {"$tuple": items}
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise _Unstorable(f"{where} is a dict with non-string keys")
        return {"$dict": {key: _encode(item, f"{where}[{key!r}]", arrays) for key, item in value.items()}}
    if isinstance(value, type) and issubclass(value, np.generic):
        return {"$dtype": np.dtype(value).str, "instance": False}
    if isinstance(value, np.dtype) and value.fields is None:
        return {"$dtype": value.str, "instance": True}
    raise _Unstorable(f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which has no JSON/array form")


def _encode_array(value: np.ndarray, where: str, arrays: dict[str, torch.Tensor]) -> Any:
    """A numeric array as a tensor reference, a string array as a JSON list; anything else is _Unstorable."""
    if value.dtype == object or value.dtype.kind in "US":
        flat = value.reshape(-1).tolist()
        if not all(isinstance(item, str) for item in flat):
            raise _Unstorable(f"{where} is an object array holding non-string values")
        return {"$strings": flat, "shape": list(value.shape), "object": value.dtype == object}
    if value.dtype.kind not in "biuf" or value.dtype.byteorder == ">":
        raise _Unstorable(f"{where} is an array of dtype {value.dtype}, which safetensors cannot hold")
    key = f"a{len(arrays)}"
    try:
        arrays[key] = torch.from_numpy(np.ascontiguousarray(value).copy())
    except TypeError as exc:
        raise _Unstorable(f"{where} is an array of dtype {value.dtype}, which torch cannot hold") from exc
    return {"$array": key, "dtype": value.dtype.str, "fortran": bool(value.flags.f_contiguous and value.ndim > 1)}


def _decode(value: Any, arrays: dict[str, torch.Tensor], where: str) -> Any:
    """Inverse of _encode; raises ArtifactError on anything malformed."""
    if isinstance(value, list):
        return [_decode(item, arrays, where) for item in value]
    if not isinstance(value, dict):
        return value
    try:
        if "$float" in value:
            return float(value["$float"])
        if "$scalar" in value:
            return np.dtype(value["$scalar"]).type(_decode(value["value"], arrays, where))
        if "$tuple" in value:
            return tuple(_decode(item, arrays, where) for item in value["$tuple"])
        if "$dict" in value:
            return {key: _decode(item, arrays, where) for key, item in value["$dict"].items()}
        if "$dtype" in value:
            dtype = np.dtype(value["$dtype"])
            return dtype if value.get("instance") else dtype.type
        if "$strings" in value:
            array = np.array(value["$strings"], dtype=object if value["object"] else None)
            return array.reshape(value["shape"]) if array.size else np.empty(value["shape"], dtype=array.dtype)
        if "$array" in value:
            array = arrays[value["$array"]].numpy().astype(np.dtype(value["dtype"]), copy=True)
            return np.asfortranarray(array) if value.get("fortran") else array
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactError(f"{where} holds a malformed value {str(value)[:80]!r}: {exc}") from exc
    raise ArtifactError(f"{where} holds an unknown encoded value {str(value)[:80]!r}.")


def _sklearn_class(estimator: Any, step: str) -> str:
    """The import path 'module:QualName' of a plain scikit-learn estimator's class, else InvalidInput naming the step."""
    from sklearn.base import BaseEstimator

    cls = type(estimator)
    if not isinstance(estimator, BaseEstimator) or not cls.__module__.startswith("sklearn.") or "<" in cls.__qualname__:
        raise InvalidInput(
            f"Pipeline step {step!r} ({cls.__module__}.{cls.__qualname__}) cannot be saved without pickle: only "
            "lsg-graph estimators and scikit-learn's own estimators are supported (pickle the pipeline instead)."
        )
    return f"{cls.__module__}:{cls.__qualname__}"


def save_sklearn_step(estimator: Any, path: Path, step: str) -> None:
    """Write a plain scikit-learn estimator (parameters and fitted attributes) to path/estimator.safetensors."""
    class_path = _sklearn_class(estimator, step)
    arrays: dict[str, torch.Tensor] = {}
    params = estimator.get_params(deep=False)
    state = {name: value for name, value in vars(estimator).items() if name not in params}
    try:
        encoded_params = {name: _encode(value, f"parameter {name!r}", arrays) for name, value in params.items()}
        encoded_state = {name: _encode(value, f"fitted attribute {name!r}", arrays) for name, value in state.items()}
    except _Unstorable as exc:
        raise InvalidInput(
            f"Pipeline step {step!r} ({class_path}) cannot be saved without pickle: {exc} (pickle the pipeline instead)."
        ) from None
    meta = {
        "format": SKLEARN_KIND,
        "format_version": _io.FORMAT_VERSION,
        "class": class_path,
        "params": encoded_params,
        "state": encoded_state,
        "library_versions": _io.library_versions(),
    }
    _io.save_tensors(path / SKLEARN_FILE, arrays, meta)


def load_sklearn_step(path: Path) -> Any:
    """The scikit-learn estimator saved by save_sklearn_step in `path`, validated."""
    from sklearn.base import BaseEstimator

    file = path / SKLEARN_FILE
    arrays, meta = _io.load_tensors(file, SKLEARN_KIND)
    class_path, params, state = meta.get("class"), meta.get("params"), meta.get("state")
    if not isinstance(class_path, str) or not isinstance(params, dict) or not isinstance(state, dict):
        raise ArtifactError(f"{str(file)!r} is malformed: it needs 'class' (str), 'params' and 'state' (objects).")
    module_name, _, qualname = class_path.partition(":")
    if not module_name.startswith("sklearn.") or not qualname or not re.fullmatch(r"[\w.]+", module_name + qualname):
        raise ArtifactError(f"{str(file)!r} names the class {class_path!r}; only scikit-learn classes are loaded.")
    try:
        cls: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError) as exc:
        raise ArtifactError(f"{str(file)!r} names the class {class_path!r}, which this scikit-learn lacks: {exc}") from exc
    if not isinstance(cls, type) or not issubclass(cls, BaseEstimator):
        raise ArtifactError(f"{str(file)!r} names {class_path!r}, which is not a scikit-learn estimator class.")
    where = f"{str(file)!r}"
    try:
        estimator = cls(**{name: _decode(value, arrays, where) for name, value in params.items()})
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{where}: {class_path} does not take the saved parameters: {exc}") from exc
    for name, value in state.items():
        setattr(estimator, name, _decode(value, arrays, where))
    return estimator


# ------------------------------------------------------------------------------------------------ pipelines


def _step_kind(estimator: Any) -> str:
    """'geodesic-kmeans', 'geodesic-distance', 'passthrough' or 'sklearn' for a pipeline step."""
    from lsg_graph.cluster import GeodesicKMeans
    from lsg_graph.distances import GeodesicDistance

    if estimator is None or (isinstance(estimator, str) and estimator == "passthrough"):
        return "passthrough"
    if isinstance(estimator, GeodesicKMeans):
        return KMEANS_KIND
    if isinstance(estimator, GeodesicDistance):
        return DISTANCE_KIND
    return "sklearn"


def _step_files(directory: Path) -> dict[str, str]:
    """sha256 of every regular, non-hidden file of a step directory (the lock files of a run are hidden)."""
    return {entry.name: _io.sha256_file(entry) for entry in sorted(directory.iterdir())
            if entry.is_file() and not entry.name.startswith(".")}


def save_pipeline(pipeline: Any, path: str | Path) -> Path:
    """Write a fitted sklearn Pipeline to the directory `path` without pickle (see the module docs); return the path.

    Steps may be GeodesicKMeans, GeodesicDistance (decoders are not stored: pass them to load_pipeline), plain
    scikit-learn estimators with JSON/array-storable parameters and state, or 'passthrough'. Anything else is
    refused with an InvalidInput naming the step, before anything is written.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        A fitted pipeline with memory=None.
    path : str or Path
        A new directory, or one holding an earlier saved pipeline (replaced).

    Returns
    -------
    Path
        The directory written.

    Raises
    ------
    InvalidInput
        Not a Pipeline, not fitted, a step that cannot be stored, or `path` holds something else.
    """
    from sklearn.pipeline import Pipeline
    from sklearn.utils.validation import check_is_fitted

    if not isinstance(pipeline, Pipeline):
        raise InvalidInput(f"save_pipeline needs a sklearn.pipeline.Pipeline; got {type(pipeline).__name__}.")
    path = Path(path)
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / PIPELINE_FILE).is_file())):
        raise InvalidInput(f"{str(path)!r} exists and is not a saved pipeline; refusing to replace it. Choose a new "
                           "directory or remove it.")
    if pipeline.memory is not None:
        raise InvalidInput("Pipeline(memory=...) cannot be saved; save the pipeline with memory=None.")
    kinds = []
    for name, step in pipeline.steps:
        kind = _step_kind(step)
        if kind == "sklearn":
            _sklearn_class(step, name)
        if kind != "passthrough":
            try:
                check_is_fitted(step)
            except Exception as exc:  # noqa: BLE001 - sklearn's NotFittedError or a TypeError
                raise NotFittedError(f"Pipeline step {name!r} is not fitted; fit the pipeline before saving it.") from exc
        kinds.append(kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.staging.", dir=path.parent))
    try:
        records = []
        for index, ((name, step), kind) in enumerate(zip(pipeline.steps, kinds)):
            folder = f"step-{index}"
            record: dict[str, Any] = {"name": name, "kind": kind, "dir": folder}
            if kind != "passthrough":
                (staging / folder).mkdir()
                if kind == "sklearn":
                    save_sklearn_step(step, staging / folder, name)
                    record["class"] = _sklearn_class(step, name)
                else:
                    save_estimator(step, staging / folder)
                    record["decoder"] = None if step.decoder is None else type(step.decoder).__name__
                record["files"] = _step_files(staging / folder)
            else:
                record["value"] = step
            records.append(record)
        meta = {
            "format": PIPELINE_KIND,
            "format_version": _io.FORMAT_VERSION,
            "steps": records,
            "params": {"verbose": bool(pipeline.verbose)},
            "library_versions": _io.library_versions(),
        }
        _io.write_json(staging / PIPELINE_FILE, meta)
        _swap_into_place(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return path


def _swap_into_place(staging: Path, path: Path) -> None:
    """Rename the staged directory to `path`; an existing saved pipeline there is moved aside, then deleted."""
    if not path.exists():
        os.replace(staging, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
    os.replace(path, old / "pipeline")
    try:
        os.replace(staging, path)
    except OSError:
        os.replace(old / "pipeline", path)  # put the old one back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def load_pipeline(path: str | Path, decoder: Any = None) -> Any:
    """The Pipeline saved by save_pipeline in `path`, every file checked against the checksums it records.

    Parameters
    ----------
    path : str or Path
        A directory written by save_pipeline.
    decoder : decoder, VAE, PullbackMetric or dict, optional
        The decoder the lsg-graph steps were fitted with (decoders are code, never stored): one object for every
        such step, or a dict {step name: decoder}; steps fitted without one need none.

    Returns
    -------
    sklearn.pipeline.Pipeline
        The fitted pipeline, as it was saved.

    Raises
    ------
    ArtifactError
        No saved pipeline there, a malformed file or a checksum that does not match.
    InvalidInput
        `decoder` names steps the pipeline does not have.
    """
    from sklearn.pipeline import Pipeline

    path = Path(path)
    file = path / PIPELINE_FILE
    if not path.is_dir() or not file.exists():
        raise ArtifactError(f"No saved pipeline at {str(path)!r}: expected a directory holding {PIPELINE_FILE}.")
    meta = _io.read_json(file, "pipeline")
    _io.check_format(meta, PIPELINE_KIND, file)
    records = meta.get("steps")
    if not isinstance(records, list) or not records or not all(isinstance(record, dict) for record in records):
        raise ArtifactError(f"{str(file)!r} is malformed: 'steps' must be a non-empty list of objects.")
    names = [record.get("name") for record in records]
    if not all(isinstance(name, str) and name for name in names) or len(set(names)) != len(names):
        raise ArtifactError(f"{str(file)!r} is malformed: step names must be distinct non-empty strings; got {names}.")
    if isinstance(decoder, dict) and set(decoder) - set(names):
        raise InvalidInput(f"decoder names step(s) {sorted(set(decoder) - set(names))} that the pipeline does not "
                           f"have (its steps: {names}).")
    steps = [(record["name"], _load_step(path, file, record, decoder)) for record in records]
    params = meta.get("params") if isinstance(meta.get("params"), dict) else {}
    return Pipeline(steps, verbose=bool(params.get("verbose", False)))


def _load_step(path: Path, file: Path, record: dict[str, Any], decoder: Any) -> Any:
    """One step of a saved pipeline: its files checked against `record`, then loaded by its kind."""
    from lsg_graph.cluster import GeodesicKMeans
    from lsg_graph.distances import GeodesicDistance

    name, kind = record["name"], record.get("kind")
    if kind == "passthrough":
        value = record.get("value")
        if value not in (None, "passthrough"):
            raise ArtifactError(f"{str(file)!r}: step {name!r} is a passthrough with the value {value!r}.")
        return value
    if kind not in ("sklearn", KMEANS_KIND, DISTANCE_KIND):
        raise ArtifactError(f"{str(file)!r}: step {name!r} has the unknown kind {kind!r}.")
    folder, files = record.get("dir"), record.get("files")
    if not isinstance(folder, str) or not STEP_DIR.fullmatch(folder) or not isinstance(files, dict):
        raise ArtifactError(f"{str(file)!r}: step {name!r} names the folder {folder!r}; expected 'step-N' and its files.")
    directory = path / folder
    if not directory.is_dir() or directory.is_symlink():
        raise ArtifactError(f"{str(directory)!r}, the folder of step {name!r}, is missing.")
    found = _step_files(directory)
    if found != files:
        changed = sorted(set(found) ^ set(files) | {item for item in set(found) & set(files) if found[item] != files[item]})
        raise ArtifactError(f"The files of step {name!r} in {str(directory)!r} are not the ones saved (checksum or "
                            f"listing differs: {changed}); the pipeline was modified or corrupted after saving.")
    if kind == "sklearn":
        return load_sklearn_step(directory)
    own = decoder.get(name) if isinstance(decoder, dict) else decoder
    if record.get("decoder") is None:
        own = None if not isinstance(decoder, dict) or name not in decoder else own
    cls = GeodesicKMeans if kind == KMEANS_KIND else GeodesicDistance
    return load_estimator(directory, own, expected=cls)
