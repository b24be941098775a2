"""Figures: PNGs open with the documented pixel size, the heat map holds metric.log_magnification, d > 2 planes work,
files are written atomically, and importing the module does not load matplotlib."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from decoders import MLPDecoder

from lsg_graph.errors import InvalidInput
from lsg_graph.manifolds import SphereChart
from lsg_graph.metric import PullbackMetric
from lsg_graph.plot import (
    PLANE_NOTE,
    latent_plane,
    magnification_grid,
    plot_clusters,
    plot_image_strip,
    plot_magnification,
)
from lsg_graph.walks import random_walks

RESOLUTION = 40


def read_png(path: Path) -> np.ndarray:
    """The PNG's pixels (height, width, channels) via matplotlib."""
    import matplotlib.image

    return matplotlib.image.imread(path)


@pytest.fixture(scope="module")
def sphere() -> PullbackMetric:
    return PullbackMetric(SphereChart())


@pytest.fixture(scope="module")
def codes() -> np.ndarray:
    return SphereChart().sample(60, seed=0)


# ------------------------------------------------------------------------------------------------ the grid


def test_grid_values_equal_log_magnification_at_grid_points(sphere: PullbackMetric, codes: np.ndarray) -> None:
    grid = magnification_grid(sphere, codes=codes, resolution=RESOLUTION)
    assert grid.log_mag.shape == (RESOLUTION, RESOLUTION) and grid.plane == "latent coordinates"
    rows, columns = np.random.default_rng(0).integers(0, RESOLUTION, size=(2, 12))
    points = np.stack([grid.xs[columns], grid.ys[rows]], axis=1)
    expected = sphere.log_magnification(torch.from_numpy(points)).numpy()
    np.testing.assert_allclose(grid.log_mag[rows, columns], expected, rtol=1e-12)
    np.testing.assert_allclose(grid.log_mag[rows, columns], np.log(np.abs(np.sin(points[:, 0]))), rtol=1e-10)
    low, high = codes.min(axis=0), codes.max(axis=0)
    assert grid.xs[0] < low[0] and grid.xs[-1] > high[0] and grid.ys[0] < low[1] and grid.ys[-1] > high[1]


def test_grid_with_explicit_bounds(sphere: PullbackMetric) -> None:
    grid = magnification_grid(sphere, bounds=(0.5, 2.5, -1.0, 1.0), resolution=5)
    np.testing.assert_allclose(grid.xs, np.linspace(0.5, 2.5, 5))
    np.testing.assert_allclose(grid.ys, np.linspace(-1.0, 1.0, 5))
    np.testing.assert_allclose(grid.log_mag, np.log(np.sin(grid.points()[..., 0])), rtol=1e-10)


def test_grid_on_the_principal_plane_for_d_above_two(tmp_path: Path) -> None:
    metric = PullbackMetric(MLPDecoder(latent_dim=4).double())
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(80, 4)) * np.array([3.0, 1.0, 0.1, 0.1])
    grid = magnification_grid(metric, codes=codes, resolution=RESOLUTION)
    assert grid.plane == PLANE_NOTE and grid.basis.shape == (2, 4)
    np.testing.assert_allclose(grid.basis @ grid.basis.T, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(grid.origin, codes.mean(axis=0))
    assert abs(grid.basis[0, 0]) > 0.99  # the widest direction of the codes comes first
    points = grid.points()
    assert points.shape == (RESOLUTION, RESOLUTION, 4)
    expected = metric.log_magnification(torch.from_numpy(points.reshape(-1, 4))).detach().numpy()
    np.testing.assert_allclose(grid.log_mag.ravel(), expected, rtol=1e-12)
    np.testing.assert_allclose(grid.project(points), np.stack(np.meshgrid(grid.xs, grid.ys), axis=-1), atol=1e-12)
    curve = codes[:2] + np.linspace(0, 1, 10)[:, None, None] * (codes[2:4] - codes[:2])
    out = plot_magnification(
        metric,
        codes,
        labels=np.arange(80) % 3,
        curves=[curve[:, 0]],
        walks=curve.transpose(1, 0, 2),
        out=tmp_path / "plane.png",
        resolution=RESOLUTION,
        grid=grid,
    )
    assert read_png(out).shape[:2] == (600, 900)
    assert plot_clusters(
        codes, np.arange(80) % 3, centers=[0, 5], out=tmp_path / "c.png", metric=metric, resolution=10
    ).exists()
    with pytest.raises(InvalidInput, match="For latent_dim = 4 > 2 pass codes"):
        magnification_grid(metric, bounds=(0, 1, 0, 1))


# ------------------------------------------------------------------------------------------------ figures


def test_magnification_figure_pixel_size_and_contents(
    sphere: PullbackMetric, codes: np.ndarray, tmp_path: Path
) -> None:
    geodesics = SphereChart().geodesic(codes[:3], codes[3:6], 30)
    walks = random_walks(sphere, codes[:4], 20, 0.001, "brownian")
    out = plot_magnification(
        sphere,
        codes,
        labels=np.arange(60) % 4,
        curves=list(geodesics),
        straight_pairs=np.stack([codes[:3], codes[3:6]], axis=1),
        walks=walks,
        out=tmp_path / "sub" / "mag.png",
        resolution=RESOLUTION,
    )
    assert out == tmp_path / "sub" / "mag.png"
    pixels = read_png(out)
    assert pixels.shape[:2] == (600, 900)
    assert pixels[..., :3].std() > 0.05  # not blank
    small = plot_magnification(sphere, codes, out=tmp_path / "small.png", dpi=50, resolution=RESOLUTION)
    assert read_png(small).shape[:2] == (300, 450)


@pytest.mark.parametrize(
    "rows, titles, column_titles, expected",
    [
        (None, None, None, (80, 5 * 80)),  # (5, 64): one row of five 8 x 8 images, 1 inch each at dpi 80
        (3, ["a", "b", "c"], None, (3 * 80, (5 + 1) * 80)),
        (3, None, [str(t) for t in range(5)], (round((3 + 0.3) * 80), 5 * 80)),
    ],
)
def test_image_strip_pixel_size(tmp_path: Path, rows, titles, column_titles, expected) -> None:
    images = np.random.default_rng(0).random((5, 64) if rows is None else (rows, 5, 64))
    out = plot_image_strip(images, (8, 8), tmp_path / "strip.png", titles=titles, column_titles=column_titles)
    assert read_png(out).shape[:2] == expected


def test_image_strip_colour_and_channel_first(tmp_path: Path) -> None:
    images = np.random.default_rng(0).random((2, 4, 3 * 6 * 6))
    assert read_png(plot_image_strip(images, (6, 6, 3), tmp_path / "hwc.png")).shape[:2] == (160, 320)
    assert read_png(plot_image_strip(images, (3, 6, 6), tmp_path / "chw.png")).shape[:2] == (160, 320)
    wide = np.random.default_rng(0).random((2, 4 * 8))  # 4 x 8 images: half as tall as wide
    assert read_png(plot_image_strip(wide, (4, 8), tmp_path / "wide.png")).shape[:2] == (40, 160)


def test_cluster_figure_without_metric(codes: np.ndarray, tmp_path: Path) -> None:
    labels = np.arange(60) % 12  # more than 10 clusters: tab20
    centers = codes[:12]
    out = plot_clusters(codes, labels, centers=centers, out=tmp_path / "clusters.png")
    assert read_png(out).shape[:2] == (600, 700)


# ------------------------------------------------------------------------------------------------ atomic writes


def test_writes_are_atomic_and_leave_no_temporary_file(
    sphere: PullbackMetric, codes: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "figure.png"
    plot_clusters(codes, np.zeros(60, dtype=int), out=out)
    plot_clusters(codes, np.ones(60, dtype=int), out=out)  # overwrite in place
    assert sorted(path.name for path in tmp_path.iterdir()) == ["figure.png"]
    before = out.read_bytes()

    from matplotlib.figure import Figure

    def failing_savefig(self, path, **kwargs) -> None:
        Path(path).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", failing_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_magnification(sphere, codes, out=out, resolution=10)
    assert out.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["figure.png"]


def test_importing_plot_does_not_load_matplotlib() -> None:
    code = "import sys, lsg_graph, lsg_graph.plot; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------------ bad inputs


def test_bad_plot_inputs(sphere: PullbackMetric, codes: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="out must end in .png"):
        plot_clusters(codes, np.zeros(60, dtype=int), out=tmp_path / "figure.jpg")
    with pytest.raises(InvalidInput, match=r"image_shape \(8, 7\) holds 56 values but the images have 64"):
        plot_image_strip(np.zeros((2, 64)), (8, 7), tmp_path / "s.png")
    with pytest.raises(InvalidInput, match="titles must have 1 entries"):
        plot_image_strip(np.zeros((2, 64)), (8, 8), tmp_path / "s.png", titles=["a", "b"])
    with pytest.raises(InvalidInput, match="bounds must be"):
        magnification_grid(sphere, bounds=(1.0, 0.0, 0.0, 1.0))
    with pytest.raises(InvalidInput, match="needs bounds"):
        magnification_grid(sphere)
    with pytest.raises(InvalidInput, match="'resolution' parameter must be an int >= 2"):
        magnification_grid(sphere, codes=codes, resolution=1)
    with pytest.raises(InvalidInput, match="codes have dimension 3 but the decoder expects latent dimension 2"):
        plot_magnification(sphere, np.zeros((4, 3)), out=tmp_path / "m.png")
    with pytest.raises(InvalidInput, match="labels must have one entry per row"):
        plot_magnification(sphere, codes, labels=np.zeros(3, dtype=int), out=tmp_path / "m.png")
    with pytest.raises(InvalidInput, match=r"straight_pairs must have shape \(k, 2, 2\)"):
        plot_magnification(sphere, codes, straight_pairs=np.zeros((2, 3, 2)), out=tmp_path / "m.png")
    with pytest.raises(InvalidInput, match="center indices must lie in"):
        plot_clusters(codes, np.zeros(60, dtype=int), centers=np.array([0, 60]), out=tmp_path / "c.png")
    with pytest.raises(InvalidInput, match="Plots need a latent dimension >= 2"):
        latent_plane(None, 1)


# ------------------------------------------------------------------------------------------------ figure elements


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list:
    """The matplotlib Figures the plot functions save (their elements are checked, not pixels)."""
    import lsg_graph.plot as plot_module

    figures: list = []
    original = plot_module._save

    def save(figure, out, dpi):
        figures.append(figure)
        return original(figure, out, dpi)

    monkeypatch.setattr(plot_module, "_save", save)
    return figures


def _tab10() -> set:
    from matplotlib import colormaps, colors

    return {colors.to_hex(color) for color in colormaps["tab10"].colors}


def test_curves_have_their_own_colours_markers_and_an_outside_legend(
    sphere: PullbackMetric, codes: np.ndarray, tmp_path: Path, captured: list
) -> None:
    """3 curves: 3 solid lines in 3 colours (none a digit colour), 3 start and 3 end markers, straight segments dashed
    in the curve's colour, and the legends right of the axes (outside the data)."""
    from matplotlib import colors

    curves = list(SphereChart().geodesic(codes[:3], codes[3:6], 30))
    names = ["a -> b", "c -> d", "e -> f"]
    plot_magnification(sphere, codes, np.arange(60) % 4, curves=curves, straight_pairs=np.stack([codes[:3], codes[3:6]], 1),
                       out=tmp_path / "m.png", resolution=RESOLUTION, curve_labels=names)
    figure = captured[-1]
    axes = figure.axes[0]
    solid = [line for line in axes.lines if line.get_linestyle() == "-" and line.get_linewidth() == 2.2]
    dashed = [line for line in axes.lines if line.get_linestyle() == "--"]
    assert len(solid) == 3 and len(dashed) == 3
    hexes = [colors.to_hex(line.get_color()) for line in solid]
    assert len(set(hexes)) == 3 and not set(hexes) & _tab10()
    assert [colors.to_hex(line.get_color()) for line in dashed] == hexes
    markers = [line.get_marker() for line in axes.lines if line.get_linestyle() in ("None", "", " ")]
    assert markers.count("o") == 3 and markers.count("s") == 3
    texts = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
    assert all(name in texts for name in names) and {"0", "1", "2", "3"} <= set(texts)
    figure.canvas.draw()
    right_of_data = axes.get_window_extent().x1
    assert all(legend.get_window_extent().x0 > right_of_data for legend in figure.legends)


def test_pca_plane_is_named_in_the_title(tmp_path: Path, captured: list) -> None:
    metric = PullbackMetric(MLPDecoder(latent_dim=4).double())
    codes = np.random.default_rng(1).normal(size=(50, 4))
    plot_magnification(metric, codes, out=tmp_path / "p.png", resolution=10, title="Geodesics")
    assert "PCA plane" in captured[-1].axes[0].get_title()


def test_cluster_comparison_panels_and_palettes(codes: np.ndarray, sphere: PullbackMetric, tmp_path: Path,
                                               captured: list) -> None:
    """One panel per clustering with its title; cluster colours avoid the tab10 label colours, the labels use them."""
    from matplotlib import colors

    from lsg_graph.plot import ClusterPanel, plot_cluster_comparison

    labels = np.arange(60) % 5
    panels = [ClusterPanel("geodesic", labels, [0, 1, 2, 3, 4]), ClusterPanel("euclidean", labels[::-1]),
              ClusterPanel("true labels", labels, palette="labels")]
    plot_cluster_comparison(codes, panels, out=tmp_path / "c.png", metric=sphere, resolution=10)
    figure = captured[-1]
    assert [axes.get_title() for axes in figure.axes] == ["geodesic", "euclidean", "true labels"]
    faces = [{colors.to_hex(c) for c in axes.collections[0].get_facecolors()} for axes in figure.axes]
    assert len(faces[0]) == 5 and not faces[0] & _tab10() and faces[2] <= _tab10()


def test_curve_strips_alternate_geodesic_and_straight_rows(tmp_path: Path, captured: list) -> None:
    from lsg_graph.plot import plot_curve_strips

    images = np.random.default_rng(0).uniform(size=(2, 5, 16))
    plot_curve_strips(images, images[::-1], (4, 4), tmp_path / "s.png", names=["geodesic 1", "geodesic 2"])
    rows = [label.get_text() for label in captured[-1].axes[0].get_yticklabels()]
    assert rows == ["geodesic 1", "straight\nsegment", "geodesic 2", "straight\nsegment"]


def test_unrefined_plot_calls_graph_paths_so(tmp_path: Path, captured: list) -> None:
    """`plot --refine none`: the curves are labelled graph paths, nothing is called a geodesic."""
    from lsg_graph.pipeline import plot_run
    from lsg_graph.user_model import UserModel

    codes = np.random.default_rng(2).uniform(0.4, 2.7, size=(80, 2))
    user = UserModel("manifolds:SphereChart", SphereChart(), codes, None, tmp_path / "codes.npy")
    summary = plot_run(tmp_path / "run", [(0, 5), (7, 40)], refine="none", user=user, progress=False)
    figure = captured[0]
    texts = [text.get_text() for legend in figure.legends for text in legend.get_texts()] + [figure.axes[0].get_title()]
    assert sum("graph path" in text for text in texts) == 2 and not any("geodesic" in text.lower() for text in texts)
    assert summary.pairs.tolist() == [[0, 5], [7, 40]]
    exact = SphereChart().distance(codes[[0, 7]], codes[[5, 40]])  # great-circle angles: no curve is shorter
    assert (np.array(summary.graph_lengths) >= exact * (1 - 1e-9)).all()
    assert (np.array(summary.straight_lengths) >= exact * (1 - 1e-6)).all()
