"""Tests of lsg_graph.model: training determinism, save/load safety, input checks, decoders and the paper's claims."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cli.tables import paper_claims_table
from lsg_graph import _io
from lsg_graph.errors import ArtifactError, InvalidInput, NotFittedError
from lsg_graph.model import (
    MODEL_FILE,
    MODEL_JSON,
    MODEL_KIND,
    VAE,
    PaperClaims,
    VAEConfig,
    encode_codes,
    extrapolation_report,
    iwae_log_likelihood,
    paper_claims,
    train_vae,
)

SMALL = {"hidden_dims": (32, 16), "epochs": 3, "rbf_epochs": 2, "n_centers": 8, "batch_size": 64}


@pytest.fixture(scope="module")
def split(digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An 80/20 train / held-out split by a seeded permutation."""
    order = np.random.default_rng(0).permutation(len(digits))
    cut = int(0.8 * len(digits))
    return digits[order[:cut]], digits[order[cut:]]


def _small_config(**overrides: object) -> VAEConfig:
    """A tiny config for tests that are not about model quality."""
    return VAEConfig(input_dim=64, **{**SMALL, **overrides})


@pytest.fixture(scope="module")
def small_model(tiny_vae: VAE) -> VAE:
    """The session's tiny model (conftest.tiny_vae: SMALL on 300 digits, both stages fitted)."""
    assert tiny_vae.config == _resolved(_small_config())
    return tiny_vae


def _resolved(config: VAEConfig) -> VAEConfig:
    """The config train_vae makes of `config` on 300 digits in [0, 1]."""
    import dataclasses

    return dataclasses.replace(config, mean_output="sigmoid", n_gate_centers=min(config.n_gate_centers, 300))


@pytest.fixture(scope="module")
def default_model(split: tuple[np.ndarray, np.ndarray]) -> tuple[VAE, object]:
    """The default config trained on the digits training split, with its report."""
    train, held_out = split
    return train_vae(train, x_held_out=held_out, progress=False)


def _state(model: VAE) -> dict[str, torch.Tensor]:
    """A detached copy of the model's state dict."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------


def test_training_is_deterministic_for_a_seed(digits: np.ndarray) -> None:
    rng_before = torch.random.get_rng_state()
    threads_before = torch.get_num_threads()
    first, report_a = train_vae(digits[:200], _small_config(seed=3), progress=False)
    second, report_b = train_vae(digits[:200], _small_config(seed=3), progress=False)
    other, _ = train_vae(digits[:200], _small_config(seed=4), progress=False)
    state_a, state_b, state_c = _state(first), _state(second), _state(other)
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[name], state_b[name]) for name in state_a)
    assert report_a.stage1_losses == report_b.stage1_losses and report_a.stage2_losses == report_b.stage2_losses
    assert not torch.equal(state_a["encoder.net.0.weight"], state_c["encoder.net.0.weight"])
    assert torch.equal(torch.random.get_rng_state(), rng_before), "training must not disturb the global torch RNG"
    assert torch.get_num_threads() == threads_before


def test_train_report_and_resolved_config(small_model: VAE, digits: np.ndarray) -> None:
    config = small_model.config
    assert config.mean_output == "sigmoid"  # the digits lie in [0, 1]
    assert small_model.rbf_fitted
    assert small_model.train_summary is not None and small_model.train_summary["n_train"] == 300
    x = digits[:20] * 16 - 3
    model, report = train_vae(x, _small_config(n_centers=50, epochs=1, rbf_epochs=1), x_held_out=x[:10], progress=False)
    assert model.config.mean_output == "identity" and model.config.n_centers == 20
    assert len(report.stage1_losses) == 1 and len(report.stage2_losses) == 1
    assert report.n_train == 20 and report.n_held_out == 10
    assert np.isfinite(report.held_out_elbo) and np.isfinite(report.held_out_elbo_standard)


def test_config_dict_round_trip_and_unknown_keys() -> None:
    config = VAEConfig(input_dim=10, hidden_dims=[8, 4], mean_output="identity")
    assert config.hidden_dims == (8, 4)
    assert VAEConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(InvalidInput, match="bogus"):
        VAEConfig.from_dict({**config.to_dict(), "bogus": 1})
    with pytest.raises(InvalidInput, match="input_dim"):
        VAEConfig.from_dict({"latent_dim": 2})
    with pytest.raises(InvalidInput, match="'epochs'"):
        VAEConfig.from_dict({**config.to_dict(), "epochs": "many"})


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("latent_dim", 0, r"'latent_dim'.*>= 1; got 0"),
        ("epochs", 0, r"'epochs'.*>= 1; got 0"),
        ("hidden_dims", (8, -1), r"hidden_dims\[1\].*got -1"),
        ("activation", "relu", r"activation 'relu'"),
        ("zeta", 0.0, r"'zeta'.*> 0.0; got 0.0"),
        ("batch_size", 2.5, r"'batch_size'.*2.5"),
    ],
)
def test_bad_config_values_are_named(field: str, value: object, pattern: str) -> None:
    with pytest.raises(InvalidInput, match=pattern):
        VAEConfig(input_dim=64, **{field: value})


def test_bad_training_data_is_refused(digits: np.ndarray) -> None:
    bad = digits[:50].copy()
    bad[7, 3] = np.nan
    with pytest.raises(InvalidInput, match=r"x_train contains NaN.*\[7\]"):
        train_vae(bad, _small_config(), progress=False)
    with pytest.raises(InvalidInput, match=r"x_train must be a 2-D array; got shape \(64,\)"):
        train_vae(digits[0], _small_config(), progress=False)
    with pytest.raises(InvalidInput, match="input_dim is 64 but x_train has 10 columns"):
        train_vae(digits[:50, :10], _small_config(), progress=False)
    with pytest.raises(InvalidInput, match=r"x_held_out must have 64 columns"):
        train_vae(digits[:50], _small_config(), x_held_out=digits[:5, :3], progress=False)
    with pytest.raises(InvalidInput, match=r"mean_output='sigmoid' needs data in \[0, 1\]"):
        train_vae(digits[:50] * 2, _small_config(mean_output="sigmoid"), progress=False)


def test_wrong_feature_count_at_encode_time(small_model: VAE) -> None:
    with pytest.raises(InvalidInput, match=r"shape \(n, 64\); got shape \(3, 10\)"):
        small_model.encode(torch.zeros(3, 10))
    with pytest.raises(InvalidInput, match=r"x must have 64 columns; got shape \(3, 10\)"):
        encode_codes(small_model, np.zeros((3, 10)))
    with pytest.raises(InvalidInput, match=r"z must have shape \(n, 2\); got shape \(4, 3\)"):
        small_model.decode(torch.zeros(4, 3), "standard")
    with pytest.raises(InvalidInput, match="Unknown variance 'gauss'"):
        small_model.decode(torch.zeros(4, 2), "gauss")


def test_rbf_decoder_before_stage_two_is_not_fitted() -> None:
    model = VAE(_small_config())
    z = torch.zeros(3, 2)
    mean, std = model.decode(z, "standard")
    assert mean.shape == std.shape == (3, 64)
    with pytest.raises(NotFittedError, match="RBF variance network is not fitted"):
        model.decode(z, "rbf")
    with pytest.raises(NotFittedError):
        model.decoder("rbf")
    with pytest.raises(NotFittedError):
        extrapolation_report(model, np.zeros((5, 2)))


# ---------------------------------------------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------------------------------------------


def test_save_load_round_trip(small_model: VAE, tmp_path: Path) -> None:
    small_model.save(tmp_path)
    loaded = VAE.load(tmp_path)
    assert loaded.config == small_model.config and loaded.rbf_fitted
    z = torch.randn(17, 2, generator=torch.Generator().manual_seed(0))
    for variance in ("rbf", "standard"):
        for expected, got in zip(small_model.decode(z, variance), loaded.decode(z, variance)):
            assert torch.equal(expected, got)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["artifacts"]["model"]["files"]) == {MODEL_FILE, MODEL_JSON}
    summary = json.loads((tmp_path / MODEL_JSON).read_text())
    assert summary["config"] == small_model.config.to_dict()


def test_unfitted_and_float64_models_round_trip(tmp_path: Path) -> None:
    model = VAE(_small_config()).to(torch.float64)
    model.save(tmp_path)
    loaded = VAE.load(tmp_path)
    assert not loaded.rbf_fitted and loaded.encoder.net[0].weight.dtype == torch.float64
    with pytest.raises(NotFittedError):
        loaded.decode(torch.zeros(1, 2, dtype=torch.float64), "rbf")


@pytest.fixture()
def saved(small_model: VAE, tmp_path: Path) -> Path:
    """A run directory holding the small model; returns the model file's path."""
    small_model.save(tmp_path)
    return tmp_path / MODEL_FILE


def test_missing_run_dir_or_file(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="run directory .*nope.* does not exist"):
        VAE.load(tmp_path / "nope")
    with pytest.raises(ArtifactError, match=r"model\.safetensors.* does not exist"):
        VAE.load(tmp_path)


def test_truncated_file(saved: Path) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="not a valid safetensors file"):
        VAE.load(saved.parent)


def test_corrupted_weight_byte(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[-5] ^= 0xFF  # inside the last tensor's bytes
    saved.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        VAE.load(saved.parent)


@pytest.mark.parametrize("kind", ["random", "pickle", "torch"])
def test_foreign_files(saved: Path, kind: str) -> None:
    if kind == "random":
        saved.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "pickle":
        saved.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    else:
        torch.save({"w": torch.zeros(3)}, saved)
    with pytest.raises(ArtifactError, match="not a valid safetensors file"):
        VAE.load(saved.parent)


def test_foreign_safetensors_without_lsg_metadata(saved: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, str(saved))
    with pytest.raises(ArtifactError, match="no lsg-graph metadata"):
        VAE.load(saved.parent)


def _rewrite(path: Path, edit_tensors=None, edit_meta=None) -> None:  # noqa: ANN001 - small test helper
    """Rewrite a saved model with edited tensors and/or metadata, with a valid checksum."""
    tensors, meta = _io.load_tensors(path, MODEL_KIND)
    if edit_tensors:
        edit_tensors(tensors)
    if edit_meta:
        edit_meta(meta)
    _io.save_tensors(path, tensors, meta)


def test_wrong_shaped_tensor(saved: Path) -> None:
    _rewrite(saved, edit_tensors=lambda t: t.__setitem__("rbf_std.weight_free", torch.zeros(64, 7)))
    with pytest.raises(ArtifactError, match=r"'rbf_std.weight_free' has shape \(64, 7\), expected \(64, 8\)"):
        VAE.load(saved.parent)


def test_missing_and_extra_tensors(saved: Path) -> None:
    _rewrite(saved, edit_tensors=lambda t: t.pop("rbf_std.gammas"))
    with pytest.raises(ArtifactError, match=r"missing the tensor 'rbf_std.gammas' \(expected shape \(8,\)\)"):
        VAE.load(saved.parent)


def test_newer_format_version(saved: Path) -> None:
    _rewrite(saved, edit_meta=lambda m: m.__setitem__("format_version", 999))
    with pytest.raises(ArtifactError, match="format version 999"):
        VAE.load(saved.parent)


def test_invalid_stored_config(saved: Path) -> None:
    _rewrite(saved, edit_meta=lambda m: m["config"].__setitem__("colour", "blue"))
    with pytest.raises(ArtifactError, match="invalid model config.*colour"):
        VAE.load(saved.parent)


def test_failed_save_keeps_previous_model(small_model: VAE, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small_model.save(tmp_path)
    path = tmp_path / MODEL_FILE
    before = path.read_bytes()
    other = VAE(small_model.config)
    real_write = Path.write_bytes

    def write_half_then_fail(self: Path, data: bytes) -> int:
        real_write(self, data[: len(data) // 2])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(Path, "write_bytes", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        other.save(tmp_path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    loaded = VAE.load(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(_state(loaded).values(), _state(small_model).values()))


# ---------------------------------------------------------------------------------------------------------------
# Decoder for the metric: dtypes, forward-mode AD, row independence
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variance", ["rbf", "standard"])
def test_float64_decoder_jvp_matches_finite_difference(small_model: VAE, variance: str) -> None:
    model = copy.deepcopy(small_model).to(torch.float64)
    decoder = model.decoder(variance)
    assert (decoder.latent_dim, decoder.output_dim) == (2, 64)
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(6, 2, generator=generator, dtype=torch.float64)
    v = torch.randn(6, 2, generator=generator, dtype=torch.float64)
    (mean, std), (d_mean, d_std) = torch.func.jvp(decoder, (z,), (v,))
    assert mean.dtype == torch.float64 and mean.shape == std.shape == (6, 64)
    h = 1e-6
    plus, minus = decoder(z + h * v), decoder(z - h * v)
    torch.testing.assert_close(d_mean, (plus[0] - minus[0]) / (2 * h), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(d_std, (plus[1] - minus[1]) / (2 * h), rtol=1e-6, atol=1e-8)

    def directional(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.func.jvp(decoder, (point,), (v,))[1]

    _, (dd_mean, dd_std) = torch.func.jvp(directional, (z,), (v,))  # second directional derivative
    h = 1e-4
    fd_plus, fd_minus = decoder(z + h * v), decoder(z - h * v)
    torch.testing.assert_close(dd_mean, (fd_plus[0] - 2 * mean + fd_minus[0]) / h**2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dd_std, (fd_plus[1] - 2 * std + fd_minus[1]) / h**2, rtol=1e-4, atol=1e-5)


def test_float32_decoder_jvp_and_row_independence(small_model: VAE) -> None:
    decoder = small_model.decoder("rbf")
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(2))
    tangent = torch.zeros_like(z)
    tangent[1] = 1.0
    _, (d_mean, d_std) = torch.func.jvp(decoder, (z,), (tangent,))
    assert d_mean.dtype == torch.float32
    others = [0, 2, 3]
    assert torch.count_nonzero(d_mean[others]) == 0 and torch.count_nonzero(d_std[others]) == 0
    assert torch.count_nonzero(d_mean[1]) > 0
    single = decoder(z[2:3])
    torch.testing.assert_close(single[0], decoder(z)[0][2:3])


# ---------------------------------------------------------------------------------------------------------------
# Evaluation and the paper's claims
# ---------------------------------------------------------------------------------------------------------------


def test_codes_and_iwae(small_model: VAE, digits: np.ndarray) -> None:
    codes = encode_codes(small_model, digits[:50], batch_size=16)
    assert codes.shape == (50, 2) and codes.dtype == np.float32
    np.testing.assert_allclose(codes, small_model.encode(torch.from_numpy(digits[:50]))[0].detach().numpy(), rtol=1e-6)
    one = iwae_log_likelihood(small_model, digits[:40], "standard", n_samples=1, seed=0)
    many = iwae_log_likelihood(small_model, digits[:40], "standard", n_samples=64, seed=0, batch_size=7)
    again = iwae_log_likelihood(small_model, digits[:40], "standard", n_samples=64, seed=0, batch_size=7)
    assert many.shape == (40,) and np.isfinite(many).all()
    np.testing.assert_array_equal(many, again)  # seeded
    assert many.mean() > one.mean()  # more importance samples tighten the bound


def test_extrapolation_claim_with_default_model(default_model: tuple[VAE, object], split) -> None:  # noqa: ANN001
    model, report = default_model
    train, held_out = split
    assert model.config.n_centers == 64 and model.config.mean_output == "sigmoid"
    assert report.stage1_losses[-1] < report.stage1_losses[0]
    assert report.held_out_elbo > 40 and report.held_out_elbo_standard > 40  # a decent model, not a collapsed one
    codes = encode_codes(model, train)
    extrapolation = extrapolation_report(model, codes, factor=3.0)
    assert extrapolation.rbf_ratio >= 10, extrapolation
    assert extrapolation.claim_holds
    assert extrapolation.rbf_sigma_codes < 0.5  # sigma on the data stays small: the ratio is not bought with noise
    claims = paper_claims(model, held_out[:60], codes, n_samples=32)
    assert isinstance(claims, PaperClaims) and claims.claim_holds
    assert np.isfinite(claims.iwae_rbf) and np.isfinite(claims.iwae_standard)
    table = paper_claims_table(claims)
    assert "ratio far / codes" in table and "holds" in table


# ---------------------------------------------------------------------------------------------------------------
# Convolutional architecture
# ---------------------------------------------------------------------------------------------------------------

CONV_SMALL = {**SMALL, "architecture": "conv"}


def _digits_28(digits: np.ndarray, n: int) -> np.ndarray:
    """The first n digits upsampled 3x (np.kron) and padded by 2 pixels to 28x28 images, flat (n, 784) in [0, 1]."""
    images = np.kron(digits[:n].reshape(n, 8, 8), np.ones((3, 3), dtype=np.float32))
    return np.pad(images, ((0, 0), (2, 2), (2, 2))).reshape(n, 784).astype(np.float32)


@pytest.fixture(scope="module")
def conv_model(digits: np.ndarray) -> VAE:
    """A quickly trained tiny conv model on the 8x8 digits (both stages fitted)."""
    return train_vae(digits[:300], VAEConfig(input_dim=64, image_shape=(8, 8), **CONV_SMALL), progress=False)[0]


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"architecture": "resnet"}, r"Unknown architecture 'resnet'; expected one of: 'mlp', 'conv'"),
        ({"architecture": "conv"}, r"architecture='conv' needs image_shape, the \(H, W\) or \(C, H, W\).*got None"),
        (
            {"architecture": "conv", "input_dim": 840, "image_shape": (30, 28)},
            r"image_shape \(30, 28\) does not suit architecture='conv': height and width must be divisible by 4.*H=30",
        ),
        ({"architecture": "conv", "image_shape": (8, 9)}, r"image_shape \(8, 9\) holds 72 values but input_dim is 64"),
        ({"image_shape": (1, 2, 4, 8)}, r"'image_shape' parameter must be \(H, W\) or \(C, H, W\).*\(1, 2, 4, 8\)"),
        ({"architecture": "conv", "image_shape": (8, 0)}, r"'image_shape\[1\]'.*>= 1; got 0"),
    ],
)
def test_conv_config_errors_are_named(overrides: dict, pattern: str) -> None:
    with pytest.raises(InvalidInput, match=pattern):
        VAEConfig(**{"input_dim": 64, **overrides})


def test_conv_config_round_trip_and_old_configs_load() -> None:
    config = VAEConfig(input_dim=2 * 28 * 28, architecture="conv", image_shape=[2, 28, 28])
    assert config.image_shape == (2, 28, 28)
    payload = json.loads(json.dumps(config.to_dict()))
    assert payload["image_shape"] == [2, 28, 28] and payload["architecture"] == "conv"
    assert VAEConfig.from_dict(payload) == config
    old = VAEConfig(input_dim=64).to_dict()
    del old["architecture"], old["image_shape"]  # a config saved before these keys existed
    loaded = VAEConfig.from_dict(old)
    assert loaded.architecture == "mlp" and loaded.image_shape is None


def test_old_model_file_without_new_keys_loads(saved: Path, small_model: VAE) -> None:
    _rewrite(saved, edit_meta=lambda m: [m["config"].pop(key) for key in ("architecture", "image_shape")])
    loaded = VAE.load(saved.parent)
    assert loaded.config == small_model.config
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.decode(z)[0], small_model.decode(z)[0])


def test_conv_trains_on_28x28_images(digits: np.ndarray) -> None:
    x = _digits_28(digits, 200)
    config = VAEConfig(input_dim=784, image_shape=(28, 28), **{**CONV_SMALL, "epochs": 4, "rbf_epochs": 1})
    model, report = train_vae(x[:160], config, x_held_out=x[160:], progress=False)
    assert type(model.encoder).__name__ == "ConvEncoder" and type(model.mean_decoder).__name__ == "ConvMeanDecoder"
    assert model.config.mean_output == "sigmoid" and model.rbf_fitted
    assert report.stage1_losses[-1] < report.stage1_losses[0]
    assert np.isfinite(report.held_out_elbo)
    codes = encode_codes(model, x)
    assert codes.shape == (200, 2) and np.isfinite(codes).all()
    mean, std = model.decode(torch.from_numpy(codes[:7]))
    assert mean.shape == std.shape == (7, 784)
    # leading batch dims, as in IWAE sampling, go through the conv modules unchanged
    assert model.mean_decoder(torch.zeros(3, 5, 2)).shape == (3, 5, 784)


def test_conv_training_is_deterministic(digits: np.ndarray) -> None:
    config = VAEConfig(input_dim=64, image_shape=(8, 8), **{**CONV_SMALL, "epochs": 1, "rbf_epochs": 1})
    first, _ = train_vae(digits[:100], config, progress=False)
    second, _ = train_vae(digits[:100], config, progress=False, device="cpu")
    state_a, state_b = _state(first), _state(second)
    assert all(torch.equal(state_a[name], state_b[name]) for name in state_a)


def test_conv_save_load_round_trip(conv_model: VAE, digits: np.ndarray, tmp_path: Path) -> None:
    conv_model.save(tmp_path)
    loaded = VAE.load(tmp_path)
    assert loaded.config == conv_model.config and loaded.config.image_shape == (8, 8)
    assert type(loaded.mean_decoder).__name__ == "ConvMeanDecoder"
    x = torch.from_numpy(digits[:11])
    for expected, got in zip(conv_model.encode(x), loaded.encode(x)):
        assert torch.equal(expected, got)
    z = torch.randn(13, 2, generator=torch.Generator().manual_seed(0))
    for variance in ("rbf", "standard"):
        for expected, got in zip(conv_model.decode(z, variance), loaded.decode(z, variance)):
            assert torch.equal(expected, got)


def test_conv_decoder_jvp_and_jvp_of_jvp_match_finite_differences(conv_model: VAE) -> None:
    decoder = copy.deepcopy(conv_model).to(torch.float64).decoder("rbf")
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    v = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    (mean, std), (d_mean, d_std) = torch.func.jvp(decoder, (z,), (v,))
    assert mean.shape == std.shape == (5, 64)
    h = 1e-6
    plus, minus = decoder(z + h * v), decoder(z - h * v)
    torch.testing.assert_close(d_mean, (plus[0] - minus[0]) / (2 * h), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(d_std, (plus[1] - minus[1]) / (2 * h), rtol=1e-6, atol=1e-8)

    def directional(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.func.jvp(decoder, (point,), (v,))[1]

    _, (dd_mean, dd_std) = torch.func.jvp(directional, (z,), (v,))
    h = 1e-4
    fd_plus, fd_minus = decoder(z + h * v), decoder(z - h * v)
    torch.testing.assert_close(dd_mean, (fd_plus[0] - 2 * mean + fd_minus[0]) / h**2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dd_std, (fd_plus[1] - 2 * std + fd_minus[1]) / h**2, rtol=1e-4, atol=1e-5)
    # row independence: a tangent on one row moves only that row
    tangent = torch.zeros_like(z)
    tangent[2] = 1.0
    _, (d_rows, _) = torch.func.jvp(decoder, (z,), (tangent,))
    assert torch.count_nonzero(d_rows[[0, 1, 3, 4]]) == 0 and torch.count_nonzero(d_rows[2]) > 0


def test_conv_rbf_sigma_grows_far_from_the_data(conv_model: VAE, digits: np.ndarray) -> None:
    codes = encode_codes(conv_model, digits[:300])
    report = extrapolation_report(conv_model, codes, factor=3.0, n_points=200)
    assert report.rbf_sigma_far > report.rbf_sigma_codes, report


def test_model_saved_before_the_model_package_loads_and_saves_unchanged(tmp_path: Path, digits: np.ndarray) -> None:
    """A model written by lsg_graph/vae.py (commit e370a86) loads with the same codes and re-saves byte for byte."""
    import hashlib
    import shutil

    saved = Path(shutil.copytree(Path(__file__).parent / "data" / "model_e370a86", tmp_path / "old"))
    model = VAE.load(saved)
    assert model.config.hidden_dims == (32, 16) and model.rbf_fitted
    np.testing.assert_allclose(encode_codes(model, digits[:8]), np.load(saved / "codes_digits_0_8.npy"), rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "again")
    digest = [hashlib.sha256((folder / MODEL_FILE).read_bytes()).hexdigest() for folder in (saved, tmp_path / "again")]
    assert digest[0] == digest[1]
