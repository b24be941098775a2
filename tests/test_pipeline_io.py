"""save_pipeline/load_pipeline and GeodesicDistance.save/load: no pickle, identical predictions, clear errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from decoders import Bend
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from lsg_graph.cluster import GeodesicKMeans
from lsg_graph.distances import GeodesicDistance
from lsg_graph.errors import ArtifactError, InvalidInput, NotFittedError
from lsg_graph.estimator_io import load_estimator, load_pipeline, save_pipeline


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(80, 2))
    return X, (X[:, 0] * X[:, 1] > 0).astype(np.int64), rng.uniform(-2, 2, size=(12, 2))


def files_of(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def test_kmeans_pipeline_round_trip(tmp_path: Path, data) -> None:
    """StandardScaler -> PCA -> GeodesicKMeans: same predictions and transforms after load; no pickle files."""
    X, _, new = data
    pipe = make_pipeline(StandardScaler(), PCA(2, random_state=0),
                         GeodesicKMeans(3, n_neighbors=6, random_state=0)).fit(X)
    path = save_pipeline(pipe, tmp_path / "pipe")
    assert files_of(path) == [
        "pipeline.json", "step-0/estimator.safetensors", "step-1/estimator.safetensors", "step-2/graph.npz",
        "step-2/kmeans.json", "step-2/kmeans.safetensors", "step-2/manifest.json",
    ]
    loaded = load_pipeline(path)
    assert [name for name, _ in loaded.steps] == ["standardscaler", "pca", "geodesickmeans"]
    np.testing.assert_array_equal(loaded.predict(new), pipe.predict(new))
    np.testing.assert_array_equal(loaded.transform(new), pipe.transform(new))
    np.testing.assert_array_equal(loaded[:-1].transform(new), pipe[:-1].transform(new))
    assert loaded.get_params()["pca__n_components"] == 2 and loaded[-1].n_neighbors == 6
    for blob in path.rglob("*"):
        assert blob.suffix not in (".pkl", ".pickle", ".joblib")


def test_distance_pipeline_with_a_decoder(tmp_path: Path, data) -> None:
    """GeodesicDistance(decoder) -> KNeighborsClassifier(precomputed): the decoder is passed back on load."""
    X, y, new = data
    decoder = Bend()
    pipe = make_pipeline(GeodesicDistance(decoder=decoder, n_neighbors=6),
                         KNeighborsClassifier(5, metric="precomputed")).fit(X, y)
    path = save_pipeline(pipe, tmp_path / "knn")
    loaded = load_pipeline(path, decoder={"geodesicdistance": decoder})
    np.testing.assert_array_equal(loaded.predict_proba(new), pipe.predict_proba(new))
    np.testing.assert_array_equal(load_pipeline(path, decoder=Bend()).predict(new), pipe.predict(new))
    with pytest.raises(InvalidInput, match="was fitted with a decoder .Bend.; decoders are code"):
        load_pipeline(path)
    with pytest.raises(ArtifactError, match="other weights"):
        load_pipeline(path, decoder=Bend(3.0))
    with pytest.raises(InvalidInput, match=r"decoder names step\(s\) \['nope'\]"):
        load_pipeline(path, decoder={"nope": decoder})


def test_plain_sklearn_steps_with_nan_params_and_string_arrays(tmp_path: Path, data) -> None:
    """SimpleImputer(missing_values=nan), OneHotEncoder (string categories, a dtype parameter) and classifiers."""
    from sklearn.preprocessing import OneHotEncoder

    X, y, new = data
    holes = X.copy()
    holes[3, 0] = np.nan
    pipe = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression()).fit(holes, y)
    loaded = load_pipeline(save_pipeline(pipe, tmp_path / "lr"))
    np.testing.assert_array_equal(loaded.predict_proba(new), pipe.predict_proba(new))
    assert np.isnan(loaded[0].missing_values)
    words = np.array([["ab"[int(a > 0)], "xyz"[int(b + 2) % 3]] for a, b in X], dtype=object)
    encoder = make_pipeline(OneHotEncoder(handle_unknown="ignore", dtype=np.float32), LogisticRegression()).fit(words, y)
    back = load_pipeline(save_pipeline(encoder, tmp_path / "onehot"))
    assert back[0].dtype is np.float32 and back[0].categories_[1].dtype == object
    np.testing.assert_array_equal(back.predict_proba(words[:10]), encoder.predict_proba(words[:10]))
    np.testing.assert_array_equal(back[0].transform(words).toarray(), encoder[0].transform(words).toarray())


def test_geodesic_distance_save_load(tmp_path: Path, data) -> None:
    X, _, new = data
    model = GeodesicDistance(n_neighbors=6, n_jobs=1).fit(X)
    loaded = GeodesicDistance.load(model.save(tmp_path / "gd"))
    assert loaded.get_params()["n_jobs"] == 1 and loaded.n_train_ == 80
    np.testing.assert_array_equal(loaded.transform(new), model.transform(new))
    assert type(load_estimator(tmp_path / "gd")) is GeodesicDistance
    with pytest.raises(ArtifactError, match="holds a saved GeodesicDistance, not a GeodesicKMeans"):
        GeodesicKMeans.load(tmp_path / "gd")


def test_unsupported_steps_are_refused_naming_the_step(tmp_path: Path, data) -> None:
    X, y, _ = data
    with pytest.raises(InvalidInput, match=r"step 'functiontransformer' .* parameter 'func' is a numpy.ufunc"):
        save_pipeline(make_pipeline(FunctionTransformer(np.log1p), StandardScaler()).fit(X + 3), tmp_path / "f")

    class Custom(StandardScaler):
        pass

    with pytest.raises(InvalidInput, match=r"step 'mine' .*Custom\) cannot be saved without pickle"):
        save_pipeline(Pipeline([("mine", Custom())]).fit(X), tmp_path / "c")
    with pytest.raises(NotFittedError, match="step 'standardscaler' is not fitted"):
        save_pipeline(make_pipeline(StandardScaler()), tmp_path / "u")
    with pytest.raises(InvalidInput, match="needs a sklearn.pipeline.Pipeline"):
        save_pipeline(StandardScaler().fit(X), tmp_path / "s")
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_corrupted_and_foreign_directories(tmp_path: Path, data) -> None:
    X, _, _ = data
    pipe = make_pipeline(StandardScaler(), GeodesicKMeans(2, n_neighbors=6, random_state=0)).fit(X)
    path = save_pipeline(pipe, tmp_path / "p")
    with pytest.raises(ArtifactError, match="No saved pipeline at .*expected a directory holding pipeline.json"):
        load_pipeline(tmp_path / "missing")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "pipeline.json").write_text(json.dumps({"format": "something-else", "format_version": 1}))
    with pytest.raises(ArtifactError, match="not an lsg-graph sklearn-pipeline artifact"):
        load_pipeline(tmp_path / "foreign")
    (tmp_path / "foreign" / "pipeline.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="pipeline file"):
        load_pipeline(tmp_path / "foreign")
    with pytest.raises(InvalidInput, match="exists and is not a saved pipeline; refusing to replace it"):
        save_pipeline(pipe, tmp_path / "foreign" / "..")
    raw = bytearray((path / "step-0" / "estimator.safetensors").read_bytes())
    raw[-2] ^= 0xFF
    (path / "step-0" / "estimator.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match=r"files of step 'standardscaler' .* are not the ones saved"):
        load_pipeline(path)
    meta = json.loads((path / "pipeline.json").read_text())
    meta["steps"][0]["dir"] = "../elsewhere"
    (path / "pipeline.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="names the folder '../elsewhere'"):
        load_pipeline(path)


def test_forged_class_is_not_imported(tmp_path: Path, data) -> None:
    """A step file naming a class outside scikit-learn is refused before any import (its checksum made to match)."""
    from lsg_graph import _io

    X, _, _ = data
    path = save_pipeline(make_pipeline(StandardScaler()).fit(X), tmp_path / "p")
    step = path / "step-0" / "estimator.safetensors"
    tensors, meta = _io.load_tensors(step, "sklearn-estimator")
    _io.save_tensors(step, tensors, {**meta, "class": "os:system"})
    meta_file = json.loads((path / "pipeline.json").read_text())
    meta_file["steps"][0]["files"]["estimator.safetensors"] = _io.sha256_file(step)
    (path / "pipeline.json").write_text(json.dumps(meta_file))
    with pytest.raises(ArtifactError, match="names the class 'os:system'; only scikit-learn classes are loaded"):
        load_pipeline(path)


def test_overwrite_replaces_a_saved_pipeline_and_pickle_still_works(tmp_path: Path, data) -> None:
    X, y, new = data
    first = make_pipeline(StandardScaler(), GeodesicKMeans(2, n_neighbors=6, random_state=0)).fit(X)
    second = make_pipeline(StandardScaler(), GeodesicKMeans(4, n_neighbors=6, random_state=0)).fit(X)
    save_pipeline(first, tmp_path / "p")
    save_pipeline(second, tmp_path / "p")
    np.testing.assert_array_equal(load_pipeline(tmp_path / "p").predict(new), second.predict(new))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # no staging or old copies left behind
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(second)).predict(new), second.predict(new))
