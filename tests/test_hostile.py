"""A generated hostile battery (issue 14): hypothesis draws CLI arguments, array files and artifact bytes; fixed
cases replay the inputs the issue found. Every case must end in success with correct numbers, or in one clear
library error: never a traceback, never a silently wrong result, never a lost model.

Case counts (derandomized, so CI runs the same cases every time): CLI_EXAMPLES generated command lines,
ARRAY_EXAMPLES array files, ARTIFACT_EXAMPLES x 3 corrupted artifacts, and len(FIXED) fixed command lines. All run on
the tiny run of tests/tiny_run.py, under a low LSG_GRAPH_MAX_WORK so that valid but heavy requests are refused fast.
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import dijkstra
from tiny_run import N_SAMPLES, copy_tiny_run, tiny_data, tiny_root
from typer.testing import CliRunner

from cli.main import app
from lsg_graph import _io
from lsg_graph.data import load_dataset
from lsg_graph.errors import ArtifactError, InvalidInput, LsgGraphError
from lsg_graph.graph.latent_graph import GRAPH_FILE, LatentGraph
from lsg_graph.model import MODEL_FILE, VAE

CLI_EXAMPLES = 120
ARRAY_EXAMPLES = 120
ARTIFACT_EXAMPLES = 40
BATTERY_MAX_WORK = 2 * 10**9  # the tiny run's valid requests need less; heavier ones are refused (and so tested)
runner = CliRunner()
SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
COUNTS: dict[str, int] = {}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the tiny run that the generated commands read and write (train goes elsewhere)."""
    return copy_tiny_run(tmp_path_factory.mktemp("hostile") / "run")


@pytest.fixture(autouse=True)
def low_work_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LSG_GRAPH_MAX_WORK", str(BATTERY_MAX_WORK))


# ---------------------------------------------------------------------------------------------------------------
# Invariants
# ---------------------------------------------------------------------------------------------------------------


def run_cli(args: list[str]) -> tuple[int, str]:
    """Invoke the app; a traceback, an escaped exception or an exit other than 0 / 1 (error) / 2 (usage) fails."""
    result = runner.invoke(app, args)
    output = result.output
    assert "Traceback" not in output, (args, output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, output)
    if result.exit_code == 1:
        errors = [line for line in output.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1 and len(errors[0]) > 12, (args, output)
    return result.exit_code, output


def assert_run_intact(run: Path) -> None:
    """The run is one complete version: model loads, manifest checksums match, the graph is bound to the model."""
    from lsg_graph.pipeline import load_graph

    model = VAE.load(run)
    manifest = json.loads((run / _io.MANIFEST_NAME).read_text())
    for entry in manifest["artifacts"].values():
        for name, record in entry["files"].items():
            assert _io.sha256_file(run / name) == record["sha256"], name
    assert manifest["artifacts"]["model"]["files"][MODEL_FILE]["sha256"] == model.checksum
    if (run / GRAPH_FILE).exists():
        graph = load_graph(run)
        assert graph.n_points == N_SAMPLES and np.isfinite(graph.codes).all()


def number(output: str, label: str) -> float:
    """The first number after `label` in a command's table."""
    match = re.search(rf"{re.escape(label)}\s+([-+0-9.eE]+|nan|inf)", output)
    assert match, (label, output)
    return float(match.group(1))


def check_success(args: list[str], output: str, run: Path) -> None:
    """Independent checks of a command that exited 0: its printed or written numbers are right."""
    command = args[0]
    if command == "geodesic":
        graph = LatentGraph.load(run)
        source, target = args[args.index("--from") + 1], args[args.index("--to") + 1]
        length = number(output, "graph length")
        assert math.isfinite(length) and length >= 0
        if "," not in source and "," not in target:
            expected = dijkstra(graph.weights, directed=False, indices=int(source))[int(target)]
            assert length == pytest.approx(expected, rel=1e-5), (args, output)
    elif command == "walk":
        kind = args[args.index("--kind") + 1] if "--kind" in args else "metric"
        walks = np.load(run / f"walks_{kind}.npy")
        steps = int(args[args.index("--steps") + 1]) if "--steps" in args else 100
        walkers = int(args[args.index("--walkers") + 1]) if "--walkers" in args else 8
        assert walks.shape == (walkers, steps + 1, 2) and np.isfinite(walks).all()
        assert f"{walkers} {kind} walkers x {steps} steps" in output
    elif command == "cluster":
        table = np.loadtxt(run / "clusters.csv", delimiter=",", skiprows=1, dtype=np.int64)
        k = int(args[args.index("--clusters") + 1]) if "--clusters" in args else 10
        assert table.shape[0] == N_SAMPLES and table[:, 1].min() >= 0 and table[:, 1].max() < k
        assert sorted(np.bincount(table[:, 1], minlength=k).tolist()) == sorted(
            int(size) for size in re.search(r"cluster sizes\s+([0-9 ]+)", output).group(1).split())
    elif command == "build":
        graph = LatentGraph.load(run)
        if "--k" in args:
            assert graph.params["k"] == int(args[args.index("--k") + 1])
        assert f"Latent graph of {graph.n_points} codes" in output
    elif command == "evaluate":
        assert all(math.isfinite(float(value)) for value in re.findall(r"-?\d+\.\d+", output))


# ---------------------------------------------------------------------------------------------------------------
# Generated command lines
# ---------------------------------------------------------------------------------------------------------------

INTS = ["0", "1", "2", "3", "-1", "-4", "7", "119", "120", "5000", str(10**12), str(2**63), "1e12", "1_0",
        "\u0661\u0662", "", " ", "nan", "0x10", "2.5", "99999999999999999999999"]
SMALL = ["1", "2", "3", "5"]
FLOATS = ["0", "-1", "1e-3", "0.01", "1e300", "inf", "nan", "-inf", "1e-320", "abc", "1e39"]
POINTS = ["0", "5", "119", "120", "-1", "1_0", "0.5,-0.2", "0,0", "1e39,0", "1e8,0", "nan,0", "inf,0", "0,0,0",
          "a,b", "\u0661,\u0662", ",", "0.1,", " 3 ", "99999999999999999999999", "1e-320,1e-320"]
DATA = ["digits:x", "npz:", "npz:/no/such.npz", "idx:/dev", "/dev/zero", "csv:", "mnist", "", "npy:/dev/null"]
SEEDS = ["0", "1", "-1", str(2**32), str(2**32 - 1), "abc"]


def options(**choices: list[str]) -> st.SearchStrategy[list[str]]:
    """A strategy of option lists: each option present or not, with a value drawn from its hostile choices."""
    def build(picked: dict[str, str | None]) -> list[str]:
        args: list[str] = []
        for name, value in picked.items():
            if value is not None:
                args += [name] if value == "<flag>" else [name, value]
        return args

    return st.fixed_dictionaries({
        name: st.one_of(st.none(), st.sampled_from(values)) for name, values in choices.items()
    }).map(build)


COMMANDS = {
    "geodesic": options(**{"--refine": ["none", "bogus", ""], "--device": ["cpu", "tpu"]}),
    "walk": options(**{"--start": INTS, "--steps": SMALL + INTS, "--kind": ["metric", "euclidean", "brownian", "levy"],
                       "--step-size": FLOATS, "--walkers": SMALL + INTS, "--seed": SEEDS}),
    "cluster": options(**{"--clusters": SMALL + INTS, "--n-init": SMALL + INTS, "--seed": SEEDS}),
    "build": options(**{"--k": SMALL + INTS, "--nodes": SMALL + INTS, "--backend": ["kdtree", "torch", "hnsw", ""],
                        "--candidates": SMALL + INTS, "--seed": SEEDS, "--data": DATA, "--device": ["cpu", "x"]}),
    "evaluate": options(**{"--samples": SMALL + INTS, "--seed": SEEDS}),
    "plot": options(**{"--pairs": INTS, "--refine": ["bogus", ""], "--seed": SEEDS}),
    "train": options(**{"--epochs": ["1", "0", "-1", str(10**12), "abc"], "--rbf-epochs": ["0", "1", "-2"],
                        "--latent-dim": ["1", "2", "0", str(10**9)], "--seed": SEEDS,
                        "--architecture": ["mlp", "conv", "x"], "--data": DATA}),
}


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    command = draw(st.sampled_from(sorted(COMMANDS)))
    args = [command, *draw(COMMANDS[command])]
    if command == "geodesic":
        args += ["--from", draw(st.sampled_from(POINTS)), "--to", draw(st.sampled_from(POINTS))]
        if "--refine" not in args:
            args += ["--refine", "none"]  # shooting is tested elsewhere; here it would cost seconds per case
    if command == "plot" and "--refine" not in args:
        args += ["--refine", "none"]  # as for geodesic: refinement is not what this battery is about
    if command == "walk":
        args.append("--no-figures")
    if command == "cluster":
        args.append("--no-figure")
    if command in ("build", "train"):
        args.append("-q")
    return args


@settings(max_examples=CLI_EXAMPLES, **SETTINGS)
@given(args=command_lines())
def test_generated_command_lines(shared: Path, tmp_path_factory: pytest.TempPathFactory, args: list[str]) -> None:
    """No traceback; exit 0 only with right numbers; exit 1 with one 'Error:' line; the run stays one complete version."""
    COUNTS["cli"] = COUNTS.get("cli", 0) + 1
    if args[0] == "train":
        target = ["--out", str(tmp_path_factory.mktemp("train") / "run")]
        if "--data" not in args:
            target += ["--data", tiny_data()]
    else:
        target = ["--run", str(shared)]
    code, output = run_cli([*args, *target])
    if code == 0 and args[0] != "train":
        check_success(args, output, shared)
    assert_run_intact(shared)


# The inputs of the issue, replayed as they were typed (plus neighbours of each).
FIXED = [
    ["train", "--rbf-epochs", "0", "--epochs", "1", "-q"],
    ["plot", "--seed", "-4"],
    ["geodesic", "--from", "1e39,0", "--to", "1"],
    ["geodesic", "--from", "1_0", "--to", "1"],
    ["geodesic", "--from", "\u0661", "--to", "1"],
    ["geodesic", "--from", "0", "--to", "1e308,1e308"],
    ["geodesic", "--from", "nan,0", "--to", "1"],
    ["build", "--seed", "-1", "-q"],
    ["evaluate", "--samples", str(10**12)],
    ["walk", "--walkers", str(10**12), "--no-figures"],
    ["walk", "--steps", str(10**9), "--no-figures"],
    ["walk", "--step-size", "1e300", "--kind", "euclidean", "--steps", "5", "--no-figures"],
    ["walk", "--step-size", "1e300", "--steps", "5", "--no-figures"],
    ["build", "--nodes", str(10**7), "-q"],
    ["build", "--nodes", "3000", "-q"],
    ["train", "--latent-dim", str(10**9), "-q"],
    ["train", "--epochs", str(10**12), "-q"],
    ["plot", "--pairs", str(10**5)],
    ["cluster", "--n-init", str(10**12), "--no-figure"],
    ["cluster", "--clusters", "0", "--no-figure"],
    ["cluster", "--clusters", str(N_SAMPLES + 1), "--no-figure"],
    ["build", "--data", "/dev/zero", "-q"],
    ["build", "--data", "npy:/dev/zero", "-q"],
    ["build", "--data", "idx:/dev", "-q"],
    ["build", "--backend", "faiss", "-q"],
    ["build", "--k", str(N_SAMPLES), "-q"],
    ["build", "--k", str(N_SAMPLES - 1), "-q"],
    ["geodesic", "--from", "0", "--to", str(N_SAMPLES - 1), "--refine", "none"],
    ["geodesic", "--from", "0.1,0.2", "--to", "3", "--refine", "none"],
    ["walk", "--kind", "euclidean", "--steps", "3", "--walkers", "2", "--no-figures"],
    ["evaluate", "--samples", "2"],
]


@pytest.mark.parametrize("args", FIXED, ids=[" ".join(args)[:60] for args in FIXED])
def test_fixed_cases(shared: Path, tmp_path: Path, args: list[str]) -> None:
    """The issue's cases: handled (exit 0 with right numbers, or one error line), the run intact."""
    COUNTS["fixed"] = COUNTS.get("fixed", 0) + 1
    target = ["--out", str(tmp_path / "run"), "--data", tiny_data()] if args[0] == "train" else ["--run", str(shared)]
    code, output = run_cli([*args, *target])
    if code == 0 and args[0] != "train":
        check_success(args, output, shared)
    assert_run_intact(shared)


# ---------------------------------------------------------------------------------------------------------------
# Generated array files
# ---------------------------------------------------------------------------------------------------------------

DTYPES = ["<f4", "<f8", ">f8", "<i8", "|u1", "<u8", "|b1", "<c8", "<U3", "<f2", "<i2"]


@st.composite
def array_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(suffix, bytes): a valid .npy/.npz of a random small array, then maybe mutated (truncated, flipped, forged)."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=1, max_size=3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = rng.normal(size=shape) * draw(st.sampled_from([1.0, 255.0, 1e30, 1e300]))
    if dtype.kind in "iub":
        values = np.clip(values, -100, 100)
    with np.errstate(all="ignore"):
        array = values.astype(dtype)
    if draw(st.booleans()) and array.size and dtype.kind == "f":
        array.flat[draw(st.integers(0, array.size - 1))] = draw(st.sampled_from([np.nan, np.inf]))
    buffer = io.BytesIO()
    suffix = draw(st.sampled_from([".npy", ".npz"]))
    if suffix == ".npy":
        np.save(buffer, array, allow_pickle=False)
    else:
        key = draw(st.sampled_from(["x", "X", "data", "images", "other"]))
        members = {key: array}
        if draw(st.booleans()):
            members[draw(st.sampled_from(["y", "labels"]))] = rng.integers(-2, 5, size=shape[:1])
        (np.savez_compressed if draw(st.booleans()) else np.savez)(buffer, **members)
    data = bytearray(buffer.getvalue())
    mutation = draw(st.sampled_from(["none", "none", "truncate", "flip", "append", "forge-shape", "random"]))
    if mutation == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif mutation == "flip" and data:
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif mutation == "append":
        data += draw(st.binary(min_size=1, max_size=64))
    elif mutation == "forge-shape":
        data = bytearray(re.sub(rb"'shape': \([0-9, ]*\)", b"'shape': (1000000000000, 3)", bytes(data), count=1))
    elif mutation == "random":
        data = bytearray(draw(st.binary(max_size=300)))
    return suffix, bytes(data)


def reference_load(path: Path) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Independent reading with plain numpy (the same key rules): samples as float32 (n, D) and labels, or None."""
    try:
        loaded = np.load(path, allow_pickle=False)
        labels = None
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                keys = [key for key in ("x", "X", "data", "images") if key in loaded.files]
                label_keys = [key for key in ("y", "labels", "targets") if key in loaded.files]
                labels = loaded[label_keys[0]] if label_keys else None
                loaded = loaded[keys[0]]
        return loaded.reshape(loaded.shape[0], -1).astype(np.float32), labels
    except Exception:  # noqa: BLE001 - the reference may fail any way it likes
        return None


@settings(max_examples=ARRAY_EXAMPLES, **SETTINGS)
@given(case=array_files())
def test_generated_array_files(tmp_path_factory: pytest.TempPathFactory, case: tuple[str, bytes]) -> None:
    """Loading gives the same samples and labels as numpy itself, or InvalidInput; nothing else escapes, nothing is
    bent (labels never wrap and never hold the attached-point marker -1)."""
    COUNTS["arrays"] = COUNTS.get("arrays", 0) + 1
    suffix, data = case
    path = tmp_path_factory.mktemp("arrays") / f"a{suffix}"
    path.write_bytes(data)
    try:
        dataset = load_dataset(f"{suffix[1:]}:{path}")
    except InvalidInput:
        COUNTS["arrays refused"] = COUNTS.get("arrays refused", 0) + 1
        return
    reference = reference_load(path)
    assert reference is not None, "lsg-graph loaded a file numpy cannot read"
    images, labels = reference
    np.testing.assert_array_equal(dataset.images, images)
    assert np.isfinite(dataset.images).all()
    if dataset.labels is not None:
        np.testing.assert_array_equal(dataset.labels, labels)
        assert (dataset.labels != -1).all()


# ---------------------------------------------------------------------------------------------------------------
# Generated artifact bytes
# ---------------------------------------------------------------------------------------------------------------


@st.composite
def corruptions(draw: st.DrawFn, size: int) -> list[tuple[str, int, int]]:
    """A few (operation, position, value) edits of a file of `size` bytes."""
    return draw(st.lists(st.tuples(st.sampled_from(["flip", "truncate", "insert", "zero"]), st.integers(0, size - 1),
                                   st.integers(1, 255)), min_size=1, max_size=3))


def corrupt(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for operation, position, value in edits:
        position = min(position, max(len(out) - 1, 0))
        if operation == "flip" and out:
            out[position] ^= value
        elif operation == "truncate":
            out = out[:position]
        elif operation == "insert":
            out[position:position] = bytes([value])
        elif out:
            out[position : position + value] = bytes(len(out[position : position + value]))
    return bytes(out)


def _artifact_case(tmp: Path, name: str, edits: list[tuple[str, int, int]]) -> Path:
    run = copy_tiny_run(tmp / "run")
    (run / name).write_bytes(corrupt((tiny_root() / "run" / name).read_bytes(), edits))
    return run


GRAPH_SIZE = None


def artifact_size(name: str) -> int:
    return (tiny_root() / "run" / name).stat().st_size


@settings(max_examples=ARTIFACT_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_corrupted_graph_files(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    """A corrupted graph.npz loads identical to the original (edits the format ignores) or raises ArtifactError."""
    COUNTS["graph"] = COUNTS.get("graph", 0) + 1
    run = _artifact_case(tmp_path_factory.mktemp("g"), GRAPH_FILE, data.draw(corruptions(artifact_size(GRAPH_FILE))))
    try:
        graph = LatentGraph.load(run)
    except ArtifactError:
        return
    original = LatentGraph.load(tiny_root() / "run")
    np.testing.assert_array_equal(graph.codes, original.codes)
    assert (graph.weights != original.weights).nnz == 0 and graph.params == original.params
    np.testing.assert_array_equal(graph.labels, original.labels)


@settings(max_examples=ARTIFACT_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_corrupted_model_files(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    """A corrupted model.safetensors loads with identical weights or raises ArtifactError (checksummed)."""
    COUNTS["model"] = COUNTS.get("model", 0) + 1
    run = _artifact_case(tmp_path_factory.mktemp("m"), MODEL_FILE, data.draw(corruptions(artifact_size(MODEL_FILE))))
    try:
        model = VAE.load(run)
    except ArtifactError:
        return
    original = VAE.load(tiny_root() / "run")
    for name, tensor in original.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


JOURNALS = st.one_of(
    st.binary(max_size=200),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                 lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children,
                                                                                  max_size=3), max_leaves=8)
    .map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({
        "staging": st.sampled_from([".lsg-graph.staging.x", "../x", "/etc", ".lsg-graph.staging.real", 3]),
        "replace": st.lists(st.sampled_from([MODEL_FILE, "../x", ".hidden", "graph.npz", "a/b", 5]), max_size=3),
        "remove": st.lists(st.sampled_from([MODEL_FILE, "graph.npz", "..", "manifest.json"]), max_size=3),
    }).map(lambda value: json.dumps(value).encode()),
)


@settings(max_examples=ARTIFACT_EXAMPLES, **SETTINGS)
@given(journal=JOURNALS)
def test_forged_journals(tmp_path_factory: pytest.TempPathFactory, journal: bytes) -> None:
    """A forged or corrupt commit journal is never applied (it must carry the checksum of its own content): readers and
    writers refuse it (ArtifactError) and the model keeps its bytes."""
    COUNTS["journal"] = COUNTS.get("journal", 0) + 1
    run = copy_tiny_run(tmp_path_factory.mktemp("j") / "run")
    (run / ".lsg-graph.staging.real").mkdir()  # an empty staging folder: a journal naming it replaces nothing
    (run / _io.JOURNAL_NAME).write_bytes(journal)
    before = (run / MODEL_FILE).read_bytes()
    try:
        with _io.run_lock(run):
            pass
    except LsgGraphError:
        pass
    try:
        VAE.load(run)
    except ArtifactError:
        pass
    assert (run / MODEL_FILE).read_bytes() == before  # a journal without its checksum is never applied
    if not (run / _io.JOURNAL_NAME).exists():
        VAE.load(run)


def test_battery_size() -> None:
    """The battery runs at least 300 cases (counted as they run; printed for the report)."""
    total = sum(value for name, value in COUNTS.items() if name != "arrays refused")
    print(f"hostile battery: {COUNTS} = {total} cases")
    if {"cli", "fixed", "arrays", "graph", "model", "journal"} <= set(COUNTS):  # the whole module ran
        assert total >= 300, COUNTS
