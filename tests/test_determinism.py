"""Determinism: the same seed gives byte-identical artifacts on the same machine; another seed gives other weights.

Run-dependent numbers (training seconds, build timings) live in model.json and manifest.json only, never inside
model.safetensors or graph.npz, so whole files can be compared by their sha256.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from lsg_graph import _io
from lsg_graph.errors import DisconnectedGraphWarning
from lsg_graph.graph.latent_graph import GRAPH_FILE, GRAPH_KIND, build_latent_graph
from lsg_graph.metric import PullbackMetric
from lsg_graph.model import MODEL_FILE, MODEL_JSON, MODEL_KIND

runner = CliRunner()
TRAIN = ["--epochs", "2", "--rbf-epochs", "1", "-q"]


class SmoothDecoder(torch.nn.Module):
    """A fixed small float64 MLP decoder 2 -> 5 (nonlinear, so edge lengths go through real quadrature)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 5)).double()
        self.latent_dim, self.output_dim = 2, 5

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.net(z), None


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three runs trained and built through the CLI on the same small data: 'a' and 'b' with seed 0, 'c' with seed 1."""
    root = tmp_path_factory.mktemp("determinism")
    rng = np.random.default_rng(0)
    data = root / "data.npz"
    np.savez(data, x=rng.uniform(0, 1, (150, 8)).astype(np.float32), y=rng.integers(0, 3, 150))
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        run = root / name
        result = runner.invoke(app, ["train", "--data", f"npz:{data}", "--seed", str(seed), "--out", str(run), *TRAIN])
        assert result.exit_code == 0, result.output
        result = runner.invoke(app, ["build", "--run", str(run), "--k", "5", "--candidates", "2", "-q"])
        assert result.exit_code == 0, result.output
        runs[name] = run
    return runs


def test_same_seed_gives_byte_identical_model_and_graph(runs: dict[str, Path]) -> None:
    """Train + build twice with seed 0: model.safetensors and graph.npz have the same sha256."""
    for name in (MODEL_FILE, GRAPH_FILE):
        assert sha256(runs["a"] / name) == sha256(runs["b"] / name), name


def test_manifest_checksums_match_the_files(runs: dict[str, Path]) -> None:
    """The manifest records each artifact's sha256 and size as written."""
    manifest = json.loads((runs["a"] / _io.MANIFEST_NAME).read_text())
    for entry in ("model", "graph"):
        for name, record in manifest["artifacts"][entry]["files"].items():
            assert record["sha256"] == sha256(runs["a"] / name) and record["bytes"] == (runs["a"] / name).stat().st_size


def test_timings_are_in_manifest_and_model_json_not_in_artifacts(runs: dict[str, Path]) -> None:
    """Build timings go to manifest.json, training seconds to model.json; neither is inside the artifacts."""
    _, graph_meta = _io.load_arrays(runs["a"] / GRAPH_FILE, GRAPH_KIND)
    assert "timings" not in graph_meta["params"]
    manifest = json.loads((runs["a"] / _io.MANIFEST_NAME).read_text())
    assert set(manifest["artifacts"]["graph"]["params"]["timings"]) >= {"knn_s", "edge_lengths_s"}
    _, model_meta = _io.load_tensors(runs["a"] / MODEL_FILE, MODEL_KIND)
    assert "seconds" not in model_meta["train_report"] and "n_train" in model_meta["train_report"]
    assert "seconds" in json.loads((runs["a"] / MODEL_JSON).read_text())["train_report"]


def test_different_seed_gives_different_weights(runs: dict[str, Path]) -> None:
    """Seed 1 gives other weights (every trained tensor differs), hence other files."""
    same, other = (_io.load_tensors(runs[name] / MODEL_FILE, MODEL_KIND)[0] for name in ("a", "c"))
    assert same.keys() == other.keys()
    trained = [name for name in same if name.endswith("weight")]
    assert trained and all(not torch.equal(same[name], other[name]) for name in trained)
    assert sha256(runs["a"] / MODEL_FILE) != sha256(runs["c"] / MODEL_FILE)
    assert sha256(runs["a"] / GRAPH_FILE) != sha256(runs["c"] / GRAPH_FILE)


def test_graph_build_is_byte_identical_without_removing_anything(tmp_path: Path) -> None:
    """Building the same graph twice (metric-aware neighbours and bridging included) saves identical bytes as is."""
    rng = np.random.default_rng(0)
    codes = np.vstack([rng.normal(0, 0.3, (150, 2)), rng.normal(8, 0.3, (30, 2))])  # two blobs: bridged
    decoder = SmoothDecoder()
    for name in ("a", "b"):
        with pytest.warns(DisconnectedGraphWarning):
            graph = build_latent_graph(PullbackMetric(decoder), codes, np.arange(180) % 4, k=4, candidates=2)
        graph.save(tmp_path / name)
    assert graph.params["n_bridges"] >= 1
    assert sha256(tmp_path / "a" / GRAPH_FILE) == sha256(tmp_path / "b" / GRAPH_FILE)


def test_model_file_bytes_do_not_depend_on_header_key_order(tmp_path: Path) -> None:
    """safetensors writes its metadata map in a random key order; saved models are canonicalised (8 saves, 1 hash)."""
    from lsg_graph.model import VAE, VAEConfig

    model = VAE(VAEConfig(input_dim=4, hidden_dims=(8,), n_centers=2))
    hashes = set()
    for index in range(8):
        model.save(tmp_path / str(index))
        hashes.add(sha256(tmp_path / str(index) / MODEL_FILE))
    assert len(hashes) == 1
    VAE.load(tmp_path / "0")
