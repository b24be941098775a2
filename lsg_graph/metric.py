"""The expected pullback metric M(z) = J_mu^T J_mu + J_sigma^T J_sigma of a (stochastic) decoder, by forward-mode AD.

Everything is batched over points and evaluated with `torch.func.jvp` on the decoder's *batch* function: a point
repeated d times with the identity as tangents gives every column J e_i in one call. This relies only on the
decoder contract (row-wise independence, forward-mode differentiability), not on `vmap`, so any decoder that
follows `lsg_graph.decoder` works. Autograd is left to the caller: every result is differentiable w.r.t. the inputs
(and the decoder's parameters); wrap calls in `torch.no_grad()` when no gradient is needed, to save time and memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lsg_graph._validation import check_float, check_positive_int
from lsg_graph.decoder import Decoder, as_decoder, can_infer_latent_dim, decoder_device_dtype
from lsg_graph.errors import DecoderError, InvalidInput, LsgGraphError


def _safe_sqrt(values: Tensor) -> Tensor:
    """Return sqrt(values) for values >= 0 with gradient 0 (not inf/NaN) where values == 0."""
    positive = values > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, values, torch.ones_like(values))), 0.0)


_TORCH_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # torch.OutOfMemoryError: torch >= 2.5


@contextlib.contextmanager
def _decoder_failures(what: str) -> Iterator[None]:
    """Re-raise an exception of the user's decoder while computing `what` as DecoderError (out-of-memory excepted)."""
    try:
        yield
    except (LsgGraphError, MemoryError, _TORCH_OOM):
        raise
    except Exception as exc:  # noqa: BLE001 - any other failure inside the decoder call is the decoder's
        raise DecoderError(
            f"The decoder raised {type(exc).__name__} while computing {what}: {exc}. Decoders must be batched, "
            "row-wise independent torch functions that forward-mode AD can differentiate (no .numpy() or .item() on "
            "z, no in-place changes of z; custom autograd Functions need a jvp)."
        ) from exc


class PullbackMetric:
    """Expected pullback metric of a decoder g(z) = [mu(z); sigma(z)]: M(z) = J_g(z)^T J_g(z), (d, d) per point.

    `chunk_size` bounds the number of rows passed to the decoder in one call (a metric tensor of n points in d
    dimensions costs n * d rows); memory grows with chunk_size * (2 * output_dim). Inputs (numpy arrays or tensors)
    are cast to the decoder's device and dtype (float32 and float64 both work); a decoder without parameters (and
    no `device`/`dtype` attributes) computes in the input's own device and floating dtype.

    Parameters
    ----------
    decoder : Decoder or torch module or callable
        Anything `lsg_graph.decoder.as_decoder` accepts: z (n, d) -> mean (n, D) or (mean, std).
    chunk_size : int, default 65536
        Rows passed to the decoder in one call.
    latent_dim : int, optional
        d, when the decoder does not say; otherwise taken from the first points the metric sees.
    """

    def __init__(self, decoder: Decoder | Any, chunk_size: int = 65536, latent_dim: int | None = None) -> None:
        """Wrap `decoder` (anything `as_decoder` accepts) and check it once on a few probe points.

        `latent_dim` is the number of columns d of the latent codes. When it is None and the decoder does not say
        (a `latent_dim` attribute, or a first `nn.Linear`), d is taken from the first points the metric sees
        (`bind_latent_dim`, which `build_latent_graph` and the estimators call with their codes), and the decoder is
        wrapped and probed then.
        """
        self.chunk_size = check_positive_int(chunk_size, "chunk_size")
        if latent_dim is not None:
            latent_dim = check_positive_int(latent_dim, "latent_dim")
        self._pending: Any = None
        if latent_dim is None and not can_infer_latent_dim(decoder):
            if not callable(decoder):
                as_decoder(decoder)  # raises the error for a non-callable
            self._pending = decoder  # wrapped and probed by bind_latent_dim once d is known
        else:
            self.decoder = as_decoder(decoder, latent_dim)

    def __getattr__(self, name: str) -> Any:
        """`decoder` of a metric whose latent dimension is not known yet: a clear error (AttributeError otherwise)."""
        if name == "decoder" and self.__dict__.get("_pending") is not None:
            raise InvalidInput(
                f"The latent dimension of the decoder {type(self._pending).__name__} is not known yet; pass "
                "PullbackMetric(decoder, latent_dim=d) or call the metric on codes (n, d) first."
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def latent_dim_known(self) -> bool:
        """False until the latent dimension is known (given, inferred from the decoder, or bound from data)."""
        return self.__dict__.get("_pending") is None

    def bind_latent_dim(self, latent_dim: int) -> PullbackMetric:
        """Fix the latent dimension d of a metric created without one (wrap and probe the decoder); return self.

        A metric whose dimension is already known is returned unchanged; `latent_dim` is not checked against it
        here (the methods and `check_codes` report a mismatch with the offending array's shape).

        Parameters
        ----------
        latent_dim : int
            Latent dimension d >= 1.

        Returns
        -------
        PullbackMetric
            self.
        """
        if self._pending is not None:
            self.decoder = as_decoder(self._pending, check_positive_int(latent_dim, "latent_dim"))
            self._pending = None
        return self

    @property
    def latent_dim(self) -> int:
        """Latent dimension d."""
        return self.decoder.latent_dim

    @property
    def output_dim(self) -> int:
        """Output dimension D of the decoder's mean (the stacked embedding has 2D or D columns)."""
        return self.decoder.output_dim

    @property
    def device(self) -> torch.device | None:
        """Device of the decoder, or None when it follows the inputs."""
        return decoder_device_dtype(self.decoder)[0]

    @property
    def dtype(self) -> torch.dtype | None:
        """Floating dtype of the decoder, or None when it follows the inputs."""
        return decoder_device_dtype(self.decoder)[1]

    def __repr__(self) -> str:
        """Short description."""
        if self._pending is not None:
            return f"PullbackMetric(latent_dim=None, chunk_size={self.chunk_size})"
        return (
            f"PullbackMetric(latent_dim={self.latent_dim}, output_dim={self.output_dim}, chunk_size={self.chunk_size})"
        )

    # ----------------------------------------------------------------------------------------------- inputs, decoder

    def _tensor(
        self, values: Any, name: str, min_ndim: int = 2, ndim: int | None = None, like: Tensor | None = None
    ) -> Tensor:
        """Return `values` on the decoder's (else `like`'s, else its own) device and dtype, last axis latent_dim."""
        if not isinstance(values, Tensor):
            try:
                values = torch.as_tensor(np.asarray(values))
            except Exception as exc:  # noqa: BLE001 - any conversion failure is the user's input
                raise InvalidInput(f"{name} could not be read as an array: {exc}") from exc
        if values.is_complex() or values.dtype == torch.bool:
            raise InvalidInput(f"{name} must hold real numbers; got dtype {values.dtype}.")
        if self._pending is not None and values.ndim >= min_ndim:
            self.bind_latent_dim(values.shape[-1])
        device, dtype = self.device, self.dtype
        if like is not None:
            device, dtype = device or like.device, dtype or like.dtype
        dtype = dtype or (values.dtype if values.is_floating_point() else torch.get_default_dtype())
        values = values.to(device=device or values.device, dtype=dtype)
        shape = tuple(values.shape)
        if values.ndim < min_ndim or (ndim is not None and values.ndim != ndim) or shape[-1] != self.latent_dim:
            wanted = "(n, d)" if ndim == 2 else "(..., n_points, d)"
            raise InvalidInput(f"{name} must have shape {wanted} with d = latent_dim = {self.latent_dim}; got {shape}.")
        return values

    def _pair(self, z: Any, v: Any, v_name: str = "v") -> tuple[Tensor, Tensor]:
        """Return points z (n, d) and directions v (n, d) as tensors of matching shape."""
        z = self._tensor(z, "z", ndim=2)
        v = self._tensor(v, v_name, ndim=2, like=z)
        if v.shape != z.shape:
            raise InvalidInput(f"{v_name} must have the same shape as z {tuple(z.shape)}; got {tuple(v.shape)}.")
        return z, v

    def _g(self, z: Tensor) -> Tensor:
        """Stacked decoder output cat(mean, std) (n, 2D), or the mean (n, D) for a deterministic decoder."""
        mean, std = self.decoder(z)
        expected = (z.shape[0], self.output_dim)
        if tuple(mean.shape) != expected or (std is not None and tuple(std.shape) != expected):
            got = tuple(mean.shape) if std is None else f"mean {tuple(mean.shape)}, std {tuple(std.shape)}"
            raise DecoderError(f"The decoder returned {got} for z of shape {tuple(z.shape)}; expected {expected}.")
        return mean if std is None else torch.cat([mean, std], dim=1)

    def _check_finite(self, result: Tensor, inputs: tuple[Tensor, ...], what: str) -> Tensor:
        """Return `result` if finite; else raise InvalidInput (non-finite inputs) or DecoderError (decoder)."""
        if bool(torch.isfinite(result).all()):
            return result
        for tensor in inputs:
            if not bool(torch.isfinite(tensor).all()):
                raise InvalidInput(f"The input to {what} contains NaN or inf values.")
        rows = (~torch.isfinite(result.reshape(result.shape[0], -1))).any(dim=1)
        raise DecoderError(
            f"The decoder produced non-finite values or derivatives while computing {what}: {int(rows.sum())} of "
            f"{result.shape[0]} row(s) (first: {rows.nonzero()[:5, 0].tolist()}); expected all finite."
        )

    def _chunks(self, n: int, rows_per_point: int) -> Iterator[slice]:
        """Yield slices of points so that one decoder call sees at most chunk_size rows (at least one point)."""
        step = max(1, self.chunk_size // rows_per_point)
        for start in range(0, n, step):
            yield slice(start, min(n, start + step))

    def _map_chunks(self, fn: Callable[..., Tensor], tensors: tuple[Tensor, ...], rows_per_point: int) -> Tensor:
        """Apply `fn` to row chunks of `tensors` (all with n rows) and concatenate the results along rows."""
        n = tensors[0].shape[0]
        if n == 0:
            return fn(*tensors)
        return torch.cat([fn(*(t[part] for t in tensors)) for part in self._chunks(n, rows_per_point)], dim=0)

    # ----------------------------------------------------------------------------------------------- derivatives

    def _fused(self) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor | None, Tensor, Tensor | None]] | None:
        """The decoder's own fused forward-mode pass (see lsg_graph.decoder), when it has one and autograd is off."""
        if torch.is_grad_enabled():
            return None
        return getattr(self.decoder, "fused_jvp", None)

    def _jvp(self, z: Tensor, v: Tensor) -> Tensor:
        """Directional derivatives J_g(z_i) v_i (n, P) of the stacked decoder, one batched forward-mode pass.

        Rows where the decoder's value g(z_i) is not finite come back NaN (a derivative can be finite where the
        value is not), so one finiteness check on the reduced result catches both.
        """
        if z.shape[0] == 0:
            return z.new_zeros(0, self._n_outputs(z))
        fused = self._fused()
        if fused is not None:
            with _decoder_failures("forward-mode derivatives (the decoder's fused_jvp)"):
                mean, std, d_mean, d_std = fused(z, v)
            if std is None or d_std is None:
                return d_mean + 0.0 * mean.sum(dim=1, keepdim=True)
            return torch.cat([d_mean, d_std], dim=1) + 0.0 * (mean.sum(dim=1, keepdim=True) + std.sum(dim=1, keepdim=True))
        with _decoder_failures("forward-mode derivatives (torch.func.jvp)"):
            value, derivative = torch.func.jvp(self._g, (z,), (v,))
        return derivative + 0.0 * value.detach()

    def _squared_speeds(self, z: Tensor, v: Tensor) -> Tensor:
        """||J_g(z_i) v_i||^2 (n,); with a fused decoder pass, without stacking mean and std derivatives."""
        fused = self._fused()
        if fused is None or z.shape[0] == 0:
            return self._jvp(z, v).square().sum(dim=1)
        with _decoder_failures("forward-mode derivatives (the decoder's fused_jvp)"):
            mean, std, d_mean, d_std = fused(z, v)
        squared = d_mean.square().sum(dim=1) + 0.0 * mean.sum(dim=1)
        if std is not None and d_std is not None:
            squared = squared + d_std.square().sum(dim=1) + 0.0 * std.sum(dim=1)
        return squared

    def _n_outputs(self, like: Tensor) -> int:
        """Columns P of the stacked output (2D, or D when the decoder is deterministic), from a one-row call."""
        with torch.no_grad():
            return self._g(like.new_zeros(1, self.latent_dim)).shape[1]

    def _jacobian(self, z: Tensor) -> Tensor:
        """Jacobians J_g(z) (n, P, d): z repeated d times, identity tangents, one batched jvp."""
        n, d = z.shape
        repeated = z.repeat(d, 1)
        tangents = torch.eye(d, device=z.device, dtype=z.dtype).repeat_interleave(n, dim=0)
        columns = self._jvp(repeated, tangents)
        return columns.reshape(d, n, columns.shape[1]).permute(1, 2, 0)

    def _second_derivative(self, z: Tensor, v: Tensor) -> Tensor:
        """h_i = d^2/ds^2 g(z_i + s v_i) at s = 0 (n, P): a jvp of a jvp."""
        if z.shape[0] == 0:
            return z.new_zeros(0, self._n_outputs(z))

        def directional(x: Tensor) -> Tensor:
            return torch.func.jvp(self._g, (x,), (v,))[1]

        with _decoder_failures("second directional derivatives (a jvp of a jvp)"):
            return torch.func.jvp(directional, (z,), (v,))[1]

    # ----------------------------------------------------------------------------------------------- public API

    def stacked(self, z: Any) -> Tensor:
        """Return g(z) = cat(mean, std) (n, 2D), or the mean (n, D) for a deterministic decoder.

        Parameters
        ----------
        z : array-like or Tensor (n, d)
            Latent points.

        Returns
        -------
        Tensor (n, 2D) or (n, D)
            The stacked decoder output in the decoder's dtype and device.
        """
        z = self._tensor(z, "z", ndim=2)
        with _decoder_failures("its output"):
            stacked = self._map_chunks(self._g, (z,), 1)
        return self._check_finite(stacked, (z,), "the decoder output")

    def chord(self, a: Any, b: Any) -> Tensor:
        """Output-space chords ||g(a_i) - g(b_i)|| (n,) with g = [mu; sigma]: lower bounds on geodesic distances.

        Any curve from a to b decodes to a curve from g(a) to g(b) whose Euclidean length is its metric length, so
        no latent curve (hence no geodesic) is shorter than the straight line between the images.

        Parameters
        ----------
        a, b : array-like (n, d)
            End points in latent coordinates.

        Returns
        -------
        Tensor (n,)
            Chord lengths in output (data) units, on the decoder's device and dtype.
        """
        a, b = self._pair(a, b, "b")
        both = self.stacked(torch.cat([a, b]))
        return torch.linalg.vector_norm(both[: a.shape[0]] - both[a.shape[0] :], dim=1)

    def metric_tensor(self, z: Any) -> Tensor:
        """Return the exact metric tensors M(z_i) = J^T J (n, d, d), by forward-mode AD (no finite differences).

        Parameters
        ----------
        z : array-like or Tensor (n, d)
            Latent points.

        Returns
        -------
        Tensor (n, d, d)
            Symmetric positive semi-definite metric tensors.
        """
        z = self._tensor(z, "z", ndim=2)

        def chunk(points: Tensor) -> Tensor:
            jacobian = self._jacobian(points)
            metric = jacobian.transpose(1, 2) @ jacobian
            return 0.5 * (metric + metric.transpose(1, 2))

        return self._check_finite(self._map_chunks(chunk, (z,), self.latent_dim), (z,), "the metric tensor")

    def inner(self, z: Any, v: Any) -> Tensor:
        """Return v_i^T M(z_i) v_i = ||J_mu v||^2 + ||J_sigma v||^2 (n,), one batched jvp, M never built.

        Parameters
        ----------
        z : array-like or Tensor (n, d)
            Latent points.
        v : array-like or Tensor (n, d)
            Tangent vectors, one per point.

        Returns
        -------
        Tensor (n,)
            Squared metric norms of the tangent vectors.
        """
        z, v = self._pair(z, v)
        return self._inner(z, v)

    def _inner(self, z: Tensor, v: Tensor) -> Tensor:
        """Squared metric norms (n,) of tensors already on the decoder's device and dtype."""
        squared = self._map_chunks(self._squared_speeds, (z, v), 1)
        return self._check_finite(squared, (z, v), "metric inner products")

    def norm(self, z: Any, v: Any) -> Tensor:
        """Return the metric norms ||v_i||_{M(z_i)} = sqrt(v^T M v) (n,).

        Parameters
        ----------
        z : array-like or Tensor (n, d)
            Latent points.
        v : array-like or Tensor (n, d)
            Tangent vectors, one per point.

        Returns
        -------
        Tensor (n,)
            Metric norms (decoder output units per latent unit).
        """
        return _safe_sqrt(self.inner(z, v))

    def log_magnification(self, z: Any) -> Tensor:
        """Return log sqrt(det M(z)) (n,), from the QR factor of J (stable); -inf where M is singular (never NaN).

        Singular means an exactly zero diagonal entry of R in J = QR, or fewer output columns than latent
        dimensions (P < d, where det M = 0 always). Nearly singular M gives a large negative, finite value.

        Parameters
        ----------
        z : array-like or Tensor (n, d)
            Latent points.

        Returns
        -------
        Tensor (n,)
            log sqrt(det M); -inf where M is singular.
        """
        z = self._tensor(z, "z", ndim=2)
        return self._map_chunks(self._log_magnification_chunk, (z,), self.latent_dim)

    def _log_magnification_chunk(self, z: Tensor) -> Tensor:
        """log sqrt(det J^T J) = sum_i log |R_ii| for one chunk of points (n,)."""
        jacobian = self._check_finite(self._jacobian(z), (z,), "the Jacobian")
        if jacobian.shape[1] < jacobian.shape[2]:
            return torch.full((z.shape[0],), -torch.inf, device=z.device, dtype=z.dtype)
        _, upper = torch.linalg.qr(jacobian, mode="reduced")
        return torch.log(torch.diagonal(upper, dim1=-2, dim2=-1).abs()).sum(dim=-1)

    def magnification(self, z: Any) -> Tensor:
        """Return the magnification factor sqrt(det M(z)) (n,); 0 where M is singular.

        Parameters
        ----------
        z : array-like or Tensor (n, d)
            Latent points.

        Returns
        -------
        Tensor (n,)
            sqrt(det M) >= 0.
        """
        return torch.exp(self.log_magnification(z))

    def _segments(self, curve: Any) -> tuple[Tensor, int]:
        """Squared metric norms of the segments of discretised curves (..., n_points - 1), and n_points."""
        curve = self._tensor(curve, "curve", min_ndim=2)
        n_points = curve.shape[-2]
        if n_points < 2:
            raise InvalidInput(f"A curve needs at least 2 points; got shape {tuple(curve.shape)} (..., n_points, d).")
        delta = curve[..., 1:, :] - curve[..., :-1, :]
        midpoint = 0.5 * (curve[..., 1:, :] + curve[..., :-1, :])
        squared = self._inner(midpoint.reshape(-1, self.latent_dim), delta.reshape(-1, self.latent_dim))
        return squared.reshape(delta.shape[:-1]), n_points

    def curve_length(self, curve: Any) -> Tensor:
        """Return the metric length (...) of piecewise-linear curves (..., n_points, d).

        Discretisation: sum over segments of ||c_{k+1} - c_k||_{M(m_k)} with the metric at the midpoint
        m_k = (c_k + c_{k+1}) / 2 (midpoint rule per segment; error O(h^2) as the points are refined).
        Differentiable w.r.t. the points (zero-length segments contribute 0 with zero gradient).

        Parameters
        ----------
        curve : array-like or Tensor (..., n_points, d)
            Curve points, n_points >= 2.

        Returns
        -------
        Tensor (...)
            Metric lengths.
        """
        squared, _ = self._segments(curve)
        return _safe_sqrt(squared).sum(dim=-1)

    def curve_energy(self, curve: Any) -> Tensor:
        """Return the energy (...) int_0^1 ||c'(t)||^2_M dt = (n_points - 1) * sum_k ||delta_k||^2_{M(m_k)}.

        Same discretisation as `curve_length` with the curve parametrised uniformly on [0, 1]; by Cauchy-Schwarz
        energy >= length^2 with equality for constant-speed curves. Differentiable w.r.t. the points.

        Parameters
        ----------
        curve : array-like or Tensor (..., n_points, d)
            Curve points, n_points >= 2.

        Returns
        -------
        Tensor (...)
            Energies.
        """
        squared, n_points = self._segments(curve)
        return squared.sum(dim=-1) * (n_points - 1)

    def geodesic_acceleration(self, z: Any, velocity: Any, ridge: float = 1e-8) -> Tensor:
        """Return gamma'' (n, d) of the geodesic through z with velocity gamma' (latent units per unit time).

        gamma'' = -(J^T J + ridge * s * I)^(-1) J^T h with h = d^2/ds^2 g(z + s v) at s = 0 (a jvp of a jvp),
        J = J_g(z), and s = trace(M) / d (1 where M = 0) so that `ridge` is relative. Where the regularised
        system is still singular (ridge = 0) the minimum-norm solution (pseudo-inverse) is returned.

        Parameters
        ----------
        z : array-like or Tensor (n, d)
            Latent points.
        velocity : array-like or Tensor (n, d)
            Velocities at the points.
        ridge : float, default 1e-8
            Relative ridge >= 0 added to M.

        Returns
        -------
        Tensor (n, d)
            Accelerations of the geodesics.
        """
        z, velocity = self._pair(z, velocity, "velocity")
        ridge = check_float(ridge, "ridge", minimum=0.0)

        def chunk(points: Tensor, velocities: Tensor) -> Tensor:
            return self._acceleration_chunk(points, velocities, ridge)

        acceleration = self._map_chunks(chunk, (z, velocity), self.latent_dim)
        return self._check_finite(acceleration, (z, velocity), "the geodesic acceleration")

    def _acceleration_chunk(self, z: Tensor, velocity: Tensor, ridge: float) -> Tensor:
        """Geodesic acceleration for one chunk of points (n, d)."""
        fused = None if torch.is_grad_enabled() else getattr(self.decoder, "fused_geodesic_terms", None)
        if fused is not None and z.shape[0] > 0:
            with _decoder_failures("the Jacobian and second derivatives (the decoder's fused_geodesic_terms)"):
                jacobian, second = fused(z, velocity)
        else:
            jacobian = self._jacobian(z)
            second = self._second_derivative(z, velocity)
        metric = jacobian.transpose(1, 2) @ jacobian
        rhs = -(jacobian.transpose(1, 2) @ second.unsqueeze(-1))
        scale = torch.diagonal(metric, dim1=-2, dim2=-1).mean(dim=-1)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        identity = torch.eye(self.latent_dim, device=z.device, dtype=z.dtype)
        system = metric + (ridge * scale)[:, None, None] * identity
        solution, info = torch.linalg.solve_ex(system, rhs)
        singular = info != 0
        if bool(singular.any()):
            solution = solution.clone()
            solution[singular] = torch.linalg.pinv(system[singular], hermitian=True) @ rhs[singular]
        return solution.squeeze(-1)


def as_metric(metric: Any, points: Any = None) -> PullbackMetric:
    """The one coercion to a metric: `metric` itself when it is a PullbackMetric, else a PullbackMetric wrapping it.

    Parameters
    ----------
    metric : PullbackMetric or decoder
        A metric, or anything `lsg_graph.decoder.as_decoder` accepts (a torch module or callable z -> mean or
        (mean, std)).
    points : array-like (n, d), optional
        Latent points the metric will see. When the metric's latent dimension is not known yet it is taken from
        their last axis, on a new PullbackMetric: the argument is never changed.

    Returns
    -------
    PullbackMetric
    """
    metric = metric if isinstance(metric, PullbackMetric) else PullbackMetric(metric)
    if not metric.latent_dim_known and points is not None:
        shape = np.shape(points)
        if len(shape) >= 2:
            metric = PullbackMetric(metric._pending, metric.chunk_size, latent_dim=int(shape[-1]))
    return metric
