"""The GPU path end to end against the CPU (skipped without CUDA): training, encoding, kNN, edge weights, refinement."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lsg_graph.data import load_digits
from lsg_graph.geodesics.refine import refine_geodesics
from lsg_graph.graph.knn import knn
from lsg_graph.graph.latent_graph import build_latent_graph
from lsg_graph.graph.weights import edge_lengths
from lsg_graph.metric import PullbackMetric
from lsg_graph.model import VAEConfig, encode_codes, train_vae

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def trained() -> tuple:
    """A small VAE trained on the CPU, its codes, and a float64 copy of its decoder on each device."""
    images = load_digits().images[:400]
    vae, _ = train_vae(images, VAEConfig(input_dim=64, epochs=5, rbf_epochs=2, n_centers=16), progress=False)
    codes = encode_codes(vae, images)
    cpu = copy.deepcopy(vae.decoder("rbf")).double()
    return vae, images, codes, cpu, copy.deepcopy(cpu).to("cuda")


def test_training_on_cuda_gives_a_working_model() -> None:
    """train_vae(device='cuda') trains, keeps its RBF variance growing away from the data, and encodes."""
    images = load_digits().images[:300]
    vae, report = train_vae(images, VAEConfig(input_dim=64, epochs=3, rbf_epochs=2, n_centers=8), progress=False, device="cuda")
    assert np.isfinite(report.stage1_losses[-1]) and np.isfinite(report.stage2_losses[-1])
    codes = encode_codes(vae, images)
    assert codes.shape == (300, 2) and np.isfinite(codes).all()


def test_encoding_on_cuda_matches_cpu(trained) -> None:
    vae, images, codes, _, _ = trained
    on_gpu = encode_codes(copy.deepcopy(vae).to("cuda"), images)
    np.testing.assert_allclose(on_gpu, codes, rtol=1e-4, atol=1e-5)


def test_torch_knn_on_cuda_matches_the_kdtree(trained) -> None:
    codes = trained[2]
    expected = knn(codes, 10, backend="kdtree")
    result = knn(codes, 10, backend="torch", device="cuda")
    np.testing.assert_array_equal(result.indices, expected.indices)


def test_edge_weights_on_cuda_match_cpu(trained) -> None:
    """Fused edge weighting on the GPU (large chunks) equals the CPU's in float64."""
    _, _, codes, cpu, gpu = trained
    rng = np.random.default_rng(0)
    starts = codes[rng.integers(0, len(codes), 5000)].astype(np.float64)
    ends = starts + 0.05 * rng.standard_normal(starts.shape)
    np.testing.assert_allclose(edge_lengths(PullbackMetric(gpu), starts, ends), edge_lengths(PullbackMetric(cpu), starts, ends), rtol=1e-10)


def test_graph_built_on_cuda_matches_cpu(trained) -> None:
    _, _, codes, cpu, gpu = trained
    on_cpu = build_latent_graph(PullbackMetric(cpu), codes, k=8, device="cpu")
    on_gpu = build_latent_graph(PullbackMetric(gpu), codes, k=8, device="cuda")
    assert on_gpu.params["backend"] in ("torch", "faiss")
    assert on_cpu.weights.nnz == on_gpu.weights.nnz
    np.testing.assert_array_equal(on_gpu.weights.indices, on_cpu.weights.indices)
    np.testing.assert_allclose(on_gpu.weights.data, on_cpu.weights.data, rtol=1e-10)


def test_refinement_on_cuda_matches_cpu(trained) -> None:
    """Shooting on the GPU converges for the same pairs, to the same lengths (1e-6), as on the CPU."""
    _, _, codes, cpu, gpu = trained
    graph = build_latent_graph(PullbackMetric(cpu), codes, k=8, device="cpu")
    pairs = np.random.default_rng(1).integers(0, len(codes), (10, 2))
    on_cpu = refine_geodesics(PullbackMetric(cpu), graph, pairs)
    on_gpu = refine_geodesics(PullbackMetric(gpu), graph, pairs)
    for a, b in zip(on_cpu, on_gpu):
        assert a.method == b.method and a.converged == b.converged
        assert b.length == pytest.approx(a.length, rel=1e-6)
