"""Fused forward-mode passes through torch layers: values and tangents stacked in one (2n, ...) tensor.

`torch.func.jvp` runs every layer twice (value, then tangent) through its generic dual-number machinery. For the
layers of the built-in networks the tangent of a linear layer is the same matrix product without the bias, so one
product over the stacked rows [values; tangents] gives both, and each activation scales the tangent rows by its
derivative in place. It is faster than `torch.func.jvp` on the CPU (docs/measurements.md, measured by
benchmarks/edge_weights.py). In-place updates make it unfit for autograd: callers use it under `torch.no_grad()`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

StackedRule = Callable[[nn.Module, Tensor, int], Tensor]


def _linear(layer: nn.Module, stacked: Tensor, n: int) -> Tensor:
    """x W^T for all rows, + bias on the value rows."""
    out = stacked @ layer.weight.transpose(0, 1)
    if layer.bias is not None:
        out[:n] += layer.bias
    return out


def _conv(layer: nn.Module, stacked: Tensor, n: int) -> Tensor:
    """The layer's convolution without bias for all rows, + bias (per channel) on the value rows."""
    if isinstance(layer, nn.ConvTranspose2d):
        out = F.conv_transpose2d(
            stacked, layer.weight, None, layer.stride, layer.padding, layer.output_padding, layer.groups,
            layer.dilation,
        )
    else:
        out = F.conv2d(stacked, layer.weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    if layer.bias is not None:
        out[:n] += layer.bias[:, None, None]
    return out


def _reshape(layer: nn.Module, stacked: Tensor, n: int) -> Tensor:
    """Flatten/Unflatten act on each row alike."""
    return layer(stacked)


def _tanh(layer: nn.Module, stacked: Tensor, n: int) -> Tensor:
    """y = tanh(x); tangent * (1 - y^2)."""
    value = stacked[:n].tanh_()
    stacked[n:].mul_(1.0 - value * value)
    return stacked


def _sigmoid(layer: nn.Module, stacked: Tensor, n: int) -> Tensor:
    """y = sigmoid(x); tangent * y (1 - y)."""
    value = stacked[:n].sigmoid_()
    stacked[n:].mul_(value * (1.0 - value))
    return stacked


def _elu(layer: nn.Module, stacked: Tensor, n: int) -> Tensor:
    """y = elu(x); tangent * (1 where x > 0, else y + alpha)."""
    positive = stacked[:n] > 0
    value = F.elu(stacked[:n], layer.alpha)
    stacked[n:].mul_(torch.where(positive, torch.ones_like(value), value + layer.alpha))
    stacked[:n] = value
    return stacked


def _softplus(layer: nn.Module, stacked: Tensor, n: int) -> Tensor:
    """y = softplus(x); tangent * sigmoid(beta x) (1 above the linear threshold, as torch does)."""
    stacked[:n], _ = softplus_jvp(stacked[:n], stacked[n:], layer.beta, layer.threshold)
    return stacked


def _relu(layer: nn.Module, stacked: Tensor, n: int) -> Tensor:
    """y = max(x, 0); tangent * (x > 0)."""
    stacked[n:].mul_(stacked[:n] > 0)
    stacked[:n].clamp_min_(0)
    return stacked


def _identity(layer: nn.Module, stacked: Tensor, n: int) -> Tensor:
    """Nothing to do."""
    return stacked


RULES: dict[type[nn.Module], StackedRule] = {
    nn.Linear: _linear,
    nn.Conv2d: _conv,
    nn.ConvTranspose2d: _conv,
    nn.Flatten: _reshape,
    nn.Unflatten: _reshape,
    nn.Tanh: _tanh,
    nn.Sigmoid: _sigmoid,
    nn.ELU: _elu,
    nn.Softplus: _softplus,
    nn.ReLU: _relu,
    nn.Identity: _identity,
}


def supports(module: nn.Module) -> bool:
    """Whether `module` is a supported layer, or an nn.Sequential of them (nested)."""
    if type(module) is nn.Sequential:
        return all(supports(layer) for layer in module)
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and (
        module.padding_mode != "zeros" or isinstance(module.padding, str)
    ):
        return False
    return type(module) in RULES


def stacked_forward(module: nn.Module, stacked: Tensor, n: int) -> Tensor:
    """Push [values; tangents] (2n, ...) through `module`: values as it computes them, tangents by its derivative.

    May modify `stacked` in place; run under torch.no_grad(). Raises TypeError for an unsupported layer.
    """
    if type(module) is nn.Sequential:
        for layer in module:
            stacked = stacked_forward(layer, stacked, n)
        return stacked
    rule = RULES.get(type(module))
    if rule is None:
        raise TypeError(f"No fused forward-mode rule for {type(module).__name__}.")
    return rule(module, stacked, n)


def module_jvp(module: nn.Module, z: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Value module(z) and directional derivative J(z) v, each (n, ...), for a supported module; inputs untouched."""
    n = z.shape[0]
    out = stacked_forward(module, torch.cat([z, v]), n)
    return out[:n], out[n:]


def sigmoid_jvp(value: Tensor, tangent: Tensor) -> tuple[Tensor, Tensor]:
    """sigmoid applied to (value, tangent) pairs, in place."""
    value = value.sigmoid_()
    return value, tangent.mul_(value * (1.0 - value))


def softplus_jvp(value: Tensor, tangent: Tensor, beta: float = 1.0, threshold: float = 20.0) -> tuple[Tensor, Tensor]:
    """softplus applied to (value, tangent) pairs (tangent in place), with torch's linear regime above threshold."""
    scaled = value * beta
    slope = torch.where(scaled > threshold, torch.ones_like(scaled), torch.sigmoid(scaled))
    return F.softplus(value, beta, threshold), tangent.mul_(slope)


# ------------------------------------------------------------------------------------------------- second order
# Blocks of rows: [value; m first-order tangents; one second-order tangent]. The second-order block is the second
# directional derivative along the tangent of block `along` (1-based among the first-order blocks):
#   y = s(x),  y' = s'(x) x',  y'' = s'(x) x'' + s''(x) (x'_along)^2.


def _activation_derivatives(layer: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """An activation's value y, first s'(x) and second s''(x) derivatives at x (elementwise)."""
    if isinstance(layer, nn.Tanh):
        y = torch.tanh(x)
        slope = 1.0 - y * y
        return y, slope, -2.0 * y * slope
    if isinstance(layer, nn.Sigmoid):
        y = torch.sigmoid(x)
        slope = y * (1.0 - y)
        return y, slope, slope * (1.0 - 2.0 * y)
    if isinstance(layer, nn.ELU):
        y = F.elu(x, layer.alpha)
        negative = torch.where(x > 0, torch.zeros_like(y), y + layer.alpha)
        return y, torch.where(x > 0, torch.ones_like(y), negative), negative
    if isinstance(layer, nn.Softplus):
        scaled = x * layer.beta
        linear = scaled > layer.threshold
        gate = torch.sigmoid(scaled)
        slope = torch.where(linear, torch.ones_like(x), gate)
        curvature = torch.where(linear, torch.zeros_like(x), layer.beta * gate * (1.0 - gate))
        return F.softplus(x, layer.beta, layer.threshold), slope, curvature
    if isinstance(layer, nn.ReLU):
        return x.clamp_min(0), (x > 0).to(x.dtype), torch.zeros_like(x)
    raise TypeError(f"No fused second-order rule for {type(layer).__name__}.")


def second_order_forward(module: nn.Module, blocks: Tensor, along: int) -> Tensor:
    """Push blocks (B, n, ...) = [values; first-order tangents; second-order tangent] through `module`."""
    if type(module) is nn.Sequential:
        for layer in module:
            blocks = second_order_forward(layer, blocks, along)
        return blocks
    count, n = blocks.shape[:2]
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Flatten, nn.Unflatten, nn.Identity)):
        rows = blocks.reshape(count * n, *blocks.shape[2:])
        out = stacked_forward(module, rows, n)  # linear: bias on the value block only
        return out.reshape(count, n, *out.shape[1:])
    value, slope, curvature = _activation_derivatives(module, blocks[0])
    first = blocks[1:-1] * slope
    second = blocks[-1] * slope + curvature * blocks[along].square()
    return torch.cat([value.unsqueeze(0), first, second.unsqueeze(0)])


def first_order_forward(module: nn.Module, blocks: Tensor) -> Tensor:
    """Push blocks (B, n, ...) = [values; B - 1 tangents] through `module`: values and Jacobian-tangent products.

    The first-order part of `second_order_forward` without its second-order block: all Jacobian columns of a
    module at once when the tangents are the unit vectors (`jacobian_blocks`). Activations update `blocks` in place.
    """
    if type(module) is nn.Sequential:
        for layer in module:
            blocks = first_order_forward(layer, blocks)
        return blocks
    count, n = blocks.shape[:2]
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Flatten, nn.Unflatten, nn.Identity)):
        rows = blocks.reshape(count * n, *blocks.shape[2:])
        out = stacked_forward(module, rows, n)  # linear: bias on the value block only
        return out.reshape(count, n, *out.shape[1:])
    value, slope = _activation_slope(module, blocks[0])
    blocks[1:].mul_(slope)  # in place: blocks come fresh from a linear layer or jacobian_blocks
    blocks[0] = value
    return blocks


def _activation_slope(layer: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """An activation's value y and first derivative s'(x) at x (elementwise)."""
    if isinstance(layer, nn.Tanh):
        y = torch.tanh(x)
        return y, 1.0 - y * y
    if isinstance(layer, nn.Sigmoid):
        y = torch.sigmoid(x)
        return y, y * (1.0 - y)
    if isinstance(layer, nn.ELU):
        y = F.elu(x, layer.alpha)
        return y, torch.where(x > 0, torch.ones_like(y), y + layer.alpha)
    if isinstance(layer, nn.Softplus):
        scaled = x * layer.beta
        slope = torch.where(scaled > layer.threshold, torch.ones_like(x), torch.sigmoid(scaled))
        return F.softplus(x, layer.beta, layer.threshold), slope
    if isinstance(layer, nn.ReLU):
        return x.clamp_min(0), (x > 0).to(x.dtype)
    raise TypeError(f"No fused first-order rule for {type(layer).__name__}.")


def jacobian_blocks(z: Tensor) -> Tensor:
    """Blocks (d + 1, n, d) for inputs z (n, d): [z; e_1 .. e_d], the input of `first_order_forward` for Jacobians."""
    n, d = z.shape
    identity = torch.eye(d, dtype=z.dtype, device=z.device).unsqueeze(1).expand(d, n, d)
    return torch.cat([z.unsqueeze(0), identity])


def input_blocks(z: Tensor, v: Tensor) -> tuple[Tensor, int]:
    """Blocks (d + 3, n, d) for inputs z, v (n, d): [z; e_1 .. e_d; v; 0], and the index of the v block."""
    return torch.cat([jacobian_blocks(z), v.unsqueeze(0), torch.zeros_like(z).unsqueeze(0)]), z.shape[1] + 1


def module_second_order(module: nn.Module, z: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Value (n, P), Jacobian columns J e_i (d, n, P) and h = d^2/ds^2 module(z + s v) (n, P) in one pass."""
    blocks, along = input_blocks(z, v)
    out = second_order_forward(module, blocks, along)
    return out[0], out[1:along], out[-1]
