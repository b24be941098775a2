"""as_decoder / CallableDecoder: adapting callables and modules to the Decoder protocol, and rejecting bad ones."""

from __future__ import annotations

import pytest
import torch

from lsg_graph.decoder import CallableDecoder, Decoder, as_decoder
from lsg_graph.errors import DecoderError, InvalidInput
from lsg_graph.manifolds import SphereChart

WEIGHTS = torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.5, 0.0, 3.0, 1.0]])  # latent 2 -> output 4


def mean_only(z: torch.Tensor) -> torch.Tensor:
    """A plain function returning only a mean (n, 4)."""
    return torch.tanh(z @ WEIGHTS.to(z))


def mean_and_std(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A plain function returning (mean (n, 4), positive std (n, 4))."""
    return mean_only(z), torch.exp(z @ WEIGHTS.to(z))


class FakeModel:
    """Stands in for a trained model with a zero-argument `decoder()` method (like the VAE)."""

    def decoder(self, variance: bool = True) -> Decoder:
        return as_decoder(mean_and_std if variance else mean_only, latent_dim=2)


def test_mean_only_callable_is_wrapped() -> None:
    decoder = as_decoder(mean_only, latent_dim=2)
    assert isinstance(decoder, CallableDecoder) and isinstance(decoder, Decoder)
    assert (decoder.latent_dim, decoder.output_dim) == (2, 4)
    assert (decoder.device, decoder.dtype) == (torch.device("cpu"), torch.get_default_dtype())
    z = torch.randn(5, 2)
    mean, std = decoder(z)
    assert std is None and torch.equal(mean, mean_only(z))


def test_mean_and_std_callable_is_wrapped() -> None:
    decoder = as_decoder(mean_and_std, latent_dim=2)
    mean, std = decoder(torch.zeros(3, 2))
    assert mean.shape == std.shape == (3, 4)
    listed = as_decoder(lambda z: list(mean_and_std(z)), latent_dim=2)
    assert listed(torch.zeros(3, 2))[1].shape == (3, 4)


def test_module_is_wrapped_with_inferred_dims_and_moves_with_to() -> None:
    module = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 5))
    decoder = as_decoder(module)
    assert isinstance(decoder, CallableDecoder)
    assert (decoder.latent_dim, decoder.output_dim, decoder.dtype) == (2, 5, torch.float32)
    decoder.to(torch.float64)
    assert decoder.dtype == torch.float64 and module[0].weight.dtype == torch.float64
    assert decoder(torch.zeros(2, 2, dtype=torch.float64))[0].dtype == torch.float64


def test_parameter_free_wrapper_records_given_and_moved_dtype() -> None:
    decoder = CallableDecoder(mean_only, latent_dim=2, dtype=torch.float64)
    assert (decoder.output_dim, decoder.dtype) == (4, torch.float64)
    assert decoder.to(torch.float32).dtype == torch.float32


def test_conforming_decoder_is_returned_unchanged() -> None:
    sphere = SphereChart()
    assert as_decoder(sphere) is sphere
    with pytest.raises(InvalidInput, match="latent_dim=3"):
        as_decoder(sphere, latent_dim=3)


def test_model_with_decoder_method_is_unwrapped() -> None:
    decoder = as_decoder(FakeModel())
    assert decoder.output_dim == 4 and decoder(torch.zeros(1, 2))[1] is not None


def test_wrong_shape_output_raises_decoder_error_naming_the_shape() -> None:
    with pytest.raises(DecoderError, match=r"\(4, 3\)"):
        as_decoder(lambda z: mean_only(z).T, latent_dim=2)
    with pytest.raises(DecoderError, match=r"shape \(3, 2\)"):
        as_decoder(lambda z: (mean_only(z), mean_only(z)[:, :2].exp()), latent_dim=2)
    with pytest.raises(DecoderError, match="expected"):
        as_decoder(lambda z: "not a tensor", latent_dim=2)


def test_nan_output_raises_decoder_error() -> None:
    with pytest.raises(DecoderError, match="3 non-finite"):
        as_decoder(lambda z: torch.cat([mean_only(z)[:, :3], torch.full((len(z), 1), torch.nan)], 1), latent_dim=2)


def test_missing_latent_dim_raises_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="latent_dim"):
        as_decoder(mean_only)


def test_negative_std_raises_decoder_error() -> None:
    with pytest.raises(DecoderError, match="std"):
        as_decoder(lambda z: (mean_only(z), -torch.ones(z.shape[0], 4)), latent_dim=2)


def test_decoder_that_raises_becomes_decoder_error() -> None:
    with pytest.raises(DecoderError, match="RuntimeError"):
        as_decoder(mean_only, latent_dim=3)  # (3, 3) @ (2, 4) fails


def test_not_callable_raises_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="callable"):
        as_decoder(42, latent_dim=2)


def test_bound_method_of_a_module_follows_its_module() -> None:
    module = torch.nn.Linear(2, 3).double()
    decoder = as_decoder(module.forward, latent_dim=2)
    assert decoder.dtype == torch.float64 and decoder.output_dim == 3
    decoder.to(torch.float32)
    assert module.weight.dtype == torch.float32 and decoder.dtype == torch.float32
