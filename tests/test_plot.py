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
