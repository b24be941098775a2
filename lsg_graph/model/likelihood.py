"""The Gaussian likelihood pieces shared by training and evaluation: log-densities, KL, noise and batches."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from lsg_graph.model.vae import VAE

_LOG_2PI = math.log(2.0 * math.pi)


def _gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """log N(x | mean, diag(std^2)) summed over the last dim, in nats, shape (...)."""
    return (-0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * _LOG_2PI).sum(-1)


def _kl_per_unit(mean: Tensor, std: Tensor) -> Tensor:
    """KL(N(mean_j, std_j^2) || N(0, 1)) of each latent unit, in nats, shape (..., d)."""
    return 0.5 * (mean**2 + std**2 - 1.0 - 2.0 * torch.log(std))


def _kl_to_prior(mean: Tensor, std: Tensor) -> Tensor:
    """KL(N(mean, diag(std^2)) || N(0, I)) summed over the last dim, in nats, shape (...)."""
    return _kl_per_unit(mean, std).sum(-1)


def _randn(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    """Standard normal noise of `shape` from `generator` (on CPU, for reproducibility), moved to `like`'s device."""
    return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)


def _negative_elbo(vae: VAE, x: Tensor, std_module: nn.Module, generator: torch.Generator) -> Tensor:
    """One-sample negative ELBO per row of x (n, D), in nats, shape (n,)."""
    mean_z, std_z = vae.encoder(x)
    z = mean_z + std_z * _randn(tuple(mean_z.shape), generator, mean_z)
    return _kl_to_prior(mean_z, std_z) - _gaussian_log_prob(x, vae.mean_decoder(z), std_module(z))


def _batches(n: int, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Tensor]:
    """Index batches over n rows, shuffled by `generator` when given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    yield from order.split(batch_size)
