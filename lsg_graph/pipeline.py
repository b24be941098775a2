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
from lsg_graph.user_model import UserModel
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
    run_dir: str | Path = DEFAULT_RUN_DIR, n_samples: int = 256, seed: int = 0, device: str = "auto",
    progress: bool = False,
) -> PaperClaims:
    """The paper's claims (sigma extrapolation, held-out IWAE log-likelihood) for the run's model, on `device`."""
    from lsg_graph import progress as _progress

    vae = load_model(run_dir, device)
    data, split_seed = run_data_spec(run_dir)
    with _progress.stage("load and encode the data", total=1, unit="step", show=progress) as bar:
        dataset = load_dataset(data)
        train_idx, held_idx = _split(dataset, split_seed)
        codes = encode_codes(vae, dataset.images[train_idx])
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
    n_nodes: int = 8,
    backend: str = "auto",
    device: str = "auto",
    candidates: int = 1,
    seed: int = 0,
    variance: str = "rbf",
    progress: bool = True,
    user: UserModel | None = None,
    train_if_missing: bool | None = None,
) -> BuildSummary:
    """Train the model if the run has none, encode the data, build the latent graph and save it.

    With `user` (a decoder and codes of the user's own, `lsg_graph.user_model`) no model is trained or loaded: the
    graph is built over the user's codes with the user's decoder. `train_if_missing`: train the default model when
    the run has none (None: only in the default run directory, so that a mistyped run directory is refused).
    """
    if user is not None:
        return build_user_run(run_dir, user, k=k, n_nodes=n_nodes, backend=backend, device=device,
                              candidates=candidates, progress=progress)
    run_dir = check_run_dir(run_dir)
    trained = None
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if not (run_dir / MODEL_FILE).exists():
        check_may_train(run_dir, train_if_missing)
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
    n_nodes: int = 8,
    backend: str = "auto",
    device: str = "auto",
    candidates: int = 1,
    progress: bool = True,
) -> BuildSummary:
    """Build the latent graph over a user's codes with the user's decoder (no model of ours) and save it."""
    run_dir = check_run_dir(run_dir)
    torch_device = resolve_device(device)
    metric = user.metric(None if device == "auto" else str(torch_device))
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


def load_graph(run_dir: str | Path = DEFAULT_RUN_DIR) -> LatentGraph:
    """Load the latent graph of a run directory (ArtifactError with a hint when there is none)."""
    if not (Path(run_dir) / GRAPH_FILE).exists():
        raise ArtifactError(f"No latent graph in {str(run_dir)!r}; run 'lsg-graph build --run {run_dir}' first.")
    return LatentGraph.load(run_dir)


def load_metric(
    run_dir: str | Path, graph: LatentGraph, device: str = "auto", user: UserModel | None = None
) -> PullbackMetric:
    """The pullback metric of the run's decoder (the variance the graph was built with), or of the user's decoder."""
    if user is not None:
        return user.metric(None if device == "auto" else str(resolve_device(device)))
    spec = graph.params.get("decoder")
    if spec:
        raise ArtifactError(
            f"The graph in {str(run_dir)!r} was built with your decoder {spec!r}; pass --decoder {spec} --codes "
            f"{graph.params.get('codes', 'CODES')} again (a factory is imported and run only when you ask for it)."
        )
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


def ensure_graph(
    run_dir: str | Path,
    device: str = "auto",
    progress: bool = True,
    user: UserModel | None = None,
    train_if_missing: bool | None = None,
) -> tuple[LatentGraph, BuildSummary | None]:
    """The run's graph, building it (and training the default model, see `build_run`) first when the run has none.

    With `user`, a saved graph is used only if it was built from the same decoder spec and codes; else it is rebuilt.
    """
    if (Path(run_dir) / GRAPH_FILE).exists():
        graph = load_graph(run_dir)
        if user is None or (graph.params.get("decoder") == user.spec and graph.params.get("codes_sha256") == user.digest):
            return graph, None
    summary = build_run(run_dir, device=device, progress=progress, user=user, train_if_missing=train_if_missing)
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


def attach_points(
    run_dir: str | Path,
    graph: LatentGraph,
    points: list[int | np.ndarray],
    device: str = "auto",
    user: UserModel | None = None,
    metric: PullbackMetric | None = None,
) -> tuple[LatentGraph, list[int], PullbackMetric | None]:
    """Node ids for node indices or latent coordinates; coordinates are attached to (a copy of) the graph.

    Returns the graph (with the attached nodes), the ids, and the metric when it had to be loaded for attaching.
    """
    coordinates = []  # node indices are checked where they are used (named 'source', 'target', ...)
    for point in points:
        if not isinstance(point, (int, np.integer)):
            coordinates.append(check_codes(np.asarray(point)[None, :], "coordinates", latent_dim=graph.latent_dim)[0])
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
    refine: str = "shooting",
    out: str | Path | None = None,
    device: str = "auto",
    user: UserModel | None = None,
    progress: bool = True,
    refine_options: dict[str, Any] | None = None,
) -> GeodesicSummary:
    """Graph path between two nodes or latent points, refined by `refine` ('shooting', 'energy' or 'none').

    refine_options: keyword arguments of `refine_path` (max_iter, n_steps, n_segments, ...).
    """
    from lsg_graph import progress as _progress
    from lsg_graph._validation import check_choice
    from lsg_graph.geodesics.refine import REFINE_METHODS, refine_path
    from lsg_graph.geodesics.shortest import shortest_path

    check_choice(refine, "refinement method", REFINE_METHODS)
    graph = load_graph(run_dir) if user is None else ensure_graph(run_dir, device, progress, user)[0]
    graph, endpoints, metric = attach_points(run_dir, graph, [source, target], device, user)
    path = shortest_path(graph, endpoints[0], endpoints[1])
    refined = None
    if refine != "none":
        metric = metric or load_metric(run_dir, graph, device, user)
        with _progress.stage(f"refine geodesic ({refine})", total=1, unit="curve", show=progress) as bar:
            refined = refine_path(metric, path, method=refine, **(refine_options or {}))
            bar.update(1)
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
    user: UserModel | None = None,
    train_if_missing: bool | None = None,
    dpi: int = 100,
) -> ClusterSummary:
    """Geodesic k-means (and Euclidean k-means beside it) of the run's codes; writes clusters.csv and clusters.png.

    The figure has a panel per clustering (geodesic, Euclidean) and one of the true labels when the codes have them.
    """
    from sklearn.cluster import KMeans

    from lsg_graph import progress as _progress
    from lsg_graph._validation import check_int
    from lsg_graph.cluster import cluster_latent_graph, clustering_scores

    seed = check_random_state(seed)
    graph, built = ensure_graph(run_dir, device, progress, user, train_if_missing)
    n_clusters = check_int(n_clusters, "n_clusters", minimum=1, maximum=graph.n_points)
    with _progress.stage(f"geodesic k-means (k = {n_clusters})", total=1, unit="fit", show=progress) as bar:
        result = cluster_latent_graph(graph, n_clusters, n_init=n_init, random_state=seed, verbose=int(progress and n_init > 1))
        bar.update(1)
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
    kind: str = "metric",
    step_size: float | None = None,
    n_walkers: int = 8,
    seed: int = 0,
    figures: bool = True,
    device: str = "auto",
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
    graph, _ = ensure_graph(run_dir, device, progress, user, train_if_missing)
    start_node = None
    if isinstance(start, (int, np.integer)):
        start_node = check_index(int(start), "start", graph.n_points)
        start_point = graph.codes[start_node]
        start_name = f"code {int(start)}"
    else:
        start_point = check_codes(np.asarray(start)[None, :], "start", latent_dim=graph.latent_dim)[0]
        start_name = "(" + ", ".join(f"{value:.3g}" for value in start_point) + ")"
    metric = load_metric(run_dir, graph, device, user)
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


def auto_pairs(graph: LatentGraph, metric: PullbackMetric, n_pairs: int, seed: int = 0, n_candidates: int = 40) -> np.ndarray:
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
    refine: str = "shooting",
    seed: int = 0,
    out: str | Path | None = None,
    device: str = "auto",
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
    graph, _ = ensure_graph(run_dir, device, progress, user, train_if_missing)
    metric = load_metric(run_dir, graph, device, user)
    base = graph  # the codes drawn (attached points are not codes)
    if pairs is None:
        n_pairs = check_positive_int(n_pairs, "n_pairs")
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
        along = np.stack([_resample(curve, STRIP_POINTS) for curve in curves])
        t = np.linspace(0.0, 1.0, STRIP_POINTS)[None, :, None]
        lines = starts[:, None, :] + t * (ends - starts)[:, None, :]
        names = [f"{kind}\n{a}\u2192{b}" for a, b in ids.tolist()]
        strip_out = out.with_name(f"{out.stem}_strips.png")
        strip_paths.append(plot_curve_strips(decode_means(metric, along), decode_means(metric, lines), image_shape,
                                             strip_out, names=names))
    return PlotSummary(path, ids, geodesics, [path.length for path in paths], straight.tolist(), strip_paths)


def _resample(curve: np.ndarray, n: int) -> np.ndarray:
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
