"""The lsg-graph command-line app: thin commands, one library call each; library errors become one line and exit 1.

Every command takes `--json` (one JSON object on stdout instead of the table), `--quiet` (no progress bars; bars
are shown only when stderr is a terminal anyway), `--threads N` (torch CPU threads; default: the free cores) and
`-h`/`--help`. `build`, `geodesic`, `cluster`, `walk` and `plot` also work on a model of your own:
`--decoder my_pkg.models:load_decoder --codes codes.npy [--labels labels.npy]` (the factory is imported and called).
"""

from __future__ import annotations

import functools
import json
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from lsg_graph import registry
from lsg_graph.registry import (
    DEFAULT_BACKEND,
    DEFAULT_CANDIDATES,
    DEFAULT_CLUSTER_ALGORITHM,
    DEFAULT_DATA,
    DEFAULT_DEVICE,
    DEFAULT_DPI,
    DEFAULT_HEALTH_PAIRS,
    DEFAULT_IWAE_SAMPLES,
    DEFAULT_K,
    DEFAULT_LATENT_DIM,
    DEFAULT_N_CLUSTERS,
    DEFAULT_N_NODES,
    DEFAULT_REFINE,
    DEFAULT_SEED,
    DEFAULT_WALK_KIND,
)

CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="lsg-graph",
    help="Latent-space geometry of deep generative models: train a VAE, build its latent graph, measure geodesics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=CONTEXT,
)

F = TypeVar("F", bound=Callable[..., Any])
# library parameter -> the option the user typed, for error messages ("The 'n_clusters' parameter" -> "'--k'")
OPTION_NAMES = {
    "n_clusters": "--clusters", "k": "--k", "n_init": "--n-init", "n_nodes": "--nodes", "candidates": "--candidates",
    "n_samples": "--samples", "n_pairs": "--pairs", "walkers": "--walkers", "n_walkers": "--walkers",
    "n_steps": "--steps", "step_size": "--step-size", "latent_dim": "--latent-dim", "epochs": "--epochs",
    "rbf_epochs": "--rbf-epochs", "seed": "--seed", "start": "--start", "max_iter": "--max-iter",
    "n_segments": "--segments", "energy_iter": "--energy-iter", "tol": "--tol", "ridge": "--ridge",
    "gn_iter": "--gn-iter", "gn_tol": "--gn-tol", "gn_segments": "--gn-segments", "gn_max_segments": "--gn-max-segments",
}
_PARAMETER = re.compile(r"The '(\w+)' (parameter|index)")


def _name_options(exc: BaseException) -> None:
    """Rewrite "The 'n_clusters' parameter" into "The '--k' option" in a library error, in place."""
    message = str(exc)
    renamed = _PARAMETER.sub(
        lambda match: f"The {OPTION_NAMES[match.group(1)]!r} option" if match.group(1) in OPTION_NAMES else match.group(0),
        message,
    )
    if renamed != message:
        exc.args = (renamed,)


def described(names: Any) -> str:
    """"'a' (what a is), 'b' (...) or 'c' (...)" for a registry of name -> description (or a tuple of names)."""
    items = [f"{name!r} ({text})" if text else repr(name) for name, text in
             (names.items() if isinstance(names, dict) else ((name, "") for name in names))]
    return ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else items[0]


def choice_option(default: Any, names: Any, *declarations: str, help: str) -> Any:
    """A typer option whose choices are a registry's names: listed in --help, completed by the shell.

    The value is validated by the library (one message, exit code 1), so a bad name is refused there with the list
    of valid ones."""
    choices = list(names)

    def complete(incomplete: str) -> list[str]:
        return [name for name in choices if name.startswith(incomplete)]

    return typer.Option(default, *declarations, metavar="[" + "|".join(choices) + "]", autocompletion=complete,
                        help=help)


REFINE_CHOICES = described(registry.REFINE_METHODS)
DEVICE_HELP = f"Where the model runs: {described(registry.DEVICES)}."
RUN_HELP = "Run directory holding the model, graph and manifest."
DECODER_HELP = (
    "Your own decoder: 'module.path:factory', a zero-argument callable returning a torch module or a callable "
    "z (n, d) -> mean or (mean, std). The module is IMPORTED AND THE FACTORY CALLED (it runs your code); needs --codes."
)
CODES_HELP = "Latent codes of your own (.npy (n, d), .npz with 'codes'/'z' [and 'labels'], or .csv); with --decoder."
LABELS_HELP = "Labels of your codes (.npy, .npz or .csv, one integer per code); optional, with --codes."
TRAIN_HELP = "Train the default digits model when the run directory has none (default: only for ./lsg-out)."

# Library parameter names that warnings may mention -> the flag of the command that sets them.
FLAG_NAMES = {
    "max_iter": "--max-iter",
    "n_segments": "--segments",
    "n_steps": "--steps",
    "ridge": "--ridge",
    "energy_iter": "--energy-iter",
    "tol": "--tol",
    "gn_iter": "--gn-iter",
    "gn_tol": "--gn-tol",
    "gn_segments": "--gn-segments",
    "gn_max_segments": "--gn-max-segments",
    "'k'": "--k",
    "'candidates'": "--candidates",
}


def _refine_options(**values: Any) -> dict[str, Any]:
    """The RefineOptions fields a command was given (None: the library's default)."""
    return {name: value for name, value in values.items() if value is not None}


def command_flags(command: Callable[..., Any]) -> set[str]:
    """The option flags a command function declares (from its typer.Option defaults)."""
    import inspect

    flags = set()
    for name, parameter in inspect.signature(command).parameters.items():
        declared = getattr(parameter.default, "param_decls", None)
        if declared:
            flags.update(decl for part in declared for decl in part.split("/") if decl.startswith("-"))
        else:
            flags.add("--" + name.replace("_", "-"))
    return flags


def _cli_names(message: str, params: set[str] | None = None) -> str:
    """A warning message with library parameter names replaced by the command's flags (or where to set them)."""
    params = set() if params is None else params
    for name, flag in FLAG_NAMES.items():
        pattern = re.escape(name) if name.startswith("'") else rf"\b{re.escape(name)}\b"
        replacement = flag if flag in params else f"{flag} (of lsg-graph build)" if flag in ("--k", "--candidates") else None
        if replacement is not None:
            message = re.sub(pattern, replacement, message)
    return message


def handle_errors(command: F) -> F:
    """Turn LsgGraphError into 'Error: message' on stderr and exit code 1 (no traceback)."""

    flags = command_flags(command)

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from lsg_graph.errors import LsgGraphError

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = command(*args, **kwargs)
        except LsgGraphError as exc:
            _name_options(exc)
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(code=1) from None
        except OSError as exc:  # disk full, permission denied, ...: the system's own message, no traceback
            typer.echo(f"Error: cannot read or write {exc.filename or 'a file'!s}: {exc.strerror or exc}", err=True)
            raise typer.Exit(code=1) from None
        except MemoryError:
            typer.echo("Error: out of memory; ask for less (fewer samples, walkers, nodes or a smaller model).", err=True)
            raise typer.Exit(code=1) from None
        for warning in caught:
            if issubclass(warning.category, UserWarning):
                typer.echo(f"Warning: {_cli_names(str(warning.message), flags)}", err=True)
        return result

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    """Print the version and exit (eager --version)."""
    if value:
        from lsg_graph import __version__

        typer.echo(f"lsg-graph {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Latent-space geometry of deep generative models: train a VAE, build its latent graph, measure geodesics."""


# ---------------------------------------------------------------------------------------------------------------
# Shared options and output
# ---------------------------------------------------------------------------------------------------------------


def _json_option() -> Any:
    return typer.Option(False, "--json", help="Print one JSON object on stdout instead of the table.")


def _quiet_option() -> Any:
    return typer.Option(False, "--quiet", "-q", help="No progress bars (they are shown only on a terminal anyway).")


def _threads_option() -> Any:
    return typer.Option(None, "--threads", help="torch CPU threads (default: the free cores of this machine; -1: all).")


def _device_option(default: str = DEFAULT_DEVICE) -> Any:
    return choice_option(default, registry.DEVICES, "--device", help=DEVICE_HELP)


def _setup(threads: int | None, quiet: bool) -> bool:
    """Set the torch thread count; return whether progress bars are shown (a terminal and not quiet)."""
    from lsg_graph import progress
    from lsg_graph._threads import set_torch_threads

    set_torch_threads(threads)
    return progress.enabled(False if quiet else None)


def _user(decoder: str | None, codes: Path | None, labels: Path | None) -> Any:
    """The user's model from --decoder/--codes/--labels, or None when neither is given."""
    from lsg_graph.errors import InvalidInput

    if decoder is None and codes is None:
        if labels is not None:
            raise InvalidInput("--labels belongs to --codes; pass --decoder and --codes with it.")
        return None
    if decoder is None or codes is None:
        missing = "--codes FILE" if codes is None else "--decoder module.path:factory"
        raise InvalidInput(f"--decoder and --codes go together; add {missing}.")
    from lsg_graph.user_model import load_user_model

    return load_user_model(decoder, codes, labels)


def _plain(value: Any) -> Any:
    """JSON-ready value: numpy scalars/arrays and paths converted."""
    import numpy as np

    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _emit(as_json: bool, payload: dict[str, Any], human: Callable[[], None]) -> None:
    """Print the payload as JSON, or the human-readable output."""
    if as_json:
        typer.echo(json.dumps(_plain(payload), indent=2))
    else:
        human()


def _echo_table(rows: list[tuple[str, str]]) -> None:
    """Print aligned 'name  value' rows."""
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        typer.echo(f"  {name.ljust(width)}  {value}")


# ---------------------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------------------


@app.command(context_settings=CONTEXT)
@handle_errors
def train(
    data: str = typer.Option(DEFAULT_DATA, help=f"Data set: {described(tuple(registry.DATA_SPECS.values()))} ('digits' is embedded; idx:DIR holds MNIST-style IDX files)."),
    latent_dim: int = typer.Option(DEFAULT_LATENT_DIM, "--latent-dim", help="Latent dimension d (2 lets the geometry be drawn)."),
    epochs: int | None = typer.Option(None, help="Epochs of stage 1 (encoder and mean); default from the model config."),
    rbf_epochs: int | None = typer.Option(None, "--rbf-epochs", help="Epochs of stage 2 (RBF precision network)."),
    seed: int = typer.Option(DEFAULT_SEED, help="Seed of every random step (same seed, same weights)."),
    architecture: str = choice_option(registry.DEFAULT_ARCHITECTURE, registry.ARCHITECTURES, "--architecture", help=f"Encoder and mean decoder: {described(registry.ARCHITECTURES)}; conv suits idx:DIR, digits, npz with image_shape."),
    rbf_gate: str | None = choice_option(None, registry.RBF_GATES, "--rbf-gate", help=f"RBF precision gate (default {registry.DEFAULT_RBF_GATE!r}): {described(registry.RBF_GATES)}; see docs/geometry.md."),
    gate_scale: float | None = typer.Option(None, "--gate-scale", help="Gate radius in nearest-neighbour spacings of the training codes (with --rbf-gate codes)."),
    shell_quantile: float | None = typer.Option(None, "--shell-quantile", help="Quantile of the Mahalanobis radii of the codes below which (and above 1 minus which) sigma rises (with --rbf-gate shell; default 0.02)."),
    shell_sharpness: float | None = typer.Option(None, "--shell-sharpness", help="Radius over logistic step width of the shell gate (with --rbf-gate shell; default 50)."),
    free_bits: float | None = typer.Option(None, "--free-bits", help="Nats per latent unit the KL term does not penalise in stage 1 (keeps units active at high d; default 0)."),
    device: str = _device_option(),
    out: Path = typer.Option(Path("lsg-out"), "--out", "--run", help=RUN_HELP),
    quiet: bool = _quiet_option(),
    threads: int | None = _threads_option(),
    as_json: bool = _json_option(),
) -> None:
    """Train the VAE with the RBF precision decoder (two stages) and save it into the run directory."""
    from lsg_graph.pipeline import train_run

    show = _setup(threads, quiet)
    summary = train_run(out, data, seed=seed, progress=show, device=device, latent_dim=latent_dim, epochs=epochs,
                        rbf_epochs=rbf_epochs, architecture=architecture, rbf_gate=rbf_gate, gate_scale=gate_scale,
                        shell_quantile=shell_quantile, shell_sharpness=shell_sharpness, free_bits=free_bits)
    report = summary.report
    payload = {
        "data": summary.data, "n_train": summary.n_train, "n_held_out": summary.n_held_out,
        "stage1_loss": _first_last(report.stage1_losses), "stage2_loss": _first_last(report.stage2_losses),
        "held_out_elbo": report.held_out_elbo, "seconds": report.seconds, "model": summary.model_path,
        "removed_graph": summary.removed_graph,
    }

    def human() -> None:
        typer.echo(f"Trained on {summary.data}: {summary.n_train} train / {summary.n_held_out} held-out samples.")
        _echo_table(_train_rows(report) + [("saved", str(summary.model_path))])
        if summary.removed_graph:
            typer.echo(f"Removed the graph of the previous model; rebuild it with 'lsg-graph build --run {out}'.")

    _emit(as_json, payload, human)


def _first_last(values: Any) -> list[float]:
    """[first, last] of a loss history ([] when the stage ran no epochs)."""
    values = list(values)
    return [values[0], values[-1]] if values else []


def _train_rows(report: Any) -> list[tuple[str, str]]:
    """Summary rows of a TrainReport."""
    def losses(values: Any) -> str:
        values = list(values)
        return f"{values[0]:.2f} -> {values[-1]:.2f} nats/sample" if values else "not run (0 epochs)"

    return [
        ("stage 1 loss (first -> last)", losses(report.stage1_losses)),
        ("stage 2 loss (first -> last)", losses(report.stage2_losses)),
        ("held-out ELBO (rbf)", "not measured" if report.held_out_elbo is None else f"{report.held_out_elbo:.2f} nats/sample"),
        ("time", f"{report.seconds:.1f} s"),
    ]


@app.command(context_settings=CONTEXT)
@handle_errors
def evaluate(
    run: Path = typer.Option(Path("lsg-out"), help=RUN_HELP),
    samples: int = typer.Option(DEFAULT_IWAE_SAMPLES, help="Importance samples per point for the IWAE log-likelihood bound."),
    seed: int = typer.Option(DEFAULT_SEED, help="Seed of the sampling."),
    device: str = _device_option(),
    pairs: int = typer.Option(DEFAULT_HEALTH_PAIRS, help="Code pairs refined for the geometry health check (0: skip it)."),
    quiet: bool = _quiet_option(),
    threads: int | None = _threads_option(),
    as_json: bool = _json_option(),
) -> None:
    """Print the paper's claims for the run's model (sigma far from the data, held-out log-likelihood) and a geometry
    health check: sigma off the data against on the codes, and graph distances against refined geodesics."""
    import dataclasses

    from cli.tables import paper_claims_table
    from lsg_graph.pipeline import evaluate_run, health_run

    show = _setup(threads, quiet)
    claims = evaluate_run(run, n_samples=samples, seed=seed, device=device, progress=show)
    health = health_run(run, n_pairs=pairs, seed=seed, device=device, progress=show) if pairs > 0 else None
    payload = {
        **dataclasses.asdict(claims), "claim_holds": claims.claim_holds,
        "geometry": None if health is None else {**dataclasses.asdict(health), "summary": health.summary()},
    }

    def human() -> None:
        typer.echo(paper_claims_table(claims))
        if health is not None:
            typer.echo(f"Geometry: {health.summary()}.")

    _emit(as_json, payload, human)
    if health is not None and not as_json:  # with --json the problems are in the payload (geometry.problems)
        for problem in health.problems:
            typer.echo(f"Warning: geometry not trustworthy: {problem}.", err=True)


@app.command(context_settings=CONTEXT)
@handle_errors
def build(
    run: Path = typer.Option(Path("lsg-out"), help=RUN_HELP),
    data: str | None = typer.Option(None, help="Data to encode (default: what the model was trained on)."),
    k: int = typer.Option(DEFAULT_K, "--k", help="Neighbours per code in the graph (the default: <= 2% median distance error on the analytic surfaces, docs/results.md)."),
    nodes: int = typer.Option(DEFAULT_N_NODES, help="Gauss-Legendre nodes per edge for the metric length."),
    backend: str = choice_option(DEFAULT_BACKEND, registry.KNN_BACKENDS, "--backend", help=f"kNN backend: {described(registry.KNN_BACKENDS)}."),
    device: str = _device_option(),
    candidates: int = typer.Option(DEFAULT_CANDIDATES, help="Metric-aware neighbours: measure candidates*k Euclidean neighbours, keep the k shortest."),
    seed: int = typer.Option(DEFAULT_SEED, help="Seed used if a model must be trained first."),
    decoder: str | None = typer.Option(None, "--decoder", help=DECODER_HELP),
    codes: Path | None = typer.Option(None, "--codes", help=CODES_HELP),
    labels: Path | None = typer.Option(None, "--labels", help=LABELS_HELP),
    train_if_missing: bool | None = typer.Option(None, "--train-if-missing/--no-train", help=TRAIN_HELP, show_default=False),
    cluster: str | None = typer.Option(None, "--cluster", help="Measure edges on Ray: 'auto' (the running cluster, else a local one), 'local' or 'ray://HOST:PORT'; needs the 'ray' extra."),
    workers: int | None = typer.Option(None, "--workers", help="Ray actors with --cluster (default: one per CPU)."),
    quiet: bool = _quiet_option(),
    threads: int | None = _threads_option(),
    as_json: bool = _json_option(),
) -> None:
    """Build the latent graph (training the default model first if the run has none) and save it."""
    from lsg_graph.pipeline import build_run

    show = _setup(threads, quiet)
    if cluster is not None and decoder is not None:
        from lsg_graph.errors import InvalidInput

        raise InvalidInput("--cluster ships the run's own model to the Ray workers; it cannot be used with --decoder.")
    user = _user(decoder, codes, labels)
    executor = _ray_executor(cluster, workers, run)
    try:
        summary = build_run(run, data, k=k, n_nodes=nodes, backend=backend, device=device, candidates=candidates,
                            seed=seed, progress=show, user=user, train_if_missing=train_if_missing, executor=executor)
    finally:
        if executor is not None:
            executor.shutdown_workers()
    payload = {
        "n_points": summary.n_points, "latent_dim": summary.latent_dim, "n_edges": summary.n_edges,
        "n_components_before_bridging": summary.n_components_before_bridging, "n_bridges": summary.n_bridges,
        "timings": summary.timings, "trained": None if summary.trained is None else summary.trained.data,
        "decoder": decoder, "cluster": cluster, "graph": summary.graph_path,
    }

    def human() -> None:
        if summary.trained is not None:
            typer.echo(f"Trained a model on {summary.trained.data} (no model was in {run}).")
        source = f" from your decoder {decoder}" if decoder else ""
        typer.echo(f"Latent graph of {summary.n_points} codes (d = {summary.latent_dim}){source}:")
        rows = [
            ("edges", f"{summary.n_edges}"),
            ("components", f"{summary.n_components_before_bridging} before bridging, {summary.n_bridges} bridge(s) added"),
        ]
        rows += [(f"time {name.removesuffix('_s')}", f"{seconds:.2f} s") for name, seconds in summary.timings.items()]
        rows.append(("saved", str(summary.graph_path)))
        _echo_table(rows)

    _emit(as_json, payload, human)


@app.command(context_settings=CONTEXT)
@handle_errors
def geodesic(
    source: str = typer.Option(..., "--from", help="Start: a node index (e.g. 12) or latent coordinates (e.g. 0.5,-1.2)."),
    target: str = typer.Option(..., "--to", help="End: a node index or latent coordinates."),
    refine: str = choice_option(DEFAULT_REFINE, registry.REFINE_METHODS, "--refine", help=f"Refinement of the graph path: {REFINE_CHOICES}."),
    max_iter: int | None = typer.Option(None, "--max-iter", help="Newton iterations per shooting attempt (default of the library)."),
    steps: int | None = typer.Option(None, "--steps", help="Integrator steps over the whole curve (default of the library)."),
    segments: int | None = typer.Option(None, "--segments", help="Shooting segments (multiple shooting; default of the library)."),
    ridge: float | None = typer.Option(None, "--ridge", help="Relative ridge added to M where it is near singular (default of the library)."),
    energy_iter: int | None = typer.Option(None, "--energy-iter", help="L-BFGS iterations of the energy method and fallback (default of the library)."),
    tol: float | None = typer.Option(None, "--tol", help="Relative tolerance of shooting and of the energy method (default of the library)."),
    gn_iter: int | None = typer.Option(None, "--gn-iter", help="Gauss-Newton steps per level (default of the library)."),
    gn_tol: float | None = typer.Option(None, "--gn-tol", help="Gauss-Newton relative decrement tolerance (default of the library)."),
    gn_segments: int | None = typer.Option(None, "--gn-segments", help="Segments of the first Gauss-Newton level (default of the library)."),
    gn_max_segments: int | None = typer.Option(None, "--gn-max-segments", help="Most segments of the Gauss-Newton levels (default of the library)."),
    out: Path | None = typer.Option(None, help="Write the curve's latent points to this .csv or .npy file."),
    points: int | None = typer.Option(
        None, "--points", help="Rows of the --out curve: N points at equal steps of the curve's parameter, sampled from "
        "the solver's own curve (default: the solver's points)."),
    strip: Path | None = typer.Option(
        None, "--strip", help="Write decoded images along the geodesic above those along the straight segment to this "
        ".png/.svg/.pdf (image data)."),
    run: Path = typer.Option(Path("lsg-out"), help=RUN_HELP),
    device: str = _device_option(),
    decoder: str | None = typer.Option(None, "--decoder", help=DECODER_HELP),
    codes: Path | None = typer.Option(None, "--codes", help=CODES_HELP),
    labels: Path | None = typer.Option(None, "--labels", help=LABELS_HELP),
    quiet: bool = _quiet_option(),
    threads: int | None = _threads_option(),
    as_json: bool = _json_option(),
) -> None:
    """Print the graph distance, the refined geodesic length, the Euclidean distance and the node path."""
    from lsg_graph.pipeline import geodesic_run, parse_point

    show = _setup(threads, quiet)
    user = _user(decoder, codes, labels)
    options = _refine_options(
        max_iter=max_iter, n_steps=steps, n_segments=segments, ridge=ridge, energy_iter=energy_iter, tol=tol,
        gn_iter=gn_iter, gn_tol=gn_tol, gn_segments=gn_segments, gn_max_segments=gn_max_segments,
    )
    summary = geodesic_run(run, parse_point(source), parse_point(target), refine=refine, out=out, device=device,
                           user=user, progress=show, refine_options=options, points=points, strip=strip)
    path, refined = summary.path, summary.refined
    payload: dict[str, Any] = {
        "source": path.source, "target": path.target, "graph_length": path.length,
        "euclidean_distance": path.euclidean_distance, "nodes": path.nodes, "refined": None, "saved": summary.saved,
        "lower_bound": summary.lower_bound, "strip": summary.strip,
    }
    if refined is not None:
        payload["refined"] = {
            "length": refined.length, "improvement": refined.improvement, "converged": refined.converged,
            "method": refined.method, "n_iter": refined.n_iter, "message": refined.message,
        }

    def human() -> None:
        rows = [("graph length", f"{path.length:.6g}")]
        if refined is not None:
            rows += [
                ("refined length", f"{refined.length:.6g} ({100 * refined.improvement:.2f}% shorter)"),
                ("converged", f"{refined.converged} (method {refined.method}, {refined.n_iter} iterations)"),
            ]
            if refined.message:
                rows.append(("note", _cli_names(refined.message, command_flags(geodesic))))
        if summary.lower_bound is not None:
            rows.append(("lower bound", f"{summary.lower_bound:.6g} (output-space chord: no curve is shorter)"))
        rows += [
            ("euclidean distance", f"{path.euclidean_distance:.6g} (latent units)"),
            ("path", f"{path.n_edges} edges: " + " -> ".join(map(str, path.nodes.tolist()))),
        ]
        if summary.saved is not None:
            rows.append(("saved", str(summary.saved)))
        if summary.strip is not None:
            rows.append(("strip", str(summary.strip)))
        _echo_table(rows)

    _emit(as_json, payload, human)


@app.command(context_settings=CONTEXT)
@handle_errors
def cluster(
    clusters: int = typer.Option(DEFAULT_N_CLUSTERS, "--clusters", "--n-clusters", help="Number of clusters."),
    old_k: int | None = typer.Option(None, "--k", hidden=True, help="Former name of --clusters (deprecated)."),
    run: Path = typer.Option(Path("lsg-out"), help=RUN_HELP + " Built first if it has no graph."),
    seed: int = typer.Option(DEFAULT_SEED, help="Seed of the k-means++ initialisation."),
    n_init: int = typer.Option(1, "--n-init", help="Initialisations of geodesic k-means and of the Euclidean k-means beside it (the best inertia is kept)."),
    algorithm: str = choice_option(DEFAULT_CLUSTER_ALGORITHM, registry.CLUSTER_ALGORITHMS, "--algorithm", help=f"Geodesic k-means algorithm: {described(registry.CLUSTER_ALGORITHMS)}."),
    no_figures: bool = typer.Option(False, "--no-figures", "--no-figure", help="Do not write clusters.png."),
    dpi: int = typer.Option(DEFAULT_DPI, help="Resolution of the figure (dots per inch)."),
    device: str = _device_option(),
    decoder: str | None = typer.Option(None, "--decoder", help=DECODER_HELP),
    codes: Path | None = typer.Option(None, "--codes", help=CODES_HELP),
    labels: Path | None = typer.Option(None, "--labels", help=LABELS_HELP),
    train_if_missing: bool | None = typer.Option(None, "--train-if-missing/--no-train", help=TRAIN_HELP, show_default=False),
    quiet: bool = _quiet_option(),
    threads: int | None = _threads_option(),
    as_json: bool = _json_option(),
) -> None:
    """Geodesic k-means of the run's codes next to Euclidean k-means; writes clusters.csv and clusters.png."""
    from lsg_graph.pipeline import cluster_run

    show = _setup(threads, quiet)
    user = _user(decoder, codes, labels)
    if old_k is not None:
        import warnings

        warnings.warn("'lsg-graph cluster --k' is deprecated: --k is the neighbours of 'build'; use --clusters.",
                      UserWarning, stacklevel=2)
        clusters = old_k
    summary = cluster_run(run, clusters, seed=seed, n_init=n_init, figure=not no_figures, device=device, progress=show,
                          user=user, train_if_missing=train_if_missing, dpi=dpi, algorithm=algorithm)
    result = summary.geodesic
    payload = {
        "n_clusters": summary.n_clusters, "n_codes": len(result.labels), "n_iter": result.n_iter,
        "seconds": result.seconds, "inertia": result.inertia,
        "scores": {"geodesic": result.scores, "euclidean": summary.euclidean_scores},
        "cluster_sizes": result.cluster_sizes, "labels": summary.labels_path, "figure": summary.figure_path,
    }

    def human() -> None:
        typer.echo(f"{summary.n_clusters} clusters of {len(result.labels)} codes "
                   f"({result.n_iter} iterations, {result.seconds:.2f} s):")
        if result.scores is not None:
            names = list(result.scores)
            typer.echo("  " + "method".ljust(12) + "".join(name.rjust(12) for name in names))
            for method, scores in (("geodesic", result.scores), ("euclidean", summary.euclidean_scores)):
                typer.echo("  " + method.ljust(12) + "".join(f"{scores[name]:12.3f}" for name in names))
        rows = [("cluster sizes", " ".join(map(str, result.cluster_sizes.tolist()))), ("labels", str(summary.labels_path))]
        if summary.figure_path is not None:
            rows.append(("figure", str(summary.figure_path)))
        _echo_table(rows)

    _emit(as_json, payload, human)


@app.command(context_settings=CONTEXT)
@handle_errors
def walk(
    start: str = typer.Option("0", help="Start: a node index (e.g. 12) or latent coordinates (e.g. 0.5,-1.2)."),
    steps: int = typer.Option(100, help="Steps per walker."),
    kind: str = choice_option(DEFAULT_WALK_KIND, registry.WALK_KINDS, "--kind", help=f"Kind of walk: {described(registry.WALK_KINDS)}."),
    step_size: float | None = typer.Option(None, "--step-size", help="Step size s (latent units squared); default: from the metric's scale at the start (the walk moves about 5 lengths of the graph edges there)."),
    walkers: int = typer.Option(8, help="Number of walkers."),
    seed: int = typer.Option(DEFAULT_SEED, help="Seed of the walk noise."),
    run: Path = typer.Option(Path("lsg-out"), help=RUN_HELP + " Built first if it has no graph."),
    no_figures: bool = typer.Option(False, "--no-figures", "--no-figure", help="Only write the trajectories."),
    dpi: int = typer.Option(DEFAULT_DPI, help="Resolution of the figures (dots per inch)."),
    device: str = _device_option(),
    decoder: str | None = typer.Option(None, "--decoder", help=DECODER_HELP),
    codes: Path | None = typer.Option(None, "--codes", help=CODES_HELP),
    labels: Path | None = typer.Option(None, "--labels", help=LABELS_HELP),
    train_if_missing: bool | None = typer.Option(None, "--train-if-missing/--no-train", help=TRAIN_HELP, show_default=False),
    quiet: bool = _quiet_option(),
    threads: int | None = _threads_option(),
    as_json: bool = _json_option(),
) -> None:
    """Random walks in the latent space; writes trajectories (.npy), the walks on the map and decoded images (PNG)."""
    from lsg_graph.pipeline import parse_point, walk_run

    show = _setup(threads, quiet)
    user = _user(decoder, codes, labels)
    summary = walk_run(run, parse_point(start), n_steps=steps, kind=kind, step_size=step_size, n_walkers=walkers,
                       seed=seed, figures=not no_figures, device=device, progress=show, user=user,
                       train_if_missing=train_if_missing, dpi=dpi)
    result = summary.result
    payload = {
        "start": start, "kind": result.kind, "n_walkers": result.n_walkers, "n_steps": result.n_steps,
        "step_size": result.step_size, "step_size_chosen": step_size is None,
        "mean_step_length": result.mean_step_length, "n_singular": result.n_singular,
        "trajectories": summary.trajectories_path, "map": summary.map_path, "strip": summary.strip_path,
    }

    def human() -> None:
        chosen = " (chosen from the metric at the start)" if step_size is None else ""
        typer.echo(f"{result.n_walkers} {result.kind} walkers x {result.n_steps} steps from {start}, "
                   f"step size {result.step_size:.3g}{chosen}:")
        rows = [
            ("mean latent step", f"{result.mean_step_length:.4g}"),
            ("held steps (singular M)", str(result.n_singular)),
            ("trajectories", str(summary.trajectories_path)),
        ]
        rows += [(name, str(path)) for name, path in (("map", summary.map_path), ("image strip", summary.strip_path)) if path]
        _echo_table(rows)

    _emit(as_json, payload, human)


@app.command(context_settings=CONTEXT)
@handle_errors
def plot(
    pairs: str = typer.Option("auto", "--pairs", help="'auto' (3 pairs where geodesic and straight line differ most), a count N (seeded random pairs), or pairs 'I:J,K:L' of node indices; with coordinates separate pairs by ';' ('0.1,0.2:5;3:40')."),
    n_auto: int = typer.Option(3, "--n-auto", help="Number of pairs for --pairs auto."),
    refine: str = choice_option(DEFAULT_REFINE, registry.REFINE_METHODS, "--refine", help=f"{REFINE_CHOICES} ('none': graph paths, drawn as such)."),
    max_iter: int | None = typer.Option(None, "--max-iter", help="Newton iterations per shooting attempt (default of the library)."),
    steps: int | None = typer.Option(None, "--steps", help="Integrator steps over the whole curve (default of the library)."),
    segments: int | None = typer.Option(None, "--segments", help="Shooting segments (multiple shooting; default of the library)."),
    ridge: float | None = typer.Option(None, "--ridge", help="Relative ridge added to M where it is near singular (default of the library)."),
    energy_iter: int | None = typer.Option(None, "--energy-iter", help="L-BFGS iterations of the energy method and fallback (default of the library)."),
    tol: float | None = typer.Option(None, "--tol", help="Relative tolerance of shooting and of the energy method (default of the library)."),
    gn_iter: int | None = typer.Option(None, "--gn-iter", help="Gauss-Newton steps per level (default of the library)."),
    gn_tol: float | None = typer.Option(None, "--gn-tol", help="Gauss-Newton relative decrement tolerance (default of the library)."),
    gn_segments: int | None = typer.Option(None, "--gn-segments", help="Segments of the first Gauss-Newton level (default of the library)."),
    gn_max_segments: int | None = typer.Option(None, "--gn-max-segments", help="Most segments of the Gauss-Newton levels (default of the library)."),
    seed: int = typer.Option(DEFAULT_SEED, help="Seed of the pair choice."),
    out: Path | None = typer.Option(None, help="Figure file (default RUN/magnification.FORMAT)."),
    fmt: str = choice_option(registry.FIGURE_FORMATS[0], registry.FIGURE_FORMATS, "--format", help="Figure format."),
    dpi: int = typer.Option(DEFAULT_DPI, help="Resolution (dots per inch)."),
    size: str = typer.Option("9x6", help="Figure size in inches, WIDTHxHEIGHT."),
    no_strips: bool = typer.Option(False, "--no-strips", help="For image data: do not write the decoded image strips."),
    run: Path = typer.Option(Path("lsg-out"), help=RUN_HELP + " Built first if it has no graph."),
    device: str = _device_option(),
    decoder: str | None = typer.Option(None, "--decoder", help=DECODER_HELP),
    codes: Path | None = typer.Option(None, "--codes", help=CODES_HELP),
    labels: Path | None = typer.Option(None, "--labels", help=LABELS_HELP),
    train_if_missing: bool | None = typer.Option(None, "--train-if-missing/--no-train", help=TRAIN_HELP, show_default=False),
    quiet: bool = _quiet_option(),
    threads: int | None = _threads_option(),
    as_json: bool = _json_option(),
) -> None:
    """Draw the magnification factor log sqrt(det M) with the codes, geodesics and straight lines."""
    from lsg_graph.pipeline import parse_pairs, parse_size, plot_run

    show = _setup(threads, quiet)
    user = _user(decoder, codes, labels)
    chosen = parse_pairs(pairs)
    options = _refine_options(
        max_iter=max_iter, n_steps=steps, n_segments=segments, ridge=ridge, energy_iter=energy_iter, tol=tol,
        gn_iter=gn_iter, gn_tol=gn_tol, gn_segments=gn_segments, gn_max_segments=gn_max_segments,
    )
    summary = plot_run(
        run, chosen if not isinstance(chosen, int) and chosen != "auto" else None,
        n_pairs=n_auto if chosen == "auto" else chosen, auto=chosen == "auto", refine=refine, seed=seed, out=out,
        device=device, progress=show, user=user, train_if_missing=train_if_missing, fmt=fmt, dpi=dpi,
        size=parse_size(size), strips=not no_strips, refine_options=options,
    )
    rows = []
    for index, pair in enumerate(summary.pairs.tolist()):
        result = summary.geodesics[index] if summary.geodesics else None
        rows.append({
            "source": pair[0], "target": pair[1], "graph_length": summary.graph_lengths[index],
            "straight_length": summary.straight_lengths[index],
            "geodesic_length": None if result is None else result.length,
            "method": "graph" if result is None else result.method,
        })
    payload = {"figure": summary.path, "strips": summary.strip_paths, "pairs": rows, "refine": refine}

    def human() -> None:
        for row in rows:
            detail = f"straight {row['straight_length']:.4g}, graph {row['graph_length']:.4g}"
            if row["geodesic_length"] is not None:
                detail += f", geodesic {row['geodesic_length']:.4g} ({row['method']})"
            typer.echo(f"  pair {row['source']} -> {row['target']}: {detail}")
        typer.echo(f"Wrote {summary.path}")
        for strip in summary.strip_paths:
            typer.echo(f"Wrote {strip}")

    _emit(as_json, payload, human)


def _ray_executor(cluster: str | None, workers: int | None, run: Path) -> Any:
    """The RayExecutor of `build --cluster` (None without --cluster); the model comes from the run directory."""
    if cluster is None:
        if workers is not None:
            from lsg_graph.errors import InvalidInput

            raise InvalidInput("--workers needs --cluster (auto, local or ray://HOST:PORT).")
        return None
    from lsg_graph.distributed import RayExecutor

    return RayExecutor(cluster, workers, run_dir=run)


@app.command(context_settings=CONTEXT)
@handle_errors
def serve(
    run: Path = typer.Option(Path("lsg-out"), help=RUN_HELP),
    host: str = typer.Option("127.0.0.1", help="Address to bind: loopback only by default; name another (e.g. 0.0.0.0) explicitly to serve beyond this machine."),
    port: int = typer.Option(8000, help="TCP port."),
    device: str = _device_option("cpu"),
    max_pairs: int = typer.Option(4096, "--max-pairs", help="Most node pairs per /distance request."),
    threads: int | None = _threads_option(),
) -> None:
    """Serve the run's graph over HTTP (/health, /distance, /geodesic, /nearest); needs the 'serve' extra."""
    try:
        from lsg_graph.serve import ServiceLimits, server_config
    except ImportError as exc:
        from lsg_graph.errors import LsgGraphError

        raise LsgGraphError(str(exc)) from None
    import uvicorn

    from lsg_graph._validation import check_positive_int

    _setup(threads, quiet=True)
    limits = ServiceLimits(max_pairs=check_positive_int(max_pairs, "max_pairs"))
    config = server_config(run, host=host, port=port, device=device, limits=limits)
    typer.echo(f"Serving {run} on http://{host}:{port} (Ctrl-C stops)")
    uvicorn.Server(config).run()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="lsg-graph")


if __name__ == "__main__":
    sys.exit(main())
