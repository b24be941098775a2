"""Evaluation of a trained VAE: codes, IWAE log-likelihoods and the paper's sigma-extrapolation claim.

The results are plain dataclasses; their presentation (tables) belongs to the CLI (cli/tables.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lsg_graph._threads import one_thread as _one_thread
from lsg_graph._validation import check_array, check_float, check_positive_int, check_seed
from lsg_graph.errors import InvalidInput
from lsg_graph.model.config import VARIANCES
from lsg_graph.model.likelihood import _LOG_2PI, _batches, _gaussian_log_prob, _randn
from lsg_graph.model.vae import VAE
from lsg_graph.registry import DEFAULT_IWAE_SAMPLES, DEFAULT_SEED, DEFAULT_VARIANCE

__all__ = [
    "PAPER_RATIO",
    "ExtrapolationReport",
    "PaperClaims",
    "encode_codes",
    "extrapolation_report",
    "iwae_log_likelihood",
    "paper_claims",
]

PAPER_RATIO = 10.0  # the paper's claim: the RBF decoder's sigma at 3R is at least 10x its sigma on the codes


def _check_model_data(vae: VAE, x: Any, name: str = "x") -> Tensor:
    """x as a finite (n, D) tensor in the model's dtype and device, else InvalidInput."""
    if not isinstance(vae, VAE):
        raise InvalidInput(f"vae must be a VAE; got {type(vae).__name__}.")
    array = check_array(x, name, ndim=2, dtype=np.float64, n_columns=vae.input_dim)
    like = vae._like()
    return torch.as_tensor(array, dtype=like.dtype, device=like.device)


@torch.no_grad()
def encode_codes(vae: VAE, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Posterior means of data x: the latent codes, batched, without gradients.

    Parameters
    ----------
    vae : VAE
        A trained model.
    x : array-like (n, D)
        Samples (cast batch by batch to the model's dtype and device).
    batch_size : int, default 1024
        Rows encoded at once.

    Returns
    -------
    ndarray (n, d) float32
        The codes; InvalidInput if the encoder gives NaN or inf for any row.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    if not isinstance(vae, VAE):
        raise InvalidInput(f"vae must be a VAE; got {type(vae).__name__}.")
    data = check_array(x, "x", ndim=2, dtype=None, n_columns=vae.input_dim)  # no copy: batches are cast one by one
    like = vae._like()
    codes = np.empty((data.shape[0], vae.latent_dim), dtype=np.float32)
    for begin in range(0, data.shape[0], batch_size):
        rows = torch.as_tensor(data[begin : begin + batch_size], dtype=like.dtype, device=like.device)
        codes[begin : begin + batch_size] = vae.encoder(rows)[0].cpu().numpy()
    bad = ~np.isfinite(codes).all(axis=1)
    if bad.any():
        raise InvalidInput(
            f"The encoder gave NaN or inf codes for {int(bad.sum())} of {len(codes)} rows (first "
            f"{np.flatnonzero(bad)[:5].tolist()}): the model diverged or x is far outside its training range."
        )
    return codes


@torch.no_grad()
@_one_thread()
def iwae_log_likelihood(
    vae: VAE,
    x: np.ndarray,
    variance: str = DEFAULT_VARIANCE,
    n_samples: int = DEFAULT_IWAE_SAMPLES,
    seed: int = DEFAULT_SEED,
    batch_size: int = 32,
) -> np.ndarray:
    """Importance-weighted lower bound (IWAE) on log p(x) per sample, in nats.

    Parameters
    ----------
    vae : VAE
        A trained model.
    x : array-like (n, D)
        Samples.
    variance : {"rbf", "standard"}, default "rbf"
        The decoder variance head (lsg_graph.registry.VARIANCES).
    n_samples : int, default 256
        Importance samples from q(z|x) per point.
    seed : int, default 0
        Seed of the sampling.
    batch_size : int, default 32
        Rows evaluated at once.

    Returns
    -------
    ndarray (n,) float64
    """
    n_samples = check_positive_int(n_samples, "n_samples")
    batch_size = check_positive_int(batch_size, "batch_size")
    generator = torch.Generator().manual_seed(check_seed(seed))
    data = _check_model_data(vae, x)
    std_module = vae._std_module(variance)
    bounds = []
    for index in _batches(data.shape[0], batch_size):
        x_batch = data[index]
        mean_z, std_z = vae.encoder(x_batch)
        eps = _randn((n_samples, *mean_z.shape), generator, mean_z)  # (S, B, d)
        z = mean_z + std_z * eps
        log_px = _gaussian_log_prob(x_batch, vae.mean_decoder(z), std_module(z))
        log_pz = (-0.5 * z**2 - 0.5 * _LOG_2PI).sum(-1)
        log_qz = (-0.5 * eps**2 - torch.log(std_z) - 0.5 * _LOG_2PI).sum(-1)
        bounds.append(torch.logsumexp(log_px + log_pz - log_qz, dim=0) - math.log(n_samples))
    return torch.cat(bounds).double().cpu().numpy()


@dataclass
class ExtrapolationReport:
    """Mean decoder sigma (over output dims and points, data units) on the codes and at factor * R from their mean."""

    factor: float
    radius: float  # R: the largest distance of a code from the codes' mean
    n_points: int
    rbf_sigma_codes: float
    rbf_sigma_far: float
    rbf_ratio: float
    standard_sigma_codes: float
    standard_sigma_far: float
    standard_ratio: float

    @property
    def claim_holds(self) -> bool:
        """Whether the RBF decoder's sigma far away is at least 10x its sigma on the codes (the paper's claim)."""
        return self.rbf_ratio >= PAPER_RATIO


@torch.no_grad()
def _mean_sigma(vae: VAE, points: Tensor, variance: str, batch_size: int = 4096) -> float:
    """Mean decoder std over points (n, d) and output dims."""
    std_module = vae._std_module(variance)
    total = sum(float(std_module(points[index]).double().sum()) for index in _batches(points.shape[0], batch_size))
    return total / (points.shape[0] * vae.input_dim)


def extrapolation_report(
    vae: VAE, codes: np.ndarray, factor: float = 3.0, n_points: int = 1000, seed: int = DEFAULT_SEED
) -> ExtrapolationReport:
    """Compare the mean decoder sigma on the codes and at distance factor * R from their mean, for both heads.

    Parameters
    ----------
    vae : VAE
        A trained model (both stages fitted).
    codes : array-like (n, d)
        Latent codes, usually the training codes; R is the largest distance of a code from their mean.
    factor : float, default 3.0
        The far points lie at factor * R from the mean, in random directions.
    n_points : int, default 1000
        Number of far points.
    seed : int, default 0
        Seed of the directions.

    Returns
    -------
    ExtrapolationReport
    """
    if not isinstance(vae, VAE):
        raise InvalidInput(f"vae must be a VAE; got {type(vae).__name__}.")
    factor = check_float(factor, "factor", minimum=0.0, strict_minimum=True)
    n_points = check_positive_int(n_points, "n_points")
    array = check_array(codes, "codes", ndim=2, dtype=np.float64, n_columns=vae.latent_dim)
    center = array.mean(axis=0)
    radius = float(np.linalg.norm(array - center, axis=1).max())
    directions = np.random.default_rng(check_seed(seed)).standard_normal((n_points, vae.latent_dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    like = vae._like()
    on_codes = torch.as_tensor(array, dtype=like.dtype, device=like.device)
    far = torch.as_tensor(center + factor * radius * directions, dtype=like.dtype, device=like.device)
    sigmas = {v: (_mean_sigma(vae, on_codes, v), _mean_sigma(vae, far, v)) for v in VARIANCES}
    return ExtrapolationReport(
        factor=factor,
        radius=radius,
        n_points=n_points,
        rbf_sigma_codes=sigmas["rbf"][0],
        rbf_sigma_far=sigmas["rbf"][1],
        rbf_ratio=sigmas["rbf"][1] / sigmas["rbf"][0],
        standard_sigma_codes=sigmas["standard"][0],
        standard_sigma_far=sigmas["standard"][1],
        standard_ratio=sigmas["standard"][1] / sigmas["standard"][0],
    )


@dataclass
class PaperClaims:
    """The paper's checks: sigma extrapolation of both variance decoders and their held-out IWAE log-likelihoods."""

    extrapolation: ExtrapolationReport
    iwae_rbf: float  # mean IWAE bound per held-out sample, nats
    iwae_standard: float
    n_held_out: int
    n_samples: int

    @property
    def claim_holds(self) -> bool:
        """Whether the RBF decoder's sigma at factor * R is at least 10x its sigma on the codes."""
        return self.extrapolation.claim_holds


def paper_claims(
    vae: VAE, x_held_out: np.ndarray, codes: np.ndarray, n_samples: int = DEFAULT_IWAE_SAMPLES, seed: int = DEFAULT_SEED
) -> PaperClaims:
    """The paper's checks: the sigma extrapolation of both variance heads and their held-out IWAE log-likelihoods.

    Parameters
    ----------
    vae : VAE
        A trained model (both stages fitted).
    x_held_out : array-like (m, D)
        Held-out samples.
    codes : array-like (n, d)
        The training codes.
    n_samples : int, default 256
        Importance samples per held-out point.
    seed : int, default 0
        Seed of the far points and of the sampling.

    Returns
    -------
    PaperClaims
        Print it with cli.tables.paper_claims_table.
    """
    extrapolation = extrapolation_report(vae, codes, seed=seed)
    iwae_rbf = iwae_log_likelihood(vae, x_held_out, "rbf", n_samples=n_samples, seed=seed)
    iwae_standard = iwae_log_likelihood(vae, x_held_out, "standard", n_samples=n_samples, seed=seed)
    return PaperClaims(
        extrapolation=extrapolation,
        iwae_rbf=float(iwae_rbf.mean()),
        iwae_standard=float(iwae_standard.mean()),
        n_held_out=int(iwae_rbf.shape[0]),
        n_samples=n_samples,
    )
