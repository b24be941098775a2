"""Two-stage training of the VAE and the refit of its RBF precision network.

Stage 1 maximises the ELBO of the encoder, the mean decoder and the standard variance head. Stage 2 places the RBF
centres by k-means on the training codes, sets the bandwidths from the cluster spreads and fits only W with
everything else frozen. Both stages run the same epoch loop (`_run_epochs`) with their own batch loss.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lsg_graph._threads import one_thread as _one_thread
from lsg_graph._validation import check_array, resolve_device
from lsg_graph.errors import InvalidInput
from lsg_graph.model.config import VAEConfig
from lsg_graph.model.likelihood import _batches, _gaussian_log_prob, _kl_per_unit, _kl_to_prior, _negative_elbo, _randn
from lsg_graph.model.vae import VAE

__all__ = ["RBF_FIELDS", "TrainReport", "active_directions", "active_projection", "refit_rbf", "train_vae"]

_ELBO_SAMPLES = 8  # Monte Carlo samples per point for the held-out ELBO in the training report


@dataclass
class TrainReport:
    """Losses (mean negative ELBO per sample, nats) per epoch of both stages, held-out ELBOs and timing."""

    stage1_losses: list[float]
    stage2_losses: list[float]
    held_out_elbo: float | None  # mean ELBO per held-out sample (nats) with the RBF variance
    held_out_elbo_standard: float | None  # the same with the standard variance head
    seconds: float
    n_train: int
    n_held_out: int

    def summary(self) -> dict[str, Any]:
        """Summary numbers (final losses, held-out ELBOs, timing) as a JSON-ready dict."""
        return {
            "stage1_final_loss": self.stage1_losses[-1] if self.stage1_losses else None,
            "stage2_final_loss": self.stage2_losses[-1] if self.stage2_losses else None,
            "held_out_elbo": self.held_out_elbo,
            "held_out_elbo_standard": self.held_out_elbo_standard,
            "seconds": self.seconds,
            "n_train": self.n_train,
            "n_held_out": self.n_held_out,
        }

    def to_dict(self) -> dict[str, Any]:
        """Every field as a JSON-ready dict."""
        return dataclasses.asdict(self)


def _resolve_config(config: VAEConfig | None, x: np.ndarray) -> VAEConfig:
    """Fill in what the data decides: input_dim, mean_output from the data range, n_centers capped at n."""
    if config is None:
        config = VAEConfig(input_dim=x.shape[1])
    if not isinstance(config, VAEConfig):
        raise InvalidInput(f"config must be a VAEConfig or None; got {type(config).__name__}.")
    if config.input_dim != x.shape[1]:
        raise InvalidInput(f"config.input_dim is {config.input_dim} but x_train has {x.shape[1]} columns.")
    low, high = float(x.min()), float(x.max())
    in_unit = low >= 0.0 and high <= 1.0
    mean_output = config.mean_output or ("sigmoid" if in_unit else "identity")
    if mean_output == "sigmoid" and not in_unit:
        raise InvalidInput(
            f"mean_output='sigmoid' needs data in [0, 1]; x_train spans [{low:g}, {high:g}]. "
            "Rescale it or use 'identity'."
        )
    return dataclasses.replace(
        config,
        mean_output=mean_output,
        n_centers=min(config.n_centers, x.shape[0]),
        n_gate_centers=min(config.n_gate_centers, x.shape[0]),
    )


def train_vae(
    x_train: np.ndarray,
    config: VAEConfig | None = None,
    x_held_out: np.ndarray | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[VAE, TrainReport]:
    """Train a VAE on x_train in two stages; return the model and its training report.

    Stage 1 maximises the ELBO of encoder, mean and standard variance head with Adam. Stage 2 places the RBF
    centres by k-means on the training codes (encoder means), sets the bandwidths from the cluster spreads, and
    fits only W with everything else frozen, maximising the same ELBO (z sampled from q(z|x) each step; the KL
    term is then a constant). The initial weights and all sampling come from seeded CPU generators, so a seed gives
    the same start on every device. Deterministic for a given config.seed on one machine on CPU (CUDA kernels may
    differ in the last bits); the global torch RNG is left untouched.

    Parameters
    ----------
    x_train : array-like (n, D)
        Training samples, n >= 2 (cast to float32).
    config : VAEConfig, optional
        Architecture and training settings (default: ``VAEConfig(input_dim=D)``). What the data decide is filled
        in: mean_output ("sigmoid" for data in [0, 1], else "identity"), n_centers and n_gate_centers capped at n.
    x_held_out : array-like (m, D), optional
        Held-out samples; the report then has their mean ELBO under both variance heads.
    progress : bool, default True
        Show a progress bar over the epochs (on stderr).
    device : str or torch.device, default "cpu"
        "cpu", "cuda[:i]" or "auto".

    Returns
    -------
    vae : VAE
        The trained model, in eval mode, float32, on `device`.
    report : TrainReport
        Losses per epoch of both stages, held-out ELBOs and timing.
    """
    x = check_array(x_train, "x_train", ndim=2, dtype=np.float32, min_rows=2)
    held = None
    if x_held_out is not None:
        held = check_array(x_held_out, "x_held_out", ndim=2, dtype=np.float32, n_columns=x.shape[1])
    config = _resolve_config(config, x)
    torch_device = resolve_device(device)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]), _one_thread():
        torch.default_generator.manual_seed(config.seed)  # the CPU generator only: CUDA's is not ours to reseed
        generator = torch.Generator().manual_seed(config.seed)
        vae = VAE(config).to(torch_device)
        data = torch.from_numpy(np.ascontiguousarray(x)).to(torch_device)
        bar = _progress_bar(config.epochs + config.rbf_epochs, progress)
        try:
            stage1 = _train_stage1(vae, data, generator, bar)
            _init_rbf(vae, data, generator)
            stage2 = _train_stage2(vae, data, generator, bar)
        finally:
            bar.close()
        vae.eval()
        held_rbf = held_standard = None
        if held is not None:
            held_tensor = torch.from_numpy(np.ascontiguousarray(held)).to(torch_device)
            held_rbf = _mean_elbo(vae, held_tensor, "rbf", config.seed)
            held_standard = _mean_elbo(vae, held_tensor, "standard", config.seed)
    report = TrainReport(
        stage1_losses=stage1,
        stage2_losses=stage2,
        held_out_elbo=held_rbf,
        held_out_elbo_standard=held_standard,
        seconds=time.perf_counter() - start,
        n_train=int(x.shape[0]),
        n_held_out=0 if held is None else int(held.shape[0]),
    )
    vae.train_summary = report.summary()
    return vae, report


ACTIVE_VARIANCE = 1e-2  # a latent direction is active when its code variance is at least this times the largest

RBF_FIELDS = ("n_centers", "rbf_bandwidth_scale", "zeta", "rbf_gate", "n_gate_centers", "gate_scale", "shell_quantile",
              "shell_sharpness", "rbf_epochs", "rbf_learning_rate")  # the settings refit_rbf may change: stage 2 only


def refit_rbf(vae: VAE, x_train: np.ndarray, progress: bool = False, **changes: Any) -> VAE:
    """A copy of a trained VAE with its RBF precision network placed and fitted again (stage 2 only).

    Parameters
    ----------
    vae : VAE
        A trained model; its encoder, mean decoder and standard head are copied unchanged.
    x_train : ndarray (n, D)
        The training data (the RBF centres and gate come from their codes).
    progress : bool
        Show a progress bar over the stage-2 epochs.
    **changes
        New values for any of RBF_FIELDS (for example ``rbf_gate="none"`` for the paper's network).

    Returns
    -------
    VAE
        A new model (eval mode, on the CPU) whose `rbf` decoder uses the new settings; `vae` is not modified.
    """
    if not isinstance(vae, VAE):
        raise InvalidInput(f"vae must be a VAE; got {type(vae).__name__}.")
    unknown = sorted(set(changes) - set(RBF_FIELDS))
    if unknown:
        raise InvalidInput(f"refit_rbf can change only {list(RBF_FIELDS)}; got {unknown}.")
    x = check_array(x_train, "x_train", ndim=2, dtype=np.float32, min_rows=2, n_columns=vae.input_dim)
    config = dataclasses.replace(vae.config, **changes)
    config = dataclasses.replace(
        config, n_centers=min(config.n_centers, x.shape[0]), n_gate_centers=min(config.n_gate_centers, x.shape[0])
    )
    with torch.random.fork_rng(devices=[]), _one_thread():
        generator = torch.Generator().manual_seed(config.seed)
        model = VAE(config).to(vae._like().dtype)
        kept = {name: value for name, value in vae.state_dict().items() if not name.startswith("rbf_std.")}
        model.load_state_dict(kept, strict=False)
        model.eval()
        data = torch.from_numpy(np.ascontiguousarray(x)).to(vae._like().dtype)
        bar = _progress_bar(config.rbf_epochs, progress)
        try:
            _init_rbf(model, data, generator)
            _train_stage2(model, data, generator, bar)
        finally:
            bar.close()
    model.train_summary = vae.train_summary
    return model.eval()


def _progress_bar(total: int, enabled: bool) -> Any:
    """A tqdm bar over epochs on stderr (disabled when not `enabled`)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="train VAE", unit="epoch", file=sys.stderr, disable=not enabled, leave=False)


def _run_epochs(
    optimizer: torch.optim.Optimizer,
    batch_loss: Callable[[Tensor], Tensor],
    data: Tensor,
    n_epochs: int,
    batch_size: int,
    generator: torch.Generator,
    bar: Any,
    stage: int,
    rate_name: str,
    rate: float,
) -> list[float]:
    """The epoch loop of both stages: Adam steps on `batch_loss` over seeded shuffled batches of `data`.

    Returns the per-epoch mean loss per sample; raises InvalidInput (naming `rate_name`) when it is not finite.
    """
    losses = []
    for _ in range(n_epochs):
        total = 0.0
        for index in _batches(data.shape[0], batch_size, generator):
            loss = batch_loss(data[index.to(data.device)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * index.numel()
        losses.append(total / data.shape[0])
        _check_not_diverged(losses[-1], stage, len(losses), data, rate_name, rate)
        bar.set_postfix(stage=stage, loss=f"{losses[-1]:.2f}")
        bar.update(1)
    return losses


def _train_stage1(vae: VAE, data: Tensor, generator: torch.Generator, bar: Any) -> list[float]:
    """Stage 1: Adam on the negative ELBO of encoder, mean and standard head; per-epoch mean loss per sample."""
    config = vae.config
    modules = [vae.encoder, vae.mean_decoder, vae.standard_std]
    parameters = [p for module in modules for p in module.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate)
    vae.train()

    def batch_loss(x: Tensor) -> Tensor:
        if config.free_bits == 0.0:
            return _negative_elbo(vae, x, vae.standard_std, generator).mean()
        return _free_bits_loss(vae, x, generator, config.free_bits)

    return _run_epochs(optimizer, batch_loss, data, config.epochs, config.batch_size, generator, bar, 1,
                       "learning_rate", config.learning_rate)


def _free_bits_loss(vae: VAE, x: Tensor, generator: torch.Generator, free_bits: float) -> Tensor:
    """Stage-1 loss with free bits: -E log p(x|z) + sum_j max(free_bits, batch mean of KL_j), per sample, in nats."""
    mean_z, std_z = vae.encoder(x)
    z = mean_z + std_z * _randn(tuple(mean_z.shape), generator, mean_z)
    per_unit = _kl_per_unit(mean_z, std_z).mean(0)  # (d,)
    reconstruction = -_gaussian_log_prob(x, vae.mean_decoder(z), vae.standard_std(z)).mean()
    return reconstruction + per_unit.clamp(min=free_bits).sum()


@torch.no_grad()
def _init_rbf(vae: VAE, data: Tensor, generator: torch.Generator) -> None:
    """Place RBF centres by k-means on the training codes, set bandwidths from cluster spreads, initialise W."""
    from sklearn.cluster import KMeans

    config, rbf = vae.config, vae.rbf_std
    codes = vae.encoder(data)[0].double().cpu().numpy()
    if not np.isfinite(codes).all():
        _check_not_diverged(float("nan"), 1, config.epochs, data, "learning_rate", config.learning_rate)
    n_clusters = min(config.n_centers, codes.shape[0])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Number of distinct clusters")  # duplicate codes: fewer clusters
        kmeans = KMeans(n_clusters=n_clusters, n_init=4, random_state=config.seed).fit(codes)
    centers = kmeans.cluster_centers_
    distances = np.linalg.norm(codes - centers[kmeans.labels_], axis=1)
    spreads = np.array(
        [distances[kmeans.labels_ == k].mean() if np.any(kmeans.labels_ == k) else 0.0 for k in range(n_clusters)]
    )
    positive = spreads[spreads > 0]
    if positive.size:
        floor = 0.1 * float(np.median(positive))
    else:  # every cluster is a single code (n_centers >= distinct codes): use the spacing of the centres
        floor = 0.5 * _median_nearest_spacing(centers) or 1e-3
    spreads = np.maximum(spreads, max(floor, 1e-6))
    gammas = 0.5 / (config.rbf_bandwidth_scale * spreads) ** 2
    rbf.centers.copy_(torch.as_tensor(centers, dtype=rbf.centers.dtype))
    rbf.gammas.copy_(torch.as_tensor(gammas, dtype=rbf.gammas.dtype))
    if rbf.gate_centers is not None:
        projection = active_projection(codes)
        gate_centers, gate_scales = _gate_kernels(codes, rbf.gate_centers.shape[0], config.gate_scale, config.seed,
                                                  projection)
        rbf.gate_centers.copy_(torch.as_tensor(gate_centers, dtype=rbf.gate_centers.dtype))
        rbf.gate_scales.copy_(torch.as_tensor(gate_scales, dtype=rbf.gate_scales.dtype))
        rbf.gate_projection.copy_(torch.as_tensor(projection, dtype=rbf.gate_projection.dtype))
    if rbf.shell_mean is not None:
        mean, whiten, bounds = _shell(codes, config.shell_quantile)
        rbf.shell_mean.copy_(torch.as_tensor(mean, dtype=rbf.shell_mean.dtype))
        rbf.shell_whiten.copy_(torch.as_tensor(whiten, dtype=rbf.shell_whiten.dtype))
        rbf.shell_bounds.copy_(torch.as_tensor(bounds, dtype=rbf.shell_bounds.dtype))
    rbf.weight_free.copy_(_inverse_softplus(_initial_weights(vae, data, generator)))


def active_directions(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal directions of codes (n, d): variances (d,), directions (d, d) as columns, and the mask (d,) of the
    active ones (variance at least ACTIVE_VARIANCE times the largest; collapsed latent units are the rest)."""
    centred = codes - codes.mean(0)
    covariance = np.atleast_2d(np.cov(centred.T)) if len(codes) > 1 else np.eye(codes.shape[1])
    values, vectors = np.linalg.eigh(covariance)
    return values, vectors, values >= ACTIVE_VARIANCE * max(float(values.max()), 1e-300)


def active_projection(codes: np.ndarray) -> np.ndarray:
    """The orthogonal projection (d, d) onto the active directions of codes (n, d) (`active_directions`)."""
    _, vectors, active = active_directions(codes)
    return vectors[:, active] @ vectors[:, active].T


def _shell(codes: np.ndarray, quantile: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shell gate's mean (d,), whitening L (d, d) and radius bounds (2,) from training codes (n, d).

    L whitens the active subspace only (`active_directions`; collapsed latent units, with codes near a constant,
    are left out: a zero column each). The bounds are the `quantile` and 1 - `quantile` quantiles of the radii
    ||(codes - mean) L||.
    """
    mean = codes.mean(0)
    values, vectors, active = active_directions(codes)
    whiten = np.zeros((codes.shape[1], codes.shape[1]))
    whiten[:, active] = vectors[:, active] / np.sqrt(values[active])
    radii = np.linalg.norm((codes - mean) @ whiten, axis=1)
    return mean, whiten, np.quantile(radii, [quantile, 1.0 - quantile])


def _gate_kernels(
    codes: np.ndarray, n_centers: int, scale: float, seed: int, projection: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Gate centres (G, d) (the codes, or a seeded random subset of G of them) and scales s_j = h_j^-2 (G,).

    The radius h_j is `scale` times the distance from centre j to its nearest other centre (after `projection`,
    (d, d), when given), clipped to [0.5, 2] times the median of those distances (duplicates and isolated codes
    get sensible radii).
    """
    from scipy.spatial import cKDTree

    if n_centers < codes.shape[0]:
        chosen = np.sort(np.random.default_rng(seed).choice(codes.shape[0], n_centers, replace=False))
        codes = codes[chosen]
    if codes.shape[0] < 2:
        return codes, np.ones(codes.shape[0])
    projected = codes if projection is None else codes @ projection
    spacing = cKDTree(projected).query(projected, k=2)[0][:, 1]
    positive = spacing[spacing > 0]
    median = float(np.median(positive)) if positive.size else 1.0
    radius = scale * np.clip(spacing, 0.5 * median, 2.0 * median)
    return codes, 1.0 / np.square(radius)


def _median_nearest_spacing(centers: np.ndarray) -> float:
    """Median distance from each centre (K, d) to its nearest other centre; 0 for fewer than two centres."""
    if len(centers) < 2:
        return 0.0
    distances = np.linalg.norm(centers[:, None, :] - centers[None, :, :], axis=-1)
    np.fill_diagonal(distances, np.inf)
    return float(np.median(distances.min(axis=1)))


def _initial_weights(
    vae: VAE, data: Tensor, generator: torch.Generator, n_samples: int = 4, n_iter: int = 100
) -> Tensor:
    """A starting W (D, K) for stage 2: multiplicative updates maximising sum log(beta) - beta r^2 over the codes.

    r^2 are squared residuals of x under the mean decoder at `n_samples` draws z ~ q(z|x) per point. The objective
    is concave in W, and the update W *= (V^T beta^-1) / (V^T r^2) keeps W >= 0; Adam then fine-tunes the ELBO.
    """
    config, rbf = vae.config, vae.rbf_std
    mean_z, std_z = vae.encoder(data)
    z = mean_z + std_z * _randn((n_samples, *mean_z.shape), generator, mean_z)  # (S, n, d)
    squared = ((data - vae.mean_decoder(z)) ** 2).double().flatten(0, 1)  # (S n, D)
    activations = rbf.activations(z).double().flatten(0, 1)  # (S n, K)
    denominator = activations.T @ squared + 1e-12  # (K, D)
    # the normaliser is 0 when every activation underflows (codes far from all centres in bandwidth units)
    normaliser = activations.sum(1).mean().clamp_min(torch.finfo(activations.dtype).tiny)
    weights = (activations.sum(0, keepdim=True).T / denominator) / normaliser  # (K, D)
    for _ in range(n_iter):
        beta = activations @ weights + config.zeta
        weights = weights * (activations.T @ (1.0 / beta)) / denominator
    return weights.T.clamp(1e-6, 1e12).to(rbf.weight_free.dtype)


def _check_not_diverged(loss: float, stage: int, epoch: int, data: Tensor, rate_name: str, rate: float) -> None:
    """Raise InvalidInput when training produced a non-finite loss (or codes), naming the data range and the rate."""
    if math.isfinite(loss):
        return
    low, high = float(data.min()), float(data.max())
    raise InvalidInput(
        f"Training diverged: stage {stage} reached a non-finite loss ({loss}) at epoch {epoch}. The training data span "
        f"[{low:.3g}, {high:.3g}]; standardise or rescale them (values of order 1 work best) or lower "
        f"{rate_name!r} (now {rate:g})."
    )


def _inverse_softplus(values: Tensor) -> Tensor:
    """The x with softplus(x) = values (> 0), computed stably."""
    return values + torch.log(-torch.expm1(-values))


def _train_stage2(vae: VAE, data: Tensor, generator: torch.Generator, bar: Any) -> list[float]:
    """Stage 2: Adam on W only (encoder and mean frozen), z ~ q(z|x); per-epoch mean negative ELBO per sample."""
    config, rbf = vae.config, vae.rbf_std
    optimizer = torch.optim.Adam([rbf.weight_free], lr=config.rbf_learning_rate)

    def batch_loss(x: Tensor) -> Tensor:
        with torch.no_grad():
            mean_z, std_z = vae.encoder(x)
            z = mean_z + std_z * _randn(tuple(mean_z.shape), generator, mean_z)
            mean_x = vae.mean_decoder(z)
            kl = _kl_to_prior(mean_z, std_z)
        return (kl - _gaussian_log_prob(x, mean_x, rbf(z))).mean()

    losses = _run_epochs(optimizer, batch_loss, data, config.rbf_epochs, config.batch_size, generator, bar, 2,
                         "rbf_learning_rate", config.rbf_learning_rate)
    vae.rbf_fitted = True
    return losses


@torch.no_grad()
def _mean_elbo(vae: VAE, x: Tensor, variance: str, seed: int, batch_size: int = 256) -> float:
    """Mean ELBO per row of x (n, D) in nats, averaged over a few seeded posterior samples."""
    generator = torch.Generator().manual_seed(seed)
    std_module = vae._std_module(variance)
    like = vae._like()
    x = x.to(dtype=like.dtype, device=like.device)
    total = 0.0
    for index in _batches(x.shape[0], batch_size):
        for _ in range(_ELBO_SAMPLES):
            total -= float(_negative_elbo(vae, x[index], std_module, generator).sum())
    return total / (_ELBO_SAMPLES * x.shape[0])
