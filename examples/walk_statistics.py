"""Random walks on the default digits model: Euclidean vs Riemannian (metric) vs Brownian, at matched step lengths.

Arvanitidis, Hansen & Hauberg (ICLR 2018) argue that a random walk whose steps follow the pullback metric,
z' = z + sqrt(s) L eps with L L^T = M(z)^-1, moves at an even pace through the *data* (every step changes the
decoded output by about the same amount) and is held back where the decoder is uncertain (M is large off the
data), whereas a Euclidean walk ignores both. This script trains the default VAE on the scikit-learn digits,
starts the same walkers (random training codes, same seed, shared noise) for each kind, matches the step sizes so
that the mean latent step length is equal, and prints:

  (a) the coefficient of variation (std / mean) of the per-step change ||mu(z_{t+1}) - mu(z_t)|| of the decoded
      images (and of the full decoder output g = [mu; sigma], whose metric the walk follows);
  (b) the fraction of visited points where the decoder's mean sigma exceeds its 99th percentile on the data codes
      (how often the walk leaves the data);
  (c) the drift's effect: the Brownian kind (metric walk plus the drift s b(z)) on the same statistics.

It also writes examples/output/magnification.png (log magnification with the codes, three refined geodesics, their
straight lines and a few metric walks) and examples/output/walk_strip.png (one start, one walk per kind, with a
larger matched step so that the images change, decoded every tenth step).

Run:  .venv/bin/python examples/walk_statistics.py [--seed 0] [--walkers 200] [--steps 100] [--target-step 0.05]
          [--repeats 3] [--strip-step 0.25] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

from lsg_graph.geodesics.refine import refine_geodesics
from lsg_graph.graph.latent_graph import build_latent_graph
from lsg_graph.metric import PullbackMetric
from lsg_graph.model import VAE, VAEConfig, encode_codes, train_vae
from lsg_graph.plot import plot_image_strip, plot_magnification
from lsg_graph.walks import WALK_KINDS, WalkResult, matched_step_sizes, random_walks

OUTPUT = Path(__file__).resolve().parent / "output"
CHI_2_CV = float(np.sqrt(4 / np.pi - 1))  # CV of ||eps|| for eps ~ N(0, I_2): an isotropic walk in g has this CV
GEODESIC_CLASSES = [(0, 6), (1, 7), (3, 4)]  # digit classes whose central codes the geodesics join


@dataclass(frozen=True)
class WalkStatistics:
    """Statistics of one kind of walk (see the module docstring)."""

    kind: str
    step_size: float
    mean_latent_step: float
    mean_image_change: float
    cv_image_change: float
    cv_output_change: float
    off_data_fraction: float
    n_singular: int


def mean_sigma(vae: VAE, points: np.ndarray) -> np.ndarray:
    """The RBF decoder's mean standard deviation over pixels at latent points (..., d)."""
    flat = torch.as_tensor(points.reshape(-1, points.shape[-1]), dtype=torch.float32)
    with torch.no_grad():
        std = vae.decoder("rbf")(flat)[1]
    return std.mean(dim=1).numpy().reshape(points.shape[:-1])


def decoder_outputs(vae: VAE, points: np.ndarray) -> np.ndarray:
    """The stacked decoder output g = [mu; sigma] (..., 2D) at latent points (..., d)."""
    flat = torch.as_tensor(points.reshape(-1, points.shape[-1]), dtype=torch.float32)
    with torch.no_grad():
        mean, std = vae.decoder("rbf")(flat)
    return torch.cat([mean, std], dim=1).numpy().reshape(*points.shape[:-1], -1)


def coefficient_of_variation(values: np.ndarray) -> float:
    """std / mean of all values."""
    return float(values.std() / values.mean())


def walk_statistics(vae: VAE, walk: WalkResult, sigma_threshold: float) -> WalkStatistics:
    """Statistics (a), (b) of one WalkResult decoded with decode=True."""
    image_change = np.linalg.norm(np.diff(walk.decoded_means, axis=1), axis=-1)
    output_change = np.linalg.norm(np.diff(decoder_outputs(vae, walk.trajectories), axis=1), axis=-1)
    sigma = mean_sigma(vae, walk.trajectories[:, 1:])
    return WalkStatistics(
        kind=walk.kind,
        step_size=walk.step_size,
        mean_latent_step=walk.mean_step_length,
        mean_image_change=float(image_change.mean()),
        cv_image_change=coefficient_of_variation(image_change),
        cv_output_change=coefficient_of_variation(output_change),
        off_data_fraction=float((sigma > sigma_threshold).mean()),
        n_singular=walk.n_singular,
    )


def _mean_sd(values: list[float], digits: int) -> str:
    """'mean (sd)' over repeats, or just the mean for one repeat."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ({np.std(values, ddof=1):.{digits}f})"


def table(rows: dict[str, list[WalkStatistics]]) -> str:
    """The statistics per kind as a fixed-width text table: mean (sd over repeats) where there are repeats."""
    header = (
        f"{'kind':<10} {'step s':>9} {'latent step':>11} {'mean |dmu|':>10} {'CV |dmu|':>15} {'CV |dg|':>15} "
        f"{'off-data':>15} {'held':>5}"
    )
    lines = [header, "-" * len(header)]
    for kind, repeats in rows.items():
        lines.append(
            f"{kind:<10} {np.mean([r.step_size for r in repeats]):>9.2e} "
            f"{np.mean([r.mean_latent_step for r in repeats]):>11.4f} "
            f"{np.mean([r.mean_image_change for r in repeats]):>10.4f} "
            f"{_mean_sd([r.cv_image_change for r in repeats], 3):>15} "
            f"{_mean_sd([r.cv_output_change for r in repeats], 3):>15} "
            f"{_mean_sd([r.off_data_fraction for r in repeats], 3):>15} "
            f"{sum(r.n_singular for r in repeats):>5d}"
        )
    return "\n".join(lines)


def drift_share(walk: WalkResult, noise_walk: WalkResult) -> float:
    """Mean ||brownian step - metric step|| / mean ||metric step|| for walks with the same seed and step size."""
    difference = np.linalg.norm(
        np.diff(walk.trajectories[:, :2], axis=1) - np.diff(noise_walk.trajectories[:, :2], axis=1), axis=-1
    )
    return float(difference.mean() / noise_walk.step_lengths()[:, 0].mean())


def central_code(codes: np.ndarray, labels: np.ndarray, digit: int) -> int:
    """Index of the code of class `digit` nearest to the class's mean code."""
    members = np.flatnonzero(labels == digit)
    return int(members[np.argmin(np.linalg.norm(codes[members] - codes[members].mean(axis=0), axis=1))])


def magnification_figure(metric: PullbackMetric, codes: np.ndarray, labels: np.ndarray, walks: np.ndarray) -> Path:
    """Write the magnification map with three refined geodesics, their straight lines and a few walks."""
    started = time.perf_counter()
    graph = build_latent_graph(metric, codes, labels, k=10)
    pairs = [(central_code(codes, labels, a), central_code(codes, labels, b)) for a, b in GEODESIC_CLASSES]
    geodesics = refine_geodesics(metric, graph, pairs)
    for (a, b), result in zip(GEODESIC_CLASSES, geodesics):
        with torch.no_grad():
            straight = float(metric.curve_length(np.linspace(result.points[0], result.points[-1], 256)))
        print(
            f"geodesic {a} -> {b}: method {result.method}, converged {result.converged}, length {result.length:.3f}, "
            f"graph path {result.graph_length:.3f}, straight line {straight:.3f}"
        )
    straight_pairs = np.stack([[codes[a], codes[b]] for a, b in pairs])
    out = plot_magnification(
        metric,
        codes,
        labels,
        curves=[result.points for result in geodesics],
        straight_pairs=straight_pairs,
        walks=walks,
        out=OUTPUT / "magnification.png",
        title="Digits VAE (RBF variance): log magnification, geodesics, metric walks",
    )
    print(f"wrote {out} in {time.perf_counter() - started:.1f} s")
    return out


def walk_strip(walks: dict[str, WalkResult], every: int, walker: int = 0) -> Path:
    """Write one walker's decoded means for each kind, every `every` steps, as an image grid (rows: kinds)."""
    steps = list(range(0, next(iter(walks.values())).n_steps + 1, every))
    images = np.stack([walk.decoded_means[walker, steps] for walk in walks.values()])
    out = plot_image_strip(
        images, (8, 8), OUTPUT / "walk_strip.png", titles=list(walks), column_titles=[f"t={t}" for t in steps]
    )
    print(f"wrote {out}")
    return out


def main() -> None:
    """Train, walk, print the table, draw the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of training, starting codes and walks")
    parser.add_argument("--walkers", type=int, default=200, help="number of walkers (random training codes)")
    parser.add_argument("--steps", type=int, default=100, help="steps per walker")
    parser.add_argument("--target-step", type=float, default=0.05, help="matched mean latent step length")
    parser.add_argument("--repeats", type=int, default=3, help="repeats with seeds seed, seed + 1, ...")
    parser.add_argument("--strip-step", type=float, default=0.25, help="mean latent step of the walks in the strip")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (small models: 1 is fastest)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    digits = load_digits()
    images, labels = (digits.data / 16.0).astype(np.float32), digits.target
    started = time.perf_counter()
    vae, _ = train_vae(images, VAEConfig(input_dim=64, seed=args.seed), progress=False)
    codes = encode_codes(vae, images)
    metric = PullbackMetric(vae.decoder("rbf"))
    print(f"trained the default digits VAE in {time.perf_counter() - started:.1f} s; codes {codes.shape}")

    threshold = float(np.percentile(mean_sigma(vae, codes.astype(np.float64)), 99))
    rows: dict[str, list[WalkStatistics]] = {kind: [] for kind in WALK_KINDS}
    drift_shares, started = [], time.perf_counter()
    for repeat in range(args.repeats):
        seed = args.seed + repeat
        starts = codes[np.random.default_rng(seed).choice(len(codes), args.walkers, replace=False)]
        sizes = matched_step_sizes(metric, starts, args.target_step, n_steps=args.steps, seed=seed)
        for kind in WALK_KINDS:
            walk = random_walks(metric, starts, args.steps, sizes[kind], kind, seed=seed, decode=True)
            rows[kind].append(walk_statistics(vae, walk, threshold))
            if kind == "metric" and repeat == 0:
                shown = walk.trajectories[:5]
        same_size = random_walks(metric, starts, 1, sizes["metric"], "brownian", seed=seed)
        noise_only = random_walks(metric, starts, 1, sizes["metric"], "metric", seed=seed)
        drift_shares.append(drift_share(same_size, noise_only))
    print(f"matched and ran {args.repeats} x 3 x {args.walkers} walks in {time.perf_counter() - started:.1f} s")
    print(
        f"\n{args.walkers} walkers from random training codes, {args.steps} steps, step sizes matched to a mean latent "
        f"step of {args.target_step}; {args.repeats} repeat(s) with seeds {args.seed}..{args.seed + args.repeats - 1} "
        f"(other starts and noise), mean (sd over repeats).\nCV: std / mean of the per-step change of the decoded "
        f"mean mu and of g = [mu; sigma] (an isotropic step in g has CV {CHI_2_CV:.3f}); off-data: fraction of "
        f"visited points whose mean sigma exceeds its 99th percentile on the data codes ({threshold:.4f}).\n"
    )
    print(table(rows))
    print(
        f"\ndrift at the starts (brownian vs metric, same s and noise): mean ||s b(z)|| / mean ||metric step|| = "
        f"{_mean_sd(drift_shares, 3)}"
    )

    OUTPUT.mkdir(parents=True, exist_ok=True)
    magnification_figure(metric, codes, labels, shown)
    starts = codes[np.random.default_rng(args.seed).choice(len(codes), 1)]
    strip_sizes = matched_step_sizes(metric, starts, args.strip_step, n_steps=args.steps, seed=args.seed)
    strip = {
        kind: random_walks(metric, starts, args.steps, strip_sizes[kind], kind, seed=args.seed, decode=True)
        for kind in WALK_KINDS
    }
    walk_strip(strip, every=max(1, args.steps // 10))


if __name__ == "__main__":
    main()
