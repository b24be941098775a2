"""Artifact files: atomic writes, safetensors and npz without pickle, versioned metadata, the run manifest.

Every artifact is one self-describing file written to a temporary name and renamed into place, so an
interrupted save never leaves a half-written file and never harms the previous one. Metadata travels inside
the file (safetensors header, or a JSON string in the npz); `manifest.json` is a readable index of the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsg_graph.errors import ArtifactError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
_META_KEY = "__meta__"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync and rename it onto `path`, else delete it.

    Temporary files are named `.<name>.<pid>.<random>.tmp`. A process killed mid-write (SIGKILL, power loss) cannot
    delete its own, so each save first removes the stale ones of `path` whose writer process no longer exists
    (see `remove_stale_temp_files`); the target itself is only ever replaced by a complete, fsynced file.
    """
    target = Path(path)
    _prepare_target(target)
    remove_stale_temp_files(target)
    try:
        handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise ArtifactError(f"Cannot write {str(target)!r}: could not create a file in {str(target.parent)!r} ({exc}).") from exc
    os.close(handle)
    temp = Path(temp_name)
    try:
        os.chmod(temp, 0o666 & ~_current_umask())  # mkstemp makes 0600 files; artifacts get the usual permissions
        yield temp
        with open(temp, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temp, target)
        _fsync_dir(target.parent)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _prepare_target(target: Path) -> None:
    """Create the parent folders of `target`; ArtifactError when a file blocks them or `target` is a directory."""
    for parent in reversed(target.parents):
        if parent.exists() and not parent.is_dir():
            raise ArtifactError(
                f"Cannot write {str(target)!r}: {str(parent)!r} is a file, not a directory; choose another run directory."
            )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"Cannot create the directory {str(target.parent)!r} for {str(target)!r}: {exc}") from exc
    if target.is_dir():
        raise ArtifactError(f"Cannot write {str(target)!r}: a directory of that name is in the way; remove or rename it.")


def _temp_files(target: Path) -> Iterator[tuple[Path, int | None]]:
    """Yield the temporary files of `target` (`.<name>.<pid>.<random>.tmp`) with the writer's pid (None if unknown)."""
    prefix = f".{target.name}."
    with contextlib.suppress(OSError):
        for entry in target.parent.iterdir():
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(".tmp")):
                continue
            pid_text = name[len(prefix) :].split(".", 1)[0]
            yield entry, int(pid_text) if pid_text.isdigit() else None


def _process_exists(pid: int) -> bool:
    """Whether a process with this id exists on this machine (a live one that is not ours counts as existing)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temp_files(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files left beside `path` by writers that no longer run; return what was removed.

    Only files named like lsg-graph's own temporaries of this target (`.<name>.<pid>.<random>.tmp`) whose pid is
    not a running process are touched; files of live writers (another process saving the same artifact right
    now) are left alone. The pid test is local, so run directories shared between machines are not covered.
    """
    target = Path(path)
    removed = []
    for temp, pid in _temp_files(target):
        if pid is None or pid == os.getpid() or _process_exists(pid):
            continue
        with contextlib.suppress(OSError):
            temp.unlink()
            removed.append(temp)
    return removed


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry to disk where the platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write `payload` as indented JSON to `path` atomically."""
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """Read a JSON object from `path`, raising ArtifactError that names `what` on any problem."""
    path = Path(path)
    _check_file(path, what)
    try:
        payload = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"The {what} file {str(path)!r} is not valid JSON ({exc}).") from exc
    if not isinstance(payload, dict):
        raise ArtifactError(f"The {what} file {str(path)!r} must hold a JSON object; got {type(payload).__name__}.")
    return payload


def _check_file(path: Path, what: str) -> None:
    """Raise ArtifactError unless `path` is an existing regular file (naming a directory found in its place)."""
    if path.is_file():
        return
    if path.is_dir():
        raise ArtifactError(f"The {what} file {str(path)!r} is a directory, not a file; remove or rename it.")
    raise ArtifactError(f"The {what} file {str(path)!r} does not exist.")


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's contents."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_format(meta: dict[str, Any], kind: str, path: Path, supported: int = FORMAT_VERSION) -> None:
    """Check that `meta` describes an artifact of `kind` with a format version this library reads."""
    if meta.get("format") != kind:
        raise ArtifactError(
            f"{str(path)!r} is not an lsg-graph {kind} artifact (format field {meta.get('format')!r}, expected {kind!r})."
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ArtifactError(f"{str(path)!r} has no valid format_version (got {version!r}).")
    if version > supported:
        raise ArtifactError(
            f"{str(path)!r} was written by a newer lsg-graph (format version {version}; this version reads up to "
            f"{supported}). Upgrade lsg-graph to load it."
        )
    if version < 1:
        raise ArtifactError(f"{str(path)!r} has an invalid format_version {version}; expected 1..{supported}.")


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over tensor names, dtypes, shapes and bytes, in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_tensors(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save tensors as safetensors with `meta` (JSON) and a content checksum in the header, atomically."""
    from safetensors.torch import save

    cpu = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    header = {"meta": json.dumps(meta, sort_keys=True), "sha256": _tensor_digest(cpu)}
    atomic_write_bytes(path, _canonical_safetensors(save(cpu, metadata=header)))


def _canonical_safetensors(data: bytes) -> bytes:
    """The same safetensors file with its JSON header written with sorted keys.

    safetensors serialises the `__metadata__` map from a Rust HashMap, whose key order changes from call to call, so
    identical tensors and metadata would give different bytes. Only the header's key order changes here: the data
    offsets are relative to the end of the header, which is padded with spaces to a multiple of 8 bytes as
    safetensors writes it.
    """
    header_size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + header_size :]


def load_tensors(path: str | os.PathLike[str], kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a safetensors artifact of `kind`, verifying header, version and checksum; no pickle involved."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    _check_file(path, kind)
    data = path.read_bytes()
    try:
        tensors = load(data)
        header_size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_size]).get("__metadata__") or {}
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError, OverflowError, AttributeError) as exc:
        raise ArtifactError(f"{str(path)!r} is not a valid safetensors file (corrupt, truncated or foreign): {exc}") from exc
    try:
        meta = json.loads(header["meta"])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{str(path)!r} has no lsg-graph metadata; it was not written by lsg-graph.") from exc
    if not isinstance(meta, dict):
        raise ArtifactError(f"{str(path)!r} has metadata that is not a JSON object (got {type(meta).__name__}).")
    check_format(meta, kind, path)
    if header.get("sha256") != _tensor_digest(tensors):
        raise ArtifactError(f"{str(path)!r} failed its checksum: the weights were modified or corrupted after saving.")
    return tensors, meta


def save_arrays(path: str | os.PathLike[str], arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Save numeric arrays and `meta` (as a JSON string) into one .npz file atomically."""
    buffer = io.BytesIO()
    payload = {name: np.asarray(array) for name, array in arrays.items()}
    for name, array in payload.items():
        if array.dtype == object:
            raise ArtifactError(f"Refusing to save object array {name!r}: artifacts hold numbers only.")
    payload[_META_KEY] = np.array(json.dumps(meta, sort_keys=True))
    with zipfile.ZipFile(buffer, mode="w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(payload):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))  # fixed: byte-identical files
            with archive.open(info, "w", force_zip64=True) as stream:
                np.lib.format.write_array(stream, payload[name], allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def load_arrays(path: str | os.PathLike[str], kind: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load an .npz artifact of `kind` with allow_pickle=False, verifying its metadata and CRCs."""
    path = Path(path)
    _check_file(path, kind)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ArtifactError(f"{str(path)!r} contains pickled objects; lsg-graph never loads pickles.") from exc
        raise ArtifactError(f"{str(path)!r} is not a valid lsg-graph array file: {exc}") from exc
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, zlib.error, NotImplementedError, RuntimeError) as exc:
        # zlib.error: a corrupt deflate stream; NotImplementedError / RuntimeError: zip features numpy cannot read
        # (a corrupted version field, encryption)
        raise ArtifactError(f"{str(path)!r} is not a valid .npz file (corrupt, truncated or foreign): {exc}") from exc
    if _META_KEY not in arrays:
        raise ArtifactError(f"{str(path)!r} has no lsg-graph metadata; it was not written by lsg-graph.")
    try:
        meta = json.loads(str(arrays.pop(_META_KEY)[()]))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{str(path)!r} has unreadable metadata: {exc}") from exc
    if not isinstance(meta, dict):
        raise ArtifactError(f"{str(path)!r} has metadata that is not a JSON object.")
    check_format(meta, kind, path)
    return arrays, meta


def library_versions() -> dict[str, str]:
    """Versions of Python and the numerical libraries, recorded in every manifest.

    scipy and scikit-learn versions come from the installed distributions' metadata, so that saving an artifact
    never imports scikit-learn (seconds on a busy machine) just to read its version.
    """
    from lsg_graph import __version__

    return {
        "lsg_graph": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": _distribution_version("scipy", "scipy"),
        "scikit_learn": _distribution_version("scikit-learn", "sklearn"),
    }


def _distribution_version(distribution: str, module: str) -> str:
    """Installed version of `distribution`, else `module.__version__`, else 'unknown'."""
    from importlib import import_module, metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        pass
    try:
        return str(import_module(module).__version__)
    except (ImportError, AttributeError):
        return "unknown"


def update_manifest(run_dir: str | os.PathLike[str], entry: str, files: list[str], params: dict[str, Any]) -> None:
    """Record artifact `entry` (its files' sizes and checksums, its parameters) in the run's manifest.json."""
    run_dir = Path(run_dir)
    manifest_path = run_dir / MANIFEST_NAME
    manifest: dict[str, Any] = {}
    if manifest_path.is_file():
        with contextlib.suppress(ArtifactError):
            manifest = read_json(manifest_path, "manifest")
    if not isinstance(manifest.get("artifacts", {}), dict):
        manifest = {}  # a malformed manifest is only an index: rebuild it rather than fail the save
    manifest["format"] = "lsg-graph-run"
    manifest["format_version"] = FORMAT_VERSION
    manifest["versions"] = library_versions()
    artifacts = manifest.setdefault("artifacts", {})
    artifacts[entry] = {
        "files": {name: {"bytes": (run_dir / name).stat().st_size, "sha256": sha256_file(run_dir / name)} for name in files},
        "params": params,
    }
    write_json(manifest_path, manifest)
