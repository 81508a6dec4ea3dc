"""ABS and ABSA: the Hessian-adaptive batch size of hessian-adaptive-batch-abs, Algorithm 1.

Every n training samples (default: one epoch) λ = λmax of the Hessian of the loss on a fixed
measurement batch (drawn once with the run's generator, kept in the state) is computed, and
(``abs_decision``):

    first check:             Eig ← λ
    λ < Eig/α:               B ← min(βB, B_max),  Eig ← λ,  d ← 0      (the eigenvalue fell)
    otherwise:               d ← d + 1;  if d = κ:  B ← min(βB, B_max),  d ← 0

with α = 2, β = 2, κ = 10. The learning rate follows the batch, lr = lr_step·B/B_0 (lr/|B|
constant, lr_step the seed's step-decayed base rate). ABSA adds FGSM examples
x + ε·sign(∇ₓℓ) on the first ⌊γ|B|⌋ samples of each batch (γ = 20%, ε = 0.005 in the
normalised input units), halves γ on each batch increase and sets γ = 0 from epoch τ
(default: half the epochs). Optional block Hessian: the last k parametrised layers only.

Departures from the seed: Alg. 1 line 10 reads "Current Eigen < 2·Eig" in our copy; we follow
its stated meaning ("eigenvalue decreasing ratio α") and DESIGN.md, λ < Eig/α. Alg. 1 has no
rule for the first check (Eig = None); we take it as the reference. Alg. 1 halves γ only on a
fall-triggered increase; we halve it on every increase. τ is counted in epochs (Alg. 1 counts
steps; with a changing batch, epochs are the unit a user can set in advance). B_max defaults
to min(16·B_0, n_train).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tune_batchdyn.errors import ConfigError, is_int
from tune_batchdyn.measures import hessian_top_eigenvalue
from tune_batchdyn.strategies.base import RunView, StepPlan, Strategy, step_decay_lr
from tune_batchdyn.strategies.gg import check_max_batch, default_max_batch, validate_max_batch
from tune_batchdyn.strategies.registry import register

#: ABSA's defaults (the seed's): FGSM on 20% of each batch with ε = 0.005.
DEFAULT_GAMMA = 0.2
DEFAULT_EPSILON = 0.005


@dataclass(frozen=True)
class AbsDecision:
    """The state after one eigenvalue check, and why the batch changed (empty: it did not)."""

    batch: int
    reference: float
    checks_without_fall: int
    reason: str


def abs_decision(*, eigenvalue: float, reference: float | None, checks_without_fall: int,
                 batch: int, alpha: float, beta: float, kappa: int,
                 max_batch: int) -> AbsDecision:
    """One check of Algorithm 1 (lines 8–18); see the module docstring."""
    if reference is None:
        return AbsDecision(batch, eigenvalue, 0, "")
    grown = min(int(round(batch * beta)), max_batch)
    if eigenvalue < reference / alpha:
        reason = f"λ fell from {reference:.4g} to {eigenvalue:.4g}" if grown != batch else ""
        return AbsDecision(grown, eigenvalue, 0, reason)
    if checks_without_fall + 1 >= kappa:
        reason = (f"λ did not fall by {alpha:g}x in {kappa} checks (now {eigenvalue:.4g}, "
                  f"reference {reference:.4g})") if grown != batch else ""
        return AbsDecision(grown, reference, 0, reason)
    return AbsDecision(batch, reference, checks_without_fall + 1, "")


def fgsm(model: nn.Module, loss_fn: Any, x: torch.Tensor, y: torch.Tensor,
         epsilon: float) -> torch.Tensor:
    """x + ε·sign(∇ₓ Σℓ) (Goodfellow et al.'s fast gradient sign method); parameters untouched."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(model(x), y).sum(), x)
    return (x + epsilon * grad.sign()).detach()


class AdaptiveBatch(Strategy):
    """ABS: batch ×β when λmax fell by α or after κ checks without a fall; lr/|B| constant."""

    name = "abs"
    version = 1
    adversarial = False

    def __init__(self, alpha: float = 2.0, beta: float = 2.0, kappa: int = 10,
                 max_batch: int | None = None, every: int | None = None,
                 measure_samples: int = 128, block_layers: int | None = None,
                 tol: float = 1e-2, gamma: float | None = None, epsilon: float | None = None,
                 tau: int | None = None) -> None:
        super().__init__()
        if not self.adversarial and (gamma, epsilon, tau) != (None, None, None):
            raise ConfigError(f"strategy {self.name!r} takes no adversarial options (gamma, "
                              "epsilon, tau); use 'absa' for FGSM examples.")
        gamma = DEFAULT_GAMMA if gamma is None else gamma
        epsilon = DEFAULT_EPSILON if epsilon is None else epsilon
        check = self._check
        check(alpha, "alpha", lambda v: v > 1, "a number > 1")
        check(beta, "beta", lambda v: v > 1, "a number > 1")
        check(kappa, "kappa", lambda v: is_int(v) and v >= 1, "an integer >= 1")
        check_max_batch(self.name, max_batch)
        check(every, "every", lambda v: is_int(v) and v >= 1,
              "an integer >= 1 (samples between checks; omit it for one epoch)", optional=True)
        check(measure_samples, "measure_samples", lambda v: is_int(v) and v >= 1,
              "an integer >= 1")
        check(block_layers, "block_layers", lambda v: is_int(v) and v >= 1,
              "an integer >= 1 (the last k layers), or omit it for the full Hessian",
              optional=True)
        check(tol, "tol", lambda v: 0 < v < 1, "a number in (0, 1)")
        check(gamma, "gamma", lambda v: 0 <= v <= 1, "a fraction in [0, 1]")
        check(epsilon, "epsilon", lambda v: v >= 0, "a number >= 0")
        check(tau, "tau", lambda v: is_int(v) and v >= 0,
              "an integer >= 0 (the epoch adversarial examples stop)", optional=True)
        self.alpha, self.beta, self.kappa = float(alpha), float(beta), kappa
        self.max_batch, self.every = max_batch, every
        self.measure_samples, self.block_layers, self.tol = measure_samples, block_layers, tol
        self.epsilon, self.tau = float(epsilon), tau
        # state
        self.batch: int | None = None
        self.gamma = float(gamma) if self.adversarial else 0.0
        self.reference: float | None = None
        self.checks_without_fall = 0
        self.checks = 0
        self.eigenvalue = math.nan
        self.measured_epoch: int | None = None  #: the epoch ``eigenvalue`` was measured in
        self.converged = False  #: whether that measurement met its tolerance
        self.eigenvector: torch.Tensor | None = None  #: warm start of the next λmax
        self.measure_indices: torch.Tensor | None = None

    def _check(self, value: Any, field: str, ok: Callable[[float], bool], accepted: str,
               optional: bool = False) -> None:
        if optional and value is None:
            return
        number = isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)
        if not (number and ok(value)):
            raise ConfigError(f"strategy {self.name!r}: {field}={value!r} is not accepted; use "
                              f"{accepted}.")

    def validate(self, *, epochs: int, n_train: int, batch_size: int) -> None:
        validate_max_batch(self.name, self.max_batch, n_train=n_train, batch_size=batch_size)

    # --- the loop -----------------------------------------------------------------------------
    def begin_epoch(self, run: RunView) -> None:
        if self.measure_indices is None:
            self.measure_indices = run.draw_uniform(self.measure_samples).cpu()
        if self.batch is None:
            self.batch = run.base_batch_size
        tau = run.epochs // 2 if self.tau is None else self.tau
        if self.gamma > 0 and run.epoch >= tau:
            self.gamma = 0.0
            self.log(f"adversarial examples off from epoch {run.epoch + 1} (tau = {tau})")

    def plan_step(self, run: RunView) -> StepPlan:
        batch = self.batch or run.base_batch_size
        return StepPlan(batch, step_decay_lr(run) * batch / run.base_batch_size)

    def transform_batch(self, run: RunView, x: torch.Tensor,
                        y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = int(self.gamma * len(x))
        if count == 0 or self.epsilon == 0:
            return x, y
        if not x.is_floating_point():
            raise ConfigError(f"strategy 'absa' perturbs the inputs (FGSM) and needs floating "
                              f"inputs, but the data hold {x.dtype} (token ids?); use 'abs'.")
        perturbed = fgsm(run.model, run.loss_fn, x[:count], y[:count], self.epsilon)
        return torch.cat([perturbed, x[count:]]), y

    def after_step(self, run: RunView, loss: torch.Tensor) -> None:
        every = self.every or run.n_train
        if run.samples_seen < (self.checks + 1) * every:
            return
        self.checks = run.samples_seen // every
        self.eigenvalue = self._eigenvalue(run)
        self.measured_epoch = run.epoch
        decision = abs_decision(
            eigenvalue=self.eigenvalue, reference=self.reference,
            checks_without_fall=self.checks_without_fall, batch=self.batch, alpha=self.alpha,
            beta=self.beta, kappa=self.kappa,
            max_batch=default_max_batch(run.base_batch_size, run.n_train, self.max_batch))
        if decision.batch != self.batch:
            self.log(f"batch {self.batch} -> {decision.batch} at epoch {run.epoch + 1} "
                     f"(after {run.samples_seen} samples) because {decision.reason}")
            if self.gamma > 0:
                self.gamma /= 2
        self.batch = decision.batch
        self.reference = decision.reference
        self.checks_without_fall = decision.checks_without_fall

    def _eigenvalue(self, run: RunView) -> float:
        indices = self.measure_indices.to(run.device)
        params = None
        if self.block_layers is not None:
            layers = [m for m in run.model.modules()
                      if any(p.requires_grad for p in m.parameters(recurse=False))]
            params = [p for m in layers[-self.block_layers:] for p in m.parameters(recurse=False)
                      if p.requires_grad]
        result = hessian_top_eigenvalue(run.model, run.train_x[indices], run.train_y[indices],
                                        run.loss_fn, tol=self.tol, params=params,
                                        start=self.eigenvector, return_info=True)
        self.eigenvector = result.vector.cpu()
        self.converged = bool(result.converged)
        if not result.converged:
            self.log(f"λmax at epoch {run.epoch + 1}: {result.message}")
        return result.eigenvalue

    def hessian_top(self, run: RunView, samples: int) -> float | None:
        if (self.block_layers is not None or self.measured_epoch != run.epoch
                or not self.converged or self.measure_samples != samples):
            return None
        return self.eigenvalue

    # --- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "batch": self.batch, "gamma": self.gamma,
                "reference": self.reference, "checks_without_fall": self.checks_without_fall,
                "checks": self.checks, "eigenvalue": self.eigenvalue,
                "measure_indices": self.measure_indices, "eigenvector": self.eigenvector}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.batch = state["batch"]
        self.gamma = float(state["gamma"])
        self.reference = state["reference"]
        self.checks_without_fall = int(state["checks_without_fall"])
        self.checks = int(state["checks"])
        self.eigenvalue = float(state.get("eigenvalue", math.nan))
        self.measure_indices = state["measure_indices"]
        self.eigenvector = state.get("eigenvector")


class AdaptiveBatchAdversarial(AdaptiveBatch):
    """ABSA: ABS plus FGSM examples on a fraction γ of each batch until epoch τ."""

    name = "absa"
    adversarial = True



register("abs", AdaptiveBatch)
register("absa", AdaptiveBatchAdversarial)
