"""Train the default VAE on the scikit-learn digits and print the paper's claims about decoder variance.

Arvanitidis, Hansen & Hauberg (ICLR 2018) replace the usual VAE variance head by an RBF network for the decoder
precision, so that the decoder's standard deviation grows far from the training codes. This script trains the
default model on the train split of the digits (the split `lsg-graph train` makes: 20% held out, seeded), then
prints, for both variance decoders, the mean sigma on the training codes and at three times the data radius, and the
held-out IWAE log-likelihood: the numbers `lsg-graph train && lsg-graph evaluate` print for the same seed.

Run:  .venv/bin/python examples/paper_claims.py [--seed 0] [--samples 256] [--progress]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cli.tables import paper_claims_table
from lsg_graph.data import load_dataset, train_test_split_indices
from lsg_graph.model import VAEConfig, encode_codes, paper_claims, train_vae
from lsg_graph.registry import DEFAULT_HELD_OUT_FRACTION


def digits_split(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The digits in [0, 1] (float32), split into train / held-out rows exactly as `lsg-graph train` and
    `lsg-graph evaluate` split them (lsg_graph.data.train_test_split_indices, 20% held out), so the numbers agree."""
    digits = load_dataset("digits")
    train, held_out = train_test_split_indices(digits.n_samples, DEFAULT_HELD_OUT_FRACTION, seed)
    return digits.images[train], digits.images[held_out]


def main() -> None:
    """Train, evaluate and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of training")
    parser.add_argument("--samples", type=int, default=256, help="importance samples of the IWAE bound")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    args = parser.parse_args()

    train, held_out = digits_split(args.seed)
    config = VAEConfig(input_dim=train.shape[1], seed=args.seed)
    model, report = train_vae(train, config, x_held_out=held_out, progress=args.progress)
    print(f"digits: {len(train)} train / {len(held_out)} held-out rows, D = {train.shape[1]}")
    print(f"config: {model.config.to_dict()}")
    print(
        f"trained in {report.seconds:.1f} s; final negative ELBO per sample: stage 1 {report.stage1_losses[-1]:.2f}, "
        f"stage 2 {report.stage2_losses[-1]:.2f} nats"
    )
    print(
        f"held-out ELBO per sample: rbf {report.held_out_elbo:.2f}, standard {report.held_out_elbo_standard:.2f} nats"
    )

    start = time.perf_counter()
    claims = paper_claims(model, held_out, encode_codes(model, train), n_samples=args.samples, seed=args.seed)
    print(f"evaluated in {time.perf_counter() - start:.1f} s\n")
    print(paper_claims_table(claims))


if __name__ == "__main__":
    main()
