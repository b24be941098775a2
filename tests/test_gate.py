"""The gated RBF precision network: exact derivatives, the gate's property on synthetic high-d codes, refit_rbf."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lsg_graph.errors import InvalidInput
from lsg_graph.metric import PullbackMetric
from lsg_graph.model import VAE, VAEConfig, refit_rbf, train_vae
from lsg_graph.model.train import _gate_kernels


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


@pytest.mark.parametrize("latent_dim", [2, 5])
def test_gated_fused_jvp_and_second_order_match_autodiff(latent_dim: int) -> None:
    """Fused values, first and second directional derivatives of the gated std against torch.func.jvp (1e-10)."""
    vae = gated_vae(latent_dim)
    std = vae.rbf_std
    generator = torch.Generator().manual_seed(1)
    centres = std.gate_centers[:30]  # points near the codes, where the gate and its derivatives are non-trivial
    z = centres + 0.5 * torch.randn(30, latent_dim, dtype=torch.float64, generator=generator)
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


def test_configs_saved_before_the_gate_load_as_ungated() -> None:
    """A config dict without 'rbf_gate' (saved by an older version) means the paper's ungated network."""
    payload = dataclasses.asdict(VAEConfig(input_dim=5))
    payload.pop("rbf_gate")
    assert VAEConfig.from_dict(payload).rbf_gate == "none"
    with pytest.raises(InvalidInput, match="rbf_gate"):
        VAEConfig(input_dim=5, rbf_gate="sometimes")


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


def test_encode_codes_refuses_non_finite_codes() -> None:
    """A diverged encoder (NaN weights) used to return NaN codes silently."""
    from lsg_graph.model import encode_codes

    vae = VAE(VAEConfig(input_dim=5, hidden_dims=(4,)))
    with torch.no_grad():
        next(vae.encoder.parameters()).fill_(float("nan"))
    with pytest.raises(InvalidInput, match=r"NaN or inf codes for 3 of 3 rows"):
        encode_codes(vae, np.zeros((3, 5), dtype=np.float32))
