"""Input checks used at the edges of the public API: validate once, with messages that name the value."""

from __future__ import annotations

import contextlib
import numbers
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from lsg_graph.errors import InvalidInput

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """Issue a warning attributed to the first caller outside lsg_graph: the user's line, not the library's."""
    frame = sys._getframe(0)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


def invalid_parameter(name: str, rule: str, got: str, owner: str | None = None) -> InvalidInput:
    """The one message template of parameter errors: "The 'name' parameter [of owner] must be RULE; got GOT."

    `got` is the offending value as it should be shown (callers format it: ``repr(value)``, or a shape).
    The CLI rewrites "The 'name' parameter" into "The '--flag' option" (cli/main.py).
    """
    where = f" of {owner}" if owner else ""
    return InvalidInput(f"The {name!r} parameter{where} must be {rule}; got {got}.")


def check_int(value: Any, name: str, minimum: int | None = 1, maximum: int | None = None) -> int:
    """Return `value` as an int within [minimum, maximum], else raise InvalidInput naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise invalid_parameter(name, "an int", f"{value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise invalid_parameter(name, f"an int >= {minimum}", str(value))
    if maximum is not None and value > maximum:
        raise invalid_parameter(name, f"an int <= {maximum}", str(value))
    return value


def check_positive_int(value: Any, name: str) -> int:
    """Return `value` as an int >= 1, else raise InvalidInput naming it."""
    return check_int(value, name, minimum=1)


def check_neighbours(k: Any, n_points: int, name: str = "k", exclude_self: bool = True) -> int:
    """Return k, the neighbours per point among `n_points`, as an int in [1, n_points - 1] ([1, n_points] when
    the points are not their own candidates), else raise InvalidInput: the one wording of the rule on k."""
    k = check_positive_int(k, name)
    if exclude_self and k >= n_points:
        raise invalid_parameter(name, f"< the number of points ({n_points})", str(k))
    if k > n_points:
        raise invalid_parameter(name, f"<= the number of points ({n_points})", str(k))
    return k


def check_float(
    value: Any,
    name: str,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
) -> float:
    """Return `value` as a finite float within bounds (strictly above `minimum` if asked)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise invalid_parameter(name, "a real number", f"{value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value):
        raise invalid_parameter(name, "finite", str(value))
    if minimum is not None:
        if strict_minimum and value <= minimum:
            raise invalid_parameter(name, f"> {minimum}", str(value))
        if not strict_minimum and value < minimum:
            raise invalid_parameter(name, f">= {minimum}", str(value))
    if maximum is not None and value > maximum:
        raise invalid_parameter(name, f"<= {maximum}", str(value))
    return value


def param_error(owner: str, name: str, rule: str, value: Any) -> InvalidInput:
    """A parameter error of an estimator or function `owner` (scikit-learn style: parameter, owner, rule, value)."""
    return invalid_parameter(name, rule, repr(value), owner)


def check_int_param(value: Any, name: str, owner: str, low: int, high: int | None = None, high_name: str = "") -> int:
    """Return `value` as an int in [low, high] (high None: no bound), else an InvalidInput naming `owner`.

    `high_name` replaces the upper end of the interval in the message, closing bracket included ("n_samples]").
    """
    upper = "inf)" if high is None else (high_name or f"{high}]")
    rule = f"an int in the range [{low}, {upper}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise param_error(owner, name, rule, value)
    if value < low or (high is not None and value > high):
        raise param_error(owner, name, rule, value)
    return int(value)


def check_float_param(value: Any, name: str, owner: str, low: float = 0.0) -> float:
    """Return `value` as a finite float >= low, else an InvalidInput naming `owner`."""
    rule = f"a float in the range [{low}, inf)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < low:
        raise param_error(owner, name, rule, value)
    return float(value)


def check_choice(value: Any, name: str, choices: Mapping[str, Any] | list[str] | tuple[str, ...]) -> str:
    """Return `value` if it is one of `choices` (a registry's keys), else list the valid ones."""
    valid = list(choices.keys()) if isinstance(choices, Mapping) else list(choices)
    if not isinstance(value, str) or value not in valid:
        raise InvalidInput(f"Unknown {name} {value!r}; expected one of: {', '.join(map(repr, valid))}.")
    return value


def check_array(
    values: Any,
    name: str,
    ndim: int = 2,
    dtype: Any = np.float64,
    min_rows: int = 1,
    n_columns: int | None = None,
    finite: bool = True,
) -> np.ndarray:
    """Return `values` as a numpy array of `ndim` dims and `dtype` (None: keep its own), checking shape, emptiness
    and finiteness; complex, string and object arrays are refused."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is the user's input
        raise InvalidInput(f"{name} could not be read as an array: {exc}") from exc
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InvalidInput(f"{name} must hold numbers; got an array of dtype {array.dtype}.")
    if np.iscomplexobj(array):
        raise InvalidInput(f"{name} must hold real numbers; got an array of dtype {array.dtype}.")
    if array.ndim != ndim:
        raise InvalidInput(f"{name} must be a {ndim}-D array; got shape {array.shape}.")
    if array.shape[0] < min_rows:
        raise InvalidInput(f"{name} must have at least {min_rows} row(s); got shape {array.shape}.")
    if n_columns is not None and ndim >= 2 and array.shape[1] != n_columns:
        raise InvalidInput(f"{name} must have {n_columns} columns; got shape {array.shape}.")
    with np.errstate(over="ignore", invalid="ignore"):
        converted = array if dtype is None else array.astype(dtype, copy=False)
    if finite and np.issubdtype(converted.dtype, np.floating) and not np.isfinite(converted).all():
        bad = np.argwhere(~np.isfinite(converted))[:5]
        rows = sorted({int(row[0]) for row in bad})
        overflow = "" if converted.dtype == array.dtype else f" (or values too large for {converted.dtype})"
        raise InvalidInput(f"{name} contains NaN or inf values{overflow} (first bad rows: {rows}).")
    return converted


def check_codes(codes: Any, name: str = "codes", latent_dim: int | None = None, min_rows: int = 1) -> np.ndarray:
    """Return latent codes as a finite float64 array (n, d), checking d against `latent_dim`."""
    array = check_array(codes, name, ndim=2, dtype=np.float64, min_rows=min_rows)
    if latent_dim is not None and array.shape[1] != latent_dim:
        raise InvalidInput(
            f"{name} have dimension {array.shape[1]} but the decoder expects latent dimension {latent_dim}; "
            f"got shape {array.shape}."
        )
    return array


def check_labels(labels: Any, n_rows: int, name: str = "labels") -> np.ndarray | None:
    """Return integer labels of length `n_rows` (or None), else raise InvalidInput."""
    if labels is None:
        return None
    array = check_array(labels, name, ndim=1, dtype=None, min_rows=0, finite=False)
    if array.shape[0] != n_rows:
        raise InvalidInput(f"{name} must have one entry per row ({n_rows}); got {array.shape[0]}.")
    if not np.issubdtype(array.dtype, np.integer) and array.dtype != bool:
        with np.errstate(invalid="ignore"):
            integral = np.isfinite(array) & (array == np.round(array)) & (np.abs(array) < 2.0**63)
        if not integral.all():
            bad = np.flatnonzero(~integral)[:5]
            raise InvalidInput(
                f"{name} must be integers; got non-integral value(s) {array[bad].tolist()} at rows {bad.tolist()}."
            )
    elif array.dtype == np.uint64 and array.size and int(array.max()) > np.iinfo(np.int64).max:
        raise InvalidInput(f"{name} must fit in int64; got the value {int(array.max())}.")
    if array.dtype != bool and array.size and bool(np.any(array == -1)):
        rows = np.flatnonzero(array == -1)[:5].tolist()
        raise InvalidInput(
            f"{name} must not be -1, the marker of points attached to a graph after its build; got it at rows {rows}."
        )
    return array.astype(np.int64)


def check_index(index: Any, name: str, n: int) -> int:
    """Return `index` as an int in [0, n), else raise InvalidInput naming the range."""
    if isinstance(index, bool) or not isinstance(index, numbers.Integral):
        raise InvalidInput(f"The {name!r} index must be an int; got {index!r}.")
    if not 0 <= int(index) < n:
        raise InvalidInput(f"The {name!r} index {int(index)} is out of range; expected 0 <= {name} < {n}.")
    return int(index)


def check_seed(seed: Any, name: str = "seed") -> int:
    """Return a seed as a non-negative int (None means 0), else raise InvalidInput.

    lsg-graph's functions take `seed`, an int; only its scikit-learn-style estimators take `random_state` (None, an
    int or a RandomState, checked by scikit-learn's own sklearn.utils.check_random_state).
    """
    if seed is None:
        return 0
    return check_int(seed, name, minimum=0, maximum=2**32 - 1)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Map 'auto' | 'cpu' | 'cuda[:i]' | None to a torch.device, refusing CUDA when none is available."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInput(f"Unknown device {device!r}; expected 'auto', 'cpu' or 'cuda'.") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(f"Device {device!r} was asked for but CUDA is not available on this machine; use 'cpu' or 'auto'.")
    if resolved.type not in ("cpu", "cuda"):
        raise InvalidInput(f"Unsupported device {device!r}; expected 'auto', 'cpu' or 'cuda'.")
    return resolved


_COMBINED: dict[tuple[type, type], type] = {}


def _combined(ours: type, theirs: type) -> type:
    """A subclass of both lsg-graph's error class `ours` and scikit-learn's `theirs` (made once per pair)."""
    if issubclass(theirs, ours):
        return theirs
    key = (ours, theirs)
    if key not in _COMBINED:
        _COMBINED[key] = type(ours.__name__, (ours, theirs), {"__module__": ours.__module__, "__doc__": ours.__doc__})
    return _COMBINED[key]


@contextlib.contextmanager
def sklearn_errors() -> Iterator[None]:
    """Re-raise scikit-learn's validation errors as lsg-graph's own classes, with the same message.

    sklearn's NotFittedError becomes a subclass of both lsg_graph.errors.NotFittedError and sklearn's class (and so
    of ValueError and AttributeError); its InvalidParameterError and plain ValueError/TypeError become InvalidInput
    (a ValueError and a TypeError, and also sklearn's class when it was one): code catching either family still
    catches them, as the README promises.
    """
    from sklearn.exceptions import NotFittedError as SklearnNotFitted

    from lsg_graph.errors import LsgGraphError, NotFittedError

    try:
        yield
    except LsgGraphError:
        raise
    except SklearnNotFitted as exc:
        raise _combined(NotFittedError, type(exc))(str(exc)) from exc
    except (ValueError, TypeError) as exc:
        cls = InvalidInput if type(exc) in (ValueError, TypeError) else _combined(InvalidInput, type(exc))
        raise cls(str(exc)) from exc
