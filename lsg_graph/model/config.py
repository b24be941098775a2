"""VAEConfig: the architecture and training settings of a VAE (frozen, validated on construction).

The option names of the model (activations, mean outputs, variance heads, RBF gates, architectures) are defined
here once; the networks, the training loop and the CLI read them from this module.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from lsg_graph._validation import (
    check_choice,
    check_float,
    check_int,
    check_positive_int,
    check_seed,
    invalid_parameter,
)
from lsg_graph.errors import InvalidInput
from lsg_graph.registry import (
    ARCHITECTURES,
    DEFAULT_ARCHITECTURE,
    DEFAULT_LATENT_DIM,
    DEFAULT_RBF_GATE,
    DEFAULT_SEED,
    RBF_GATES,
    VARIANCES,
)

__all__ = ["ACTIVATIONS", "ARCHITECTURES", "MEAN_OUTPUTS", "RBF_GATES", "VARIANCES", "VAEConfig"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "elu": nn.ELU, "softplus": nn.Softplus}
MEAN_OUTPUTS = ("sigmoid", "identity")



SHELL_FIELDS = ("shell_quantile", "shell_sharpness")  # saved only for rbf_gate="shell"


@dataclass(frozen=True)
class VAEConfig:
    """Architecture and training settings of a VAE; frozen, every field validated on construction (InvalidInput).

    Parameters
    ----------
    input_dim : int
        Data dimension D.
    latent_dim : int, default 2
        Latent dimension d.
    hidden_dims : tuple of int, default (256, 128)
        Hidden widths of the encoder MLP (reversed for the decoders).
    activation : {"tanh", "elu", "softplus"}, default "tanh"
    mean_output : {"sigmoid", "identity"}, optional
        None: train_vae picks "sigmoid" for data in [0, 1], else "identity".
    min_std : float, default 0.01
        Floor added to both decoder standard deviations, in data units.
    n_centers : int, default 64
        RBF centres (train_vae caps it at the number of training points).
    rbf_bandwidth_scale : float, default 1.5
        a in gamma_k = 0.5 * (a * mean distance of cluster k to c_k)^-2.
    zeta : float, default 0.01
        Precision far from the data: sigma -> zeta^(-1/2) + min_std there.
    rbf_gate : {"none", "codes", "shell"}, default "none"
        "codes" gates the precision off away from every training code, "shell" where the Mahalanobis radius leaves
        the codes' range (lsg_graph.registry.RBF_GATES).
    n_gate_centers : int, default 4096
        Gate kernels: one per training code, a random subset beyond this many.
    gate_scale : float, default 1.2
        Gate radius in nearest-neighbour spacings of the training codes.
    shell_quantile : float, default 0.02
        "shell" gate: the precision is gated off below this quantile and above 1 - it of the training codes'
        Mahalanobis radii, in (0, 0.5).
    shell_sharpness : float, default 50
        "shell" gate: the logistic step's width is the radius divided by this, > 0.
    epochs, rbf_epochs : int, default 150, 50
        Epochs of stage 1 (encoder, mean, standard head) and stage 2 (RBF precision); rbf_epochs may be 0.
    batch_size : int, default 128
    free_bits : float, default 0
        Stage 1 only: each latent unit's batch-mean KL is penalised only above this many nats (free bits, Kingma
        et al. 2016), which keeps units from collapsing to the prior at high d; 0 trains on the plain ELBO.
    learning_rate, rbf_learning_rate : float, default 2e-3, 1e-2
        Adam step sizes of the two stages.
    seed : int, default 0
        Seed of every random step (same seed, same weights).
    architecture : {"mlp", "conv"}, default "mlp"
        "conv": convolutional encoder and mean decoder for images (the variance heads stay MLP/RBF).
    image_shape : tuple of int, optional
        (H, W) or (C, H, W) that the input_dim values unflatten to; needed by "conv" (H and W divisible by 4).
    """

    input_dim: int
    latent_dim: int = DEFAULT_LATENT_DIM
    hidden_dims: tuple[int, ...] = (256, 128)
    activation: str = "tanh"
    mean_output: str | None = None  # None: train_vae picks "sigmoid" for data in [0, 1], else "identity"
    min_std: float = 1e-2  # floor added to both decoder standard deviations, in data units
    n_centers: int = 64  # RBF centres; train_vae caps it at the number of training points
    rbf_bandwidth_scale: float = 1.5  # a in gamma_k = 0.5 * (a * mean distance of cluster k to c_k)^-2
    zeta: float = 1e-2  # precision far from the data: sigma -> zeta^(-1/2) + min_std there
    rbf_gate: str = DEFAULT_RBF_GATE  # a key of RBF_GATES: "codes" gates the precision off away from every training code
    n_gate_centers: int = 4096  # gate kernels: one per training code, a random subset beyond this many
    gate_scale: float = 1.2  # gate radius h_k = gate_scale * (distance from code k to its nearest other code)
    shell_quantile: float = 0.02  # "shell" gate: rho_lo, rho_hi = this quantile and 1 - it of the codes' radii
    shell_sharpness: float = 50.0  # "shell" gate: logistic width w = rho / shell_sharpness
    epochs: int = 150
    rbf_epochs: int = 50
    batch_size: int = 128
    learning_rate: float = 2e-3
    free_bits: float = 0.0  # stage 1: nats per latent unit the KL term does not penalise (0: the plain ELBO)
    rbf_learning_rate: float = 1e-2
    seed: int = DEFAULT_SEED
    architecture: str = DEFAULT_ARCHITECTURE  # "mlp", or "conv" for images (encoder and mean decoder; the std heads stay MLP/RBF)
    image_shape: tuple[int, ...] | None = None  # (H, W) or (C, H, W) the input_dim values unflatten to; conv needs it

    def __post_init__(self) -> None:
        """Validate and normalise every field (raises InvalidInput naming the field and value)."""

        def set_(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)  # the dataclass is frozen: normalise once, here

        set_("input_dim", check_positive_int(self.input_dim, "input_dim"))
        set_("latent_dim", check_positive_int(self.latent_dim, "latent_dim"))
        set_("hidden_dims", _check_hidden_dims(self.hidden_dims))
        set_("activation", check_choice(self.activation, "activation", ACTIVATIONS))
        if self.mean_output is not None:
            set_("mean_output", check_choice(self.mean_output, "mean_output", MEAN_OUTPUTS))
        set_("min_std", check_float(self.min_std, "min_std", minimum=0.0, strict_minimum=True))
        set_("n_centers", check_positive_int(self.n_centers, "n_centers"))
        set_("rbf_bandwidth_scale", check_float(self.rbf_bandwidth_scale, "rbf_bandwidth_scale", 0.0, strict_minimum=True))
        set_("zeta", check_float(self.zeta, "zeta", minimum=0.0, strict_minimum=True))
        set_("rbf_gate", check_choice(self.rbf_gate, "rbf_gate", RBF_GATES))
        set_("n_gate_centers", check_positive_int(self.n_gate_centers, "n_gate_centers"))
        set_("gate_scale", check_float(self.gate_scale, "gate_scale", minimum=0.0, strict_minimum=True))
        set_("shell_quantile", check_float(self.shell_quantile, "shell_quantile", minimum=0.0, strict_minimum=True))
        if self.shell_quantile >= 0.5:
            raise InvalidInput(f"shell_quantile must be in (0, 0.5); got {self.shell_quantile!r}.")
        set_("shell_sharpness", check_float(self.shell_sharpness, "shell_sharpness", minimum=0.0, strict_minimum=True))
        set_("epochs", check_positive_int(self.epochs, "epochs"))
        set_("rbf_epochs", check_int(self.rbf_epochs, "rbf_epochs", minimum=0))
        set_("batch_size", check_positive_int(self.batch_size, "batch_size"))
        set_("learning_rate", check_float(self.learning_rate, "learning_rate", minimum=0.0, strict_minimum=True))
        set_("rbf_learning_rate", check_float(self.rbf_learning_rate, "rbf_learning_rate", 0.0, strict_minimum=True))
        set_("free_bits", check_float(self.free_bits, "free_bits", minimum=0.0))
        set_("seed", check_seed(self.seed, "seed"))
        set_("architecture", check_choice(self.architecture, "architecture", ARCHITECTURES))
        set_("image_shape", _check_config_image_shape(self.image_shape, self.input_dim, self.architecture))

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dict (hidden_dims and image_shape as lists).

        Returns
        -------
        dict
            Every field by name, except the shell gate's settings when rbf_gate is not "shell" and free_bits when
            it is 0 (so models saved before them re-save byte for byte); `VAEConfig(**payload)` rebuilds the configuration.
        """
        payload = dataclasses.asdict(self)
        if self.rbf_gate != "shell":
            for name in SHELL_FIELDS:
                payload.pop(name)
        if self.free_bits == 0.0:
            payload.pop("free_bits")
        payload["hidden_dims"] = list(self.hidden_dims)
        payload["image_shape"] = None if self.image_shape is None else list(self.image_shape)
        return payload

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> VAEConfig:
        """Build a config from a dict, refusing unknown or missing keys and wrongly typed values (InvalidInput).

        Keys added in later versions (architecture, image_shape) take their defaults when absent, so configs saved
        before them still load.

        Parameters
        ----------
        payload : mapping
            Field names and values (as written by `to_dict`).

        Returns
        -------
        VAEConfig
            The validated configuration.
        """
        if not isinstance(payload, Mapping):
            raise InvalidInput(f"A VAE config must be a dict; got {type(payload).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise InvalidInput(f"Unknown VAE config key(s) {unknown}; expected some of: {sorted(known)}.")
        if "input_dim" not in payload:
            raise InvalidInput("The VAE config is missing the required key 'input_dim'.")
        payload = dict(payload)
        if "rbf_gate" not in payload:  # saved before the gate existed: the paper's ungated RBF network
            payload["rbf_gate"] = "none"
        return cls(**payload)


def _check_hidden_dims(value: Any) -> tuple[int, ...]:
    """Return hidden layer widths as a tuple of ints >= 1 (may be empty), else raise InvalidInput."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise invalid_parameter("hidden_dims", "a list of ints >= 1", repr(value))
    return tuple(check_positive_int(width, f"hidden_dims[{i}]") for i, width in enumerate(value))


def _check_config_image_shape(value: Any, input_dim: int, architecture: str) -> tuple[int, ...] | None:
    """Return image_shape as (H, W) or (C, H, W) ints matching input_dim (None allowed for "mlp"), else InvalidInput."""
    expected = "(H, W) or (C, H, W) positive ints"
    if value is None:
        if architecture == "conv":
            raise InvalidInput(
                f"architecture='conv' needs image_shape, the {expected} that the input_dim={input_dim} values of "
                "each sample unflatten to (e.g. (28, 28) for MNIST); got None."
            )
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) not in (2, 3):
        raise invalid_parameter("image_shape", f"{expected}", repr(value))
    shape = tuple(check_positive_int(size, f"image_shape[{i}]") for i, size in enumerate(value))
    if math.prod(shape) != input_dim:
        raise InvalidInput(
            f"image_shape {shape} holds {math.prod(shape)} values but input_dim is {input_dim}; expected a shape "
            f"whose product is {input_dim}."
        )
    height, width = shape[-2:]
    if architecture == "conv" and (height % 4 or width % 4):
        raise InvalidInput(
            f"image_shape {shape} does not suit architecture='conv': height and width must be divisible by 4 (two "
            f"stride-2 convolutions); got H={height}, W={width}."
        )
    return shape


def _chw(image_shape: tuple[int, ...] | None) -> tuple[int, int, int]:
    """(C, H, W) of a validated (H, W) or (C, H, W) image shape."""
    assert image_shape is not None  # VAEConfig guarantees it for architecture="conv"
    return (1, *image_shape) if len(image_shape) == 2 else (image_shape[0], image_shape[1], image_shape[2])
