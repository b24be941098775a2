"""n_jobs: the torch thread count inside estimator calls and build_latent_graph is what was asked, restored after."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lsg_graph import _threads
from lsg_graph.cluster import GeodesicKMeans
from lsg_graph.distances import GeodesicDistance
from lsg_graph.errors import InvalidInput
from lsg_graph.graph.latent_graph import build_latent_graph
from lsg_graph.metric import PullbackMetric


class CountingDecoder:
    """x = (z, z1 z2): a curved surface; records torch's thread count at every call."""

    latent_dim, output_dim = 2, 3

    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        self.seen.append(torch.get_num_threads())
        return torch.cat([z, z[:, :1] * z[:, 1:]], dim=1), None


@pytest.fixture
def codes() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, size=(30, 2))


def other_count() -> int:
    """A thread count different from the current one."""
    return 3 if torch.get_num_threads() != 3 else 2


def test_build_latent_graph_runs_with_n_jobs_threads(codes: np.ndarray) -> None:
    before, asked = torch.get_num_threads(), other_count()
    decoder = CountingDecoder()
    metric = PullbackMetric(decoder)
    decoder.seen.clear()  # PullbackMetric probes the decoder once when it is made
    build_latent_graph(metric, codes, k=4, n_jobs=asked)
    assert decoder.seen and set(decoder.seen) == {asked}
    assert torch.get_num_threads() == before
    decoder.seen.clear()
    build_latent_graph(metric, codes, k=4, n_jobs=-1)
    assert set(decoder.seen) == {_threads.available_cpus()} and torch.get_num_threads() == before


def test_none_is_the_automatic_choice(codes: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """n_jobs=None: lsg_graph._threads.default_threads() (here fixed by OMP_NUM_THREADS) for the call."""
    before = torch.get_num_threads()
    asked = other_count()
    monkeypatch.setattr(_threads, "_PROCESS_THREADS", [])  # set_threads() never called
    monkeypatch.setenv("OMP_NUM_THREADS", str(asked))
    assert _threads.default_threads() == asked
    decoder = CountingDecoder()
    metric = PullbackMetric(decoder)
    decoder.seen.clear()
    build_latent_graph(metric, codes, k=4)
    GeodesicKMeans(2, decoder=decoder, n_neighbors=4, random_state=0).fit(codes)
    assert set(decoder.seen) == {asked} and torch.get_num_threads() == before


@pytest.mark.parametrize("cls", [GeodesicKMeans, GeodesicDistance])
def test_estimators_fit_and_transform_with_n_jobs_threads(cls: type, codes: np.ndarray) -> None:
    before, asked = torch.get_num_threads(), other_count()
    decoder = CountingDecoder()
    params = {"decoder": decoder, "n_neighbors": 4, "n_jobs": asked}
    model = cls(2, random_state=0, **params) if cls is GeodesicKMeans else cls(**params)
    model.fit(codes)
    assert decoder.seen and set(decoder.seen) == {asked} and torch.get_num_threads() == before
    decoder.seen.clear()
    model.transform(codes[:3] + 0.01)
    assert decoder.seen and set(decoder.seen) == {asked} and torch.get_num_threads() == before
    model.set_params(n_jobs=1)
    decoder.seen.clear()
    model.transform(codes[:3] + 0.01)
    assert set(decoder.seen) == {1} and torch.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_bad_n_jobs_is_refused(bad: object, codes: np.ndarray) -> None:
    before = torch.get_num_threads()
    for make in (lambda: GeodesicKMeans(2, n_jobs=bad), lambda: GeodesicDistance(n_jobs=bad)):
        with pytest.raises(InvalidInput, match=r"The 'n_jobs' parameter must be None .*-1 .*int >= 1; got"):
            make().fit(codes)
    with pytest.raises(InvalidInput, match="'n_jobs' parameter"):
        build_latent_graph(PullbackMetric(CountingDecoder()), codes, k=4, n_jobs=bad)
    assert torch.get_num_threads() == before


def test_n_jobs_restored_after_an_error(codes: np.ndarray) -> None:
    before = torch.get_num_threads()

    def broken(z: torch.Tensor) -> tuple[torch.Tensor, None]:
        assert torch.get_num_threads() == other
        raise RuntimeError("decoder failed")

    other = other_count()
    with pytest.raises(Exception, match="decoder failed"):
        GeodesicDistance(decoder=broken, n_neighbors=4, n_jobs=other).fit(codes)
    assert torch.get_num_threads() == before


def test_none_keeps_the_count_set_threads_chose(codes: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """After set_threads(k) (the CLI's --threads), n_jobs=None means k, not a new automatic choice."""
    before = torch.get_num_threads()
    asked = other_count()
    monkeypatch.setattr(_threads, "_PROCESS_THREADS", [])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        assert _threads.set_threads(asked) == asked
        decoder = CountingDecoder()
        GeodesicDistance(decoder=decoder, n_neighbors=4).fit(codes)
        assert decoder.seen and set(decoder.seen) == {asked}
    finally:
        torch.set_num_threads(before)


def test_none_inside_an_explicit_scope_keeps_it(codes: np.ndarray) -> None:
    """A caller's torch_threads(k) block (a benchmark, an estimator's n_jobs): n_jobs=None inside it means k."""
    before, asked = torch.get_num_threads(), other_count()
    decoder = CountingDecoder()
    metric = PullbackMetric(decoder)
    decoder.seen.clear()
    with _threads.torch_threads(asked):
        build_latent_graph(metric, codes, k=4)
        assert torch.get_num_threads() == asked
    assert set(decoder.seen) == {asked} and torch.get_num_threads() == before and not _threads._SCOPES
