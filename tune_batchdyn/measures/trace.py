"""Hessian trace of the mini-batch loss by Hutchinson's estimator, with its standard error.

tr H = E[zᵀHz] for Rademacher z (entries ±1), H the Hessian of the batch's mean loss (or the
block of ``params``), products from `hvp`. The estimate is the mean over probes; it stops when
the standard error of that mean, s/√n, falls to ``tol``·|mean| (after ``min_samples``), not
when the running mean stops changing (which says nothing about its error). A probe costs one
Hessian-vector product; the variance of one probe is 2(‖H‖²_F − Σ H²_ii), so a trace that is
small against ‖H‖_F needs many. Same mode handling as `hessian_top_eigenvalue` (eval mode).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.measures.checks import ConvergenceWarning, check_positive_int, check_tolerance
from tune_batchdyn.measures.hvp import (
    HessianVectorProduct,
    hessian_operator,
    select_parameters,
)
from tune_batchdyn.measures.model_state import PerSampleLoss


@dataclass(frozen=True)
class TraceResult:
    """Outcome of Hutchinson's trace estimate."""

    trace: float
    std_error: float
    n_samples: int
    converged: bool
    message: str


def hutchinson_trace(
    hvp: HessianVectorProduct,
    size: int,
    *,
    tol: float,
    min_samples: int,
    max_samples: int,
    seed: int,
    device: torch.device,
) -> TraceResult:
    """tr H ≈ mean of zᵀHz over Rademacher z, until std error ≤ tol·|mean| (Welford's
    running mean and variance)."""
    generator = torch.Generator().manual_seed(seed)
    mean, squares, std_error = 0.0, 0.0, math.inf
    for count in range(1, max_samples + 1):
        z = torch.randint(0, 2, (size,), generator=generator, dtype=torch.float64) * 2 - 1
        z = z.to(device)
        sample = float(z @ hvp(z))
        delta = sample - mean
        mean += delta / count
        squares += delta * (sample - mean)
        if count >= 2:
            std_error = math.sqrt(squares / (count - 1) / count)
        if count >= min_samples and std_error <= tol * abs(mean):
            return TraceResult(mean, std_error, count, True, f"converged after {count} samples")
    return TraceResult(
        mean,
        std_error,
        max_samples,
        False,
        f"not converged after {max_samples} samples (standard error "
        f"{std_error:.3g} > tol·|trace| = {tol * abs(mean):.3g})",
    )


def hessian_trace(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: PerSampleLoss | None = None,
    *,
    tol: float = 5e-2,
    min_samples: int = 10,
    max_samples: int = 200,
    params: Iterable[Tensor] | None = None,
    seed: int = 0,
    hvp: str = "double_backward",
    train_mode: bool = False,
) -> TraceResult:
    """tr H of the batch's mean loss by Hutchinson's estimator, with its standard error.

    Stops once the standard error is at most ``tol``·|estimate| (after ``min_samples``
    Rademacher probes) or at ``max_samples`` (then warns, `ConvergenceWarning`). Same mode
    handling and ``params`` as `hessian_top_eigenvalue`.
    """
    check_tolerance(tol)
    check_positive_int("min_samples", min_samples)
    check_positive_int("max_samples", max_samples)
    if min_samples > max_samples:
        raise ConfigError(f"min_samples={min_samples} must not exceed max_samples={max_samples}.")
    chosen = select_parameters(model, params)
    with hessian_operator(model, inputs, targets, loss_fn, chosen, hvp, train_mode) as product:
        result = hutchinson_trace(
            product,
            sum(p.numel() for p in chosen),
            tol=tol,
            min_samples=min_samples,
            max_samples=max_samples,
            seed=seed,
            device=inputs.device,
        )
    if not result.converged:
        warnings.warn(f"hessian_trace: {result.message}", ConvergenceWarning, stacklevel=2)
    return result
