"""The one per-epoch record schema shared by every backend (Ray, Optuna, files, pandas).

Every record carries every key; a measure that was not taken is NaN, never a missing key.
"""

from __future__ import annotations

import math

#: Columns of the per-epoch record, in order (DESIGN.md).
RECORD_COLUMNS: tuple[str, ...] = (
    "epoch",
    "iterations",
    "samples_seen",
    "batch_size",
    "lr",
    "train_loss",
    "train_error",
    "val_error",
    "test_error",
    "ck_bar",
    "lk",
    "quality_q",
    "hessian_top",
    "noise_scale",
    "tau",
    "wall_time_s",
    "diverged",
)

#: Integer-valued columns; ``diverged`` is boolean; everything else is float.
INT_COLUMNS: frozenset[str] = frozenset({"epoch", "iterations", "samples_seen", "batch_size"})
BOOL_COLUMNS: frozenset[str] = frozenset({"diverged"})


def empty_record() -> dict:
    """A record with every key present: zero counters, NaN measures, ``diverged=False``."""
    record: dict = {}
    for name in RECORD_COLUMNS:
        if name in INT_COLUMNS:
            record[name] = 0
        elif name in BOOL_COLUMNS:
            record[name] = False
        else:
            record[name] = math.nan
    return record


# --- the records table: one row per trial and epoch ------------------------------------------

def target_column(metric: str) -> str:
    """The records-table column holding a trial's final value of ``metric``."""
    return f"final_{metric}"


#: Prefix of the trial config's columns in a records table, as in Ray Tune's result dataframes.
CONFIG_PREFIX = "config/"

#: Columns a records table adds to the record: the trial's id, its last-epoch errors (repeated on
#: each of its rows) and how far through its planned epochs each row is (epoch / config/epochs).
TABLE_EXTRA_COLUMNS: tuple[str, ...] = (
    "trial_id",
    "final_test_error",
    "final_val_error",
    "budget_fraction",
)
