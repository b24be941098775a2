"""A user's own decoder: the API infers the latent dimension from the data; the CLI takes --decoder and --codes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from lsg_graph.cluster import GeodesicKMeans
from lsg_graph.distances import GeodesicDistance
from lsg_graph.errors import InvalidInput
from lsg_graph.graph.latent_graph import build_latent_graph
from lsg_graph.metric import PullbackMetric

runner = CliRunner()
A = np.array([[1.0, 0.5, 0.0], [0.0, 2.0, 0.3], [0.2, 0.0, 1.5], [1.0, 1.0, 1.0]])  # x = A z, D = 4, d = 3


class Linear(torch.nn.Module):
    """x = A z with no latent_dim attribute and no nn.Linear: the latent dimension cannot be read off the module."""

    def __init__(self, matrix: np.ndarray) -> None:
        super().__init__()
        self.matrix = torch.nn.Parameter(torch.from_numpy(matrix))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.matrix.T


@pytest.fixture(scope="module")
def codes() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(80, 3))


def test_metric_infers_latent_dim_from_the_first_points(codes: np.ndarray) -> None:
    """PullbackMetric(net) needs no latent_dim: v^T M v = ||A v||^2 on the first call, which fixes d = 3."""
    metric = PullbackMetric(Linear(A))
    assert not metric.latent_dim_known
    with pytest.raises(InvalidInput, match="latent dimension of the decoder Linear is not known yet"):
        _ = metric.latent_dim
    v = np.random.default_rng(1).normal(size=codes.shape)
    np.testing.assert_allclose(metric.inner(codes, v).detach().numpy(), ((v @ A.T) ** 2).sum(axis=1), rtol=1e-12)
    assert metric.latent_dim_known and metric.latent_dim == 3
    with pytest.raises(InvalidInput, match="latent_dim = 3"):
        metric.inner(codes[:, :2], v[:, :2])


def test_metric_takes_latent_dim_and_checks_it(codes: np.ndarray) -> None:
    """latent_dim= wraps the decoder at once; a wrong one is refused by the decoder probe."""
    metric = PullbackMetric(Linear(A), latent_dim=3)
    np.testing.assert_allclose(metric.metric_tensor(codes[:2]).detach().numpy(), np.stack([A.T @ A] * 2), rtol=1e-12)
    with pytest.raises(Exception, match="probe points"):
        PullbackMetric(Linear(A), latent_dim=2)
    with pytest.raises(InvalidInput, match="latent_dim"):
        PullbackMetric(Linear(A), latent_dim=0)


def test_graph_and_estimators_take_d_from_x(codes: np.ndarray) -> None:
    """build_latent_graph, GeodesicDistance and GeodesicKMeans accept the bare module; edges are exact for x = A z."""
    graph = build_latent_graph(PullbackMetric(Linear(A)), codes, k=6)
    rows, cols = graph.weights.nonzero()
    exact = np.linalg.norm((codes[rows] - codes[cols]) @ A.T, axis=1)
    np.testing.assert_allclose(np.asarray(graph.weights[rows, cols]).ravel(), exact, rtol=1e-10)
    distances = GeodesicDistance(decoder=Linear(A), n_neighbors=6).fit_transform(codes)
    chord = np.linalg.norm((codes[:, None] - codes[None]) @ A.T, axis=2)
    assert distances.shape == (80, 80) and (distances >= chord - 1e-9).all()  # a path is never shorter than the chord
    np.testing.assert_allclose(distances[rows, cols], exact, rtol=1e-10)  # one edge: the straight segment itself
    model = GeodesicKMeans(3, decoder=Linear(A), n_neighbors=6, random_state=0).fit(codes)
    assert model.n_features_in_ == 3 and set(model.labels_) == {0, 1, 2}
    pending = PullbackMetric(Linear(A))
    GeodesicKMeans(2, decoder=pending, n_neighbors=6, random_state=0).fit(codes)
    assert not pending.latent_dim_known  # the estimator's parameter is not changed by fit


# ------------------------------------------------------------------------------------------------ the CLI path

MODULE = textwrap.dedent(
    """
    import numpy as np
    import torch

    CALLS = []

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.matrix = torch.nn.Parameter(torch.from_numpy(np.load("matrix.npy")))

        def forward(self, z):
            return z @ self.matrix.T

    def load_decoder():
        CALLS.append(1)
        return Linear()

    def not_a_factory(x):
        return x
    """
)
MATRIX = np.random.default_rng(3).normal(size=(16, 3))  # D = 16: decoded rows are 4 x 4 images


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a decoder module, its weights, codes and labels (the working directory of the CLI tests)."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "my_models.py").write_text(MODULE)
    np.save(folder / "matrix.npy", MATRIX)
    rng = np.random.default_rng(4)
    np.save(folder / "codes.npy", rng.normal(size=(120, 3)))
    np.save(folder / "labels.npy", np.arange(120) % 4)
    return folder


def invoke(folder: Path, args: list[str]) -> tuple[int, str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        result = runner.invoke(app, args)
    return result.exit_code, result.output


USER = ["--decoder", "my_models:load_decoder", "--codes", "codes.npy", "--run", "run"]


@pytest.fixture(scope="module")
def user_run(user_dir: Path) -> dict:
    code, output = invoke(user_dir, ["build", *USER, "--labels", "labels.npy", "--k", "8", "--json", "-q"])
    assert code == 0, output
    return json.loads(output)


def test_build_with_a_user_decoder(user_run: dict, user_dir: Path) -> None:
    """`build --decoder M:F --codes FILE` builds the graph over the user's codes; d comes from the codes."""
    assert user_run["n_points"] == 120 and user_run["latent_dim"] == 3 and user_run["trained"] is None
    assert (user_dir / "run" / "graph.npz").is_file() and not (user_dir / "run" / "model.safetensors").exists()


def test_geodesic_with_a_user_decoder_is_the_straight_line(user_run: dict, user_dir: Path) -> None:
    """For x = A z the refined geodesic length is ||A (z_b - z_a)|| (rtol 1e-6); the graph path is no shorter."""
    codes = np.load(user_dir / "codes.npy")
    exact = float(np.linalg.norm(MATRIX @ (codes[7] - codes[90])))
    code, output = invoke(user_dir, ["geodesic", *USER, "--from", "7", "--to", "90", "--json"])
    assert code == 0, output
    result = json.loads(output)
    assert result["graph_length"] >= exact * (1 - 1e-9)
    assert result["refined"]["length"] == pytest.approx(exact, rel=1e-6)
    code, output = invoke(user_dir, ["geodesic", *USER, "--from", "0.1,0.2,0.3", "--to", "5", "--refine", "none", "--json"])
    assert code == 0, output
    assert json.loads(output)["target"] == 5


def test_cluster_walk_plot_with_a_user_decoder(user_run: dict, user_dir: Path) -> None:
    """cluster, walk and plot run on the user's model and write their files (4 x 4 decoded images in the strips)."""
    code, output = invoke(user_dir, ["cluster", *USER, "--clusters", "4", "--json"])
    assert code == 0, output
    result = json.loads(output)
    assert sum(result["cluster_sizes"]) == 120 and Path(user_dir / result["figure"]).is_file()
    code, output = invoke(user_dir, ["walk", *USER, "--steps", "10", "--walkers", "2", "--json"])
    assert code == 0, output
    assert np.load(user_dir / json.loads(output)["trajectories"]).shape == (2, 11, 3)
    code, output = invoke(user_dir, ["plot", *USER, "--pairs", "0:5,7:90", "--refine", "none", "--json"])
    assert code == 0, output
    result = json.loads(output)
    assert [(row["source"], row["target"]) for row in result["pairs"]] == [(0, 5), (7, 90)]
    assert Path(user_dir / result["figure"]).is_file() and len(result["strips"]) == 1


def test_a_user_graph_without_the_decoder_is_refused(user_run: dict, user_dir: Path) -> None:
    """A run built with a user decoder never falls back to another model: the command asks for --decoder again."""
    code, output = invoke(user_dir, ["plot", "--run", "run"])
    assert code == 1 and "was built with your decoder 'my_models:load_decoder'; pass --decoder" in output


@pytest.mark.parametrize(
    "args,message",
    [
        (["--decoder", "no_such_module:f", "--codes", "codes.npy"], "no module named 'no_such_module'"),
        (["--decoder", "my_models:missing", "--codes", "codes.npy"], "has no attribute 'missing'"),
        (["--decoder", "my_models:not_a_factory", "--codes", "codes.npy"], "zero-argument factory"),
        (["--decoder", "my_models", "--codes", "codes.npy"], "must be 'module.path:factory'"),
        (["--decoder", "my_models:load_decoder"], "--decoder and --codes go together; add --codes FILE"),
        (["--decoder", "my_models:load_decoder", "--codes", "nothing.npy"], "does not exist"),
        (["--decoder", "my_models:load_decoder", "--codes", "codes.txt"], "must end in .npy, .npz or .csv"),
        (["--decoder", "my_models:load_decoder", "--codes", "codes.npy", "--labels", "matrix.npy"], "labels"),
    ],
)
def test_bad_user_model_options(user_dir: Path, args: list[str], message: str) -> None:
    """Bad --decoder/--codes/--labels values are one clear error line."""
    (user_dir / "codes.txt").write_text("1,2,3\n")
    code, output = invoke(user_dir, ["build", *args, "--run", "bad"])
    assert code == 1 and message in output and "Traceback" not in output, output


def test_codes_from_npz_and_csv(tmp_path: Path) -> None:
    """Codes load from .npz (with labels) and .csv (with a header); float64 kept."""
    from lsg_graph.user_model import load_codes

    codes = np.random.default_rng(0).normal(size=(10, 3))
    np.savez(tmp_path / "c.npz", codes=codes, labels=np.arange(10))
    loaded, labels = load_codes(tmp_path / "c.npz")
    np.testing.assert_array_equal(loaded, codes)
    np.testing.assert_array_equal(labels, np.arange(10))
    np.savetxt(tmp_path / "c.csv", codes, delimiter=",", header="z0,z1,z2", comments="")
    np.testing.assert_allclose(load_codes(tmp_path / "c.csv")[0], codes, rtol=1e-15)


def test_default_walk_step_from_the_edges_at_the_start(codes: np.ndarray) -> None:
    """s = (5 sqrt(2/d) h)^2 / (n_steps d), h = median edge length at the start node; a metric step then has the
    expected squared metric length s * d (x = A z: M = A^T A everywhere; 4000 one-step walkers, 5% tolerance)."""
    from lsg_graph.pipeline import default_step_size
    from lsg_graph.walks import random_walks

    metric = PullbackMetric(Linear(A), latent_dim=3)
    graph = build_latent_graph(metric, codes, k=6)
    h = float(np.median(graph.weights.getrow(4).data))
    s = default_step_size(metric, graph, codes[4], "metric", 100, node=4)
    assert s == pytest.approx((5 * np.sqrt(2 / 3) * h) ** 2 / 300, rel=1e-12)
    walk = random_walks(metric, np.repeat(codes[4:5], 4000, axis=0), 1, s, kind="metric", seed=0)
    steps = walk.trajectories[:, 1] - walk.trajectories[:, 0]
    squared = ((steps @ A.T) ** 2).sum(axis=1)
    assert squared.mean() == pytest.approx(s * 3, rel=0.05)
    euclidean = default_step_size(metric, graph, codes[4], "euclidean", 100, node=4)
    neighbours = graph.weights.getrow(4).indices
    h_latent = float(np.median(np.linalg.norm(codes[neighbours] - codes[4], axis=1)))
    assert euclidean == pytest.approx((5 * np.sqrt(2 / 3) * h_latent) ** 2 / 300, rel=1e-12)
