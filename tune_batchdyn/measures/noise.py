"""Gradient noise scale B_simple (McCandlish et al. 2018), from the Gram or two batch sizes.

With ψ_i the per-sample gradients (columns of J), F̃ = JᵀJ and B the batch size:

    tr Σ  = B/(B−1) · (tr F̃ / B − 1ᵀF̃1 / B²)      (unbiased trace of the per-sample covariance)
    |G|²  = 1ᵀF̃1 / B² − tr Σ / B                    (unbiased squared norm of the true gradient)
    B_simple = tr Σ / |G|²

These are McCandlish's two-batch-size estimators (their Appendix A) with B_small = 1 and
B_big = B, free from the Gram the C̄K/LK measurement forms anyway:

    |G|² = (B|G_B|² − b|G_b|²) / (B − b),   tr Σ = (|G_b|² − |G_B|²) / (1/b − 1/B)

with |G_b|² the squared norm of a batch of b samples' mean-loss gradient (b = 1: the mean of
the per-sample squared norms, tr F̃ / B). Single estimates swing widely (|G|² may even come out
negative: then B_simple is +inf, the noise dominates); `FisherTracker` keeps exponential moving
averages of tr Σ and |G|² separately and reports their ratio, as the paper suggests.

Batch-norm normalising by the batch's statistics (training mode) couples the per-sample
gradients: its backward centres the output gradients over the batch, so the per-sample
gradients sum to less than independent ones would and the b = 1 estimate of |G|² comes out
low, often negative (B_simple +inf). For such models (`batch_statistics_couple`)
`coupled_noise_scale` takes b = B/2 instead: the first half of the batch through its own
forward and backward, |G_b|² of that half against |G_B|² = 1ᵀF̃1/B² of the whole. Against a
reference fitted to E|G_b|² = |G|² + tr Σ/b over batch sizes 16-256
(`benchmarks/noise_scale.py`, B = 128, synthetic data), the b = 1 estimate's tr Σ was 1.2-1.3x
the reference's on the small batch-norm CNN and 1.7-2.8x on ResNet-20, whose |G|² it gave
negative in all 10 batches after 150 SGD steps; the b = B/2 estimate's was 0.84-1.09x, its
B_simple 0.6-1.3x the reference's. It costs one forward and backward on B/2 samples per
measurement. Without batch-norm the b = 1 estimate stays: it follows the reference as well,
with less scatter (it uses every sample).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.measures.checks import check_batch, check_trainable
from tune_batchdyn.measures.condition import check_gram
from tune_batchdyn.measures.model_state import PerSampleLoss, per_sample_losses, preserved_state


class NoiseScale(NamedTuple):
    """The noise-scale estimate of one batch."""

    trace_covariance: float  #: tr Σ
    gradient_sq_norm: float  #: |G|², may be negative for a single batch
    b_simple: float  #: tr Σ / |G|² (+inf when |G|² <= 0)


def simple_noise_scale(trace_covariance: float, gradient_sq_norm: float) -> float:
    """B_simple = tr Σ / |G|², +inf when the gradient estimate is not positive."""
    if gradient_sq_norm <= 0.0:
        return math.inf
    return trace_covariance / gradient_sq_norm


def gradient_noise_scale(gram: Tensor) -> NoiseScale:
    """tr Σ, |G|² and B_simple of one batch from its per-sample gradient Gram (B >= 2)."""
    check_gram(gram)
    batch = gram.shape[0]
    if batch < 2:
        raise ConfigError(f"gradient_noise_scale needs a batch of at least 2; got B={batch}.")
    gram = gram.double()
    mean_sq_norm = float(gram.diagonal().sum()) / batch  # tr F̃ / B
    batch_grad_sq = float(gram.sum()) / batch**2  # 1ᵀF̃1 / B² = |mean gradient|²
    trace_covariance = batch / (batch - 1) * (mean_sq_norm - batch_grad_sq)
    gradient_sq_norm = batch_grad_sq - trace_covariance / batch
    return NoiseScale(
        trace_covariance, gradient_sq_norm, simple_noise_scale(trace_covariance, gradient_sq_norm)
    )


def two_batch_noise_scale(big_sq_norm: float, big: int, small_sq_norm: float,
                          small: int) -> NoiseScale:
    """tr Σ, |G|² and B_simple from the squared gradient norms of a batch of ``big`` samples
    and one of ``small`` (McCandlish et al. 2018, Appendix A; the module docstring)."""
    if not 1 <= small < big:
        raise ConfigError(f"two_batch_noise_scale needs 1 <= small < big; got small={small}, "
                          f"big={big}.")
    trace_covariance = (small_sq_norm - big_sq_norm) / (1.0 / small - 1.0 / big)
    gradient_sq_norm = (big * big_sq_norm - small * small_sq_norm) / (big - small)
    return NoiseScale(
        trace_covariance, gradient_sq_norm, simple_noise_scale(trace_covariance, gradient_sq_norm)
    )


def batch_statistics_couple(model: nn.Module) -> bool:
    """Whether a batch-norm layer of ``model`` normalises by the batch's own statistics
    (training mode, or no running statistics): then per-sample gradients are not independent."""
    return any(isinstance(m, _BatchNorm) and (m.training or not m.track_running_stats)
               for m in model.modules())


def batch_gradient_sq_norm(model: nn.Module, inputs: Tensor, targets: Tensor,
                           loss_fn: PerSampleLoss | None = None) -> float:
    """|∇θ (1/b) Σ ℓᵢ|² over the trainable parameters for this batch, in the model's mode,
    with the model left exactly as it was (`preserved_state`; ``.grad`` is not touched)."""
    check_batch(inputs, targets)
    check_trainable(model)
    params = [p for p in model.parameters() if p.requires_grad]
    with preserved_state(model, inputs), torch.enable_grad():
        loss = per_sample_losses(loss_fn, model(inputs), targets, inputs.shape[0]).mean()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    squares = [g.detach().to(torch.float64).square().sum() for g in grads if g is not None]
    return float(torch.stack(squares).sum()) if squares else 0.0


def coupled_noise_scale(gram: Tensor, model: nn.Module, inputs: Tensor, targets: Tensor,
                        loss_fn: PerSampleLoss | None = None) -> NoiseScale:
    """The noise scale of a batch whose per-sample gradients batch-norm couples: b = B/2 (the
    first half of ``inputs``, through its own forward and backward) against the whole batch's
    |G_B|² = 1ᵀF̃1/B² from its Gram (module docstring). B >= 4, so that the half batch has
    the two samples batch-norm needs in training mode."""
    check_gram(gram)
    check_batch(inputs, targets)
    batch = gram.shape[0]
    if batch < 4 or inputs.shape[0] != batch:
        raise ConfigError(f"coupled_noise_scale needs the batch of the Gram, of at least 4 "
                          f"samples; got a {batch}×{batch} Gram and {inputs.shape[0]} inputs.")
    half = batch // 2
    big_sq_norm = float(gram.double().sum()) / batch**2
    small_sq_norm = batch_gradient_sq_norm(model, inputs[:half], targets[:half], loss_fn)
    return two_batch_noise_scale(big_sq_norm, batch, small_sq_norm, half)
