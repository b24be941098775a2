"""Bad input, library and CLI: every case raises one exact LsgGraphError subclass whose message names the bad value
and what was expected; through the CLI the same errors are one 'Error: ...' line with exit code 1 and no traceback.

The table CASES is the specification: (id, call, expected exception type, regex the message must match). Library
rows call the public API and must raise exactly that type; CLI rows return the command line, which must exit with
code 1 through the app's error handler (the library exception is found on the exit's context chain) and print the
message. Not-an-error behaviours the table is about (duplicate codes) are tested below it.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import shutil
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from lsg_graph import _io
from lsg_graph.data import load_dataset
from lsg_graph.decoder import as_decoder
from lsg_graph.errors import ArtifactError, DecoderError, DisconnectedGraph, InvalidInput, LsgGraphError
from lsg_graph.geodesics.shortest import graph_distances, shortest_distances, shortest_path, shortest_paths
from lsg_graph.graph.knn import knn
from lsg_graph.graph.latent_graph import GRAPH_FILE, GRAPH_KIND, LatentGraph, build_latent_graph
from lsg_graph.graph.weights import edge_lengths
from lsg_graph.manifolds import LinearDecoder
from lsg_graph.metric import PullbackMetric
from lsg_graph.model import MODEL_FILE, MODEL_KIND, VAE, VAEConfig, train_vae
from lsg_graph.pipeline import build_run, evaluate_run, train_run

runner = CliRunner()
N_CODES = 30  # codes of the library graph
N_DATA = 80  # rows of the run's training data (6 features, latent dimension 2)
TINY = {"epochs": 2, "rbf_epochs": 1, "hidden_dims": (16,), "n_centers": 4}


@dataclass
class Ctx:
    """Shared, read-only material: a linear metric, codes and their graph, a tiny trained run and data files."""

    root: Path
    metric: PullbackMetric
    codes: np.ndarray
    graph: LatentGraph
    run: Path
    data: dict[str, Path]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    root = tmp_path_factory.mktemp("reliability")
    rng = np.random.default_rng(0)
    data = {"good": root / "data.npz", "bad_labels": root / "bad_labels.npz", "wide": root / "wide.npz"}
    np.savez(data["good"], x=rng.uniform(0, 1, (N_DATA, 6)).astype(np.float32), y=rng.integers(0, 3, N_DATA))
    np.savez(data["bad_labels"], x=rng.uniform(0, 1, (N_DATA, 6)).astype(np.float32), y=rng.integers(0, 3, N_DATA - 1))
    np.savez(data["wide"], x=rng.uniform(0, 1, (N_DATA, 5)).astype(np.float32))
    run = root / "run"
    train_run(run, f"npz:{data['good']}", seed=0, progress=False, **TINY)
    build_run(run, k=4, progress=False)
    (root / "a_file").write_text("not a directory")
    (root / "empty_run").mkdir()
    metric = PullbackMetric(LinearDecoder())
    codes = rng.uniform(-1, 1, (N_CODES, 2))
    return Ctx(root, metric, codes, build_latent_graph(metric, codes, k=5), run, data)


# ---------------------------------------------------------------------------------------------------------------
# Helpers that make bad inputs (each writes into the per-case folder `tmp`, never into the shared run)
# ---------------------------------------------------------------------------------------------------------------


def with_value(codes: np.ndarray, row: int, value: float) -> np.ndarray:
    """A copy of codes with one entry replaced."""
    bad = codes.copy()
    bad[row, 0] = value
    return bad


def copy_run(ctx: Ctx, tmp: Path) -> Path:
    """A private copy of the tiny run directory."""
    return Path(shutil.copytree(ctx.run, tmp / "run"))


def graph_dir(ctx: Ctx, tmp: Path) -> Path:
    """A folder holding a valid graph.npz of the library graph."""
    ctx.graph.save(tmp / "g")
    return tmp / "g"


def rewrite_graph(ctx: Ctx, tmp: Path, edit_arrays: Callable[[dict], None] | None = None, edit_meta=None) -> Path:  # noqa: ANN001
    """A graph.npz rewritten through the _io helpers with edited arrays and/or metadata (valid file, bad content)."""
    folder = graph_dir(ctx, tmp)
    arrays, meta = _io.load_arrays(folder / GRAPH_FILE, GRAPH_KIND)
    if edit_arrays:
        edit_arrays(arrays)
    if edit_meta:
        meta = edit_meta(meta)
    _io.save_arrays(folder / GRAPH_FILE, arrays, meta)
    return folder


def rewrite_model(ctx: Ctx, tmp: Path, edit_tensors: Callable[[dict], None] | None = None, edit_meta=None) -> Path:  # noqa: ANN001
    """A run copy whose model.safetensors is rewritten through the _io helpers (valid checksum, bad content)."""
    run = copy_run(ctx, tmp)
    tensors, meta = _io.load_tensors(run / MODEL_FILE, MODEL_KIND)
    if edit_tensors:
        edit_tensors(tensors)
    if edit_meta:
        meta = edit_meta(meta)
    _io.save_tensors(run / MODEL_FILE, tensors, meta)
    return run


def truncate(path: Path) -> Path:
    """Cut a file to half its size."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def corrupt_deflate_npz(path: Path) -> Path:
    """A compressed .npz with lsg-graph metadata whose deflate stream is garbage (zlib fails while reading)."""
    buffer = io.BytesIO()
    meta = json.dumps({"format": GRAPH_KIND, "format_version": 1})
    np.savez_compressed(buffer, codes=np.linspace(0, 1, 2000).reshape(1000, 2), __meta__=np.array(meta))
    data = bytearray(buffer.getvalue())
    start = data.index(b"codes.npy") + 40
    data[start : start + 64] = bytes(byte ^ 0x55 for byte in data[start : start + 64])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def foreign_zip(path: Path) -> Path:
    """A zip archive that is not an npz (one text member)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    return path


def directory_in_place(folder: Path, name: str) -> Path:
    """A folder holding a directory where the file `name` is expected."""
    (folder / name).mkdir(parents=True)
    return folder


def jvp_hostile(z: torch.Tensor) -> torch.Tensor:
    """A decoder that works on plain tensors (so it passes the probe) but leaves torch for numpy: no forward mode."""
    return torch.from_numpy(np.tanh(z.numpy()))


def shape_shifter(z: torch.Tensor) -> torch.Tensor:
    """Right shape (n, 4) on the 3 probe points, but always 3 rows on any other batch."""
    return torch.cat([z[:3], z[:3] ** 2], dim=1)


def raises(exc: Exception) -> Callable[[torch.Tensor], torch.Tensor]:
    """A decoder that raises `exc`."""

    def decoder(z: torch.Tensor) -> torch.Tensor:
        raise exc

    return decoder


def two_blobs() -> np.ndarray:
    """Two far-apart clusters of 20 codes each."""
    rng = np.random.default_rng(1)
    return np.vstack([rng.normal(0, 0.1, (20, 2)), rng.normal(10, 0.1, (20, 2))])


def cuda_missing(call: Callable[[], Any]) -> Any:
    """Run `call`, or skip when this machine has CUDA (the case is about asking for a GPU that is not there)."""
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    return call()


def diverging_training() -> Any:
    """Train on data of magnitude 1e30: the ELBO overflows float32 in the first epoch."""
    x = (np.random.default_rng(0).normal(size=(40, 4)) * 1e30).astype(np.float32)
    return train_vae(x, VAEConfig(input_dim=4, **TINY), progress=False)


# ---------------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input: `call(ctx, tmp)` raises exactly `error` with a message matching `match` (re.search).

    CLI cases (`cli=True`) return the command line instead; it must exit with code 1 and print 'Error: <match>'.
    """

    id: str
    call: Callable[[Ctx, Path], Any]
    error: type[LsgGraphError]
    match: str
    cli: bool = False


def lib(id: str, call: Callable[[Ctx, Path], Any], error: type[LsgGraphError], match: str) -> Case:  # noqa: A002
    return Case(id, call, error, match)


def cli(id: str, args: Callable[[Ctx, Path], list[str]], error: type[LsgGraphError], match: str) -> Case:  # noqa: A002
    return Case(id, args, error, match, cli=True)


B = build_latent_graph

CASES: list[Case] = [
    # ---- codes: values, shapes, dtypes, emptiness
    lib("codes-nan", lambda c, t: B(c.metric, with_value(c.codes, 3, np.nan)), InvalidInput,
        r"codes contains NaN or inf values \(first bad rows: \[3\]\)"),
    lib("codes-inf", lambda c, t: edge_lengths(c.metric, with_value(c.codes, 7, np.inf), c.codes), InvalidInput,
        r"starts contains NaN or inf values \(first bad rows: \[7\]\)"),
    lib("codes-strings", lambda c, t: B(c.metric, np.array([["a", "b"]] * 5)), InvalidInput,
        r"codes must hold numbers; got an array of dtype <U1"),
    lib("codes-complex", lambda c, t: B(c.metric, c.codes + 1j), InvalidInput,
        r"codes must hold real numbers; got an array of dtype complex128"),
    lib("codes-3d", lambda c, t: B(c.metric, np.zeros((3, 4, 2))), InvalidInput,
        r"codes must be a 2-D array; got shape \(3, 4, 2\)"),
    lib("codes-empty", lambda c, t: B(c.metric, np.zeros((0, 2))), InvalidInput,
        r"codes must have at least 2 row\(s\); got shape \(0, 2\)"),
    lib("codes-ragged", lambda c, t: B(c.metric, [[0.0, 1.0], [2.0]]), InvalidInput,
        r"codes could not be read as an array: .*inhomogeneous"),
    lib("codes-wrong-latent-dim", lambda c, t: B(c.metric, np.zeros((10, 3))), InvalidInput,
        r"codes have dimension 3 but the decoder expects latent dimension 2; got shape \(10, 3\)"),
    lib("metric-not-a-metric", lambda c, t: B(LinearDecoder(), c.codes), InvalidInput,
        r"metric must be a lsg_graph\.metric\.PullbackMetric; got LinearDecoder\. Wrap a decoder"),
    # ---- k and numeric parameters
    lib("k-equals-n", lambda c, t: B(c.metric, c.codes, k=N_CODES), InvalidInput,
        rf"'k' parameter must be < the number of points \({N_CODES}\); got {N_CODES}"),
    lib("knn-k-above-n", lambda c, t: knn(c.codes, 31), InvalidInput,
        r"'k' parameter must be < the number of points \(30\); got 31"),
    lib("k-float", lambda c, t: B(c.metric, c.codes, k=2.5), InvalidInput,
        r"'k' parameter must be an int; got 2\.5 \(float\)"),
    lib("n-nodes-zero", lambda c, t: edge_lengths(c.metric, c.codes, c.codes, n_nodes=0), InvalidInput,
        r"'n_nodes' parameter must be an int >= 1; got 0"),
    lib("candidates-negative", lambda c, t: B(c.metric, c.codes, candidates=-2), InvalidInput,
        r"'candidates' parameter must be an int >= 1; got -2"),
    lib("chunk-size-zero", lambda c, t: PullbackMetric(LinearDecoder(), chunk_size=0), InvalidInput,
        r"'chunk_size' parameter must be an int >= 1; got 0"),
    lib("epochs-zero", lambda c, t: VAEConfig(input_dim=4, epochs=0), InvalidInput,
        r"'epochs' parameter must be an int >= 1; got 0"),
    lib("latent-dim-negative", lambda c, t: VAEConfig(input_dim=4, latent_dim=-2), InvalidInput,
        r"'latent_dim' parameter must be an int >= 1; got -2"),
    lib("limit-negative", lambda c, t: shortest_distances(c.graph, [0], limit=-1.0), InvalidInput,
        r"'limit' parameter must be > 0\.0; got -1\.0"),
    lib("training-diverges", lambda c, t: diverging_training(), InvalidInput,
        r"Training diverged: stage 1 reached a non-finite loss .* epoch 1\. The training data span .*rescale"),
    # ---- labels
    lib("labels-wrong-length", lambda c, t: B(c.metric, c.codes, np.arange(N_CODES - 1)), InvalidInput,
        rf"labels must have one entry per row \({N_CODES}\); got {N_CODES - 1}"),
    lib("labels-non-integral", lambda c, t: B(c.metric, c.codes, np.full(N_CODES, 0.5)), InvalidInput,
        r"labels must be integers; got non-integral value\(s\) \[0\.5, .*\] at rows \[0, 1, 2, 3, 4\]"),
    lib("labels-nan", lambda c, t: B(c.metric, c.codes, np.r_[np.nan, np.zeros(N_CODES - 1)]), InvalidInput,
        r"labels must be integers; got non-integral value\(s\) \[nan\] at rows \[0\]"),
    # ---- graph structure
    lib("disconnected-refused", lambda c, t: B(c.metric, two_blobs(), k=3, connect="error"), DisconnectedGraph,
        r"2 connected components \(sizes \[20, 20\]\); raise 'k' or use connect='bridge'"),
    lib("index-out-of-range", lambda c, t: shortest_path(c.graph, 0, N_CODES), InvalidInput,
        rf"'target' index {N_CODES} is out of range; expected 0 <= target < {N_CODES}"),
    lib("index-negative", lambda c, t: graph_distances(c.graph, [2, -1]), InvalidInput,
        rf"'sources' index -1 is out of range; expected 0 <= sources < {N_CODES}"),
    lib("index-bool", lambda c, t: shortest_path(c.graph, True, 2), InvalidInput,
        r"'source' index must be an int; got True"),
    lib("pairs-ragged", lambda c, t: shortest_paths(c.graph, [(0, 1), (2,)]), InvalidInput,
        r"pairs must be an array of shape \(m, 2\) of node indices; could not read"),
    # ---- decoders
    lib("decoder-nan", lambda c, t: PullbackMetric(as_decoder(lambda z: z * torch.nan, latent_dim=2)), DecoderError,
        r"decoder returned 6 non-finite value\(s\) in its mean \(shape \(3, 2\)\).*expected all finite"),
    lib("decoder-wrong-shape-probe", lambda c, t: PullbackMetric(as_decoder(lambda z: z.sum(1), latent_dim=2)),
        DecoderError, r"returned a mean of shape \(3,\) for 3 points; expected \(3, D\) with D >= 1"),
    lib("decoder-wrong-shape-batch",
        lambda c, t: B(PullbackMetric(as_decoder(shape_shifter, latent_dim=2)), c.codes, k=3), DecoderError,
        r"decoder returned \(3, 4\) for z of shape \((\d+), 2\); expected \(\1, 4\)"),
    lib("decoder-no-forward-mode",
        lambda c, t: B(PullbackMetric(as_decoder(jvp_hostile, latent_dim=2)), c.codes, k=3), DecoderError,
        r"decoder raised RuntimeError while computing forward-mode derivatives .*forward-mode AD can differentiate"),
    lib("decoder-raises", lambda c, t: as_decoder(raises(ZeroDivisionError("boom")), latent_dim=2), DecoderError,
        r"decoder raised ZeroDivisionError on 3 probe points of shape \(3, 2\).*boom"),
    # ---- names: backends, devices, datasets, variances
    lib("unknown-backend", lambda c, t: knn(c.codes, 3, backend="hnsw"), InvalidInput,
        r"Unknown kNN backend 'hnsw'; expected one of: 'auto', 'faiss', 'torch', 'kdtree'"),
    lib("unknown-device", lambda c, t: B(c.metric, c.codes, device="tpu"), InvalidInput,
        r"Unknown device 'tpu'; expected 'auto', 'cpu' or 'cuda'"),
    lib("cuda-unavailable", lambda c, t: cuda_missing(lambda: B(c.metric, c.codes, device="cuda")), InvalidInput,
        r"Device 'cuda' was asked for but CUDA is not available on this machine; use 'cpu' or 'auto'"),
    lib("unknown-dataset", lambda c, t: load_dataset("cifar:/data"), InvalidInput,
        r"Unknown dataset 'cifar:/data'\. Expected one of: 'digits', 'idx:DIR', 'npz:FILE', 'npy:FILE'"),
    lib("unknown-variance", lambda c, t: VAE.load(c.run).decoder("gauss"), InvalidInput,
        r"Unknown variance 'gauss'; expected one of: 'rbf', 'standard'"),
    # ---- graph artifacts
    lib("graph-truncated", lambda c, t: LatentGraph.load(truncate(graph_dir(c, t) / GRAPH_FILE).parent),
        ArtifactError, r"graph\.npz' is not a valid \.npz file \(corrupt, truncated or foreign\)"),
    lib("graph-corrupt-deflate", lambda c, t: LatentGraph.load(corrupt_deflate_npz(t / "g" / GRAPH_FILE).parent),
        ArtifactError, r"graph\.npz' is not a valid \.npz file \(corrupt, truncated or foreign\).*decompress"),
    lib("graph-foreign-zip", lambda c, t: LatentGraph.load(foreign_zip(t / "g" / GRAPH_FILE).parent),
        ArtifactError, r"graph\.npz' (is not a valid lsg-graph array file|has no lsg-graph metadata)"),
    lib("graph-newer-version",
        lambda c, t: LatentGraph.load(rewrite_graph(c, t, edit_meta=lambda m: {**m, "format_version": 999})),
        ArtifactError, r"written by a newer lsg-graph \(format version 999; this version reads up to 1\)\. Upgrade"),
    lib("graph-float-indices",
        lambda c, t: LatentGraph.load(rewrite_graph(c, t, lambda a: a.__setitem__("indices", a["indices"] * 1.0))),
        ArtifactError, r"'indices' must hold integers; got dtype float64"),
    lib("graph-params-not-object",
        lambda c, t: LatentGraph.load(rewrite_graph(c, t, edit_meta=lambda m: {**m, "params": "k=5"})),
        ArtifactError, r"the build parameters must be a JSON object; got str"),
    lib("graph-is-a-directory", lambda c, t: LatentGraph.load(directory_in_place(t, GRAPH_FILE)), ArtifactError,
        r"graph\.npz' is a directory, not a file; remove or rename it"),
    lib("save-onto-directory", lambda c, t: c.graph.save(directory_in_place(t, GRAPH_FILE)), ArtifactError,
        r"Cannot write '.*graph\.npz': a directory of that name is in the way"),
    lib("save-under-a-file", lambda c, t: c.graph.save(c.root / "a_file"), ArtifactError,
        r"a_file' is a file, not a directory; choose another run directory"),
    # ---- model artifacts
    lib("model-truncated", lambda c, t: VAE.load(truncate(copy_run(c, t) / MODEL_FILE).parent), ArtifactError,
        r"model\.safetensors' is not a valid safetensors file \(corrupt, truncated or foreign\)"),
    lib("model-newer-version",
        lambda c, t: VAE.load(rewrite_model(c, t, edit_meta=lambda m: {**m, "format_version": 999})), ArtifactError,
        r"model\.safetensors' was written by a newer lsg-graph \(format version 999.*Upgrade lsg-graph"),
    lib("model-meta-not-object", lambda c, t: VAE.load(rewrite_model(c, t, edit_meta=lambda m: [m])), ArtifactError,
        r"has metadata that is not a JSON object \(got list\)"),
    lib("model-forged-huge-config",
        lambda c, t: VAE.load(rewrite_model(c, t, edit_meta=lambda m: {
            **m, "config": {**m["config"], "input_dim": 10**6, "hidden_dims": [10**6]}})),
        ArtifactError, r"tensor 'encoder\.net\.0\.weight' has shape \(16, 6\), expected \(1000000, 1000000\)"),
    lib("model-nan-weights",
        lambda c, t: VAE.load(rewrite_model(c, t, lambda w: w["rbf_std.gammas"].fill_(float("nan")))),
        ArtifactError, r"tensor 'rbf_std\.gammas' holds NaN or inf values"),
    lib("model-is-a-directory", lambda c, t: VAE.load(directory_in_place(t, MODEL_FILE)), ArtifactError,
        r"model\.safetensors' is a directory, not a file"),
    lib("run-dir-is-a-file", lambda c, t: VAE.load(c.root / "a_file"), ArtifactError,
        r"run directory '.*a_file' is a file, not a directory"),
    lib("evaluate-without-model", lambda c, t: evaluate_run(c.root / "empty_run"), ArtifactError,
        r"No trained model in '.*empty_run': '.*model\.safetensors' does not exist; train one first"),
    # ---- CLI: the same errors as one line, exit code 1
    cli("cli-build-k-too-large", lambda c, t: ["build", "--run", str(c.run), "--k", "500", "-q"], InvalidInput,
        rf"'--k' option must be < the number of points \({N_DATA}\); got 500"),
    cli("cli-build-nodes-zero", lambda c, t: ["build", "--run", str(c.run), "--nodes", "0", "-q"], InvalidInput,
        r"'--nodes' option must be an int >= 1; got 0"),
    cli("cli-build-candidates-negative", lambda c, t: ["build", "--run", str(c.run), "--candidates", "-3", "-q"],
        InvalidInput, r"'--candidates' option must be an int >= 1; got -3"),
    cli("cli-build-unknown-backend", lambda c, t: ["build", "--run", str(c.run), "--backend", "hnsw", "-q"],
        InvalidInput, r"Unknown kNN backend 'hnsw'; expected one of"),
    cli("cli-build-unknown-device", lambda c, t: ["build", "--run", str(c.run), "--device", "gpu0", "-q"],
        InvalidInput, r"Unknown device 'gpu0'; expected 'auto', 'cpu' or 'cuda'"),
    cli("cli-build-unknown-dataset", lambda c, t: ["build", "--run", str(c.run), "--data", "cifar", "-q"],
        InvalidInput, r"Unknown dataset 'cifar'\. Expected one of"),
    cli("cli-build-labels-wrong-length",
        lambda c, t: ["build", "--run", str(c.run), "--data", f"npz:{c.data['bad_labels']}", "-q"], InvalidInput,
        rf"labels have {N_DATA - 1} entries but the images have {N_DATA} rows; expected one label per row"),
    cli("cli-build-data-wrong-width",
        lambda c, t: ["build", "--run", str(c.run), "--data", f"npz:{c.data['wide']}", "-q"], InvalidInput,
        r"have 5 features per sample but the run's model was trained on 6"),
    cli("cli-train-epochs-negative", lambda c, t: ["train", "--epochs", "-3", "--out", str(t / "r"), "-q"],
        InvalidInput, r"'--epochs' option must be an int >= 1; got -3"),
    cli("cli-train-latent-dim-negative", lambda c, t: ["train", "--latent-dim", "-1", "--out", str(t / "r"), "-q"],
        InvalidInput, r"'--latent-dim' option must be an int >= 1; got -1"),
    cli("cli-train-bad-spec", lambda c, t: ["train", "--data", "npz:", "--out", str(t / "r"), "-q"], InvalidInput,
        r"Bad dataset spec 'npz:': 'npz:FILE' expected"),
    cli("cli-train-out-is-a-file",
        lambda c, t: ["train", "--data", f"npz:{c.data['good']}", "--epochs", "1", "--rbf-epochs", "1",
                      "--out", str(c.root / "a_file"), "-q"],
        ArtifactError, r"a_file' is a file, not a directory; choose another run directory"),
    cli("cli-evaluate-without-model", lambda c, t: ["evaluate", "--run", str(c.root / "empty_run")], ArtifactError,
        r"No trained model in '.*empty_run'.*train one first with 'lsg-graph train --out"),
    cli("cli-evaluate-corrupt-model",
        lambda c, t: ["evaluate", "--run", str(truncate(copy_run(c, t) / MODEL_FILE).parent)], ArtifactError,
        r"model\.safetensors' is not a valid safetensors file"),
    cli("cli-geodesic-out-of-range", lambda c, t: ["geodesic", "--run", str(c.run), "--from", "0", "--to", "80"],
        InvalidInput, rf"'target' index {N_DATA} is out of range; expected 0 <= target < {N_DATA}"),
    cli("cli-geodesic-nan-coordinates",
        lambda c, t: ["geodesic", "--run", str(c.run), "--from", "nan,0", "--to", "3"], InvalidInput,
        r"Coordinates must be comma-separated decimal numbers \(e\.g\. 0\.5,-1\.2\); got 'nan,0'"),
    cli("cli-geodesic-wrong-dimension",
        lambda c, t: ["geodesic", "--run", str(c.run), "--from", "0.5,1,2", "--to", "3"], InvalidInput,
        r"coordinates have dimension 3 but the decoder expects latent dimension 2"),
    cli("cli-geodesic-truncated-graph",
        lambda c, t: ["geodesic", "--run", str(truncate(copy_run(c, t) / GRAPH_FILE).parent), "--from", "0",
                      "--to", "1"],
        ArtifactError, r"graph\.npz' is not a valid \.npz file \(corrupt, truncated or foreign\)"),
    cli("cli-geodesic-graph-is-a-directory",
        lambda c, t: ["geodesic", "--run", str(directory_in_place(t, GRAPH_FILE)), "--from", "0", "--to", "1"],
        ArtifactError, r"graph\.npz' is a directory, not a file"),
]



def test_table_is_large_and_ids_unique() -> None:
    """The table covers at least 30 cases, library and CLI, with unique ids."""
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 30
    assert sum(case.cli for case in CASES) >= 10


def _library_error(result: Any) -> BaseException | None:
    """The exception on the context chain of a CLI result's exit (the library error the handler turned into exit 1)."""
    exc = result.exception
    while exc is not None and not isinstance(exc, LsgGraphError):
        exc = exc.__context__
    return exc


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, ctx: Ctx, tmp_path: Path) -> None:
    """Each bad input raises exactly the expected LsgGraphError subclass with a message naming value and rule."""
    if not case.cli:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(LsgGraphError) as info:
                case.call(ctx, tmp_path)
        assert type(info.value) is case.error, f"{type(info.value).__name__}: {info.value}"
        assert info.value.__class__.__module__ == "lsg_graph.errors"
        message = str(info.value)
    else:
        result = runner.invoke(app, case.call(ctx, tmp_path))
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        assert isinstance(result.exception, SystemExit), repr(result.exception)  # handled, not an escaped exception
        lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
        assert len(lines) == 1, result.output
        error = _library_error(result)
        assert type(error) is case.error, repr(error)
        message = lines[0].removeprefix("Error: ")
        assert message == str(error)
    assert "\n" not in message.strip()
    assert re.search(case.match, message), f"{message!r} does not match {case.match!r}"


# ---------------------------------------------------------------------------------------------------------------
# Not errors: duplicate codes give zero-length edges and distance 0
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["kdtree", "torch", "faiss"])
def test_duplicate_codes_are_zero_distance_not_an_error(ctx: Ctx, backend: str) -> None:
    """Codes repeated many times (more copies than k) join at distance 0, with every backend."""
    codes = np.vstack([ctx.codes[:10], np.repeat(ctx.codes[:1], 8, axis=0)])
    graph = build_latent_graph(ctx.metric, codes, k=3, backend=backend)
    distances = graph_distances(graph, [0])[0]
    np.testing.assert_allclose(distances[10:], 0.0, atol=1e-300)
    assert np.isfinite(distances).all()
    path = shortest_path(graph, 10, 17)
    assert path.length == pytest.approx(0.0, abs=1e-300) and path.euclidean_distance == 0.0


def test_all_codes_identical(ctx: Ctx) -> None:
    """A graph of identical codes is one component of zero-length edges."""
    graph = build_latent_graph(ctx.metric, np.ones((6, 2)), k=5)
    assert graph.components()[0] == 1
    assert np.all(graph_distances(graph, [0, 5]) < 1e-300)


def test_zero_length_segments_have_zero_length(ctx: Ctx) -> None:
    """edge_lengths of a segment from a point to itself is exactly 0 (not NaN from a square root's derivative)."""
    np.testing.assert_array_equal(edge_lengths(ctx.metric, ctx.codes, ctx.codes), 0.0)


def test_training_on_fewer_points_than_centres_stays_finite() -> None:
    """n_centers >= n (every k-means cluster a single code) used to give a NaN RBF network; now weights are finite."""
    x = np.random.default_rng(0).uniform(0, 1, (20, 6)).astype(np.float32)
    vae, report = train_vae(x, VAEConfig(input_dim=6, epochs=1, rbf_epochs=2, hidden_dims=(16,)), progress=False)
    assert vae.config.n_centers == 20
    assert np.isfinite(report.stage2_losses).all()
    assert all(bool(torch.isfinite(tensor).all()) for tensor in vae.state_dict().values())


# ---------------------------------------------------------------------------------------------------------------
# Planted pickles are refused and never executed
# ---------------------------------------------------------------------------------------------------------------


class Plant:
    """An object whose unpickling creates a marker file (what a malicious pickle would do, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@pytest.fixture
def plant(tmp_path: Path) -> tuple[bytes, Path]:
    """A live pickle payload and its marker path (checked to work: plain pickle.loads does create the marker)."""
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(Plant(marker))
    pickle.loads(payload)  # noqa: S301 - our own harmless payload, to prove it is live
    assert marker.exists()
    marker.unlink()
    return payload, marker


def _object_array_npz(ctx: Ctx, tmp: Path, payload_object: object) -> Path:
    """A graph.npz with valid metadata and arrays, except that 'labels' is an object array holding the payload."""
    folder = graph_dir(ctx, tmp)
    arrays, meta = _io.load_arrays(folder / GRAPH_FILE, GRAPH_KIND)
    arrays["labels"] = np.array([payload_object] * N_CODES, dtype=object)
    arrays["__meta__"] = np.array(json.dumps(meta))
    np.savez(folder / GRAPH_FILE, **arrays)  # numpy pickles object arrays when saving
    return folder


def test_pickle_as_graph_file_is_refused(ctx: Ctx, tmp_path: Path, plant: tuple[bytes, Path]) -> None:
    payload, marker = plant
    folder = graph_dir(ctx, tmp_path)
    (folder / GRAPH_FILE).write_bytes(payload)
    with pytest.raises(ArtifactError, match=r"graph\.npz' contains pickled objects; lsg-graph never loads pickles"):
        LatentGraph.load(folder)
    result = runner.invoke(app, ["geodesic", "--run", str(folder), "--from", "0", "--to", "1"])
    assert result.exit_code == 1 and "never loads pickles" in result.output
    assert not marker.exists()


def test_pickle_as_model_file_is_refused(ctx: Ctx, tmp_path: Path, plant: tuple[bytes, Path]) -> None:
    payload, marker = plant
    run = copy_run(ctx, tmp_path)
    for write in (lambda path: path.write_bytes(payload), lambda path: torch.save({"w": Plant(marker)}, path)):
        write(run / MODEL_FILE)
        with pytest.raises(ArtifactError, match=r"model\.safetensors' is not a valid safetensors file"):
            VAE.load(run)
        result = runner.invoke(app, ["evaluate", "--run", str(run)])
        assert result.exit_code == 1 and "not a valid safetensors file" in result.output
    assert not marker.exists()


def test_object_array_inside_a_valid_npz_is_refused(ctx: Ctx, tmp_path: Path, plant: tuple[bytes, Path]) -> None:
    _, marker = plant
    folder = _object_array_npz(ctx, tmp_path, Plant(marker))
    assert not marker.exists()
    with pytest.raises(ArtifactError, match=r"graph\.npz' contains pickled objects; lsg-graph never loads pickles"):
        LatentGraph.load(folder)
    assert not marker.exists()


def test_pickle_as_user_data_is_refused(tmp_path: Path, plant: tuple[bytes, Path]) -> None:
    payload, marker = plant
    (tmp_path / "data.npy").write_bytes(payload)
    np.savez(tmp_path / "data.npz", x=np.array([[Plant(marker)]], dtype=object))
    with pytest.raises(InvalidInput, match=r"data\.npy' holds a pickle; pickles are refused"):
        load_dataset(f"npy:{tmp_path / 'data.npy'}")
    with pytest.raises(InvalidInput, match=r"'x' in .*data\.npz' is an object array; pickles are refused"):
        load_dataset(f"npz:{tmp_path / 'data.npz'}")
    assert not marker.exists()
