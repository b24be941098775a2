"""CLI conventions: --version, -h, --json on every command, progress bars only on a terminal, --threads, and
warnings that name the command's own flags."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import _cli_names, app
from lsg_graph import __version__

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
COMMANDS = ["train", "evaluate", "build", "geodesic", "cluster", "walk", "plot"]
MODULE = textwrap.dedent(
    """
    import torch

    class Bend(torch.nn.Module):
        def forward(self, z):
            return torch.cat([z, torch.sin(2.0 * z[:, :1]) * z[:, 1:]], dim=1)

    def load_decoder():
        return Bend()
    """
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user decoder module, 2-D codes with labels, and a small array data set for train/evaluate."""
    folder = tmp_path_factory.mktemp("conventions")
    (folder / "bend.py").write_text(MODULE)
    rng = np.random.default_rng(0)
    np.save(folder / "codes.npy", rng.uniform(-1, 1, size=(150, 2)))
    np.save(folder / "labels.npy", np.arange(150) % 3)
    np.savez(folder / "data.npz", x=rng.uniform(0, 1, (120, 16)).astype(np.float32), y=rng.integers(0, 3, 120))
    return folder


def invoke(folder: Path, args: list[str]) -> tuple[int, str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        result = runner.invoke(app, args)
    return result.exit_code, result.output


USER = ["--decoder", "bend:load_decoder", "--codes", "codes.npy", "--labels", "labels.npy", "--run", "run"]


def test_version_and_short_help() -> None:
    """`--version` prints the package version; `-h` is the same as `--help` on the app and every command."""
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"lsg-graph {__version__}"
    for command in [[], *([name] for name in COMMANDS)]:
        result = runner.invoke(app, [*command, "-h"])
        assert result.exit_code == 0 and "Usage" in result.output, command
        if command:
            assert "--json" in result.output and "--threads" in result.output and "--quiet" in result.output


@pytest.mark.parametrize("name", ["build", "geodesic", "cluster", "walk", "plot"])
def test_user_model_options_on_every_graph_command(name: str) -> None:
    result = runner.invoke(app, [name, "-h"])
    assert "--decoder" in result.output and "--codes" in result.output and "--labels" in result.output


def test_json_output_of_every_command(folder: Path) -> None:
    """Every command prints one JSON object with --json (parsed here), with the numbers of the table."""
    outputs = {}
    runs = {
        "train": ["train", "--data", "npz:data.npz", "--epochs", "2", "--rbf-epochs", "1", "--out", "trained"],
        "evaluate": ["evaluate", "--run", "trained", "--samples", "4", "--device", "cpu"],
        "build": ["build", *USER, "--k", "8"],
        "geodesic": ["geodesic", *USER, "--from", "0", "--to", "9", "--refine", "energy"],
        "cluster": ["cluster", *USER, "--clusters", "3", "--no-figures"],
        "walk": ["walk", *USER, "--steps", "5", "--walkers", "2", "--no-figures"],
        "plot": ["plot", *USER, "--pairs", "1", "--refine", "none", "--format", "svg", "--size", "6x4"],
    }
    for name, args in runs.items():
        code, output = invoke(folder, [*args, "--json", "--threads", "1"])
        assert code == 0, (name, output)
        outputs[name] = json.loads(output)
    assert outputs["train"]["n_train"] + outputs["train"]["n_held_out"] == 120
    assert outputs["evaluate"]["n_samples"] == 4 and isinstance(outputs["evaluate"]["claim_holds"], bool)
    geometry = outputs["evaluate"]["geometry"]  # the health check's numbers and problems, inside the one object
    assert geometry["n_pairs"] > 0 and isinstance(geometry["problems"], list) and geometry["summary"]
    assert outputs["build"]["n_points"] == 150 and outputs["build"]["latent_dim"] == 2
    geodesic = outputs["geodesic"]
    assert geodesic["refined"]["length"] <= geodesic["graph_length"] * (1 + 1e-9)
    assert geodesic["euclidean_distance"] > 0 and geodesic["nodes"][0] == 0 and geodesic["nodes"][-1] == 9
    assert set(outputs["cluster"]["scores"]["geodesic"]) == {"ari", "nmi", "f_measure"}
    assert outputs["walk"]["step_size_chosen"] is True and outputs["walk"]["step_size"] > 0
    assert outputs["plot"]["figure"].endswith("magnification.svg")
    assert (folder / outputs["plot"]["figure"]).read_text().lstrip().startswith("<?xml")


def _run_cli(args: list[str], cwd: Path, terminal: bool) -> str:
    """Run the CLI in a subprocess; stderr goes to a pseudo-terminal (terminal) or a pipe; return stderr's text."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="100")
    command = [sys.executable, "-m", "cli.main", *args]
    if not terminal:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a real terminal has a size
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 300)
        if not ready:
            break
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert process.wait(timeout=300) == 0
    return b"".join(chunks).decode(errors="replace")


def test_progress_on_a_terminal_and_none_when_piped(folder: Path) -> None:
    """On a pseudo-terminal the build shows the stage and a bar; piped, or with --quiet on a terminal, nothing."""
    args = ["build", *USER, "--k", "8", "--run", "progress-run"]
    shown = _run_cli(args, folder, terminal=True)
    assert "edge lengths" in shown and "%|" in shown and "\r" in shown, shown
    piped = _run_cli(args, folder, terminal=False)
    assert "edge lengths" not in piped and "\r" not in piped and "%|" not in piped, piped
    quiet = _run_cli([*args, "--quiet"], folder, terminal=True)
    assert "edge lengths" not in quiet and "%|" not in quiet, quiet
    stages = _run_cli(["geodesic", *USER, "--run", "progress-run", "--from", "0", "--to", "9"], folder, terminal=True)
    assert "refine geodesic (auto)" in stages and "done in" in stages, stages


def test_warnings_name_the_commands_flags(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Library parameter names in warnings become the running command's flags (or say where they live)."""
    import warnings

    import lsg_graph.pipeline as pipeline
    from cli.main import command_flags, geodesic, plot

    message = ("raise max_iter (now 20), n_segments (now 8) or n_steps (now 32); raise ridge (now 1e-08); "
               "energy_iter=500, tol=1e-08")
    for command in (geodesic, plot):
        translated = _cli_names(message, command_flags(command))
        for flag in ("--max-iter (now 20)", "--segments (now 8)", "--steps (now 32)", "--ridge (now 1e-08)",
                     "--energy-iter=500", "--tol=1e-08"):
            assert flag in translated, (command, translated)
    bridged = _cli_names("Raise 'k' (or 'candidates') for a graph that is connected by itself.", command_flags(plot))
    assert "--k (of lsg-graph build)" in bridged and "--candidates (of lsg-graph build)" in bridged

    real = pipeline.geodesic_run

    def warn(*args, **kwargs):  # the real command, plus the warning a failed refinement gives
        warnings.warn(message, UserWarning, stacklevel=2)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "geodesic_run", warn)
    code, output = invoke(folder, ["geodesic", *USER, "--from", "0", "--to", "1", "--refine", "none"])
    assert code == 0 and "Warning: raise --max-iter (now 20), --segments (now 8)" in output, output
    assert "max_iter" not in output and "n_steps" not in output


def test_mistyped_run_is_refused_not_trained(tmp_path: Path) -> None:
    """A --run that does not exist is refused (no digits model is trained there) unless --train-if-missing."""
    for name in (["build"], ["cluster"], ["walk"], ["plot"]):
        result = runner.invoke(app, [*name, "--run", str(tmp_path / "lsg-ot")])
        assert result.exit_code == 1 and "does not exist" in result.output and "--train-if-missing" in result.output
        assert not (tmp_path / "lsg-ot").exists()


def test_cluster_with_own_decoder_is_refused(tmp_path: Path) -> None:
    """build --cluster ships the run's model to Ray workers: with --decoder it is refused before anything is loaded."""
    result = runner.invoke(app, ["build", "--run", str(tmp_path / "run"), "--decoder", "no_such_module:factory",
                                 "--codes", str(tmp_path / "codes.npy"), "--cluster", "local"])
    assert result.exit_code == 1 and "--cluster" in result.output and "--decoder" in result.output
    assert "no_such_module" not in result.output and not (tmp_path / "run").exists()


def test_no_figure_alias_and_consistent_flag() -> None:
    """`--no-figures` on cluster and walk (`--no-figure` still accepted)."""
    for name in ("cluster", "walk"):
        assert "--no-figures" in runner.invoke(app, [name, "-h"]).output
