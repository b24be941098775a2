"""How many CPU threads torch should use, and a context manager that sets them for a block.

torch starts with one thread per *core of the machine*, even when the process may run on fewer cores (CPU
affinity, containers) or the cores are busy with other processes. Oversubscribed threads then spin and wait for
each other, which makes batched forward-mode passes several times slower than one thread. `default_threads()`
counts the cores this process may run on (`os.sched_getaffinity`) and subtracts the cores other processes keep
busy (the 1-minute load average, where the platform has one), never going below 1. An explicit
`OMP_NUM_THREADS` is respected.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import numbers
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from lsg_graph.errors import InvalidInput

THREADS_ENV = "OMP_NUM_THREADS"
F = TypeVar("F", bound=Callable[..., Any])


def available_cpus() -> int:
    """The number of cores this process may run on (its CPU affinity where the platform reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def busy_cpus() -> float:
    """Cores kept busy by other processes: the 1-minute load average (0 where the platform has none)."""
    try:
        return max(0.0, float(os.getloadavg()[0]))
    except (AttributeError, OSError):
        return 0.0


def default_threads(own_load: float = 0.0) -> int:
    """Threads for torch: `OMP_NUM_THREADS` when set, else the available cores not busy with other work.

    Parameters
    ----------
    own_load : float, default 0.0
        How much of the load average is this process itself (a process that has been computing for a while counts
        in its own load average), subtracted from the busy cores.

    Returns
    -------
    int
        At least 1.
    """
    env = os.environ.get(THREADS_ENV, "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cpus = available_cpus()
    others = max(0.0, busy_cpus() - own_load)
    return max(1, min(cpus, math.floor(cpus - others + 0.5)))


_PROCESS_THREADS: list[int] = []  # the count set_threads() chose for the process (empty: never called)
_SCOPES: list[int] = []  # the counts of the torch_threads blocks now running, innermost last


def resolve_threads(n_jobs: Any, name: str = "n_jobs") -> int:
    """Threads for `n_jobs`: -1 -> every available core; k >= 1 -> k; None -> the automatic choice: the count of
    the innermost torch_threads block running (an estimator's n_jobs, a caller's explicit scope), else the count
    the last set_threads() call set (the CLI's --threads), else default_threads()."""
    if n_jobs is None:
        if _SCOPES:
            return _SCOPES[-1]
        return _PROCESS_THREADS[-1] if _PROCESS_THREADS else default_threads()
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral) or (n_jobs < 1 and n_jobs != -1):
        raise InvalidInput(
            f"The {name!r} parameter must be None (choose from the free cores), -1 (all cores) or an int >= 1; "
            f"got {n_jobs!r}."
        )
    return available_cpus() if n_jobs == -1 else int(n_jobs)


def n_jobs_threads(n_jobs: Any, name: str = "n_jobs") -> contextlib.AbstractContextManager[None]:
    """`torch_threads(resolve_threads(n_jobs))`: the block runs with the thread count an `n_jobs` value asks for.

    None: the count of the last set_threads() call (the CLI's --threads), else default_threads() (the free cores,
    or OMP_NUM_THREADS); -1: every available core; k >= 1: k threads.
    The previous count is restored when the block ends, also on an exception.
    """
    return torch_threads(resolve_threads(n_jobs, name))


def scoped_threads(function: F) -> F:
    """Decorator: `function`'s `n_jobs` argument sets torch's thread count for the call (see n_jobs_threads)."""
    signature = inspect.signature(function)
    if "n_jobs" not in signature.parameters:
        raise TypeError(f"scoped_threads needs a function with an n_jobs parameter; {function.__name__} has none.")
    default = signature.parameters["n_jobs"].default

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        n_jobs = kwargs["n_jobs"] if "n_jobs" in kwargs else signature.bind(*args, **kwargs).arguments.get("n_jobs", default)
        with n_jobs_threads(None if n_jobs is inspect.Parameter.empty else n_jobs):
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def torch_threads(n_threads: int | None, device: Any = None) -> Iterator[None]:
    """Run the block with `n_threads` torch intra-op threads (restored afterwards); None or a CUDA device: unchanged.

    One thread is what small batched steps (integrators, walks, per-epoch training on a few thousand rows) want
    on any CPU: their tensors are too small to split, and extra threads only wait on each other.
    """
    import torch

    if n_threads is None or (device is not None and torch.device(device).type != "cpu"):
        yield
        return
    previous = torch.get_num_threads()
    if previous != n_threads:
        torch.set_num_threads(n_threads)
    _SCOPES.append(n_threads)  # n_jobs=None inside the block means this count
    try:
        yield
    finally:
        _SCOPES.pop()
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def one_thread(device: Any = None) -> contextlib.AbstractContextManager[None]:
    """`torch_threads(1, device)`: the block runs on one CPU thread (no change on CUDA)."""
    return torch_threads(1, device)


def set_threads(n_jobs: Any = None) -> int:
    """Set torch's CPU thread count for the process.

    Later calls with `n_jobs=None` (estimators, build_latent_graph) use this count instead of choosing again.

    The CLI calls this at the start of every command (`--threads`); call it once in a script or notebook on a
    shared machine (`lsg_graph.set_threads()`), since torch's own default is one thread per core of the machine.

    Parameters
    ----------
    n_jobs : int, optional
        None: default_threads(); -1: all cores; k >= 1: k threads.

    Returns
    -------
    int
        The thread count set.
    """
    import torch

    _PROCESS_THREADS.clear()
    threads = resolve_threads(n_jobs, "threads")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    _PROCESS_THREADS.append(threads)  # n_jobs=None in later calls means this count
    return threads


set_torch_threads = set_threads
