"""Gradient noise scale from the same Gram matrix, at no extra cost (McCandlish et al. 2018).

With ψ_i the per-sample gradients (columns of J), F̃ = JᵀJ and B the batch size:

    tr Σ  = B/(B−1) · (tr F̃ / B − 1ᵀF̃1 / B²)      (unbiased trace of the per-sample covariance)
    |G|²  = 1ᵀF̃1 / B² − tr Σ / B                    (unbiased squared norm of the true gradient)
    B_simple = tr Σ / |G|²

These are McCandlish's two-batch-size estimators with B_small = 1 and B_big = B. Single
estimates swing widely (|G|² may even come out negative: then B_simple is +inf, the noise
dominates); `FisherTracker` keeps exponential moving averages of tr Σ and |G|² separately and
reports their ratio, as the paper suggests.

The estimators assume independent per-sample gradients. Batch-norm in training mode couples
them through the batch statistics (its backward centres the output gradients over the
batch), which biases |G|² low: on a ResNet-20 after 50-150 SGD steps the training-mode |G|²
came out negative at B = 32 and 128 where eval mode gave a positive one at B = 128, and
on the GPU sweep most batch-norm trials reported +inf. For such models read `noise_scale`
as "noise dominates or is not measurable this way".
"""

from __future__ import annotations

import math
from typing import NamedTuple

from torch import Tensor

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.measures.condition import check_gram


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
