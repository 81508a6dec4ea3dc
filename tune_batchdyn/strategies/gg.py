"""GG (Smith et al. 2018, "Don't decay the learning rate, increase the batch size").

A baseline of hessian-adaptive-batch-abs. Where the step schedule would divide the learning rate
by the decay factor ρ at its m-th milestone, GG multiplies the batch instead, up to B_max; the
part of the decay the batch cannot take goes to the learning rate:

    wanted_m = B_0·ρ^m,   B_m = min(round(wanted_m), B_max),   lr_m = lr_0 · B_m / wanted_m.

So lr_m/B_m = lr_0/wanted_m: the SGD noise scale lr/|B| follows the step schedule exactly, first
through the batch and then, once B_max is reached, through the learning rate (Smith et al. decay
the lr by whole factors after reaching B_max; the fractional split at the crossing is ours).
B_max defaults to min(16·B_0, n_train).
"""

from __future__ import annotations

from typing import Any

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.strategies.base import RunView, StepPlan, Strategy
from tune_batchdyn.strategies.registry import register

#: Default B_max as a multiple of the starting batch (capped by the training set).
MAX_BATCH_MULTIPLE = 16


def gg_schedule(*, milestones_reached: int, base_batch: int, base_lr: float, factor: float,
                max_batch: int) -> tuple[int, float]:
    """(batch, lr) after ``milestones_reached`` decay milestones (see the module docstring)."""
    wanted = base_batch * factor ** milestones_reached
    batch = max(base_batch, min(int(round(wanted)), max_batch))
    return batch, base_lr * batch / wanted


def default_max_batch(base_batch: int, n_train: int, max_batch: int | None) -> int:
    """``max_batch`` if given, else min(16·B_0, n_train)."""
    if max_batch is not None:
        return max_batch
    return max(base_batch, min(MAX_BATCH_MULTIPLE * base_batch, n_train))


def check_max_batch(name: str, max_batch: Any) -> None:
    """At construction: ``max_batch`` is None or an integer >= 1 (ConfigError naming it)."""
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int)
                                  or max_batch < 1):
        raise ConfigError(f"strategy {name!r}: max_batch={max_batch!r} is not accepted; use an "
                          "integer >= 1 (or omit it for min(16 x batch_size, training set)).")


def validate_max_batch(name: str, max_batch: int | None, *, n_train: int,
                       batch_size: int) -> None:
    """Before the run: an explicit ``max_batch`` fits the data and is not below the batch."""
    if max_batch is None:
        return
    if max_batch > n_train:
        raise ConfigError(f"strategy {name!r}: max_batch={max_batch} is larger than the "
                          f"training set ({n_train} samples); use max_batch <= {n_train}.")
    if max_batch < batch_size:
        raise ConfigError(f"strategy {name!r}: max_batch={max_batch} is smaller than "
                          f"batch_size={batch_size}; use max_batch >= {batch_size}.")


class IncreaseBatch(Strategy):
    """GG: multiply the batch by the decay factor at each lr milestone, up to ``max_batch``."""

    name = "gg"
    version = 1

    def __init__(self, max_batch: int | None = None) -> None:
        super().__init__()
        check_max_batch(self.name, max_batch)
        self.max_batch = max_batch
        self._batch: int | None = None

    def validate(self, *, epochs: int, n_train: int, batch_size: int) -> None:
        validate_max_batch(self.name, self.max_batch, n_train=n_train, batch_size=batch_size)

    def _schedule(self, run: RunView) -> tuple[int, float]:
        reached = sum(run.epoch >= m for m in run.lr_milestones)
        return gg_schedule(milestones_reached=reached, base_batch=run.base_batch_size,
                           base_lr=run.base_lr, factor=run.lr_decay_factor,
                           max_batch=default_max_batch(run.base_batch_size, run.n_train,
                                                       self.max_batch))

    def begin_epoch(self, run: RunView) -> None:
        batch, lr = self._schedule(run)
        if self._batch is not None and batch != self._batch:
            self.log(f"batch {self._batch} -> {batch} at epoch {run.epoch + 1} because of an lr "
                     f"decay milestone (lr {lr:.4g} instead of a decayed rate)")
        self._batch = batch

    def plan_step(self, run: RunView) -> StepPlan:
        batch, lr = self._schedule(run)
        return StepPlan(batch, lr)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "batch": self._batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._batch = state.get("batch")


register("gg", IncreaseBatch)
