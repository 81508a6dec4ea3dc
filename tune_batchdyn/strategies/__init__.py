"""Batch-size strategies: plug-ins of the one training loop (see ``base.Strategy``).

Importing this package registers every strategy with ``parse_strategy``: ``fixed``, dynamic
sampling (``s{a}-to-{b}[-MS]``, ``[b1,...][-MS]``, ``dynamic``), ``gg``, ``fb``, ``is``,
``abs``, ``absa``, ``rmsgd``, ``navigator``.
"""

from tune_batchdyn.strategies import (
    adaptive_batch,
    dynamic_sampling,
    fb,
    gg,
    importance,
    navigator,
    rmsgd,
)
from tune_batchdyn.strategies.base import Fixed, RunView, StepPlan, Strategy, step_decay_lr
from tune_batchdyn.strategies.registry import parse_strategy

__all__ = ["Fixed", "RunView", "StepPlan", "Strategy", "adaptive_batch", "dynamic_sampling", "fb",
           "gg", "importance", "navigator", "parse_strategy", "rmsgd", "step_decay_lr"]
