"""End-to-end runs in a run directory: train the model, encode the data, build and save the latent graph.

This is the layer the CLI calls (one function per command); it only composes the modules to its left.
"""

from __future__ import annotations

import math
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsg_graph import _io
from lsg_graph._validation import check_choice, check_codes, check_int, check_random_state, resolve_device
from lsg_graph.data import Dataset, load_dataset, train_test_split_indices
from lsg_graph.errors import ArtifactError, InvalidInput, ResourceLimitError, StaleArtifactError
from lsg_graph.graph.knn import BACKEND_CHOICES
from lsg_graph.graph.latent_graph import DEFAULT_K, GRAPH_FILE, LatentGraph, build_latent_graph
from lsg_graph.metric import PullbackMetric
from lsg_graph.vae import VAE, PaperClaims, TrainReport, VAEConfig, encode_codes, paper_claims, train_vae

DEFAULT_RUN_DIR = "lsg-out"
MODEL_FILE = "model.safetensors"
HELD_OUT_FRACTION = 0.2
MAX_WORK_ENV = "LSG_GRAPH_MAX_WORK"  # override: decoder evaluations x parameters one command may need
MAX_MEMORY_ENV = "LSG_GRAPH_MAX_MEMORY"  # override: bytes one command may allocate at once
DEFAULT_MAX_WORK = 2 * 10**13  # about half an hour of CPU time at 1e10 multiply-adds per second
DEFAULT_MAX_MEMORY = 16 * 2**30
REFINE_PAIR_WORK = 3 * 10**10  # fixed cost of refining one pair (iterations, fallbacks): seconds at 1e10 per second
WALK_STEP_WORK = 10**7  # fixed cost of one batched walk step (about a millisecond)
CUDA_WORK_FACTOR = 100  # a GPU does the same work about this much faster
MAX_COORDINATE = 1e8  # latent coordinates beyond this (codes are O(1)) overflow the decoder in float32


@dataclass
class TrainSummary:
    """What `train_run` did: the report of both stages, the data used and where the model was saved."""

    report: TrainReport
    data: str
    n_train: int
    n_held_out: int
    run_dir: Path
    model_path: Path
    removed_graph: bool = False  # the run had a graph of the previous model; it was removed with the update


@dataclass
class BuildSummary:
    """What `build_run` did: graph size, components, bridges, the seconds of each stage and the saved path."""

    n_points: int
    latent_dim: int
    n_edges: int
    n_components_before_bridging: int
    n_bridges: int
    timings: dict[str, float] = field(default_factory=dict)
    trained: TrainSummary | None = None
    graph_path: Path | None = None


def _split(dataset: Dataset, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train / held-out indices for `dataset`."""
    return train_test_split_indices(dataset.n_samples, HELD_OUT_FRACTION, seed)


def train_run(
    run_dir: str | Path = DEFAULT_RUN_DIR,
    data: str = "digits",
    seed: int = 0,
    progress: bool = True,
    device: str = "auto",
    **config_overrides: Any,
) -> TrainSummary:
    """Train the VAE (both stages) on the train split of `data` on `device` and save it into `run_dir`.

    `config_overrides` are VAEConfig fields (None: the default). With architecture="conv" the image shape comes
    from the data set (digits: (8, 8); IDX folders: (28, 28); npz files: their 'image_shape' key).
    The run update is all-or-nothing: the new model, model.json, the data record and the manifest replace the old
    ones together, and the old graph (built from the old model) is removed with them; a failure or kill at any
    point leaves the previous complete run. A second writer on the same run is refused (RunLockedError).
    """
    seed = check_random_state(seed)
    run_dir = check_run_dir(run_dir)
    torch_device = resolve_device(device)
    dataset = load_dataset(data)
    overrides = {name: value for name, value in config_overrides.items() if value is not None}
    if overrides.get("architecture") == "conv" and "image_shape" not in overrides:
        overrides["image_shape"] = _conv_image_shape(dataset, data)
    config = VAEConfig(input_dim=dataset.n_features, seed=seed, **overrides)
    train_idx, held_idx = _split(dataset, seed)
    _check_train_request(config, len(train_idx), torch_device)
    _warn_if_raw_pixels(dataset, data)
    with _io.run_lock(run_dir):  # before the minutes of training: a concurrent writer is refused now
        vae, report = train_vae(
            dataset.images[train_idx], config, dataset.images[held_idx], progress=progress, device=torch_device
        )
        record = data_record(data, dataset, seed)
        with _io.run_transaction(run_dir) as transaction:
            vae.save(run_dir, data_record=record)
            transaction.record("data", [], {"data": record["spec"], "held_out_fraction": HELD_OUT_FRACTION,
                                            "split_seed": seed})
            removed_graph = (run_dir / GRAPH_FILE).exists()
            if removed_graph:
                transaction.remove(GRAPH_FILE)  # built from the previous model: stale from now on
    return TrainSummary(report, data, len(train_idx), len(held_idx), run_dir, run_dir / MODEL_FILE, removed_graph)


def absolute_spec(spec: str) -> str:
    """The data spec with its file or folder made absolute, so the record stays true from any working directory."""
    spec = spec.strip()
    scheme, sep, argument = spec.partition(":")
    if sep and argument and re.fullmatch(r"[a-z]+", scheme) and scheme != "digits" and len(scheme) > 1:
        return f"{scheme}:{os.path.abspath(os.path.expanduser(argument))}"
    if not sep and spec != "digits":
        return os.path.abspath(os.path.expanduser(spec))
    return spec


def data_fingerprint(dataset: Dataset) -> str:
    """sha256 of a data set's samples and labels (shape, dtype and bytes): what artifacts record of their data."""
    import hashlib

    digest = hashlib.sha256()
    for array in (dataset.images, dataset.labels):
        if array is None:
            digest.update(b"none|")
            continue
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}|{array.shape}|".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def data_record(spec: str, dataset: Dataset, split_seed: int) -> dict[str, Any]:
    """The record of the data a model is trained on (stored inside the model file)."""
    return {
        "spec": absolute_spec(spec),
        "split_seed": int(split_seed),
        "held_out_fraction": HELD_OUT_FRACTION,
        "sha256": data_fingerprint(dataset),
        "n_samples": dataset.n_samples,
        "n_features": dataset.n_features,
    }


def _conv_image_shape(dataset: Dataset, data: str) -> tuple[int, ...]:
    """The image shape of `dataset` for the conv architecture, else InvalidInput saying how to provide one."""
    if dataset.image_shape is None:
        raise InvalidInput(
            f"architecture='conv' needs images, but the data {data!r} have no image shape (only flat rows of "
            f"{dataset.n_features} values). Use 'idx:DIR' (MNIST-style IDX files), 'npz:FILE' with an 'image_shape' "
            "key ((H, W) or (C, H, W)) or (n, H, W) images, or 'digits'; or train with architecture='mlp'."
        )
    return dataset.image_shape


def check_run_dir(run_dir: str | Path) -> Path:
    """The run directory as a Path, refusing a path that exists and is not a directory (before any work is done)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ArtifactError(f"The run directory {str(run_dir)!r} is a file, not a directory; choose another run directory.")
    return run_dir


def run_data_spec(run_dir: str | Path, vae: VAE | None = None) -> tuple[str, int]:
    """The data spec and split seed the run's model was trained on: from the model file's data record (or, for
    models saved before it existed, the manifest's). A run with neither record raises ArtifactError: the data set is
    never guessed."""
    vae = load_model(run_dir, "cpu") if vae is None else vae
    record = getattr(vae, "data_record", None)
    model_path = Path(run_dir) / MODEL_FILE
    if record is not None:
        spec, split_seed = record.get("spec"), record.get("split_seed")
        source = f"the data record of {str(model_path)!r}"
    else:
        manifest_path = Path(run_dir) / _io.MANIFEST_NAME
        if not manifest_path.is_file():
            raise ArtifactError(
                f"The model {str(model_path)!r} records no training data and {str(manifest_path)!r} does not exist; "
                "the data set cannot be known. Pass the data explicitly (--data SPEC) or retrain with 'lsg-graph train'."
            )
        manifest = _io.read_json(manifest_path, "manifest")
        artifacts = manifest.get("artifacts")
        entry = artifacts.get("data") if isinstance(artifacts, dict) else None
        params = entry.get("params") if isinstance(entry, dict) else None
        if not isinstance(params, dict) or "data" not in params:
            raise ArtifactError(
                f"The model {str(model_path)!r} records no training data and {str(manifest_path)!r} has no "
                "'artifacts.data' entry; pass the data explicitly (--data SPEC) or retrain with 'lsg-graph train'."
            )
        spec, split_seed = params.get("data"), params.get("split_seed", 0)
        source = f"{str(manifest_path)!r}"
    if not isinstance(spec, str) or not spec or not isinstance(split_seed, int) or isinstance(split_seed, bool) \
            or not 0 <= split_seed <= 2**32 - 1:
        raise ArtifactError(
            f"{source} is malformed: expected a data spec string and an int split_seed in [0, 2**32 - 1]; "
            f"got {spec!r} and {split_seed!r}."
        )
    return spec, split_seed


def load_model(run_dir: str | Path, device: str = "auto") -> VAE:
    """Load the trained VAE of a run directory onto `device`."""
    return VAE.load(run_dir, device=str(resolve_device(device)))


def evaluate_run(
    run_dir: str | Path = DEFAULT_RUN_DIR, n_samples: int = 256, seed: int = 0, device: str = "auto"
) -> PaperClaims:
    """The paper's claims (sigma extrapolation, held-out IWAE log-likelihood) for the run's model, on `device`."""
    from lsg_graph._validation import check_positive_int

    n_samples = check_positive_int(n_samples, "n_samples")
    seed = check_random_state(seed)
    vae = load_model(run_dir, device)
    data, split_seed = run_data_spec(run_dir, vae)
    dataset = load_dataset(data)
    _check_data_matches(vae, dataset, data)
    train_idx, held_idx = _split(dataset, split_seed)
    n_params = _n_params(vae)
    check_request(
        "evaluate", 2 * len(held_idx) * n_samples * n_params, f"--samples {n_samples}",
        memory=32 * n_samples * vae.input_dim * 4, hint="lower --samples", device=resolve_device(device),
    )
    codes = _checked_codes(vae, dataset.images[train_idx], data)
    return paper_claims(vae, dataset.images[held_idx], codes, n_samples=n_samples, seed=seed)


def build_run(
    run_dir: str | Path = DEFAULT_RUN_DIR,
    data: str | None = None,
    *,
    k: int = DEFAULT_K,
    n_nodes: int = 8,
    backend: str = "auto",
    device: str = "auto",
    candidates: int = 1,
    seed: int = 0,
    variance: str = "rbf",
    progress: bool = True,
) -> BuildSummary:
    """Train the model if the run has none, encode the data, build the latent graph and save it.

    The graph records the sha256 of the model file it was built from and the spec and sha256 of the data it
    encodes, so a graph that no longer matches its model is detected on load. The run's writer lock is held
    throughout (a concurrent train or build is refused) and the graph lands with its manifest entry in one
    transaction.
    """
    from lsg_graph._validation import check_positive_int

    run_dir = check_run_dir(run_dir)
    seed = check_random_state(seed)
    k = check_int(k, "k", minimum=1)
    n_nodes = check_positive_int(n_nodes, "n_nodes")
    candidates = check_positive_int(candidates, "candidates")
    check_choice(backend, "kNN backend", BACKEND_CHOICES)
    check_choice(variance, "variance", ("rbf", "standard"))
    if data is not None and (not isinstance(data, str) or not data.strip()):
        raise InvalidInput(f"A dataset spec must be a non-empty string; got {data!r}.")
    trained = None
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with _io.run_lock(run_dir):
        if not (run_dir / MODEL_FILE).exists():
            trained = train_run(run_dir, data or "digits", seed=seed, progress=progress, device=device)
            timings["train_s"] = time.perf_counter() - started
        torch_device = resolve_device(device)
        started = time.perf_counter()
        vae = VAE.load(run_dir, device=str(torch_device))
        if data is None:
            data, _ = run_data_spec(run_dir, vae)
        dataset = load_dataset(data)
        own_data = _check_data_matches(vae, dataset, data)
        n_edges = dataset.n_samples * min(k, max(dataset.n_samples - 1, 1)) * candidates
        check_request(
            "build", 2 * (vae.latent_dim + 1) * n_edges * n_nodes * _n_params(vae),
            f"{dataset.n_samples} codes, --k {k}, --nodes {n_nodes}, --candidates {candidates}",
            memory=64 * n_edges + 8 * n_nodes * vae.input_dim * 64,
            hint="lower --nodes, --k or --candidates", device=torch_device,
        )
        codes = _checked_codes(vae, dataset.images, data)
        timings["encode_s"] = time.perf_counter() - started
        metric = PullbackMetric(vae.decoder(variance))
        graph = build_latent_graph(
            metric, codes, dataset.labels, k=k, n_nodes=n_nodes, backend=backend, device=str(torch_device),
            candidates=candidates, progress=progress,
        )
        graph.params.update({
            "data": absolute_spec(data), "data_sha256": data_fingerprint(dataset), "model_sha256": vae.checksum,
            "variance": variance, "seed": seed, "own_data": own_data,
        })
        timings.update(graph.params.get("timings", {}))
        started = time.perf_counter()
        path = graph.save(run_dir)
        timings["save_s"] = time.perf_counter() - started
    return BuildSummary(
        graph.n_points, graph.latent_dim, graph.n_edges, graph.params["n_components_before_bridging"],
        graph.params["n_bridges"], timings, trained, path,
    )


def _n_params(vae: VAE) -> int:
    """Number of parameters of a model (a proxy for the cost of one decoder evaluation)."""
    return int(sum(parameter.numel() for parameter in vae.parameters()))


def _warn_if_raw_pixels(dataset: Dataset, spec: str) -> None:
    """Warn when the data look like raw 0-255 pixels: integral values in [0, 255] reaching above 1.

    IDX files and the digits are scaled to [0, 1] on loading; .npy/.npz/.csv values keep their units, and a
    model trained on raw pixels gets an identity mean decoder with a useless likelihood scale.
    """
    images = dataset.images
    low, high = float(images.min()), float(images.max())
    if low >= 0.0 and 1.0 < high <= 255.0 and bool(np.all(images == np.round(images))):
        warnings.warn(
            f"The data {spec!r} hold integers in [{low:g}, {high:g}], like raw 0-255 pixels, but are used as they are "
            "(only IDX files and the digits are scaled on loading); the sigmoid mean decoder needs values in [0, 1]. "
            "Divide the samples by 255 (e.g. np.savez(path, x=x / 255.0)) before training, unless these are counts "
            "meant in their own units.",
            UserWarning,
            stacklevel=3,
        )


def _check_train_request(config: VAEConfig, n_train: int, device: torch.device) -> None:
    """Refuse a configuration whose parameters would not fit the memory limit (e.g. --latent-dim 1e9) or whose
    epochs would run for hours (e.g. --epochs 1e12)."""
    widths = [config.input_dim, *config.hidden_dims, config.latent_dim]
    n_params = 2 * sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True)) * 3 + config.n_centers * (
        config.latent_dim + config.input_dim
    )
    check_request("train", 0, f"--latent-dim {config.latent_dim}", memory=16 * n_params,
                  hint="lower --latent-dim (or the hidden widths)")
    check_request("train", 6.0 * (config.epochs + config.rbf_epochs) * n_train * n_params,
                  f"--epochs {config.epochs} --rbf-epochs {config.rbf_epochs} on {n_train} samples",
                  hint="lower --epochs or --rbf-epochs", device=device)


def _check_data_matches(vae: VAE, dataset: Dataset, spec: str) -> bool:
    """Refuse data whose sample width differs from the model's input; warn when the model's own training data (same
    spec) has changed since training. Returns whether `spec` is the model's training data."""
    if dataset.n_features != vae.input_dim:
        raise InvalidInput(
            f"The data {spec!r} have {dataset.n_features} features per sample but the run's model was trained on "
            f"{vae.input_dim}; pass the data the model was trained on (or retrain with 'lsg-graph train')."
        )
    record = getattr(vae, "data_record", None)
    if not isinstance(record, dict) or record.get("spec") != absolute_spec(spec):
        return False
    if record.get("sha256") not in (None, data_fingerprint(dataset)):
        warnings.warn(
            f"The data {spec!r} changed since the model was trained on them (their sha256 differs from the one "
            "recorded in the model); the codes are those of the current data.",
            UserWarning,
            stacklevel=3,
        )
    return True


def _checked_codes(vae: VAE, images: np.ndarray, spec: str) -> np.ndarray:
    """encode_codes, refusing non-finite codes (a diverged encoder or data far outside the training range)."""
    codes = encode_codes(vae, images)
    bad = ~np.isfinite(codes).all(axis=1)
    if bad.any():
        raise ArtifactError(
            f"The model encodes {int(bad.sum())} of {len(codes)} samples of {spec!r} to NaN or inf codes (first rows "
            f"{np.flatnonzero(bad)[:5].tolist()}); the model diverged or the data are far outside its training range."
        )
    return codes


def check_request(
    command: str, work: float, request: str, *, memory: float = 0, hint: str = "ask for less",
    device: str | torch.device | None = None,
) -> None:
    """Refuse a request whose estimated work (multiply-adds) or memory (bytes) is over the limit.

    The limits are LSG_GRAPH_MAX_WORK (default 2e13, about half an hour of CPU; CUDA_WORK_FACTOR times more on a
    CUDA device) and LSG_GRAPH_MAX_MEMORY (default 16 GiB); the message names the estimate, the limit and how to
    raise it.
    """
    max_work = _io.env_limit(MAX_WORK_ENV, DEFAULT_MAX_WORK)
    if device is not None and torch.device(device).type == "cuda":
        max_work *= CUDA_WORK_FACTOR
    max_memory = _io.env_limit(MAX_MEMORY_ENV, DEFAULT_MAX_MEMORY)
    if memory > max_memory:
        raise ResourceLimitError(
            f"{command} with {request} would need about {memory / 2**30:.3g} GiB of memory, over the limit of "
            f"{max_memory / 2**30:.3g} GiB; {hint}, or set the environment variable {MAX_MEMORY_ENV} to a larger "
            "number of bytes to run it anyway."
        )
    if work > max_work:
        raise ResourceLimitError(
            f"{command} with {request} would need about {work:.2g} multiply-adds (hours of compute), over the limit "
            f"of {max_work:.2g}; {hint}, or set the environment variable {MAX_WORK_ENV} to a larger number to run it "
            "anyway."
        )


def load_graph(run_dir: str | Path = DEFAULT_RUN_DIR) -> LatentGraph:
    """Load the latent graph of a run directory, checking it was built from the run's current model.

    ArtifactError with a hint when there is none; StaleArtifactError (an ArtifactError) naming the mismatch when
    the graph records another model than the one in the run (retrained, or copied in) or records none.
    """
    with _io.run_read_lock(run_dir):
        if not (Path(run_dir) / GRAPH_FILE).exists():
            raise ArtifactError(f"No latent graph in {str(run_dir)!r}; run 'lsg-graph build --run {run_dir}' first.")
        graph = LatentGraph.load(run_dir)
        check_graph_binding(run_dir, graph)
    return graph


_CHECKSUMS: dict[tuple[str, int, int, int], str] = {}


def model_checksum(run_dir: str | Path) -> str:
    """sha256 of the run's model file (cached per file identity: inode, size, modification time)."""
    path = Path(run_dir) / MODEL_FILE
    try:
        status = path.stat()
    except OSError as exc:
        raise ArtifactError(f"Cannot read the model {str(path)!r}: {exc.strerror or exc}.") from exc
    key = (str(path.resolve()), status.st_ino, status.st_size, status.st_mtime_ns)
    if key not in _CHECKSUMS:
        _io.check_file_size(path, "model file")
        _CHECKSUMS[key] = _io.sha256_file(path)
    return _CHECKSUMS[key]


def check_graph_binding(run_dir: str | Path, graph: LatentGraph, checksum: str | None = None) -> None:
    """Raise StaleArtifactError unless `graph` records the sha256 of the run's model file (`checksum` if known)."""
    run_dir = Path(run_dir)
    recorded = graph.params.get("model_sha256")
    rebuild = f"rebuild it with 'lsg-graph build --run {run_dir}'"
    if recorded is None:
        raise StaleArtifactError(
            f"The graph {str(run_dir / GRAPH_FILE)!r} records no model checksum (it was saved outside a run build or "
            f"by an older lsg-graph), so it cannot be matched to the run's model; {rebuild}."
        )
    if not (run_dir / MODEL_FILE).is_file():
        raise ArtifactError(
            f"The graph {str(run_dir / GRAPH_FILE)!r} was built from a model that is not in the run any more "
            f"({str(run_dir / MODEL_FILE)!r} is missing); train one with 'lsg-graph train --out {run_dir}'."
        )
    current = checksum or model_checksum(run_dir)
    if current != recorded:
        raise StaleArtifactError(
            f"The graph {str(run_dir / GRAPH_FILE)!r} was built from another model (model sha256 {recorded[:12]}...) "
            f"than the run's {MODEL_FILE} (sha256 {current[:12]}...): the model was retrained or replaced after the "
            f"build; {rebuild}."
        )


def load_metric(run_dir: str | Path, graph: LatentGraph, device: str = "auto") -> PullbackMetric:
    """The pullback metric of the run's decoder (the variance the graph was built with), checked against the graph:
    the model must be the one the graph records and have the graph's latent dimension."""
    vae = load_model(run_dir, device)
    check_graph_binding(run_dir, graph, vae.checksum)
    if vae.latent_dim != graph.latent_dim:
        raise ArtifactError(
            f"The graph in {str(run_dir)!r} has codes of dimension {graph.latent_dim} but the run's model has latent "
            f"dimension {vae.latent_dim}; rebuild the graph with 'lsg-graph build --run {run_dir}'."
        )
    variance = graph.params.get("variance", "rbf")
    if variance not in ("rbf", "standard"):
        raise ArtifactError(f"The graph in {str(run_dir)!r} records an unknown variance {variance!r}; rebuild it.")
    return PullbackMetric(vae.decoder(variance))


def default_device() -> str:
    """'cuda' when available, else 'cpu'."""
    return "cuda" if torch.cuda.is_available() else "cpu"


_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_point(text: str) -> int | np.ndarray:
    """A node index ('12') or latent coordinates ('0.5,-1.2') from command-line text (ASCII digits only)."""
    if not isinstance(text, str):
        raise InvalidInput(f"Expected a node index or coordinates as text; got {text!r}.")
    text = text.strip()
    if "," not in text:
        if not _INT_TEXT.fullmatch(text) or len(text) > 20:
            raise InvalidInput(f"Expected a node index (e.g. 12) or coordinates (e.g. 0.5,-1.2); got {text!r}.")
        index = int(text)
        if index < 0:
            raise InvalidInput(f"A node index must be >= 0; got {index}.")
        return index
    parts = [part.strip() for part in text.split(",")]
    if not all(_FLOAT_TEXT.fullmatch(part) for part in parts):
        raise InvalidInput(f"Coordinates must be comma-separated decimal numbers (e.g. 0.5,-1.2); got {text!r}.")
    point = np.array([float(part) for part in parts], dtype=np.float64)
    if not np.all(np.abs(point) <= MAX_COORDINATE):
        raise InvalidInput(
            f"Coordinates must lie within +-{MAX_COORDINATE:g} latent units (codes are of order 1); got {text!r}."
        )
    return point


def ensure_graph(run_dir: str | Path, device: str = "auto", progress: bool = True) -> tuple[LatentGraph, BuildSummary | None]:
    """The run's graph, building it (and training the default model first when the run has none) when the run has
    none, or rebuilding it with its own build parameters (and a warning) when it no longer matches the run's model."""
    kept: dict[str, Any] = {}
    if (Path(run_dir) / GRAPH_FILE).exists():
        with _io.run_read_lock(run_dir):
            graph = LatentGraph.load(run_dir)
            try:
                check_graph_binding(run_dir, graph)
                return graph, None
            except StaleArtifactError as exc:
                warnings.warn(f"{exc} Rebuilding it now.", UserWarning, stacklevel=2)
        kept = {name: graph.params[name] for name in ("k", "n_nodes", "candidates", "variance") if name in graph.params}
    summary = build_run(run_dir, device=device, progress=progress, **kept)
    return load_graph(run_dir), summary


@dataclass
class GeodesicSummary:
    """A graph path and, when refined, the refined geodesic between the same end points."""

    path: Any
    refined: Any | None
    saved: Path | None = None
    lower_bound: float | None = None  # the output-space chord ||g(a) - g(b)||: no curve from a to b is shorter


def save_curve(path: str | Path, points: np.ndarray) -> Path:
    """Write curve points (m, d) as .npy or .csv (by suffix) atomically."""
    from lsg_graph.errors import InvalidInput

    path = Path(path)
    if path.suffix not in (".npy", ".csv"):
        raise InvalidInput(f"The curve file must end in .npy or .csv; got {str(path)!r}.")
    with _io.atomic_path(path) as temp:
        if path.suffix == ".npy":
            with open(temp, "wb") as stream:
                np.save(stream, np.asarray(points, dtype=np.float64), allow_pickle=False)
        else:
            header = ",".join(f"z{axis}" for axis in range(points.shape[1]))
            np.savetxt(temp, points, delimiter=",", header=header, comments="")
    return path


def geodesic_run(
    run_dir: str | Path,
    source: int | np.ndarray,
    target: int | np.ndarray,
    refine: str = "shooting",
    out: str | Path | None = None,
    device: str = "auto",
) -> GeodesicSummary:
    """Graph path between two nodes or latent points, refined by `refine` ('shooting', 'energy' or 'none')."""
    from lsg_graph._validation import check_choice
    from lsg_graph.geodesics.refine import REFINE_METHODS, refine_path
    from lsg_graph.geodesics.shortest import shortest_path

    check_choice(refine, "refinement method", REFINE_METHODS)
    graph = load_graph(run_dir)
    metric = None
    endpoints: list[int] = []
    points = [point for point in (source, target) if not isinstance(point, int)]
    if points:
        for point in points:
            check_codes(point[None, :], "coordinates", latent_dim=graph.latent_dim)
            if not np.all(np.abs(point) <= MAX_COORDINATE):
                raise InvalidInput(f"Coordinates must lie within +-{MAX_COORDINATE:g} latent units; got {point.tolist()}.")
        metric = load_metric(run_dir, graph, device)
        new_ids = iter(range(graph.n_points, graph.n_points + len(points)))
        graph = graph.attach(np.vstack(points), metric)
    for point in (source, target):
        endpoints.append(point if isinstance(point, int) else next(new_ids))
    path = shortest_path(graph, endpoints[0], endpoints[1])
    refined = None
    metric = metric or load_metric(run_dir, graph, device)
    if refine != "none":
        refined = refine_path(metric, path, method=refine)
    with torch.no_grad():
        lower = float(metric.chord(path.points[:1], path.points[-1:])[0])
    curve = refined.points if refined is not None else path.points
    saved = save_curve(out, curve) if out is not None else None
    return GeodesicSummary(path, refined, saved, min(lower, float(path.length)))


def health_run(
    run_dir: str | Path, n_pairs: int = 8, seed: int = 0, device: str = "auto", progress: bool = True
) -> Any:
    """The geometry health check (lsg_graph.health.geometry_health) of a run's model and graph (built if missing)."""
    from lsg_graph.health import geometry_health

    graph, _ = ensure_graph(run_dir, device=device, progress=progress)
    return geometry_health(load_metric(run_dir, graph, device), graph, n_pairs=n_pairs, seed=seed)


@dataclass
class ClusterSummary:
    """Geodesic and Euclidean k-means of the run's codes: scores, sizes, and the files written."""

    n_clusters: int
    geodesic: Any
    euclidean_labels: np.ndarray
    euclidean_scores: dict[str, float] | None
    labels_path: Path
    figure_path: Path | None
    built: BuildSummary | None = None


def cluster_run(
    run_dir: str | Path = DEFAULT_RUN_DIR,
    n_clusters: int = 10,
    *,
    seed: int = 0,
    n_init: int = 1,
    figure: bool = True,
    device: str = "auto",
    progress: bool = True,
) -> ClusterSummary:
    """Geodesic k-means (and Euclidean k-means beside it) of the run's codes; writes clusters.csv and clusters.png."""
    from sklearn.cluster import KMeans

    from lsg_graph._validation import check_int, check_positive_int
    from lsg_graph.cluster import cluster_latent_graph, clustering_scores

    seed = check_random_state(seed)
    n_init = check_positive_int(n_init, "n_init")
    n_clusters = check_int(n_clusters, "n_clusters", minimum=1)
    graph, built = ensure_graph(run_dir, device, progress)
    n_clusters = check_int(n_clusters, "n_clusters", minimum=1, maximum=graph.n_points)
    check_request(
        "cluster", 100.0 * n_init * 100 * n_clusters * (graph.n_edges + graph.n_points * math.log2(graph.n_points + 1)),
        f"--k {n_clusters} --n-init {n_init} on {graph.n_points} codes", hint="lower --n-init or --k",
    )
    result = cluster_latent_graph(graph, n_clusters, n_init=n_init, random_state=seed)
    euclidean = KMeans(n_clusters, n_init=10, random_state=seed).fit(graph.codes).labels_.astype(np.int64)
    euclidean_scores = None if graph.labels is None else clustering_scores(graph.labels, euclidean)
    labels_path = Path(run_dir) / "clusters.csv"
    columns = [np.arange(graph.n_points), result.labels, euclidean]
    header = "index,geodesic,euclidean"
    if graph.labels is not None:
        columns.append(graph.labels)
        header += ",label"
    with _io.atomic_path(labels_path) as temp:
        np.savetxt(temp, np.column_stack(columns), fmt="%d", delimiter=",", header=header, comments="")
    figure_path = None
    if figure:
        from lsg_graph.plot import plot_clusters

        metric = load_metric(run_dir, graph, device) if graph.latent_dim >= 2 else None
        figure_path = plot_clusters(
            graph.codes, result.labels, result.medoid_indices, out=Path(run_dir) / "clusters.png", metric=metric,
            title=f"Geodesic k-means, {n_clusters} clusters",
        )
    return ClusterSummary(n_clusters, result, euclidean, euclidean_scores, labels_path, figure_path, built)


@dataclass
class WalkSummary:
    """Random walks from one code: the trajectories file, the image strip, and the walk statistics."""

    result: Any
    trajectories_path: Path
    strip_path: Path | None
    map_path: Path | None


def walk_run(
    run_dir: str | Path = DEFAULT_RUN_DIR,
    start: int = 0,
    *,
    n_steps: int = 100,
    kind: str = "metric",
    step_size: float = 1e-3,
    n_walkers: int = 8,
    seed: int = 0,
    figures: bool = True,
    device: str = "auto",
    progress: bool = True,
) -> WalkSummary:
    """Random walks of `kind` from code `start`; writes walks.npy (w, n_steps + 1, d) and PNG figures."""
    from lsg_graph._validation import check_choice, check_index, check_positive_int
    from lsg_graph.walks import WALK_KINDS, random_walks

    check_choice(kind, "walk kind", WALK_KINDS)
    n_walkers = check_positive_int(n_walkers, "walkers")
    n_steps = check_positive_int(n_steps, "n_steps")
    seed = check_random_state(seed)
    graph, _ = ensure_graph(run_dir, device, progress)
    start = check_index(start, "start", graph.n_points)
    metric = load_metric(run_dir, graph, device)
    n_params = int(sum(parameter.numel() for parameter in metric.decoder.parameters())) if hasattr(
        metric.decoder, "parameters") else 10**5
    width = getattr(metric.decoder, "output_dim", None) or 2 * graph.latent_dim
    check_request(
        "walk", n_steps * (WALK_STEP_WORK + 2.0 * n_walkers * (graph.latent_dim + 1) ** 2 * n_params),
        f"--walkers {n_walkers} --steps {n_steps}",
        memory=n_walkers * (n_steps + 1) * (8 * graph.latent_dim + (4 * width if figures else 0)),
        hint="lower --walkers or --steps", device=metric.device,
    )
    starts = np.repeat(graph.codes[start : start + 1], n_walkers, axis=0)
    result = random_walks(metric, starts, n_steps, step_size, kind=kind, seed=seed, decode=figures)
    run_dir = Path(run_dir)
    trajectories_path = run_dir / f"walks_{kind}.npy"
    with _io.atomic_path(trajectories_path) as temp, open(temp, "wb") as stream:
        np.save(stream, result.trajectories, allow_pickle=False)
    strip_path = map_path = None
    if figures:
        from lsg_graph.plot import plot_image_strip, plot_magnification

        if graph.latent_dim >= 2:
            map_path = plot_magnification(
                metric, graph.codes, graph.labels, walks=result, out=run_dir / f"walks_{kind}.png",
                title=f"{kind} random walks from code {start}",
            )
        image_shape = _image_shape(run_dir, result.decoded_means.shape[-1])
        if image_shape is not None:
            every = max(1, n_steps // 10)
            rows = min(n_walkers, 4)
            strip_path = plot_image_strip(
                result.decoded_means[:rows, ::every], image_shape, out=run_dir / f"walks_{kind}_strip.png",
                titles=[f"walker {row}" for row in range(rows)],
                column_titles=[f"step {step}" for step in range(0, n_steps + 1, every)],
            )
    return WalkSummary(result, trajectories_path, strip_path, map_path)


def _image_shape(run_dir: Path, n_features: int) -> tuple[int, ...] | None:
    """Image shape of the run's data when its samples are square images of n_features pixels."""
    side = int(round(np.sqrt(n_features)))
    return (side, side) if side * side == n_features and side >= 4 else None


@dataclass
class PlotSummary:
    """The magnification map and the geodesics drawn on it."""

    path: Path
    pairs: np.ndarray
    geodesics: list[Any]


def plot_run(
    run_dir: str | Path = DEFAULT_RUN_DIR,
    pairs: Any = None,
    *,
    n_pairs: int = 3,
    refine: str = "shooting",
    seed: int = 0,
    out: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
) -> PlotSummary:
    """The magnification map log sqrt(det M) with codes, geodesics and straight lines between node pairs, as PNG."""
    from lsg_graph._validation import check_choice, check_positive_int
    from lsg_graph.geodesics.refine import REFINE_METHODS, refine_geodesics
    from lsg_graph.geodesics.shortest import shortest_paths
    from lsg_graph.plot import plot_magnification

    check_choice(refine, "refinement method", REFINE_METHODS)
    seed = check_random_state(seed)
    if pairs is None:
        n_pairs = check_positive_int(n_pairs, "n_pairs")
    graph, _ = ensure_graph(run_dir, device, progress)
    metric = load_metric(run_dir, graph, device)
    if pairs is None:
        n_possible = graph.n_points * (graph.n_points - 1) // 2
        if n_pairs > n_possible:
            raise InvalidInput(f"The 'n_pairs' parameter must be <= {n_possible}, the node pairs of the graph; got {n_pairs}.")
        n_params = int(sum(parameter.numel() for parameter in metric.decoder.parameters())) if hasattr(
            metric.decoder, "parameters") else 10**5
        check_request(
            "plot", 0.0 if refine == "none" else n_pairs * (REFINE_PAIR_WORK + 2.0 * 50 * 64 * (graph.latent_dim + 1) ** 2 * n_params),
            f"--pairs {n_pairs} --refine {refine}", hint="lower --pairs (or use --refine none)", device=metric.device,
        )
        pairs = _far_pairs(graph, n_pairs, seed)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if refine == "none":
        curves = [path.points for path in shortest_paths(graph, pairs)]
        geodesics: list[Any] = []
    else:
        geodesics = refine_geodesics(metric, graph, pairs, method=refine)
        curves = [result.points for result in geodesics]
    straight = np.stack([graph.codes[pairs[:, 0]], graph.codes[pairs[:, 1]]], axis=1)
    path = plot_magnification(
        metric, graph.codes, graph.labels, curves=curves, straight_pairs=straight,
        out=out or Path(run_dir) / "magnification.png",
    )
    return PlotSummary(path, pairs, geodesics)


def _far_pairs(graph: LatentGraph, n_pairs: int, seed: int) -> np.ndarray:
    """Seeded node pairs with different labels (when labelled) and a Euclidean distance above the median.

    When too few such pairs turn up (a single class, identical codes), the conditions are relaxed in turn (far
    pairs of any labels, then any two distinct nodes), so a valid graph always gives `n_pairs` pairs.
    """
    rng = np.random.default_rng(seed)
    pairs: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    scale = np.median(np.linalg.norm(graph.codes - graph.codes.mean(axis=0), axis=1))
    for strict in (2, 1, 0):
        for _ in range(min(1000 * n_pairs, 200_000)):
            a, b = (int(index) for index in rng.choice(graph.n_points, 2, replace=False))
            key = (min(a, b), max(a, b))
            far = np.linalg.norm(graph.codes[a] - graph.codes[b]) > scale
            different = graph.labels is None or graph.labels[a] != graph.labels[b]
            if key not in seen and (strict == 0 or (far and (strict == 1 or different))):
                pairs.append((a, b))
                seen.add(key)
            if len(pairs) == n_pairs:
                return np.array(pairs, dtype=np.int64).reshape(-1, 2)
    for a in range(graph.n_points):  # exhaustive fallback: the first untaken pairs
        for b in range(a + 1, graph.n_points):
            if len(pairs) == n_pairs:
                return np.array(pairs, dtype=np.int64).reshape(-1, 2)
            if (a, b) not in seen:
                pairs.append((a, b))
                seen.add((a, b))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)
