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
from lsg_graph._validation import check_codes, check_random_state, resolve_device
from lsg_graph.data import Dataset, load_dataset, train_test_split_indices
from lsg_graph.errors import ArtifactError, InvalidInput
from lsg_graph.graph.latent_graph import DEFAULT_K, GRAPH_FILE, LatentGraph, build_latent_graph
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
    device: str = "auto",
    **config_overrides: Any,
) -> TrainSummary:
    """Train the VAE (both stages) on the train split of `data` on `device` and save it into `run_dir`.

    `config_overrides` are VAEConfig fields (None: the default). With architecture="conv" the image shape comes
    from the data set (digits: (8, 8); IDX folders: (28, 28); npz files: their 'image_shape' key).
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
    vae, report = train_vae(
        dataset.images[train_idx], config, dataset.images[held_idx], progress=progress, device=torch_device
    )
    run_dir = Path(run_dir)
    vae.save(run_dir)
    _io.update_manifest(run_dir, "data", [], {"data": data, "held_out_fraction": HELD_OUT_FRACTION, "split_seed": seed})
    return TrainSummary(report, data, len(train_idx), len(held_idx), run_dir, run_dir / MODEL_FILE)


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


def run_data_spec(run_dir: str | Path, default: str = "digits") -> tuple[str, int]:
    """The data spec and split seed recorded in a run's manifest (or the defaults)."""
    manifest_path = Path(run_dir) / _io.MANIFEST_NAME
    if not manifest_path.is_file():
        return default, 0
    manifest = _io.read_json(manifest_path, "manifest")
    artifacts = manifest.get("artifacts", {})
    data_entry = artifacts.get("data", {}) if isinstance(artifacts, dict) else None
    params = data_entry.get("params", {}) if isinstance(data_entry, dict) else None
    if not isinstance(params, dict):
        raise ArtifactError(f"{str(manifest_path)!r} is malformed: 'artifacts.data.params' must be a JSON object.")
    data, split_seed = params.get("data", default), params.get("split_seed", 0)
    if not isinstance(data, str) or not isinstance(split_seed, int) or isinstance(split_seed, bool) or split_seed < 0:
        raise ArtifactError(
            f"{str(manifest_path)!r} is malformed: expected a data spec string and a non-negative int split_seed; "
            f"got {data!r} and {split_seed!r}."
        )
    return data, split_seed


def load_model(run_dir: str | Path, device: str = "auto") -> VAE:
    """Load the trained VAE of a run directory onto `device`."""
    return VAE.load(run_dir, device=str(resolve_device(device)))


def evaluate_run(
    run_dir: str | Path = DEFAULT_RUN_DIR, n_samples: int = 256, seed: int = 0, device: str = "auto"
) -> PaperClaims:
    """The paper's claims (sigma extrapolation, held-out IWAE log-likelihood) for the run's model, on `device`."""
    vae = load_model(run_dir, device)
    data, split_seed = run_data_spec(run_dir)
    dataset = load_dataset(data)
    train_idx, held_idx = _split(dataset, split_seed)
    codes = encode_codes(vae, dataset.images[train_idx])
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
    executor: Any = None,
) -> BuildSummary:
    """Train the model if the run has none, encode the data, build the latent graph and save it.

    `executor` (e.g. lsg_graph.distributed.RayExecutor) measures the edges instead of this process.
    """
    run_dir = check_run_dir(run_dir)
    trained = None
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if not (run_dir / MODEL_FILE).exists():
        trained = train_run(run_dir, data or "digits", seed=seed, progress=progress, device=device)
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
        candidates=candidates, progress=progress, executor=executor,
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


def ensure_graph(run_dir: str | Path, device: str = "auto", progress: bool = True) -> tuple[LatentGraph, BuildSummary | None]:
    """The run's graph, building it (and training the default model) first when the run has none."""
    if (Path(run_dir) / GRAPH_FILE).exists():
        return load_graph(run_dir), None
    summary = build_run(run_dir, device=device, progress=progress)
    return load_graph(run_dir), summary


@dataclass
class GeodesicSummary:
    """A graph path and, when refined, the refined geodesic between the same end points."""

    path: Any
    refined: Any | None
    saved: Path | None = None


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
        metric = load_metric(run_dir, graph, device)
        new_ids = iter(range(graph.n_points, graph.n_points + len(points)))
        graph = graph.attach(np.vstack(points), metric)
    for point in (source, target):
        endpoints.append(point if isinstance(point, int) else next(new_ids))
    path = shortest_path(graph, endpoints[0], endpoints[1])
    refined = None
    if refine != "none":
        metric = metric or load_metric(run_dir, graph, device)
        refined = refine_path(metric, path, method=refine)
    curve = refined.points if refined is not None else path.points
    saved = save_curve(out, curve) if out is not None else None
    return GeodesicSummary(path, refined, saved)


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

    from lsg_graph._validation import check_int
    from lsg_graph.cluster import cluster_latent_graph, clustering_scores

    seed = check_random_state(seed)
    graph, built = ensure_graph(run_dir, device, progress)
    n_clusters = check_int(n_clusters, "n_clusters", minimum=1, maximum=graph.n_points)
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
    graph, _ = ensure_graph(run_dir, device, progress)
    start = check_index(start, "start", graph.n_points)
    metric = load_metric(run_dir, graph, device)
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
    graph, _ = ensure_graph(run_dir, device, progress)
    metric = load_metric(run_dir, graph, device)
    if pairs is None:
        n_pairs = check_positive_int(n_pairs, "n_pairs")
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
    """Seeded node pairs with different labels (when labelled) and a Euclidean distance above the median."""
    rng = np.random.default_rng(seed)
    pairs: list[tuple[int, int]] = []
    scale = np.median(np.linalg.norm(graph.codes - graph.codes.mean(axis=0), axis=1))
    for _ in range(1000 * n_pairs):
        a, b = (int(index) for index in rng.choice(graph.n_points, 2, replace=False))
        far = np.linalg.norm(graph.codes[a] - graph.codes[b]) > scale
        different = graph.labels is None or graph.labels[a] != graph.labels[b]
        if far and different:
            pairs.append((a, b))
        if len(pairs) == n_pairs:
            break
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)
