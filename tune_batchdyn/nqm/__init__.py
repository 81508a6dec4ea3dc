"""Noisy quadratic model (numpy/scipy only): exact expected risk of SGD, heavy-ball momentum,
preconditioned SGD, EMA and piecewise-constant schedules; steps to target, critical batch size,
optimised schedules, the NQM as a trial, and batch-size sweep planning.

>>> from tune_batchdyn.nqm import NQM
>>> steps, lr = NQM().steps_to_target(256, optimizer="momentum")
"""

from tune_batchdyn.nqm.critical import CriticalBatchFit, fit_critical_batch
from tune_batchdyn.nqm.model import DEFAULT_BATCH_SIZES, NQM, StepsCurve
from tune_batchdyn.nqm.optimizers import OptimizerSpec, parse_optimizer
from tune_batchdyn.nqm.planning import suggest_batch_sizes
from tune_batchdyn.nqm.schedule import ScheduleResult, optimize_schedule, schedule_steps_to_target
from tune_batchdyn.nqm.trial import nqm_trial_records

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "NQM",
    "CriticalBatchFit",
    "OptimizerSpec",
    "ScheduleResult",
    "StepsCurve",
    "fit_critical_batch",
    "nqm_trial_records",
    "optimize_schedule",
    "parse_optimizer",
    "schedule_steps_to_target",
    "suggest_batch_sizes",
]
