"""The model layer: a VAE with the paper's RBF-precision decoder variance.

config (VAEConfig, the option names), networks (encoders, decoders, variance heads, forward-mode rules), vae (the
VAE and its save/load), train (two-stage training, refit of the RBF head), evaluate (codes, IWAE, the paper's
claims). Everything public is importable from here: ``from lsg_graph.model import VAEConfig, train_vae``.
"""

from __future__ import annotations

from lsg_graph.model.config import ACTIVATIONS, ARCHITECTURES, MEAN_OUTPUTS, RBF_GATES, VARIANCES, VAEConfig
from lsg_graph.model.evaluate import (
    PAPER_RATIO,
    ExtrapolationReport,
    PaperClaims,
    encode_codes,
    extrapolation_report,
    iwae_log_likelihood,
    paper_claims,
)
from lsg_graph.model.networks import VAEDecoder
from lsg_graph.model.train import RBF_FIELDS, TrainReport, refit_rbf, train_vae
from lsg_graph.model.vae import MODEL_FILE, MODEL_JSON, MODEL_KIND, VAE

__all__ = [
    "ACTIVATIONS",
    "ARCHITECTURES",
    "MEAN_OUTPUTS",
    "MODEL_FILE",
    "MODEL_JSON",
    "MODEL_KIND",
    "PAPER_RATIO",
    "RBF_FIELDS",
    "RBF_GATES",
    "VARIANCES",
    "ExtrapolationReport",
    "PaperClaims",
    "TrainReport",
    "VAE",
    "VAEConfig",
    "VAEDecoder",
    "encode_codes",
    "extrapolation_report",
    "iwae_log_likelihood",
    "paper_claims",
    "refit_rbf",
    "train_vae",
]
