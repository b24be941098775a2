"""The lsg-graph command-line app: thin commands, one library call each; library errors become one line and exit 1."""

from __future__ import annotations

import functools
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

app = typer.Typer(
    name="lsg-graph",
    help="Latent-space geometry of deep generative models: train a VAE, build its latent graph, measure geodesics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])
# library parameter -> the option the user typed, for error messages ("The 'n_clusters' parameter" -> "'--k'")
OPTION_NAMES = {
    "n_clusters": "--k", "k": "--k", "n_init": "--n-init", "n_nodes": "--nodes", "candidates": "--candidates",
    "n_samples": "--samples", "n_pairs": "--pairs", "walkers": "--walkers", "n_walkers": "--walkers",
    "n_steps": "--steps", "step_size": "--step-size", "latent_dim": "--latent-dim", "epochs": "--epochs",
    "rbf_epochs": "--rbf-epochs", "seed": "--seed", "start": "--start",
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
RUN_HELP = "Run directory holding the model, graph and manifest."


def handle_errors(command: F) -> F:
    """Turn LsgGraphError into 'Error: message' on stderr and exit code 1 (no traceback)."""

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
                typer.echo(f"Warning: {warning.message}", err=True)
        return result

    return wrapper  # type: ignore[return-value]


def _echo_table(rows: list[tuple[str, str]]) -> None:
    """Print aligned 'name  value' rows."""
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        typer.echo(f"  {name.ljust(width)}  {value}")


@app.command()
@handle_errors
def train(
    data: str = typer.Option("digits", help="Data set: 'digits' (embedded), 'idx:DIR' (MNIST-style IDX files), 'npz:FILE', 'npy:FILE' or 'csv:FILE[?label=last|first|none|COL][&scale=255]'."),
    latent_dim: int = typer.Option(2, "--latent-dim", help="Latent dimension d (2 lets the geometry be drawn)."),
    epochs: int | None = typer.Option(None, help="Epochs of stage 1 (encoder and mean); default from the model config."),
    rbf_epochs: int | None = typer.Option(None, "--rbf-epochs", help="Epochs of stage 2 (RBF precision network)."),
    seed: int = typer.Option(0, help="Seed of every random step (same seed, same weights)."),
    architecture: str = typer.Option("mlp", help="Encoder and mean decoder: 'mlp', or 'conv' for image data (idx:DIR, digits, npz with image_shape; H and W divisible by 4)."),
    rbf_gate: str | None = typer.Option(None, "--rbf-gate", help="RBF precision gate: 'none' (the paper's network) or 'codes' (sigma rises away from every training code, at any latent dimension; see docs/geometry.md)."),
    gate_scale: float | None = typer.Option(None, "--gate-scale", help="Gate radius in nearest-neighbour spacings of the training codes (with --rbf-gate codes)."),
    device: str = typer.Option("auto", help="'auto', 'cpu' or 'cuda' (where the model trains)."),
    out: Path = typer.Option(Path("lsg-out"), "--out", "--run", help=RUN_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train the VAE with the RBF precision decoder (two stages) and save it into the run directory."""
    from lsg_graph.pipeline import train_run

    summary = train_run(out, data, seed=seed, progress=not quiet, device=device, latent_dim=latent_dim, epochs=epochs,
                        rbf_epochs=rbf_epochs, architecture=architecture, rbf_gate=rbf_gate, gate_scale=gate_scale)
    report = summary.report
    typer.echo(f"Trained on {summary.data}: {summary.n_train} train / {summary.n_held_out} held-out samples.")
    _echo_table(_train_rows(report) + [("saved", str(summary.model_path))])
    if summary.removed_graph:
        typer.echo(f"Removed the graph of the previous model; rebuild it with 'lsg-graph build --run {out}'.")


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


@app.command()
@handle_errors
def evaluate(
    run: Path = typer.Option(Path("lsg-out"), help=RUN_HELP),
    samples: int = typer.Option(256, help="Importance samples per point for the IWAE log-likelihood bound."),
    seed: int = typer.Option(0, help="Seed of the sampling."),
    device: str = typer.Option("auto", help="'auto', 'cpu' or 'cuda'."),
    pairs: int = typer.Option(8, help="Code pairs refined for the geometry health check (0: skip it)."),
) -> None:
    """Print the paper's claims for the run's model (sigma far from the data, held-out log-likelihood) and a geometry
    health check: sigma off the data against on the codes, and graph distances against refined geodesics."""
    from lsg_graph.pipeline import evaluate_run, health_run

    typer.echo(evaluate_run(run, n_samples=samples, seed=seed, device=device).to_table())
    if pairs > 0:
        health = health_run(run, n_pairs=pairs, seed=seed, device=device)
        typer.echo(f"Geometry: {health.summary()}.")
        for problem in health.problems:
            typer.echo(f"Warning: geometry not trustworthy: {problem}.", err=True)


@app.command()
@handle_errors
def build(
    run: Path = typer.Option(Path("lsg-out"), help=RUN_HELP),
    data: str | None = typer.Option(None, help="Data to encode (default: what the model was trained on)."),
    k: int = typer.Option(20, "--k", help="Neighbours per code (20: <= 2% median distance error on the analytic surfaces, see benchmarks/)."),
    nodes: int = typer.Option(8, help="Gauss-Legendre nodes per edge for the metric length."),
    backend: str = typer.Option("auto", help="kNN backend: 'auto', 'faiss', 'torch' or 'kdtree' ('auto': kdtree for d <= 16 on CPU, faiss-gpu or torch on CUDA)."),
    device: str = typer.Option("auto", help="'auto', 'cpu' or 'cuda'."),
    candidates: int = typer.Option(1, help="Metric-aware neighbours: measure candidates*k Euclidean neighbours, keep the k shortest."),
    seed: int = typer.Option(0, help="Seed used if a model must be trained first."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Build the latent graph (training the default model first if the run has none) and save it."""
    from lsg_graph.pipeline import build_run

    summary = build_run(run, data, k=k, n_nodes=nodes, backend=backend, device=device, candidates=candidates, seed=seed, progress=not quiet)
    if summary.trained is not None:
        typer.echo(f"Trained a model on {summary.trained.data} (no model was in {run}).")
    typer.echo(f"Latent graph of {summary.n_points} codes (d = {summary.latent_dim}):")
    rows = [
        ("edges", f"{summary.n_edges}"),
        ("components", f"{summary.n_components_before_bridging} before bridging, {summary.n_bridges} bridge(s) added"),
    ]
    rows += [(f"time {name.removesuffix('_s')}", f"{seconds:.2f} s") for name, seconds in summary.timings.items()]
    rows.append(("saved", str(summary.graph_path)))
    _echo_table(rows)


@app.command()
@handle_errors
def geodesic(
    source: str = typer.Option(..., "--from", help="Start: a node index (e.g. 12) or latent coordinates (e.g. 0.5,-1.2)."),
    target: str = typer.Option(..., "--to", help="End: a node index or latent coordinates."),
    refine: str = typer.Option("shooting", help="Refinement of the graph path: 'shooting', 'multiple_shooting', 'energy' or 'none'."),
    out: Path | None = typer.Option(None, help="Write the curve's latent points to this .csv or .npy file."),
    run: Path = typer.Option(Path("lsg-out"), help=RUN_HELP),
    device: str = typer.Option("auto", help="'auto', 'cpu' or 'cuda'."),
) -> None:
    """Print the graph distance, the refined geodesic length, the Euclidean distance and the node path."""
    from lsg_graph.pipeline import geodesic_run, parse_point

    summary = geodesic_run(run, parse_point(source), parse_point(target), refine=refine, out=out, device=device)
    path, refined = summary.path, summary.refined
    rows = [("graph length", f"{path.length:.6g}")]
    if refined is not None:
        rows += [
            ("refined length", f"{refined.length:.6g} ({100 * refined.improvement:.2f}% shorter)"),
            ("converged", f"{refined.converged} (method {refined.method}, {refined.n_iter} iterations)"),
        ]
        if refined.message:
            rows.append(("note", refined.message))
    rows += [
        ("lower bound", f"{summary.lower_bound:.6g} (output-space chord: no curve is shorter)"),
        ("euclidean distance", f"{path.euclidean_distance:.6g} (latent units)"),
        ("path", f"{path.n_edges} edges: " + " -> ".join(map(str, path.nodes.tolist()))),
    ]
    if summary.saved is not None:
        rows.append(("saved", str(summary.saved)))
    _echo_table(rows)


@app.command()
@handle_errors
def cluster(
    k: int = typer.Option(10, "--k", help="Number of clusters."),
    run: Path = typer.Option(Path("lsg-out"), help=RUN_HELP + " Built first if it has no graph."),
    seed: int = typer.Option(0, help="Seed of the k-means++ initialisation."),
    n_init: int = typer.Option(1, "--n-init", help="Initialisations of geodesic k-means (the best inertia is kept)."),
    no_figure: bool = typer.Option(False, "--no-figure", help="Do not write clusters.png."),
    device: str = typer.Option("auto", help="'auto', 'cpu' or 'cuda'."),
) -> None:
    """Geodesic k-means of the run's codes next to Euclidean k-means; writes clusters.csv and clusters.png."""
    from lsg_graph.pipeline import cluster_run

    summary = cluster_run(run, k, seed=seed, n_init=n_init, figure=not no_figure, device=device)
    geodesic_result = summary.geodesic
    typer.echo(f"{summary.n_clusters} clusters of {len(geodesic_result.labels)} codes "
               f"({geodesic_result.n_iter} iterations, {geodesic_result.seconds:.2f} s):")
    if geodesic_result.scores is not None:
        names = list(geodesic_result.scores)
        typer.echo("  " + "method".ljust(12) + "".join(name.rjust(12) for name in names))
        for method, scores in (("geodesic", geodesic_result.scores), ("euclidean", summary.euclidean_scores)):
            typer.echo("  " + method.ljust(12) + "".join(f"{scores[name]:12.3f}" for name in names))
    rows = [("cluster sizes", " ".join(map(str, geodesic_result.cluster_sizes.tolist()))), ("labels", str(summary.labels_path))]
    if summary.figure_path is not None:
        rows.append(("figure", str(summary.figure_path)))
    _echo_table(rows)


@app.command()
@handle_errors
def walk(
    start: int = typer.Option(0, help="Index of the code the walkers start from."),
    steps: int = typer.Option(100, help="Steps per walker."),
    kind: str = typer.Option("metric", help="'metric' (covariance s M^-1), 'euclidean' (s I) or 'brownian' (metric + drift)."),
    step_size: float = typer.Option(1e-3, "--step-size", help="Step size s (latent units squared)."),
    walkers: int = typer.Option(8, help="Number of walkers."),
    seed: int = typer.Option(0, help="Seed of the walk noise."),
    run: Path = typer.Option(Path("lsg-out"), help=RUN_HELP + " Built first if it has no graph."),
    no_figures: bool = typer.Option(False, "--no-figures", help="Only write the trajectories."),
    device: str = typer.Option("auto", help="'auto', 'cpu' or 'cuda'."),
) -> None:
    """Random walks in the latent space; writes trajectories (.npy), the walks on the map and decoded images (PNG)."""
    from lsg_graph.pipeline import walk_run

    summary = walk_run(run, start, n_steps=steps, kind=kind, step_size=step_size, n_walkers=walkers, seed=seed,
                       figures=not no_figures, device=device)
    result = summary.result
    typer.echo(f"{result.n_walkers} {result.kind} walkers x {result.n_steps} steps from code {start}:")
    rows = [
        ("mean latent step", f"{result.mean_step_length:.4g}"),
        ("held steps (singular M)", str(result.n_singular)),
        ("trajectories", str(summary.trajectories_path)),
    ]
    rows += [(name, str(path)) for name, path in (("map", summary.map_path), ("image strip", summary.strip_path)) if path]
    _echo_table(rows)


@app.command()
@handle_errors
def plot(
    pairs: int = typer.Option(3, "--pairs", help="Number of seeded node pairs whose geodesics are drawn."),
    refine: str = typer.Option("shooting", help="'shooting', 'multiple_shooting', 'energy' or 'none' (graph paths)."),
    seed: int = typer.Option(0, help="Seed of the pair choice."),
    out: Path | None = typer.Option(None, help="PNG file (default RUN/magnification.png)."),
    run: Path = typer.Option(Path("lsg-out"), help=RUN_HELP + " Built first if it has no graph."),
    device: str = typer.Option("auto", help="'auto', 'cpu' or 'cuda'."),
) -> None:
    """Draw the magnification factor log sqrt(det M) with the codes, geodesics and straight lines as a PNG."""
    from lsg_graph.pipeline import plot_run

    summary = plot_run(run, n_pairs=pairs, refine=refine, seed=seed, out=out, device=device)
    for pair, result in zip(summary.pairs.tolist(), summary.geodesics or [None] * len(summary.pairs)):
        detail = "" if result is None else f": geodesic {result.length:.4g} vs graph {result.graph_length:.4g} ({result.method})"
        typer.echo(f"  pair {pair[0]} -> {pair[1]}{detail}")
    typer.echo(f"Wrote {summary.path}")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="lsg-graph")


if __name__ == "__main__":
    sys.exit(main())
