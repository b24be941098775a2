"""Edge lengths: the metric length of each straight latent segment, by Gauss-Legendre quadrature.

L(a, b) = integral_0^1 sqrt((b - a)^T M(a + t (b - a)) (b - a)) dt  ~  sum_q w_q ||J_g(a + t_q (b - a)) (b - a)||,
with all edges and nodes of a chunk evaluated in one batched forward-mode product (no M is ever built).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from lsg_graph._validation import check_codes, check_positive_int
from lsg_graph.errors import DecoderError, InvalidInput
from lsg_graph.metric import PullbackMetric
from lsg_graph.registry import DEFAULT_N_NODES

# Quadrature points per chunk: on the CPU small chunks keep each layer's activations in cache (the fastest size of
# benchmarks/edge_weights.py, docs/measurements.md); a GPU needs large batches.
CPU_POINTS_PER_CHUNK = 1 << 12
CUDA_POINTS_PER_CHUNK = 1 << 16  # the conv decoder (D = 784) holds ~1.6 GB per activation map at this size


def gauss_legendre(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes (T,) in (0, 1) and weights (T,) summing to 1, for integrals over [0, 1]."""
    n_nodes = check_positive_int(n_nodes, "n_nodes")
    nodes, weights = np.polynomial.legendre.leggauss(n_nodes)
    return (nodes + 1.0) / 2.0, weights / 2.0


def default_points_per_chunk(device: torch.device | str | None) -> int:
    """Quadrature points per chunk for edge weighting on `device`: CUDA_POINTS_PER_CHUNK on a GPU, else the CPU's."""
    kind = torch.device(device).type if device is not None else "cpu"
    return CUDA_POINTS_PER_CHUNK if kind == "cuda" else CPU_POINTS_PER_CHUNK


def check_metric(metric: object) -> PullbackMetric:
    """Return `metric` if it is a PullbackMetric, else raise InvalidInput saying how to make one."""
    if not isinstance(metric, PullbackMetric):
        raise InvalidInput(
            f"metric must be a lsg_graph.metric.PullbackMetric; got {type(metric).__name__}. "
            "Wrap a decoder with PullbackMetric(decoder)."
        )
    return metric


def edge_lengths(
    metric: PullbackMetric,
    starts: np.ndarray,
    ends: np.ndarray,
    n_nodes: int = DEFAULT_N_NODES,
    points_per_chunk: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Metric lengths of the straight segments starts[e] -> ends[e], by Gauss-Legendre quadrature.

    Work is split into chunks of at most `points_per_chunk` quadrature points (edges x nodes), so memory is bounded by
    one chunk's forward-mode pass, on the metric's (decoder's) device and dtype.

    Parameters
    ----------
    metric : PullbackMetric
    starts, ends : array-like (E, d)
        Segment end points.
    n_nodes : int, default 8
        Gauss-Legendre nodes per segment.
    points_per_chunk : int, optional
        Default: `default_points_per_chunk` of the metric's device.
    progress : bool, default False
        Show a progress bar.

    Returns
    -------
    ndarray (E,) float64
    """
    check_metric(metric)
    starts = check_codes(starts, "starts", latent_dim=metric.latent_dim, min_rows=0)
    ends = check_codes(ends, "ends", latent_dim=metric.latent_dim, min_rows=0)
    if starts.shape != ends.shape:
        raise InvalidInput(f"starts and ends must have the same shape; got {starts.shape} and {ends.shape}.")
    if points_per_chunk is not None:
        points_per_chunk = check_positive_int(points_per_chunk, "points_per_chunk")
    return _edge_lengths(metric, starts, ends, check_positive_int(n_nodes, "n_nodes"), points_per_chunk, progress)


def _edge_lengths(
    metric: PullbackMetric,
    starts: np.ndarray,
    ends: np.ndarray,
    n_nodes: int,
    points_per_chunk: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """edge_lengths on validated inputs (float64 (E, d) end points of the metric's dimension): no checks again."""
    if points_per_chunk is None:
        points_per_chunk = default_points_per_chunk(metric.device)
    nodes, weights = gauss_legendre(n_nodes)
    n_edges = starts.shape[0]
    lengths = np.empty(n_edges, dtype=np.float64)
    edges_per_chunk = max(1, points_per_chunk // len(nodes))
    with tqdm(total=n_edges, desc="edge lengths", unit="edge", disable=not progress, leave=False) as bar:
        for begin in range(0, n_edges, edges_per_chunk):
            stop = min(begin + edges_per_chunk, n_edges)
            lengths[begin:stop] = _chunk_lengths(metric, starts[begin:stop], ends[begin:stop], nodes, weights)
            bar.update(stop - begin)
    if not np.isfinite(lengths).all():
        bad = np.flatnonzero(~np.isfinite(lengths))[:5].tolist()
        raise DecoderError(f"The decoder gave non-finite metric lengths for {int((~np.isfinite(lengths)).sum())} edge(s) (first: {bad}).")
    return lengths


def _chunk_lengths(
    metric: PullbackMetric, starts: np.ndarray, ends: np.ndarray, nodes: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Quadrature of the metric speed for one chunk of edges: (E,) float64."""
    dtype, device = metric.dtype, metric.device
    start = torch.as_tensor(starts, dtype=dtype, device=device)
    step = torch.as_tensor(ends, dtype=dtype, device=device) - start
    t = torch.as_tensor(nodes, dtype=dtype, device=device)
    points = (start[:, None, :] + t[None, :, None] * step[:, None, :]).reshape(-1, start.shape[1])
    directions = step[:, None, :].expand(-1, len(nodes), -1).reshape(-1, start.shape[1])
    with torch.no_grad():
        speeds = metric.inner(points, directions).clamp_min(0).sqrt().reshape(-1, len(nodes))
    quadrature = torch.as_tensor(weights, dtype=dtype, device=device)
    return (speeds @ quadrature).double().cpu().numpy()
