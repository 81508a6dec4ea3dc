"""The strategy interface: how a batch-size strategy plugs into the one training loop.

The engine owns the loop; a strategy only *decides*. Per step the engine asks
``plan_step(run)`` for the batch size and learning rate, gathers the next indices of the epoch's
permutation, lets the strategy re-pick them (``select_batch``: importance sampling) and
transform them (``transform_batch``: adversarial examples), trains, and reports the loss back
(``after_step``). ``begin_epoch`` / ``end_epoch`` bracket each pass over the training data; at
``end_epoch`` the strategy sees the epoch's record (with the measures) and may add fields to it.

Settings live in the constructor, everything that changes during training in ``state_dict()``
(a versioned plain dict), so a trial resumed from a checkpoint continues identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from tune_batchdyn.errors import ConfigError


class RunView(Protocol):
    """What a strategy may read (and use) of the running trial; the engine provides it."""

    epoch: int  # 0-based index of the current epoch
    epochs: int
    iteration: int  # parameter updates so far
    samples_seen: int
    n_train: int
    base_lr: float
    base_batch_size: int
    lr_milestones: tuple[int, ...]  # epochs at which the lr is divided by lr_decay_factor
    lr_decay_factor: float
    momentum: float
    weight_decay: float
    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    generator: torch.Generator  # the trial's seeded generator (checkpointed by the engine)
    train_x: torch.Tensor
    train_y: torch.Tensor

    def loss_fn(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-sample losses (reduction none)."""

    def draw_uniform(self, k: int) -> torch.Tensor:
        """``k`` training indices drawn uniformly without replacement (seeded)."""


@dataclass(frozen=True)
class StepPlan:
    """The next step: its batch size and learning rate (``None``: the strategy set the rates)."""

    batch_size: int
    lr: float | None


def sgd(params: Any, **settings: Any) -> torch.optim.SGD:
    """``torch.optim.SGD`` with the fused implementation where the parameters allow it
    (floating point, on CPU or CUDA), else the multi-tensor one."""
    params = list(params)
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict)
                                               else [group])]
    fusable = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors)
    return torch.optim.SGD(params, **settings, **({"fused": True} if fusable else
                                                  {"foreach": True}))


class Strategy:
    """Base strategy: a fixed batch size and the seed's step-decayed learning rate.

    lr(epoch) = base_lr / decay^m, with m the number of milestones reached. Subclasses override
    the hooks they need; every hook has a do-nothing default.
    """

    name = "fixed"
    #: Whether the trial's ``batch_size`` is a batch it trains with (a schedule has its own).
    uses_batch_size = True
    version = 1

    def __init__(self) -> None:
        self.events: list[str] = []

    # --- set-up -------------------------------------------------------------------------------
    def make_optimizer(self, model: nn.Module, run: RunView) -> torch.optim.Optimizer:
        """SGD with momentum and weight decay, fused kernels (one pass over each parameter;
        20-40% less optimizer time than ``foreach`` on CPU in ``benchmarks/engine.py``);
        RMSGD overrides this with per-layer rates."""
        return sgd(model.parameters(), lr=run.base_lr, momentum=run.momentum,
                   weight_decay=run.weight_decay)

    def validate(self, *, epochs: int, n_train: int, batch_size: int) -> None:
        """Raise ConfigError when the strategy cannot run with these settings."""

    # --- the loop -----------------------------------------------------------------------------
    def begin_epoch(self, run: RunView) -> None:
        """Called before each epoch's first step."""

    def plan_step(self, run: RunView) -> StepPlan:
        return StepPlan(self.batch_size(run), step_decay_lr(run))

    def batch_size(self, run: RunView) -> int:
        return run.base_batch_size

    def select_batch(self, run: RunView,
                     indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Choose the step's samples and their loss weights (``None``: uniform)."""
        return indices, None

    def transform_batch(self, run: RunView, x: torch.Tensor,
                        y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def after_step(self, run: RunView, loss: torch.Tensor) -> None:
        """Called after each parameter update with the step's mean training loss (a detached
        0-d tensor on the device: call ``float()`` only when needed, it synchronises)."""

    def end_epoch(self, run: RunView, record: dict[str, Any]) -> None:
        """Called with the finished epoch's record; may add fields to it (e.g. ``tau``)."""

    def hessian_top(self, run: RunView, samples: int) -> float | None:
        """λmax of the whole model's loss if the strategy measured it, converged, during the
        current epoch on ``samples`` training samples (as the trial's ``hessian`` measure
        does): the record takes it instead of paying for a second one. ``None``: it did not."""
        return None

    # --- reporting and checkpoints ------------------------------------------------------------
    def log(self, message: str) -> None:
        """Record an event ("batch 64 -> 128 at epoch 12 because ..."); the engine reports it."""
        self.events.append(message)

    def drain_events(self) -> list[str]:
        """The events logged since the last call (the engine reports and clears them)."""
        events, self.events = self.events, []
        return events

    def describe(self) -> str:
        """A short label for progress lines and records (subclasses add their settings)."""
        return self.name

    def state_dict(self) -> dict[str, Any]:
        return {"version": self.version, "name": self.name}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Check that a checkpoint's state is this strategy's, at this version (subclasses
        then read their fields)."""
        if state.get("name") != self.name:
            raise ConfigError(f"checkpoint holds strategy {state.get('name')!r}, not "
                              f"{self.name!r}: resume it with the config that wrote it.")
        if state.get("version") != self.version:
            raise ConfigError(f"checkpoint holds {self.name!r} state version "
                              f"{state.get('version')!r}; accepted: {self.version}.")


def step_decay_lr(run: RunView, base_lr: float | None = None) -> float:
    """The seed's schedule: ``base_lr`` divided by the decay factor at each milestone reached."""
    reached = sum(run.epoch >= m for m in run.lr_milestones)
    return (run.base_lr if base_lr is None else base_lr) / run.lr_decay_factor ** reached


class Fixed(Strategy):
    """One batch size for the whole run (the seed's fixed-batch "beacons")."""

    name = "fixed"
