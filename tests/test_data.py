"""Tests of lsg_graph.data: digits, the IDX reader, .npy/.npz files, in-memory arrays, specs and splits."""

from __future__ import annotations

import gzip
import importlib
import importlib.abc
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import lsg_graph
from lsg_graph import data
from lsg_graph.data import (
    DATASETS,
    Dataset,
    load_array_file,
    load_dataset,
    load_digits,
    load_idx,
    make_dataset,
    read_idx,
    train_test_split_indices,
)
from lsg_graph.errors import InvalidInput

IDX_NAMES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """Return the IDX encoding of `array`: magic (0x0000, type code, ndim), big-endian uint32 dims, data."""
    header = struct.pack(">HBB", 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write `array` (uint8) as an IDX file, gzipped when asked; return the path."""
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def write_mnist(folder: Path, seed: int = 0, compress: bool = False, labels: bool = True) -> dict[str, np.ndarray]:
    """Write tiny train (5) and test (3) 28x28 IDX splits into `folder`; return the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, size=5, dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, size=3, dtype=np.uint8),
    }
    suffix = ".gz" if compress else ""
    for split in ("train", "test"):
        write_idx(folder / (IDX_NAMES[split, "images"] + suffix), arrays[f"{split}_images"], compress)
        if labels:
            write_idx(folder / (IDX_NAMES[split, "labels"] + suffix), arrays[f"{split}_labels"], compress)
    return arrays


# --- digits -------------------------------------------------------------------------------------------------------


def test_digits_shape_range_labels() -> None:
    dataset = load_digits()
    assert dataset.name == "digits"
    assert dataset.images.shape == (1797, 64) and dataset.images.dtype == np.float32
    assert dataset.images.min() == 0.0 and dataset.images.max() == 1.0
    assert dataset.labels is not None and dataset.labels.dtype == np.int64
    assert set(dataset.labels.tolist()) == set(range(10))
    assert dataset.image_shape == (8, 8)
    assert (dataset.n_samples, dataset.n_features) == (1797, 64)


def test_subset_keeps_rows_labels_and_shape() -> None:
    dataset = load_digits()
    part = dataset.subset([3, 0, 10])
    np.testing.assert_array_equal(part.images, dataset.images[[3, 0, 10]])
    np.testing.assert_array_equal(part.labels, dataset.labels[[3, 0, 10]])
    assert part.image_shape == (8, 8) and part.name == "digits"
    mask = np.zeros(dataset.n_samples, dtype=bool)
    mask[[1, 2]] = True
    assert dataset.subset(mask).n_samples == 2


@pytest.mark.parametrize(
    ("indices", "match"),
    [([1797], "1797 is out of range"), ([-1], "-1 is out of range"), ([], "at least one"), ([0.5], "ints")],
)
def test_subset_rejects_bad_indices(indices: list, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        load_digits().subset(indices)


# --- IDX ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    read = read_idx(write_idx(tmp_path / "a-idx3-ubyte", array, compress))
    assert read.dtype == np.uint8
    np.testing.assert_array_equal(read, array)


def test_read_idx_big_endian_types(tmp_path: Path) -> None:
    array = np.array([[1, -2], [300, 70000]], dtype=">i4")
    path = tmp_path / "ints.idx"
    path.write_bytes(idx_bytes(array, type_code=0x0C))
    read = read_idx(path)
    assert read.dtype == np.dtype(np.int32) and read.dtype.isnative
    np.testing.assert_array_equal(read, [[1, -2], [300, 70000]])


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("split", ["train", "test", "all"])
def test_load_idx_direct_reads_back_exactly(tmp_path: Path, compress: bool, split: str) -> None:
    arrays = write_mnist(tmp_path, compress=compress)
    dataset = load_idx(tmp_path, split=split, backend="direct")
    parts = ["train", "test"] if split == "all" else [split]
    images = np.concatenate([arrays[f"{part}_images"] for part in parts])
    labels = np.concatenate([arrays[f"{part}_labels"] for part in parts])
    assert dataset.images.dtype == np.float32 and dataset.images.shape == (len(images), 784)
    np.testing.assert_array_equal(dataset.images, images.reshape(len(images), -1).astype(np.float32) / 255)
    np.testing.assert_array_equal(dataset.labels, labels)
    assert dataset.labels.dtype == np.int64
    assert dataset.image_shape == (28, 28)
    assert dataset.name.startswith(f"idx:{tmp_path.resolve()}")


def test_load_idx_dot_spelling_and_auto_backend(tmp_path: Path) -> None:
    images = np.full((2, 28, 28), 255, dtype=np.uint8)
    write_idx(tmp_path / "train-images.idx3-ubyte.gz", images, compress=True)
    write_idx(tmp_path / "train-labels.idx1-ubyte", np.array([4, 2], dtype=np.uint8))
    dataset = load_idx(tmp_path)
    assert dataset.images.shape == (2, 784) and np.all(dataset.images == 1.0)
    np.testing.assert_array_equal(dataset.labels, [4, 2])


def test_load_idx_without_labels(tmp_path: Path) -> None:
    write_mnist(tmp_path, labels=False)
    dataset = load_idx(tmp_path, backend="direct")
    assert dataset.labels is None and dataset.n_samples == 8


def test_load_idx_labels_of_one_split_only_are_dropped_with_warning(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / IDX_NAMES["test", "labels"]).unlink()
    with pytest.warns(UserWarning, match="Only some IDX splits"):
        dataset = load_idx(tmp_path, backend="direct")
    assert dataset.labels is None and dataset.n_samples == 8
    assert load_idx(tmp_path, split="train", backend="direct").labels is not None


def test_truncated_idx_file_rejected(tmp_path: Path) -> None:
    path = write_idx(tmp_path / IDX_NAMES["train", "images"], np.zeros((3, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(InvalidInput, match=r"train-images-idx3-ubyte.*truncated"):
        load_idx(tmp_path, backend="direct")
    path.write_bytes(b"\x00\x00")
    with pytest.raises(InvalidInput, match="truncated"):
        read_idx(path)


def test_truncated_gzip_idx_file_rejected(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x.gz", np.zeros((3, 28, 28), dtype=np.uint8), compress=True)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(InvalidInput, match=r"x\.gz.*gzip"):
        read_idx(path)


def test_bad_magic_rejected(tmp_path: Path) -> None:
    path = tmp_path / IDX_NAMES["train", "images"]
    path.write_bytes(b"\x12\x34\x08\x03" + bytes(100))
    with pytest.raises(InvalidInput, match=r"train-images-idx3-ubyte.*bad magic number 0x12340803"):
        load_idx(tmp_path, backend="direct")
    path.write_bytes(b"\x00\x00\x07\x03" + bytes(100))
    with pytest.raises(InvalidInput, match="bad magic number 0x00000703"):
        read_idx(path)


def test_trailing_bytes_rejected(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "a.idx", np.zeros((2, 2), dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(InvalidInput, match="trailing"):
        read_idx(path)


def test_idx_label_count_mismatch(tmp_path: Path) -> None:
    write_idx(tmp_path / IDX_NAMES["train", "images"], np.zeros((3, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / IDX_NAMES["train", "labels"], np.zeros(4, dtype=np.uint8))
    with pytest.raises(InvalidInput, match=r"has 4 labels but .* has 3 images"):
        load_idx(tmp_path, backend="direct")


def test_idx_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="missing.*does not exist"):
        load_idx(tmp_path / "missing")
    with pytest.raises(InvalidInput, match="train-images-idx3-ubyte.*t10k-images-idx3-ubyte"):
        load_idx(tmp_path)
    write_mnist(tmp_path)
    (tmp_path / IDX_NAMES["test", "images"]).unlink()
    with pytest.raises(InvalidInput, match="split 'test'.*t10k-images-idx3-ubyte"):
        load_idx(tmp_path, split="test")
    with pytest.raises(InvalidInput, match="'validation'.*'train'"):
        load_idx(tmp_path, split="validation")
    with pytest.raises(InvalidInput, match="not a directory"):
        load_idx(tmp_path / IDX_NAMES["train", "images"])


def fake_torchvision(monkeypatch: pytest.MonkeyPatch, mnist: object) -> None:
    """Install a fake torchvision whose datasets.MNIST is `mnist` (a class, or an exception to raise on import)."""
    datasets = types.ModuleType("torchvision.datasets")
    if isinstance(mnist, Exception):
        def fail(name: str) -> object:
            raise mnist
        datasets.__getattr__ = fail  # type: ignore[attr-defined]
    else:
        datasets.MNIST = mnist  # type: ignore[attr-defined]
    package = types.ModuleType("torchvision")
    package.datasets = datasets  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)


def test_torchvision_used_for_its_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_mnist(raw)
    calls = []

    class FakeMNIST:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train, download))
            split = "train" if train else "test"
            self.data = np.full((2, 28, 28), 51 if train else 102, dtype=np.uint8)
            self.targets = np.array([1, 2] if split == "train" else [3, 4])

    fake_torchvision(monkeypatch, FakeMNIST)
    dataset = load_idx(tmp_path)
    assert calls == [(str(tmp_path), True, False), (str(tmp_path), False, False)]
    np.testing.assert_allclose(dataset.images[:, 0], [0.2, 0.2, 0.4, 0.4])
    np.testing.assert_array_equal(dataset.labels, [1, 2, 3, 4])
    assert load_idx(raw, backend="direct").n_samples == 8  # the raw folder itself is accepted too


@pytest.mark.parametrize("error", [RuntimeError("CUDA torch needed"), OSError("libc10_cuda.so"), ImportError("x")])
def test_broken_torchvision_falls_back_to_direct_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = write_mnist(raw)
    fake_torchvision(monkeypatch, error)
    dataset = load_idx(tmp_path)
    np.testing.assert_array_equal(dataset.labels, np.concatenate([arrays["train_labels"], arrays["test_labels"]]))
    with pytest.raises(InvalidInput, match="torchvision could not load"):
        load_idx(tmp_path, backend="torchvision")


def test_failing_torchvision_dataset_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_mnist(raw)

    class BrokenMNIST:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("Dataset not found")

    fake_torchvision(monkeypatch, BrokenMNIST)
    assert load_idx(tmp_path).n_samples == 8


def test_import_does_not_import_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[str] = []

    class Recorder(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: object = None, target: object = None) -> None:
            if name.split(".")[0] == "torchvision":
                attempts.append(name)

    for name in [name for name in sys.modules if name.split(".")[0] == "torchvision"] + ["lsg_graph.data"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(lsg_graph, "data", data)  # restored afterwards, so later imports see the original module
    monkeypatch.setattr(sys, "meta_path", [Recorder(), *sys.meta_path])
    importlib.import_module("lsg_graph.data")
    assert attempts == []


# --- .npy / .npz --------------------------------------------------------------------------------------------------


def test_npy_round_trip_2d(tmp_path: Path) -> None:
    array = np.random.default_rng(0).normal(size=(6, 5)) * 100
    np.save(tmp_path / "x.npy", array)
    dataset = load_array_file(tmp_path / "x.npy")
    np.testing.assert_array_equal(dataset.images, array.astype(np.float32))
    assert dataset.labels is None and dataset.image_shape is None
    assert dataset.name == f"npy:{(tmp_path / 'x.npy').resolve()}"


def test_npy_nd_is_flattened_with_image_shape(tmp_path: Path) -> None:
    array = np.arange(4 * 3 * 2 * 2, dtype=np.int16).reshape(4, 3, 2, 2)
    np.save(tmp_path / "x.npy", array)
    dataset = load_array_file(str(tmp_path / "x.npy"))
    assert dataset.images.shape == (4, 12) and dataset.image_shape == (3, 2, 2)
    np.testing.assert_array_equal(dataset.images.reshape(4, 3, 2, 2), array)


@pytest.mark.parametrize("image_key", ["x", "X", "data", "images"])
@pytest.mark.parametrize("label_key", ["y", "labels", "targets", None])
def test_npz_key_variants(tmp_path: Path, image_key: str, label_key: str | None) -> None:
    images = np.random.default_rng(1).random((7, 3))
    labels = np.arange(7) % 3
    arrays = {image_key: images} | ({label_key: labels} if label_key else {})
    np.savez(tmp_path / "d.npz", **arrays)
    dataset = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    np.testing.assert_array_equal(dataset.images, images.astype(np.float32))
    if label_key is None:
        assert dataset.labels is None
    else:
        np.testing.assert_array_equal(dataset.labels, labels)


def test_npz_float_integral_labels_and_image_shape_key(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "d.npz", X=np.zeros((2, 6)), y=np.array([1.0, 2.0]), image_shape=np.array([2, 3]))
    dataset = load_array_file(tmp_path / "d.npz")
    assert dataset.labels.dtype == np.int64 and dataset.labels.tolist() == [1, 2]
    assert dataset.image_shape == (2, 3)


def test_npz_key_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", features=np.zeros((2, 2)))
    with pytest.raises(InvalidInput, match=r"a\.npz.*no samples array.*'features'"):
        load_array_file(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x=np.zeros((2, 2)), X=np.zeros((2, 2)))
    with pytest.raises(InvalidInput, match="several of the keys"):
        load_array_file(tmp_path / "b.npz")


def test_object_arrays_and_pickles_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "o.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInput, match=r"o\.npy.*pickles are refused"):
        load_array_file(tmp_path / "o.npy")
    np.savez(tmp_path / "o.npz", x=np.zeros((2, 2)), y=np.array([1, None], dtype=object))
    with pytest.raises(InvalidInput, match=r"'y' in .*o\.npz.*object array.*pickles are refused"):
        load_array_file(tmp_path / "o.npz")
    (tmp_path / "p.npy").write_bytes(pickle.dumps(np.zeros((2, 2))))
    with pytest.raises(InvalidInput, match=r"p\.npy.*holds a pickle; pickles are refused"):
        load_array_file(tmp_path / "p.npy")


def test_corrupt_npz_rejected(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", x=np.zeros((50, 50)))
    path = tmp_path / "c.npz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InvalidInput, match=r"c\.npz"):
        load_array_file(path)


def test_nan_rows_named(tmp_path: Path) -> None:
    array = np.zeros((6, 3))
    array[2, 1] = np.nan
    array[5, 0] = np.inf
    np.save(tmp_path / "n.npy", array)
    with pytest.raises(InvalidInput, match=r"2 row\(s\); first bad rows: \[2, 5\]"):
        load_array_file(tmp_path / "n.npy")


def test_wrong_label_length(tmp_path: Path) -> None:
    np.savez(tmp_path / "w.npz", x=np.zeros((4, 2)), y=np.arange(3))
    with pytest.raises(InvalidInput, match="labels have 3 entries but the images have 4 rows"):
        load_array_file(tmp_path / "w.npz")


def test_missing_array_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="nope.npz.*does not exist"):
        load_dataset(str(tmp_path / "nope.npz"))


# --- make_dataset -------------------------------------------------------------------------------------------------


def test_make_dataset_valid() -> None:
    dataset = make_dataset(np.ones((3, 4), dtype=np.float64), [0, 1, 1], name="mine", image_shape=(2, 2))
    assert isinstance(dataset, Dataset)
    assert dataset.images.dtype == np.float32 and dataset.labels.dtype == np.int64
    assert dataset.image_shape == (2, 2) and dataset.name == "mine"


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (np.float64(3.0), None, r"2-D array .* got shape \(\)"),
        (np.zeros(5), None, r"got shape \(5,\).*reshape\(-1, 1\)"),
        (np.zeros((0, 3)), None, r"must not be empty; got shape \(0, 3\)"),
        (np.zeros((3, 0)), None, r"must not be empty; got shape \(3, 0\)"),
        (np.array([["a", "b"]]), None, "real numbers; got an array of dtype <U1"),
        (np.ones((2, 2), dtype=complex), None, "real numbers; got an array of dtype complex128"),
        (np.zeros((3, 2)), [0.0, 1.5, 2.0], r"non-integral .*\[1\.5\] at rows \[1\]"),
        (np.zeros((3, 2)), [0, 1], "labels have 2 entries but the images have 3 rows"),
        (np.zeros((3, 2)), np.zeros((3, 1)), r"labels must be a 1-D array .* got shape \(3, 1\)"),
        (np.zeros((3, 2)), ["a", "b", "c"], "labels must hold real numbers"),
        (np.full((2, 2), 1e300), None, "too large for float32"),
    ],
)
def test_make_dataset_rejects(images: object, labels: object, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        make_dataset(images, labels)


def test_make_dataset_rejects_bad_image_shape() -> None:
    with pytest.raises(InvalidInput, match=r"image_shape \(3, 3\) holds 9 values but each sample has 4"):
        make_dataset(np.zeros((2, 4)), image_shape=(3, 3))


# --- specs --------------------------------------------------------------------------------------------------------


def test_registry_names() -> None:
    assert set(DATASETS) == {"digits", "idx", "npz", "npy", "csv"}


def test_load_dataset_spec_parsing(tmp_path: Path) -> None:
    assert load_dataset().name == "digits"
    np.save(tmp_path / "a.npy", np.zeros((2, 3)))
    np.savez(tmp_path / "b.npz", x=np.zeros((2, 3)))
    assert load_dataset(str(tmp_path / "a.npy")).n_features == 3
    assert load_dataset(f"npy:{tmp_path / 'a.npy'}").n_samples == 2
    assert load_dataset(str(tmp_path / "b.npz")).name.startswith("npz:")
    write_mnist(tmp_path)
    assert load_dataset(f"idx:{tmp_path}").n_samples == 8


@pytest.mark.parametrize("spec", ["mnist", "foo:bar", "", "digits:x", "idx:"])
def test_unknown_spec_lists_valid_ones(spec: str) -> None:
    with pytest.raises(InvalidInput, match=r"'digits'.*'idx:DIR'.*'npz:FILE'"):
        load_dataset(spec)


def test_unknown_spec_names_it() -> None:
    with pytest.raises(InvalidInput, match="Unknown dataset 'mnist'"):
        load_dataset("mnist")


# --- split --------------------------------------------------------------------------------------------------------


def test_split_deterministic_disjoint_complete() -> None:
    train, held_out = train_test_split_indices(100, 0.25, seed=3)
    again_train, again_held_out = train_test_split_indices(100, 0.25, seed=3)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(held_out, again_held_out)
    assert (len(train), len(held_out)) == (75, 25)
    assert not set(train.tolist()) & set(held_out.tolist())
    np.testing.assert_array_equal(np.sort(np.concatenate([train, held_out])), np.arange(100))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(held_out) > 0)
    assert not np.array_equal(held_out, train_test_split_indices(100, 0.25, seed=4)[1])


@pytest.mark.parametrize(("n", "fraction", "sizes"), [(2, 0.01, (1, 1)), (2, 0.99, (1, 1)), (10, 0.2, (8, 2))])
def test_split_sizes_clipped(n: int, fraction: float, sizes: tuple[int, int]) -> None:
    train, held_out = train_test_split_indices(n, fraction)
    assert (len(train), len(held_out)) == sizes


@pytest.mark.parametrize(
    ("n", "fraction", "match"),
    [(10, 0.0, "held_out_fraction.*got 0.0"), (10, 1.0, "held_out_fraction.*got 1.0"), (10, -0.5, "got -0.5"),
     (10, float("nan"), "finite"), (1, 0.2, "n_samples.*>= 2; got 1"), (10, "0.2", "real number")],
)
def test_split_rejects_bad_arguments(n: int, fraction: object, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        train_test_split_indices(n, fraction)


def test_module_exports() -> None:
    assert set(data.__all__) <= set(dir(data))
