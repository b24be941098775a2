"""The command-line app: commands run end to end, help is useful, library errors are one line and exit code 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def built_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory made by `lsg-graph build` with no options (in a fresh working directory)."""
    work = tmp_path_factory.mktemp("work")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        result = runner.invoke(app, ["build", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Trained a model on digits" in result.output
    assert "Latent graph of 1797 codes" in result.output
    return work / "lsg-out"


def test_build_with_no_arguments_writes_model_graph_and_manifest(built_run: Path) -> None:
    """`lsg-graph build` trains the default model and saves model, graph and manifest."""
    for name in ("model.safetensors", "model.json", "graph.npz", "manifest.json"):
        assert (built_run / name).is_file(), name


def test_geodesic_between_indices(built_run: Path) -> None:
    """`lsg-graph geodesic --from I --to J` prints graph distance, Euclidean distance and the path."""
    result = runner.invoke(app, ["geodesic", "--run", str(built_run), "--from", "0", "--to", "100"])
    assert result.exit_code == 0, result.output
    assert "graph length" in result.output and "refined length" in result.output and "euclidean distance" in result.output
    assert "0 -> " in result.output and result.output.strip().endswith("100")
    lower = float(result.output.split("lower bound")[1].split()[0])
    refined = float(result.output.split("refined length")[1].split()[0])
    assert 0 < lower <= refined


def test_evaluate_prints_the_geometry_health(built_run: Path) -> None:
    """`evaluate` ends with the sigma off/on ratio and the graph's stretch on refined pairs."""
    result = runner.invoke(app, ["evaluate", "--run", str(built_run), "--samples", "4", "--pairs", "2"])
    assert result.exit_code == 0, result.output
    assert "Geometry: sigma off/on the data" in result.output and "of refined geodesics on 2 pairs" in result.output


def test_geodesic_from_coordinates(built_run: Path) -> None:
    """Coordinates are attached to the graph and a path is found."""
    result = runner.invoke(app, ["geodesic", "--run", str(built_run), "--from", "0.1,0.2", "--to", "5"])
    assert result.exit_code == 0, result.output
    assert "path" in result.output


def test_rebuild_with_options_uses_existing_model(built_run: Path) -> None:
    """A second build with other options reuses the trained model."""
    result = runner.invoke(app, ["build", "--run", str(built_run), "--k", "6", "--backend", "torch", "--candidates", "2", "-q"])
    assert result.exit_code == 0, result.output
    assert "Trained a model" not in result.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["geodesic", "--from", "0", "--to", "99999"], "out of range"),
        (["geodesic", "--from", "0", "--to", "a,b"], "Coordinates must be comma-separated decimal numbers"),
        (["geodesic", "--from", "0.5,1,2", "--to", "0.1,0.2"], "coordinates have dimension 3 but the decoder expects latent dimension 2"),
        (["build", "--k", "0"], "'--k' option must be an int >= 1; got 0"),
        (["build", "--backend", "annoy"], "Unknown kNN backend 'annoy'"),
        (["build", "--device", "tpu"], "device"),
        (["geodesic", "--from", "0", "--to", "1", "--refine", "magic"], "Unknown refinement method 'magic'"),
        (["geodesic", "--from", "0", "--to", "1", "--out", "curve.txt"], "must end in .npy or .csv"),
        (["geodesic", "--from", "0", "--to", "1", "--gn-iter", "0"], "'--gn-iter' option must be an int >= 1; got 0"),
        (["plot", "--gn-tol", "-1", "--no-strips"], "'--gn-tol' option must be > 0.0; got -1.0"),
        (["cluster", "--clusters", "0"], "'--clusters' option must be an int >= 1; got 0"),
        (["cluster", "--clusters", "5000"], "'--clusters' option must be an int <= 1797; got 5000"),
        (["walk", "--kind", "levy"], "Unknown walk kind 'levy'; expected one of: 'euclidean', 'metric', 'brownian'"),
        (["walk", "--steps", "0"], "'--steps' option"),
        (["walk", "--step-size", "0"], "'--step-size' option"),
        (["walk", "--start", "1797"], "out of range"),
        (["plot", "--pairs", "0"], "'--pairs' option must be an int >= 1; got 0"),
    ],
)
def test_errors_are_one_line_with_exit_code_1(built_run: Path, args: list[str], message: str) -> None:
    """Library errors reach the user as 'Error: ...' and exit code 1, never a traceback."""
    result = runner.invoke(app, [*args, "--run", str(built_run)])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--data", "mnist"], "Unknown dataset 'mnist'"),
        (["train", "--data", "idx:/no/such/folder"], "/no/such/folder"),
        (["train", "--latent-dim", "0"], "'--latent-dim' option must be an int >= 1; got 0"),
        (["train", "--epochs", "0"], "'--epochs' option must be an int >= 1; got 0"),
        (["train", "--rbf-gate", "shell", "--shell-quantile", "0.7"], "shell_quantile must be in (0, 0.5); got 0.7"),
    ],
)
def test_train_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    """Bad training input is refused with a message naming the value."""
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert message in result.output


def test_train_on_user_arrays(tmp_path: Path) -> None:
    """`lsg-graph train --data npz:FILE` trains on user arrays and reports the held-out ELBO and where it saved."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.uniform(0, 1, (200, 10)).astype(np.float32), y=rng.integers(0, 3, 200))
    result = runner.invoke(
        app, ["train", "--data", f"npz:{tmp_path / 'data.npz'}", "--epochs", "3", "--rbf-epochs", "1", "--out", str(tmp_path / "run"), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "held-out ELBO" in result.output and str(tmp_path / "run") in result.output


def test_train_with_the_shell_gate(tmp_path: Path) -> None:
    """`train --rbf-gate shell --shell-quantile 0.05 --free-bits 0.3` saves a shell-gated model trained with free
    bits whose gate bounds hold the codes."""
    from lsg_graph.model import VAE

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.uniform(0, 1, (200, 10)).astype(np.float32), y=rng.integers(0, 3, 200))
    result = runner.invoke(app, ["train", "--data", f"npz:{tmp_path / 'data.npz'}", "--epochs", "2", "--rbf-epochs", "1",
                                 "--latent-dim", "3", "--rbf-gate", "shell", "--shell-quantile", "0.05", "--free-bits", "0.3",
                                 "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 0, result.output
    vae = VAE.load(tmp_path / "run")
    assert vae.config.rbf_gate == "shell" and vae.config.shell_quantile == 0.05 and vae.config.free_bits == 0.3
    low, high = vae.rbf_std.shell_bounds.tolist()
    assert 0.0 < low < high


def test_missing_graph_is_explained(tmp_path: Path) -> None:
    """`geodesic` on a run without a graph says to build it first."""
    result = runner.invoke(app, ["geodesic", "--run", str(tmp_path), "--from", "0", "--to", "1"])
    assert result.exit_code == 1
    assert "lsg-graph build" in result.output


@pytest.mark.parametrize("command", [[], ["train"], ["build"], ["geodesic"], ["evaluate"], ["cluster"], ["walk"], ["plot"]])
def test_help_is_available(command: list[str]) -> None:
    """`--help` works for the app and every command."""
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.parametrize("refine", ["shooting", "energy", "none"])
def test_geodesic_refined_and_written(built_run: Path, tmp_path: Path, refine: str) -> None:
    """`--refine` reports graph and refined lengths; `--out` writes the curve as .npy or .csv."""
    out = tmp_path / ("curve.npy" if refine == "shooting" else "curve.csv")
    result = runner.invoke(app, ["geodesic", "--run", str(built_run), "--from", "3", "--to", "40", "--refine", refine, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert ("refined length" in result.output) == (refine != "none")
    curve = np.load(out) if out.suffix == ".npy" else np.loadtxt(out, delimiter=",", skiprows=1)
    assert curve.ndim == 2 and curve.shape[1] == 2 and len(curve) >= 2


def test_cluster_writes_labels_and_figure(built_run: Path) -> None:
    """`lsg-graph cluster --clusters 10` prints geodesic and Euclidean scores and writes clusters.csv and clusters.png."""
    result = runner.invoke(app, ["cluster", "--run", str(built_run), "--clusters", "10"])
    assert result.exit_code == 0, result.output
    assert "geodesic" in result.output and "euclidean" in result.output and "ari" in result.output
    table = np.loadtxt(built_run / "clusters.csv", delimiter=",", skiprows=1, dtype=int)
    assert table.shape == (1797, 4) and set(table[:, 1]) == set(range(10))
    assert (built_run / "clusters.png").stat().st_size > 10_000


def test_cluster_compares_with_euclidean_kmeans_at_the_same_n_init(built_run: Path, tmp_path: Path) -> None:
    """The Euclidean column of clusters.csv is scikit-learn KMeans with the --n-init and --seed of the geodesic one."""
    import shutil

    from sklearn.cluster import KMeans

    from lsg_graph.graph.latent_graph import LatentGraph

    run = Path(shutil.copytree(built_run, tmp_path / "run"))
    result = runner.invoke(app, ["cluster", "--run", str(run), "--clusters", "4", "--n-init", "2", "--seed", "3", "--no-figures"])
    assert result.exit_code == 0, result.output
    euclidean = np.loadtxt(run / "clusters.csv", delimiter=",", skiprows=1, dtype=int)[:, 2]
    want = KMeans(4, n_init=2, random_state=3).fit(LatentGraph.load(run).codes).labels_
    np.testing.assert_array_equal(euclidean, want)


def test_cluster_algorithm_embedding_and_bad_name(built_run: Path, tmp_path: Path) -> None:
    """`--algorithm embedding` clusters in the geodesic embedding (the same labels as the library call); an unknown
    name is refused naming the choices, and nothing is written."""
    import shutil

    from lsg_graph.cluster import GeodesicKMeans
    from lsg_graph.graph.latent_graph import LatentGraph

    run = Path(shutil.copytree(built_run, tmp_path / "run"))
    result = runner.invoke(app, ["cluster", "--run", str(run), "--clusters", "4", "--algorithm", "embedding", "--no-figures"])
    assert result.exit_code == 0, result.output
    geodesic = np.loadtxt(run / "clusters.csv", delimiter=",", skiprows=1, dtype=int)[:, 1]
    graph = LatentGraph.load(run)
    want = GeodesicKMeans(4, algorithm="embedding", graph=graph, random_state=0).fit(graph.codes).labels_
    np.testing.assert_array_equal(geodesic, want)
    (run / "clusters.csv").unlink()
    result = runner.invoke(app, ["cluster", "--run", str(run), "--algorithm", "lloyd", "--no-figures"])
    assert result.exit_code != 0 and "lloyd" in result.output and "embedding" in result.output
    assert not (run / "clusters.csv").exists()


def test_walk_and_plot_write_files(built_run: Path) -> None:
    """`lsg-graph walk` writes trajectories and PNGs; `lsg-graph plot` writes the magnification map."""
    result = runner.invoke(app, ["walk", "--run", str(built_run), "--steps", "20", "--walkers", "3", "--step-size", "0.01"])
    assert result.exit_code == 0, result.output
    assert np.load(built_run / "walks_metric.npy").shape == (3, 21, 2)
    assert (built_run / "walks_metric_strip.png").is_file()
    result = runner.invoke(app, ["plot", "--run", str(built_run), "--pairs", "2", "--refine", "none"])
    assert result.exit_code == 0, result.output
    assert (built_run / "magnification.png").is_file()


# ---------------------------------------------------------------------------------------------------------------
# --architecture conv and --device on train / evaluate
# ---------------------------------------------------------------------------------------------------------------


def test_train_conv_on_digits_then_evaluate(tmp_path: Path) -> None:
    """`train --architecture conv` works on the 8x8 digits; `evaluate --device cpu` reads the conv model back."""
    run = tmp_path / "run"
    result = runner.invoke(
        app, ["train", "--architecture", "conv", "--epochs", "2", "--rbf-epochs", "1", "--device", "cpu", "--out", str(run), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "held-out ELBO" in result.output
    from lsg_graph.model import VAE

    model = VAE.load(run)
    assert model.config.architecture == "conv" and model.config.image_shape == (8, 8)
    result = runner.invoke(app, ["evaluate", "--run", str(run), "--samples", "4", "--device", "cpu", "--pairs", "0"])
    assert result.exit_code == 0, result.output
    assert "ratio far / codes" in result.output and "Geometry:" not in result.output


def test_train_conv_needs_images(tmp_path: Path) -> None:
    """A conv request on flat data without an image shape says what is needed."""
    np.save(tmp_path / "flat.npy", np.random.default_rng(0).uniform(0, 1, (50, 16)).astype(np.float32))
    result = runner.invoke(app, ["train", "--data", f"npy:{tmp_path / 'flat.npy'}", "--architecture", "conv", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert "architecture='conv' needs images" in result.output and "idx:DIR" in result.output
    assert "image_shape" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["train", "--architecture", "resnet", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "Unknown architecture 'resnet'" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("command", [["train"], ["evaluate"]])
def test_device_cuda_without_cuda_is_refused(tmp_path: Path, command: list[str]) -> None:
    """`--device cuda` without CUDA is one clear error line, before any work is done."""
    result = runner.invoke(app, [*command, "--device", "cuda", "--run", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert "CUDA is not available" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file: magic (0x0000, 0x08, ndim), big-endian uint32 dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_conv_trains_on_an_idx_folder_through_train_run(tmp_path: Path) -> None:
    """An IDX folder of 28x28 images gives the conv model its image shape; train_run trains and saves it."""
    from lsg_graph.model import VAE
    from lsg_graph.pipeline import train_run

    bunch = load_digits()
    images = np.kron(bunch.images[:60], np.ones((3, 3)))  # 24x24, values 0..16
    images = np.pad(images * 15.9, ((0, 0), (2, 2), (2, 2)))  # 28x28 in 0..254
    _write_idx(tmp_path / "train-images-idx3-ubyte", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", bunch.target[:60])
    summary = train_run(
        tmp_path / "run", f"idx:{tmp_path}", progress=False, device="cpu", architecture="conv",
        hidden_dims=(16,), epochs=2, rbf_epochs=1, n_centers=8,
    )
    assert summary.n_train + summary.n_held_out == 60
    model = VAE.load(summary.run_dir)
    assert model.config.architecture == "conv" and model.config.image_shape == (28, 28)
    assert model.config.input_dim == 784 and np.isfinite(summary.report.held_out_elbo)


def test_every_refinement_choice_in_the_help_exists() -> None:
    """The --refine choices the CLI help and README name are the library's registry keys, and the default is one."""
    import re

    from cli.main import REFINE_CHOICES
    from lsg_graph.geodesics.refine import REFINE_METHODS

    named = set(re.findall(r"'([a-z_]+)'", REFINE_CHOICES))
    assert named == set(REFINE_METHODS), (named, set(REFINE_METHODS))
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for choices in re.findall(r"--refine ([a-z_|]+)\]", readme):
        assert set(choices.split("|")) <= set(REFINE_METHODS), choices


# ------------------------------------------------------------------------------------------------ geodesic --points/--strip


def test_geodesic_points_and_strip(built_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--points N writes N rows from the start code to the end code; --strip writes two labelled image rows."""
    import json

    import lsg_graph.plot as plot_module
    from lsg_graph.pipeline import load_graph

    figures: list = []
    original = plot_module._save
    monkeypatch.setattr(plot_module, "_save", lambda figure, out, dpi: figures.append(figure) or original(figure, out, dpi))
    out, strip = tmp_path / "curve.csv", tmp_path / "strip.png"
    result = runner.invoke(app, ["geodesic", "--run", str(built_run), "--from", "0", "--to", "100", "--out", str(out),
                                 "--points", "37", "--strip", str(strip), "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["strip"] == str(strip) and payload["saved"] == str(out) and strip.is_file()
    curve = np.loadtxt(out, delimiter=",", skiprows=1)
    codes = load_graph(built_run).codes
    assert curve.shape == (37, 2)
    np.testing.assert_allclose(curve[[0, -1]], codes[[0, 100]], atol=1e-5)  # float32 model, shooting end point
    assert len(np.unique(curve, axis=0)) == 37  # 37 distinct points along the curve
    assert np.linalg.norm(np.diff(curve, axis=0), axis=1).sum() >= np.linalg.norm(codes[100] - codes[0])
    (axes,) = figures[-1].axes
    assert [label.get_text() for label in axes.get_yticklabels()] == ["geodesic\n0\u2192100", "straight\nsegment"]
    (image,) = axes.get_images()
    assert image.get_array().shape == (2 * 8 + 1, 10 * 8 + 9)  # two rows of ten 8 x 8 digits, 1-pixel gaps


def test_geodesic_points_unrefined_npy(built_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "path.npy"
    result = runner.invoke(app, ["geodesic", "--run", str(built_run), "--from", "3", "--to", "50", "--refine", "none",
                                 "--out", str(out), "--points", "7", "--quiet"])
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (7, 2)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--out", "c.npy", "--points", "1"], "--points must be an int in [2, 1000000]"),
        (["--out", "c.npy", "--points", "2000000"], "--points must be an int in [2, 1000000]"),
        (["--points", "5"], "--points sets the rows of the --out curve; add --out"),
        (["--strip", "s.txt"], "--strip must be a figure file ending in .png, .svg or .pdf; got 's.txt'"),
    ],
)
def test_geodesic_points_and_strip_errors(built_run: Path, extra: list, message: str) -> None:
    result = runner.invoke(app, ["geodesic", "--run", str(built_run), "--from", "0", "--to", "5", *extra])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert message in result.output


def test_geodesic_strip_needs_image_outputs(tmp_path: Path) -> None:
    from tiny_run import tiny_root

    result = runner.invoke(app, ["geodesic", "--run", str(tiny_root() / "run"), "--from", "0", "--to", "5", "--strip",
                                 str(tmp_path / "s.png"), "--quiet"])
    assert result.exit_code == 1 and "--strip needs image outputs: the decoder returns 6 values" in result.output
