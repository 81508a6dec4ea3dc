"""The trial's measure hook: which training-dynamics measures to take, and when.

The engine calls ``before_step`` with every training mini-batch (before the update) and
``end_epoch`` once per epoch; the returned dict fills the record's measure columns.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tune_batchdyn.train.config import TrialConfig


class Monitor:
    """Measures of one trial (C̄K, LK, noise scale, Q, λmax); NaN for those switched off."""

    def __init__(self, config: TrialConfig) -> None:
        self.config = config

    def before_step(self, run: Any, x: torch.Tensor, y: torch.Tensor) -> None:
        """Measure on the current mini-batch every ``measure_every`` iterations."""

    def end_epoch(self, run: Any) -> dict[str, float]:
        return {"ck_bar": math.nan, "lk": math.nan, "noise_scale": math.nan,
                "quality_q": math.nan, "hessian_top": math.nan}

    def state_dict(self) -> dict[str, Any]:
        return {"version": 1}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
