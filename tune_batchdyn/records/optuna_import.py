"""How trials store records in an Optuna study, and reading a study back into a records table.

Convention (the Optuna plugin writes it, this module reads it):

- each epoch's record is a trial user attribute named ``record/{epoch:04d}`` (``record/0001``,
  ``record/0002``, ...) whose value is the record as a dict of plain floats, ints and bools
  (``record_user_attr`` makes one; NaN stays a float NaN);
- the trial's config is its ``params`` (what the sampler chose) together with an optional user
  attribute ``config`` holding the whole config the trial ran, as a dict; where both give a
  field, ``config`` wins (a user's objective may transform a suggested value before it runs,
  e.g. scale a suggested base lr by the batch size);
- a trial that repeated a finished trial's config holds that trial's number in ``repeat_of``
  and no records.

Trials are read duck-typed (``number``, ``params``, ``user_attrs``), so no Optuna import is needed:
pass a study (anything with ``get_trials()``) or a list of ``FrozenTrial``. The trial id is the
trial's number as a string, after an optional prefix. Trials without records are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.records.schema import RECORD_COLUMNS, empty_record
from tune_batchdyn.records.table import concat_tables, empty_table, trial_table

#: Prefix of the user attributes that hold per-epoch records.
RECORD_ATTR_PREFIX = "record/"
#: User attribute holding the whole trial config (a dict).
CONFIG_ATTR = "config"
#: User attribute of a trial that repeated a finished trial's config and took its value instead
#: of training again: that trial's number. Such a trial has no records.
REPEAT_ATTR = "repeat_of"


def record_attr_name(epoch: int) -> str:
    """The user-attribute name of epoch ``epoch``'s record: ``record/0007``."""
    return f"{RECORD_ATTR_PREFIX}{int(epoch):04d}"


def record_user_attr(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record as a user-attribute value: only the schema's keys, as plain Python scalars."""
    plain: dict[str, Any] = {}
    defaults = empty_record()
    for name in RECORD_COLUMNS:
        value = record.get(name, defaults[name])
        if isinstance(value, (bool, np.bool_)):
            plain[name] = bool(value)
        elif isinstance(value, (int, np.integer)):
            plain[name] = int(value)
        else:
            plain[name] = math.nan if value is None else float(value)
    return plain


def records_from_optuna(study_or_trials: Any, *, prefix: str = "") -> pd.DataFrame:
    """The records table of a study's trials (or of a list of trials)."""
    trials = _trials(study_or_trials)
    tables = []
    for trial in trials:
        attrs = dict(getattr(trial, "user_attrs", {}) or {})
        keys = sorted(k for k in attrs if k.startswith(RECORD_ATTR_PREFIX))
        if not keys:
            continue
        config = {**dict(getattr(trial, "params", {}) or {}), **dict(attrs.get(CONFIG_ATTR) or {})}
        records = [{**empty_record(), **_known(attrs[k])} for k in keys]
        tables.append(trial_table(f"{prefix}{trial.number}", config, records))
    return concat_tables(tables) if tables else empty_table()


def _trials(study_or_trials: Any) -> list:
    if hasattr(study_or_trials, "get_trials"):
        return list(study_or_trials.get_trials())
    if isinstance(study_or_trials, Iterable):
        return list(study_or_trials)
    raise ConfigError(f"study={study_or_trials!r} is not accepted; use an Optuna study or a list "
                      "of its trials.")


def _known(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k in RECORD_COLUMNS and v is not None}
