"""Artifact files: atomic writes, safetensors and npz without pickle, versioned metadata, the run manifest.

Every artifact is one self-describing file written to a temporary name and renamed into place, so an
interrupted save never leaves a half-written file and never harms the previous one. Metadata travels inside
the file (safetensors header, or a JSON string in the npz); `manifest.json` is a readable index of the run.

A run update (train: model + manifest, build: graph + manifest) is one transaction (`run_transaction`): every file
is staged in a hidden folder of the run directory, then a journal naming the staged files is written atomically
(the commit point) and the files are renamed into place. A writer killed before the journal leaves the previous
run untouched; one killed after it leaves a journal that the next reader or writer rolls forward. Writers hold an
exclusive `flock` on `.lsg-graph.lock` for the whole update (a second writer is refused, `RunLockedError`);
the renames happen under an exclusive lock on `.lsg-graph.read.lock` that readers hold shared while they load.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsg_graph.errors import ArtifactError, InvalidInput, RunLockedError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
_META_KEY = "__meta__"
LOCK_NAME = ".lsg-graph.lock"  # writers: exclusive flock for the whole update
READ_LOCK_NAME = ".lsg-graph.read.lock"  # readers: shared flock while loading; the commit's renames: exclusive
JOURNAL_NAME = ".lsg-graph.journal.json"  # the commit record of a transaction being applied
STAGING_PREFIX = ".lsg-graph.staging."  # per-transaction folder holding the staged files
UNNAMED_HOLDER_WAIT_S = 2.0  # a writer waits at most this long for a lock holder that recorded no pid (a reader)
READ_LOCK_TIMEOUT_S = 120.0  # a reader waits at most this long for a commit to finish
MAX_JSON_DEPTH = 64  # metadata nesting deeper than this is refused (no RecursionError on crafted files)
MAX_JSON_INT_DIGITS = 40  # integers in metadata longer than this are refused (no 4300-digit conversion error)
MAX_FILE_BYTES_ENV = "LSG_GRAPH_MAX_FILE_BYTES"  # override of the largest artifact or data file read whole
DEFAULT_MAX_FILE_BYTES = 4 * 2**30
MAX_JSON_FILE_BYTES = 64 * 2**20  # manifest, model.json, journal: lsg-graph writes kilobytes


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
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            exc.filename = str(target)  # a full disk says which artifact could not be written
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
    size = check_file_size(path, f"{what} file")
    if size > MAX_JSON_FILE_BYTES:
        raise ArtifactError(f"The {what} file {str(path)!r} holds {size} bytes; lsg-graph writes far smaller ones.")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"Cannot read the {what} file {str(path)!r}: {exc.strerror or exc}.") from exc
    payload = safe_json_loads(data, f"{what} file {str(path)!r}")
    if not isinstance(payload, dict):
        raise ArtifactError(f"The {what} file {str(path)!r} must hold a JSON object; got {type(payload).__name__}.")
    return payload


def _check_file(path: Path, what: str) -> None:
    """Raise ArtifactError unless `path` is an existing regular file (naming a directory found in its place)."""
    if path.is_file():
        return
    if path.is_dir():
        raise ArtifactError(f"The {what} file {str(path)!r} is a directory, not a file; remove or rename it.")
    if path.exists():
        target = f" (a link to {os.path.realpath(path)!r})" if path.is_symlink() else ""
        raise ArtifactError(f"The {what} file {str(path)!r}{target} is not a regular file (a device, pipe or socket).")
    if path.is_symlink():
        raise ArtifactError(f"The {what} file {str(path)!r} is a broken symbolic link to {os.readlink(path)!r}.")
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
    tensors, meta, _ = load_tensors_with_checksum(path, kind)
    return tensors, meta


def load_tensors_with_checksum(
    path: str | os.PathLike[str], kind: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """`load_tensors` plus the sha256 of the file's bytes (what other artifacts record to bind themselves to it)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    _check_file(path, kind)
    size = check_file_size(path, f"{kind} file")
    if size < 8:
        raise ArtifactError(
            f"{str(path)!r} is not a valid safetensors file (corrupt, truncated or foreign): {size} bytes, shorter "
            "than its 8-byte header size."
        )
    with open(path, "rb") as stream:
        header_size = int.from_bytes(stream.read(8), "little")
    if header_size > min(size - 8, MAX_JSON_FILE_BYTES):
        raise ArtifactError(
            f"{str(path)!r} is not a valid safetensors file (corrupt, truncated or foreign): its header claims "
            f"{header_size} bytes in a file of {size}."
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"Cannot read {str(path)!r}: {exc.strerror or exc}.") from exc
    header_obj = safe_json_loads(data[8 : 8 + header_size], f"safetensors header of {str(path)!r}")
    try:
        tensors = load(data)
        header = header_obj.get("__metadata__") or {}
    except (SafetensorError, ValueError, UnicodeDecodeError, OverflowError, AttributeError, RecursionError) as exc:
        raise ArtifactError(f"{str(path)!r} is not a valid safetensors file (corrupt, truncated or foreign): {exc}") from exc
    if not isinstance(header, dict) or not isinstance(header.get("meta"), str):
        raise ArtifactError(f"{str(path)!r} has no lsg-graph metadata; it was not written by lsg-graph.")
    meta = safe_json_loads(header["meta"], f"metadata of {str(path)!r}")
    if not isinstance(meta, dict):
        raise ArtifactError(f"{str(path)!r} has metadata that is not a JSON object (got {type(meta).__name__}).")
    check_format(meta, kind, path)
    if header.get("sha256") != _tensor_digest(tensors):
        raise ArtifactError(f"{str(path)!r} failed its checksum: the weights were modified or corrupted after saving.")
    return tensors, meta, sha256_bytes(data)


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
    check_file_size(path, f"{kind} file")
    try:
        check_npz_members(path, ArtifactError)
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
    meta_array = arrays.pop(_META_KEY)
    if meta_array.shape != () or meta_array.dtype.kind not in "US":
        raise ArtifactError(f"{str(path)!r} has unreadable metadata: expected one string, got {meta_array.dtype} {meta_array.shape}.")
    meta = safe_json_loads(str(meta_array[()]), f"metadata of {str(path)!r}")
    if not isinstance(meta, dict):
        raise ArtifactError(f"{str(path)!r} has metadata that is not a JSON object.")
    check_format(meta, kind, path)
    return arrays, meta


def npy_header(stream: Any, available: int, what: str, error: type[Exception]) -> tuple[tuple[int, ...], np.dtype, int]:
    """Read a .npy header from `stream` and check that the data it claims fit in the `available` bytes after it.

    Returns (shape, dtype, data bytes). A header claiming more data than the file holds (10**12 elements in a
    100-byte file) raises `error` before anything is allocated.
    """
    try:
        version = np.lib.format.read_magic(stream)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, _, dtype = reader(stream)
    except (zlib.error, zipfile.BadZipFile):
        raise  # a corrupt zip member: the archive's reader names the archive
    except Exception as exc:  # noqa: BLE001 - numpy parses the header with ast/tokenize: any of their errors
        raise error(f"The {what} has an unreadable .npy header: {type(exc).__name__}: {exc}") from exc
    header_bytes = stream.tell()
    if dtype.hasobject:
        return tuple(shape), dtype, 0  # refused by allow_pickle=False when read, with its own message
    count = 1
    for size in shape:
        count *= int(size)
    claimed = count * dtype.itemsize
    if claimed > available - header_bytes:
        raise error(
            f"The {what} is truncated or forged: its header claims shape {tuple(shape)} of {dtype} ({claimed} bytes) "
            f"but only {max(0, available - header_bytes)} bytes follow it."
        )
    return tuple(shape), dtype, claimed


def check_npz_members(path: Path, error: type[Exception]) -> None:
    """Check every member of an .npz before numpy reads it: the total inflated size within `max_file_bytes()`
    (no decompression bombs) and each .npy header consistent with its member's size (no huge allocations)."""
    limit = max_file_bytes()
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            total = sum(info.file_size for info in members)
            if total > limit:
                raise error(
                    f"The archive {str(path)!r} would inflate to {total} bytes, more than the limit of {limit}; set "
                    f"the environment variable {MAX_FILE_BYTES_ENV} to a larger number of bytes if it is genuine."
                )
            for info in members:
                if info.filename.endswith(".npy"):
                    with archive.open(info) as stream:
                        npy_header(stream, info.file_size, f"member {info.filename!r} of {str(path)!r}", error)
    except zipfile.BadZipFile:
        return  # not a zip: numpy reports it (a plain .npy or a foreign file)
    except (OSError, EOFError, zlib.error, NotImplementedError, RuntimeError, ValueError) as exc:
        if isinstance(exc, error):
            raise
        raise error(f"{str(path)!r} is not a valid .npz file (corrupt, truncated or foreign): {exc}") from exc


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
    """Record artifact `entry` (its files' sizes and checksums, its parameters) in the run's manifest.json.

    Inside a `run_transaction` of the same run the entry joins that transaction; alone it is a transaction itself.
    """
    with run_transaction(run_dir) as transaction:
        transaction.record(entry, files, params)


# ---------------------------------------------------------------------------------------------------------------
# Limits and hostile metadata
# ---------------------------------------------------------------------------------------------------------------


def env_limit(name: str, default: int) -> int:
    """An integer limit from the environment variable `name` (default when unset), else InvalidInput naming it."""
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 30:
        raise InvalidInput(f"The environment variable {name} must be a non-negative integer; got {text!r}.")
    return int(text)


def max_file_bytes() -> int:
    """The largest artifact or data file read whole (env LSG_GRAPH_MAX_FILE_BYTES, default 4 GiB)."""
    return env_limit(MAX_FILE_BYTES_ENV, DEFAULT_MAX_FILE_BYTES)


def check_file_size(path: Path, what: str, error: type[Exception] = ArtifactError) -> int:
    """The size of `path` in bytes, refusing files over `max_file_bytes()` before anything is read."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise error(f"Cannot read the {what} {str(path)!r}: {exc.strerror or exc}.") from exc
    limit = max_file_bytes()
    if size > limit:
        raise error(
            f"The {what} {str(path)!r} holds {size} bytes, more than the limit of {limit} bytes read whole; "
            f"set the environment variable {MAX_FILE_BYTES_ENV} to a larger number of bytes if it is genuine."
        )
    return size


def _bounded_int(text: str) -> int:
    """json parse_int hook: refuse integers of more than MAX_JSON_INT_DIGITS digits (crafted metadata)."""
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits (at most {MAX_JSON_INT_DIGITS} are accepted)")
    return int(text)


def _json_depth(text: str) -> int:
    """The deepest [ / { nesting of a JSON text (strings skipped), without recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def safe_json_loads(text: str | bytes, what: str, error: type[Exception] = ArtifactError) -> Any:
    """json.loads for untrusted metadata: nesting beyond MAX_JSON_DEPTH and huge integers raise `error`."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"The {what} is not UTF-8 text: {exc}.") from exc
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise error(f"The {what} is nested more than {MAX_JSON_DEPTH} levels deep; it was not written by lsg-graph.")
    try:
        return json.loads(text, parse_int=_bounded_int)
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise error(f"The {what} is not valid JSON ({exc}).") from exc


# ---------------------------------------------------------------------------------------------------------------
# Run-directory locks and transactions
# ---------------------------------------------------------------------------------------------------------------

_HELD_LOCKS: dict[Path, list[int]] = {}  # run dir -> [fd, depth] of the write locks this process holds
_ACTIVE: dict[Path, RunTransaction] = {}  # run dir -> the open transaction of this process


def _key(run_dir: Path) -> Path:
    """The identity of a run directory for this process's lock bookkeeping (symlinks resolved)."""
    return Path(os.path.realpath(run_dir))


def _lock_holder(fd: int) -> str:
    """The pid recorded in a lock file (for the message), or 'unknown'."""
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode().strip()
        if text.isdigit():
            return text
    return "unknown"


def _take_writer_lock(fd: int, run_dir: Path) -> None:
    """flock(fd, LOCK_EX) without blocking on a writer: RunLockedError at once when a process that recorded its pid
    holds it. A holder without a pid is a reader rolling forward a dead writer's journal (`_recover_if_unlocked`,
    milliseconds) or a writer about to record its pid: wait up to UNNAMED_HOLDER_WAIT_S for it."""
    import fcntl

    deadline = time.monotonic() + UNNAMED_HOLDER_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = _lock_holder(fd)
            if holder != "unknown" or time.monotonic() > deadline:
                raise RunLockedError(
                    f"The run directory {str(run_dir)!r} is being written by another lsg-graph process (pid "
                    f"{holder}); wait until it finishes or use another run directory."
                ) from None
            time.sleep(0.005)


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str], *, _anonymous: bool = False) -> Iterator[None]:
    """Hold the run directory's writer lock (exclusive flock on `.lsg-graph.lock`; re-entrant in one process).

    A second process asking for it is refused at once with RunLockedError naming the run and the holder's pid; a
    holder that recorded no pid (a reader rolling forward a dead writer's update) is waited for up to
    UNNAMED_HOLDER_WAIT_S. The pid is cleared on release.
    Taking the lock first rolls forward an update a killed writer had committed but not finished.
    """

    run_dir = Path(run_dir)
    key = _key(run_dir)
    if key in _HELD_LOCKS:
        _HELD_LOCKS[key][1] += 1
        try:
            yield
        finally:
            _HELD_LOCKS[key][1] -= 1
        return
    _prepare_target(run_dir / LOCK_NAME)
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise ArtifactError(
            f"Cannot write to the run directory {str(run_dir)!r}: its lock file could not be opened ({exc.strerror or exc})."
        ) from exc
    try:
        _take_writer_lock(fd, run_dir)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            if not _anonymous:  # a reader's roll-forward records no pid: writers wait for it (_take_writer_lock)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD_LOCKS[key] = [fd, 1]
        try:
            recover_run(run_dir)
            yield
        finally:
            del _HELD_LOCKS[key]
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # no stale pid once released
    finally:
        os.close(fd)  # releases the flock


def holds_run_lock(run_dir: str | os.PathLike[str]) -> bool:
    """Whether this process holds the writer lock of `run_dir`."""
    return _key(Path(run_dir)) in _HELD_LOCKS


@contextlib.contextmanager
def run_read_lock(run_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold a shared lock on the run while loading several of its files, so no commit lands in between.

    An update a killed writer committed but did not finish is rolled forward first (when no writer is alive).
    Directories without the lock file (no transaction ever committed there) are read without one.
    """
    import fcntl

    run_dir = Path(run_dir)
    if not run_dir.is_dir() or holds_run_lock(run_dir):
        yield
        return
    if (run_dir / JOURNAL_NAME).exists():
        _recover_if_unlocked(run_dir)
    try:  # readers never create files: the lock file exists once a transaction has committed here
        fd = os.open(run_dir / READ_LOCK_NAME, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        deadline = time.monotonic() + READ_LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RunLockedError(
                        f"The run directory {str(run_dir)!r} has been locked for an update for over "
                        f"{READ_LOCK_TIMEOUT_S:.0f} s; try again when the writing process has finished."
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)


def _recover_if_unlocked(run_dir: Path) -> None:
    """Roll forward a dead writer's journal when the writer lock is free; otherwise the live writer finishes it."""
    with contextlib.suppress(RunLockedError, ArtifactError), run_lock(run_dir, _anonymous=True):
        pass  # run_lock recovers on entry


def _check_name(name: Any, journal: Path) -> str:
    """A plain file name from a journal (no separators, not hidden), else ArtifactError."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise ArtifactError(f"The journal {str(journal)!r} names an invalid file {name!r}; it was not written by lsg-graph.")
    return name


def recover_run(run_dir: str | os.PathLike[str]) -> bool:
    """Finish a committed update (journal present) and delete stale staging folders; needs the writer lock.

    Returns whether a journal was rolled forward.
    """
    run_dir = Path(run_dir)
    journal_path = run_dir / JOURNAL_NAME
    recovered = False
    if journal_path.exists():
        journal = read_json(journal_path, "run journal")
        staging = journal.get("staging")
        if not isinstance(staging, str) or not staging.startswith(STAGING_PREFIX) or "/" in staging:
            raise ArtifactError(f"The journal {str(journal_path)!r} names an invalid staging folder {staging!r}.")
        if not (run_dir / staging).is_dir() or (run_dir / staging).is_symlink():
            raise ArtifactError(
                f"The journal {str(journal_path)!r} names the staging folder {staging!r}, which does not exist: it is "
                "not the journal of an unfinished lsg-graph update; remove the journal file."
            )
        replace, remove = journal.get("replace"), journal.get("remove")
        if not isinstance(replace, list) or not isinstance(remove, list):
            raise ArtifactError(f"The journal {str(journal_path)!r} is malformed: 'replace' and 'remove' must be lists.")
        if journal.get("sha256") != _journal_digest(staging, replace, remove):
            raise ArtifactError(
                f"The journal {str(journal_path)!r} fails its checksum: it is corrupt or was not written by lsg-graph; "
                "remove the journal file (the run's files are left as they are)."
            )
        _apply(run_dir, run_dir / staging, [_check_name(n, journal_path) for n in replace],
               [_check_name(n, journal_path) for n in remove])
        recovered = True
    with contextlib.suppress(OSError):
        for entry in run_dir.iterdir():
            if entry.name.startswith(STAGING_PREFIX) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
    return recovered


def _journal_digest(staging: Any, replace: Any, remove: Any) -> str:
    """The checksum a journal carries over its own content (a corrupt or foreign journal is never applied)."""
    return sha256_bytes(json.dumps([staging, replace, remove], sort_keys=True).encode())


def _apply(run_dir: Path, staging: Path, replace: list[str], remove: list[str]) -> None:
    """Rename the staged files into place and delete the removed ones (idempotent), then drop the journal."""
    for name in replace:
        source = staging / name
        if source.exists():
            os.replace(source, run_dir / name)
    for name in remove:
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()
    _fsync_dir(run_dir)
    with contextlib.suppress(FileNotFoundError):
        (run_dir / JOURNAL_NAME).unlink()
    _fsync_dir(run_dir)
    shutil.rmtree(staging, ignore_errors=True)


class RunTransaction:
    """An all-or-nothing update of a run directory: stage files with `stage`, drop files with `remove`, record
    manifest entries with `record`; `run_transaction` commits them together when its block ends without error."""

    def __init__(self, run_dir: Path, staging: Path) -> None:
        self.run_dir = run_dir
        self.staging = staging
        self._staged: set[str] = set()
        self._removed: set[str] = set()
        self._entries: dict[str, tuple[list[str], dict[str, Any]]] = {}

    def stage(self, name: str) -> Path:
        """The path to write the new version of run file `name` to (renamed into the run at commit)."""
        _prepare_target(self.run_dir / name)  # a directory in the way is refused now, not at commit
        self._staged.add(name)
        self._removed.discard(name)
        return self.staging / name

    def remove(self, name: str) -> None:
        """Delete run file `name` at commit (with the manifest entries that list it)."""
        self._staged.discard(name)
        self._removed.add(name)

    def current(self, name: str) -> Path:
        """Where run file `name` is as this transaction sees it: staged if staged, else in the run directory."""
        return self.staging / name if name in self._staged else self.run_dir / name

    def record(self, entry: str, files: list[str], params: dict[str, Any]) -> None:
        """Record manifest entry `entry` (its files' sizes and checksums are taken at commit) with `params`."""
        self._entries[entry] = (list(files), params)

    def _manifest(self) -> dict[str, Any]:
        """The run's manifest with this transaction's entries (an unreadable old manifest is rebuilt: it is an index)."""
        manifest: dict[str, Any] = {}
        path = self.run_dir / MANIFEST_NAME
        if path.is_file():
            with contextlib.suppress(ArtifactError):
                manifest = read_json(path, "manifest")
        if not isinstance(manifest.get("artifacts", {}), dict):
            manifest = {}
        manifest["format"] = "lsg-graph-run"
        manifest["format_version"] = FORMAT_VERSION
        manifest["versions"] = library_versions()
        artifacts = manifest.setdefault("artifacts", {})
        for entry in list(artifacts):
            record = artifacts[entry]
            files = record.get("files", {}) if isinstance(record, dict) else {}
            if isinstance(files, dict) and set(files) & self._removed:
                del artifacts[entry]
        for entry, (files, params) in self._entries.items():
            artifacts[entry] = {
                "files": {
                    name: {"bytes": self.current(name).stat().st_size, "sha256": sha256_file(self.current(name))}
                    for name in files
                },
                "params": params,
            }
        return manifest

    def commit(self) -> None:
        """Write the manifest, then the journal (the commit point), then rename everything into place."""
        import fcntl

        if not (self._staged or self._removed or self._entries):
            return
        write_json(self.stage(MANIFEST_NAME), self._manifest())
        _fsync_dir(self.staging)
        journal = {
            "format": "lsg-graph-journal",
            "staging": self.staging.name,
            "replace": sorted(self._staged),
            "remove": sorted(self._removed),
        }
        journal["sha256"] = _journal_digest(journal["staging"], journal["replace"], journal["remove"])
        fd = os.open(self.run_dir / READ_LOCK_NAME, os.O_RDONLY | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # readers hold it shared for a moment: wait for them
            write_json(self.run_dir / JOURNAL_NAME, journal)
            _apply(self.run_dir, self.staging, journal["replace"], journal["remove"])
        finally:
            os.close(fd)


@contextlib.contextmanager
def run_transaction(run_dir: str | os.PathLike[str]) -> Iterator[RunTransaction]:
    """An all-or-nothing update of `run_dir` under its writer lock; nested calls join the outer transaction.

    Nothing in the run directory changes until the block ends without an exception; then every staged file,
    removal and manifest entry is applied together (see the module docstring for the commit protocol).
    """
    run_dir = Path(run_dir)
    key = _key(run_dir)
    if key in _ACTIVE:
        yield _ACTIVE[key]
        return
    with run_lock(run_dir):
        try:
            staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=run_dir))
        except OSError as exc:
            raise ArtifactError(f"Cannot write to the run directory {str(run_dir)!r}: {exc.strerror or exc}.") from exc
        transaction = RunTransaction(run_dir, staging)
        _ACTIVE[key] = transaction
        try:
            yield transaction
            del _ACTIVE[key]
            transaction.commit()
        except OSError as exc:  # name the run's file, not its staged copy
            if isinstance(exc.filename, str) and exc.filename.startswith(str(staging)):
                exc.filename = str(run_dir / Path(exc.filename).relative_to(staging).parts[0])
            raise
        finally:
            _ACTIVE.pop(key, None)
            if not (run_dir / JOURNAL_NAME).exists():  # a commit that failed past its journal is rolled forward later
                shutil.rmtree(staging, ignore_errors=True)
