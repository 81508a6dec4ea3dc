"""Importance sampling by the last-layer gradient-norm bound (importance-sampling, Alg. 1).

Per step with batch b:

- score: Ĝᵢ = ‖∂ℓᵢ/∂z^{(L)}‖ = ‖softmax(zᵢ) − onehot(yᵢ)‖ for softmax cross-entropy (eq. 20,
  without the constant Lρ, which cancels), from one forward pass without backward;
- if the smoothed τ > τ_th: pre-sample U of B = ⌈presample·b⌉ points uniformly, gᵢ = Ĝᵢ/ΣĜ,
  draw b points from U with replacement with probability gᵢ and weight wᵢ = 1/(B gᵢ), so
  E[(1/b) Σ wᵢ ∇ℓᵢ] = (1/B) Σ_{j∈U} ∇ℓⱼ (unbiased); otherwise train on the uniform batch;
- τ⁻¹ = sqrt(1 − ‖g − u‖²/Σgᵢ²) over the scored set (eq. 26; this equals 1/sqrt(|U|Σgᵢ²)),
  smoothed τ ← a_τ τ + (1 − a_τ) τ_new from τ = 0. τ·b is the effective batch size.

Departures: the uniform branch scores its b points with an extra forward pass (the authors
reuse the previous step's forward); scores come from the model in eval mode on un-augmented
inputs (no batch-norm statistics are touched).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.strategies.base import RunView, Strategy
from tune_batchdyn.strategies.registry import register


def gradient_norm_bound(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Ĝᵢ = ‖softmax(zᵢ) − onehot(yᵢ)‖₂ per sample (the last-layer gradient norm of CE)."""
    residual = torch.softmax(logits.float(), dim=1)
    residual[torch.arange(len(targets), device=residual.device), targets] -= 1.0
    return residual.norm(dim=1)


def tau_from_scores(scores: torch.Tensor) -> float:
    """τ = (1 − ‖g − u‖²/Σgᵢ²)^(−1/2) with g = scores/Σscores and u uniform (eq. 26)."""
    total = float(scores.sum())
    if not total > 0:
        return 1.0
    g = scores.double() / total
    squares = float((g * g).sum())
    distance = float(((g - 1.0 / len(g)) ** 2).sum())
    return 1.0 / math.sqrt(max(1.0 - distance / squares, 1e-12))


def importance_sample(*, scores: torch.Tensor, batch_size: int,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``batch_size`` positions of ``scores`` with p ∝ score (with replacement).

    Returns the positions and their weights 1/(B pᵢ), B = len(scores); all-zero scores fall
    back to the uniform distribution (weights 1).
    """
    scores = scores.detach().double().cpu()
    total = float(scores.sum())
    p = scores / total if total > 0 else torch.full_like(scores, 1.0 / len(scores))
    positions = torch.multinomial(p, batch_size, replacement=True, generator=generator)
    weights = 1.0 / (len(p) * p[positions])
    return positions, weights.float()


class ImportanceSampling(Strategy):
    """``is``: pre-sample ``presample``·b, sample b by the gradient-norm bound while τ > τ_th."""

    name = "is"
    version = 1

    def __init__(self, presample: float = 5.0, tau_threshold: float = 1.5,
                 smoothing: float = 0.9) -> None:
        super().__init__()
        _check(presample, "presample", lambda v: v >= 1, "a number >= 1 (B = presample x b)")
        _check(tau_threshold, "tau_threshold", lambda v: v >= 1, "a number >= 1")
        _check(smoothing, "smoothing", lambda v: 0 <= v < 1, "a number in [0, 1)")
        self.presample = float(presample)
        self.tau_threshold = float(tau_threshold)
        self.smoothing = float(smoothing)
        self.tau = 0.0
        self._steps = 0
        self._sampled_steps = 0

    def begin_epoch(self, run: RunView) -> None:
        self._steps = self._sampled_steps = 0

    def select_batch(self, run: RunView,
                     indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        self._steps += 1
        if self.tau > self.tau_threshold:
            pool = run.draw_uniform(math.ceil(self.presample * len(indices)))
            scores = self._scores(run, pool)
            positions, weights = importance_sample(scores=scores, batch_size=len(indices),
                                                   generator=run.generator)
            self._sampled_steps += 1
            self._update_tau(scores)
            return pool[positions.to(pool.device)], weights.to(run.device)
        self._update_tau(self._scores(run, indices))
        return indices, None

    @torch.no_grad()
    def _scores(self, run: RunView, indices: torch.Tensor) -> torch.Tensor:
        model = run.model
        was_training = model.training
        model.eval()
        try:
            logits = model(run.train_x[indices])
        finally:
            model.train(was_training)
        return gradient_norm_bound(logits, run.train_y[indices])

    def _update_tau(self, scores: torch.Tensor) -> None:
        self.tau = self.smoothing * self.tau + (1 - self.smoothing) * tau_from_scores(scores)

    def end_epoch(self, run: RunView, record: dict[str, Any]) -> None:
        record["tau"] = self.tau
        state = "on" if self._sampled_steps else "off"
        effective = self.tau * record["batch_size"]
        self.log(f"importance sampling {state} at epoch {run.epoch + 1}: {self._sampled_steps} "
                 f"of {self._steps} steps sampled (tau = {self.tau:.3f}, threshold "
                 f"{self.tau_threshold:g}, effective batch ~ {effective:.0f})")

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "tau": self.tau}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.tau = float(state.get("tau", 0.0))


def _check(value: Any, field: str, ok: Callable[[float], bool], accepted: str) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)
    if not (number and ok(value)):
        raise ConfigError(f"strategy 'is': {field}={value!r} is not accepted; use {accepted}.")


register("is", ImportanceSampling)
