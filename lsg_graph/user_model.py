"""A user's own model on the command line: a decoder factory given by import path, and latent codes from a file.

`--decoder my_pkg.models:load_decoder` names a module (imported with the current directory first on `sys.path`,
like `python -m`) and a zero-argument callable in it; lsg-graph **imports that module and calls the factory**,
so it runs the user's code with the user's rights: it is only done when the option is given, never from a name
stored in a run directory. The factory returns a torch module or any callable `z (n, d) -> mean (n, D)` or
`-> (mean, std)` (see `lsg_graph.decoder`). `--codes FILE` gives the latent codes: a `.npy` array (n, d), an
`.npz` with the codes under `codes`, `z` or `x` (and optionally the labels under `labels` or `y`), or a `.csv`
of n rows and d numeric columns (a header line is skipped). `--labels FILE` (`.npy`, `.csv`, one integer per code)
overrides labels from the `.npz`. The latent dimension d is the number of columns of the codes.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsg_graph._validation import check_codes, check_labels
from lsg_graph.errors import DecoderError, InvalidInput
from lsg_graph.metric import PullbackMetric

CODE_KEYS = ("codes", "z", "x")
LABEL_KEYS = ("labels", "y")
CODE_SUFFIXES = (".npy", ".npz", ".csv")


def import_factory(spec: str) -> Any:
    """The object named by 'module.path:attribute' (the attribute may be dotted), importing the module.

    The current working directory is put first on `sys.path` for the import (as `python -m` does).
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(part.strip() for part in spec.split(":")):
        raise InvalidInput(
            f"--decoder must be 'module.path:factory' (e.g. my_pkg.models:load_decoder); got {spec!r}."
        )
    module_name, attribute = (part.strip() for part in spec.split(":"))
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise InvalidInput(
                f"--decoder {spec!r}: no module named {exc.name!r} (looked in the current directory and on sys.path)."
            ) from exc
        raise DecoderError(f"--decoder {spec!r}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module at import time
        raise DecoderError(f"--decoder {spec!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise InvalidInput(f"--decoder {spec!r}: module {module_name!r} has no attribute {attribute!r}.")
        target = getattr(target, part)
    return target


def load_user_decoder(spec: str) -> Any:
    """Import the factory named by `spec` and call it with no arguments; return the decoder it builds."""
    factory = import_factory(spec)
    if isinstance(factory, torch.nn.Module):
        decoder = factory  # a module object itself: used as it is
    elif callable(factory):
        try:
            decoder = factory()
        except TypeError as exc:
            raise InvalidInput(
                f"--decoder {spec!r} must name a zero-argument factory returning the decoder; calling it raised: {exc}"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - the user's factory failed
            raise DecoderError(f"--decoder {spec!r}: the factory raised {type(exc).__name__}: {exc}") from exc
    else:
        raise InvalidInput(f"--decoder {spec!r} must name a callable (a factory); got a {type(factory).__name__}.")
    if not callable(decoder):
        raise DecoderError(
            f"--decoder {spec!r}: the factory returned a {type(decoder).__name__}; expected a torch module or a "
            "callable z (n, d) -> mean or (mean, std)."
        )
    if isinstance(decoder, torch.nn.Module):
        decoder.eval()  # row-wise independence: no dropout or batch statistics
    return decoder


def _load_npy_or_npz(path: Path) -> Any:
    """np.load without pickles, every failure as InvalidInput."""
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise InvalidInput(f"{str(path)!r} could not be read without unpickling (numeric arrays only): {exc}") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidInput(f"{str(path)!r} is corrupt or not a .npy/.npz file: {exc}") from exc


def _load_csv(path: Path, what: str) -> np.ndarray:
    """Numeric rows of a .csv file (an optional header line is skipped)."""
    with open(path, encoding="utf-8") as stream:
        first = stream.readline()
    try:
        float(first.split(",")[0])
        skip = 0
    except ValueError:
        skip = 1
    try:
        return np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)
    except ValueError as exc:
        raise InvalidInput(f"The {what} file {str(path)!r} must hold comma-separated numbers: {exc}") from exc


def _existing(path: str | Path, what: str) -> Path:
    """`path` as an existing file with a supported suffix."""
    path = Path(path)
    if path.suffix.lower() not in CODE_SUFFIXES:
        raise InvalidInput(f"The {what} file must end in .npy, .npz or .csv; got {str(path)!r}.")
    if not path.is_file():
        raise InvalidInput(f"The {what} file {str(path)!r} does not exist.")
    return path


def _npz_key(archive: Any, keys: tuple[str, ...], path: Path, required: bool) -> np.ndarray | None:
    """The array stored under the one key of `keys` present in `archive`."""
    found = [key for key in keys if key in archive.files]
    if len(found) > 1:
        raise InvalidInput(f"{str(path)!r} has several of the keys {found}; keep one of {list(keys)}.")
    if not found:
        if required:
            raise InvalidInput(f"{str(path)!r} has no codes: expected one of the keys {list(keys)}; found {archive.files}.")
        return None
    return np.asarray(archive[found[0]])


def load_codes(path: str | Path, labels_path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Latent codes (n, d) float64 and labels (n,) int64 or None, from the files described in the module docstring."""
    path = _existing(path, "codes")
    labels = None
    if path.suffix.lower() == ".csv":
        codes = _load_csv(path, "codes")
    else:
        loaded = _load_npy_or_npz(path)
        if isinstance(loaded, np.ndarray):
            codes = loaded
        else:
            with loaded as archive:
                codes = _npz_key(archive, CODE_KEYS, path, required=True)
                labels = _npz_key(archive, LABEL_KEYS, path, required=False)
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise InvalidInput(f"The codes in {str(path)!r} must be a 2-D array (n, d); got shape {codes.shape}.")
    codes = check_codes(codes, f"the codes in {str(path)!r}", min_rows=2)
    if labels_path is not None:
        labels_file = _existing(labels_path, "labels")
        if labels_file.suffix.lower() == ".csv":
            labels = _load_csv(labels_file, "labels").ravel()
        else:
            loaded = _load_npy_or_npz(labels_file)
            if not isinstance(loaded, np.ndarray):
                with loaded as archive:
                    loaded = _npz_key(archive, LABEL_KEYS, labels_file, required=True)
            labels = np.asarray(loaded).ravel()
    labels = check_labels(labels, codes.shape[0], name="labels")
    return codes, labels


def codes_digest(codes: np.ndarray) -> str:
    """SHA-256 of the float64 codes (shape included), to tell whether a saved graph was built from them."""
    array = np.ascontiguousarray(codes, dtype=np.float64)
    return hashlib.sha256(repr(array.shape).encode() + array.tobytes()).hexdigest()


@dataclass
class UserModel:
    """A user's decoder (from `--decoder SPEC`) with the latent codes and labels (from `--codes`, `--labels`)."""

    spec: str
    decoder: Any
    codes: np.ndarray
    labels: np.ndarray | None
    codes_path: Path

    @property
    def latent_dim(self) -> int:
        """The latent dimension d (columns of the codes)."""
        return int(self.codes.shape[1])

    @property
    def digest(self) -> str:
        """Checksum of the codes."""
        return codes_digest(self.codes)

    def metric(self, device: str | None = None) -> PullbackMetric:
        """The pullback metric of the decoder, with d from the codes; a module is moved to `device` if given."""
        decoder = self.decoder
        if device is not None and isinstance(decoder, torch.nn.Module):
            decoder = decoder.to(device)
        return PullbackMetric(decoder, latent_dim=self.latent_dim)


def load_user_model(spec: str, codes_path: str | Path, labels_path: str | Path | None = None) -> UserModel:
    """Load the codes (first: cheap checks before running user code), then import and call the decoder factory."""
    codes, labels = load_codes(codes_path, labels_path)
    decoder = load_user_decoder(spec)
    return UserModel(spec, decoder, codes, labels, Path(codes_path))
