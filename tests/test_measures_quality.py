"""EVBMF against a per-matrix SVD + scipy reference, rank recovery, and s, κ, q, Q by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from torch import nn

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.measures import (
    evbmf,
    evbmf_batched,
    layer_quality,
    network_quality,
)

# --- the reference: per-matrix SVD + scipy.optimize.minimize_scalar --------------------------


def reference_evbmf(matrix: np.ndarray, global_search: bool = True) -> dict:
    """Nakajima et al. (2013) written out with numpy/scipy, one matrix at a time.

    ``global_search``: minimise the free energy on each piece between its kinks (x_h = x̄)
    and keep the best; otherwise one bounded Brent search over the whole interval, as the
    RMSGD/AdaS reference code does (it may stop in a local minimum).
    """
    y = matrix if matrix.shape[0] <= matrix.shape[1] else matrix.T
    rows, cols = y.shape
    gamma = np.linalg.svd(y, compute_uv=False)
    alpha = rows / cols
    tau_bar = 2.5129 * math.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    start = math.ceil(rows / (1 + alpha)) - 1
    lower = max(gamma[start] ** 2 / (cols * x_bar), np.mean(gamma[start:] ** 2) / cols)
    upper = np.sum(gamma**2) / (rows * cols)

    def energy(sigma2: float) -> float:
        x = gamma**2 / (cols * sigma2)
        big, small = x[x > x_bar], x[x <= x_bar]
        tau = 0.5 * (big - (1 + alpha) + np.sqrt((big - (1 + alpha)) ** 2 - 4 * alpha))
        return float(np.sum(small - np.log(small)) + np.sum(big - tau)
                     + np.sum(np.log((tau + 1) / big)) + alpha * np.sum(np.log(tau / alpha + 1)))

    if lower >= upper:  # e.g. a single row: the interval is one point
        return {"values": gamma[:0], "sigma2": upper, "energy": energy}
    kinks = gamma**2 / (cols * x_bar)
    edges = [lower, upper]
    if global_search:
        edges = sorted({lower, upper, *kinks[(kinks > lower) & (kinks < upper)]})
    candidates = [minimize_scalar(energy, bounds=(lo, hi), method="bounded",
                                  options={"xatol": 1e-13 * upper})
                  for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    sigma2 = min(candidates, key=lambda r: r.fun).x
    kept = gamma[gamma > math.sqrt(cols * sigma2 * x_bar)]
    ratio = (rows + cols) * sigma2 / kept**2
    shrunk = kept / 2 * (1 - ratio + np.sqrt((1 - ratio) ** 2
                                             - 4 * rows * cols * sigma2**2 / kept**4))
    return {"values": shrunk, "sigma2": sigma2, "energy": energy}


def low_rank_plus_noise(rows: int, cols: int, rank: int, strength: float,
                        seed: int) -> torch.Tensor:
    """Gaussian noise (σ = 1) plus a rank-``rank`` signal whose singular values are
    ``strength``·(√rows + √cols)·(1 … 1.5); the noise's largest singular value is about
    √rows + √cols."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(rows, cols, generator=generator, dtype=torch.float64)
    if rank == 0:
        return noise
    left = torch.linalg.qr(torch.randn(rows, rank, generator=generator, dtype=torch.float64))[0]
    right = torch.linalg.qr(torch.randn(cols, rank, generator=generator, dtype=torch.float64))[0]
    values = strength * (math.sqrt(rows) + math.sqrt(cols)) * torch.linspace(
        1.0, 1.5, rank, dtype=torch.float64)
    return noise + left @ torch.diag(values) @ right.T


SETTINGS = [  # (rows, cols, rank, strength)
    (20, 50, 2, 1.5), (50, 20, 3, 0.8), (64, 64, 5, 1.0), (30, 120, 0, 0.0), (16, 144, 4, 0.6),
    (100, 40, 8, 2.0), (9, 9, 1, 1.2), (48, 80, 6, 0.4), (1, 30, 1, 3.0), (64, 576, 10, 0.7),
]


@pytest.mark.parametrize("rows,cols,rank,strength", SETTINGS)
def test_evbmf_agrees_with_scipy_reference(rows, cols, rank, strength) -> None:
    matrix = low_rank_plus_noise(rows, cols, rank, strength, seed=rows * cols + rank)
    reference = reference_evbmf(matrix.numpy())
    result = evbmf_batched(matrix.unsqueeze(0))
    found = result.singular_values[0, : int(result.rank[0])].numpy()
    assert len(found) == len(reference["values"])
    np.testing.assert_allclose(found, reference["values"], rtol=1e-6)
    assert float(result.noise_variance[0]) == pytest.approx(reference["sigma2"], rel=1e-5)
    # the single-interval Brent search of the reference code never does better
    brent = reference_evbmf(matrix.numpy(), global_search=False)
    energy = reference["energy"]
    assert energy(float(result.noise_variance[0])) <= energy(brent["sigma2"]) + 1e-9


@pytest.mark.parametrize("rows,cols", [(40, 100), (100, 100), (200, 60), (64, 576)])
@pytest.mark.parametrize("rank", [0, 1, 3, 8])
def test_evbmf_recovers_true_rank_of_strong_signals(rows, cols, rank) -> None:
    """Signals well above the noise edge (1.5·(√L + √M)σ) are all kept, noise never
    (Nakajima et al. 2012, perfect dimensionality recovery for small rank)."""
    stack = torch.stack([low_rank_plus_noise(rows, cols, rank, 1.5, seed=s) for s in range(3)])
    assert evbmf_batched(stack).rank.tolist() == [rank] * 3


@pytest.mark.parametrize("rows,cols", [(40, 100), (100, 100)])
def test_evbmf_ignores_signals_below_the_detection_limit(rows, cols) -> None:
    """Below the phase transition ((LM)^{1/4}σ) a signal is invisible in the spectrum."""
    strength = 0.3 * (rows * cols) ** 0.25 / (math.sqrt(rows) + math.sqrt(cols))
    stack = torch.stack([low_rank_plus_noise(rows, cols, 2, strength, seed=s) for s in range(3)])
    assert evbmf_batched(stack).rank.tolist() == [0, 0, 0]


def test_batched_equals_one_at_a_time_and_vectors_reconstruct() -> None:
    matrices = [low_rank_plus_noise(30, 70, 4, 1.0, seed=s) for s in range(4)]
    batched = evbmf_batched(torch.stack(matrices), compute_vectors=True)
    for k, matrix in enumerate(matrices):
        u, s, v = evbmf(matrix)
        rank = int(batched.rank[k])
        assert s.shape == (rank,) and u.shape == (30, rank) and v.shape == (70, rank)
        torch.testing.assert_close(s, batched.singular_values[k, :rank])
        torch.testing.assert_close(u.T @ u, torch.eye(rank, dtype=torch.float64))
        torch.testing.assert_close(v.T @ v, torch.eye(rank, dtype=torch.float64))
        # U diag(s) Vᵀ is the shrunk SVD truncation of the matrix
        full_u, full_s, full_vh = torch.linalg.svd(matrix, full_matrices=False)
        truncated = full_u[:, :rank] @ torch.diag(s) @ full_vh[:rank]
        torch.testing.assert_close(u @ torch.diag(s) @ v.T, truncated)
    tall_u, tall_s, tall_v = evbmf(matrices[0].T)
    assert tall_u.shape[0] == 70 and tall_v.shape[0] == 30
    torch.testing.assert_close(tall_u @ torch.diag(tall_s) @ tall_v.T,
                               (lambda u, s, v: (u @ torch.diag(s) @ v.T).T)(*evbmf(matrices[0])))


def test_evbmf_runs_in_the_input_dtype_device_as_float64() -> None:
    u, s, v = evbmf(low_rank_plus_noise(10, 20, 2, 2.0, seed=0).float())
    assert s.dtype == torch.float64 and s.device.type == "cpu"
    with pytest.raises(ConfigError):
        evbmf(torch.zeros(3))


# --- s, κ, q and Q by hand --------------------------------------------------------------------


def diagonal(values: list[float], rows: int, cols: int) -> torch.Tensor:
    matrix = torch.zeros(rows, cols, dtype=torch.float64)
    for i, value in enumerate(values):
        matrix[i, i] = value
    return matrix


def test_layer_quality_of_hand_made_matrices() -> None:
    # exact low rank, no noise: the kept values are the singular values themselves
    record = layer_quality(diagonal([4.0, 2.0], 5, 8))
    assert record["rank"] == 2 and record["unfolding"] == "matrix"
    assert record["stable_rank"] == pytest.approx((16 + 4) / (5 * 16), rel=1e-9)
    assert record["condition"] == pytest.approx(1 - 2 / 4, rel=1e-9)
    assert record["q"] == pytest.approx(math.atan(0.25 / 0.5), rel=1e-9)
    # one component: κ = 0, q = π/2
    single = layer_quality(diagonal([3.0], 4, 4))
    assert single["condition"] == pytest.approx(0.0, abs=1e-9)
    assert single["q"] == pytest.approx(math.pi / 2)
    # noise only (as at initialisation): empty low-rank part
    noise = layer_quality(torch.randn(40, 90, generator=torch.Generator().manual_seed(0)))
    assert noise == {"stable_rank": 0.0, "condition": 1.0, "q": 0.0, "rank": 0,
                     "unfolding": "matrix"}


def test_conv_unfoldings() -> None:
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(8, 3, 3, 3, generator=generator, dtype=torch.float64)
    weight[:, 0] += 5.0  # a strong input-channel direction
    by_input = layer_quality(weight, "input")
    by_output = layer_quality(weight, "output")
    assert by_input["unfolding"] == "input" and by_output["unfolding"] == "output"
    assert by_input == {**layer_quality(weight.transpose(0, 1).reshape(3, 72)),
                        "unfolding": "input"}
    assert by_output == {**layer_quality(weight.reshape(8, 27)), "unfolding": "output"}
    both = layer_quality(weight)
    assert both["input"] == {k: v for k, v in by_input.items() if k != "unfolding"}
    s = (by_input["stable_rank"] + by_output["stable_rank"]) / 2
    kappa = (by_input["condition"] + by_output["condition"]) / 2
    assert both["stable_rank"] == pytest.approx(s) and both["condition"] == pytest.approx(kappa)
    assert both["q"] == pytest.approx(math.atan2(s, kappa))
    with pytest.raises(ConfigError, match="unfolding"):
        layer_quality(weight, "mode-3")


def test_network_quality_by_hand() -> None:
    # (the layers need not fit together: Q reads the weights only)
    model = nn.Sequential(nn.Linear(8, 5), nn.ReLU(), nn.Linear(12, 6), nn.Conv2d(2, 4, 3))
    with torch.no_grad():
        model[0].weight.copy_(diagonal([4.0, 2.0], 5, 8))
        model[2].weight.copy_(diagonal([1.0, 1.0, 1.0], 6, 12))
        model[3].weight.zero_()
    result = network_quality(model)
    assert set(result["layers"]) == {"0", "2", "3"}
    q0 = math.atan((20 / 80) / 0.5)
    q2 = math.atan2(3 / 6, 0.0)  # equal values: κ = 0, q = π/2
    assert result["layers"]["0"]["q"] == pytest.approx(q0, rel=1e-9)
    assert result["layers"]["2"]["q"] == pytest.approx(q2, rel=1e-9)
    assert result["layers"]["3"]["q"] == 0.0  # zero weight: empty low-rank part
    assert result["Q"] == pytest.approx((q0**2 + q2**2) / math.sqrt(3), rel=1e-9)
    assert math.isnan(network_quality(nn.ReLU())["Q"])


def test_a_diverged_weight_gives_nan_not_a_linalg_error() -> None:
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3), nn.Conv2d(2, 3, 3))
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
        model[3].weight[0, 0, 0, 0] = float("inf")
    result = network_quality(model)
    assert math.isnan(result["Q"]) and result["layers"]["2"]["q"] >= 0.0
    assert math.isnan(result["layers"]["0"]["q"]) and math.isnan(result["layers"]["3"]["q"])


def test_network_quality_of_a_lazy_model_says_to_run_it_first() -> None:
    model = nn.Sequential(nn.LazyLinear(3), nn.Linear(3, 3))
    with pytest.raises(ConfigError, match="\\['0'\\] are not initialised.*forward pass first"):
        network_quality(model)
    model(torch.randn(2, 5))
    assert set(network_quality(model)["layers"]) == {"0", "1"}
