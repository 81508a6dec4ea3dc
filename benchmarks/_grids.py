"""What the benchmarks share about a recorded grid: the settings every trial of it ran with."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from tune_batchdyn.records import CONFIG_PREFIX

#: TrialConfig fields a trial planned from a grid keeps from the grid's trials.
SHARED_FIELDS = ("dataset", "model", "epochs", "momentum", "weight_decay", "lr_milestones",
                 "lr_decay_factor", "measure_every", "measures", "hessian_every",
                 "hessian_samples", "data_seed", "dataset_options")


def grid_settings(records: pd.DataFrame) -> dict[str, Any]:
    """The shared settings of a grid's trials (read from its first trial's config columns)."""
    first = records.sort_values(["trial_id", "epoch"]).iloc[0]
    settings: dict[str, Any] = {}
    for key in SHARED_FIELDS:
        value = first.get(f"{CONFIG_PREFIX}{key}")
        if isinstance(value, str) and value[:1] in "[{":
            value = json.loads(value)
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, np.generic):
            value = value.item()
        if value is not None and not (isinstance(value, float) and np.isnan(value)):
            settings[key] = value
    return settings
