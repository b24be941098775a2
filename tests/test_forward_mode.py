"""The fused forward-mode pass (lsg_graph.forward_mode, VAEDecoder.fused_jvp) against torch.func.jvp, the truth here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lsg_graph import forward_mode
from lsg_graph.errors import DecoderError
from lsg_graph.graph.weights import edge_lengths
from lsg_graph.metric import PullbackMetric
from lsg_graph.model import VAE, VAEConfig


def random_vae(architecture: str, activation: str, mean_output: str, seed: int = 0) -> VAE:
    """A float64 VAE with random (not small) weights and a 'fitted' RBF net, so every branch is exercised."""
    torch.manual_seed(seed)
    extra = {"image_shape": (8, 8)} if architecture == "conv" else {}
    config = VAEConfig(input_dim=64, architecture=architecture, activation=activation, mean_output=mean_output, **extra)
    vae = VAE(config).double()
    vae.rbf_fitted = True
    with torch.no_grad():
        vae.rbf_std.centers.normal_()
        vae.rbf_std.weight_free.normal_()
        for parameter in vae.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return vae


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want|."""
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-300))


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
@pytest.mark.parametrize("activation", ["tanh", "elu", "softplus"])
@pytest.mark.parametrize("mean_output", ["sigmoid", "identity"])
@pytest.mark.parametrize("variance", ["rbf", "standard"])
def test_vae_decoder_fused_jvp_matches_torch_func_jvp(architecture, activation, mean_output, variance) -> None:
    """Values and directional derivatives of mean and std agree with torch.func.jvp to 1e-12; inputs untouched."""
    decoder = random_vae(architecture, activation, mean_output).decoder(variance)
    generator = torch.Generator().manual_seed(1)
    z = 2.0 * torch.randn(40, 2, dtype=torch.float64, generator=generator)
    v = torch.randn(40, 2, dtype=torch.float64, generator=generator)
    z_before, v_before = z.clone(), v.clone()
    with torch.no_grad():
        fused = decoder.fused_jvp(z, v)
    (mean, std), (d_mean, d_std) = torch.func.jvp(decoder, (z,), (v,))
    for got, want in zip(fused, (mean, std, d_mean, d_std)):
        assert relative_error(got, want.detach()) < 1e-12
    assert torch.equal(z, z_before) and torch.equal(v, v_before)


LAYERS = {
    "linear": lambda: nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4, bias=False)),
    "sigmoid-relu-identity": lambda: nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Identity(), nn.Linear(6, 4), nn.Sigmoid()),
    "elu": lambda: nn.Sequential(nn.Linear(3, 6), nn.ELU(alpha=0.7), nn.Linear(6, 2)),
    "softplus beyond its threshold": lambda: nn.Sequential(nn.Linear(3, 6), nn.Softplus(beta=2.0, threshold=1.0)),
    "conv": lambda: nn.Sequential(
        nn.Linear(3, 2 * 4 * 4), nn.Unflatten(1, (2, 4, 4)), nn.ConvTranspose2d(2, 3, 4, stride=2, padding=1),
        nn.ELU(), nn.Conv2d(3, 2, 3, padding=1), nn.Flatten(),
    ),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_each_layer_rule_matches_torch_func_jvp(name) -> None:
    """Every rule in forward_mode.RULES, in a Sequential, against torch.func.jvp (float64, 1e-12)."""
    torch.manual_seed(2)
    module = LAYERS[name]().double()
    assert forward_mode.supports(module)
    z = 3.0 * torch.randn(30, 3, dtype=torch.float64)
    v = torch.randn(30, 3, dtype=torch.float64)
    with torch.no_grad():
        value, tangent = forward_mode.module_jvp(module, z, v)
    want_value, want_tangent = torch.func.jvp(module, (z,), (v,))
    assert relative_error(value, want_value.detach()) < 1e-12
    assert relative_error(tangent, want_tangent.detach()) < 1e-12


def test_unsupported_layers_are_refused() -> None:
    """A layer without a rule (or a conv with non-zero padding mode) is not supported; stacked_forward says which."""
    assert not forward_mode.supports(nn.Sequential(nn.Linear(2, 2), nn.GELU()))
    assert not forward_mode.supports(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(TypeError, match="GELU"):
        forward_mode.stacked_forward(nn.GELU(), torch.zeros(4, 2), 2)


def test_metric_uses_the_fused_pass_only_without_autograd() -> None:
    """inner and metric_tensor agree between the fused (no_grad) and torch.func (grad enabled) paths; with autograd
    on, gradients w.r.t. the points still flow."""
    decoder = random_vae("mlp", "tanh", "sigmoid").decoder("rbf")
    metric = PullbackMetric(decoder)
    z = torch.randn(25, 2, dtype=torch.float64, requires_grad=True)
    v = torch.randn(25, 2, dtype=torch.float64)
    with torch.no_grad():
        fused_inner, fused_tensor = metric.inner(z, v), metric.metric_tensor(z)
    plain_inner, plain_tensor = metric.inner(z, v), metric.metric_tensor(z)
    assert relative_error(fused_inner, plain_inner.detach()) < 1e-12
    assert relative_error(fused_tensor, plain_tensor.detach()) < 1e-12
    (gradient,) = torch.autograd.grad(plain_inner.sum(), z)
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0


class WithoutFusedPass(nn.Module):
    """The same decoder without a fused_jvp method, so PullbackMetric takes the torch.func.jvp path."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder, self.latent_dim, self.output_dim = decoder, decoder.latent_dim, decoder.output_dim

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder(z)


def test_fused_edge_lengths_match_the_generic_path() -> None:
    """edge_lengths through a VAE decoder (fused) equals edge_lengths through the same decoder wrapped as a plain
    callable (torch.func.jvp), in float64."""
    decoder = random_vae("conv", "elu", "sigmoid").decoder("rbf")
    rng = np.random.default_rng(0)
    starts = rng.normal(size=(300, 2))
    ends = starts + 0.1 * rng.normal(size=(300, 2))
    fused = edge_lengths(PullbackMetric(decoder), starts, ends)
    generic = edge_lengths(PullbackMetric(WithoutFusedPass(decoder)), starts, ends)
    np.testing.assert_allclose(fused, generic, rtol=1e-12)


def test_fused_pass_reports_a_decoder_that_yields_nan() -> None:
    """NaN weights in the mean network: edge weighting through the fused pass raises DecoderError naming the edges."""
    vae = random_vae("mlp", "tanh", "sigmoid")
    metric = PullbackMetric(vae.decoder("rbf"), chunk_size=64)
    with torch.no_grad():  # after the metric's probe, which would refuse the decoder at once
        vae.mean_decoder.net[0].weight[0, 0] = float("nan")
    with pytest.raises(DecoderError, match="non-finite"):
        edge_lengths(metric, np.zeros((3, 2)), np.ones((3, 2)))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_second_order_rules_match_a_jvp_of_a_jvp(name) -> None:
    """module_second_order: value, Jacobian columns and h = d^2/ds^2 f(z + s v) against torch.func (float64)."""
    torch.manual_seed(3)
    module = LAYERS[name]().double()
    z = 3.0 * torch.randn(20, 3, dtype=torch.float64)
    v = torch.randn(20, 3, dtype=torch.float64)
    with torch.no_grad():
        value, columns, second = forward_mode.module_second_order(module, z, v)
    jacobian = torch.stack([torch.func.jvp(module, (z,), (e.expand_as(z),))[1] for e in torch.eye(3, dtype=z.dtype)])
    want_second = torch.func.jvp(lambda x: torch.func.jvp(module, (x,), (v,))[1], (z,), (v,))[1]
    assert relative_error(value, module(z).detach()) < 1e-12
    assert relative_error(columns, jacobian.detach()) < 1e-12
    assert relative_error(second, want_second.detach()) < 1e-10


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
@pytest.mark.parametrize("activation", ["tanh", "elu", "softplus"])
@pytest.mark.parametrize("variance", ["rbf", "standard"])
def test_fused_geodesic_acceleration_matches_the_generic_path(architecture, activation, variance) -> None:
    """VAEDecoder.fused_geodesic_terms inside geodesic_acceleration (no_grad) against the jvp-of-jvp path."""
    metric = PullbackMetric(random_vae(architecture, activation, "sigmoid").decoder(variance))
    z = torch.randn(30, 2, dtype=torch.float64)
    v = torch.randn(30, 2, dtype=torch.float64)
    with torch.no_grad():
        fused = metric.geodesic_acceleration(z, v)
    generic = metric.geodesic_acceleration(z, v).detach()
    assert relative_error(fused, generic) < 1e-10


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
@pytest.mark.parametrize("activation", ["tanh", "elu", "softplus"])
@pytest.mark.parametrize("variance", ["rbf", "standard"])
def test_fused_jacobian_matches_torch_func_jacobian(architecture, activation, variance) -> None:
    """VAEDecoder.fused_jacobian (one first-order pass, d + 1 row blocks) against torch.func.jvp of g = [mu; sigma]."""
    decoder = random_vae(architecture, activation, "sigmoid").decoder(variance)
    z = torch.randn(7, 2, dtype=torch.float64)

    want = PullbackMetric(decoder)._jacobian(z)  # autograd on: torch.func.jvp along each unit vector
    with torch.no_grad():
        got = decoder.fused_jacobian(z)
    assert got.shape == want.shape == (7, 128, 2)
    assert relative_error(got, want.detach()) < 1e-12


def test_fused_jacobian_of_the_gated_rbf_head_in_higher_dimension() -> None:
    """The gated RBF head at d = 5: fused_jacobian against torch.func.jvp (gate and RBF derivatives)."""
    torch.manual_seed(1)
    config = VAEConfig(input_dim=20, latent_dim=5, rbf_gate="codes", n_gate_centers=40, n_centers=12)
    vae = VAE(config).double()
    vae.rbf_fitted = True
    with torch.no_grad():
        vae.rbf_std.centers.normal_()
        vae.rbf_std.weight_free.normal_()
        vae.rbf_std.gate_centers.normal_()
        vae.rbf_std.gate_scales.fill_(0.3)
    decoder = vae.decoder("rbf")
    z = torch.randn(9, 5, dtype=torch.float64)

    want = PullbackMetric(decoder)._jacobian(z)  # autograd on: torch.func.jvp along each unit vector
    with torch.no_grad():
        got = decoder.fused_jacobian(z)
    assert relative_error(got, want.detach()) < 1e-11


def test_trained_decoder_fused_jvp_in_each_dtype(tiny_vae: VAE, digits: np.ndarray, dtype: torch.dtype, seed: int) -> None:
    """On the session's trained model, the fused pass equals torch.func.jvp in float32 and float64 (per-dtype rtol)."""
    import copy

    from conftest import TOLERANCE

    from lsg_graph.model import encode_codes

    decoder = copy.deepcopy(tiny_vae.decoder("rbf")).to(dtype)
    z = torch.as_tensor(encode_codes(tiny_vae, digits[:32]), dtype=dtype)
    v = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    with torch.no_grad():
        mean, std, mean_tangent, std_tangent = decoder.fused_jvp(z, v)
        (mean_ref, std_ref), (mean_tangent_ref, std_tangent_ref) = torch.func.jvp(decoder, (z,), (v,))
    for got, want in ((mean, mean_ref), (std, std_ref), (mean_tangent, mean_tangent_ref), (std_tangent, std_tangent_ref)):
        assert got.dtype == dtype and relative_error(got, want) < TOLERANCE[dtype]
