"""The trial's measure hook: which training-dynamics measures to take, and when.

The engine calls ``before_step`` with every training mini-batch (before its update) and
``end_epoch`` once per epoch; the returned dict fills the record's measure columns.

- ``fisher``: the per-sample Gram F̃ of the current mini-batch every ``measure_every``
  iterations (iterations 1, 51, 101, ... as the seed) feeds C̄K, LK and the noise-scale EMA
  (for a model whose batch-norm normalises by the batch, from half the batch's own gradient
  against the whole's: `coupled_noise_scale`, one forward and backward on B/2 samples more).
  The lr in LK is the first parameter group's (RMSGD's per-layer rates: its first layer's).
  Modules of a user's model without a per-sample rule get theirs from torch.func (slower; the
  process logs which, once).
- ``quality``: the stable-rank quality Q of the weights after each epoch (no data needed).
- ``hessian``: λmax of the loss on a fixed measurement batch of ``hessian_samples`` training
  samples (eval-mode batch-norm, as the seed), every ``hessian_every`` epochs and at the last,
  warm-started from the previous measurement's eigenvector (kept in checkpoints); an epoch in
  which the strategy measured λmax itself (ABS) reports that one instead of paying twice.
  ``hessian_every=None`` picks the interval that keeps its cost near 10% of training: one λmax
  costs about ``HESSIAN_COST_STEPS`` training steps of the base batch size.

Measures leave the model, its gradients and every random generator as they were, so a trial
with measures trains exactly like one without.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import torch

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.measures import (
    ConvergenceWarning,
    FisherTracker,
    batch_statistics_couple,
    coupled_noise_scale,
    hessian_top_eigenvalue,
    network_quality,
    per_sample_gram,
)
from tune_batchdyn.measures.gram import fallback_modules
from tune_batchdyn.train.config import TrialConfig
from tune_batchdyn.train.stepper import optimizer_lr

log = logging.getLogger("tune_batchdyn.train")

#: Cost of one λmax (about 20 Hessian-vector products on the measurement batch), in steps.
HESSIAN_COST_STEPS = 40
#: Share of the training time the Hessian may take when ``hessian_every`` is automatic.
HESSIAN_BUDGET = 0.10
#: What the Gram does with a module it has no per-sample rule for (a user's model may hold one).
FALLBACK = "torch.func"
#: The torch.func fallbacks this process has logged (once each, not once per trial).
_FALLBACKS_LOGGED: set[tuple[str, ...]] = set()
#: Version of `Monitor.state_dict`'s layout.
STATE_VERSION = 1


def hessian_interval(config: TrialConfig, n_train: int) -> int:
    """Epochs between λmax measurements: the config's, or the cheapest within the budget."""
    if config.hessian_every is not None:
        return config.hessian_every
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    cost = HESSIAN_COST_STEPS * max(1.0, config.hessian_samples / config.batch_size)
    return max(1, math.ceil(cost / (HESSIAN_BUDGET * steps_per_epoch)))


class Monitor:
    """Measures of one trial (C̄K, LK, noise scale, Q, λmax); NaN for those switched off."""

    def __init__(self, config: TrialConfig, n_train: int) -> None:
        self.config = config
        self.fisher = FisherTracker() if "fisher" in config.measures else None
        self.hessian_every = hessian_interval(config, n_train)
        self._hessian_batch: torch.Tensor | None = None
        self._hessian_vector: torch.Tensor | None = None  # warm start of the next λmax
        self._n_train = n_train
        self._gram_planned = False  # whether the torch.func fallback was looked for and logged

    def before_step(self, run: Any, x: torch.Tensor, y: torch.Tensor) -> None:
        """Measure on the current mini-batch every ``measure_every`` iterations."""
        if self.fisher is None or run.iteration % self.config.measure_every:
            return
        first = not self._gram_planned
        if first:
            self._gram_planned = True
            fallback = fallback_modules(run.model)
            if fallback and tuple(fallback) not in _FALLBACKS_LOGGED:
                _FALLBACKS_LOGGED.add(tuple(fallback))
                log.info("C̄K/LK: no per-sample rule for module(s) %s; their per-sample "
                         "gradients come from torch.func (slower)", ", ".join(fallback))
        lr = optimizer_lr(run.optimizer)
        # the first measurement also checks what hooks cannot see in a user's model: a weight
        # used outside its module, a dimension mistaken for the batch (per_sample_gram)
        gram = per_sample_gram(run.model, x, y, run.loss_fn, unsupported=FALLBACK,
                               check=first)
        noise = None  # the Gram's own estimate, unless batch-norm couples the samples
        if len(y) >= 4 and batch_statistics_couple(run.model):
            noise = coupled_noise_scale(gram, run.model, x, y, run.loss_fn)
        self.fisher.update(gram, lr, len(y), noise)

    def end_epoch(self, run: Any, hessian_top: float | None = None) -> dict[str, float]:
        """The epoch's measures; ``hessian_top``: a converged λmax the strategy measured this
        epoch on ``hessian_samples`` samples (ABS), reported instead of measuring another."""
        record = {"ck_bar": math.nan, "lk": math.nan, "noise_scale": math.nan,
                  "quality_q": math.nan, "hessian_top": math.nan}
        if self.fisher is not None and self.fisher.updates:
            record.update(ck_bar=self.fisher.ck_bar, lk=self.fisher.lk,
                          noise_scale=self.fisher.noise_scale)
        if "quality" in self.config.measures:
            record["quality_q"] = float(network_quality(run.model)["Q"])
        epoch = run.epoch + 1
        if hessian_top is not None:
            record["hessian_top"] = hessian_top
        elif "hessian" in self.config.measures and (epoch % self.hessian_every == 0
                                                    or epoch == self.config.epochs):
            record["hessian_top"] = self._hessian(run)
        return record

    def _hessian(self, run: Any) -> float:
        if self._hessian_batch is None:
            gen = torch.Generator().manual_seed(self.config.seed + 7919)
            count = min(self.config.hessian_samples, self._n_train)
            self._hessian_batch = torch.randperm(self._n_train, generator=gen)[:count]
        idx = self._hessian_batch.to(run.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            result = hessian_top_eigenvalue(run.model, run.train_x[idx], run.train_y[idx],
                                            run.loss_fn, seed=self.config.seed,
                                            start=self._hessian_vector, return_info=True)
        self._hessian_vector = result.vector.cpu()
        if not result.converged:
            log.info("λmax not converged at epoch %d (%s): reported as NaN", run.epoch + 1,
                     result.message)
            return math.nan
        return float(result.eigenvalue)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the Fisher tracker's state and λmax's warm start."""
        return {"version": STATE_VERSION,
                "fisher": None if self.fisher is None else self.fisher.state_dict(),
                "hessian_vector": self._hessian_vector}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict`'s snapshot (a checkpoint of the same version)."""
        if state.get("version") != STATE_VERSION:
            raise ConfigError(f"checkpoint holds measure state version {state.get('version')!r}"
                              f"; accepted: {STATE_VERSION}.")
        if self.fisher is not None and state.get("fisher") is not None:
            self.fisher.load_state_dict(state["fisher"])
        self._hessian_vector = state.get("hessian_vector")
