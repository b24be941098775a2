"""The lsg-graph command-line app: thin commands, one library call each; library errors become one line and exit 1."""

from __future__ import annotations

import functools
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
            typer.echo(f"Error: {exc}", err=True)
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
    data: str = typer.Option("digits", help="Data set: 'digits' (embedded), 'idx:DIR' (MNIST-style IDX files), 'npz:FILE' or 'npy:FILE'."),
    latent_dim: int = typer.Option(2, "--latent-dim", help="Latent dimension d (2 lets the geometry be drawn)."),
    epochs: int | None = typer.Option(None, help="Epochs of stage 1 (encoder and mean); default from the model config."),
    rbf_epochs: int | None = typer.Option(None, "--rbf-epochs", help="Epochs of stage 2 (RBF precision network)."),
    seed: int = typer.Option(0, help="Seed of every random step (same seed, same weights)."),
    out: Path = typer.Option(Path("lsg-out"), "--out", "--run", help=RUN_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train the VAE with the RBF precision decoder (two stages) and save it into the run directory."""
    from lsg_graph.pipeline import train_run

    summary = train_run(out, data, seed=seed, progress=not quiet, latent_dim=latent_dim, epochs=epochs, rbf_epochs=rbf_epochs)
    report = summary.report
    typer.echo(f"Trained on {summary.data}: {summary.n_train} train / {summary.n_held_out} held-out samples.")
    _echo_table(_train_rows(report) + [("saved", str(summary.model_path))])


def _train_rows(report: Any) -> list[tuple[str, str]]:
    """Summary rows of a TrainReport."""
    return [
        ("stage 1 loss (first -> last)", f"{report.stage1_losses[0]:.2f} -> {report.stage1_losses[-1]:.2f} nats/sample"),
        ("stage 2 loss (first -> last)", f"{report.stage2_losses[0]:.2f} -> {report.stage2_losses[-1]:.2f} nats/sample"),
        ("held-out ELBO (rbf)", f"{report.held_out_elbo:.2f} nats/sample"),
        ("time", f"{report.seconds:.1f} s"),
    ]


@app.command()
@handle_errors
def evaluate(
    run: Path = typer.Option(Path("lsg-out"), help=RUN_HELP),
    samples: int = typer.Option(256, help="Importance samples per point for the IWAE log-likelihood bound."),
    seed: int = typer.Option(0, help="Seed of the sampling."),
) -> None:
    """Print the paper's claims for the run's model: sigma far from the data, and held-out log-likelihood."""
    from lsg_graph.pipeline import evaluate_run

    typer.echo(evaluate_run(run, n_samples=samples, seed=seed).to_table())


@app.command()
@handle_errors
def build(
    run: Path = typer.Option(Path("lsg-out"), help=RUN_HELP),
    data: str | None = typer.Option(None, help="Data to encode (default: what the model was trained on)."),
    k: int = typer.Option(10, "--k", help="Neighbours per code."),
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
    run: Path = typer.Option(Path("lsg-out"), help=RUN_HELP),
    device: str = typer.Option("auto", help="'auto', 'cpu' or 'cuda' (used when coordinates must be attached)."),
) -> None:
    """Print the graph (metric) distance, the Euclidean distance and the node path between two points."""
    from lsg_graph.pipeline import graph_geodesic, parse_point

    path = graph_geodesic(run, parse_point(source), parse_point(target), device=device)
    _echo_table(
        [
            ("graph distance", f"{path.length:.6g}"),
            ("euclidean distance", f"{path.euclidean_distance:.6g} (latent units)"),
            ("path", f"{path.n_edges} edges: " + " -> ".join(map(str, path.nodes.tolist()))),
        ]
    )


def main() -> None:
    """Console-script entry point."""
    app(prog_name="lsg-graph")


if __name__ == "__main__":
    sys.exit(main())
