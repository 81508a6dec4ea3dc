"""Batch-size strategies: plug-ins of the one training loop (see ``base.Strategy``)."""

from tune_batchdyn.strategies.base import Fixed, RunView, StepPlan, Strategy, step_decay_lr
from tune_batchdyn.strategies.registry import parse_strategy

__all__ = ["Fixed", "RunView", "StepPlan", "Strategy", "parse_strategy", "step_decay_lr"]
