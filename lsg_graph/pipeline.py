"""End-to-end runs in a run directory: train the model, encode the data, build and save the latent graph.

This is the layer the CLI calls (one function per command); it only composes the modules to its left.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsg_graph import _io
from lsg_graph._validation import check_random_state, resolve_device
from lsg_graph.data import Dataset, load_dataset, train_test_split_indices
from lsg_graph.errors import ArtifactError
from lsg_graph.graph.latent_graph import GRAPH_FILE, LatentGraph, build_latent_graph
from lsg_graph.metric import PullbackMetric
from lsg_graph.vae import VAE, PaperClaims, TrainReport, VAEConfig, encode_codes, paper_claims, train_vae

DEFAULT_RUN_DIR = "lsg-out"
MODEL_FILE = "model.safetensors"
HELD_OUT_FRACTION = 0.2


@dataclass
class TrainSummary:
    """What `train_run` did: the report of both stages, the data used and where the model was saved."""

    report: TrainReport
    data: str
    n_train: int
    n_held_out: int
    run_dir: Path
    model_path: Path


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
    **config_overrides: Any,
) -> TrainSummary:
    """Train the VAE (both stages) on the train split of `data` and save it into `run_dir`."""
    seed = check_random_state(seed)
    dataset = load_dataset(data)
    train_idx, held_idx = _split(dataset, seed)
    overrides = {name: value for name, value in config_overrides.items() if value is not None}
    config = VAEConfig(input_dim=dataset.n_features, seed=seed, **overrides)
    vae, report = train_vae(dataset.images[train_idx], config, dataset.images[held_idx], progress=progress)
    run_dir = Path(run_dir)
    vae.save(run_dir)
    _io.update_manifest(run_dir, "data", [], {"data": data, "held_out_fraction": HELD_OUT_FRACTION, "split_seed": seed})
    return TrainSummary(report, data, len(train_idx), len(held_idx), run_dir, run_dir / MODEL_FILE)


def run_data_spec(run_dir: str | Path, default: str = "digits") -> tuple[str, int]:
    """The data spec and split seed recorded in a run's manifest (or the defaults)."""
    manifest_path = Path(run_dir) / _io.MANIFEST_NAME
    if not manifest_path.is_file():
        return default, 0
    params = _io.read_json(manifest_path, "manifest").get("artifacts", {}).get("data", {}).get("params", {})
    return str(params.get("data", default)), int(params.get("split_seed", 0))


def load_model(run_dir: str | Path, device: str = "auto") -> VAE:
    """Load the trained VAE of a run directory onto `device`."""
    return VAE.load(run_dir, device=str(resolve_device(device)))


def evaluate_run(run_dir: str | Path = DEFAULT_RUN_DIR, n_samples: int = 256, seed: int = 0) -> PaperClaims:
    """The paper's claims (sigma extrapolation, held-out IWAE log-likelihood) for the run's model."""
    vae = load_model(run_dir, "cpu")
    data, split_seed = run_data_spec(run_dir)
    dataset = load_dataset(data)
    train_idx, held_idx = _split(dataset, split_seed)
    codes = encode_codes(vae, dataset.images[train_idx])
    return paper_claims(vae, dataset.images[held_idx], codes, n_samples=n_samples, seed=seed)


def build_run(
    run_dir: str | Path = DEFAULT_RUN_DIR,
    data: str | None = None,
    *,
    k: int = 10,
    n_nodes: int = 8,
    backend: str = "auto",
    device: str = "auto",
    candidates: int = 1,
    seed: int = 0,
    variance: str = "rbf",
    progress: bool = True,
) -> BuildSummary:
    """Train the model if the run has none, encode the data, build the latent graph and save it."""
    run_dir = Path(run_dir)
    trained = None
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if not (run_dir / MODEL_FILE).exists():
        trained = train_run(run_dir, data or "digits", seed=seed, progress=progress)
        timings["train_s"] = time.perf_counter() - started
    recorded_data, _ = run_data_spec(run_dir)
    data = data or recorded_data
    torch_device = resolve_device(device)
    started = time.perf_counter()
    vae = VAE.load(run_dir, device=str(torch_device))
    dataset = load_dataset(data)
    codes = encode_codes(vae, dataset.images)
    timings["encode_s"] = time.perf_counter() - started
    metric = PullbackMetric(vae.decoder(variance))
    graph = build_latent_graph(
        metric, codes, dataset.labels, k=k, n_nodes=n_nodes, backend=backend, device=str(torch_device),
        candidates=candidates, progress=progress,
    )
    graph.params.update({"data": data, "variance": variance, "seed": seed})
    timings.update(graph.params.get("timings", {}))
    started = time.perf_counter()
    path = graph.save(run_dir)
    timings["save_s"] = time.perf_counter() - started
    return BuildSummary(
        graph.n_points, graph.latent_dim, graph.n_edges, graph.params["n_components_before_bridging"],
        graph.params["n_bridges"], timings, trained, path,
    )


def load_graph(run_dir: str | Path = DEFAULT_RUN_DIR) -> LatentGraph:
    """Load the latent graph of a run directory (ArtifactError with a hint when there is none)."""
    if not (Path(run_dir) / GRAPH_FILE).exists():
        raise ArtifactError(f"No latent graph in {str(run_dir)!r}; run 'lsg-graph build --run {run_dir}' first.")
    return LatentGraph.load(run_dir)


def load_metric(run_dir: str | Path, graph: LatentGraph, device: str = "auto") -> PullbackMetric:
    """The pullback metric of the run's decoder (the variance the graph was built with)."""
    vae = load_model(run_dir, device)
    return PullbackMetric(vae.decoder(graph.params.get("variance", "rbf")))


def default_device() -> str:
    """'cuda' when available, else 'cpu'."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_point(text: str) -> int | np.ndarray:
    """A node index ('12') or latent coordinates ('0.5,-1.2') from command-line text."""
    from lsg_graph.errors import InvalidInput

    text = text.strip()
    if "," not in text:
        try:
            return int(text)
        except ValueError:
            raise InvalidInput(f"Expected a node index (e.g. 12) or coordinates (e.g. 0.5,-1.2); got {text!r}.") from None
    try:
        return np.array([float(part) for part in text.split(",")], dtype=np.float64)
    except ValueError:
        raise InvalidInput(f"Coordinates must be comma-separated numbers (e.g. 0.5,-1.2); got {text!r}.") from None


def graph_geodesic(run_dir: str | Path, source: int | np.ndarray, target: int | np.ndarray, device: str = "auto") -> Any:
    """Shortest graph path between two node indices or latent points (points are attached to the graph first)."""
    from lsg_graph.geodesics.shortest import shortest_path

    graph = load_graph(run_dir)
    endpoints = []
    points = [point for point in (source, target) if not isinstance(point, int)]
    if points:
        metric = load_metric(run_dir, graph, device)
        first_new = graph.n_points
        graph = graph.attach(np.vstack(points), metric)
        new_ids = iter(range(first_new, graph.n_points))
    for point in (source, target):
        endpoints.append(point if isinstance(point, int) else next(new_ids))
    return shortest_path(graph, endpoints[0], endpoints[1])
