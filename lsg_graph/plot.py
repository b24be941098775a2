"""Figures: log magnification with codes, geodesics, straight lines and walks on it; decoded image strips; clusters.

matplotlib is imported inside the functions only (figures are drawn on an explicit Agg canvas, no pyplot and no
global backend switch), so `import lsg_graph` and `import lsg_graph.plot` never load it. Every figure is written
atomically: rendered to a temporary file beside `out`, then renamed onto it. Latent spaces with d > 2 are shown on
the plane through the codes' mean spanned by their first two principal directions (the figures say so).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsg_graph._io import atomic_path
from lsg_graph._validation import check_array, check_codes, check_float, check_int, check_labels
from lsg_graph.errors import InvalidInput
from lsg_graph.metric import PullbackMetric, as_metric
from lsg_graph.progress import stage
from lsg_graph.registry import DEFAULT_DPI, FIGURE_FORMATS
from lsg_graph.walks import WalkResult

__all__ = [
    "MagnificationGrid",
    "latent_plane",
    "magnification_grid",
    "plot_cluster_comparison",
    "plot_clusters",
    "plot_curve_strips",
    "plot_image_strip",
    "plot_magnification",
]

FIGURE_INCHES = (9.0, 6.0)  # magnification maps: 900 x 600 pixels at the default dpi of 100 (legends at the right)
CLUSTER_INCHES = (7.0, 6.0)  # one cluster map: 700 x 600 pixels at dpi 100
PANEL_INCHES = 5.0  # cluster comparison: one square panel of 5 inches per clustering
MARGIN = 0.1  # default bounds: the codes' extent plus this fraction of the larger side on every side
PLANE_NOTE = "plane through the codes' mean spanned by their first two principal directions"
PCA_TITLE = "PCA plane of the codes"
FORMATS = FIGURE_FORMATS
STRIP_TITLE_INCHES = 1.0  # left margin of an image strip with row titles
STRIP_HEADER_INCHES = 0.3  # top margin of an image strip with column titles
STRIP_DPI = 80
# One colour per curve, none of them a tab10 digit colour; each curve is outlined in black to stand out on the map.
CURVE_COLORS = ("#ff1744", "#ffea00", "#00e5ff", "#ffffff", "#ff80ab", "#76ff03", "#ffab40", "#b388ff", "#1de9b6", "#c6ff00")
CURVE_STYLE = {"linewidth": 2.2, "linestyle": "-"}
STRAIGHT_STYLE = {"linewidth": 1.4, "linestyle": (0, (4, 3))}
WALK_STYLE = {"color": "white", "linewidth": 0.9, "alpha": 0.9}
WALK_START_COLOR = "#ff6d00"  # the walk start star: orange, apart from the white walks and the label colours
START_MARKER, END_MARKER = "o", "s"
# Cluster colours: the 12 pastel hues of Set3 (never the saturated tab10 digit colours), tab20b up to 20, else turbo.
CLUSTER_ORDER = (0, 4, 8, 12, 16, 2, 6, 10, 14, 18, 1, 5, 9, 13, 17, 3, 7, 11, 15, 19)  # tab20b: hue groups interleaved


@dataclass(frozen=True)
class MagnificationGrid:
    """log sqrt(det M) on a regular grid of a latent plane: log_mag[i, j] at plane point (xs[j], ys[i]).

    The plane is origin + x * basis[0] + y * basis[1] (origin (d,), orthonormal basis (2, d)); for d = 2 it is the
    latent plane itself (origin 0, basis I). log_mag is -inf where M is singular. `plane` describes it in words.
    """

    xs: np.ndarray
    ys: np.ndarray
    log_mag: np.ndarray
    origin: np.ndarray
    basis: np.ndarray
    plane: str

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, xmax, ymin, ymax) in plane coordinates."""
        return float(self.xs[0]), float(self.xs[-1]), float(self.ys[0]), float(self.ys[-1])

    def points(self) -> np.ndarray:
        """Latent points (res_y, res_x, d) of the grid."""
        x, y = np.meshgrid(self.xs, self.ys)
        return self.origin + x[..., None] * self.basis[0] + y[..., None] * self.basis[1]

    def project(self, latent: Any) -> np.ndarray:
        """Plane coordinates (..., 2) of latent points (..., d) (orthogonal projection)."""
        return (np.asarray(latent, dtype=np.float64) - self.origin) @ self.basis.T


# ----------------------------------------------------------------------------------------------------------------
# The grid
# ----------------------------------------------------------------------------------------------------------------


def latent_plane(codes: np.ndarray | None, latent_dim: int) -> tuple[np.ndarray, np.ndarray, str]:
    """origin (d,), orthonormal basis (2, d) and a description of the plane the figures show."""
    if latent_dim < 2:
        raise InvalidInput(f"Plots need a latent dimension >= 2; got latent_dim = {latent_dim}.")
    if latent_dim == 2:
        return np.zeros(2), np.eye(2), "latent coordinates"
    if codes is None:
        raise InvalidInput(f"For latent_dim = {latent_dim} > 2 pass codes: the plot shows the {PLANE_NOTE}.")
    origin = codes.mean(axis=0)
    _, _, directions = np.linalg.svd(codes - origin, full_matrices=True)
    return origin, directions[:2].copy(), PLANE_NOTE


def _default_bounds(projected: np.ndarray, margin: float) -> tuple[float, float, float, float]:
    """The extent of projected codes (n, 2) widened by margin * (larger side) on every side."""
    low, high = projected.min(axis=0), projected.max(axis=0)
    pad = margin * float(max(high - low)) or 1.0
    return low[0] - pad, high[0] + pad, low[1] - pad, high[1] + pad


def _check_bounds(bounds: Any) -> tuple[float, float, float, float]:
    """(xmin, xmax, ymin, ymax) finite with xmin < xmax and ymin < ymax, else InvalidInput."""
    values = check_array(bounds, "bounds", ndim=1)
    if values.shape != (4,) or values[0] >= values[1] or values[2] >= values[3]:
        raise InvalidInput(f"bounds must be (xmin, xmax, ymin, ymax) with xmin < xmax and ymin < ymax; got {bounds!r}.")
    return tuple(float(value) for value in values)  # type: ignore[return-value]


def default_resolution(latent_dim: int, base: int = 200) -> int:
    """Grid resolution for a latent dimension d: `base` at d = 2, fewer points for larger d (a Jacobian costs d
    decoder passes), so that resolution^2 * d stays about base^2 * 2; at least 60."""
    return max(60, int(round(base * math.sqrt(2.0 / max(2, int(latent_dim))))))


def magnification_grid(
    metric: Any, bounds: Any = None, codes: Any = None, resolution: int = 200, margin: float = MARGIN,
    progress: bool = False,
) -> MagnificationGrid:
    """log sqrt(det M(z)) on a resolution x resolution grid over the latent plane, batched through log_magnification.

    bounds (xmin, xmax, ymin, ymax) in plane coordinates, default the codes' extent plus `margin`. For d > 2 the
    grid lies on the plane through the codes' mean spanned by their first two principal directions (codes needed).
    """
    metric = as_metric(metric)
    resolution = check_int(resolution, "resolution", minimum=2)
    margin = check_float(margin, "margin", minimum=0.0)
    codes = None if codes is None else check_codes(codes, "codes", latent_dim=metric.latent_dim)
    origin, basis, plane = latent_plane(codes, metric.latent_dim)
    if bounds is None:
        if codes is None:
            raise InvalidInput("magnification_grid needs bounds (xmin, xmax, ymin, ymax) or codes to take them from.")
        bounds = _default_bounds((codes - origin) @ basis.T, margin)
    xmin, xmax, ymin, ymax = _check_bounds(bounds)
    xs, ys = np.linspace(xmin, xmax, resolution), np.linspace(ymin, ymax, resolution)
    grid = MagnificationGrid(xs, ys, np.empty((resolution, resolution)), origin, basis, plane)
    points = torch.from_numpy(grid.points().reshape(-1, metric.latent_dim))
    rows = max(1, metric.chunk_size // metric.latent_dim)  # one decoder call per block of grid points
    values = np.empty(len(points))
    with torch.no_grad(), stage("magnification map", total=len(points), unit="pt", show=progress) as bar:
        for begin in range(0, len(points), rows):
            block = points[begin : begin + rows]
            values[begin : begin + len(block)] = metric.log_magnification(block).to(torch.float64).cpu().numpy()
            bar.update(len(block))
    return MagnificationGrid(xs, ys, values.reshape(resolution, resolution), origin, basis, plane)


# ----------------------------------------------------------------------------------------------------------------
# Drawing helpers (matplotlib imported here only)
# ----------------------------------------------------------------------------------------------------------------


def _figure(width: float, height: float, dpi: int) -> Any:
    """A matplotlib Figure of width x height inches on an Agg canvas (no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def _check_out(out: Any) -> Path:
    """The output path as a Path ending in .png, .svg or .pdf, else InvalidInput."""
    if not isinstance(out, (str, Path)) or not str(out):
        raise InvalidInput(f"out must be a file path ending in .png, .svg or .pdf; got {out!r}.")
    path = Path(out)
    if path.suffix.lower().lstrip(".") not in FORMATS:
        raise InvalidInput(f"out must end in .png, .svg or .pdf (the figure format); got {str(path)!r}.")
    if path.exists() and path.is_dir():
        raise InvalidInput(f"out {str(path)!r} is a directory; expected a file path ending in .png, .svg or .pdf.")
    return path


def _save(figure: Any, out: Path, dpi: int) -> Path:
    """Render `figure` (format from the suffix) to a temporary file beside `out`, then rename it onto `out`."""
    with atomic_path(out) as temp:
        figure.savefig(temp, format=out.suffix.lower().lstrip("."), dpi=dpi)
    return out


def _check_size(size: Any, default: tuple[float, float]) -> tuple[float, float]:
    """(width, height) in inches, both > 0."""
    if size is None:
        return default
    values = check_array(size, "size", ndim=1)
    if values.shape != (2,) or (values <= 0).any():
        raise InvalidInput(f"size must be (width, height) in inches, both > 0; got {size!r}.")
    return float(values[0]), float(values[1])


def _label_colors(labels: np.ndarray) -> tuple[np.ndarray, list[tuple[int, Any]]]:
    """RGBA colours (n, 4) per label (tab10 up to 10 labels, tab20 up to 20, else turbo) and (label, colour) pairs."""
    from matplotlib import colormaps

    unique = np.unique(labels)
    if len(unique) <= 10:
        palette = colormaps["tab10"](np.arange(len(unique)) % 10)
    elif len(unique) <= 20:
        palette = colormaps["tab20"](np.arange(len(unique)))
    else:
        palette = colormaps["turbo"](np.linspace(0.0, 1.0, len(unique)))
    rank = np.searchsorted(unique, labels)
    return palette[rank], list(zip(unique.tolist(), palette))


def _draw_heat_map(figure: Any, axes: Any, grid: MagnificationGrid, colorbar_axes: Any = None) -> None:
    """Heat map of grid.log_mag (non-finite cells grey) with a labelled colour bar (in `colorbar_axes` if given)."""
    from matplotlib import colormaps

    values = np.ma.masked_invalid(grid.log_mag)
    colormap = colormaps["viridis"].with_extremes(bad="0.6")
    image = axes.imshow(
        values, origin="lower", extent=grid.bounds, cmap=colormap, aspect="auto", interpolation="nearest"
    )
    if colorbar_axes is not None:
        colorbar = figure.colorbar(image, cax=colorbar_axes)
    else:
        colorbar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    colorbar.set_label("log magnification  log sqrt(det M(z))", fontsize=8)


def _draw_codes(
    axes: Any, projected: np.ndarray, labels: np.ndarray | None, palette: str = "labels", legend: bool = True
) -> list[Any]:
    """Scatter the projected codes (n, 2), coloured by label; return legend handles (label -> colour, up to 20).

    palette "labels": the digit/label colours (tab10...); "clusters": CLUSTER_ORDER of tab20b (never tab10).
    With `legend` the handles are also attached to the axes' own legend entries.
    """
    from matplotlib.lines import Line2D

    if labels is None:
        axes.scatter(projected[:, 0], projected[:, 1], s=6, c="white", edgecolors="black", linewidths=0.3, zorder=3)
        return []
    colors, pairs = (_label_colors if palette == "labels" else _cluster_colors)(labels)
    if palette == "labels":
        axes.scatter(projected[:, 0], projected[:, 1], s=6, c=colors, linewidths=0, zorder=3)
    else:  # pastel cluster colours: a thin dark rim keeps them visible on light backgrounds
        axes.scatter(projected[:, 0], projected[:, 1], s=8, c=colors, edgecolors="0.2", linewidths=0.15, zorder=3)
    if len(pairs) > 20:
        return []
    handles = [Line2D([], [], linestyle="", marker="o", markersize=5, color=color, markeredgecolor="0.2",
                      markeredgewidth=0.3, label=str(label)) for label, color in pairs]
    if legend:
        for handle in handles:
            axes.scatter([], [], s=20, color=handle.get_color(), label=handle.get_label())
    return handles


def _cluster_colors(labels: np.ndarray) -> tuple[np.ndarray, list[tuple[int, Any]]]:
    """RGBA colours (n, 4) per cluster (Set3 up to 12, tab20b in CLUSTER_ORDER up to 20, else turbo) and pairs."""
    from matplotlib import colormaps

    unique = np.unique(labels)
    if len(unique) <= 12:
        palette = colormaps["Set3"](np.arange(len(unique)))
    elif len(unique) <= len(CLUSTER_ORDER):
        palette = colormaps["tab20b"](np.array(CLUSTER_ORDER[: len(unique)]))
    else:
        palette = colormaps["turbo"](np.linspace(0.0, 1.0, len(unique)))
    rank = np.searchsorted(unique, labels)
    return palette[rank], list(zip(unique.tolist(), palette))


def _label_axes(axes: Any, figure: Any, grid_plane: str, title: str | None, note: bool = True) -> None:
    """Axis labels (latent coordinates or principal directions), title ("PCA plane" for d > 2) and the plane note."""
    if grid_plane == PLANE_NOTE:
        axes.set_xlabel("principal direction 1 (latent units)")
        axes.set_ylabel("principal direction 2 (latent units)")
        if note:
            figure.text(0.01, 0.01, f"d > 2: {PLANE_NOTE}; curves are projected onto it", fontsize=7)
        title = f"{title}\n({PCA_TITLE})" if title else PCA_TITLE
    else:
        axes.set_xlabel("z1 (latent units)")
        axes.set_ylabel("z2 (latent units)")
    if title:
        axes.set_title(title, fontsize=10)


def _check_curves(curves: Any, latent_dim: int) -> list[np.ndarray]:
    """A list of curves (m, d) with m >= 2, each finite."""
    if curves is None:
        return []
    if isinstance(curves, np.ndarray) and curves.ndim == 3:
        curves = list(curves)
    return [check_codes(curve, f"curves[{i}]", latent_dim=latent_dim, min_rows=2) for i, curve in enumerate(curves)]


def _check_straight_pairs(pairs: Any, latent_dim: int) -> np.ndarray:
    """Straight-line end points (k, 2, d)."""
    if pairs is None:
        return np.zeros((0, 2, latent_dim))
    array = check_array(pairs, "straight_pairs", ndim=3, min_rows=0)
    if array.shape[1:] != (2, latent_dim):
        raise InvalidInput(f"straight_pairs must have shape (k, 2, {latent_dim}) (pairs of codes); got {array.shape}.")
    return array


def _check_walks(walks: Any, latent_dim: int) -> np.ndarray:
    """Walk trajectories (w, T, d) from an array or a WalkResult."""
    if walks is None:
        return np.zeros((0, 1, latent_dim))
    if isinstance(walks, WalkResult):
        walks = walks.trajectories
    array = check_array(walks, "walks", ndim=3, min_rows=0)
    if array.shape[2] != latent_dim:
        raise InvalidInput(f"walks must have shape (w, T, {latent_dim}); got {array.shape}.")
    return array


def _outlined(width: float) -> list[Any]:
    """A black outline under a line (path effects), so that light colours show on any background."""
    from matplotlib import patheffects

    return [patheffects.Stroke(linewidth=width + 1.6, foreground="black"), patheffects.Normal()]


def _draw_lines(
    axes: Any,
    grid: MagnificationGrid,
    curves: list[np.ndarray],
    pairs: np.ndarray,
    walks: np.ndarray,
    curve_labels: Sequence[str] | None = None,
) -> list[Any]:
    """Curves (solid, one colour each, start and end marked), their straight segments (dashed, same colour) and walks.

    Returns the legend handles: one per curve, then the line styles and markers.
    """
    from matplotlib.lines import Line2D

    handles = []
    for i, curve in enumerate(curves):
        color = CURVE_COLORS[i % len(CURVE_COLORS)]
        xy = grid.project(curve)
        label = curve_labels[i] if curve_labels is not None else f"curve {i + 1}"
        (line,) = axes.plot(xy[:, 0], xy[:, 1], color=color, zorder=6, label=label,
                            path_effects=_outlined(CURVE_STYLE["linewidth"]), **CURVE_STYLE)
        for point, marker in ((xy[0], START_MARKER), (xy[-1], END_MARKER)):
            axes.plot(*point, linestyle="none", marker=marker, markersize=7, color=color, markeredgecolor="black",
                      zorder=7)
        handles.append(line)
    for i, pair in enumerate(pairs):
        color = CURVE_COLORS[i % len(CURVE_COLORS)] if i < len(curves) else "white"
        xy = grid.project(pair)
        axes.plot(xy[:, 0], xy[:, 1], color=color, zorder=5, path_effects=_outlined(STRAIGHT_STYLE["linewidth"]),
                  **STRAIGHT_STYLE)
        if i >= len(curves):
            for point, marker in ((xy[0], START_MARKER), (xy[-1], END_MARKER)):
                axes.plot(*point, linestyle="none", marker=marker, markersize=6, color=color, markeredgecolor="black",
                          zorder=7)
    for walk in walks:
        xy = grid.project(walk)
        axes.plot(xy[:, 0], xy[:, 1], zorder=5, path_effects=_outlined(WALK_STYLE["linewidth"]), **WALK_STYLE)
    if len(walks):
        start = grid.project(walks[0, 0])
        axes.plot(*start, linestyle="none", marker="*", markersize=16, color=WALK_START_COLOR, markeredgecolor="black",
                  zorder=7)
    gray = "0.35"
    if len(curves):
        handles.append(Line2D([], [], color=gray, **CURVE_STYLE, label="curve (solid)"))
    if len(pairs):
        handles.append(Line2D([], [], color=gray, **STRAIGHT_STYLE, label="straight segment (dashed)"))
    if len(curves) or len(pairs):
        handles.append(Line2D([], [], linestyle="", marker=START_MARKER, color=gray, label="start"))
        handles.append(Line2D([], [], linestyle="", marker=END_MARKER, color=gray, label="end"))
    if len(walks):
        handles.append(Line2D([], [], color="white", path_effects=_outlined(1.0), label=f"random walks ({len(walks)})"))
        handles.append(Line2D([], [], linestyle="", marker="*", markersize=10, color=WALK_START_COLOR,
                              markeredgecolor="black", label="walk start"))
    return handles


def _outside_legends(
    figure: Any, axes: Any, handles: list[Any], label_handles: list[Any], label_title: str, left: float = 0.8
) -> None:
    """Legends right of the colour bar, outside the data (their left edges at figure fraction `left`): curves and
    styles at the top, the code labels at the bottom."""
    if handles:
        legend = figure.legend(handles=handles, loc="upper left", fontsize=7, framealpha=0.9, title="curves",
                               title_fontsize=8, bbox_to_anchor=(left, 0.98))
        figure.add_artist(legend)
    if label_handles:
        figure.legend(handles=label_handles, loc="lower left", fontsize=7, framealpha=0.9, title=label_title,
                      title_fontsize=8, ncol=2 if len(label_handles) > 10 else 1, bbox_to_anchor=(left, 0.02))


# ----------------------------------------------------------------------------------------------------------------
# Public figures
# ----------------------------------------------------------------------------------------------------------------


def plot_magnification(
    metric: Any,
    codes: Any = None,
    labels: Any = None,
    curves: Sequence[Any] | None = None,
    straight_pairs: Any = None,
    walks: Any = None,
    out: str | Path = "magnification.png",
    title: str | None = "Magnification factor of the decoder",
    bounds: Any = None,
    resolution: int | None = None,
    dpi: int = DEFAULT_DPI,
    grid: MagnificationGrid | None = None,
    curve_labels: Sequence[str] | None = None,
    size: Any = None,
    progress: bool = False,
) -> Path:
    """Write a figure (9 x 6 inches: 900 x 600 pixels at dpi 100) of log sqrt(det M) with codes, curves and walks.

    codes (n, d) coloured by integer labels (n,) (tab10); curves: a list of (m, d) arrays, one colour each with a
    black outline, start (circle) and end (square) marked, named by `curve_labels` in the legend; straight_pairs
    (k, 2, d): the straight segments between the same end points, dashed in the colour of curve i; walks (w, T, d)
    or a WalkResult (thin white, the start as a star). Legends sit at the right, outside the data. For d > 2 the map
    is the PCA plane of the codes (the title says so). Bounds default to the codes (and curves/walks) extent plus a
    margin; a precomputed `grid` is reused as is. The format follows the suffix of `out` (.png, .svg, .pdf).
    resolution: grid points per side (None: `default_resolution(d)`, 200 at d = 2); progress: a bar on stderr.
    """
    metric = as_metric(metric)
    out = _check_out(out)
    dpi = check_int(dpi, "dpi", minimum=10)
    width, height = _check_size(size, FIGURE_INCHES)
    codes = None if codes is None else check_codes(codes, "codes", latent_dim=metric.latent_dim)
    if codes is None and labels is not None:
        raise InvalidInput("labels were given without codes; pass the codes (n, d) the labels (n,) belong to.")
    labels = None if codes is None else check_labels(labels, codes.shape[0])
    curves = _check_curves(curves, metric.latent_dim)
    if curve_labels is not None:
        curve_labels = _check_titles(curve_labels, len(curves), "curve_labels")
    pairs = _check_straight_pairs(straight_pairs, metric.latent_dim)
    walks = _check_walks(walks, metric.latent_dim)
    if grid is None:
        extent = _extent_points(codes, curves, pairs, walks)
        resolution = default_resolution(metric.latent_dim) if resolution is None else resolution
        grid = _grid_for(metric, codes, extent, bounds, resolution, progress)
    figure = _figure(width, height, dpi)
    legend_inches = 2.7
    right = max(0.5, 1.0 - legend_inches / width)
    axes = figure.add_axes((0.75 / width, 0.7 / height, right - 0.75 / width - 1.1 / width, 1.0 - 1.25 / height))
    colorbar_axes = figure.add_axes((right - 0.95 / width, 0.7 / height, 0.18 / width, 1.0 - 1.25 / height))
    _draw_heat_map(figure, axes, grid, colorbar_axes)
    label_handles = [] if codes is None else _draw_codes(axes, grid.project(codes), labels, legend=False)
    handles = _draw_lines(axes, grid, curves, pairs, walks, curve_labels)
    axes.set_xlim(grid.xs[0], grid.xs[-1])
    axes.set_ylim(grid.ys[0], grid.ys[-1])
    _label_axes(axes, figure, grid.plane, title)
    _outside_legends(figure, axes, handles, label_handles, "label", left=right - 0.1 / width)
    return _save(figure, out, dpi)


def _extent_points(
    codes: np.ndarray | None, curves: list[np.ndarray], pairs: np.ndarray, walks: np.ndarray
) -> np.ndarray:
    """All latent points (n, d) the default bounds should contain: codes, curves, straight lines, walks."""
    parts = [] if codes is None else [codes]
    parts += curves
    parts += [pairs.reshape(-1, pairs.shape[-1]), walks.reshape(-1, walks.shape[-1])]
    parts = [part for part in parts if len(part)]
    return np.concatenate(parts) if parts else np.zeros((0, pairs.shape[-1]))


def _grid_for(
    metric: PullbackMetric, codes: np.ndarray | None, extent: np.ndarray, bounds: Any, resolution: int,
    progress: bool = False,
) -> MagnificationGrid:
    """The magnification grid on the codes' plane, bounded by `bounds` or by everything that will be drawn."""
    if bounds is None and len(extent):
        origin, basis, _ = latent_plane(codes if codes is not None else extent, metric.latent_dim)
        bounds = _default_bounds((extent - origin) @ basis.T, MARGIN)
    plane_codes = codes if codes is not None else (extent if len(extent) else None)
    return magnification_grid(metric, bounds=bounds, codes=plane_codes, resolution=resolution, progress=progress)


def _image_layout(image_shape: Any, dimension: int) -> tuple[tuple[int, ...], bool]:
    """(shape to reshape one row into, whether it is channel-first) for an image_shape holding `dimension` values."""
    shape = tuple(check_int(size, "image_shape entry", minimum=1) for size in image_shape)
    if math.prod(shape) != dimension:
        raise InvalidInput(f"image_shape {shape} holds {math.prod(shape)} values but the images have {dimension}.")
    if len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4)):
        return shape, False
    if len(shape) == 3 and shape[0] in (1, 3, 4):
        return shape, True
    raise InvalidInput(f"image_shape must be (h, w), (h, w, c) or (c, h, w) with c in 1, 3, 4; got {shape}.")


def _mosaic(images: np.ndarray, shape: tuple[int, ...], channel_first: bool) -> tuple[np.ndarray, int, int]:
    """One array (rows * (h + 1) - 1, n * (w + 1) - 1[, c]) of the images (rows, n, D), separated by NaN/white lines."""
    rows, n = images.shape[:2]
    pictures = images.reshape(rows, n, *shape)
    if channel_first:
        pictures = np.moveaxis(pictures, 2, -1)
    if pictures.ndim == 5 and pictures.shape[-1] == 1:
        pictures = pictures[..., 0]
    height, width = pictures.shape[2:4]
    extra = pictures.shape[4:]
    fill = np.nan if not extra else 1.0
    mosaic = np.full((rows * (height + 1) - 1, n * (width + 1) - 1, *extra), fill)
    for row in range(rows):
        for column in range(n):
            top, left = row * (height + 1), column * (width + 1)
            mosaic[top : top + height, left : left + width] = pictures[row, column]
    return mosaic, height, width


def plot_image_strip(
    images: Any,
    image_shape: Sequence[int],
    out: str | Path = "strip.png",
    titles: Sequence[str] | None = None,
    column_titles: Sequence[str] | None = None,
    cell_inches: float = 1.0,
    dpi: int = STRIP_DPI,
    cmap: str = "gray_r",
) -> Path:
    """Write a PNG grid of decoded images: (n, D) one row or (rows, n, D); titles per row, column_titles per column.

    Each image is cell_inches wide (height by its aspect ratio). Pixel size: width = dpi * (n * cell_inches + (1.0
    if titles else 0)), height = dpi * (rows * cell_inches * h / w + (0.3 if column_titles else 0)). Grey images share
    one colour scale (cmap, default dark ink on white); colour images outside [0, 1] are min-max scaled.
    """
    out = _check_out(out)
    dpi = check_int(dpi, "dpi", minimum=10)
    cell = check_float(cell_inches, "cell_inches", minimum=0.0, strict_minimum=True)
    array = np.asarray(images.detach().cpu() if isinstance(images, torch.Tensor) else images)
    array = check_array(array[None] if array.ndim == 2 else array, "images", ndim=3)
    rows, n, dimension = array.shape
    if n == 0:
        raise InvalidInput(f"images must hold at least one image per row; got shape {array.shape}.")
    shape, channel_first = _image_layout(image_shape, dimension)
    titles = _check_titles(titles, rows, "titles")
    column_titles = _check_titles(column_titles, n, "column_titles")
    mosaic, height, width = _mosaic(array, shape, channel_first)
    left = STRIP_TITLE_INCHES if titles else 0.0
    top = STRIP_HEADER_INCHES if column_titles else 0.0
    body_width, body_height = n * cell, rows * cell * height / width
    figure = _figure(left + body_width, top + body_height, dpi)
    axes = figure.add_axes(
        (left / (left + body_width), 0.0, body_width / (left + body_width), body_height / (top + body_height))
    )
    _show_mosaic(axes, mosaic, cmap)
    _strip_ticks(axes, titles, column_titles, height, width)
    return _save(figure, out, dpi)


def _check_titles(titles: Sequence[str] | None, count: int, name: str) -> list[str] | None:
    """A list of `count` strings, or None."""
    if titles is None:
        return None
    titles = [str(title) for title in titles]
    if len(titles) != count:
        raise InvalidInput(
            f"{name} must have {count} entries (one per {'row' if name == 'titles' else 'column'}); got {len(titles)}."
        )
    return titles


def _show_mosaic(axes: Any, mosaic: np.ndarray, cmap: str) -> None:
    """Show the mosaic filling the axes; grey images on one shared scale, colour ones scaled to [0, 1]."""
    from matplotlib import colormaps

    if mosaic.ndim == 2:
        finite = mosaic[np.isfinite(mosaic)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        colormap = colormaps[cmap].with_extremes(bad="white")
        axes.imshow(
            np.ma.masked_invalid(mosaic),
            cmap=colormap,
            vmin=low,
            vmax=high if high > low else low + 1.0,
            aspect="auto",
            interpolation="nearest",
        )
        return
    low, high = float(mosaic.min()), float(mosaic.max())
    if low < 0.0 or high > 1.0:
        mosaic = (mosaic - low) / (high - low if high > low else 1.0)
    axes.imshow(mosaic, aspect="auto", interpolation="nearest")


def _strip_ticks(axes: Any, titles: list[str] | None, column_titles: list[str] | None, height: int, width: int) -> None:
    """Row titles as y tick labels, column titles as top x tick labels, no frame otherwise."""
    axes.set_xticks([column * (width + 1) + (width - 1) / 2 for column in range(len(column_titles or []))])
    axes.set_xticklabels(column_titles or [], fontsize=8)
    axes.xaxis.tick_top()
    axes.set_yticks([row * (height + 1) + (height - 1) / 2 for row in range(len(titles or []))])
    axes.set_yticklabels(titles or [], fontsize=8)
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)


def plot_clusters(
    codes: Any,
    labels: Any,
    centers: Any = None,
    out: str | Path = "clusters.png",
    metric: Any = None,
    title: str | None = "Clusters in the latent space",
    bounds: Any = None,
    resolution: int = 150,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Write a PNG (700 x 600 pixels at dpi 100) of codes (n, d) coloured by cluster labels (n,), centres marked.

    centers: cluster centres as latent points (k, d) or as indices (k,) into codes (e.g. medoids); drawn as black
    crosses numbered by position. With a metric the magnification heat map is drawn underneath. d > 2: the plane
    through the codes' mean spanned by their first two principal directions.
    """
    out = _check_out(out)
    dpi = check_int(dpi, "dpi", minimum=10)
    codes = check_codes(codes, "codes")
    latent_dim = codes.shape[1]
    labels = check_labels(labels, codes.shape[0])
    center_points = _check_centers(centers, codes)
    figure = _figure(*CLUSTER_INCHES, dpi)
    axes = figure.add_subplot(1, 1, 1)
    if metric is not None:
        metric = as_metric(metric)
        if metric.latent_dim != latent_dim:
            raise InvalidInput(f"codes have dimension {latent_dim} but the metric's latent_dim is {metric.latent_dim}.")
        grid = magnification_grid(metric, bounds=bounds, codes=codes, resolution=resolution)
        _draw_heat_map(figure, axes, grid)
        origin, basis, plane = grid.origin, grid.basis, grid.plane
    else:
        origin, basis, plane = latent_plane(codes, latent_dim)
    project = _projector(origin, basis)
    _draw_codes(axes, project(codes), labels, palette="clusters")
    _draw_centers(axes, project(center_points))
    if metric is not None:
        axes.set_xlim(grid.xs[0], grid.xs[-1])
        axes.set_ylim(grid.ys[0], grid.ys[-1])
    elif bounds is not None:
        xmin, xmax, ymin, ymax = _check_bounds(bounds)
        axes.set_xlim(xmin, xmax)
        axes.set_ylim(ymin, ymax)
    _label_axes(axes, figure, plane, title)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="upper right", fontsize=7, framealpha=0.8, title="cluster", title_fontsize=7)
    return _save(figure, out, dpi)


def _projector(origin: np.ndarray, basis: np.ndarray) -> Any:
    """A function mapping latent points (..., d) to plane coordinates (..., 2)."""
    return lambda points: (np.asarray(points, dtype=np.float64) - origin) @ basis.T


def _check_centers(centers: Any, codes: np.ndarray) -> np.ndarray:
    """Centre points (k, d): given as points (k, d), or as integer indices (k,) into codes."""
    if centers is None:
        return np.zeros((0, codes.shape[1]))
    array = np.asarray(centers)
    if array.ndim == 1 and np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() >= len(codes)):
            raise InvalidInput(f"center indices must lie in [0, {len(codes)}); got {array.tolist()}.")
        return codes[array]
    return check_codes(array, "centers", latent_dim=codes.shape[1], min_rows=0)


def _draw_centers(axes: Any, projected: np.ndarray) -> None:
    """Cluster centres (k, 2) as black crosses with their index."""
    if not len(projected):
        return
    axes.scatter(
        projected[:, 0],
        projected[:, 1],
        marker="X",
        s=80,
        c="white",
        edgecolors="black",
        linewidths=1.2,
        zorder=6,
        label="centre",
    )
    for index, (x, y) in enumerate(projected):
        axes.annotate(str(index), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8, zorder=7)


@dataclass(frozen=True)
class ClusterPanel:
    """One panel of `plot_cluster_comparison`: a title, labels (n,), optional centres, and the palette.

    palette "clusters" (tab20b, never the digit colours) for clusterings, "labels" (tab10) for the true labels.
    """

    title: str
    labels: np.ndarray
    centers: Any = None
    palette: str = "clusters"


def plot_cluster_comparison(
    codes: Any,
    panels: Sequence[ClusterPanel],
    out: str | Path = "clusters.png",
    metric: Any = None,
    title: str | None = None,
    resolution: int | None = None,
    dpi: int = DEFAULT_DPI,
    grid: MagnificationGrid | None = None,
    progress: bool = False,
) -> Path:
    """Write one figure with a panel per clustering (e.g. geodesic k-means, Euclidean k-means, true labels).

    Every panel shows the same codes (n, d) on the same plane and bounds (the magnification map underneath when a
    metric or grid is given), coloured by its labels, with its legend below it. Size: 5 inches per panel wide,
    5.8 inches high (1500 x 580 pixels for three panels at dpi 100). d > 2: the PCA plane of the codes.
    """
    out = _check_out(out)
    dpi = check_int(dpi, "dpi", minimum=10)
    codes = check_codes(codes, "codes")
    if not panels:
        raise InvalidInput("plot_cluster_comparison needs at least one ClusterPanel.")
    panels = [ClusterPanel(p.title, check_labels(p.labels, codes.shape[0]), p.centers, p.palette) for p in panels]
    if grid is None and metric is not None:
        metric = as_metric(metric)
        resolution = default_resolution(codes.shape[1], 150) if resolution is None else resolution
        grid = magnification_grid(metric, codes=codes, resolution=resolution, progress=progress)
    if grid is not None:
        origin, basis, plane = grid.origin, grid.basis, grid.plane
    else:
        origin, basis, plane = latent_plane(codes, codes.shape[1])
    project = _projector(origin, basis)
    projected = project(codes)
    bounds = grid.bounds if grid is not None else _default_bounds(projected, MARGIN)
    figure = _figure(PANEL_INCHES * len(panels), PANEL_INCHES + 0.8, dpi)
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        if grid is not None:
            from matplotlib import colormaps

            axes.imshow(np.ma.masked_invalid(grid.log_mag), origin="lower", extent=grid.bounds, aspect="auto",
                        cmap=colormaps["gray"].with_extremes(bad="0.6"), interpolation="nearest", alpha=0.6)
        handles = _draw_codes(axes, projected, panel.labels, palette=panel.palette, legend=False)
        centers = _check_centers(panel.centers, codes)
        _draw_centers(axes, project(centers))
        axes.set_xlim(bounds[0], bounds[1])
        axes.set_ylim(bounds[2], bounds[3])
        _label_axes(axes, figure, plane, panel.title, note=False)
        if handles:
            axes.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=min(10, len(handles)),
                        fontsize=7, handletextpad=0.1, columnspacing=0.6, frameon=False,
                        title="cluster" if panel.palette == "clusters" else "label", title_fontsize=7)
    if title:
        figure.suptitle(title, fontsize=11)
    if grid is not None:
        figure.text(0.005, 0.005, "background: log magnification (grey, darker = lower)", fontsize=7)
    figure.subplots_adjust(left=0.05, right=0.99, bottom=0.2, top=0.86, wspace=0.25)
    return _save(figure, out, dpi)


def plot_curve_strips(
    curve_images: Any,
    straight_images: Any,
    image_shape: Sequence[int],
    out: str | Path = "strips.png",
    names: Sequence[str] | None = None,
    dpi: int = STRIP_DPI,
) -> Path:
    """Decoded images along each curve (k, m, D) above those along its straight segment (k, m, D), one PNG.

    Row 2i shows curve i ("geodesic i" by default), row 2i + 1 the straight segment between the same end points;
    the m columns are points at equal steps of the curve parameter, from start to end.
    """
    curve_images = check_array(np.asarray(curve_images), "curve_images", ndim=3)
    straight_images = check_array(np.asarray(straight_images), "straight_images", ndim=3)
    if curve_images.shape != straight_images.shape:
        raise InvalidInput(
            f"curve_images and straight_images must have the same shape (k, m, D); got {curve_images.shape} and "
            f"{straight_images.shape}."
        )
    count, columns = curve_images.shape[:2]
    names = _check_titles(names, count, "names") if names is not None else [f"geodesic {i + 1}" for i in range(count)]
    rows = np.empty((2 * count, columns, curve_images.shape[2]))
    rows[0::2], rows[1::2] = curve_images, straight_images
    titles = [title for name in names for title in (name, "straight\nsegment")]
    column_titles = ["start"] + [""] * (columns - 2) + ["end"] if columns >= 2 else ["start"]
    return plot_image_strip(rows, image_shape, out, titles=titles, column_titles=column_titles, dpi=dpi)
