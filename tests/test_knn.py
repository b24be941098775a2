"""Tests of lsg_graph.graph.knn: exactness against scikit-learn, self exclusion, duplicates, validation, backends."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from lsg_graph.errors import InvalidInput
from lsg_graph.graph import knn as knn_module
from lsg_graph.graph.knn import Neighbors, knn

BACKENDS = ["faiss", "torch", "kdtree", "auto", "faiss-ivf", "faiss-hnsw"]  # the last two are exact below 10^4 points


def _random_codes(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Gaussian codes (n, d) float64, offset from the origin to exercise the float32 expansion."""
    return np.random.default_rng(seed).standard_normal((n, d)) + 3.0


def _sklearn_neighbors(data: np.ndarray, k: int, queries: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reference (distances, indices) from scikit-learn's brute-force search, self excluded when queries is None."""
    model = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(data)
    return model.kneighbors(queries)


def _recall(found: np.ndarray, expected: np.ndarray) -> float:
    """Mean fraction of each row of `expected` (m, k) present in the same row of `found` (m, k)."""
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, expected, strict=True)]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dim", [2, 7])
def test_matches_sklearn_self_excluded(backend: str, dim: int) -> None:
    data = _random_codes(600, dim)
    result = knn(data, 8, backend=backend, device="cpu")
    distances, indices = _sklearn_neighbors(data, 8)
    assert isinstance(result, Neighbors)
    assert result.indices.shape == (600, 8) and result.indices.dtype == np.int64
    assert result.distances.shape == (600, 8) and result.distances.dtype == np.float64
    assert _recall(result.indices, indices) == 1.0
    np.testing.assert_allclose(result.distances, distances, rtol=1e-10, atol=1e-12)
    assert np.all(np.diff(result.distances, axis=1) >= 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_sklearn_with_queries(backend: str) -> None:
    data, queries = _random_codes(500, 3, seed=1), _random_codes(70, 3, seed=2)
    result = knn(data, 5, queries, backend=backend, device="cpu")
    distances, indices = _sklearn_neighbors(data, 5, queries)
    assert result.indices.shape == (70, 5)
    np.testing.assert_array_equal(result.indices, indices)
    np.testing.assert_allclose(result.distances, distances, rtol=1e-10, atol=1e-12)


def test_queries_equal_to_data_keep_self() -> None:
    data = _random_codes(50, 2)
    result = knn(data, 3, data.copy())
    np.testing.assert_array_equal(result.indices[:, 0], np.arange(50))
    np.testing.assert_array_equal(result.distances[:, 0], 0.0)


def test_torch_equals_faiss_and_accepts_tensors() -> None:
    data = _random_codes(1500, 4, seed=3)
    for codes in (data, data.astype(np.float32)):
        from_faiss = knn(codes, 12, backend="faiss")
        from_torch = knn(torch.from_numpy(codes), 12, backend="torch", batch_size=100)
        np.testing.assert_array_equal(from_torch.indices, from_faiss.indices)
        np.testing.assert_array_equal(from_torch.distances, from_faiss.distances)


@pytest.mark.parametrize("backend", BACKENDS)
def test_self_excluded_and_duplicates_at_distance_zero(backend: str) -> None:
    data = _random_codes(200, 3, seed=4)
    duplicates = [10, 50, 90, 130, 170]
    data[duplicates] = data[10]
    result = knn(data, 6, backend=backend)
    assert (result.indices >= 0).all()
    assert not (result.indices == np.arange(200)[:, None]).any()
    for point in duplicates:
        expected = [other for other in duplicates if other != point]
        np.testing.assert_array_equal(result.indices[point, :4], expected)
        np.testing.assert_array_equal(result.distances[point, :4], 0.0)
        assert result.distances[point, 4] > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_more_duplicates_than_candidates(backend: str) -> None:
    data = np.vstack([np.zeros((40, 2)), _random_codes(60, 2, seed=5)])
    result = knn(data, 5, backend=backend)
    assert (result.indices >= 0).all()
    assert not (result.indices == np.arange(100)[:, None]).any()
    np.testing.assert_array_equal(result.distances[:40], 0.0)
    assert (result.indices[:40] < 40).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_k_equal_to_n_minus_one(backend: str) -> None:
    data = _random_codes(30, 2, seed=6)
    result = knn(data, 29, backend=backend)
    for row, neighbours in enumerate(result.indices):
        assert sorted(neighbours) == [other for other in range(30) if other != row]
    distances, _ = _sklearn_neighbors(data, 29)
    np.testing.assert_allclose(result.distances, distances, rtol=1e-10, atol=1e-12)


def test_k_equal_to_n_with_queries() -> None:
    data = _random_codes(30, 2, seed=7)
    result = knn(data, 30, data[:4] + 0.01)
    assert sorted(result.indices[0]) == list(range(30))
    with pytest.raises(InvalidInput, match=r"must be <= the number of points \(30\); got 31"):
        knn(data, 31, data[:4])


def test_k_too_large_names_k_and_n() -> None:
    with pytest.raises(InvalidInput, match=r"'k' parameter must be < the number of points \(30\); got 30"):
        knn(_random_codes(30, 2), 30)


@pytest.mark.parametrize("bad_k", [0, -1, 2.5, True])
def test_bad_k(bad_k: object) -> None:
    with pytest.raises(InvalidInput, match="'k'"):
        knn(_random_codes(30, 2), bad_k)  # type: ignore[arg-type]


def test_unknown_backend_lists_valid_ones() -> None:
    with pytest.raises(InvalidInput, match=r"'annoy'.*'faiss', 'torch'"):
        knn(_random_codes(30, 2), 3, backend="annoy")


def test_unknown_device() -> None:
    with pytest.raises(InvalidInput, match="device"):
        knn(_random_codes(30, 2), 3, device="tpu")


def test_nan_row_named() -> None:
    data = _random_codes(30, 2)
    data[17, 1] = np.nan
    with pytest.raises(InvalidInput, match=r"data contains NaN or inf.*\[17\]"):
        knn(data, 3)
    queries = _random_codes(5, 2)
    queries[3, 0] = np.inf
    with pytest.raises(InvalidInput, match=r"queries contains NaN or inf.*\[3\]"):
        knn(_random_codes(30, 2), 3, queries)


def test_wrong_shapes() -> None:
    data = _random_codes(30, 2)
    with pytest.raises(InvalidInput, match=r"queries have dimension 3 but data have dimension 2"):
        knn(data, 3, _random_codes(5, 3))
    with pytest.raises(InvalidInput, match="2-D"):
        knn(data[:, 0], 3)
    with pytest.raises(InvalidInput, match="at least 1 row"):
        knn(np.empty((0, 2)), 1)
    with pytest.raises(InvalidInput, match="at least one column"):
        knn(np.empty((5, 0)), 1)
    with pytest.raises(InvalidInput, match=r"number of points \(1\)"):
        knn(data[:1], 1)


def test_bad_batch_size_and_seed() -> None:
    with pytest.raises(InvalidInput, match="'batch_size'"):
        knn(_random_codes(30, 2), 3, batch_size=0)
    with pytest.raises(InvalidInput, match="'seed'"):
        knn(_random_codes(30, 2), 3, seed=-1)


def test_batch_size_does_not_change_results() -> None:
    data = _random_codes(300, 3, seed=8)
    reference = knn(data, 4)
    for backend in BACKENDS:
        batched = knn(data, 4, backend=backend, batch_size=37)
        np.testing.assert_array_equal(batched.indices, reference.indices)
        np.testing.assert_array_equal(batched.distances, reference.distances)


def test_approximate_recall() -> None:
    data = np.random.default_rng(9).random((20_000, 2))
    approximate = knn(data, 10, approximate=True, seed=0)
    assert (approximate.indices >= 0).all()
    assert not (approximate.indices == np.arange(20_000)[:, None]).any()
    exact = knn(data, 11, data[:2000])  # exact neighbours of the first 2000 points, themselves first
    assert (exact.indices[:, 0] == np.arange(2000)).all()
    assert _recall(approximate.indices[:2000], exact.indices[:, 1:]) >= 0.95
    np.testing.assert_array_equal(knn(data, 10, approximate=True, seed=0).indices, approximate.indices)


@pytest.mark.parametrize("backend", ["faiss-ivf", "faiss-hnsw"])
def test_approximate_backends_recall_and_determinism(backend: str) -> None:
    """Above APPROXIMATE_MIN_POINTS the IVF / HNSW index is used: recall@10 against exact search on a sample of 1000
    points is high, the distances returned are exact, and the same seed gives the same neighbours."""
    rng = np.random.default_rng(21)
    centers = rng.normal(size=(8, 8)) * 3.0
    data = centers[rng.integers(0, 8, 12_000)] + rng.normal(size=(12_000, 8))
    found = knn(data, 10, backend=backend, seed=3)
    sample = rng.choice(12_000, 1000, replace=False)
    exact = knn(data, 11, data[sample], backend="kdtree")  # each sample point first (distance 0), then its 10
    assert (exact.indices[:, 0] == sample).all()
    assert _recall(found.indices[sample], exact.indices[:, 1:]) >= 0.97
    recomputed = np.linalg.norm(data[found.indices] - data[:, None, :], axis=2)
    np.testing.assert_allclose(found.distances, recomputed, rtol=1e-12)
    assert (np.diff(found.distances, axis=1) >= 0).all()
    assert not (found.indices == np.arange(12_000)[:, None]).any()
    again = knn(data, 10, backend=backend, seed=3)
    np.testing.assert_array_equal(again.indices, found.indices)
    np.testing.assert_array_equal(again.distances, found.distances)


def test_approximate_small_n_is_exact() -> None:
    data = _random_codes(400, 5, seed=10)
    np.testing.assert_array_equal(knn(data, 6, approximate=True).indices, knn(data, 6).indices)


def test_approximate_falls_back_to_exact_where_ivf_finds_too_few(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(knn_module, "APPROXIMATE_MIN_POINTS", 100)
    monkeypatch.setattr(knn_module, "IVF_MIN_PROBES", 1)
    monkeypatch.setattr(knn_module, "IVF_PROBE_FRACTION", 10**6)
    data = _random_codes(2000, 2, seed=13)
    approximate = knn(data, 60, approximate=True)  # one probed list (~40 points) cannot supply 69 candidates
    np.testing.assert_array_equal(approximate.indices, knn(data, 60).indices)


def test_missing_faiss_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(InvalidInput, match=r"faiss-cpu.*backend='torch'"):
        knn(_random_codes(30, 2), 3, backend="faiss")
    assert knn(_random_codes(30, 2), 3, backend="torch").indices.shape == (30, 3)


def test_import_does_not_need_faiss() -> None:
    code = "import sys; import lsg_graph.graph.knn; assert 'faiss' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_cuda_equals_cpu() -> None:
    data = _random_codes(3000, 6, seed=11)
    on_cpu = knn(data, 10, backend="torch", device="cpu")
    on_cuda = knn(torch.from_numpy(data).cuda(), 10, backend="torch", device="cuda")
    np.testing.assert_array_equal(on_cuda.indices, on_cpu.indices)
    np.testing.assert_allclose(on_cuda.distances, on_cpu.distances, rtol=1e-12, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.filterwarnings("ignore:device='cuda' was asked for")
def test_faiss_with_cuda_device_equals_cpu() -> None:
    data = _random_codes(3000, 6, seed=12)
    np.testing.assert_array_equal(knn(data, 10, device="cuda").indices, knn(data, 10, device="cpu").indices)


def test_subnormal_codes_are_searched_exactly() -> None:
    """Codes of the order of the smallest subnormal (5e-324) need a rescaling beyond 2**1023: still exact, no error."""
    data = np.array([[5e-324], [0.0], [0.0], [1.5e-323]])
    result = knn(data, 1)
    assert result.indices[:, 0].tolist() == [1, 2, 1, 0]
    np.testing.assert_array_equal(result.distances[:, 0], [5e-324, 0.0, 0.0, 1e-323])
