"""The networks of the VAE: encoders, mean decoders, the two variance heads and their forward-mode rules.

Everything a decoder computes is built from smooth, row-wise independent torch ops (tanh/elu/softplus MLPs and
convolutions), so the rest of the library can differentiate it twice with `torch.func.jvp`, in float32 or float64.
Each decoder part also has hand-written forward-mode rules (`fused_jvp`, `second_order`, see
lsg_graph.forward_mode) that PullbackMetric uses without autograd. Data and decoder outputs are always flat rows
(n, D); the conv modules unflatten to images internally.

The RBF precision network (RBFStd) follows Arvanitidis, Hansen & Hauberg (ICLR 2018): beta(z) = W v(z) + zeta with
v_k(z) = exp(-gamma_k ||z - c_k||^2) and W >= 0, so that sigma(z) -> zeta^(-1/2) far from the data.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lsg_graph import forward_mode
from lsg_graph.model.config import ACTIVATIONS, VAEConfig, _chw

__all__ = ["ConvEncoder", "ConvMeanDecoder", "Encoder", "MeanDecoder", "RBFStd", "StandardStd", "VAEDecoder"]

GATE_POWER = 4  # gate kernels exp(-(r / h)^(2 p)): flat inside the radius h, steep around it
GATE_NEIGHBOURS = 16  # the gate sums the kernels of the gate centres nearest each point only
GATE_STRENGTH = 3.0  # gate g = 1 - exp(-GATE_STRENGTH * sum of kernels): ~1 on the codes, ~0 far from all of them
CONV_CHANNELS = (32, 64)  # conv encoder: two stride-2 4x4 convolutions
DECONV_CHANNELS = (32, 16)  # conv mean decoder: kept lean, it is differentiated millions of times for edge weights
_ENCODER_MIN_STD = 1e-4


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """An MLP through `sizes` with `activation` between layers and a linear last layer."""
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if index < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """x (..., D) -> posterior mean (..., d) and std (..., d) = softplus(.) + 1e-4."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.latent_dim = config.latent_dim
        self.net = _mlp([config.input_dim, *config.hidden_dims, 2 * config.latent_dim], config.activation)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and standard deviation, each (..., d)."""
        out = self.net(x)
        mean, raw_std = out[..., : self.latent_dim], out[..., self.latent_dim :]
        return mean, F.softplus(raw_std) + _ENCODER_MIN_STD


class ConvEncoder(nn.Module):
    """Images x (..., D) -> posterior mean and std (..., d): two stride-2 4x4 convolutions, then an MLP.

    Rows are unflattened to (C, H, W) internally; every op acts on each row alone.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.latent_dim = config.latent_dim
        self.image_chw = _chw(config.image_shape)
        channels, height, width = self.image_chw
        act = ACTIVATIONS[config.activation]
        first, second = CONV_CHANNELS
        self.conv = nn.Sequential(
            nn.Conv2d(channels, first, 4, stride=2, padding=1), act(),
            nn.Conv2d(first, second, 4, stride=2, padding=1), act(),
        )
        flat = second * (height // 4) * (width // 4)
        self.net = _mlp([flat, *config.hidden_dims, 2 * config.latent_dim], config.activation)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and standard deviation, each (..., d)."""
        lead = x.shape[:-1]
        n = math.prod(lead)
        features = self.conv(x.reshape(n, *self.image_chw)).reshape(n, -1)
        out = self.net(features).reshape(*lead, 2 * self.latent_dim)
        mean, raw_std = out[..., : self.latent_dim], out[..., self.latent_dim :]
        return mean, F.softplus(raw_std) + _ENCODER_MIN_STD


class MeanDecoder(nn.Module):
    """z (..., d) -> decoder mean (..., D) through an MLP and the output activation."""

    def __init__(self, config: VAEConfig, mean_output: str) -> None:
        super().__init__()
        self.mean_output = mean_output
        self.net = _mlp([config.latent_dim, *reversed(config.hidden_dims), config.input_dim], config.activation)

    def forward(self, z: Tensor) -> Tensor:
        """Decoder mean (..., D), in data units."""
        return self._output(self.net(z))

    def _output(self, out: Tensor) -> Tensor:
        """The output activation ("sigmoid" or "identity")."""
        return torch.sigmoid(out) if self.mean_output == "sigmoid" else out

    def fused_jvp(self, z: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (n, D) and its directional derivative J v (n, D) in one fused pass (no autograd)."""
        n = z.shape[0]
        stacked = self._stacked_net(torch.cat([z, v]), n)
        value, tangent = stacked[:n], stacked[n:]
        return forward_mode.sigmoid_jvp(value, tangent) if self.mean_output == "sigmoid" else (value, tangent)

    def _stacked_net(self, stacked: Tensor, n: int) -> Tensor:
        """The network before the output activation on stacked [values; tangents] (2n, d) -> (2n, D)."""
        return forward_mode.stacked_forward(self.net, stacked, n)

    def second_order(self, blocks: Tensor, along: int) -> Tensor:
        """Mean blocks (B, n, D) from input blocks (B, n, d) (see forward_mode.second_order_forward)."""
        out = self._second_order_net(blocks, along)
        return forward_mode.second_order_forward(nn.Sigmoid(), out, along) if self.mean_output == "sigmoid" else out

    def _second_order_net(self, blocks: Tensor, along: int) -> Tensor:
        """The network before the output activation on blocks (B, n, d) -> (B, n, D)."""
        return forward_mode.second_order_forward(self.net, blocks, along)

    def first_order(self, blocks: Tensor) -> Tensor:
        """Mean blocks (B, n, D) from input blocks [z; tangents] (B, n, d) (forward_mode.first_order_forward)."""
        out = self._first_order_net(blocks)
        return forward_mode.first_order_forward(nn.Sigmoid(), out) if self.mean_output == "sigmoid" else out

    def _first_order_net(self, blocks: Tensor) -> Tensor:
        """The network before the output activation on blocks [z; tangents] (B, n, d) -> (B, n, D)."""
        return forward_mode.first_order_forward(self.net, blocks)


class ConvMeanDecoder(MeanDecoder):
    """z (..., d) -> decoder mean (..., D): an MLP to a (32, H/4, W/4) map, two 4x4 stride-2 transposed convolutions
    (32 -> 16 -> C channels) and the output activation, flattened back to rows. Lean on purpose: the pullback metric
    differentiates it (jvp, jvp of jvp) at every quadrature node of every graph edge.
    """

    def __init__(self, config: VAEConfig, mean_output: str) -> None:
        nn.Module.__init__(self)
        self.mean_output = mean_output
        self.output_dim = config.input_dim
        channels, height, width = _chw(config.image_shape)
        first, second = DECONV_CHANNELS
        self.map_shape = (first, height // 4, width // 4)
        act = ACTIVATIONS[config.activation]
        self.net = nn.Sequential(
            _mlp([config.latent_dim, *reversed(config.hidden_dims), math.prod(self.map_shape)], config.activation),
            act(),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(first, second, 4, stride=2, padding=1), act(),
            nn.ConvTranspose2d(second, channels, 4, stride=2, padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        """Decoder mean (..., D), in data units."""
        lead = z.shape[:-1]
        n = math.prod(lead)
        maps = self.net(z.reshape(n, z.shape[-1])).reshape(n, *self.map_shape)
        maps = maps.contiguous(memory_format=torch.channels_last)  # faster transposed convolutions on the CPU (docs/measurements.md)
        return self._output(self.deconv(maps).reshape(*lead, self.output_dim))

    def _stacked_net(self, stacked: Tensor, n: int) -> Tensor:
        """MLP, maps and transposed convolutions on stacked [values; tangents] (2n, d) -> (2n, D)."""
        maps = forward_mode.stacked_forward(self.net, stacked, n).reshape(2 * n, *self.map_shape)
        maps = maps.contiguous(memory_format=torch.channels_last)
        return forward_mode.stacked_forward(self.deconv, maps, n).reshape(2 * n, self.output_dim)

    def _second_order_net(self, blocks: Tensor, along: int) -> Tensor:
        """MLP, maps and transposed convolutions on blocks (B, n, d) -> (B, n, D)."""
        out = forward_mode.second_order_forward(self.net, blocks, along)
        count, n = out.shape[:2]
        maps = forward_mode.second_order_forward(self.deconv, out.reshape(count, n, *self.map_shape), along)
        return maps.reshape(count, n, self.output_dim)

    def _first_order_net(self, blocks: Tensor) -> Tensor:
        """MLP, maps and transposed convolutions on blocks [z; tangents] (B, n, d) -> (B, n, D)."""
        out = forward_mode.first_order_forward(self.net, blocks)
        count, n = out.shape[:2]
        maps = forward_mode.first_order_forward(self.deconv, out.reshape(count, n, *self.map_shape))
        return maps.reshape(count, n, self.output_dim)


class StandardStd(nn.Module):
    """The usual VAE variance head: z (..., d) -> std (..., D) = softplus(MLP(z)) + min_std."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.min_std = config.min_std
        self.net = _mlp([config.latent_dim, *reversed(config.hidden_dims), config.input_dim], config.activation)

    def forward(self, z: Tensor) -> Tensor:
        """Decoder standard deviation (..., D), in data units."""
        return F.softplus(self.net(z)) + self.min_std

    def fused_jvp(self, z: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Std (n, D) and its directional derivative (n, D) in one fused pass (no autograd)."""
        std, tangent = forward_mode.softplus_jvp(*forward_mode.module_jvp(self.net, z, v))
        return std + self.min_std, tangent

    def second_order(self, blocks: Tensor, along: int) -> Tensor:
        """Std blocks (B, n, D) from input blocks (B, n, d) (see forward_mode.second_order_forward)."""
        out = forward_mode.second_order_forward(self.net, blocks, along)
        out = forward_mode.second_order_forward(nn.Softplus(), out, along)
        out[0] += self.min_std
        return out

    def first_order(self, blocks: Tensor) -> Tensor:
        """Std blocks (B, n, D) from input blocks [z; tangents] (B, n, d) (forward_mode.first_order_forward)."""
        out = forward_mode.first_order_forward(nn.Softplus(), forward_mode.first_order_forward(self.net, blocks))
        out[0] += self.min_std
        return out


class RBFStd(nn.Module):
    """The paper's RBF precision network with an optional gate: std(z) = beta(z)^(-1/2) + min_std, (..., D).

    beta(z) = g(z) W v(z) + zeta with v_k(z) = exp(-gamma_k ||z - c_k||^2) (centres c_k, bandwidths gamma_k: fixed
    buffers) and W = softplus(weight_free) (D, K), trained. The gate g(z) = 1 - exp(-GATE_STRENGTH S(z)),
    S(z) = sum_j exp(-(s_j ||z - e_j||^2)^GATE_POWER), has one flat-topped kernel of radius s_j^(-1/2) around each
    gate centre e_j (training codes): g is about 1 within a nearest-neighbour spacing of a code and falls to 0 off
    the data, so sigma grows between codes at any latent dimension. Its distances are measured after projecting
    onto the codes' active directions (`gate_projection`; collapsed latent units, which the decoder ignores, and
    along which posterior samples lie far from every code, do not count). The "shell" gate is instead a function of the
    Mahalanobis radius rho(z) = ||(z - m) L|| of the training codes (mean m, L L^T = inverse covariance):
    g = s((rho - rho_lo) / w_lo) s((rho_hi - rho) / w_hi) with the logistic s, rho_lo, rho_hi quantiles of the
    codes' radii and w = rho / shell_sharpness, so sigma rises inside the thin shell a high-d code cloud lies on
    (where straight lines between codes run) and beyond it. Without a gate (rbf_gate="none") g = 1.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.zeta = config.zeta
        self.min_std = config.min_std
        n_gate = config.n_gate_centers if config.rbf_gate == "codes" else 0
        self.register_buffer("centers", torch.zeros(config.n_centers, config.latent_dim))
        self.register_buffer("gammas", torch.ones(config.n_centers))
        self.weight_free = nn.Parameter(torch.zeros(config.input_dim, config.n_centers))
        if n_gate:
            self.register_buffer("gate_centers", torch.zeros(n_gate, config.latent_dim))
            self.register_buffer("gate_scales", torch.ones(n_gate))
            self.register_buffer("gate_projection", torch.eye(config.latent_dim))  # onto the active directions
        else:
            self.gate_centers = None
            self.gate_scales = None
        if config.rbf_gate == "shell":
            self.register_buffer("shell_mean", torch.zeros(config.latent_dim))
            self.register_buffer("shell_whiten", torch.eye(config.latent_dim))
            self.register_buffer("shell_bounds", torch.tensor([0.0, 1e6]))  # rho_lo, rho_hi
            self.shell_sharpness = config.shell_sharpness
        else:
            self.shell_mean = None

    @property
    def gated(self) -> bool:
        """Whether a gate multiplies the fitted precision (rbf_gate "codes" or "shell")."""
        return self.gate_centers is not None or self.shell_mean is not None

    def activations(self, z: Tensor) -> Tensor:
        """RBF activations v(z) = exp(-gamma_k ||z - c_k||^2), shape (..., K)."""
        squared = ((z.unsqueeze(-2) - self.centers) ** 2).sum(-1)
        return torch.exp(-self.gammas * squared)

    def gate(self, z: Tensor) -> Tensor:
        """The gate g(z) in [0, 1] (...,): about 1 near the training codes, 0 away from all of them."""
        if self.shell_mean is not None:
            return self._shell_terms(z, None, 0, False)[0][0]
        if self.gate_centers is None:
            return torch.ones(z.shape[:-1], dtype=z.dtype, device=z.device)
        flat = z.reshape(-1, z.shape[-1])
        offsets, scales = self._nearest_gate_centres(flat)
        q = (scales * offsets.square().sum(-1)).clamp(max=_GATE_Q_MAX)
        total = torch.exp(-(q**GATE_POWER)).sum(-1)
        return -torch.expm1(-GATE_STRENGTH * total).reshape(z.shape[:-1])

    def _nearest_gate_centres(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Offsets (z - e_j) P (n, m, d) to the m = min(G, GATE_NEIGHBOURS) gate centres nearest each point of z (n, d),
        with P the projection onto the codes' active directions, and their scales (n, m). Farther kernels are below exp(-(1.5)^8) of a code's own and are left out: the
        selection only changes where the kernels it swaps are negligible, so values and derivatives stay smooth."""
        z = z @ self.gate_projection  # distances in the active directions only (collapsed units are ignored)
        centres, scales = self.gate_centers @ self.gate_projection, self.gate_scales
        if centres.shape[0] <= GATE_NEIGHBOURS:
            return z.unsqueeze(-2) - centres, scales.expand(z.shape[0], -1)
        with torch.no_grad():
            squared = (z.square().sum(-1, keepdim=True) - 2.0 * z @ centres.T + centres.square().sum(-1))
            nearest = torch.topk(squared, GATE_NEIGHBOURS, dim=-1, largest=False).indices  # (n, m)
        return z.unsqueeze(-2) - centres[nearest], scales[nearest]

    def precision(self, z: Tensor) -> Tensor:
        """Precision beta(z) = g(z) W v(z) + zeta, shape (..., D), in 1 / data units^2."""
        fitted = self.activations(z) @ F.softplus(self.weight_free).transpose(0, 1)
        return self.gate(z).unsqueeze(-1) * fitted + self.zeta

    def forward(self, z: Tensor) -> Tensor:
        """Decoder standard deviation (..., D), in data units."""
        return torch.rsqrt(self.precision(z)) + self.min_std

    def fused_jvp(self, z: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Std (n, D) and its directional derivative (n, D): activations and their derivatives in one product.

        d v_k = -2 gamma_k v_k (z - c_k) . v;  d beta = dg W v + g W d v;  d std = -beta^(-3/2) d beta / 2.
        """
        blocks = torch.stack([z, v, torch.zeros_like(z)])
        out = self.second_order(blocks, 1, second=False)
        return out[0], out[1]

    def first_order(self, blocks: Tensor) -> Tensor:
        """Std blocks (B, n, D) from input blocks [z; tangents] (B, n, d): value and first derivatives."""
        padded = torch.cat([blocks, torch.zeros_like(blocks[:1])])
        return self.second_order(padded, 1, second=False)[:-1]

    def jacobian(self, z: Tensor) -> Tensor:
        """Blocks (d + 1, n, D): std(z) and its partial derivatives along the d unit vectors (without a gate, the
        unit tangents make the projections of `second_order` a transpose of the offsets)."""
        if self.gated:
            return self.first_order(forward_mode.jacobian_blocks(z))
        offsets = z.unsqueeze(-2) - self.centers  # (n, K, d)
        activations = torch.exp(-self.gammas * offsets.square().sum(-1))  # (n, K)
        parts = z.new_empty(1 + z.shape[1], z.shape[0], self.centers.shape[0])
        parts[0] = activations
        parts[1:] = (activations.unsqueeze(-1) * (-2.0 * self.gammas).unsqueeze(-1) * offsets).permute(2, 0, 1)
        fitted = parts @ F.softplus(self.weight_free).transpose(0, 1)  # f and its partials (d + 1, n, D)
        precision = fitted[0] + self.zeta
        root = torch.rsqrt(precision)
        fitted[1:].mul_(-0.5 * root / precision)
        fitted[0] = root + self.min_std
        return fitted

    def second_order(self, blocks: Tensor, along: int, second: bool = True) -> Tensor:
        """Std blocks (B, n, D) from input blocks [z; tangents; 0] (B, n, d) straight from forward_mode.input_blocks.

        v_k' = v_k u_k with u_k = -2 gamma_k (z - c_k) . t;  v_k'' = v_k (u_k^2 - 2 gamma_k |t|^2) along t = blocks[along];
        beta = g f with f = W v: beta' = g' f + g f', beta'' = g'' f + 2 g' f' + g f'';
        std' = -beta^(-3/2) beta' / 2; std'' = 3/4 beta^(-5/2) beta'^2 - beta^(-3/2) beta'' / 2.
        With second=False the last block is left 0 (first derivatives only).
        """
        z, tangents = blocks[0], blocks[1:-1]
        offsets = z.unsqueeze(-2) - self.centers
        activations = torch.exp(-self.gammas * offsets.square().sum(-1))
        projections = -2.0 * self.gammas * torch.einsum("nkd,mnd->mnk", offsets, tangents)
        parts = [activations.unsqueeze(0), activations * projections]
        if second:
            along_v = projections[along - 1]
            squared_t = blocks[along].square().sum(-1, keepdim=True)
            parts.append((activations * (along_v.square() - 2.0 * self.gammas * squared_t)).unsqueeze(0))
        fitted = torch.cat(parts) @ F.softplus(self.weight_free).transpose(0, 1)  # f, f' per tangent, [f'']
        gate = self._gate_blocks(blocks, along, second)  # g, g' per tangent, [g''] each (n, 1)
        beta = fitted * gate[0]
        if gate.shape[0] > 1:
            beta[1 : 1 + len(tangents)] += gate[1 : 1 + len(tangents)] * fitted[0]
            if second:
                beta[-1] += gate[-1] * fitted[0] + 2.0 * gate[along] * fitted[along]
        precision = beta[0] + self.zeta
        root = torch.rsqrt(precision)
        slope = -0.5 * root / precision
        first = beta[1 : 1 + len(tangents)] * slope
        last = torch.zeros_like(precision)
        if second:
            last = 0.75 * root / precision.square() * beta[along].square() + slope * beta[-1]
        return torch.cat([(root + self.min_std).unsqueeze(0), first, last.unsqueeze(0)])

    def _gate_blocks(self, blocks: Tensor, along: int, second: bool) -> Tensor:
        """Gate value, first derivatives along each tangent and (if `second`) the second along blocks[along].

        Shape (1 + tangents + second, n, 1); just ones (1, n, 1) without gate centres.
        """
        z, tangents = blocks[0], blocks[1:-1]
        if self.shell_mean is not None:
            return torch.cat(self._shell_terms(z, tangents, along, second)).unsqueeze(-1)
        if self.gate_centers is None:
            return torch.ones((1, z.shape[0], 1), dtype=z.dtype, device=z.device)
        offsets, scales = self._nearest_gate_centres(z)  # (n, m, d), (n, m)
        q = (scales * offsets.square().sum(-1)).clamp(max=_GATE_Q_MAX)  # (n, m)
        p = GATE_POWER
        kernels = torch.exp(-(q**p))
        dq = 2.0 * scales * torch.einsum("ngd,mnd->mng", offsets, tangents)  # (T, n, m)
        slope = -p * q ** (p - 1) * kernels  # d kernel / d q
        total = kernels.sum(-1)
        outer = torch.exp(-GATE_STRENGTH * total)
        parts = [(-torch.expm1(-GATE_STRENGTH * total)).unsqueeze(0)]
        d_total = (slope * dq).sum(-1)  # (T, n)
        parts.append(GATE_STRENGTH * outer * d_total)
        if second:
            dq_v = dq[along - 1]
            ddq = 2.0 * scales * (blocks[along] @ self.gate_projection).square().sum(-1, keepdim=True)
            curvature = kernels * ((p * q ** (p - 1) * dq_v).square() - p * (p - 1) * q ** (p - 2) * dq_v.square())
            dd_total = (curvature + slope * ddq).sum(-1)
            d_v = d_total[along - 1]
            parts.append((GATE_STRENGTH * outer * (dd_total - GATE_STRENGTH * d_v.square())).unsqueeze(0))
        return torch.cat(parts).unsqueeze(-1)

    def _shell_terms(self, z: Tensor, tangents: Tensor | None, along: int, second: bool) -> list[Tensor]:
        """The shell gate G(rho(z)) (1, ...) and, given tangents (T, n, d), its first derivatives (T, n) and (if
        `second`) its second derivative (1, n) along tangents[along - 1].

        rho' = u . u_t / rho with u = (z - m) L, u_t = t L; rho'' = (|u_t|^2 - rho'^2) / rho;
        g' = G'(rho) rho'; g'' = G''(rho) rho'^2 + G'(rho) rho''.
        """
        whitened = (z - self.shell_mean) @ self.shell_whiten
        rho = whitened.norm(dim=-1).clamp(min=1e-12)
        low, high = self.shell_bounds[0], self.shell_bounds[1]
        rate_low, rate_high = self.shell_sharpness / low.clamp(min=1e-12), self.shell_sharpness / high.clamp(min=1e-12)
        inner, outer = torch.sigmoid((rho - low) * rate_low), torch.sigmoid((high - rho) * rate_high)
        parts = [(inner * outer).unsqueeze(0)]
        if tangents is None:
            return parts
        slope_inner, slope_outer = inner * (1 - inner) * rate_low, -outer * (1 - outer) * rate_high  # d/d rho
        first = slope_inner * outer + inner * slope_outer  # G'(rho)
        projected = tangents @ self.shell_whiten  # (T, n, d)
        d_rho = (projected * whitened).sum(-1) / rho  # (T, n)
        parts.append(first * d_rho)
        if second:
            curve_inner = slope_inner * (1 - 2 * inner) * rate_low
            curve_outer = -slope_outer * (1 - 2 * outer) * rate_high
            curvature = curve_inner * outer + 2 * slope_inner * slope_outer + inner * curve_outer  # G''(rho)
            d_v = d_rho[along - 1]
            dd_rho = (projected[along - 1].square().sum(-1) - d_v.square()) / rho
            parts.append((curvature * d_v.square() + first * dd_rho).unsqueeze(0))
        return parts


_GATE_Q_MAX = 1e4  # gate kernels are exp(-1e16) = 0 beyond this; the clamp keeps q^(p-1) finite


class VAEDecoder(nn.Module):
    """A decoder z (n, d) -> (mean (n, D), std (n, D)) sharing its weights with the VAE it came from.

    Built only from differentiable, row-wise independent torch ops, so `torch.func.jvp` (and jvp of jvp) works.
    It holds the VAE's own submodules: changing its dtype or device changes the VAE's too.
    """

    def __init__(self, mean: nn.Module, std: nn.Module, latent_dim: int, output_dim: int, variance: str) -> None:
        super().__init__()
        self.mean = mean
        self.std = std
        self.latent_dim = latent_dim
        self.output_dim = output_dim
        self.variance = variance

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder mean and standard deviation, each (n, D), in data units."""
        return self.mean(z), self.std(z)

    def fused_jvp(self, z: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Mean, std and their directional derivatives along v, each (n, D), in one fused forward-mode pass.

        The optional decoder method PullbackMetric uses without autograd (lsg_graph.forward_mode; faster than
        torch.func.jvp, docs/measurements.md). z and v are (n, d) and left untouched.
        """
        mean, mean_tangent = self.mean.fused_jvp(z, v)
        std, std_tangent = self.std.fused_jvp(z, v)
        return mean, std, mean_tangent, std_tangent

    def fused_jacobian(self, z: Tensor) -> Tensor:
        """Jacobian J_g (n, 2D, d) of g = [mean; std] at z (n, d): a view of `fused_jacobian_rows`."""
        return self.fused_jacobian_rows(z).transpose(1, 2)

    def fused_jacobian_rows(self, z: Tensor) -> Tensor:
        """Transposed Jacobians J_g^T (n, d, 2D), contiguous, of g = [mean; std] at z (n, d) in one fused
        first-order pass (d + 1 row blocks per network).

        The optional decoder method lsg_graph.geodesics.gn uses without autograd; a point where a value is not
        finite gets a NaN Jacobian.
        """
        n, d = z.shape
        out = z.new_empty(n, d, 2 * self.output_dim)
        for part, columns in ((self.mean, slice(0, self.output_dim)), (self.std, slice(self.output_dim, None))):
            jacobian = getattr(part, "jacobian", None)
            blocks = jacobian(z) if jacobian is not None else part.first_order(forward_mode.jacobian_blocks(z))
            out[:, :, columns] = blocks[1:].transpose(0, 1)
            bad = ~torch.isfinite(blocks[0]).all(dim=-1)
            if bool(bad.any()):
                out[bad] = torch.nan
        return out

    def fused_geodesic_terms(self, z: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Jacobian J_g (n, 2D, d) and h = d^2/ds^2 g(z + s v) (n, 2D) of g = [mean; std] in one fused pass.

        The optional decoder method PullbackMetric.geodesic_acceleration uses without autograd; values that are not
        finite make both NaN.
        """
        blocks, along = forward_mode.input_blocks(z, v)
        out = torch.cat([self.mean.second_order(blocks, along), self.std.second_order(blocks, along)], dim=-1)
        guard = 0.0 * out[0].sum(dim=-1, keepdim=True)
        return out[1:along].permute(1, 2, 0) + guard.unsqueeze(-1), out[-1] + guard
