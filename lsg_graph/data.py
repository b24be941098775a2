"""Data sets as flat float32 sample matrices: scikit-learn digits, MNIST-style IDX folders, user .npy/.npz/.csv files.

Every loader returns a `Dataset` whose `images` are (n, D) float32 rows (pixel data scaled to [0, 1]; user
arrays kept in their own units), optional int64 `labels` (n,) and the `image_shape` the rows unflatten to.
torchvision is optional and imported lazily: `import lsg_graph.data` never imports it.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsg_graph._validation import check_choice, check_float, check_int, check_seed, invalid_parameter, warn
from lsg_graph.errors import InvalidInput
from lsg_graph.registry import DATA_SPECS, DEFAULT_DATA, DEFAULT_HELD_OUT_FRACTION, DEFAULT_SEED

__all__ = [
    "DATASETS",
    "Dataset",
    "load_array_file",
    "load_csv",
    "load_dataset",
    "load_digits",
    "load_idx",
    "make_dataset",
    "read_idx",
    "train_test_split_indices",
]

PathLike = str | os.PathLike[str]

IDX_SPLITS = ("train", "test", "all")
IDX_BACKENDS = ("auto", "direct", "torchvision")
_SPLIT_PREFIXES = {"train": ("train",), "test": ("t10k",), "all": ("train", "t10k")}
_IDX_KINDS = {"images": 3, "labels": 1}
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_PICKLE_MAGIC = b"\x80"
_NPZ_IMAGE_KEYS = ("x", "X", "data", "images")
_NPZ_LABEL_KEYS = ("y", "labels", "targets")
_NPZ_SHAPE_KEY = "image_shape"
_ARRAY_SUFFIXES = (".npz", ".npy")
_CSV_SUFFIXES = (".csv", ".csv.gz")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set of flattened samples (make it with `make_dataset` or `load_dataset`).

    Parameters
    ----------
    name : str
    images : ndarray (n, D) float32
    labels : ndarray (n,) int64 or None
    image_shape : tuple of int or None
        (H, W) or (C, H, W) the D values of a sample unflatten to.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray | None
    image_shape: tuple[int, ...] | None

    def __post_init__(self) -> None:
        """Check the structure (cheap checks only; `make_dataset` validates values)."""
        if not isinstance(self.images, np.ndarray) or self.images.ndim != 2 or self.images.dtype != np.float32:
            raise InvalidInput(f"Dataset images must be a 2-D float32 numpy array; got {_describe_value(self.images)}.")
        if self.labels is not None:
            if not isinstance(self.labels, np.ndarray) or self.labels.dtype != np.int64 or self.labels.ndim != 1:
                raise InvalidInput(f"Dataset labels must be a 1-D int64 numpy array; got {_describe_value(self.labels)}.")
            _check_label_count(self.labels.shape[0], self.images.shape[0])
        if self.image_shape is not None and math.prod(self.image_shape) != self.images.shape[1]:
            raise InvalidInput(
                f"Dataset image_shape {self.image_shape} holds {math.prod(self.image_shape)} values but the images "
                f"have {self.images.shape[1]} features."
            )

    @property
    def n_samples(self) -> int:
        """Number of samples n (rows of `images`)."""
        return int(self.images.shape[0])

    @property
    def n_features(self) -> int:
        """Number of features D per flattened sample (columns of `images`)."""
        return int(self.images.shape[1])

    def subset(self, indices: Any) -> Dataset:
        """Return the rows at `indices` (1-D int indices in [0, n) or a boolean mask of length n) as a new Dataset.

        Parameters
        ----------
        indices : array-like of int (m,) or of bool (n,)
            Row indices or a mask.

        Returns
        -------
        Dataset
            The selected rows (a copy), same name and image shape.
        """
        rows = _check_subset_indices(indices, self.n_samples)
        labels = None if self.labels is None else self.labels[rows]
        return Dataset(self.name, self.images[rows], labels, self.image_shape)


# ---------------------------------------------------------------------------------------------------------------
# In-memory arrays
# ---------------------------------------------------------------------------------------------------------------


def make_dataset(
    images: Any,
    labels: Any = None,
    name: str = "array",
    image_shape: Sequence[int] | None = None,
) -> Dataset:
    """Validate in-memory samples and optional labels into a Dataset.

    Parameters
    ----------
    images : array-like (n, D) or (n, *image_shape)
        Samples (flattened, cast to float32).
    labels : array-like (n,) of int, optional
    name : str, default "array"
    image_shape : sequence of int, optional
        (H, W) or (C, H, W); inferred from 3-D or 4-D `images`.

    Returns
    -------
    Dataset
    """
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"The dataset name must be a non-empty string; got {name!r}.")
    flat, inferred_shape = _check_images(images, "images")
    shape = inferred_shape if image_shape is None else _check_image_shape(image_shape, flat.shape[1])
    return Dataset(name, flat, _check_labels(labels, flat.shape[0]), shape)


def _check_images(images: Any, name: str) -> tuple[np.ndarray, tuple[int, ...] | None]:
    """Return samples flattened to finite float32 (n, D) and the per-sample shape when they were N-D (N >= 3)."""
    array = _as_real_array(images, name)
    if array.ndim < 2:
        hint = " (use reshape(-1, 1) for one feature per sample)" if array.ndim == 1 else ""
        raise InvalidInput(f"{name} must be a 2-D array (n_samples, n_features) or N-D (n_samples, *image_shape); "
                           f"got shape {array.shape}{hint}.")
    if array.size == 0:
        raise InvalidInput(f"{name} must not be empty; got shape {array.shape}.")
    image_shape = tuple(int(size) for size in array.shape[1:]) if array.ndim > 2 else None
    with np.errstate(over="ignore", invalid="ignore"):
        flat = array.reshape(array.shape[0], -1).astype(np.float32, copy=False)
    _check_finite_rows(flat, name)
    return flat, image_shape


def _as_real_array(values: Any, name: str) -> np.ndarray:
    """Return `values` as a numpy array of real numbers or booleans, else raise InvalidInput naming the dtype."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values)
    except Exception as exc:  # any conversion failure is the user's input
        raise InvalidInput(f"{name} could not be read as a numeric array: {exc}") from exc
    is_real = array.dtype == bool or (np.issubdtype(array.dtype, np.number) and not np.iscomplexobj(array))
    if array.dtype == object or not is_real:
        raise InvalidInput(f"{name} must hold real numbers; got an array of dtype {array.dtype}.")
    return array


def _check_finite_rows(flat: np.ndarray, name: str) -> None:
    """Raise InvalidInput naming how many and which rows of `flat` (n, D) hold NaN or inf."""
    bad_rows = np.flatnonzero(~np.isfinite(flat).all(axis=1))
    if bad_rows.size:
        raise InvalidInput(
            f"{name} contain NaN or inf values (or values too large for float32) in {bad_rows.size} row(s); "
            f"first bad rows: {bad_rows[:10].tolist()}."
        )


def _check_labels(labels: Any, n_rows: int) -> np.ndarray | None:
    """Return integer-valued labels (n_rows,) as int64, or None; refuse non-integral floats and wrong lengths."""
    if labels is None:
        return None
    array = _as_real_array(labels, "labels")
    if array.ndim != 1:
        raise InvalidInput(f"labels must be a 1-D array (n_samples,); got shape {array.shape} (use ravel() if (n, 1)).")
    _check_label_count(array.shape[0], n_rows)
    _check_label_range(array)
    if np.issubdtype(array.dtype, np.floating):
        with np.errstate(invalid="ignore"):
            integral = np.isfinite(array) & (array == np.round(array)) & (np.abs(array) < 2.0**63)
        bad_rows = np.flatnonzero(~integral)
        if bad_rows.size:
            raise InvalidInput(
                f"labels must be integers; got {bad_rows.size} non-integral value(s), e.g. "
                f"{array[bad_rows[:5]].tolist()} at rows {bad_rows[:5].tolist()}."
            )
    return array.astype(np.int64)


ATTACHED_LABEL = -1  # the label LatentGraph.attach gives to points attached after the build


def _check_label_range(array: np.ndarray) -> None:
    """Refuse labels that would wrap in int64 (uint64 above 2**63 - 1) or equal the attached-point marker -1."""
    if array.size == 0 or array.dtype == bool:
        return
    if np.issubdtype(array.dtype, np.unsignedinteger) and int(array.max()) > np.iinfo(np.int64).max:
        bad = np.flatnonzero(array > np.iinfo(np.int64).max)
        raise InvalidInput(
            f"labels must fit in int64; got {int(array[bad[0]])} at row {int(bad[0])} ({bad.size} such row(s))."
        )
    if np.issubdtype(array.dtype, np.signedinteger) or np.issubdtype(array.dtype, np.floating):
        with np.errstate(invalid="ignore"):
            marked = np.flatnonzero(array == ATTACHED_LABEL)
        if marked.size:
            raise InvalidInput(
                f"labels must not be {ATTACHED_LABEL}, the marker of points attached to a graph after its build; got "
                f"it at {marked.size} row(s), first {marked[:5].tolist()}. Use labels >= 0 (or leave them out)."
            )


def _check_label_count(n_labels: int, n_rows: int) -> None:
    """Raise InvalidInput naming both lengths when there is not one label per sample."""
    if n_labels != n_rows:
        raise InvalidInput(f"labels have {n_labels} entries but the images have {n_rows} rows; expected one label per row.")


def _check_image_shape(image_shape: Any, n_features: int) -> tuple[int, ...]:
    """Return `image_shape` as a tuple of positive ints whose product is `n_features`, else raise InvalidInput."""
    try:
        shape = tuple(check_int(size, "image_shape entry", minimum=1) for size in image_shape)
    except TypeError as exc:
        raise InvalidInput(f"image_shape must be a sequence of positive ints; got {image_shape!r}.") from exc
    if not shape or math.prod(shape) != n_features:
        raise InvalidInput(
            f"image_shape {shape} holds {math.prod(shape) if shape else 0} values but each sample has "
            f"{n_features} features."
        )
    return shape


def _check_subset_indices(indices: Any, n_rows: int) -> np.ndarray:
    """Return row indices (k,) int64 from an index array or boolean mask, refusing empty or out-of-range ones."""
    array = np.asarray(indices)
    if array.dtype == bool:
        if array.shape != (n_rows,):
            raise InvalidInput(f"A boolean subset mask must have shape ({n_rows},); got shape {array.shape}.")
        array = np.flatnonzero(array)
    elif array.size and (array.ndim != 1 or not np.issubdtype(array.dtype, np.integer)):
        raise InvalidInput(f"Subset indices must be a 1-D array of ints; got {_describe_value(array)}.")
    if array.size == 0:
        raise InvalidInput("A subset must select at least one sample; got no indices.")
    bad = array[(array < 0) | (array >= n_rows)]
    if bad.size:
        raise InvalidInput(f"Subset index {int(bad[0])} is out of range; expected 0 <= index < {n_rows}.")
    return array.astype(np.int64)


def _describe_value(value: Any) -> str:
    """Return a short description of a value: shape and dtype for arrays, the type name otherwise."""
    if isinstance(value, np.ndarray):
        return f"shape {value.shape}, dtype {value.dtype}"
    return f"{type(value).__name__}"


# ---------------------------------------------------------------------------------------------------------------
# scikit-learn digits
# ---------------------------------------------------------------------------------------------------------------


def load_digits() -> Dataset:
    """Load scikit-learn's 8x8 digits (bundled, no download): images (1797, 64) in [0, 1], labels 0..9."""
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    images = (np.asarray(bunch.data, dtype=np.float64) / 16.0).astype(np.float32)
    return Dataset("digits", images, np.asarray(bunch.target, dtype=np.int64), (8, 8))


# ---------------------------------------------------------------------------------------------------------------
# MNIST-style IDX files
# ---------------------------------------------------------------------------------------------------------------


def read_idx(path: PathLike) -> np.ndarray:
    """Read one IDX file (plain or gzip) into a native-endian array of the shape and dtype its header gives.

    Only as many bytes as the header announces are read (and inflated, for .gz), after checking that size against
    the limit `lsg_graph._io.max_file_bytes()` (env LSG_GRAPH_MAX_FILE_BYTES): a forged header or a decompression
    bomb is refused before it costs memory.
    """
    file = _existing_file(path, "IDX file")
    try:
        with open(file, "rb") as raw_stream:
            compressed = raw_stream.read(2) == _GZIP_MAGIC
            raw_stream.seek(0)
            stream: Any = gzip.GzipFile(fileobj=raw_stream) if compressed else raw_stream
            return _read_idx_stream(stream, file, compressed)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise InvalidInput(f"IDX file {str(file)!r} is a corrupt or truncated gzip file: {exc}") from exc
    except OSError as exc:
        raise InvalidInput(f"Could not read IDX file {str(file)!r}: {exc}") from exc


def _read_idx_stream(stream: Any, file: Path, compressed: bool) -> np.ndarray:
    """Read header then exactly the announced data bytes from an open IDX stream (plain or gzip)."""
    from lsg_graph._io import MAX_FILE_BYTES_ENV, max_file_bytes

    head = stream.read(4)
    ndim = head[3] if len(head) == 4 else 0
    header = head + stream.read(4 * ndim)
    dtype, dims, offset = _parse_idx_header(header, file)
    count = math.prod(dims)
    expected = count * dtype.itemsize
    limit = max_file_bytes()
    if expected > limit:
        raise InvalidInput(
            f"IDX file {str(file)!r} announces shape {dims} ({expected} data bytes), more than the limit of {limit} "
            f"bytes; set the environment variable {MAX_FILE_BYTES_ENV} to a larger number of bytes if it is genuine."
        )
    payload = stream.read(expected)
    if len(payload) < expected:
        raise InvalidInput(
            f"IDX file {str(file)!r} is truncated: its header gives shape {dims} of {dtype.itemsize}-byte values "
            f"({expected} data bytes) but it holds {len(payload)}."
        )
    if stream.read(1):
        raise InvalidInput(
            f"IDX file {str(file)!r} is corrupt (trailing bytes): its header gives shape {dims} of "
            f"{dtype.itemsize}-byte values ({expected} data bytes) but more data follow them."
        )
    data = np.frombuffer(payload, dtype=dtype, count=count).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _parse_idx_header(raw: bytes, file: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """Return (dtype, dims, data offset) from an IDX header: 0x0000, a type code, ndim, then big-endian uint32 dims."""
    if len(raw) < 4:
        raise InvalidInput(f"IDX file {str(file)!r} is truncated: {len(raw)} bytes, shorter than the 4-byte magic number.")
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        codes = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise InvalidInput(
            f"IDX file {str(file)!r} has a bad magic number 0x{raw[:4].hex().upper()}; expected 0x0000, a type code "
            f"({codes}) and a number of dimensions >= 1."
        )
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise InvalidInput(f"IDX file {str(file)!r} is truncated inside its header ({len(raw)} of {offset} bytes).")
    dims = tuple(int(size) for size in struct.unpack(f">{ndim}I", raw[4:offset]))
    return _IDX_DTYPES[code], dims, offset


def load_idx(folder: PathLike, split: str = "all", backend: str = "auto") -> Dataset:
    """Load MNIST-style IDX files (plain or .gz) from `folder`: images (n, rows*cols) in [0, 1], labels if present.

    `split` is "train", "test" (t10k files) or "all" (train then test, whichever exist). `backend` "auto" uses
    torchvision.datasets.MNIST when it imports and the files sit in its <root>/MNIST/raw layout, else the
    built-in reader; "direct" always uses the built-in reader; "torchvision" refuses to fall back.
    """
    check_choice(split, "IDX split", IDX_SPLITS)
    check_choice(backend, "IDX backend", IDX_BACKENDS)
    path = _existing_folder(folder)
    files_dir = _idx_files_dir(path)
    name = f"idx:{path.resolve()}" + ("" if split == "all" else f"[{split}]")
    loaded = None if backend == "direct" else _load_idx_torchvision(files_dir, split)
    if loaded is None and backend == "torchvision":
        raise InvalidInput(
            f"torchvision could not load the IDX files in {str(files_dir)!r}: it needs torchvision installed and the "
            f"four uncompressed MNIST files in <root>/MNIST/raw; use backend='auto' or 'direct' instead."
        )
    images, labels = loaded if loaded is not None else _load_idx_direct(files_dir, split)
    return _idx_dataset(images, labels, name)


def _idx_dataset(images: np.ndarray, labels: np.ndarray | None, name: str) -> Dataset:
    """Return a Dataset from uint8 images (n, *image_shape) scaled by 1/255 and optional integer labels (n,)."""
    flat = images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255.0)
    image_shape = tuple(int(size) for size in images.shape[1:]) if images.ndim > 2 else None
    label_array = None if labels is None else _check_labels(labels, flat.shape[0])
    return Dataset(name, flat, label_array, image_shape)


def _idx_names(prefix: str, kind: str) -> list[str]:
    """Return the accepted file names of one IDX file, e.g. train-images-idx3-ubyte, train-images.idx3-ubyte, .gz."""
    stems = [f"{prefix}-{kind}-idx{_IDX_KINDS[kind]}-ubyte", f"{prefix}-{kind}.idx{_IDX_KINDS[kind]}-ubyte"]
    return stems + [f"{stem}.gz" for stem in stems]


def _find_idx_file(folder: Path, prefix: str, kind: str) -> Path | None:
    """Return the first existing IDX file of `prefix`/`kind` in `folder` (plain preferred over .gz), or None."""
    for name in _idx_names(prefix, kind):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_files_dir(folder: Path) -> Path:
    """Return the folder holding the IDX files: `folder` itself, or torchvision's `folder`/MNIST/raw."""
    nested = folder / "MNIST" / "raw"
    has_images = any(_find_idx_file(folder, prefix, "images") for prefix in _SPLIT_PREFIXES["all"])
    if not has_images and nested.is_dir():
        return nested
    return folder


def _load_idx_direct(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the IDX images (n, rows, cols) uint8 and labels (n,) or None of `split` with the built-in reader."""
    parts = [_read_idx_split(folder, prefix) for prefix in _SPLIT_PREFIXES[split]]
    parts = [part for part in parts if part is not None]
    if not parts:
        expected = [_idx_names(prefix, "images")[0] for prefix in _SPLIT_PREFIXES[split]]
        raise InvalidInput(
            f"No IDX image files for split {split!r} in {str(folder)!r}; expected {' or '.join(map(repr, expected))} "
            f"(or the '.idx3-ubyte' spelling, optionally .gz)."
        )
    shapes = {part[0].shape[1:] for part in parts}
    if len(shapes) > 1:
        raise InvalidInput(f"The IDX train and test images in {str(folder)!r} have different image shapes {shapes}.")
    images = np.concatenate([part[0] for part in parts])
    return images, _join_idx_labels([part[1] for part in parts], folder)


def _join_idx_labels(labels: list[np.ndarray | None], folder: Path) -> np.ndarray | None:
    """Concatenate per-split labels; drop them all (with a warning) when only some splits have label files."""
    if all(part is None for part in labels):
        return None
    if any(part is None for part in labels):
        warn(f"Only some IDX splits in {str(folder)!r} have label files; loading without labels.")
        return None
    return np.concatenate(labels)


def _read_idx_split(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Read one split's images (n, rows, cols) uint8 and labels (n,) or None; None when it has no image file."""
    image_file = _find_idx_file(folder, prefix, "images")
    if image_file is None:
        return None
    images = read_idx(image_file)
    if images.dtype != np.uint8 or images.ndim < 2 or images.shape[0] == 0 or images[0].size == 0:
        raise InvalidInput(
            f"IDX image file {str(image_file)!r} must hold unsigned bytes (type code 0x08) of shape (n, rows, cols) "
            f"with n >= 1; got dtype {images.dtype}, shape {images.shape}."
        )
    label_file = _find_idx_file(folder, prefix, "labels")
    return images, None if label_file is None else _read_idx_labels(label_file, images.shape[0], image_file)


def _read_idx_labels(label_file: Path, n_images: int, image_file: Path) -> np.ndarray:
    """Read an IDX label file (n,) of integers and check it has one label per image."""
    labels = read_idx(label_file)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise InvalidInput(
            f"IDX label file {str(label_file)!r} must hold a 1-D array of integers; got dtype {labels.dtype}, "
            f"shape {labels.shape}."
        )
    if labels.shape[0] != n_images:
        raise InvalidInput(
            f"IDX label file {str(label_file)!r} has {labels.shape[0]} labels but {str(image_file)!r} has "
            f"{n_images} images; expected one label per image."
        )
    return labels.astype(np.int64)


def _load_idx_torchvision(files_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Load `split` through torchvision.datasets.MNIST when it imports and the layout fits; None otherwise."""
    if not _has_torchvision_layout(files_dir):
        return None
    mnist = _import_torchvision_mnist()
    if mnist is None:
        return None
    root = str(files_dir.parent.parent)
    try:
        parts = [mnist(root, train=prefix == "train", download=False) for prefix in _SPLIT_PREFIXES[split]]
        images = np.concatenate([np.asarray(part.data, dtype=np.uint8) for part in parts])
        labels = np.concatenate([np.asarray(part.targets, dtype=np.int64) for part in parts])
    except Exception:  # torchvision failures of any kind fall back to the built-in reader
        return None
    if images.ndim != 3 or images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        return None
    return images, labels


def _has_torchvision_layout(files_dir: Path) -> bool:
    """Whether `files_dir` is <root>/MNIST/raw holding the four uncompressed MNIST files torchvision expects."""
    if files_dir.name != "raw" or files_dir.parent.name != "MNIST":
        return False
    return all((files_dir / _idx_names(prefix, kind)[0]).is_file() for prefix in ("train", "t10k") for kind in _IDX_KINDS)


def _import_torchvision_mnist() -> Callable[..., Any] | None:
    """Return torchvision.datasets.MNIST, or None when torchvision cannot be imported (any error)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchvision.datasets import MNIST
    except Exception:  # a broken torchvision raises RuntimeError/OSError as well as ImportError
        return None
    return MNIST


# ---------------------------------------------------------------------------------------------------------------
# User .npy / .npz files
# ---------------------------------------------------------------------------------------------------------------


def load_array_file(path: PathLike) -> Dataset:
    """Load samples from a .npy (2-D, or N-D flattened) or .npz file (keys x/X/data/images, labels y/labels/targets).

    Values keep their units but become float32; pickled or object arrays are refused.
    """
    file = _existing_file(path, "array file")
    loaded = _np_load(file)
    if isinstance(loaded, np.ndarray):
        return make_dataset(loaded, None, name=f"npy:{file.resolve()}")
    with loaded as archive:
        images = _npz_member(archive, file, _NPZ_IMAGE_KEYS, required=True)
        labels = _npz_member(archive, file, _NPZ_LABEL_KEYS, required=False)
        shape = _npz_member(archive, file, (_NPZ_SHAPE_KEY,), required=False)
    image_shape = None if shape is None else _as_real_array(shape, "image_shape").ravel().tolist()
    return make_dataset(images, labels, name=f"npz:{file.resolve()}", image_shape=image_shape)


def _np_load(file: Path) -> Any:
    """Return np.load(file, allow_pickle=False) (an array or an NpzFile), turning every failure into InvalidInput.

    Before numpy allocates anything, the file size, an .npy header's claimed size and an .npz's inflated size are
    checked (limit: `lsg_graph._io.max_file_bytes()`, env LSG_GRAPH_MAX_FILE_BYTES).
    """
    from lsg_graph._io import check_file_size, check_npz_members, npy_header

    size = check_file_size(file, "array file", InvalidInput)
    with open(file, "rb") as stream:
        magic = stream.read(6)
        stream.seek(0)
        if magic == b"\x93NUMPY":
            npy_header(stream, size, f"array file {str(file)!r}", InvalidInput)
    if magic[:2] == b"PK":
        check_npz_members(file, InvalidInput)
    try:
        return np.load(file, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InvalidInput(_pickle_message(file)) from exc
        raise InvalidInput(f"Array file {str(file)!r} could not be read as .npy/.npz: {exc}") from exc
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as exc:
        raise InvalidInput(f"Array file {str(file)!r} is corrupt or truncated: {exc}") from exc


def _pickle_message(file: Path) -> str:
    """Return the refusal message for a file numpy could only read by unpickling."""
    with open(file, "rb") as stream:
        is_pickle = stream.read(1) == _PICKLE_MAGIC
    if is_pickle:
        return f"Array file {str(file)!r} holds a pickle; pickles are refused (save numeric arrays with np.save/np.savez)."
    return (
        f"Array file {str(file)!r} is neither a .npy nor a .npz file, or holds an object array that would need "
        f"unpickling; pickles are refused (save numeric arrays with np.save/np.savez)."
    )


def _npz_member(archive: Any, file: Path, keys: tuple[str, ...], required: bool) -> np.ndarray | None:
    """Return the one array of `archive` stored under one of `keys`, None if absent and not required."""
    found = [key for key in keys if key in archive.files]
    if len(found) > 1:
        raise InvalidInput(f"Array file {str(file)!r} has several of the keys {found}; keep only one of {list(keys)}.")
    if not found:
        if required:
            raise InvalidInput(
                f"Array file {str(file)!r} has no samples array: expected one of the keys {list(keys)}; "
                f"found {archive.files}."
            )
        return None
    try:
        return archive[found[0]]
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InvalidInput(
                f"Array {found[0]!r} in {str(file)!r} is an object array; pickles are refused "
                f"(store numeric arrays)."
            ) from exc
        raise InvalidInput(f"Array {found[0]!r} in {str(file)!r} could not be read: {exc}") from exc
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as exc:
        raise InvalidInput(f"Array {found[0]!r} in {str(file)!r} is corrupt or truncated: {exc}") from exc


# ---------------------------------------------------------------------------------------------------------------
# User .csv / .csv.gz files
# ---------------------------------------------------------------------------------------------------------------

CSV_LABEL_CHOICES = ("last", "first", "none")  # or a column index
MAX_CSV_BYTES = 2 * 2**30  # decompressed text read at most; larger files are refused before parsing


def load_csv(path: PathLike, label: str | int = "last", scale: float | None = None) -> Dataset:
    """Load samples from a comma-separated text file (plain or gzip), one sample a row, numbers only.

    Parameters
    ----------
    path : str or os.PathLike
        The file; a name ending in ``.gz`` or gzip content is decompressed (at most MAX_CSV_BYTES of text).
    label : {"last", "first", "none"} or int
        Which column holds integer labels ("none": no labels); the other columns are the features.
    scale : float, optional
        Divide the features by this (for example 255 for 8-bit pixels); None keeps their units.

    Returns
    -------
    Dataset
        Features (n, D) float32 and labels (n,) int64 or None; square D >= 16 is taken as (sqrt D, sqrt D) images.
    """
    file = _existing_file(path, "CSV file")
    column = _check_label_column(label)
    if scale is not None:
        scale = check_float(scale, "scale", minimum=0.0, strict_minimum=True)
    table = _parse_csv(_read_csv_text(file), file)
    n_columns = table.shape[1]
    if column is not None and not -n_columns <= column < n_columns:
        raise InvalidInput(f"The label column {column} is outside the {n_columns} columns of {str(file)!r}.")
    if column is not None and n_columns < 2:
        raise InvalidInput(f"CSV file {str(file)!r} has one column; with label={label!r} no feature column is left.")
    labels = None
    if column is not None:
        labels = _integer_labels(table[:, column], file)
        table = np.delete(table, column % n_columns, axis=1)
    if scale is not None:
        table = table / scale
    side = math.isqrt(table.shape[1])
    image_shape = (side, side) if side * side == table.shape[1] and side >= 4 else None
    return make_dataset(table, labels, name=f"csv:{file.resolve()}", image_shape=image_shape)


def _check_label_column(label: Any) -> int | None:
    """Return the label column as an int (None for "none"), else raise InvalidInput."""
    if isinstance(label, str):
        text = label.strip().lower()
        if text in ("last", "first", "none"):
            return {"last": -1, "first": 0, "none": None}[text]
        if text.lstrip("-").isascii() and text.lstrip("-").isdigit():
            return int(text)
    elif isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        return int(label)
    raise InvalidInput(f"The 'label' column must be one of {list(CSV_LABEL_CHOICES)} or a column index; got {label!r}.")


def _read_csv_text(file: Path) -> str:
    """The file's text, gunzipped when gzip, refusing more than MAX_CSV_BYTES of it."""
    with open(file, "rb") as raw:
        is_gzip = raw.read(2) == _GZIP_MAGIC
    try:
        with (gzip.open(file, "rb") if is_gzip else open(file, "rb")) as stream:
            data = stream.read(MAX_CSV_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise InvalidInput(f"CSV file {str(file)!r} is corrupt or truncated: {exc}") from exc
    if len(data) > MAX_CSV_BYTES:
        raise InvalidInput(f"CSV file {str(file)!r} holds more than {MAX_CSV_BYTES} bytes of text; split it.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"CSV file {str(file)!r} is not UTF-8 text: {exc}") from exc


def _parse_csv(text: str, file: Path) -> np.ndarray:
    """Parse comma-separated numbers into a float64 (n, columns) array; a non-numeric first row is a header."""
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and not _is_numeric_row(lines[0]):
        lines = lines[1:]
    if not lines:
        raise InvalidInput(f"CSV file {str(file)!r} has no data rows.")
    try:
        table = np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise InvalidInput(f"CSV file {str(file)!r} is not a table of numbers with equal row lengths: {exc}") from exc
    return table


def _is_numeric_row(line: str) -> bool:
    """Whether every comma-separated field of `line` parses as a float."""
    try:
        [float(field) for field in line.split(",")]
    except ValueError:
        return False
    return True


def _integer_labels(values: np.ndarray, file: Path) -> np.ndarray:
    """Label column values as int64, refusing non-integers."""
    if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
        raise InvalidInput(f"The label column of {str(file)!r} holds non-integer values; pick it with label=... .")
    return values.astype(np.int64)


def _csv_spec(argument: str) -> Dataset:
    """Load a "csv:FILE[?label=COL][&scale=S]" spec."""
    path, sep, query = argument.rpartition("?")
    if not sep or not all(part.partition("=")[0] in ("label", "scale") for part in query.split("&")):
        path, query = argument, ""
    options: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        options[key] = value
    scale = None
    if "scale" in options:
        try:
            scale = float(options["scale"])
        except ValueError:
            raise InvalidInput(f"The csv spec's scale must be a number; got {options['scale']!r}.") from None
    return load_csv(path, label=options.get("label", "last"), scale=scale)


# ---------------------------------------------------------------------------------------------------------------
# Registry, specs and splits
# ---------------------------------------------------------------------------------------------------------------

DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "idx": load_idx,
    "npz": load_array_file,
    "npy": load_array_file,
    "csv": _csv_spec,
}
_SPEC_FORMS = DATA_SPECS  # prefix -> the form a spec takes (the registry names them)


def load_dataset(spec: str = DEFAULT_DATA) -> Dataset:
    """Load a data set from a spec.

    Parameters
    ----------
    spec : str, default "digits"
        "digits" (embedded), "idx:DIR", "npz:FILE", "npy:FILE", "csv:FILE" (lsg_graph.registry.DATA_SPECS) or a path
        ending in .npz/.npy/.csv/.csv.gz. CSV options: ``csv:FILE?label=first&scale=255``; the label column defaults
        to the last.

    Returns
    -------
    Dataset
        Flat float32 samples (n, D), optional labels and image shape.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidInput(f"A dataset spec must be a non-empty string; got {spec!r}. {_valid_specs()}")
    spec = spec.strip()
    if spec == "digits":
        return load_digits()
    scheme, sep, argument = spec.partition(":")
    if sep and scheme in DATASETS:
        if scheme == "digits" or not argument:
            raise InvalidInput(f"Bad dataset spec {spec!r}: {_SPEC_FORMS[scheme]!r} expected. {_valid_specs()}")
        return DATASETS[scheme](argument)
    if spec.lower().endswith(_ARRAY_SUFFIXES):
        return load_array_file(spec)
    if spec.lower().endswith(_CSV_SUFFIXES):
        return _csv_spec(spec)
    raise InvalidInput(f"Unknown dataset {spec!r}. {_valid_specs()}")


def _valid_specs() -> str:
    """Return the sentence listing the valid dataset specs."""
    forms = ", ".join(repr(form) for form in _SPEC_FORMS.values())
    return f"Expected one of: {forms}, or a path ending in .npz/.npy/.csv/.csv.gz."


def train_test_split_indices(
    n_samples: int, held_out_fraction: float = DEFAULT_HELD_OUT_FRACTION, seed: int = DEFAULT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted int64 (train, held_out) row indices; held_out has round(fraction * n) rows, clipped to [1, n-1]."""
    n_samples = check_int(n_samples, "n_samples", minimum=2)
    fraction = check_float(held_out_fraction, "held_out_fraction", minimum=0.0, strict_minimum=True)
    if fraction >= 1.0:
        raise invalid_parameter("held_out_fraction", "< 1 (strictly in (0, 1))", str(fraction))
    seed = check_seed(seed)
    n_held_out = min(max(round(fraction * n_samples), 1), n_samples - 1)
    order = np.random.default_rng(seed).permutation(n_samples)
    return np.sort(order[n_held_out:]).astype(np.int64), np.sort(order[:n_held_out]).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------------------------


def _existing_file(path: Any, what: str) -> Path:
    """Return `path` as a Path to an existing regular file, else raise InvalidInput naming it."""
    file = _as_path(path, what)
    if not file.exists():
        raise InvalidInput(f"The {what} {str(file)!r} does not exist.")
    if not file.is_file():
        raise InvalidInput(f"The {what} {str(file)!r} is not a regular file.")
    return file


def _existing_folder(path: Any) -> Path:
    """Return `path` as a Path to an existing directory, else raise InvalidInput naming it."""
    folder = _as_path(path, "IDX folder")
    if not folder.exists():
        raise InvalidInput(f"The IDX folder {str(folder)!r} does not exist.")
    if not folder.is_dir():
        raise InvalidInput(f"The IDX folder {str(folder)!r} is not a directory; give the folder holding the IDX files.")
    return folder


def _as_path(path: Any, what: str) -> Path:
    """Return `path` (str or os.PathLike) as a user-expanded Path, else raise InvalidInput."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise InvalidInput(f"The {what} must be a non-empty path; got {path!r}.")
    return Path(path).expanduser()
