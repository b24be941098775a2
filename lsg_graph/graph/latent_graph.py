"""LatentGraph: latent codes joined to their nearest neighbours by edges weighted with metric segment lengths."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from lsg_graph import _io
from lsg_graph._threads import scoped_threads
from lsg_graph._validation import (
    check_choice,
    check_codes,
    check_int,
    check_labels,
    check_neighbours,
    check_positive_int,
    warn,
)
from lsg_graph.errors import ArtifactError, DisconnectedGraph, DisconnectedGraphWarning, InvalidInput
from lsg_graph.graph.knn import knn, resolve_backend
from lsg_graph.graph.weights import _edge_lengths, check_metric, edge_lengths
from lsg_graph.metric import PullbackMetric
from lsg_graph.registry import (
    DEFAULT_BACKEND,
    DEFAULT_CANDIDATES,
    DEFAULT_DEVICE,
    DEFAULT_K,
    DEFAULT_N_NODES,
    DEFAULT_SEED,
)

GRAPH_FILE = "graph.npz"
GRAPH_KIND = "lsg-graph/graph"
CONNECT_MODES = {"bridge": "join components by their shortest metric-weighted bridges", "error": "refuse"}
BRIDGE_CANDIDATES = 8  # Euclidean-closest cross-component pairs measured per component and round
ZERO_LENGTH = float(np.finfo(np.float64).tiny)  # stored instead of 0 so that duplicate codes stay joined
SHORTCUT_NODE_FACTOR = 2  # shortcut edges are long: measured with this many times the quadrature nodes
VOLATILE_PARAMS = ("timings",)  # params that differ between identical builds: kept out of graph.npz


@dataclass
class LatentGraph:
    """A latent graph: codes joined to their neighbours by edges carrying metric segment lengths.

    Build it with `build_latent_graph`, or `LatentGraph.load(run_dir)`.

    Parameters
    ----------
    codes : ndarray (n, d) float64
        The nodes.
    weights : scipy.sparse.csr_matrix (n, n)
        Symmetric edge lengths (zero-length edges between duplicate codes are stored as the smallest float).
    labels : ndarray (n,) int64, optional
    params : dict
        The build parameters (k, n_nodes, candidates, ...), saved with the graph.
    """

    codes: np.ndarray
    weights: sp.csr_matrix
    labels: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_points(self) -> int:
        """Number of nodes (codes)."""
        return int(self.codes.shape[0])

    @property
    def latent_dim(self) -> int:
        """Dimension d of the latent codes."""
        return int(self.codes.shape[1])

    @property
    def n_edges(self) -> int:
        """Number of undirected edges."""
        return int(self.weights.nnz // 2)

    def components(self) -> tuple[int, np.ndarray]:
        """Number of connected components and the component label (n,) of each node.

        Returns
        -------
        n_components : int
            Number of connected components.
        component_of : ndarray (n,) int
            Component label of each node.
        """
        n_components, component_of = connected_components(self.weights, directed=False)
        return int(n_components), component_of

    def to_networkx(self) -> Any:
        """The graph as a networkx.Graph with node attributes 'code' (and 'label') and edge attribute 'weight'.

        Returns
        -------
        networkx.Graph
            n nodes, one edge per undirected graph edge.
        """
        import networkx as nx

        graph = nx.Graph()
        for node in range(self.n_points):
            attributes: dict[str, Any] = {"code": self.codes[node]}
            if self.labels is not None:
                attributes["label"] = int(self.labels[node])
            graph.add_node(node, **attributes)
        upper = sp.triu(self.weights, k=1).tocoo()
        graph.add_weighted_edges_from(zip(upper.row.tolist(), upper.col.tolist(), upper.data.tolist(), strict=True))
        return graph

    def attach(self, new_codes: Any, metric: PullbackMetric, k: int | None = None, n_nodes: int | None = None) -> LatentGraph:
        """A new graph with `new_codes` (m, d) appended as nodes n..n+m-1, each joined to its k nearest codes.

        Parameters
        ----------
        new_codes : array-like (m, d)
            Codes to add.
        metric : PullbackMetric
            Measures the new edges (the metric the graph was built with).
        k : int, optional
            Neighbours per new code (default: the graph's k).
        n_nodes : int, optional
            Quadrature nodes per new edge (default: the graph's).

        Returns
        -------
        LatentGraph
            n + m nodes; the old edges unchanged, new codes joined only to old ones.
        """
        check_metric(metric)
        new_codes = check_codes(new_codes, "new_codes", latent_dim=self.latent_dim)
        k = check_int(self.params.get("k", DEFAULT_K) if k is None else k, "k", minimum=1, maximum=self.n_points)
        n_nodes = check_positive_int(self.params.get("n_nodes", DEFAULT_N_NODES) if n_nodes is None else n_nodes, "n_nodes")
        neighbors = knn(self.codes, k, queries=new_codes, backend=self.params.get("backend", "auto"), device="cpu")
        rows = np.repeat(np.arange(self.n_points, self.n_points + len(new_codes)), k)
        cols = neighbors.indices.reshape(-1)
        lengths = edge_lengths(metric, new_codes[rows - self.n_points], self.codes[cols], n_nodes=n_nodes)
        n_total = self.n_points + len(new_codes)
        added = _symmetric_csr(rows, cols, lengths, n_total)
        indptr = np.concatenate([self.weights.indptr, np.full(len(new_codes), self.weights.indptr[-1])])
        base = sp.csr_matrix((self.weights.data, self.weights.indices, indptr), shape=(n_total, n_total))
        params = dict(self.params, n_attached=int(self.params.get("n_attached", 0)) + len(new_codes))
        labels = None if self.labels is None else np.concatenate([self.labels, np.full(len(new_codes), -1)])
        return LatentGraph(np.vstack([self.codes, new_codes]), _merge_csr(base, added), labels, params)

    def save(self, run_dir: str | Path) -> Path:
        """Write the graph to `run_dir`/graph.npz atomically (arrays only) and record it in the manifest.

        The file holds the codes, labels, edges and the build parameters except VOLATILE_PARAMS (timings), which are
        recorded in manifest.json only: the same graph always gives byte-identical files.

        Parameters
        ----------
        run_dir : str or Path
            The run directory.

        Returns
        -------
        Path
            The path of graph.npz.
        """
        run_dir = Path(run_dir)
        arrays = {
            "codes": self.codes,
            "indptr": self.weights.indptr.astype(np.int64),
            "indices": self.weights.indices.astype(np.int64),
            "edge_lengths": self.weights.data.astype(np.float64),
        }
        if self.labels is not None:
            arrays["labels"] = self.labels.astype(np.int64)
        # run-dependent entries (timings) go to the manifest only, so that the same build gives the same bytes
        stored = {name: value for name, value in self.params.items() if name not in VOLATILE_PARAMS}
        meta = {"format": GRAPH_KIND, "format_version": _io.FORMAT_VERSION, "params": stored}
        with _io.run_transaction(run_dir) as transaction:  # the graph and its manifest entry land together
            _io.save_arrays(transaction.stage(GRAPH_FILE), arrays, meta)
            transaction.record("graph", [GRAPH_FILE], self.params)
        return run_dir / GRAPH_FILE

    @classmethod
    def load(cls, run_dir: str | Path) -> LatentGraph:
        """Read and validate `run_dir`/graph.npz; a missing, corrupt or inconsistent file raises ArtifactError.

        Parameters
        ----------
        run_dir : str or Path
            A run directory holding graph.npz.

        Returns
        -------
        LatentGraph
            The graph as saved.
        """
        path = Path(run_dir) / GRAPH_FILE
        with _io.run_read_lock(run_dir):  # finishes an update a killed writer committed; no commit lands mid-read
            arrays, meta = _io.load_arrays(path, GRAPH_KIND)
        return _graph_from_arrays(arrays, meta, path)


@scoped_threads
def build_latent_graph(
    metric: PullbackMetric,
    codes: Any,
    labels: Any = None,
    *,
    k: int = DEFAULT_K,
    n_nodes: int = DEFAULT_N_NODES,
    backend: str = DEFAULT_BACKEND,
    device: str = DEFAULT_DEVICE,
    candidates: int = DEFAULT_CANDIDATES,
    connect: str = "bridge",
    progress: bool = False,
    executor: Any = None,
    shortcuts: int = 0,
    seed: int = DEFAULT_SEED,
    n_jobs: int | None = None,
) -> LatentGraph:
    """Build the kNN graph of latent codes whose edges carry the metric length of their straight segments.

    Parameters
    ----------
    metric : PullbackMetric
        The metric that measures the edges (``PullbackMetric(decoder)``).
    codes : array-like (n, d)
        Latent codes, n >= 2; d must match the metric's latent dimension (taken from the codes when unknown).
    labels : array-like (n,), optional
        Integer labels, kept with the graph.
    k : int, default 20
        Neighbours per code, 1 <= k < n (lsg_graph.registry.DEFAULT_K).
    n_nodes : int, default 8
        Gauss-Legendre nodes per edge.
    backend : {"auto", "faiss", "torch", "kdtree"}, default "auto"
        kNN backend (lsg_graph.registry.KNN_BACKENDS).
    device : str, default "auto"
        Where the kNN search runs.
    candidates : int, default 1
        With c > 1, c * k Euclidean neighbours are measured and the k metrically shortest kept (metric-aware
        neighbours).
    connect : {"bridge", "error"}, default "bridge"
        A disconnected graph is joined by its shortest metric-weighted bridges (with a DisconnectedGraphWarning)
        or refused (DisconnectedGraph).
    progress : bool, default False
        Show a progress bar over the edge weighting.
    executor : object, optional
        Measures the edges instead of this process: an object with ``edge_lengths(metric, starts, ends, n_nodes=,
        progress=)`` such as lsg_graph.distributed.RayExecutor.
    shortcuts : int, default 0
        With s > 0 every code is also joined to s partners drawn uniformly (seeded by `seed`), each measured with
        SHORTCUT_NODE_FACTOR times the quadrature nodes: long edges that let Dijkstra follow near-straight routes in
        high latent dimensions; like every edge they carry the length of an actual curve, so graph distances stay
        upper bounds.
    seed : int, default 0
        Seed of the shortcut partners.
    n_jobs : int, optional
        Torch CPU threads for the call (None: the automatic choice of lsg_graph._threads.resolve_threads; -1: all
        usable cores; k >= 1: k), restored afterwards.

    Returns
    -------
    LatentGraph
        Codes, labels, the symmetric CSR matrix of edge lengths and the build parameters.
    """
    check_metric(metric)
    if not metric.latent_dim_known:  # PullbackMetric(decoder) without latent_dim: d from the codes
        metric.bind_latent_dim(check_codes(codes, "codes", min_rows=2).shape[1])
    codes = check_codes(codes, "codes", latent_dim=metric.latent_dim, min_rows=2)
    labels = check_labels(labels, codes.shape[0])
    n_points = codes.shape[0]
    k = check_neighbours(k, n_points)
    n_nodes = check_positive_int(n_nodes, "n_nodes")
    candidates = check_positive_int(candidates, "candidates")
    shortcuts = check_int(shortcuts, "shortcuts", minimum=0)
    backend = resolve_backend(backend, codes.shape[1], device)
    check_choice(connect, "connect mode", CONNECT_MODES)
    if executor is not None and not callable(getattr(executor, "edge_lengths", None)):
        raise InvalidInput(f"executor must be None or have an edge_lengths method; got {type(executor).__name__}.")
    measure = _edge_lengths if executor is None else executor.edge_lengths  # the codes are checked: no re-check
    timings: dict[str, float] = {}

    started = time.perf_counter()
    n_candidates = min(candidates * k, n_points - 1)
    neighbors = knn(codes, n_candidates, backend=backend, device=device)
    timings["knn_s"] = time.perf_counter() - started

    started = time.perf_counter()
    rows, cols = _unique_pairs(neighbors.indices)
    lengths = measure(metric, codes[rows], codes[cols], n_nodes=n_nodes, progress=progress)
    if n_candidates > k:
        rows, cols, lengths = _keep_metric_nearest(rows, cols, lengths, n_points, k)
    if shortcuts:
        extra_rows, extra_cols = _shortcut_pairs(n_points, shortcuts, seed, rows * n_points + cols)
        extra = measure(metric, codes[extra_rows], codes[extra_cols], n_nodes=SHORTCUT_NODE_FACTOR * n_nodes,
                        progress=progress)
        rows, cols, lengths = np.r_[rows, extra_rows], np.r_[cols, extra_cols], np.r_[lengths, extra]
    weights = _symmetric_csr(rows, cols, lengths, n_points)
    timings["edge_lengths_s"] = time.perf_counter() - started

    started = time.perf_counter()
    weights, n_components, n_bridges = _connect(weights, codes, metric, n_nodes, backend, connect)
    timings["components_s"] = time.perf_counter() - started

    params = {
        "k": k,
        "n_nodes": n_nodes,
        "backend": backend,
        "candidates": candidates,
        "shortcuts": shortcuts,
        "seed": seed,
        "connect": connect,
        "n_components_before_bridging": n_components,
        "n_bridges": n_bridges,
        "timings": {name: round(value, 4) for name, value in timings.items()},
    }
    return LatentGraph(codes, weights, labels, params)


def _shortcut_pairs(n_points: int, per_point: int, seed: int, existing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique undirected pairs (i < j) joining each point to `per_point` uniform partners, minus `existing` keys."""
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_points, dtype=np.int64), per_point)
    cols = (rows + rng.integers(1, n_points, size=rows.size)) % n_points  # never the point itself
    low, high = np.minimum(rows, cols), np.maximum(rows, cols)
    keys = np.setdiff1d(np.unique(low * n_points + high), existing)
    return keys // n_points, keys % n_points


def _unique_pairs(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique undirected pairs (i < j) from a neighbour table (n, k): rows (E,), cols (E,)."""
    n_points, n_neighbors = indices.shape
    rows = np.repeat(np.arange(n_points, dtype=np.int64), n_neighbors)
    cols = indices.reshape(-1).astype(np.int64)
    low, high = np.minimum(rows, cols), np.maximum(rows, cols)
    keys = np.unique(low * n_points + high)
    return keys // n_points, keys % n_points


def _keep_metric_nearest(
    rows: np.ndarray, cols: np.ndarray, lengths: np.ndarray, n_points: int, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep, for every node, its k candidate edges of smallest metric length (an edge survives if either end keeps it)."""
    heads = np.concatenate([rows, cols])
    edge_ids = np.concatenate([np.arange(len(rows)), np.arange(len(rows))])
    order = np.lexsort((edge_ids, lengths[edge_ids], heads))
    heads, edge_ids = heads[order], edge_ids[order]
    first = np.searchsorted(heads, np.arange(n_points))
    rank = np.arange(len(heads)) - first[heads]
    kept = np.unique(edge_ids[rank < k])
    return rows[kept], cols[kept], lengths[kept]


def _symmetric_csr(rows: np.ndarray, cols: np.ndarray, lengths: np.ndarray, n_points: int) -> sp.csr_matrix:
    """Symmetric CSR (n, n) from undirected edges; zero lengths stored as a tiny positive number."""
    lengths = np.maximum(np.asarray(lengths, dtype=np.float64), ZERO_LENGTH)
    matrix = sp.coo_matrix(
        (np.concatenate([lengths, lengths]), (np.concatenate([rows, cols]), np.concatenate([cols, rows]))),
        shape=(n_points, n_points),
    ).tocsr()
    matrix.sort_indices()
    return matrix


def _merge_csr(base: sp.csr_matrix, added: sp.csr_matrix) -> sp.csr_matrix:
    """Union of two symmetric edge sets with disjoint edges: (n, n) CSR."""
    merged = (base + added).tocsr()
    merged.sort_indices()
    return merged


def _connect(
    weights: sp.csr_matrix, codes: np.ndarray, metric: PullbackMetric, n_nodes: int, backend: str, connect: str
) -> tuple[sp.csr_matrix, int, int]:
    """Join components by Boruvka rounds of shortest metric bridges; return weights, components before, bridges added."""
    n_components, component_of = connected_components(weights, directed=False)
    if n_components == 1:
        return weights, 1, 0
    if connect == "error":
        sizes = np.bincount(component_of)
        raise DisconnectedGraph(
            f"The kNN graph has {n_components} connected components (sizes {sorted(sizes.tolist(), reverse=True)[:10]}); "
            "raise 'k' or use connect='bridge' to join them."
        )
    before, n_bridges = int(n_components), 0
    while n_components > 1:
        bridges = _cheapest_bridges(codes, component_of, n_components, metric, n_nodes, backend)
        rows, cols, lengths = bridges
        weights = _merge_csr(weights, _symmetric_csr(rows, cols, lengths, len(codes)))
        n_bridges += len(rows)
        n_components, component_of = connected_components(weights, directed=False)
    warn(
        f"The kNN graph had {before} connected components; joined them with {n_bridges} metric-weighted bridge edge(s). "
        "Raise 'k' (or 'candidates') for a graph that is connected by itself.",
        DisconnectedGraphWarning,
    )
    return weights, before, n_bridges


def _cheapest_bridges(
    codes: np.ndarray, component_of: np.ndarray, n_components: int, metric: PullbackMetric, n_nodes: int, backend: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every component, its metrically shortest edge to another component among Euclidean-closest candidates."""
    best: dict[tuple[int, int], float] = {}
    for component in range(n_components):
        inside = np.flatnonzero(component_of == component)
        outside = np.flatnonzero(component_of != component)
        m = min(BRIDGE_CANDIDATES, len(outside))
        found = knn(codes[outside], m, queries=codes[inside], backend=backend, device="cpu")
        closest = np.argsort(found.distances.reshape(-1), kind="stable")[:BRIDGE_CANDIDATES]
        sources = inside[closest // m]
        targets = outside[found.indices.reshape(-1)[closest]]
        lengths = _edge_lengths(metric, codes[sources], codes[targets], n_nodes=n_nodes)
        choice = int(np.argmin(lengths))
        pair = (int(min(sources[choice], targets[choice])), int(max(sources[choice], targets[choice])))
        best[pair] = float(lengths[choice])
    pairs = np.array(sorted(best), dtype=np.int64)
    return pairs[:, 0], pairs[:, 1], np.array([best[tuple(pair)] for pair in pairs.tolist()])


def _graph_from_arrays(arrays: dict[str, np.ndarray], meta: dict[str, Any], path: Path) -> LatentGraph:
    """Rebuild and validate a LatentGraph from loaded arrays; inconsistencies raise ArtifactError naming them."""
    for name in ("codes", "indptr", "indices", "edge_lengths"):
        if name not in arrays:
            raise ArtifactError(f"{str(path)!r} lacks the array {name!r}; the graph file is incomplete or foreign.")
    codes, indptr, indices, lengths = (arrays[name] for name in ("codes", "indptr", "indices", "edge_lengths"))
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.floating) or not np.isfinite(codes).all():
        raise ArtifactError(f"{str(path)!r}: 'codes' must be a finite 2-D float array; got shape {codes.shape}, dtype {codes.dtype}.")
    for name, array in (("indptr", indptr), ("indices", indices)):
        if not np.issubdtype(array.dtype, np.integer):
            raise ArtifactError(f"{str(path)!r}: {name!r} must hold integers; got dtype {array.dtype}.")
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.floating):
        raise ArtifactError(
            f"{str(path)!r}: 'edge_lengths' must be a 1-D float array; got shape {lengths.shape}, dtype {lengths.dtype}."
        )
    n_points = codes.shape[0]
    if n_points < 2 or codes.shape[1] < 1:
        raise ArtifactError(
            f"{str(path)!r}: 'codes' has shape {codes.shape}; a latent graph has at least 2 codes of dimension >= 1."
        )
    if indptr.shape != (n_points + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != len(indices):
        raise ArtifactError(f"{str(path)!r}: 'indptr' of shape {indptr.shape} is inconsistent with {n_points} codes.")
    if indices.shape != lengths.shape or (len(indices) and (indices.min() < 0 or indices.max() >= n_points)):
        raise ArtifactError(f"{str(path)!r}: edge 'indices' are out of range or do not match 'edge_lengths'.")
    if not np.isfinite(lengths).all() or np.any(lengths <= 0):
        raise ArtifactError(f"{str(path)!r}: 'edge_lengths' must be finite and positive.")
    labels = arrays.get("labels")
    if labels is not None and (labels.shape != (n_points,) or not np.issubdtype(labels.dtype, np.integer)):
        raise ArtifactError(
            f"{str(path)!r}: 'labels' has shape {labels.shape} and dtype {labels.dtype}; expected ({n_points},) integers."
        )
    params = meta.get("params", {})
    if not isinstance(params, dict):
        raise ArtifactError(f"{str(path)!r}: the build parameters must be a JSON object; got {type(params).__name__}.")
    _check_params(params, path, n_points)
    weights = sp.csr_matrix((lengths, indices, indptr), shape=(n_points, n_points))
    asymmetry = abs(weights - weights.T)
    if asymmetry.nnz and asymmetry.max() > 1e-9 * max(1.0, float(lengths.max(initial=0.0))):
        raise ArtifactError(f"{str(path)!r}: the edge-length matrix is not symmetric; the file was modified or corrupted.")
    return LatentGraph(codes.astype(np.float64), weights, None if labels is None else labels.astype(np.int64), dict(params))


# Build parameters load() checks: name -> (types, description). Others (user params) pass through.
_INT_PARAMS = {"k": 1, "n_nodes": 1, "candidates": 1, "n_attached": 0, "n_components_before_bridging": 1,
               "n_bridges": 0, "seed": 0}
_STR_PARAMS = ("backend", "connect", "variance", "data", "model_sha256", "data_sha256")


def _check_params(params: dict[str, Any], path: Path, n_points: int) -> None:
    """Refuse forged build parameters: the known integer ones must be ints in range, the known strings strings."""
    for name, minimum in _INT_PARAMS.items():
        if name not in params:
            continue
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum or value > 2**63 - 1:
            raise ArtifactError(
                f"{str(path)!r}: the build parameter {name!r} must be an int >= {minimum}; got {value!r}."
            )
    if params.get("n_attached", 0) >= n_points:
        raise ArtifactError(
            f"{str(path)!r}: the build parameter 'n_attached' ({params['n_attached']}) must be < the {n_points} codes."
        )
    for name in _STR_PARAMS:
        if name in params and not isinstance(params[name], str):
            raise ArtifactError(f"{str(path)!r}: the build parameter {name!r} must be a string; got {params[name]!r}.")
    if "backend" in params:
        from lsg_graph.graph.knn import BACKEND_CHOICES

        if params["backend"] not in BACKEND_CHOICES:
            raise ArtifactError(
                f"{str(path)!r}: the build parameter 'backend' is {params['backend']!r}; expected one of {list(BACKEND_CHOICES)}."
            )
