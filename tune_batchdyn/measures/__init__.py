"""Training-dynamics measures, torch only: per-sample gradient Gram (C̄K, LK, noise scale),
Hessian eigenvalue and trace, EVBMF stable-rank quality. No training loop, Ray or Optuna here.

Every measure leaves the model as it found it (modes, buffers, RNG, ``.grad``, hooks) and
returns its result rather than attaching it to the model.
"""

from tune_batchdyn.measures.checks import ConvergenceWarning
from tune_batchdyn.measures.condition import (
    active_condition,
    floored_condition,
    truncated_condition,
)
from tune_batchdyn.measures.evbmf import EVBMFBatch, evbmf, evbmf_batched
from tune_batchdyn.measures.fisher import FisherTracker
from tune_batchdyn.measures.gram import exact_gram, per_sample_gram
from tune_batchdyn.measures.hessian import EigenResult, hessian_top_eigenvalue
from tune_batchdyn.measures.noise import (
    NoiseScale,
    batch_statistics_couple,
    coupled_noise_scale,
    gradient_noise_scale,
    two_batch_noise_scale,
)
from tune_batchdyn.measures.quality import layer_quality, network_quality
from tune_batchdyn.measures.trace import TraceResult, hessian_trace

__all__ = [
    "ConvergenceWarning",
    "EVBMFBatch",
    "EigenResult",
    "FisherTracker",
    "NoiseScale",
    "TraceResult",
    "evbmf",
    "evbmf_batched",
    "exact_gram",
    "gradient_noise_scale",
    "batch_statistics_couple",
    "coupled_noise_scale",
    "two_batch_noise_scale",
    "hessian_top_eigenvalue",
    "hessian_trace",
    "layer_quality",
    "network_quality",
    "per_sample_gram",
    "truncated_condition",
    "active_condition",
    "floored_condition",
]
