"""The training engine: one loop, any reporter (``run_trial``), configured by ``TrialConfig``."""

from tune_batchdyn.train.config import TrialConfig
from tune_batchdyn.train.engine import run_trial

__all__ = ["TrialConfig", "run_trial"]
