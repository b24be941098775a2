"""The VAE of Arvanitidis, Hansen & Hauberg, "Latent Space Oddity" (ICLR 2018), and its safe save/load.

* an encoder q(z|x) = N(mean(x), diag(std(x)^2)) and a standard normal prior p(z);
* a decoder mean mu(z) (an MLP, or with architecture="conv" a small transposed-convolution net for images;
  output "sigmoid" for data in [0, 1] or "identity");
* two decoder standard deviations, kept side by side so the paper's comparison can be made:
  "standard", an MLP head trained jointly with the VAE (stage 1), and "rbf", the paper's RBF network for the
  precision, fitted afterwards with the encoder and the mean frozen (stage 2; see lsg_graph.model.train). Far from
  the data sigma(z) -> zeta^(-1/2): the decoder becomes uncertain off the data, which is what makes the pullback
  metric large there.

A model is saved as model.safetensors (weights, the authoritative config and the data record; no pickle) plus a
human-readable model.json, in one run-directory transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lsg_graph._io import (
    FORMAT_VERSION,
    load_tensors_with_checksum,
    run_read_lock,
    run_transaction,
    save_tensors,
    sha256_file,
    write_json,
)
from lsg_graph._validation import check_choice, resolve_device
from lsg_graph.errors import ArtifactError, InvalidInput, NotFittedError
from lsg_graph.model.config import VARIANCES, VAEConfig
from lsg_graph.model.networks import ConvEncoder, ConvMeanDecoder, Encoder, MeanDecoder, RBFStd, StandardStd, VAEDecoder
from lsg_graph.registry import DEFAULT_VARIANCE

__all__ = ["MODEL_FILE", "MODEL_JSON", "MODEL_KIND", "VAE"]

MODEL_KIND = "lsg-graph/model"
MODEL_FILE = "model.safetensors"
MODEL_JSON = "model.json"
_TIMING_KEYS = ("seconds",)  # train-report entries that vary between identical runs (kept out of the weights file)


class VAE(nn.Module):
    """Gaussian VAE with a mean decoder, a standard variance head and the paper's RBF precision network.

    Build it with `train_vae` (which resolves mean_output from the data) or `VAE.load`; a VAE built directly from a
    config whose mean_output is None uses the identity output. `.to(torch.float64)` converts every part.

    Parameters
    ----------
    config : VAEConfig

    Attributes
    ----------
    encoder, mean_decoder, standard_std, rbf_std : nn.Module
        The networks (lsg_graph.model.networks).
    rbf_fitted : bool
        Whether stage 2 has fitted the RBF precision network (decode(variance="rbf") needs it).
    train_summary : dict or None
        The training report's summary numbers.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        if not isinstance(config, VAEConfig):
            raise InvalidInput(f"VAE needs a VAEConfig; got {type(config).__name__}.")
        self.config = config
        conv = config.architecture == "conv"
        self.encoder = ConvEncoder(config) if conv else Encoder(config)
        self.mean_decoder = (ConvMeanDecoder if conv else MeanDecoder)(config, config.mean_output or "identity")
        self.standard_std = StandardStd(config)
        self.rbf_std = RBFStd(config)
        self.rbf_fitted = False
        self.train_summary: dict[str, Any] | None = None

    @property
    def input_dim(self) -> int:
        """Data dimension D."""
        return self.config.input_dim

    @property
    def latent_dim(self) -> int:
        """Latent dimension d."""
        return self.config.latent_dim

    def _like(self) -> Tensor:
        """A parameter, for the model's dtype and device."""
        return self.rbf_std.weight_free

    def _as_input(self, values: Any, name: str, columns: int) -> Tensor:
        """`values` as a (n, columns) tensor in the model's dtype and device, else InvalidInput naming its shape."""
        like = self._like()
        tensor = values if isinstance(values, Tensor) else torch.as_tensor(np.asarray(values))
        if tensor.ndim != 2 or tensor.shape[1] != columns:
            raise InvalidInput(f"{name} must have shape (n, {columns}); got shape {tuple(tensor.shape)}.")
        if not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64, torch.uint8, torch.bool)):
            raise InvalidInput(f"{name} must hold real numbers; got dtype {tensor.dtype}.")
        return tensor.to(dtype=like.dtype, device=like.device)

    def _std_module(self, variance: str) -> nn.Module:
        """The variance decoder called `variance`, refusing the RBF one before stage 2 has fitted it."""
        variance = check_choice(variance, "variance", VARIANCES)
        if variance == "standard":
            return self.standard_std
        if not self.rbf_fitted:
            raise NotFittedError(
                "The RBF variance network is not fitted yet: train the model with train_vae (stage 2, rbf_epochs) "
                "or use variance='standard'."
            )
        return self.rbf_std

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and std, each (n, d), of data x (n, D).

        Parameters
        ----------
        x : array-like or Tensor (n, D)
            Data.

        Returns
        -------
        mean, std : Tensor (n, d)
            The posterior's mean and standard deviation.
        """
        return self.encoder(self._as_input(x, "x", self.input_dim))

    def decode(self, z: Tensor, variance: str = DEFAULT_VARIANCE) -> tuple[Tensor, Tensor]:
        """Decoder mean and std, each (n, D), at latent points z (n, d); variance is "rbf" or "standard".

        Parameters
        ----------
        z : array-like or Tensor (n, d)
            Latent points.
        variance : {"rbf", "standard"}, default "rbf"
            The variance head.

        Returns
        -------
        mean, std : Tensor (n, D)
            The decoder's mean and standard deviation.
        """
        std = self._std_module(variance)
        z = self._as_input(z, "z", self.latent_dim)
        return self.mean_decoder(z), std(z)

    def decoder(self, variance: str = DEFAULT_VARIANCE) -> VAEDecoder:
        """The decoder z -> (mean, std) as an nn.Module sharing this model's weights (for the pullback metric).

        Parameters
        ----------
        variance : {"rbf", "standard"}, default "rbf"
            The variance head.

        Returns
        -------
        VAEDecoder
            z -> (mean, std), with the fused forward-mode passes the metric uses.
        """
        std = self._std_module(variance)
        return VAEDecoder(self.mean_decoder, std, self.latent_dim, self.input_dim, variance)

    def save(self, run_dir: str | Path, data_record: Mapping[str, Any] | None = None) -> Path:
        """Write model.safetensors (weights, authoritative config, data record), model.json and the manifest entry.

        `data_record` describes the data the model was trained on (the pipeline records {"spec", "split_seed",
        "held_out_fraction", "sha256"}); it is stored inside the weights file, so it travels with the model.
        Default: the record the model was loaded with. The files and the manifest are one run transaction: a
        failed save leaves the previous model, model.json and manifest intact. Returns the model's path, and sets
        `self.checksum` to the sha256 of the saved file.

        Parameters
        ----------
        run_dir : str or Path
            The run directory (created if needed).
        data_record : mapping, optional
            The record of the training data (default: the one loaded with the model).

        Returns
        -------
        Path
            The path of model.safetensors.
        """
        run_dir = Path(run_dir)
        report = dict(self.train_summary or {})
        record = getattr(self, "data_record", None) if data_record is None else dict(data_record)
        meta = {
            "format": MODEL_KIND,
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "rbf_fitted": bool(self.rbf_fitted),
            "dtype": str(self._like().dtype).removeprefix("torch."),
            # timings vary from run to run: they go to model.json, not into the weights file, which stays
            # byte-identical for the same seed on the same machine
            "train_report": {name: value for name, value in report.items() if name not in _TIMING_KEYS},
        }
        if record is not None:
            meta["data"] = record
        with run_transaction(run_dir) as transaction:
            staged = transaction.stage(MODEL_FILE)
            save_tensors(staged, dict(self.state_dict()), meta)
            summary = dict(meta, train_report=report)
            summary["note"] = f"Human-readable copy; the configuration stored in {MODEL_FILE} is authoritative."
            write_json(transaction.stage(MODEL_JSON), summary)
            transaction.record("model", [MODEL_FILE, MODEL_JSON], params=self.config.to_dict())
            self.checksum = sha256_file(staged)
        self.data_record = record
        return run_dir / MODEL_FILE

    @classmethod
    def load(cls, run_dir: str | Path, device: str | torch.device = "cpu") -> VAE:
        """Load a model saved by `save` (no pickle), checking format, version, checksum, tensor names and shapes.

        Parameters
        ----------
        run_dir : str or Path
            A run directory holding model.safetensors.
        device : str or torch.device, default "cpu"
            Where the model is placed ("auto", "cpu", "cuda").

        Returns
        -------
        VAE
            The model, fitted as saved.

        Raises
        ------
        ArtifactError
            A missing, corrupt or incompatible model file.
        """
        run_dir = Path(run_dir)
        if not run_dir.exists():
            raise ArtifactError(f"The run directory {str(run_dir)!r} does not exist.")
        if not run_dir.is_dir():
            raise ArtifactError(f"The run directory {str(run_dir)!r} is a file, not a directory.")
        path = run_dir / MODEL_FILE
        device = resolve_device(device)
        with run_read_lock(run_dir):  # finishes an update a killed writer committed; no commit lands mid-read
            if not path.exists():
                raise ArtifactError(
                    f"No trained model in {str(run_dir)!r}: {str(path)!r} does not exist; train one first with "
                    f"'lsg-graph train --out {run_dir}'."
                )
            tensors, meta, checksum = load_tensors_with_checksum(path, MODEL_KIND)
        try:
            config = VAEConfig.from_dict(meta.get("config"))  # type: ignore[arg-type]
        except (InvalidInput, TypeError) as exc:
            raise ArtifactError(f"{str(path)!r} holds an invalid model config: {exc}") from exc
        rbf_fitted = meta.get("rbf_fitted")
        if not isinstance(rbf_fitted, bool):
            raise ArtifactError(f"{str(path)!r} has no valid 'rbf_fitted' flag (got {rbf_fitted!r}).")
        if config.rbf_gate == "codes" and "rbf_std.gate_projection" not in tensors and "rbf_std.gate_centers" in tensors:
            # saved before the gate measured distances in the active directions: all directions, as it did then
            tensors["rbf_std.gate_projection"] = torch.eye(config.latent_dim, dtype=tensors["rbf_std.gate_centers"].dtype)
        with torch.device("meta"):  # shapes only: a forged config cannot make us allocate before the check
            skeleton = cls(config)
        _check_state(path, tensors, skeleton.state_dict())
        model = cls(config)
        model.to(next(iter(tensors.values())).dtype)
        model.load_state_dict(tensors)
        model.rbf_fitted = rbf_fitted
        report = meta.get("train_report")
        model.train_summary = report if isinstance(report, dict) and report else None
        record = meta.get("data")
        if record is not None and not isinstance(record, dict):
            raise ArtifactError(f"{str(path)!r} has an invalid data record (got {type(record).__name__}, expected an object).")
        model.data_record = record
        model.checksum = checksum
        return model.to(device).eval()


def _check_state(path: Path, tensors: dict[str, Tensor], expected: Mapping[str, Tensor]) -> None:
    """Raise ArtifactError unless `tensors` has exactly the expected names and shapes, all float32 or all float64."""
    for name, reference in expected.items():
        if name not in tensors:
            raise ArtifactError(
                f"{str(path)!r} is missing the tensor {name!r} (expected shape {tuple(reference.shape)})."
            )
        if tuple(tensors[name].shape) != tuple(reference.shape):
            raise ArtifactError(
                f"{str(path)!r}: tensor {name!r} has shape {tuple(tensors[name].shape)}, expected "
                f"{tuple(reference.shape)} for the stored config."
            )
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ArtifactError(f"{str(path)!r} holds unexpected tensors {extra}; it does not match the stored config.")
    dtypes = {tensor.dtype for tensor in tensors.values()}
    if len(dtypes) != 1 or not dtypes <= {torch.float32, torch.float64}:
        raise ArtifactError(
            f"{str(path)!r} holds tensors of dtypes {sorted(map(str, dtypes))}; expected one float dtype."
        )
    for name, tensor in tensors.items():
        if not bool(torch.isfinite(tensor).all()):
            raise ArtifactError(
                f"{str(path)!r}: tensor {name!r} holds NaN or inf values; the model diverged or the file was altered."
            )
