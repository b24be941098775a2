"""The thread count: from the cores this process may use minus the busy ones; set and restored around a block."""

from __future__ import annotations

import os

import pytest
import torch

from lsg_graph import _threads
from lsg_graph.errors import InvalidInput


@pytest.fixture
def four_cores(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(_threads, "_PROCESS_THREADS", [])  # as if set_threads() (the CLI) never ran in this process
    return monkeypatch


@pytest.mark.parametrize("load,expected", [(0.0, 4), (1.2, 3), (2.6, 1), (3.4, 1), (9.0, 1)])
def test_default_threads_subtracts_the_busy_cores(four_cores: pytest.MonkeyPatch, load: float, expected: int) -> None:
    """4 allowed cores and a load average of `load`: round(4 - load) threads, at least 1."""
    four_cores.setattr(os, "getloadavg", lambda: (load, load, load))
    assert _threads.default_threads() == expected


def test_own_load_and_environment(four_cores: pytest.MonkeyPatch) -> None:
    four_cores.setattr(os, "getloadavg", lambda: (3.0, 0.0, 0.0))
    assert _threads.default_threads(own_load=2.0) == 3
    four_cores.setenv("OMP_NUM_THREADS", "2")
    assert _threads.default_threads() == 2
    four_cores.setattr(os, "getloadavg", lambda: (_ for _ in ()).throw(OSError("no load")))
    four_cores.delenv("OMP_NUM_THREADS")
    assert _threads.default_threads() == 4  # no load average: every allowed core


def test_resolve_threads(four_cores: pytest.MonkeyPatch) -> None:
    four_cores.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert _threads.resolve_threads(None) == 4 and _threads.resolve_threads(-1) == 4 and _threads.resolve_threads(3) == 3
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(InvalidInput, match="'n_jobs' parameter must be None"):
            _threads.resolve_threads(bad)


def test_torch_threads_sets_and_restores() -> None:
    before = torch.get_num_threads()
    target = 2 if before == 1 else 1
    with _threads.torch_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with _threads.torch_threads(target, device="cuda"):  # CUDA work: the CPU thread count is left alone
        assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), _threads.one_thread():
        assert torch.get_num_threads() == 1
        raise RuntimeError
    assert torch.get_num_threads() == before
