"""GeodesicKMeans.save/load: a run-style directory (safetensors + JSON), validated on load; pickling still works."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from decoders import Bend

from lsg_graph.cluster import GeodesicKMeans
from lsg_graph.errors import ArtifactError, InvalidInput, NotFittedError


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.uniform(-2, 2, size=(120, 2)), rng.uniform(-2, 2, size=(15, 2))


@pytest.mark.parametrize("decoder", [None, Bend()], ids=["euclidean", "decoder"])
def test_save_load_round_trip(tmp_path: Path, data: tuple[np.ndarray, np.ndarray], decoder: Bend | None) -> None:
    """The loaded estimator has the same fitted attributes and predicts/transforms new points identically."""
    X, new = data
    model = GeodesicKMeans(4, decoder=decoder, n_neighbors=8, random_state=0).fit(X)
    model.save(tmp_path / "km")
    # hidden files: the run lock files of the transactional graph save (lsg_graph._io.run_transaction)
    files = sorted(p.name for p in (tmp_path / "km").iterdir() if not p.name.startswith("."))
    assert files == ["graph.npz", "kmeans.json", "kmeans.safetensors", "manifest.json"]
    loaded = GeodesicKMeans.load(tmp_path / "km", decoder=decoder)
    np.testing.assert_array_equal(loaded.labels_, model.labels_)
    np.testing.assert_array_equal(loaded.medoid_indices_, model.medoid_indices_)
    np.testing.assert_array_equal(loaded.cluster_centers_, model.cluster_centers_)
    assert loaded.inertia_ == model.inertia_ and loaded.n_iter_ == model.n_iter_ and loaded.n_features_in_ == 2
    np.testing.assert_allclose(loaded.transform(new), model.transform(new), rtol=1e-12)
    np.testing.assert_array_equal(loaded.predict(new), model.predict(new))
    assert loaded.get_params()["n_neighbors"] == 8 and loaded.get_params()["random_state"] == 0


def test_landmark_round_trip(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    """landmarks (a parameter) and landmark_indices_ (fitted) survive save/load; the loaded one refits the same."""
    X, _ = data
    model = GeodesicKMeans(3, n_neighbors=8, random_state=0, landmarks=4, exact_medoid_size=10).fit(X)
    loaded = GeodesicKMeans.load(model.save(tmp_path / "lm"))
    assert loaded.get_params()["landmarks"] == 4 and loaded.get_params()["exact_medoid_size"] == 10
    np.testing.assert_array_equal(loaded.landmark_indices_, model.landmark_indices_)
    np.testing.assert_array_equal(loaded.fit(X).labels_, model.labels_)
    np.testing.assert_array_equal(loaded.landmark_indices_, model.landmark_indices_)


def test_precomputed_round_trip(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    X, new = data
    distances = np.linalg.norm(X[:, None] - X[None], axis=2)
    model = GeodesicKMeans(3, metric="precomputed", random_state=1).fit(distances)
    loaded = GeodesicKMeans.load(model.save(tmp_path / "pre"))
    assert not (tmp_path / "pre" / "graph.npz").exists() and loaded.cluster_centers_ is None
    queries = np.linalg.norm(new[:, None] - X[None], axis=2)
    np.testing.assert_array_equal(loaded.predict(queries), model.predict(queries))


def test_load_validates_decoder_and_files(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    """A missing or different decoder, a modified weights file and a swapped graph are refused with clear errors."""
    X, _ = data
    model = GeodesicKMeans(3, decoder=Bend(), n_neighbors=8, random_state=0).fit(X)
    path = model.save(tmp_path / "km")
    with pytest.raises(InvalidInput, match="fitted with a decoder .Bend.; decoders are code"):
        GeodesicKMeans.load(path)
    with pytest.raises(ArtifactError, match="other weights"):
        GeodesicKMeans.load(path, decoder=Bend(scale=2.5))
    other = GeodesicKMeans(3, n_neighbors=8, random_state=0).fit(X).save(tmp_path / "other")
    (path / "graph.npz").write_bytes((other / "graph.npz").read_bytes())
    with pytest.raises(ArtifactError, match="not the graph this clustering was fitted on"):
        GeodesicKMeans.load(path, decoder=Bend())
    raw = bytearray((path / "kmeans.safetensors").read_bytes())
    raw[-3] ^= 0xFF
    (path / "kmeans.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="checksum"):
        GeodesicKMeans.load(path, decoder=Bend())
    with pytest.raises(ArtifactError, match="No saved GeodesicKMeans"):
        GeodesicKMeans.load(tmp_path / "nothing")
    with pytest.raises(NotFittedError):
        GeodesicKMeans(3).save(tmp_path / "unfitted")


def test_pickle_still_works(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, new = data
    model = GeodesicKMeans(3, decoder=Bend(), n_neighbors=8, random_state=0).fit(X)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict(new), model.predict(new))
