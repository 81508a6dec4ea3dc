"""FB (Goyal et al. 2017): the linear scaling rule with a gradual warm-up.

A baseline of hessian-adaptive-batch-abs. The batch stays at the trial's |B|; the learning rate
is the base rate scaled by |B|/B_ref (the base rate is the one tuned for B_ref), reached by a
linear ramp over the first ``warmup_epochs`` epochs, one increment per update:

    s(k) = 1 + (|B|/B_ref − 1)·min(1, k/T_w),   T_w = warmup_epochs·⌈n_train/|B|⌉,
    lr(k) = s(k) · lr_step(epoch),

with k the number of updates so far and lr_step the seed's step-decayed base rate. Goyal et
al. start the ramp at the B_ref rate and use B_ref = 256 and 5 warm-up epochs (the defaults).
"""

from __future__ import annotations

import math
from typing import Any

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.strategies.base import RunView, StepPlan, Strategy, step_decay_lr
from tune_batchdyn.strategies.registry import register


def fb_scale(*, iteration: int, warmup_iterations: int, batch: int, ref_batch: int) -> float:
    """s(k): the factor on the step-decayed base rate after ``iteration`` updates."""
    progress = 1.0 if warmup_iterations <= 0 else min(1.0, iteration / warmup_iterations)
    return 1.0 + (batch / ref_batch - 1.0) * progress


class LinearScaling(Strategy):
    """FB: lr = base·|B|/B_ref with a linear warm-up over ``warmup_epochs`` epochs."""

    name = "fb"
    version = 1

    def __init__(self, ref_batch: int = 256, warmup_epochs: int = 5) -> None:
        super().__init__()
        if isinstance(ref_batch, bool) or not isinstance(ref_batch, int) or ref_batch < 1:
            raise ConfigError(f"strategy 'fb': ref_batch={ref_batch!r} is not accepted; use an "
                              "integer >= 1 (the batch size the base lr was tuned for).")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) \
                or warmup_epochs < 0:
            raise ConfigError(f"strategy 'fb': warmup_epochs={warmup_epochs!r} is not accepted; "
                              "use an integer >= 0.")
        self.ref_batch = ref_batch
        self.warmup_epochs = warmup_epochs

    def validate(self, *, epochs: int, n_train: int, batch_size: int) -> None:
        if self.warmup_epochs >= epochs:
            raise ConfigError(f"strategy 'fb': warmup_epochs={self.warmup_epochs} leaves no "
                              f"epoch after the warm-up of a {epochs}-epoch run; use "
                              f"warmup_epochs < {epochs}.")

    def plan_step(self, run: RunView) -> StepPlan:
        batch = run.base_batch_size
        warmup = self.warmup_epochs * math.ceil(run.n_train / batch)
        scale = fb_scale(iteration=run.iteration, warmup_iterations=warmup, batch=batch,
                         ref_batch=self.ref_batch)
        return StepPlan(batch, scale * step_decay_lr(run))

    def end_epoch(self, run: RunView, record: dict[str, Any]) -> None:
        if run.epoch + 1 == self.warmup_epochs:
            self.log(f"warm-up done at epoch {run.epoch + 1}: lr = base x {run.base_batch_size}"
                     f"/{self.ref_batch}")


register("fb", LinearScaling)
