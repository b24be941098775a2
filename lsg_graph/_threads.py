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
import math
import os
from collections.abc import Iterator
from typing import Any

from lsg_graph.errors import InvalidInput

THREADS_ENV = "OMP_NUM_THREADS"


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


def resolve_threads(n_jobs: Any, name: str = "n_jobs") -> int:
    """Threads for `n_jobs`: None -> default_threads(), -1 -> every available core, k >= 1 -> k."""
    if n_jobs is None:
        return default_threads()
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or (n_jobs < 1 and n_jobs != -1):
        raise InvalidInput(
            f"The {name!r} parameter must be None (choose from the free cores), -1 (all cores) or an int >= 1; "
            f"got {n_jobs!r}."
        )
    return available_cpus() if n_jobs == -1 else n_jobs


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
    if previous == n_threads:
        yield
        return
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def one_thread(device: Any = None) -> contextlib.AbstractContextManager[None]:
    """`torch_threads(1, device)`: the block runs on one CPU thread (no change on CUDA)."""
    return torch_threads(1, device)


def set_threads(n_jobs: Any = None) -> int:
    """Set torch's CPU thread count for the process.

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

    threads = resolve_threads(n_jobs, "threads")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


set_torch_threads = set_threads
