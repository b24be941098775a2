"""The csv: data spec, and lower/upper bounds on geodesic distances against exact truth."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from lsg_graph.data import load_csv, load_dataset
from lsg_graph.distances import distance_bounds
from lsg_graph.errors import InvalidInput
from lsg_graph.graph.latent_graph import build_latent_graph
from lsg_graph.manifolds import LinearDecoder, SphereChart
from lsg_graph.metric import PullbackMetric


def write_table(path, rows, header=None, compress=False):
    text = ("" if header is None else header + "\n") + "\n".join(",".join(str(v) for v in row) for row in rows) + "\n"
    if compress:
        with gzip.open(path, "wt") as stream:
            stream.write(text)
    else:
        path.write_text(text)
    return path


def test_csv_spec_reads_pixels_and_the_label_column(tmp_path) -> None:
    """A gzip CSV of 16 pixels + a last label column: features scaled, labels int64, image shape (4, 4)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(6, 16))
    labels = np.arange(6) % 3
    path = write_table(tmp_path / "d.csv.gz", np.column_stack([pixels, labels]), compress=True)
    data = load_dataset(f"csv:{path}?scale=255")
    np.testing.assert_allclose(data.images, pixels / 255.0, rtol=1e-6)
    assert data.labels.tolist() == labels.tolist() and data.image_shape == (4, 4)
    first = load_csv(write_table(tmp_path / "f.csv", np.column_stack([labels, pixels]), header="y," + ",".join("p" * 16)),
                     label="first")
    assert first.labels.tolist() == labels.tolist() and first.images.shape == (6, 16)
    none = load_dataset(f"{tmp_path / 'f.csv'}")  # by suffix, last column taken as the label
    assert none.images.shape == (6, 16)
    assert load_csv(tmp_path / "f.csv", label="none").images.shape == (6, 17)


@pytest.mark.parametrize(
    ("content", "spec_tail", "message"),
    [
        ("1,2\n3,x\n", "", "not a table of numbers"),
        ("1,2.5\n3,4.5\n", "", "non-integer values"),
        ("1,2\n3,4\n", "?label=7", "outside the 2 columns"),
        ("1,2\n3,4\n", "?label=middle", "'label' column must be one of"),
        ("1,2\n3,4\n", "?scale=zero", "scale must be a number"),
        ("", "", "no data rows"),
    ],
)
def test_csv_bad_inputs_name_the_problem(tmp_path, content, spec_tail, message) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(InvalidInput, match=message):
        load_dataset(f"csv:{path}{spec_tail}")


def test_bounds_hold_on_the_sphere_chart() -> None:
    """chord <= exact great-circle distance <= graph distance, and the chord is 2 sin(angle / 2) exactly."""
    sphere = SphereChart()
    codes = sphere.sample(400, seed=0)
    metric = PullbackMetric(sphere)
    graph = build_latent_graph(metric, codes, k=10)
    pairs = np.random.default_rng(1).integers(0, 400, size=(60, 2))
    bounds = distance_bounds(metric, graph, pairs)
    exact = sphere.distance(codes[pairs[:, 0]], codes[pairs[:, 1]])
    np.testing.assert_allclose(bounds.lower, 2.0 * np.sin(exact / 2.0), rtol=1e-9, atol=1e-12)
    assert np.all(bounds.lower <= exact + 1e-12) and np.all(exact <= bounds.upper + 1e-9)
    assert np.all(bounds.ratio >= 1.0)


def test_bounds_of_a_linear_decoder_in_d16_measure_the_graph_stretch() -> None:
    """x = A z in d = 16: the chord IS the geodesic distance, so upper / lower is the graph's own stretch (> 1)."""
    rng = np.random.default_rng(0)
    decoder = LinearDecoder(rng.normal(size=(20, 16)))
    codes = decoder.sample(1000, seed=0)
    metric = PullbackMetric(decoder)
    graph = build_latent_graph(metric, codes, k=20)
    pairs = rng.integers(0, 1000, size=(50, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    bounds = distance_bounds(metric, graph, pairs)
    exact = decoder.distance(codes[pairs[:, 0]], codes[pairs[:, 1]])
    np.testing.assert_allclose(bounds.lower, exact, rtol=1e-10)
    assert np.all(bounds.upper >= exact * (1 - 1e-12))
    assert np.median(bounds.ratio) > 1.05  # a kNN graph in 16-d stretches distances: the bound pair shows it
    with pytest.raises(InvalidInput, match=r"shape \(m, 2\)"):
        distance_bounds(metric, graph, [1, 2, 3])
    with pytest.raises(InvalidInput, match="outside"):
        distance_bounds(metric, graph, [[0, 1000]])


def test_chord_uses_mean_and_std() -> None:
    """For a stochastic decoder the chord is the norm of the stacked difference [mu; sigma]."""
    def decoder(z):
        return torch.cat([z, z**2], 1), torch.exp(z).repeat(1, 2)

    from lsg_graph.decoder import as_decoder

    metric = PullbackMetric(as_decoder(decoder, latent_dim=2))
    a, b = np.array([[0.0, 0.0]]), np.array([[1.0, -1.0]])
    want = np.linalg.norm(np.r_[1, -1, 1, 1, np.e - 1, np.exp(-1) - 1, np.e - 1, np.exp(-1) - 1])
    assert float(metric.chord(a, b)[0]) == pytest.approx(want, rel=1e-6)


def test_shortcut_edges_cut_the_stretch_of_a_d16_graph_and_stay_upper_bounds() -> None:
    """Linear decoder in d = 16 (straight geodesics, exact distances): random long edges lower the median
    graph/exact stretch clearly, never below 1, and the same seed gives the same graph."""
    rng = np.random.default_rng(0)
    decoder = LinearDecoder(rng.normal(size=(20, 16)))
    codes = decoder.sample(600, seed=0)
    metric = PullbackMetric(decoder)
    pairs = rng.integers(0, 600, size=(40, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    exact = decoder.distance(codes[pairs[:, 0]], codes[pairs[:, 1]])
    plain = distance_bounds(metric, build_latent_graph(metric, codes, k=10), pairs).upper / exact
    graph = build_latent_graph(metric, codes, k=10, shortcuts=10, seed=3)
    short = distance_bounds(metric, graph, pairs).upper / exact
    assert np.all(short >= 1 - 1e-9)
    assert np.median(short) < np.median(plain) - 0.05, (np.median(short), np.median(plain))
    again = build_latent_graph(metric, codes, k=10, shortcuts=10, seed=3)
    assert (again.weights != graph.weights).nnz == 0
    with pytest.raises(InvalidInput, match="shortcuts"):
        build_latent_graph(metric, codes, k=10, shortcuts=-1)
