"""Integrity of runs and artifacts (issue 14): one test per class of failure that used to pass silently or crash.

Classes: (1) stale or foreign graphs, (2) a missing data record, (3) non-transactional train (see also
test_crash_safety.py), (4) concurrent writers (test_crash_safety.py), (5) silently wrong numbers on valid-looking
input, (6) tracebacks, (7) crafted metadata, (8) resource exhaustion, (9) misleading messages. Each test states the
old behaviour it guards against.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import struct
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import dijkstra
from sklearn.neighbors import NearestNeighbors
from tiny_run import TINY, copy_tiny_run, tiny_data
from typer.testing import CliRunner

from cli.main import app
from lsg_graph import _io
from lsg_graph.data import load_dataset, make_dataset, read_idx
from lsg_graph.decoder import CallableDecoder
from lsg_graph.errors import ArtifactError, InvalidInput, ResourceLimitError, StaleArtifactError
from lsg_graph.graph.knn import KNN_BACKENDS, knn
from lsg_graph.graph.latent_graph import GRAPH_FILE, GRAPH_KIND, LatentGraph, build_latent_graph
from lsg_graph.manifolds import LinearDecoder
from lsg_graph.metric import PullbackMetric
from lsg_graph.model import MODEL_FILE, MODEL_KIND, VAE, VAEConfig
from lsg_graph.pipeline import (
    _far_pairs,
    build_run,
    ensure_graph,
    geodesic_run,
    load_graph,
    load_metric,
    parse_point,
    train_run,
)
from lsg_graph.walks import random_walks

runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    """Run the CLI in-process: (exit code, stdout + stderr); a traceback or an escaped exception fails the test."""
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def one_error_line(output: str) -> str:
    """The single 'Error: ...' line of a failed command."""
    lines = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, output
    return lines[0]


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    """A private copy of the tiny trained and built run."""
    return copy_tiny_run(tmp_path / "run")


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second run trained on the same data with another seed (a foreign model to copy in)."""
    root = tmp_path_factory.mktemp("other")
    train_run(root / "run", tiny_data(), seed=7, progress=False, **TINY)
    return root / "run"


def graph_length(graph: LatentGraph, source: int, target: int) -> float:
    """Independent truth for a graph distance: scipy's Dijkstra on the stored weights."""
    return float(dijkstra(graph.weights, directed=False, indices=source)[target])


# ---------------------------------------------------------------------------------------------------------------
# (1) stale or foreign graphs
# ---------------------------------------------------------------------------------------------------------------


def test_foreign_model_is_detected_by_readers_and_rebuilt_by_builders(run: Path, other_model: Path) -> None:
    """A model copied in from another run: `geodesic` used to print numbers from the old graph with the new model; now
    it refuses naming the mismatch, and `cluster` (which builds anyway) rebuilds with a warning, after which the graph
    is bound to the new model and its distances are the new model's."""
    old_sha = load_graph(run).params["model_sha256"]
    shutil.copy(other_model / MODEL_FILE, run / MODEL_FILE)
    code, output = cli("geodesic", "--run", str(run), "--from", "0", "--to", "5", "--refine", "none")
    assert code == 1
    assert f"was built from another model (model sha256 {old_sha[:12]}...)" in one_error_line(output)
    with pytest.raises(StaleArtifactError, match="retrained or replaced after the build"):
        load_graph(run)
    code, output = cli("cluster", "--run", str(run), "--clusters", "3", "--no-figure")
    assert code == 0, output
    assert "Warning: The graph" in output and "Rebuilding it now." in output
    rebuilt = load_graph(run)
    assert rebuilt.params["model_sha256"] == VAE.load(run).checksum != old_sha
    assert rebuilt.params["k"] == 4  # rebuilt with the stale graph's own build parameters
    fresh = tmp_fresh = run.parent / "fresh"
    shutil.copytree(other_model, tmp_fresh)
    build_run(fresh, k=4, progress=False)
    reference = LatentGraph.load(fresh)
    np.testing.assert_array_equal(rebuilt.codes, reference.codes)
    assert graph_length(rebuilt, 0, 5) == pytest.approx(graph_length(reference, 0, 5), rel=1e-12)


def test_train_into_a_built_run_removes_the_graph_of_the_old_model(run: Path) -> None:
    """`train` into a built run used to leave the old graph (graph length 37.15 became 35.18, no warning): now the graph
    goes with the old model in the same transaction, and geodesic says there is no graph."""
    code, output = cli("train", "--out", str(run), "--data", tiny_data(), "--epochs", "1", "--rbf-epochs", "1", "-q")
    assert code == 0 and "Removed the graph of the previous model" in output, output
    assert not (run / GRAPH_FILE).exists()
    assert "graph" not in json.loads((run / _io.MANIFEST_NAME).read_text())["artifacts"]
    code, output = cli("geodesic", "--run", str(run), "--from", "0", "--to", "1", "--refine", "none")
    assert code == 1 and "No latent graph in" in one_error_line(output)


def test_graph_without_a_model_record_is_refused(run: Path) -> None:
    """A graph.npz saved outside a run build (no model checksum) is not silently paired with the run's model."""
    graph = load_graph(run)
    graph.params.pop("model_sha256")
    graph.save(run)
    with pytest.raises(StaleArtifactError, match="records no model checksum"):
        load_graph(run)


def test_latent_dimension_mismatch_is_detected(run: Path) -> None:
    """A graph whose codes have another dimension than the model's latent space: refused when the metric is loaded."""
    graph = load_graph(run)
    forged = LatentGraph(np.hstack([graph.codes, graph.codes[:, :1]]), graph.weights, graph.labels, dict(graph.params))
    with pytest.raises(ArtifactError, match="codes of dimension 3 but the run's model has latent dimension 2"):
        load_metric(run, forged, "cpu")


# ---------------------------------------------------------------------------------------------------------------
# (2) the data record lives with the model
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["missing", "garbage", "no-data-entry"])
def test_build_uses_the_models_data_record_whatever_the_manifest(run: Path, damage: str) -> None:
    """A missing or unreadable manifest.json used to switch the data to 'digits' (a graph of 1797 codes for a run
    trained on other data, exit 0): the data record is inside the model file, so the build encodes the right data."""
    manifest = run / _io.MANIFEST_NAME
    if damage == "missing":
        manifest.unlink()
    elif damage == "garbage":
        manifest.write_bytes(b"\x00not json{")
    else:
        manifest.write_text(json.dumps({"artifacts": {}}))
    code, output = cli("build", "--run", str(run), "--k", "5", "-q")
    assert code == 0, output
    graph = load_graph(run)
    assert graph.n_points == 120 and graph.params["data"] == tiny_data()
    json.loads(manifest.read_text())  # rebuilt as a valid index


def test_no_data_record_anywhere_is_an_error_not_a_default(tmp_path: Path) -> None:
    """A model saved without a data record and a run without manifest: build refuses and says to pass --data."""
    VAE(VAEConfig(input_dim=6, hidden_dims=(8,), n_centers=2)).save(tmp_path / "run")
    (tmp_path / "run" / _io.MANIFEST_NAME).unlink()
    code, output = cli("build", "--run", str(tmp_path / "run"), "-q")
    assert code == 1
    assert "records no training data" in one_error_line(output) and "--data" in output


# ---------------------------------------------------------------------------------------------------------------
# (5) silently wrong numbers
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", sorted(KNN_BACKENDS))
@pytest.mark.parametrize("scale", [1e39, 1e300, 1e-30])
def test_knn_beyond_float32_range_matches_scikit_learn(backend: str, scale: float) -> None:
    """Finite codes beyond float32's range: the torch backend matched 0 of 40 rows of scikit-learn; every backend must
    match all rows (the search runs on exactly rescaled data)."""
    if backend.startswith("faiss"):
        pytest.importorskip("faiss")
    x = np.random.default_rng(0).normal(size=(40, 3)) * scale
    distances, indices = NearestNeighbors(n_neighbors=6).fit(x / scale).kneighbors(x / scale)
    found = knn(x, 5, backend=backend, device="cpu")
    np.testing.assert_array_equal(found.indices, indices[:, 1:])
    np.testing.assert_allclose(found.distances / scale, distances[:, 1:], rtol=1e-12)


def test_foreign_backend_exceptions_become_library_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception inside faiss/scipy used to escape as RuntimeError: it is an InvalidInput naming the backend."""

    def broken(*args: object, **kwargs: object) -> np.ndarray:
        raise RuntimeError("Error in faiss::IndexFlat: assertion 'k > 0' failed")

    monkeypatch.setitem(KNN_BACKENDS, "kdtree", broken)
    with pytest.raises(InvalidInput, match=r"The 'kdtree' kNN backend failed on 30 points of dimension 2 .*assertion"):
        knn(np.random.default_rng(0).normal(size=(30, 2)), 3, backend="kdtree")


def test_all_nan_codes_are_an_error(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An encoder returning NaN codes used to give a graph of NaNs: the build refuses, naming how many rows."""
    import lsg_graph.pipeline as pipeline

    monkeypatch.setattr(pipeline, "encode_codes", lambda vae, x: np.full((len(x), 2), np.nan, dtype=np.float32))
    with pytest.raises(ArtifactError, match=r"encodes 120 of 120 samples .* to NaN or inf codes"):
        build_run(run, k=4, progress=False)


@pytest.mark.parametrize("labels,match", [
    (np.array([2**63 + 5, 1, 2], dtype=np.uint64), r"labels must fit in int64; got 9223372036854775813 at row 0"),
    (np.array([0, -1, 2]), r"must not be -1, the marker of points attached"),
])
def test_labels_that_would_wrap_or_collide_with_the_marker(labels: np.ndarray, match: str) -> None:
    """uint64 labels used to wrap to -1 (the attached-point marker): refused by the loader and by the graph builder."""
    with pytest.raises(InvalidInput, match=match):
        make_dataset(np.zeros((3, 2)), labels)
    with pytest.raises(InvalidInput, match=match.replace("labels must", "labels must").split(";")[0]):
        build_latent_graph(PullbackMetric(LinearDecoder()), np.random.default_rng(0).normal(size=(3, 2)), labels, k=1)


def test_euclidean_walk_into_a_nan_region_is_held_and_counted() -> None:
    """A Euclidean walk used to walk into a region where the decoder returns NaN (NaN images, no error) while metric walks
    held such steps: now its steps there are held and counted, and every point decodes to finite values."""

    def decoder(z: torch.Tensor) -> torch.Tensor:
        out = torch.cat([z, torch.sin(z)], dim=1)
        return torch.where(z[:, :1] > 0.6, torch.nan, out)

    metric = PullbackMetric(CallableDecoder(decoder, 2, 4))
    result = random_walks(metric, np.zeros((6, 2)), 200, 0.01, kind="euclidean", seed=0, decode=True)
    assert result.n_singular > 0 and result.n_singular == int(result.held.sum())
    assert (result.trajectories[..., 0] <= 0.6).all()
    assert np.isfinite(result.decoded_means).all()


def test_raw_pixels_in_npz_warn(tmp_path: Path) -> None:
    """Raw 0-255 pixels in an npz trained a broken model without a word (held-out ELBO -48,136): now a warning says to
    divide by 255."""
    np.savez(tmp_path / "pix.npz", x=np.random.default_rng(0).integers(0, 256, (60, 6)).astype(np.uint8))
    with pytest.warns(UserWarning, match=r"like raw 0-255 pixels.*Divide the samples by 255"):
        train_run(tmp_path / "run", f"npz:{tmp_path / 'pix.npz'}", progress=False, **TINY)


# ---------------------------------------------------------------------------------------------------------------
# (6) tracebacks
# ---------------------------------------------------------------------------------------------------------------


def test_train_with_zero_rbf_epochs_prints_its_summary(tmp_path: Path) -> None:
    """`train --rbf-epochs 0` raised IndexError while printing the summary (after saving)."""
    code, output = cli("train", "--data", tiny_data(), "--epochs", "1", "--rbf-epochs", "0", "--out",
                       str(tmp_path / "run"), "-q")
    assert code == 0, output
    assert "stage 2 loss (first -> last)  not run (0 epochs)" in output


@pytest.mark.parametrize("args,message", [
    (["plot", "--seed", "-4"], "The '--seed' option must be an int >= 0; got -4."),
    (["walk", "--seed", "-1", "--no-figures"], "The '--seed' option must be an int >= 0; got -1."),
    (["build", "--seed", "-1", "-q"], "The '--seed' option must be an int >= 0; got -1."),
    (["geodesic", "--from", "1e39,0", "--to", "1"], "Coordinates must lie within +-1e+08 latent units"),
    (["geodesic", "--from", "1_0", "--to", "1"], "Expected a node index (e.g. 12) or coordinates"),
    (["geodesic", "--from", "\u0661\u0662", "--to", "1"], "Expected a node index (e.g. 12) or coordinates"),
    (["cluster", "--clusters", "0", "--no-figure"], "The '--clusters' option must be an int >= 1; got 0."),
])
def test_bad_cli_values_are_one_line_errors(run: Path, args: list[str], message: str) -> None:
    """Each used to be a traceback or was misread (1_0 as node 10, Arabic-Indic digits as a number, seed -1 accepted)."""
    code, output = cli(*args, "--run", str(run))
    assert code == 1
    assert message in one_error_line(output)


@pytest.mark.parametrize("case", ["single-class", "identical-codes"])
def test_plot_pairs_on_a_single_class_or_identical_codes(case: str) -> None:
    """`plot` on a single-class data set or identical codes failed with a misleading 'shape (0, 2)' error."""
    rng = np.random.default_rng(0)
    codes = np.zeros((10, 2)) if case == "identical-codes" else rng.normal(size=(10, 2))
    weights = sp.csr_matrix(np.ones((10, 10)) - np.eye(10))
    pairs = _far_pairs(LatentGraph(codes, weights, np.zeros(10, dtype=np.int64)), 3, seed=0)
    assert pairs.shape == (3, 2) and (pairs[:, 0] != pairs[:, 1]).all()
    assert len({tuple(sorted(pair)) for pair in pairs.tolist()}) == 3


# ---------------------------------------------------------------------------------------------------------------
# (7) crafted metadata
# ---------------------------------------------------------------------------------------------------------------


def rewrite_graph_meta(run: Path, edit) -> None:  # noqa: ANN001
    """Rewrite graph.npz with edited metadata through the _io helpers (a valid file with crafted content)."""
    arrays, meta = _io.load_arrays(run / GRAPH_FILE, GRAPH_KIND)
    _io.save_arrays(run / GRAPH_FILE, arrays, edit(meta))


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("case,edit,match", [
    ("deep-json", lambda m: dict(m, params=dict(m["params"], note=json.loads(deep(60)))), None),
    ("n-attached-text", lambda m: dict(m, params=dict(m["params"], n_attached="x")), "'n_attached' must be an int"),
    ("k-float", lambda m: dict(m, params=dict(m["params"], k=2.5)), "'k' must be an int"),
    ("backend-unknown", lambda m: dict(m, params=dict(m["params"], backend="annoy")), "'backend' is 'annoy'"),
])
def test_forged_graph_params_are_refused(run: Path, case: str, edit, match: str | None) -> None:  # noqa: ANN001
    """Forged build parameters used to pass load and fail later (or never)."""
    rewrite_graph_meta(run, edit)
    if match is None:
        LatentGraph.load(run)  # 60 levels: within the limit, loads
        return
    with pytest.raises(ArtifactError, match=match):
        LatentGraph.load(run)


def test_deeply_nested_or_huge_int_metadata_is_refused(run: Path) -> None:
    """100,000 nested brackets (RecursionError) or a 5000-digit integer (ValueError) in graph.npz, the safetensors
    header or manifest.json: ArtifactError naming the file."""
    arrays, _ = _io.load_arrays(run / GRAPH_FILE, GRAPH_KIND)
    for text, match in ((deep(100_000), "nested more than 64 levels"), ('{"format": ' + "9" * 5000 + "}",
                                                                          "integer of 5000 digits")):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays, __meta__=np.array(text))
        (run / GRAPH_FILE).write_bytes(buffer.getvalue())
        with pytest.raises(ArtifactError, match=match):
            LatentGraph.load(run)
        (run / _io.MANIFEST_NAME).write_text(text)
        with pytest.raises(ArtifactError, match=match):
            _io.read_json(run / _io.MANIFEST_NAME, "manifest")
    tensors, meta = _io.load_tensors(run / MODEL_FILE, MODEL_KIND)
    data = bytearray((run / MODEL_FILE).read_bytes())
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"]["meta"] = deep(100_000)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    (run / MODEL_FILE).write_bytes(len(text).to_bytes(8, "little") + text + bytes(data[8 + size :]))
    with pytest.raises(ArtifactError, match="nested more than 64 levels"):
        VAE.load(run)


@pytest.mark.parametrize("codes,match", [
    (np.zeros((1, 2)), r"at least 2 codes of dimension >= 1"),
    (np.zeros((5, 0)), r"at least 2 codes of dimension >= 1"),
])
def test_degenerate_graphs_are_refused_on_load(tmp_path: Path, codes: np.ndarray, match: str) -> None:
    """Graphs of 1 node or codes of shape (n, 0) used to load."""
    n = codes.shape[0]
    meta = {"format": GRAPH_KIND, "format_version": 1, "params": {}}
    arrays = {"codes": codes, "indptr": np.zeros(n + 1, dtype=np.int64), "indices": np.zeros(0, dtype=np.int64),
              "edge_lengths": np.zeros(0)}
    _io.save_arrays(tmp_path / GRAPH_FILE, arrays, meta)
    with pytest.raises(ArtifactError, match=match):
        LatentGraph.load(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# (8) resource exhaustion: refused before allocating
# ---------------------------------------------------------------------------------------------------------------


def peak_bytes(call) -> int:  # noqa: ANN001
    """Peak Python-tracked allocation of call() (which must raise InvalidInput or ArtifactError)."""
    tracemalloc.start()
    try:
        with pytest.raises((InvalidInput, ArtifactError)) as info:
            call()
        return tracemalloc.get_traced_memory()[1], str(info.value)
    finally:
        tracemalloc.stop()


def test_npy_header_claiming_a_trillion_elements(tmp_path: Path) -> None:
    """A 100-byte .npy whose header claims 10**12 float64 elements raised MemoryError; now refused from the header."""
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }"
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    (tmp_path / "big.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 16)
    peak, message = peak_bytes(lambda: load_dataset(f"npy:{tmp_path / 'big.npy'}"))
    assert peak < 2**20 and "claims shape (1000000000000,)" in message


def test_npz_and_idx_gz_bombs_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small compressed npz / IDX .gz that inflates to gigabytes used to be inflated before being rejected; with the
    limit at 8 MB, a 64 MB bomb is refused after reading only its headers."""
    monkeypatch.setenv(_io.MAX_FILE_BYTES_ENV, str(8 * 2**20))
    zeros = np.zeros(8 * 2**20, dtype=np.float64)  # 64 MB
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", compression=zipfile.ZIP_DEFLATED) as archive, \
            archive.open("x.npy", "w", force_zip64=True) as stream:
        np.lib.format.write_array(stream, zeros.reshape(-1, 8))
    assert (tmp_path / "bomb.npz").stat().st_size < 2**20
    peak, message = peak_bytes(lambda: load_dataset(f"npz:{tmp_path / 'bomb.npz'}"))
    assert peak < 4 * 2**20 and "would inflate to" in message and _io.MAX_FILE_BYTES_ENV in message
    raw = b"\x00\x00\x08\x03" + struct.pack(">3I", 65536, 32, 32) + bytes(65536 * 32 * 32)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    peak, message = peak_bytes(lambda: read_idx(tmp_path / "train-images-idx3-ubyte.gz"))
    assert peak < 4 * 2**20 and "announces shape (65536, 32, 32)" in message


def test_sparse_huge_model_file_is_not_read_whole(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sparse 64 GiB model.safetensors used to be read whole; beyond the limit it is refused from its size."""
    monkeypatch.setenv(_io.MAX_FILE_BYTES_ENV, str(2**20))
    with open(run / MODEL_FILE, "r+b") as stream:
        stream.truncate(64 * 2**30)
    peak, message = peak_bytes(lambda: VAE.load(run))
    assert peak < 2**20 and "68719476736 bytes, more than the limit" in message


@pytest.mark.parametrize("args,limit", [
    (["evaluate", "--samples", str(10**12)], "LSG_GRAPH_MAX_"),
    (["walk", "--walkers", str(10**12), "--no-figures"], "LSG_GRAPH_MAX_"),
    (["walk", "--steps", str(10**9), "--no-figures"], "LSG_GRAPH_MAX_"),
    (["build", "--nodes", str(10**7), "-q"], "LSG_GRAPH_MAX_"),
    (["cluster", "--n-init", str(10**12), "--no-figure"], "LSG_GRAPH_MAX_"),
    (["train", "--latent-dim", str(10**9), "-q"], "LSG_GRAPH_MAX_MEMORY"),
    (["plot", "--pairs", str(10**5)], "must be <= 7140"),
])
def test_requests_that_would_not_fit_are_refused_first(run: Path, args: list[str], limit: str) -> None:
    """These allocated until MemoryError or ran for hours; now refused at once, naming the limit and the override."""
    target = ["--out", str(run.parent / "new")] if args[0] == "train" else ["--run", str(run)]
    extra = ["--data", tiny_data()] if args[0] == "train" else []
    code, output = cli(*args, *target, *extra)
    assert code == 1
    assert limit in one_error_line(output)


def test_the_work_limit_can_be_raised(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same request is refused under a low limit and runs once the environment variable raises it."""
    monkeypatch.setenv("LSG_GRAPH_MAX_WORK", "1000")
    code, output = cli("build", "--run", str(run), "-q")
    assert code == 1 and "set the environment variable LSG_GRAPH_MAX_WORK" in one_error_line(output)
    monkeypatch.setenv("LSG_GRAPH_MAX_WORK", str(10**15))
    assert cli("build", "--run", str(run), "-q")[0] == 0


# ---------------------------------------------------------------------------------------------------------------
# (9) misleading messages
# ---------------------------------------------------------------------------------------------------------------


def test_symlink_to_a_device_is_named_as_such(run: Path, tmp_path: Path) -> None:
    """A graph.npz symlinked to /dev/zero was reported as 'does not exist'."""
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    (run / GRAPH_FILE).unlink()
    (run / GRAPH_FILE).symlink_to("/dev/zero")
    with pytest.raises(ArtifactError, match=r"graph\.npz' \(a link to '/dev/zero'\) is not a regular file"):
        LatentGraph.load(run)


def test_invalid_input_is_also_value_and_type_error() -> None:
    """scikit-learn's callers catch ValueError/TypeError; the README promises lsg-graph's classes: both hold."""
    assert issubclass(InvalidInput, ValueError) and issubclass(InvalidInput, TypeError)
    assert issubclass(ResourceLimitError, InvalidInput) and issubclass(StaleArtifactError, ArtifactError)


def test_parse_point_accepts_only_plain_ascii_numbers() -> None:
    """'1_0' was node 10 and non-ASCII digits were numbers; plain forms still parse exactly."""
    assert parse_point(" 12 ") == 12
    np.testing.assert_array_equal(parse_point("0.5,-1.2e-3"), [0.5, -1.2e-3])
    for text in ("1_0", "\u0661", "0x10", "1,2_0", "nan,0", "inf,1", "-3", ""):
        with pytest.raises(InvalidInput):
            parse_point(text)


def test_geodesic_with_attached_points_still_reports_true_distances(run: Path) -> None:
    """A valid request after all the hardening: the graph length equals scipy's Dijkstra on the loaded graph."""
    summary = geodesic_run(run, 0, 7, refine="none", device="cpu")
    assert summary.path.length == pytest.approx(graph_length(load_graph(run), 0, 7), rel=1e-12)
    graph, built = ensure_graph(run, "cpu", False)
    assert built is None and graph.n_points == 120
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_graph(run)


@pytest.mark.parametrize("kind", ["metric", "euclidean", "brownian"])
def test_huge_step_size_is_held_not_reported_as_nan_input(run: Path, kind: str) -> None:
    """`walk --step-size 1e300` was reported as 'input contains NaN or inf': every proposal overflows the decoder's
    float32, so every step is held and counted, and the walkers stay at their start."""
    code, output = cli("walk", "--run", str(run), "--step-size", "1e300", "--steps", "5", "--walkers", "3",
                       "--kind", kind, "--no-figures")
    assert code == 0, output
    assert "held steps (singular M)  15" in output
    walks = np.load(run / f"walks_{kind}.npy")
    np.testing.assert_array_equal(walks, np.broadcast_to(walks[:, :1], walks.shape))


def test_full_disk_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write failing with ENOSPC said 'cannot read or write a file': now the artifact's name is in the message."""
    real_write = Path.write_bytes

    def full(self: Path, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError) as info:
        _io.write_json(tmp_path / "manifest.json", {})
    assert info.value.filename == str(tmp_path / "manifest.json")
    monkeypatch.setattr(Path, "write_bytes", real_write)


def test_geodesic_distance_raises_lsg_graph_classes() -> None:
    """GeodesicDistance raised scikit-learn's NotFittedError / ValueError where the README promises lsg-graph's; now
    lsg-graph's classes, which are also the builtin ones scikit-learn users catch."""
    from sklearn.exceptions import NotFittedError as SklearnNotFitted

    from lsg_graph.distances import GeodesicDistance
    from lsg_graph.errors import NotFittedError

    estimator = GeodesicDistance(decoder=LinearDecoder(), n_neighbors=3)
    with pytest.raises(NotFittedError) as info:
        estimator.transform(np.zeros((2, 2)))
    assert isinstance(info.value, AttributeError) and isinstance(info.value, ValueError)
    assert isinstance(info.value, SklearnNotFitted)  # both hold: code catching scikit-learn's class still works
    with pytest.raises(InvalidInput) as bad:
        estimator.fit(np.array([[np.nan, 0.0], [1.0, 2.0]]))
    assert isinstance(bad.value, ValueError)
