"""The decoder protocol: batched latent codes z (n, d) -> (mean (n, D), std (n, D) or None), and adapters to it.

Contract every decoder must keep (the metric relies on it, nothing checks it beyond a probe):

* Row-wise independence: row i of the outputs depends on row i of `z` only (no batch statistics: put
  modules with batch norm or dropout in eval mode). The metric evaluates many rows in one call.
* Differentiable with forward-mode AD: `torch.func.jvp` of the decoder, and a jvp of a jvp (second
  directional derivatives for the geodesic equation), must work. Custom `torch.autograd.Function`s need a `jvp`.
* No in-place operations on the input `z`, and no host synchronisation that depends on its values.
* `std` is the (positive) standard deviation of a diagonal Gaussian; return None for a deterministic decoder.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from lsg_graph._validation import check_positive_int
from lsg_graph.errors import DecoderError, InvalidInput, LsgGraphError

PROBE_ROWS = 3


@runtime_checkable
class Decoder(Protocol):
    """A batched decoder: z (n, latent_dim) -> (mean (n, output_dim), std (n, output_dim) or None).

    Optional: a method `fused_jvp(z, v)` returning (mean, std, J_mean v, J_std v) (std entries None for a
    deterministic decoder) in one pass. PullbackMetric uses it instead of `torch.func.jvp` when autograd is off
    (edge weighting); the built-in VAE decoder has one (lsg_graph.forward_mode).
    """

    latent_dim: int
    output_dim: int

    def __call__(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """Return the mean (n, D) and the std (n, D), or None for a deterministic decoder."""
        ...


def decoder_device_dtype(decoder: Any) -> tuple[torch.device | None, torch.dtype | None]:
    """Return the device and dtype a decoder computes in, or None for each it does not pin down."""
    device = getattr(decoder, "device", None)
    dtype = getattr(decoder, "dtype", None)
    if isinstance(decoder, torch.nn.Module) and (device is None or dtype is None):
        tensor = next(_floating_tensors(decoder), None)
        if tensor is not None:
            device = device if device is not None else tensor.device
            dtype = dtype if dtype is not None else tensor.dtype
    device = torch.device(device) if isinstance(device, (str, torch.device)) else None
    dtype = dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else None
    return device, dtype


def _floating_tensors(module: torch.nn.Module) -> Iterator[Tensor]:
    """Yield the floating-point parameters, then buffers, of a module."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.is_floating_point():
            yield tensor


def _split_output(output: Any) -> tuple[Tensor, Tensor | None]:
    """Return (mean, std) from a decoder output that is a tensor or a (mean, std) tuple/list."""
    if isinstance(output, Tensor):
        return output, None
    if isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[0], Tensor):
        if output[1] is None or isinstance(output[1], Tensor):
            return output[0], output[1]
    raise DecoderError(
        f"The decoder returned {_describe(output)}; expected a mean tensor (n, D) or a (mean, std) tuple of tensors."
    )


def _describe(value: Any) -> str:
    """Describe a decoder output briefly (type, shape, dtype) for error messages."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} item(s): " + ", ".join(_describe(item) for item in value)
    return f"a {type(value).__name__}"


def probe_points(latent_dim: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """Return PROBE_ROWS fixed, distinct latent points (PROBE_ROWS, latent_dim) in [-0.5, 0.5]."""
    index = torch.arange(PROBE_ROWS * latent_dim, dtype=torch.float64).reshape(PROBE_ROWS, latent_dim)
    points = 0.5 * torch.sin(1.0 + 1.7 * index)
    return points.to(device=device or torch.device("cpu"), dtype=dtype or torch.get_default_dtype())


class CallableDecoder(torch.nn.Module):
    """Adapt a torch callable returning a mean (n, D), or a (mean, std) tuple/list, to the Decoder protocol."""

    def __init__(
        self,
        fn: Callable[[Tensor], Any],
        latent_dim: int,
        output_dim: int | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Wrap `fn`; `output_dim` is probed once on PROBE_ROWS points when not given."""
        super().__init__()
        if not callable(fn):
            raise InvalidInput(f"The decoder must be callable; got {type(fn).__name__}.")
        if isinstance(fn, torch.nn.Module):
            self.module = fn
        else:
            self._fn = fn
            owner = getattr(fn, "__self__", None)
            if isinstance(owner, torch.nn.Module):  # a bound method such as vae.decode: follow and move its module
                self.owner = owner
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self._device = torch.device(device) if device is not None else None
        self._dtype = dtype
        if output_dim is None:
            mean = self._probe()
            output_dim = mean.shape[-1] if mean.ndim == 2 else -1
            if output_dim < 1:
                raise DecoderError(
                    f"The decoder returned a mean of shape {tuple(mean.shape)} for {PROBE_ROWS} points; "
                    f"expected ({PROBE_ROWS}, D) with D >= 1."
                )
        self.output_dim = check_positive_int(output_dim, "output_dim")

    def _probe(self) -> Tensor:
        """Evaluate the wrapped callable once on probe points; record its device and dtype; return the mean."""
        z = probe_points(self.latent_dim, self.device, self.dtype)
        mean, _ = _split_output(_call_on_probe(self.fn, z))
        if self._first_tensor() is None:
            self._device = self._device or mean.device
            self._dtype = self._dtype or (mean.dtype if mean.is_floating_point() else None)
        return mean

    @property
    def fn(self) -> Callable[[Tensor], Any]:
        """The wrapped callable."""
        return self.module if "module" in self._modules else self._fn

    def _first_tensor(self) -> Tensor | None:
        """First floating parameter/buffer of the wrapped module (or a bound method's module), else None."""
        return next(_floating_tensors(self), None)

    @property
    def device(self) -> torch.device | None:
        """Device of the wrapped module's parameters, else the given or probed device."""
        tensor = self._first_tensor()
        return tensor.device if tensor is not None else self._device

    @property
    def dtype(self) -> torch.dtype | None:
        """Floating dtype of the wrapped module's parameters, else the given or probed dtype."""
        tensor = self._first_tensor()
        return tensor.dtype if tensor is not None else self._dtype

    def to(self, *args: Any, **kwargs: Any) -> CallableDecoder:
        """Move/cast like nn.Module.to; also updates the recorded device/dtype of a parameter-free callable."""
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None:
            self._device = torch.device(device)
        if dtype is not None and dtype.is_floating_point:
            self._dtype = dtype
        return super().to(*args, **kwargs)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """Return (mean (n, D), std (n, D) or None) for latent codes z (n, d)."""
        return _split_output(self.fn(z))

    def extra_repr(self) -> str:
        """Short description for repr()."""
        return f"latent_dim={self.latent_dim}, output_dim={self.output_dim}"


def _zero_argument_callable(value: Any) -> bool:
    """True if `value` is callable with no arguments (every parameter has a default)."""
    if not callable(value) or isinstance(value, torch.nn.Module):
        return False
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):
        return False
    return all(
        parameter.default is not inspect.Parameter.empty
        or parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for parameter in signature.parameters.values()
    )


def _infer_latent_dim(obj: Any) -> int | None:
    """Return obj.latent_dim, or the input size of an nn.Linear / a Sequential starting with one, else None."""
    latent_dim = getattr(obj, "latent_dim", None)
    if latent_dim is not None:
        return latent_dim
    if isinstance(obj, torch.nn.Sequential) and len(obj) > 0:
        obj = obj[0]
    in_features = getattr(obj, "in_features", None)
    return in_features if isinstance(obj, torch.nn.Module) else None


def can_infer_latent_dim(obj: Any) -> bool:
    """True if `as_decoder(obj)` can find the latent dimension without being told (attribute or first nn.Linear)."""
    model_decoder = getattr(obj, "decoder", None)
    if model_decoder is not None and _zero_argument_callable(model_decoder):
        return True  # a model: as_decoder calls obj.decoder() and validates what it returns
    return _infer_latent_dim(obj) is not None


def _has_dims(obj: Any) -> bool:
    """True if obj carries integer latent_dim and output_dim attributes."""
    return all(isinstance(getattr(obj, name, None), int) for name in ("latent_dim", "output_dim"))


def check_decoder(decoder: Decoder) -> None:
    """Probe a decoder on PROBE_ROWS points; raise DecoderError unless it returns finite (n, D) outputs, std > 0."""
    device, dtype = decoder_device_dtype(decoder)
    z = probe_points(decoder.latent_dim, device, dtype)
    mean, std = _split_output(_call_on_probe(decoder, z))
    expected = f"({z.shape[0]}, {decoder.output_dim})"
    for name, tensor in (("mean", mean), ("std", std)):
        if tensor is None:
            continue
        if tuple(tensor.shape) != (z.shape[0], decoder.output_dim):
            raise DecoderError(
                f"The decoder returned a {name} of shape {tuple(tensor.shape)} (dtype {tensor.dtype}) "
                f"for {z.shape[0]} points of shape {tuple(z.shape)}; expected shape {expected}."
            )
        if not tensor.is_floating_point():
            raise DecoderError(f"The decoder returned a {name} of dtype {tensor.dtype}; expected a floating dtype.")
        n_bad = int((~torch.isfinite(tensor)).sum())
        if n_bad:
            raise DecoderError(
                f"The decoder returned {n_bad} non-finite value(s) in its {name} (shape {tuple(tensor.shape)}) "
                f"at the probe points; expected all finite."
            )
    if std is not None:
        n_bad = int((std <= 0).sum())
        if n_bad:
            raise DecoderError(
                f"The decoder returned {n_bad} std value(s) <= 0 (min {float(std.min()):.3g}); expected std > 0."
            )


def as_decoder(obj: Any, latent_dim: int | None = None, *, check: bool = True) -> Decoder:
    """Return `obj` as a Decoder: unchanged if it conforms, else wrapped in CallableDecoder.

    Parameters
    ----------
    obj : torch module, callable or model
        A decoder z (n, d) -> mean (n, D) or (mean, std); a model with a zero-argument ``decoder()`` method is
        replaced by what that returns.
    latent_dim : int, optional
        d, when the decoder does not say (a `latent_dim` attribute or a first nn.Linear).
    check : bool, default True
        Probe the decoder on a few points (shapes, finiteness, positive std, forward-mode AD).

    Returns
    -------
    Decoder
    """
    model_decoder = getattr(obj, "decoder", None)
    if model_decoder is not None and _zero_argument_callable(model_decoder):
        obj = model_decoder()
    if not callable(obj):
        raise InvalidInput(
            f"Expected a decoder (a callable z (n, d) -> mean or (mean, std)); got {type(obj).__name__}."
        )
    own_latent_dim = getattr(obj, "latent_dim", None)
    if latent_dim is not None:
        latent_dim = check_positive_int(latent_dim, "latent_dim")
        if isinstance(own_latent_dim, int) and own_latent_dim != latent_dim:
            raise InvalidInput(f"latent_dim={latent_dim} was given but the decoder has latent_dim={own_latent_dim}.")
    if _has_dims(obj) and _returns_tuple(obj):
        decoder = obj
    else:
        latent_dim = latent_dim if latent_dim is not None else _infer_latent_dim(obj)
        if latent_dim is None:
            raise InvalidInput(
                f"Cannot infer the latent dimension of {type(obj).__name__}; pass latent_dim=<int> "
                "(the number of columns of the latent codes z)."
            )
        output_dim = getattr(obj, "output_dim", None)
        decoder = CallableDecoder(obj, latent_dim, output_dim if isinstance(output_dim, int) else None)
    if check:
        check_decoder(decoder)
    return decoder


def _call_on_probe(decoder: Any, z: Tensor) -> Any:
    """Call a decoder on probe points without autograd; re-raise its failures as DecoderError."""
    try:
        with torch.no_grad():
            return decoder(z)
    except LsgGraphError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of user code on valid probe points is a decoder error
        raise DecoderError(
            f"The decoder raised {type(exc).__name__} on {z.shape[0]} probe points of shape {tuple(z.shape)} "
            f"(dtype {z.dtype}): {exc}. Check latent_dim and that it accepts a batch (n, d)."
        ) from exc


def _returns_tuple(obj: Any) -> bool:
    """True if obj, called on probe points, returns a (mean, std) tuple (std may be None)."""
    device, dtype = decoder_device_dtype(obj)
    output = _call_on_probe(obj, probe_points(obj.latent_dim, device, dtype))
    return isinstance(output, tuple) and len(output) == 2
