"""End-to-end runs in a run directory: train the model, encode the data, build and save the latent graph.

This is the layer the CLI calls (one function per command); it only composes the modules to its left.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsg_graph import _io
from lsg_graph._validation import (
    check_choice,
    check_codes,
    check_int,
    check_seed,
    invalid_parameter,
    resolve_device,
    warn,
)
from lsg_graph.data import Dataset, load_dataset, train_test_split_indices
from lsg_graph.errors import ArtifactError, InvalidInput, ResourceLimitError, StaleArtifactError
from lsg_graph.graph.knn import BACKEND_CHOICES
from lsg_graph.graph.latent_graph import GRAPH_FILE, LatentGraph, build_latent_graph
from lsg_graph.metric import PullbackMetric
from lsg_graph.model import VAE, PaperClaims, TrainReport, VAEConfig, encode_codes, paper_claims, train_vae
from lsg_graph.registry import (
    CLUSTER_ALGORITHMS,
    DEFAULT_BACKEND,
    DEFAULT_CANDIDATES,
    DEFAULT_CLUSTER_ALGORITHM,
    DEFAULT_DATA,
    DEFAULT_DEVICE,
    DEFAULT_HEALTH_PAIRS,
    DEFAULT_HELD_OUT_FRACTION,
    DEFAULT_IWAE_SAMPLES,
    DEFAULT_K,
    DEFAULT_N_CLUSTERS,
    DEFAULT_N_NODES,
    DEFAULT_REFINE,
    DEFAULT_SEED,
    DEFAULT_VARIANCE,
    DEFAULT_WALK_KIND,
)
from lsg_graph.user_model import UserModel

DEFAULT_RUN_DIR = "lsg-out"
MODEL_FILE = "model.safetensors"
HELD_OUT_FRACTION = DEFAULT_HELD_OUT_FRACTION
MAX_WORK_ENV = "LSG_GRAPH_MAX_WORK"  # override: decoder evaluations x parameters one command may need
MAX_MEMORY_ENV = "LSG_GRAPH_MAX_MEMORY"  # override: bytes one command may allocate at once
DEFAULT_MAX_WORK = 2 * 10**13  # about half an hour of CPU time at 1e10 multiply-adds per second
DEFAULT_MAX_MEMORY = 16 * 2**30
REFINE_PAIR_WORK = 3 * 10**10  # fixed cost of refining one pair (iterations, fallbacks): seconds at 1e10 per second
EDGE_NODE_PASSES = 4  # multiply-adds per decoder parameter at one quadrature node of an edge: a jvp along the edge
WALK_STEP_WORK = 10**7  # fixed cost of one batched walk step (about a millisecond)
CUDA_WORK_FACTOR = 100  # a GPU does the same work about this much faster
MAX_COORDINATE = 1e8  # latent coordinates beyond this (codes are O(1)) overflow the decoder in float32
MAX_CURVE_POINTS = 1_000_000  # `geodesic --points`: the most rows of the written curve


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
    data: str = DEFAULT_DATA,
    seed: int = DEFAULT_SEED,
    progress: bool = True,
    device: str = DEFAULT_DEVICE,
    **config_overrides: Any,
) -> TrainSummary:
    """Train the VAE (both stages) on the train split of `data` on `device` and save it into `run_dir`.

    `config_overrides` are VAEConfig fields (None: the default). With architecture="conv" the image shape comes
    from the data set (digits: (8, 8); IDX folders: (28, 28); npz files: their 'image_shape' key).
    The run update is all-or-nothing: the new model, model.json, the data record and the manifest replace the old
    ones together, and the old graph (built from the old model) is removed with them; a failure or kill at any
    point leaves the previous complete run. A second writer on the same run is refused (RunLockedError).
    """
    seed = check_seed(seed)
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


def load_model(run_dir: str | Path, device: str = DEFAULT_DEVICE) -> VAE:
    """Load the trained VAE of a run directory onto `device`."""
    return VAE.load(run_dir, device=str(resolve_device(device)))


def evaluate_run(
    run_dir: str | Path = DEFAULT_RUN_DIR, n_samples: int = DEFAULT_IWAE_SAMPLES, seed: int = DEFAULT_SEED, device: str = DEFAULT_DEVICE,
    progress: bool = False,
) -> PaperClaims:
    """The paper's claims (sigma extrapolation, held-out IWAE log-likelihood) for the run's model, on `device`."""
    from lsg_graph import progress as _progress
    from lsg_graph._validation import check_positive_int

    n_samples = check_positive_int(n_samples, "n_samples")
    seed = check_seed(seed)
    vae = load_model(run_dir, device)
    data, split_seed = run_data_spec(run_dir, vae)
    with _progress.stage("load and encode the data", total=1, unit="step", show=progress) as bar:
        dataset = load_dataset(data)
        _check_data_matches(vae, dataset, data)
        train_idx, held_idx = _split(dataset, split_seed)
        n_params = _n_params(vae)
        check_request(
            "evaluate", 2 * len(held_idx) * n_samples * n_params, f"--samples {n_samples}",
            memory=32 * n_samples * vae.input_dim * 4, hint="lower --samples", device=resolve_device(device),
        )
        codes = _checked_codes(vae, dataset.images[train_idx], data)
        bar.update(1)
    with _progress.stage(f"sigma extrapolation and IWAE-{n_samples} bound", total=1, unit="step", show=progress) as bar:
        claims = paper_claims(vae, dataset.images[held_idx], codes, n_samples=n_samples, seed=seed)
        bar.update(1)
    return claims


def build_run(
    run_dir: str | Path = DEFAULT_RUN_DIR,
    data: str | None = None,
    *,
    k: int = DEFAULT_K,
    n_nodes: int = DEFAULT_N_NODES,
    backend: str = DEFAULT_BACKEND,
    device: str = DEFAULT_DEVICE,
    candidates: int = DEFAULT_CANDIDATES,
    seed: int = DEFAULT_SEED,
    variance: str = DEFAULT_VARIANCE,
    progress: bool = True,
    user: UserModel | None = None,
    train_if_missing: bool | None = None,
    executor: Any = None,
) -> BuildSummary:
    """Train the model if the run has none, encode the data, build the latent graph and save it.

    The graph records the sha256 of the model file it was built from and the spec and sha256 of the data it
    encodes, so a graph that no longer matches its model is detected on load. The run's writer lock is held
    throughout (a concurrent train or build is refused) and the graph lands with its manifest entry in one
    transaction.

    With `user` (a decoder and codes of the user's own, `lsg_graph.user_model`) no model is trained or loaded: the
    graph is built over the user's codes with the user's decoder. `train_if_missing`: train the default model when
    the run has none (None: only in the default run directory, so that a mistyped run directory is refused).
    `executor` (e.g. lsg_graph.distributed.RayExecutor) measures the edges instead of this process (not with `user`:
    it ships the run's own model).
    """
    from lsg_graph._validation import check_positive_int

    run_dir = check_run_dir(run_dir)
    seed = check_seed(seed)
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
    if user is not None:
        if executor is not None:
            raise InvalidInput("An executor ships the run's own model to its workers; it cannot build with a user decoder.")
        return build_user_run(run_dir, user, k=k, n_nodes=n_nodes, backend=backend, device=device,
                              candidates=candidates, progress=progress)
    if not (run_dir / MODEL_FILE).exists():
        check_may_train(run_dir, train_if_missing)  # before the lock creates the directory: "does not exist" stays true
    with _io.run_lock(run_dir):
        if not (run_dir / MODEL_FILE).exists():
            check_may_train(run_dir, train_if_missing)
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
            "build", EDGE_NODE_PASSES * n_edges * n_nodes * _decoder_params(PullbackMetric(vae.decoder(variance))),
            f"{dataset.n_samples} codes, --k {k}, --nodes {n_nodes}, --candidates {candidates}",
            memory=64 * n_edges + 8 * n_nodes * vae.input_dim * 64,
            hint="lower --nodes, --k or --candidates", device=torch_device,
        )
        codes = _checked_codes(vae, dataset.images, data)
        timings["encode_s"] = time.perf_counter() - started
        metric = PullbackMetric(vae.decoder(variance))
        graph = build_latent_graph(
            metric, codes, dataset.labels, k=k, n_nodes=n_nodes, backend=backend, device=str(torch_device),
            candidates=candidates, progress=progress, executor=executor,
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
        warn(
            f"The data {spec!r} hold integers in [{low:g}, {high:g}], like raw 0-255 pixels, but are used as they are "
            "(only IDX files and the digits are scaled on loading); the sigmoid mean decoder needs values in [0, 1]. "
            "Divide the samples by 255 (e.g. np.savez(path, x=x / 255.0)) before training, unless these are counts "
            "meant in their own units.",
            UserWarning,
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
        warn(
            f"The data {spec!r} changed since the model was trained on them (their sha256 differs from the one "
            "recorded in the model); the codes are those of the current data.",
            UserWarning,
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


def check_may_train(run_dir: Path, train_if_missing: bool | None) -> None:
    """Refuse to train a model into a run directory that has none unless asked (or it is the default run directory)."""
    if train_if_missing is None:
        train_if_missing = Path(run_dir) == Path(DEFAULT_RUN_DIR)
    if not train_if_missing:
        what = "does not exist" if not Path(run_dir).exists() else f"has no model ({MODEL_FILE})"
        raise ArtifactError(
            f"The run directory {str(run_dir)!r} {what}. Check --run, train one with 'lsg-graph train --run {run_dir}', "
            "pass --train-if-missing to train the default digits model there, or use your own model with --decoder "
            "and --codes."
        )


def build_user_run(
    run_dir: str | Path,
    user: UserModel,
    *,
    k: int = DEFAULT_K,
    n_nodes: int = DEFAULT_N_NODES,
    backend: str = DEFAULT_BACKEND,
    device: str = DEFAULT_DEVICE,
    candidates: int = DEFAULT_CANDIDATES,
    progress: bool = True,
) -> BuildSummary:
    """Build the latent graph over a user's codes with the user's decoder (no model of ours) and save it.

    The graph records the decoder spec and the sha256 of the codes (what `ensure_graph` matches a later --decoder
    and --codes against); the run's writer lock is held throughout and the graph lands in one transaction.
    """
    run_dir = check_run_dir(run_dir)
    torch_device = resolve_device(device)
    metric = user.metric(None if device == "auto" else str(torch_device))
    n_points = len(user.codes)
    n_edges = n_points * min(k, max(n_points - 1, 1)) * candidates
    check_request(
        "build", EDGE_NODE_PASSES * n_edges * n_nodes * _decoder_params(metric),
        f"{n_points} codes, --k {k}, --nodes {n_nodes}, --candidates {candidates}",
        memory=64 * n_edges + 8 * n_nodes * metric.output_dim * 64,
        hint="lower --nodes, --k or --candidates", device=torch_device,
    )
    with _io.run_lock(run_dir):
        graph = build_latent_graph(
            metric, user.codes, user.labels, k=k, n_nodes=n_nodes, backend=backend, device=str(torch_device),
            candidates=candidates, progress=progress,
        )
        graph.params.update({"decoder": user.spec, "codes": str(user.codes_path), "codes_sha256": user.digest})
        timings = dict(graph.params.get("timings", {}))
        started = time.perf_counter()
        path = graph.save(run_dir)
        timings["save_s"] = time.perf_counter() - started
    return BuildSummary(
        graph.n_points, graph.latent_dim, graph.n_edges, graph.params["n_components_before_bridging"],
        graph.params["n_bridges"], timings, None, path,
    )


def _decoder_params(metric: PullbackMetric) -> int:
    """Number of parameters of a metric's decoder (a proxy for one evaluation's cost; 1e5 for a plain callable)."""
    decoder = metric.decoder
    return int(sum(parameter.numel() for parameter in decoder.parameters())) if hasattr(decoder, "parameters") \
        else 10**5


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
    """Raise StaleArtifactError unless `graph` records the sha256 of the run's model file (`checksum` if known).

    A graph built with the user's own decoder (`build_user_run`: params 'decoder' and 'codes_sha256') is bound to
    no model of the run; `ensure_graph` matches it against the --decoder and --codes given, and `load_metric`
    refuses it without them.
    """
    run_dir = Path(run_dir)
    if graph.params.get("decoder"):
        return
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


def load_metric(
    run_dir: str | Path, graph: LatentGraph, device: str = DEFAULT_DEVICE, user: UserModel | None = None
) -> PullbackMetric:
    """The pullback metric of the run's decoder (the variance the graph was built with), checked against the graph:
    the model must be the one the graph records and have the graph's latent dimension. With `user`: the metric of
    the user's decoder."""
    if user is not None:
        return user.metric(None if device == "auto" else str(resolve_device(device)))
    spec = graph.params.get("decoder")
    if spec:
        raise ArtifactError(
            f"The graph in {str(run_dir)!r} was built with your decoder {spec!r}; pass --decoder {spec} --codes "
            f"{graph.params.get('codes', 'CODES')} again (a factory is imported and run only when you ask for it)."
        )
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


def ensure_graph(
    run_dir: str | Path,
    device: str = DEFAULT_DEVICE,
    progress: bool = True,
    user: UserModel | None = None,
    train_if_missing: bool | None = None,
) -> tuple[LatentGraph, BuildSummary | None]:
    """The run's graph, building it (and training the default model first when the run has none, see `build_run`)
    when the run has none, or rebuilding it with its own build parameters (and a warning) when it no longer matches
    the run's model.

    With `user`, a saved graph is used only if it was built from the same decoder spec and codes; else it is rebuilt.
    """
    kept: dict[str, Any] = {}
    if (Path(run_dir) / GRAPH_FILE).exists():
        with _io.run_read_lock(run_dir):
            graph = LatentGraph.load(run_dir)
            if user is not None:
                if graph.params.get("decoder") == user.spec and graph.params.get("codes_sha256") == user.digest:
                    return graph, None
            else:
                try:
                    check_graph_binding(run_dir, graph)
                    return graph, None
                except StaleArtifactError as exc:
                    warn(f"{exc} Rebuilding it now.", UserWarning)
        if user is None:
            kept = {name: graph.params[name] for name in ("k", "n_nodes", "candidates", "variance") if name in graph.params}
    summary = build_run(run_dir, device=device, progress=progress, user=user, train_if_missing=train_if_missing, **kept)
    return load_graph(run_dir), summary


@dataclass
class GeodesicSummary:
    """A graph path and, when refined, the refined geodesic between the same end points."""

    path: Any
    refined: Any | None
    saved: Path | None = None
    lower_bound: float | None = None  # the output-space chord ||g(a) - g(b)||: no curve from a to b is shorter
    strip: Path | None = None  # the decoded images along the curve above those along the straight segment


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


def _check_coordinates(point: np.ndarray, name: str, latent_dim: int) -> np.ndarray:
    """One latent point (d,) checked: finite, of the graph's dimension and within +-MAX_COORDINATE."""
    point = check_codes(np.asarray(point)[None, :], name, latent_dim=latent_dim)[0]
    if not np.all(np.abs(point) <= MAX_COORDINATE):
        raise InvalidInput(f"Coordinates must lie within +-{MAX_COORDINATE:g} latent units; got {point.tolist()}.")
    return point


def attach_points(
    run_dir: str | Path,
    graph: LatentGraph,
    points: list[int | np.ndarray],
    device: str = DEFAULT_DEVICE,
    user: UserModel | None = None,
    metric: PullbackMetric | None = None,
) -> tuple[LatentGraph, list[int], PullbackMetric | None]:
    """Node ids for node indices or latent coordinates; coordinates are attached to (a copy of) the graph.

    Returns the graph (with the attached nodes), the ids, and the metric when it had to be loaded for attaching.
    """
    coordinates = []  # node indices are checked where they are used (named 'source', 'target', ...)
    for point in points:
        if not isinstance(point, (int, np.integer)):
            coordinates.append(_check_coordinates(np.asarray(point), "coordinates", graph.latent_dim))
    if not coordinates:
        return graph, [int(point) for point in points], metric
    metric = metric or load_metric(run_dir, graph, device, user)
    unique = np.unique(np.vstack(coordinates), axis=0)
    attached = graph.attach(unique, metric)
    ids = []
    for point in points:
        if isinstance(point, (int, np.integer)):
            ids.append(int(point))
        else:
            row = int(np.flatnonzero((unique == np.asarray(point, dtype=np.float64)).all(axis=1))[0])
            ids.append(graph.n_points + row)
    return attached, ids, metric


def geodesic_run(
    run_dir: str | Path,
    source: int | np.ndarray,
    target: int | np.ndarray,
    refine: str = DEFAULT_REFINE,
    out: str | Path | None = None,
    device: str = DEFAULT_DEVICE,
    user: UserModel | None = None,
    progress: bool = True,
    refine_options: dict[str, Any] | None = None,
    points: int | None = None,
    strip: str | Path | None = None,
) -> GeodesicSummary:
    """Graph path between two nodes or latent points, refined by `refine` (a REFINE_METHODS name or 'none').

    refine_options: keyword arguments of `refine_path` (max_iter, n_steps, n_segments, ...). out: the curve's latent
    points as .npy or .csv: the solver's own points, or with `points` = N that many rows at equal steps of the
    curve's parameter (GeodesicResult.sample(N); an unrefined graph path at equal Euclidean arc length).
    strip: a figure (.png, .svg or .pdf) of STRIP_POINTS decoded images along the curve above those along the
    straight segment between the same end points (image data only).
    """
    from lsg_graph import progress as _progress
    from lsg_graph._validation import check_choice
    from lsg_graph.geodesics.refine import REFINE_METHODS, refine_path
    from lsg_graph.geodesics.shortest import shortest_path

    check_choice(refine, "refinement method", REFINE_METHODS)
    if points is not None:
        if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or not 2 <= points <= MAX_CURVE_POINTS:
            raise InvalidInput(f"--points must be an int in [2, {MAX_CURVE_POINTS}] (rows of the --out curve); got {points!r}.")
        if out is None:
            raise InvalidInput("--points sets the rows of the --out curve; add --out FILE.npy (or .csv).")
    if strip is not None:
        from lsg_graph.plot import FORMATS

        strip = Path(strip)
        if strip.suffix.lower().lstrip(".") not in FORMATS or strip.is_dir():
            raise InvalidInput(f"--strip must be a figure file ending in .png, .svg or .pdf; got {str(strip)!r}.")
    graph = load_graph(run_dir) if user is None else ensure_graph(run_dir, device, progress, user)[0]
    graph, endpoints, metric = attach_points(run_dir, graph, [source, target], device, user)
    path = shortest_path(graph, endpoints[0], endpoints[1])
    refined = None
    if metric is None and (refine != "none" or user is not None or not graph.params.get("decoder")):
        metric = load_metric(run_dir, graph, device, user)  # a user-decoder graph without --decoder: graph path only
    if refine != "none":
        with _progress.stage(f"refine geodesic ({refine})", total=1, unit="curve", show=progress) as bar:
            refined = refine_path(metric, path, method=refine, **(refine_options or {}))
            bar.update(1)
    lower = None
    if metric is not None:
        with torch.no_grad():
            lower = min(float(metric.chord(path.points[:1], path.points[-1:])[0]), float(path.length))
    saved = save_curve(out, _curve_points(path, refined, points)) if out is not None else None
    strip_path = None
    if strip is not None:
        strip_path = _geodesic_strip(run_dir, graph, metric or load_metric(run_dir, graph, device, user), path,
                                     refined, Path(strip))
    return GeodesicSummary(path, refined, saved, lower, strip_path)


def _curve_points(path: Any, refined: Any, points: int | None) -> np.ndarray:
    """The curve written by `geodesic --out`: the solver's points, or `points` rows sampled along the curve."""
    if refined is not None:
        return refined.points if points is None else refined.sample(int(points))
    return path.points if points is None else _resample_polyline(path.points, int(points))


def _geodesic_strip(
    run_dir: str | Path, graph: LatentGraph, metric: PullbackMetric, path: Any, refined: Any, out: Path
) -> Path:
    """Decoded images along the curve (refined, else the graph path) above those along the straight segment."""
    from lsg_graph.plot import plot_curve_strips
    from lsg_graph.walks import decode_means

    image_shape = _image_shape(Path(run_dir), metric.output_dim)
    if image_shape is None:
        raise InvalidInput(
            f"--strip needs image outputs: the decoder returns {metric.output_dim} values per point, not a square "
            "image of at least 4 x 4 pixels."
        )
    along = refined.sample(STRIP_POINTS) if refined is not None else _resample_polyline(path.points, STRIP_POINTS)
    start, end = path.points[0], path.points[-1]
    line = start[None, :] + np.linspace(0.0, 1.0, STRIP_POINTS)[:, None] * (end - start)[None, :]
    kind = "geodesic" if refined is not None else "graph path"
    name = f"{kind}\n{path.source}\u2192{path.target}"
    return plot_curve_strips(decode_means(metric, along[None]), decode_means(metric, line[None]), image_shape, out,
                             names=[name])


def health_run(
    run_dir: str | Path, n_pairs: int = DEFAULT_HEALTH_PAIRS, seed: int = DEFAULT_SEED, device: str = DEFAULT_DEVICE, progress: bool = True
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
    n_clusters: int = DEFAULT_N_CLUSTERS,
    *,
    seed: int = DEFAULT_SEED,
    n_init: int = 1,
    figure: bool = True,
    device: str = DEFAULT_DEVICE,
    progress: bool = True,
    user: UserModel | None = None,
    train_if_missing: bool | None = None,
    dpi: int = 100,
    algorithm: str = DEFAULT_CLUSTER_ALGORITHM,
) -> ClusterSummary:
    """Geodesic k-means (and Euclidean k-means beside it, same n_init) of the run's codes; writes clusters.csv and clusters.png.

    `algorithm` is GeodesicKMeans's ("auto", "medoids" or "embedding", registry.CLUSTER_ALGORITHMS).

    The figure has a panel per clustering (geodesic, Euclidean) and one of the true labels when the codes have them.
    """
    from sklearn.cluster import KMeans

    from lsg_graph import progress as _progress
    from lsg_graph._validation import check_choice, check_int, check_positive_int
    from lsg_graph.cluster import cluster_latent_graph, clustering_scores

    check_choice(algorithm, "algorithm", CLUSTER_ALGORITHMS)
    seed = check_seed(seed)
    n_init = check_positive_int(n_init, "n_init")
    n_clusters = check_int(n_clusters, "n_clusters", minimum=1)
    graph, built = ensure_graph(run_dir, device, progress, user, train_if_missing)
    n_clusters = check_int(n_clusters, "n_clusters", minimum=1, maximum=graph.n_points)
    check_request(
        "cluster", 100.0 * n_init * 100 * n_clusters * (graph.n_edges + graph.n_points * math.log2(graph.n_points + 1)),
        f"--k {n_clusters} --n-init {n_init} on {graph.n_points} codes", hint="lower --n-init or --k",
    )
    with _progress.stage(f"geodesic k-means (k = {n_clusters})", total=1, unit="fit", show=progress) as bar:
        result = cluster_latent_graph(graph, n_clusters, n_init=n_init, random_state=seed,
                                      verbose=int(progress and n_init > 1), algorithm=algorithm)
        bar.update(1)
    euclidean = KMeans(n_clusters, n_init=n_init, random_state=seed).fit(graph.codes).labels_.astype(np.int64)  # same n_init
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
    if figure and graph.latent_dim >= 2:
        from lsg_graph.plot import ClusterPanel, plot_cluster_comparison

        def score(scores: dict[str, float] | None) -> str:
            return "" if scores is None else f" (ARI {scores['ari']:.2f}, NMI {scores['nmi']:.2f})"

        panels = [
            ClusterPanel(f"geodesic k-means{score(result.scores)}", result.labels, result.medoid_indices),
            ClusterPanel(f"Euclidean k-means{score(euclidean_scores)}", euclidean),
        ]
        if graph.labels is not None:
            panels.append(ClusterPanel("true labels", graph.labels, palette="labels"))
        metric = load_metric(run_dir, graph, device, user)
        figure_path = plot_cluster_comparison(
            graph.codes, panels, out=Path(run_dir) / "clusters.png", metric=metric, dpi=dpi,
            title=f"{n_clusters} clusters of {graph.n_points} codes", progress=progress,
        )
    return ClusterSummary(n_clusters, result, euclidean, euclidean_scores, labels_path, figure_path, built)


@dataclass
class WalkSummary:
    """Random walks from one code: the trajectories file, the image strip, and the walk statistics."""

    result: Any
    trajectories_path: Path
    strip_path: Path | None
    map_path: Path | None


WALK_EDGES = 5.0  # default step at d = 2: an expected displacement of this many local edge lengths after n_steps


def default_step_size(
    metric: PullbackMetric, graph: LatentGraph, start: np.ndarray, kind: str, n_steps: int, node: int | None = None
) -> float:
    """A step size s from the metric's scale at the start: the median length of the graph edges there.

    metric and brownian steps v ~ N(0, s M^-1) have the expected squared metric length s * d whatever M is, so
    s = (c * h / sqrt(n_steps))^2 / d gives an expected metric displacement of about c edge lengths h after n_steps
    steps. c = WALK_EDGES * sqrt(2 / d): in more dimensions M is more anisotropic and the same metric displacement
    takes the walkers farther along the weak directions, off the data (chosen on MNIST at d = 2 and 16 so that the
    decoded images change and stay digits). h is the median length of the edges of the start node (`node`), else of
    the start's nearest code. The euclidean kind uses the same rule in latent units (h: the median Euclidean length
    of those edges).
    """
    from lsg_graph.walks import WALK_KINDS

    if node is None or node >= graph.n_points:
        node = int(np.argmin(np.linalg.norm(graph.codes - start, axis=1)))
    row = graph.weights.getrow(node)
    lengths = row.data if row.nnz else graph.weights.data
    if not WALK_KINDS[kind].uses_metric:
        lengths = np.linalg.norm(graph.codes[row.indices] - graph.codes[node], axis=1) if row.nnz else lengths
    local = float(np.median(lengths)) if len(lengths) else 1.0
    spread = WALK_EDGES * np.sqrt(2.0 / graph.latent_dim)
    return float((spread * local) ** 2 / (n_steps * graph.latent_dim))


def walk_run(
    run_dir: str | Path = DEFAULT_RUN_DIR,
    start: int | np.ndarray = 0,
    *,
    n_steps: int = 100,
    kind: str = DEFAULT_WALK_KIND,
    step_size: float | None = None,
    n_walkers: int = 8,
    seed: int = DEFAULT_SEED,
    figures: bool = True,
    device: str = DEFAULT_DEVICE,
    progress: bool = True,
    user: UserModel | None = None,
    train_if_missing: bool | None = None,
    dpi: int = 100,
) -> WalkSummary:
    """Random walks of `kind` from a code index or latent point `start`; writes walks_KIND.npy and figures.

    step_size None: chosen from the metric's scale at the start (`default_step_size`). The image strip shows every
    walker (one row each) at 11 evenly spaced steps.
    """
    from lsg_graph import progress as _progress
    from lsg_graph._validation import check_choice, check_index, check_positive_int
    from lsg_graph.walks import WALK_KINDS, random_walks

    check_choice(kind, "walk kind", WALK_KINDS)
    n_walkers = check_positive_int(n_walkers, "walkers")
    n_steps = check_positive_int(n_steps, "n_steps")
    seed = check_seed(seed)
    graph, _ = ensure_graph(run_dir, device, progress, user, train_if_missing)
    start_node = None
    if isinstance(start, (int, np.integer)):
        start_node = check_index(int(start), "start", graph.n_points)
        start_point = graph.codes[start_node]
        start_name = f"code {int(start)}"
    else:
        start_point = _check_coordinates(np.asarray(start), "start", graph.latent_dim)
        start_name = "(" + ", ".join(f"{value:.3g}" for value in start_point) + ")"
    metric = load_metric(run_dir, graph, device, user)
    width = getattr(metric.decoder, "output_dim", None) or 2 * graph.latent_dim
    check_request(
        "walk", n_steps * (WALK_STEP_WORK + 2.0 * n_walkers * (graph.latent_dim + 1) ** 2 * _decoder_params(metric)),
        f"--walkers {n_walkers} --steps {n_steps}",
        memory=n_walkers * (n_steps + 1) * (8 * graph.latent_dim + (4 * width if figures else 0)),
        hint="lower --walkers or --steps", device=metric.device,
    )
    if step_size is None:
        step_size = default_step_size(metric, graph, start_point, kind, n_steps, start_node)
    starts = np.repeat(start_point[None, :], n_walkers, axis=0)
    with _progress.stage(f"{kind} walks ({n_walkers} x {n_steps} steps)", total=1, unit="run", show=progress) as bar:
        result = random_walks(metric, starts, n_steps, step_size, kind=kind, seed=seed, decode=figures)
        bar.update(1)
    run_dir = Path(run_dir)
    trajectories_path = run_dir / f"walks_{kind}.npy"
    with _io.atomic_path(trajectories_path) as temp, open(temp, "wb") as stream:
        np.save(stream, result.trajectories, allow_pickle=False)
    strip_path = map_path = None
    if figures:
        from lsg_graph.plot import plot_image_strip, plot_magnification

        if graph.latent_dim >= 2:
            map_path = plot_magnification(
                metric, graph.codes, graph.labels, walks=result, out=run_dir / f"walks_{kind}.png", dpi=dpi,
                title=f"{n_walkers} {kind} random walks from {start_name}, step size {step_size:.3g}",
                progress=progress,
            )
        image_shape = _image_shape(run_dir, result.decoded_means.shape[-1])
        if image_shape is not None:
            every = max(1, n_steps // 10)
            columns = list(range(0, n_steps + 1, every))
            strip_path = plot_image_strip(
                result.decoded_means[:, columns], image_shape, out=run_dir / f"walks_{kind}_strip.png",
                titles=[f"walker {row}" for row in range(n_walkers)],
                column_titles=[f"step {step}" for step in columns], cell_inches=1.0 if n_walkers <= 8 else 0.6,
            )
    return WalkSummary(result, trajectories_path, strip_path, map_path)


def _image_shape(run_dir: Path, n_features: int) -> tuple[int, ...] | None:
    """Image shape of the run's data when its samples are square images of n_features pixels."""
    side = int(round(np.sqrt(n_features)))
    return (side, side) if side * side == n_features and side >= 4 else None


@dataclass
class PlotSummary:
    """The magnification map, the pairs drawn on it (node ids; attached points have ids >= n) and their lengths."""

    path: Path
    pairs: np.ndarray
    geodesics: list[Any]
    graph_lengths: list[float] = field(default_factory=list)
    straight_lengths: list[float] = field(default_factory=list)
    strip_paths: list[Path] = field(default_factory=list)


STRAIGHT_POINTS = 257  # points of the polyline that measures a straight segment's metric length
STRIP_POINTS = 10  # decoded images along each curve in the strips


def straight_lengths(metric: PullbackMetric, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Metric lengths (k,) of the straight segments starts[i] -> ends[i], by the midpoint rule on 256 pieces."""
    t = np.linspace(0.0, 1.0, STRAIGHT_POINTS)[None, :, None]
    lines = starts[:, None, :] + t * (ends - starts)[:, None, :]
    with torch.no_grad():
        return metric.curve_length(torch.from_numpy(lines)).to(torch.float64).cpu().numpy()


def auto_pairs(graph: LatentGraph, metric: PullbackMetric, n_pairs: int, seed: int = DEFAULT_SEED, n_candidates: int = 40) -> np.ndarray:
    """Node pairs whose straight segment is longest relative to the graph path (where geodesics bend the most).

    Among `n_candidates` seeded far pairs (different labels when labelled), the score is straight metric length /
    graph length (the graph length bounds the geodesic from above, so the score bounds straight / geodesic from
    below); the n_pairs best with no shared end point are kept.
    """
    from lsg_graph.geodesics.shortest import shortest_paths

    candidates = _far_pairs(graph, max(n_candidates, n_pairs), seed)
    if not len(candidates):
        return candidates
    lengths = np.array([path.length for path in shortest_paths(graph, candidates)])
    straight = straight_lengths(metric, graph.codes[candidates[:, 0]], graph.codes[candidates[:, 1]])
    score = straight / np.maximum(lengths, np.finfo(float).tiny)
    chosen: list[int] = []
    used: set[int] = set()
    for index in np.argsort(-score, kind="stable"):
        a, b = (int(node) for node in candidates[index])
        if a in used or b in used:
            continue
        chosen.append(int(index))
        used.update((a, b))
        if len(chosen) == n_pairs:
            break
    return candidates[chosen]


def plot_run(
    run_dir: str | Path = DEFAULT_RUN_DIR,
    pairs: Any = None,
    *,
    n_pairs: int = 3,
    auto: bool = False,
    refine: str = DEFAULT_REFINE,
    seed: int = DEFAULT_SEED,
    out: str | Path | None = None,
    device: str = DEFAULT_DEVICE,
    progress: bool = True,
    user: UserModel | None = None,
    train_if_missing: bool | None = None,
    fmt: str = "png",
    dpi: int = 100,
    size: tuple[float, float] | None = None,
    strips: bool = True,
    refine_options: dict[str, Any] | None = None,
) -> PlotSummary:
    """The magnification map log sqrt(det M) with codes, geodesics and straight segments between pairs.

    pairs: (source, target) items, each a node index or latent coordinates (attached to the graph); None: n_pairs
    pairs, chosen by `auto_pairs` when `auto`, else seeded random far pairs. refine 'none' draws the graph paths and
    calls them so. For image data a strip of decoded images along each curve and its straight segment is written
    beside the map (RUN/magnification_strips.png). fmt: 'png', 'svg' or 'pdf' (when `out` is None).
    """
    from lsg_graph import progress as _progress
    from lsg_graph._validation import check_choice, check_positive_int
    from lsg_graph.geodesics.refine import REFINE_METHODS, refine_geodesics
    from lsg_graph.geodesics.shortest import shortest_paths
    from lsg_graph.plot import FORMATS, plot_curve_strips, plot_magnification
    from lsg_graph.walks import decode_means

    check_choice(refine, "refinement method", REFINE_METHODS)
    check_choice(fmt, "figure format", {name: name for name in FORMATS})
    seed = check_seed(seed)
    if pairs is None:
        n_pairs = check_positive_int(n_pairs, "n_pairs")
    graph, _ = ensure_graph(run_dir, device, progress, user, train_if_missing)
    metric = load_metric(run_dir, graph, device, user)
    base = graph  # the codes drawn (attached points are not codes)
    if pairs is None:
        n_possible = graph.n_points * (graph.n_points - 1) // 2
        if n_pairs > n_possible:
            raise invalid_parameter("n_pairs", f"<= {n_possible}, the node pairs of the graph", str(n_pairs))
    n_requested = n_pairs if pairs is None else len(pairs)
    check_request(
        "plot",
        0.0 if refine == "none" else n_requested * (
            REFINE_PAIR_WORK + 2.0 * 50 * 64 * (graph.latent_dim + 1) ** 2 * _decoder_params(metric)),
        f"--pairs {n_requested} --refine {refine}", hint="lower --pairs (or use --refine none)", device=metric.device,
    )
    if pairs is None:
        with _progress.stage("choose pairs", total=1, unit="step", show=progress) as bar:
            pairs = auto_pairs(graph, metric, n_pairs, seed) if auto else _far_pairs(graph, n_pairs, seed)
            bar.update(1)
        ids = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    else:
        flat = [point for pair in pairs for point in pair]
        graph, flat_ids, _ = attach_points(run_dir, graph, flat, device, user, metric)
        ids = np.asarray(flat_ids, dtype=np.int64).reshape(-1, 2)
    paths = shortest_paths(graph, ids)
    geodesics: list[Any] = []
    if refine == "none":
        curves = [path.points for path in paths]
    else:
        for pair in _progress.track(ids, f"refine geodesics ({refine})", unit="pair", show=progress):
            geodesics += refine_geodesics(metric, graph, pair[None, :], method=refine, **(refine_options or {}))
        curves = [result.points for result in geodesics]
    starts, ends = graph.codes[ids[:, 0]], graph.codes[ids[:, 1]]
    straight = straight_lengths(metric, starts, ends) if len(ids) else np.zeros(0)
    kind = "graph path" if refine == "none" else "geodesic"
    lengths = [path.length for path in paths] if refine == "none" else [result.length for result in geodesics]
    curve_labels = [
        f"{a} \u2192 {b}: {kind} {length:.3g} vs straight {line:.3g}"
        for (a, b), length, line in zip(ids.tolist(), lengths, straight.tolist())
    ]
    title = ("Graph paths (not refined)" if refine == "none" else f"Geodesics ({refine})") + \
        " on the magnification factor"
    out = Path(out) if out is not None else Path(run_dir) / f"magnification.{fmt}"
    path = plot_magnification(
        metric, base.codes, base.labels, curves=curves, progress=progress,
        straight_pairs=np.stack([starts, ends], axis=1) if len(ids) else None,
        out=out, title=title, dpi=dpi, size=size, curve_labels=curve_labels,
    )
    strip_paths: list[Path] = []
    image_shape = _image_shape(Path(run_dir), metric.output_dim)
    if strips and image_shape is not None and curves:
        along = np.stack([_resample_polyline(curve, STRIP_POINTS) for curve in curves])
        t = np.linspace(0.0, 1.0, STRIP_POINTS)[None, :, None]
        lines = starts[:, None, :] + t * (ends - starts)[:, None, :]
        names = [f"{kind}\n{a}\u2192{b}" for a, b in ids.tolist()]
        strip_out = out.with_name(f"{out.stem}_strips.png")
        strip_paths.append(plot_curve_strips(decode_means(metric, along), decode_means(metric, lines), image_shape,
                                             strip_out, names=names))
    return PlotSummary(path, ids, geodesics, [path.length for path in paths], straight.tolist(), strip_paths)


def _resample_polyline(curve: np.ndarray, n: int) -> np.ndarray:
    """n points (n, d) at equal Euclidean arc length along a polyline (m, d)."""
    steps = np.linalg.norm(np.diff(curve, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    if arc[-1] <= 0:
        return np.repeat(curve[:1], n, axis=0)
    targets = np.linspace(0.0, arc[-1], n)
    return np.stack([np.interp(targets, arc, curve[:, axis]) for axis in range(curve.shape[1])], axis=1)


def parse_pairs(text: str) -> str | int | list[tuple[int | np.ndarray, int | np.ndarray]]:
    """'auto', a count ('3'), or pairs: 'I:J,K:L' (node indices) or 'A:B;C:D' where A..D are indices or coordinates."""
    text = text.strip()
    if text == "auto":
        return "auto"
    if text.isdigit():
        return int(text)
    if ";" in text:
        items = text.split(";")
    elif all(":" in part for part in text.split(",")):
        items = text.split(",")
    else:
        items = [text]
    pairs = []
    for item in (item.strip() for item in items if item.strip()):
        if item.count(":") != 1:
            raise InvalidInput(
                f"--pairs must be 'auto', a count, or pairs 'I:J,K:L' (with coordinates 'x,y:J;K:L'); got {text!r}."
            )
        source, target = item.split(":")
        pairs.append((parse_point(source), parse_point(target)))
    if not pairs:
        raise InvalidInput(f"--pairs must name at least one pair; got {text!r}.")
    return pairs


def parse_size(text: str) -> tuple[float, float]:
    """'WIDTHxHEIGHT' in inches ('9x6') as two floats > 0."""
    parts = text.lower().replace(" ", "").split("x")
    try:
        width, height = (float(part) for part in parts)
    except ValueError:
        raise InvalidInput(f"--size must be WIDTHxHEIGHT in inches (e.g. 9x6); got {text!r}.") from None
    if width <= 0 or height <= 0:
        raise InvalidInput(f"--size must be positive (e.g. 9x6); got {text!r}.")
    return width, height


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
