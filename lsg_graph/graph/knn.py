"""k nearest neighbours of latent codes under the Euclidean distance, with faiss, torch or kd-tree backends.

Both backends select candidates in float32 (faiss only works in float32), from data centred at their mean so that
the ||x||^2 - 2<x, y> + ||y||^2 expansion loses little to cancellation. A few more candidates than asked for are
taken, their distances are recomputed exactly in float64 as ||x_i - y_j||, and each row is sorted by
(distance, index). Distances are therefore exact, never negative, and the backends agree with each other and with
scikit-learn unless more than `EXTRA_CANDIDATES` points tie within float32 rounding at the k-th distance (then
which of the tied points is returned may differ, their distances do not).

Two approximate faiss backends are for 10^5 codes and more: 'faiss-ivf' (inverted lists, IndexIVFFlat) and
'faiss-hnsw' (a navigable small-world graph, IndexHNSWFlat), with the defaults in APPROXIMATE_BACKENDS. They may
miss a true neighbour (benchmarks/knn_scale.py measures the recall against exact search, docs/scale.md gives it);
the distances they return are still exact, and the result is a deterministic function of the data and `seed`
(the HNSW graph is built on one thread, since faiss inserts points in a thread-dependent order otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lsg_graph._validation import (
    check_choice,
    check_codes,
    check_neighbours,
    check_positive_int,
    check_seed,
    invalid_parameter,
    resolve_device,
    warn,
)
from lsg_graph.errors import InvalidInput, LsgGraphError
from lsg_graph.registry import DEFAULT_BACKEND, DEFAULT_DEVICE, DEFAULT_SEED

EXTRA_CANDIDATES = 8  # candidates searched beyond k (+1 for self) and re-ranked in float64
TORCH_BLOCK_BYTES = 256 * 2**20  # bound on the (batch, n) float32 score block of the torch backend
RECOMPUTE_BLOCK_BYTES = 64 * 2**20  # bound on the (rows, candidates, d) float64 differences of the exact recompute
APPROXIMATE_MIN_POINTS = 10_000  # below this many data points approximate=True searches exactly
IVF_LISTS_PER_SQRT_N = 4  # IVF uses about 4 * sqrt(n) inverted lists ...
IVF_MIN_POINTS_PER_LIST = 39  # ... but at least 39 training points per list (faiss warns below that)
IVF_MIN_PROBES = 16  # lists visited per query: max(16, nlist / 8), capped at nlist
IVF_PROBE_FRACTION = 8
# backend name -> defaults of the approximate faiss indexes (below APPROXIMATE_MIN_POINTS points both search exactly)
APPROXIMATE_BACKENDS: dict[str, dict[str, float]] = {
    # about 4 sqrt(n) lists (at least IVF_MIN_POINTS_PER_LIST training points each), 32 of them probed per query
    "faiss-ivf": {"lists_per_sqrt_n": 4, "nprobe": 32},
    # M links per node, efConstruction, efSearch (raised to 2 x the candidates searched when that is larger)
    "faiss-hnsw": {"M": 32, "ef_construction": 80, "ef_search": 64},
}
FAISS_GPU_MAX_K = 2048  # faiss GPU indexes return at most this many neighbours; beyond it the CPU index is used


@dataclass(frozen=True)
class Neighbors:
    """k nearest neighbours of each query: indices (m, k) int64 into the data, Euclidean distances (m, k) float64."""

    indices: np.ndarray
    distances: np.ndarray  # Euclidean (not squared) distances, ascending per row; ties ordered by index


def knn(
    data: Any,
    k: int,
    queries: Any = None,
    *,
    backend: str = DEFAULT_BACKEND,
    device: str | torch.device | None = DEFAULT_DEVICE,
    approximate: bool = False,
    batch_size: int | None = None,
    seed: int = DEFAULT_SEED,
) -> Neighbors:
    """The k nearest data points (Euclidean) of each query; without queries, of each data point but itself.

    Parameters
    ----------
    data : array-like or torch.Tensor (n, d)
    k : int
        Neighbours per query: 1 <= k <= n - 1 without queries, 1 <= k <= n with them.
    queries : array-like (m, d), optional
        Default `data`; then each point's own index is excluded, and exact duplicates of it are kept as neighbours
        at distance 0.
    backend : {"auto", "faiss", "torch", "kdtree", "faiss-ivf", "faiss-hnsw"}, default "auto"
        'faiss' (exact IndexFlatL2; a GPU index when faiss has GPU support and device is cuda), 'torch' (batched
        brute force on `device`, exact), 'kdtree' (scipy cKDTree, exact, CPU), 'faiss-ivf' or 'faiss-hnsw'
        (approximate, CPU, for n >= 10,000; see APPROXIMATE_BACKENDS) or 'auto' (see resolve_backend).
    device : str or torch.device, default "auto"
    approximate : bool, default False
        faiss only: an IVF index (IndexIVFFlat, about 4 * sqrt(n) lists, trained with `seed`) when n >= 10,000,
        an exact search for smaller n. The torch backend is always exact.
    batch_size : int, optional
        Queries searched at once (torch default: a (batch, n) float32 block of at most 256 MB; faiss default: all).
    seed : int, default 0
        Seeds the IVF k-means (approximate=True, 'faiss-ivf') and the HNSW levels ('faiss-hnsw').

    Returns
    -------
    Neighbors
        indices (m, k) int64 and exact float64 distances (m, k), rows sorted by (distance, index).
    """
    check_choice(backend, "kNN backend", BACKEND_CHOICES)
    data = _check_search_data(data)
    backend = resolve_backend(backend, data.shape[1], device)
    exclude_self = queries is None
    queries = data if exclude_self else _check_queries(queries, data.shape[1])
    k = check_neighbours(k, data.shape[0], exclude_self=exclude_self)
    options = _check_options(backend, device, approximate, batch_size, seed)
    n_candidates = min(data.shape[0], k + int(exclude_self) + EXTRA_CANDIDATES)
    exponent = _power_of_two_exponent(data, queries)  # exact rescaling by 2**exponent: float32 search and float64
    data, queries = np.ldexp(data, exponent), (None if exclude_self else np.ldexp(queries, exponent))  # squares stay finite
    queries = data if exclude_self else queries
    candidates = _search_candidates(backend, data, None if exclude_self else queries, n_candidates, options)
    indices, distances = _sort_rows(candidates, np.ldexp(_exact_distances(data, queries, candidates), -exponent))
    if exclude_self:
        indices, distances = _move_self_last(indices, distances)
    return Neighbors(np.ascontiguousarray(indices[:, :k]), np.ascontiguousarray(distances[:, :k]))


def _check_options(
    backend: str, device: str | torch.device | None, approximate: Any, batch_size: Any, seed: Any
) -> dict[str, Any]:
    """Return the checked backend keyword arguments: device (torch.device), approximate, batch_size, seed."""
    torch_device = resolve_device(device)
    if not isinstance(approximate, (bool, np.bool_)):
        raise invalid_parameter("approximate", "a bool", repr(approximate))
    if device not in (None, "auto") and torch_device.type == "cuda" and backend == "faiss" and not _faiss_has_gpu():
        warn("device='cuda' was asked for but faiss has no GPU support here; searching on the CPU.")
    return {
        "device": torch_device,
        "approximate": bool(approximate),
        "batch_size": None if batch_size is None else check_positive_int(batch_size, "batch_size"),
        "seed": check_seed(seed),
    }


def _search_candidates(
    backend: str, data: np.ndarray, queries: np.ndarray | None, n_candidates: int, options: dict[str, Any]
) -> np.ndarray:
    """Indices (m, c) of c candidate neighbours per query, found by `backend` in float32 on mean-centred data."""
    center = data.mean(axis=0)
    data32 = np.ascontiguousarray(data - center, dtype=np.float32)
    queries32 = data32 if queries is None else np.ascontiguousarray(queries - center, dtype=np.float32)
    try:
        candidates = np.asarray(KNN_BACKENDS[backend](data32, queries32, n_candidates, **options))
    except LsgGraphError:
        raise
    except (RuntimeError, ValueError, TypeError, MemoryError, AssertionError, OverflowError, IndexError) as exc:
        # faiss raises RuntimeError (with C++ text), scipy ValueError/MemoryError: say which backend and what input
        raise InvalidInput(
            f"The {backend!r} kNN backend failed on {data32.shape[0]} points of dimension {data32.shape[1]} "
            f"({queries32.shape[0]} queries, {n_candidates} candidates each): {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else 'no message'}. Try another backend "
            "(backend='kdtree', 'torch' or 'faiss')."
        ) from exc
    if candidates.shape != (queries32.shape[0], n_candidates) or (candidates < 0).any() or (
        candidates.size and candidates.max() >= data32.shape[0]
    ):
        raise InvalidInput(
            f"The {backend!r} kNN backend returned invalid candidates (shape {candidates.shape}, expected "
            f"{(queries32.shape[0], n_candidates)} indices in [0, {data32.shape[0]})); try another backend."
        )
    return candidates.astype(np.int64, copy=False)


def _power_of_two_exponent(data: np.ndarray, queries: np.ndarray) -> int:
    """The e for which 2**e brings the largest centred coordinate near 1 (scaling by it, np.ldexp, is exact).

    Codes beyond the float32 range (or so small that their squares underflow) would otherwise give inf or 0 in
    the float32 search and in the float64 squared distances.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        center = data.mean(axis=0)
        largest = max(float(np.max(np.abs(data - center))), float(np.max(np.abs(queries - center))))
    if not np.isfinite(largest):  # the centring itself overflowed (values near the float64 limit)
        largest = max(float(np.max(np.abs(data))), float(np.max(np.abs(queries))))
    if largest == 0.0 or 1e-8 <= largest <= 1e8:
        return 0
    return -math.frexp(largest)[1]  # may exceed 1023 for subnormal codes: 2.0 ** e itself would overflow


def _check_search_data(data: Any) -> np.ndarray:
    """Return data as a finite float64 (n, d) array with n >= 1 and d >= 1."""
    data = check_codes(data, "data")
    if data.shape[1] == 0:
        raise InvalidInput(f"data must have at least one column (latent dimension >= 1); got shape {data.shape}.")
    return data


def _check_queries(queries: Any, dim: int) -> np.ndarray:
    """Return queries as a finite float64 (m, d) array with the data's dimension d."""
    queries = check_codes(queries, "queries")
    if queries.shape[1] != dim:
        raise InvalidInput(
            f"queries have dimension {queries.shape[1]} but data have dimension {dim}; got shape {queries.shape}."
        )
    return queries


def _exact_distances(data: np.ndarray, queries: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Euclidean distances (m, c) float64 between queries (m, d) and data[indices] (m, c, d), computed as ||x - y||."""
    distances = np.empty(indices.shape, dtype=np.float64)
    rows = max(1, RECOMPUTE_BLOCK_BYTES // (8 * max(1, indices.shape[1] * data.shape[1])))
    for start in range(0, indices.shape[0], rows):
        block = slice(start, start + rows)
        differences = data[indices[block]] - queries[block, None, :]
        distances[block] = np.sqrt(np.einsum("ijk,ijk->ij", differences, differences))
    return distances


def _sort_rows(indices: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row of (indices, distances), both (m, c), by distance then index."""
    order = np.lexsort((indices, distances), axis=-1)
    return np.take_along_axis(indices, order, axis=1), np.take_along_axis(distances, order, axis=1)


def _move_self_last(indices: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move each row's own index (row i holds query i) to the end of the row, keeping the order of the others."""
    is_self = indices == np.arange(indices.shape[0])[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")
    return np.take_along_axis(indices, order, axis=1), np.take_along_axis(distances, order, axis=1)


def _import_faiss() -> Any:
    """Return the faiss module, else raise InvalidInput saying how to get it."""
    try:
        import faiss
    except ImportError as exc:
        raise InvalidInput(
            "The 'faiss' kNN backend needs the faiss package, which is not importable; "
            "install faiss-cpu (or faiss-gpu), or use backend='torch'."
        ) from exc
    return faiss


def _faiss_has_gpu() -> bool:
    """Whether faiss is importable, built with GPU support and sees a GPU."""
    try:
        import faiss
    except ImportError:
        return False
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _knn_faiss(
    data: np.ndarray,
    queries: np.ndarray,
    n_candidates: int,
    *,
    device: torch.device,
    approximate: bool,
    batch_size: int | None,
    seed: int,
) -> np.ndarray:
    """Candidate indices (m, c) of queries (m, d) among data (n, d), both float32, from a faiss L2 index."""
    faiss = _import_faiss()
    if approximate and data.shape[0] >= APPROXIMATE_MIN_POINTS:
        index = _faiss_ivf_index(faiss, data, seed)
    else:
        index = faiss.IndexFlatL2(data.shape[1])
        index.add(data)
    use_gpu = device.type == "cuda" and n_candidates <= FAISS_GPU_MAX_K and _faiss_has_gpu()
    resources = faiss.StandardGpuResources() if use_gpu else None  # must outlive the GPU index
    if use_gpu:
        index = faiss.index_cpu_to_gpu(resources, device.index or 0, index)
    return _fill_missing(faiss, index, data, queries, n_candidates, batch_size)  # probed IVF lists can run short


def _faiss_ivf_index(
    faiss: Any, data: np.ndarray, seed: int, lists_per_sqrt_n: float = IVF_LISTS_PER_SQRT_N, nprobe: int | None = None
) -> Any:
    """An IndexIVFFlat over data (n, d) float32 with ~lists_per_sqrt_n sqrt(n) lists, k-means trained with `seed`.

    nprobe (lists visited per query): the given number, else max(IVF_MIN_PROBES, lists / IVF_PROBE_FRACTION);
    at most the number of lists.
    """
    n, dim = data.shape
    n_lists = max(1, min(round(lists_per_sqrt_n * math.sqrt(n)), n // IVF_MIN_POINTS_PER_LIST))
    quantizer = faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, n_lists, faiss.METRIC_L2)
    index.cp.seed = seed
    index.train(data)
    index.add(data)
    probes = max(IVF_MIN_PROBES, n_lists // IVF_PROBE_FRACTION) if nprobe is None else int(nprobe)
    index.nprobe = min(n_lists, probes)
    return index


def _faiss_search(index: Any, queries: np.ndarray, n_candidates: int, batch_size: int | None) -> np.ndarray:
    """Indices (m, c) int64 of the c nearest indexed points of each query (m, d) float32, in batches of queries."""
    rows = batch_size or max(1, queries.shape[0])
    blocks = [
        index.search(queries[start : start + rows], n_candidates)[1] for start in range(0, queries.shape[0], rows)
    ]
    return np.concatenate(blocks).astype(np.int64, copy=False)


def _knn_torch(
    data: np.ndarray,
    queries: np.ndarray,
    n_candidates: int,
    *,
    device: torch.device,
    approximate: bool,
    batch_size: int | None,
    seed: int,
) -> np.ndarray:
    """Candidate indices (m, c) of queries (m, d) among data (n, d), both float32, by batched brute force with topk.

    Ranks by ||x||^2 - 2<q, x> (the query's own norm does not change its ranking); `approximate` and `seed` are
    unused, the search is exact.
    """
    rows = batch_size or max(1, TORCH_BLOCK_BYTES // (4 * data.shape[0]))
    with torch.inference_mode():
        points = torch.from_numpy(data).to(device)
        squared_norms = (points * points).sum(dim=1)
        indices = torch.empty((queries.shape[0], n_candidates), dtype=torch.int64, device=device)
        for start in range(0, queries.shape[0], rows):
            block = torch.from_numpy(queries[start : start + rows]).to(device)
            scores = torch.addmm(squared_norms[None, :], block, points.T, alpha=-2.0)
            indices[start : start + rows] = scores.topk(n_candidates, dim=1, largest=False, sorted=False).indices
        return indices.cpu().numpy()


def _knn_kdtree(
    data: np.ndarray,
    queries: np.ndarray,
    n_candidates: int,
    *,
    device: torch.device,
    approximate: bool,
    batch_size: int | None,
    seed: int,
) -> np.ndarray:
    """Candidate indices (m, c) from scipy's cKDTree on all cores: exact, and much faster than brute force for small d."""
    from scipy.spatial import cKDTree

    tree = cKDTree(data, balanced_tree=False, compact_nodes=False)
    indices = tree.query(queries, k=n_candidates, workers=-1)[1]
    return np.asarray(indices, dtype=np.int64).reshape(queries.shape[0], n_candidates)


def _knn_faiss_ivf(
    data: np.ndarray,
    queries: np.ndarray,
    n_candidates: int,
    *,
    device: torch.device,
    approximate: bool,
    batch_size: int | None,
    seed: int,
) -> np.ndarray:
    """Candidate indices (m, c) from an IndexIVFFlat with the 'faiss-ivf' defaults (exact below APPROXIMATE_MIN_POINTS)."""
    faiss = _import_faiss()
    if data.shape[0] < APPROXIMATE_MIN_POINTS:
        return _flat_search(faiss, data, queries, n_candidates, batch_size)
    settings = APPROXIMATE_BACKENDS["faiss-ivf"]
    index = _faiss_ivf_index(faiss, data, seed, settings["lists_per_sqrt_n"], settings["nprobe"])
    return _fill_missing(faiss, index, data, queries, n_candidates, batch_size)


def _knn_faiss_hnsw(
    data: np.ndarray,
    queries: np.ndarray,
    n_candidates: int,
    *,
    device: torch.device,
    approximate: bool,
    batch_size: int | None,
    seed: int,
) -> np.ndarray:
    """Candidate indices (m, c) from an IndexHNSWFlat with the 'faiss-hnsw' defaults (exact below APPROXIMATE_MIN_POINTS).

    The points are inserted on one thread (faiss's parallel insertion links them in a thread-dependent order, so
    the graph and the neighbours it finds would vary between runs); the search uses all threads.
    """
    faiss = _import_faiss()
    if data.shape[0] < APPROXIMATE_MIN_POINTS:
        return _flat_search(faiss, data, queries, n_candidates, batch_size)
    settings = APPROXIMATE_BACKENDS["faiss-hnsw"]
    index = faiss.IndexHNSWFlat(data.shape[1], int(settings["M"]))
    index.hnsw.efConstruction = int(settings["ef_construction"])
    index.hnsw.rng = faiss.RandomGenerator(int(seed))  # the random levels of the nodes
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.add(data)
    finally:
        faiss.omp_set_num_threads(threads)
    index.hnsw.efSearch = max(int(settings["ef_search"]), 2 * n_candidates)
    return _fill_missing(faiss, index, data, queries, n_candidates, batch_size)


def _flat_search(
    faiss: Any, data: np.ndarray, queries: np.ndarray, n_candidates: int, batch_size: int | None
) -> np.ndarray:
    """Candidate indices (m, c) by exact search (IndexFlatL2) of queries among data."""
    index = faiss.IndexFlatL2(data.shape[1])
    index.add(data)
    return _faiss_search(index, queries, n_candidates, batch_size)


def _fill_missing(
    faiss: Any, index: Any, data: np.ndarray, queries: np.ndarray, n_candidates: int, batch_size: int | None
) -> np.ndarray:
    """Search `index`; queries for which it returned fewer than c points (index -1) are searched exactly."""
    indices = _faiss_search(index, queries, n_candidates, batch_size)
    missing = (indices < 0).any(axis=1)
    if missing.any():
        indices[missing] = _flat_search(faiss, data, np.ascontiguousarray(queries[missing]), n_candidates, batch_size)
    return indices


KNN_BACKENDS: dict[str, Callable[..., np.ndarray]] = {
    "faiss": _knn_faiss,
    "torch": _knn_torch,
    "kdtree": _knn_kdtree,
    "faiss-ivf": _knn_faiss_ivf,
    "faiss-hnsw": _knn_faiss_hnsw,
}
KDTREE_MAX_DIM = 16  # 'auto' uses the kd-tree up to this latent dimension on the CPU (trees degrade beyond it)
BACKEND_CHOICES = ("auto", *KNN_BACKENDS)


def resolve_backend(backend: str, dim: int, device: str | torch.device | None = DEFAULT_DEVICE) -> str:
    """The concrete backend for 'auto': faiss-gpu or torch on CUDA; kdtree for d <= 16 on the CPU, else faiss."""
    check_choice(backend, "kNN backend", BACKEND_CHOICES)
    if backend != "auto":
        return backend
    if resolve_device(device).type == "cuda":
        return "faiss" if _faiss_has_gpu() else "torch"
    return "kdtree" if dim <= KDTREE_MAX_DIM else "faiss"
