"""The gated RBF precision network: exact derivatives, the gate's property on synthetic high-d codes, refit_rbf."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lsg_graph.errors import InvalidInput
from lsg_graph.metric import PullbackMetric
from lsg_graph.model import VAE, VAEConfig, refit_rbf, train_vae
from lsg_graph.model.train import _gate_kernels, _shell, active_projection


def gated_vae(latent_dim: int, seed: int = 0) -> VAE:
    """A float64 VAE with random weights, random RBF centres and a gate around 50 random codes (radius ~0.7)."""
    torch.manual_seed(seed)
    config = VAEConfig(input_dim=12, latent_dim=latent_dim, hidden_dims=(16,), n_centers=6, rbf_gate="codes",
                       n_gate_centers=50)
    vae = VAE(config).double()
    vae.rbf_fitted = True
    codes = np.random.default_rng(seed).normal(size=(50, latent_dim))
    centres, scales = _gate_kernels(codes, 50, 1.0, seed)
    with torch.no_grad():
        vae.rbf_std.centers.normal_()
        vae.rbf_std.weight_free.normal_()
        vae.rbf_std.gate_centers.copy_(torch.as_tensor(centres))
        vae.rbf_std.gate_scales.copy_(torch.as_tensor(scales))
    return vae


def shell_vae(latent_dim: int, seed: int = 0, sharpness: float = 10.0, n_codes: int = 400) -> tuple[VAE, np.ndarray]:
    """A float64 VAE with random weights and a shell gate fitted to 400 anisotropic Gaussian codes."""
    torch.manual_seed(seed)
    config = VAEConfig(input_dim=12, latent_dim=latent_dim, hidden_dims=(16,), n_centers=6, rbf_gate="shell",
                       shell_sharpness=sharpness)
    vae = VAE(config).double()
    vae.rbf_fitted = True
    rng = np.random.default_rng(seed)
    codes = rng.normal(size=(n_codes, latent_dim)) * np.linspace(0.5, 2.0, latent_dim) + 0.3
    mean, whiten, bounds = _shell(codes, 0.02)
    with torch.no_grad():
        vae.rbf_std.centers.normal_()
        vae.rbf_std.weight_free.normal_()
        vae.rbf_std.shell_mean.copy_(torch.as_tensor(mean))
        vae.rbf_std.shell_whiten.copy_(torch.as_tensor(whiten))
        vae.rbf_std.shell_bounds.copy_(torch.as_tensor(bounds))
    return vae, codes


def _points_near_the_gate(vae: VAE, latent_dim: int, generator: torch.Generator) -> torch.Tensor:
    """30 points where the gate and its derivatives are non-trivial: near codes, or near the shell's two radii."""
    std = vae.rbf_std
    if std.gate_centers is not None:
        return std.gate_centers[:30] + 0.5 * torch.randn(30, latent_dim, dtype=torch.float64, generator=generator)
    directions = torch.nn.functional.normalize(torch.randn(30, latent_dim, dtype=torch.float64, generator=generator), dim=1)
    radii = torch.cat([std.shell_bounds[0] * torch.linspace(0.8, 1.2, 15, dtype=torch.float64),
                       std.shell_bounds[1] * torch.linspace(0.8, 1.2, 15, dtype=torch.float64)])
    whitened = directions * radii.unsqueeze(1)  # (z - m) L = whitened  =>  z = m + whitened L^-1
    return std.shell_mean + torch.linalg.solve(std.shell_whiten.T, whitened.T).T


@pytest.mark.parametrize("gate", ["codes", "shell"])
@pytest.mark.parametrize("latent_dim", [2, 5])
def test_gated_fused_jvp_and_second_order_match_autodiff(latent_dim: int, gate: str) -> None:
    """Fused values, first and second directional derivatives of the gated std against torch.func.jvp (1e-10)."""
    vae = gated_vae(latent_dim) if gate == "codes" else shell_vae(latent_dim)[0]
    std = vae.rbf_std
    generator = torch.Generator().manual_seed(1)
    z = _points_near_the_gate(vae, latent_dim, generator)
    v = torch.randn(30, latent_dim, dtype=torch.float64, generator=generator)
    with torch.no_grad():
        value, tangent = std.fused_jvp(z, v)
    want_value, want_tangent = (t.detach() for t in torch.func.jvp(std, (z,), (v,)))
    want_second = torch.func.jvp(lambda x: torch.func.jvp(std, (x,), (v,))[1], (z,), (v,))[1].detach()
    scale = want_tangent.abs().max()
    assert float(scale) > 1e-3  # the gate's slope is exercised, not flat
    assert float((value - want_value).abs().max() / want_value.abs().max()) < 1e-12
    assert float((tangent - want_tangent).abs().max() / scale) < 1e-10
    metric = PullbackMetric(vae.decoder("rbf"))
    with torch.no_grad():
        fused = metric.geodesic_acceleration(z, v)
    generic = metric.geodesic_acceleration(z, v).detach()
    assert float((fused - generic).abs().max() / generic.abs().max()) < 1e-8
    from lsg_graph import forward_mode

    blocks, along = forward_mode.input_blocks(z, v)
    with torch.no_grad():
        second = std.second_order(blocks, along)[-1]
    assert float((second - want_second).abs().max() / want_second.abs().max()) < 1e-10


def test_gate_is_one_on_codes_and_zero_far_from_them() -> None:
    """On 400 codes in d = 16 the gate is ~1 at every code and ~0 at points 1.5 spacings from all codes."""
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(400, 16))
    centres, scales = _gate_kernels(codes, 400, 1.0, 0)
    config = VAEConfig(input_dim=4, latent_dim=16, n_centers=2, rbf_gate="codes", n_gate_centers=400)
    std = VAE(config).double().rbf_std
    with torch.no_grad():
        std.gate_centers.copy_(torch.as_tensor(centres))
        std.gate_scales.copy_(torch.as_tensor(scales))
        spacing = np.median(1.0 / np.sqrt(scales))
        on = std.gate(torch.as_tensor(codes)).numpy()
        far = codes + 1.5 * spacing * rng.normal(size=codes.shape) / 4.0  # |offset| ~ 1.5 spacings
        from scipy.spatial import cKDTree

        far = far[cKDTree(codes).query(far)[0] >= 1.5 * spacing]
        off = std.gate(torch.as_tensor(far)).numpy()
    assert len(far) > 50
    assert on.min() > 0.9
    assert np.median(off) < 0.05


def test_shell_gate_is_one_on_fresh_codes_and_zero_between_them() -> None:
    """2000 Gaussian codes in d = 64: the shell gate is ~1 at 90% of fresh draws from the same law (held-out codes)
    and ~0 at most midpoints of random code pairs (radius ~ 0.71 of the codes': inside the shell) and far outside.
    (At d = 16 a Gaussian's midpoints lie only 1.7 radius standard deviations inside the shell: not separable.)"""
    vae, codes = shell_vae(64, sharpness=VAEConfig(input_dim=1).shell_sharpness, n_codes=2000)
    rng = np.random.default_rng(1)
    fresh = rng.normal(size=(2000, 64)) * np.linspace(0.5, 2.0, 64) + 0.3
    i, j = rng.integers(0, len(codes), size=(2, 2000))
    midpoints = 0.5 * (codes[i] + codes[j])
    std = vae.rbf_std
    with torch.no_grad():
        on = std.gate(torch.as_tensor(fresh)).numpy()
        between = std.gate(torch.as_tensor(midpoints)).numpy()
        outside = std.gate(torch.as_tensor(3.0 * fresh)).numpy()
    assert np.mean(on > 0.5) > 0.9
    assert np.median(between) < 0.05 and np.median(outside) < 0.05


def test_codes_gate_ignores_collapsed_units() -> None:
    """Codes in d = 8 with 4 collapsed units (std 1e-3): posterior-like samples spread 0.5 along the collapsed
    units keep the gate ~1 (they are on the data in every direction the decoder uses), points 1.5 spacings away
    in the active directions still close it; without the projection the samples would close it too."""
    rng = np.random.default_rng(0)
    codes = np.hstack([rng.normal(size=(400, 4)), 1e-3 * rng.normal(size=(400, 4))])
    projection = active_projection(codes)
    np.testing.assert_allclose(projection, np.diag([1.0] * 4 + [0.0] * 4), atol=1e-3)
    centres, scales = _gate_kernels(codes, 400, 1.0, 0, projection)
    std = VAE(VAEConfig(input_dim=4, latent_dim=8, n_centers=2, rbf_gate="codes", n_gate_centers=400)).double().rbf_std
    samples = codes + np.hstack([np.zeros((400, 4)), 0.5 * rng.normal(size=(400, 4))])
    spacing = float(np.median(1.0 / np.sqrt(scales)))
    far = codes + np.hstack([2.0 * spacing * rng.normal(size=(400, 4)) / 2.0, np.zeros((400, 4))])
    from scipy.spatial import cKDTree

    far = far[cKDTree(codes[:, :4]).query(far[:, :4])[0] >= 1.5 * spacing]
    with torch.no_grad():
        std.gate_centers.copy_(torch.as_tensor(centres))
        std.gate_scales.copy_(torch.as_tensor(scales))
        unprojected = std.gate(torch.as_tensor(samples)).numpy()
        std.gate_projection.copy_(torch.as_tensor(projection))
        on, off = std.gate(torch.as_tensor(samples)).numpy(), std.gate(torch.as_tensor(far)).numpy()
    assert len(far) > 50 and on.min() > 0.9 and np.median(off) < 0.05
    assert np.median(unprojected) < 0.05


def test_codes_gated_models_saved_before_the_projection_load_with_all_directions(tmp_path) -> None:
    """A codes-gated model file without gate_projection (an older version) loads with the identity projection."""
    from lsg_graph._io import save_tensors
    from lsg_graph.model.vae import MODEL_FILE

    vae = gated_vae(3).float()
    vae.save(tmp_path / "run")
    tensors = {name: value for name, value in vae.state_dict().items() if name != "rbf_std.gate_projection"}
    from lsg_graph._io import load_tensors_with_checksum

    _, meta, _ = load_tensors_with_checksum(tmp_path / "run" / MODEL_FILE, "lsg-graph/model")
    save_tensors(tmp_path / "run" / MODEL_FILE, tensors, meta)
    loaded = VAE.load(tmp_path / "run")
    assert torch.equal(loaded.rbf_std.gate_projection, torch.eye(3))
    z = torch.randn(5, 3)
    with torch.no_grad():
        assert torch.allclose(loaded.rbf_std(z), vae.rbf_std(z))


def test_refit_rbf_gated_sigma_rises_between_codes_and_keeps_the_rest() -> None:
    """refit_rbf(rbf_gate='codes') on a tiny model: sigma off the codes >= 3x on them; other weights unchanged."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, size=(200, 10)).astype(np.float32)
    vae, _ = train_vae(x, VAEConfig(input_dim=10, latent_dim=4, hidden_dims=(16,), epochs=3, rbf_epochs=2,
                                    n_centers=8), progress=False)
    gated = refit_rbf(vae, x, rbf_gate="codes", gate_scale=1.0)
    assert gated.config.rbf_gate == "codes" and vae.config.rbf_gate == "none"
    for name, value in vae.state_dict().items():
        if not name.startswith("rbf_std."):
            assert torch.equal(value, gated.state_dict()[name])
    with torch.no_grad():
        codes = gated.encoder(torch.as_tensor(x))[0]
        spacing = float(torch.cdist(codes, codes).fill_diagonal_(np.inf).min(1).values.median())
        far = codes + 3.0 * spacing * torch.nn.functional.normalize(torch.randn(codes.shape, generator=torch.Generator().manual_seed(0)), dim=1)
        keep = torch.cdist(far, codes).min(1).values >= 1.5 * spacing
        ratio = gated.rbf_std(far[keep]).mean(1).median() / gated.rbf_std(codes).mean(1).median()
    assert int(keep.sum()) > 20 and float(ratio) >= 3.0
    with pytest.raises(InvalidInput, match="refit_rbf can change only"):
        refit_rbf(vae, x, latent_dim=3)


def test_free_bits_loss_is_the_elbo_at_zero_and_frees_small_kl_terms() -> None:
    """_free_bits_loss with 0 free bits is the mean negative ELBO (same noise); with free bits every unit's KL below
    them stops counting, so the loss drops by exactly the KL it forgave; bad values are refused; free_bits = 0 is
    not written into saved configs (older files re-save byte for byte)."""
    from lsg_graph.model.likelihood import _kl_to_prior, _negative_elbo
    from lsg_graph.model.train import _free_bits_loss

    vae = VAE(VAEConfig(input_dim=6, latent_dim=3, hidden_dims=(8,))).double()
    x = torch.rand(20, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    plain = _negative_elbo(vae, x, vae.standard_std, torch.Generator().manual_seed(1)).mean()
    free0 = _free_bits_loss(vae, x, torch.Generator().manual_seed(1), 0.0)
    assert torch.allclose(plain, free0, rtol=1e-12)
    with torch.no_grad():
        mean_z, std_z = vae.encoder(x)
    per_unit = torch.stack([_kl_to_prior(mean_z[:, j:j + 1], std_z[:, j:j + 1]).mean() for j in range(3)])
    level = float(per_unit.max()) + 1.0  # above every unit's KL: the KL term is the constant 3 * level
    free = _free_bits_loss(vae, x, torch.Generator().manual_seed(1), level)
    assert torch.allclose(free.detach(), (plain - per_unit.sum() + 3 * level).detach(), rtol=1e-10)
    with pytest.raises(InvalidInput, match="free_bits"):
        VAEConfig(input_dim=5, free_bits=-1.0)
    assert "free_bits" not in VAEConfig(input_dim=5).to_dict()
    assert VAEConfig.from_dict(VAEConfig(input_dim=5, free_bits=0.5).to_dict()).free_bits == 0.5


def test_configs_saved_before_the_gate_load_as_ungated() -> None:
    """A config dict without 'rbf_gate' (saved by an older version) means the paper's ungated network."""
    payload = dataclasses.asdict(VAEConfig(input_dim=5))
    payload.pop("rbf_gate")
    assert VAEConfig.from_dict(payload).rbf_gate == "none"
    with pytest.raises(InvalidInput, match="rbf_gate"):
        VAEConfig(input_dim=5, rbf_gate="sometimes")
    with pytest.raises(InvalidInput, match="shell_quantile must be in .0, 0.5.; got 0.6"):
        VAEConfig(input_dim=5, rbf_gate="shell", shell_quantile=0.6)


def test_geometry_health_flags_what_is_wrong() -> None:
    """On a linear decoder (deterministic, straight geodesics) the stretch is the graph's own; the check reports it
    and names no sigma problem; on the gated tiny VAE the sigma ratio is >= 3 and no sigma problem is named."""
    from lsg_graph.graph.latent_graph import build_latent_graph
    from lsg_graph.health import geometry_health
    from lsg_graph.manifolds import LinearDecoder

    rng = np.random.default_rng(0)
    decoder = LinearDecoder(rng.normal(size=(6, 4)))
    metric = PullbackMetric(decoder)
    graph = build_latent_graph(metric, decoder.sample(300, seed=0), k=5)
    health = geometry_health(metric, graph, n_pairs=4)
    assert health.sigma_ratio is None and health.n_pairs == 4
    assert health.stretch_median >= 1.0 - 1e-9
    assert (health.stretch_median > 1.05) == any("longer than refined" in p for p in health.problems)
    assert "graph distances are within" in health.summary()
    assert health.active_units == 4 and health.latent_dim == 4
    collapsed = decoder.sample(300, seed=1) * np.array([1.0, 1.0, 1e-3, 1e-3])  # two units collapsed to a constant
    health = geometry_health(metric, build_latent_graph(metric, collapsed, k=5), n_pairs=2)
    assert health.active_units == 2 and "2 of 4 latent directions active" in health.summary()


def test_encode_codes_refuses_non_finite_codes() -> None:
    """A diverged encoder (NaN weights) used to return NaN codes silently."""
    from lsg_graph.model import encode_codes

    vae = VAE(VAEConfig(input_dim=5, hidden_dims=(4,)))
    with torch.no_grad():
        next(vae.encoder.parameters()).fill_(float("nan"))
    with pytest.raises(InvalidInput, match=r"NaN or inf codes for 3 of 3 rows"):
        encode_codes(vae, np.zeros((3, 5), dtype=np.float32))
