"""Edge weighting on a local Ray cluster: identical to the local build, dead workers' blocks redone, CLI --cluster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lsg_graph.errors import InvalidInput

ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed (pip install 'lsg-graph[ray]')")

from lsg_graph.data import load_digits  # noqa: E402
from lsg_graph.distributed import RayExecutor  # noqa: E402
from lsg_graph.graph.latent_graph import build_latent_graph  # noqa: E402
from lsg_graph.manifolds import SphereChart  # noqa: E402
from lsg_graph.metric import PullbackMetric  # noqa: E402
from lsg_graph.model import VAEConfig, encode_codes, train_vae  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::lsg_graph.errors.DisconnectedGraphWarning")


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance with 2 CPUs for the whole module."""
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    if started_here:
        ray.shutdown()


@pytest.fixture
def make_executor(cluster):
    """RayExecutor factory whose actors are stopped after the test, also when it fails (the 2 CPUs are freed)."""
    made = []

    def make(*args, **kwargs) -> RayExecutor:
        made.append(RayExecutor(*args, **kwargs))
        return made[-1]

    yield make
    for executor in made:
        executor.shutdown_workers()


@pytest.fixture(scope="module")
def model():
    """A VAE trained briefly on 400 digits, its RBF metric and codes."""
    images = load_digits().images[:400]
    vae, _ = train_vae(images, VAEConfig(input_dim=64, epochs=2, rbf_epochs=1, seed=0), progress=False)
    return vae, PullbackMetric(vae.decoder("rbf")), encode_codes(vae, images)


def test_ray_build_equals_local_build(make_executor, model) -> None:
    """Two actors, one local chunk per task (several tasks each): the same graph as the local build, bit for bit
    when this process computes with one thread like the actors (else within 1e-12 relative)."""
    vae, metric, codes = model
    local = build_latent_graph(metric, codes, k=8, device="cpu")
    executor = make_executor(n_workers=2, model=vae, chunks_per_block=1)
    remote = build_latent_graph(metric, codes, k=8, device="cpu", executor=executor)
    np.testing.assert_array_equal(remote.weights.indices, local.weights.indices)
    np.testing.assert_array_equal(remote.weights.indptr, local.weights.indptr)
    if torch.get_num_threads() == 1:
        np.testing.assert_array_equal(remote.weights.data, local.weights.data)
    np.testing.assert_allclose(remote.weights.data, local.weights.data, rtol=1e-12)
    stats = executor.stats_
    assert stats["blocks"] >= 4 and sum(stats["blocks_per_worker"]) == stats["blocks"]
    assert stats["redone_blocks"] == 0 and len(stats["worker_rss_bytes"]) == 2


def test_dead_worker_blocks_are_redone(make_executor, model) -> None:
    """An actor killed after the first block: its blocks are redone on a replacement, the result is unchanged."""
    vae, metric, codes = model
    starts, ends = codes[:-1], codes[1:]
    from lsg_graph.graph.weights import edge_lengths

    expected = edge_lengths(metric, np.repeat(starts, 8, axis=0), np.repeat(ends, 8, axis=0))
    calls = []

    def kill_first_actor(done: int, total: int) -> None:
        if not calls:
            ray.kill(executor.actors_[0], no_restart=True)
        calls.append((done, total))

    executor = make_executor(n_workers=2, model=vae, chunks_per_block=1, progress_callback=kill_first_actor)
    lengths = executor.edge_lengths(metric, np.repeat(starts, 8, axis=0), np.repeat(ends, 8, axis=0))
    np.testing.assert_allclose(lengths, expected, rtol=1e-12)
    assert executor.stats_["redone_blocks"] >= 1 and executor.stats_["restarts"] == 1
    assert calls[-1] == (len(expected), len(expected)) and [done for done, _ in calls] == sorted(d for d, _ in calls)


def test_analytic_metric_is_shipped_as_is(make_executor) -> None:
    """A decoder without a VAE (the sphere chart) goes through Ray's serializer; same lengths as locally."""
    chart = SphereChart()
    codes = chart.sample(300, seed=0)
    metric = PullbackMetric(chart)
    local = build_latent_graph(metric, codes, k=6, device="cpu")
    executor = make_executor(n_workers=1)
    remote = build_latent_graph(metric, codes, k=6, device="cpu", executor=executor)
    np.testing.assert_allclose(remote.weights.data, local.weights.data, rtol=1e-12)


def test_mismatched_model_is_refused(make_executor, model) -> None:
    """Workers given another model than the metric's refuse to start."""
    vae, _, codes = model
    other, _ = train_vae(load_digits().images[:100], VAEConfig(input_dim=64, epochs=1, rbf_epochs=1, seed=1), progress=False)
    executor = make_executor(n_workers=1, model=other)
    with pytest.raises(InvalidInput, match="does not match the metric's"):
        executor.edge_lengths(PullbackMetric(vae.decoder("rbf")), codes[:5], codes[5:10])


def test_more_workers_than_cpus_is_refused(make_executor, model) -> None:
    """Actors that could never be scheduled are refused instead of waiting forever."""
    vae, metric, codes = model
    with pytest.raises(InvalidInput, match="3 worker\\(s\\) x 1 CPU\\(s\\) need 3 CPUs; the Ray cluster has 2"):
        make_executor(n_workers=3, model=vae).edge_lengths(metric, codes[:5], codes[5:10])


def test_cli_build_cluster_matches_local(cluster, tmp_path: Path) -> None:
    """`lsg-graph build --cluster local --workers 2` writes the same graph.npz bytes as the local build."""
    from typer.testing import CliRunner

    from cli.main import app
    from lsg_graph.pipeline import build_run, train_run

    run = tmp_path / "run"
    train_run(run, "digits", seed=0, progress=False, device="cpu", epochs=1, rbf_epochs=1)
    build_run(run, k=5, progress=False, device="cpu")
    local_bytes = (run / "graph.npz").read_bytes()
    result = CliRunner().invoke(app, ["build", "--run", str(run), "--k", "5", "--cluster", "local", "--workers", "2", "-q", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    remote_bytes = (run / "graph.npz").read_bytes()
    if torch.get_num_threads() == 1:
        assert remote_bytes == local_bytes


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"address": "http://x"}, "must be 'auto', 'local' or 'ray://HOST:PORT'"),
        ({"n_workers": 0}, "'n_workers' parameter must be an int >= 1"),
        ({"max_restarts": -1}, "'max_restarts' parameter must be an int >= 0"),
    ],
)
def test_bad_settings(kwargs: dict, message: str) -> None:
    """Bad executor settings are named."""
    with pytest.raises(InvalidInput, match=message):
        RayExecutor(**kwargs)
