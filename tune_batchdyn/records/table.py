"""The records table: one row per trial and epoch, the record's columns plus the trial's.

Columns, in order: the record (``RECORD_COLUMNS``), ``trial_id`` (str), the trial config's fields
as ``config/<field>`` (nested mappings flattened as ``config/<field>/<key>``, as Ray Tune's result
dataframes do), ``final_test_error`` and ``final_val_error`` (the trial's last recorded epoch,
repeated on each of its rows) and ``budget_fraction`` (epoch / ``config/epochs``).

Config values are kept as scalars so the table round-trips through Parquet and CSV: ints, floats,
bools and strings as they are, ``None`` as NaN, lists/tuples/sets as their JSON text.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.records.schema import (
    BOOL_COLUMNS,
    CONFIG_PREFIX,
    INT_COLUMNS,
    RECORD_COLUMNS,
    TABLE_EXTRA_COLUMNS,
)

#: Float columns a records table adds to the record.
_TABLE_FLOAT_COLUMNS = ("final_test_error", "final_val_error", "budget_fraction")


def flatten_config(config: Any) -> dict[str, Any]:
    """A config (mapping or dataclass such as ``TrialConfig``) as ``{"config/<field>": scalar}``."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    if not isinstance(config, Mapping):
        raise ConfigError(f"config={config!r} is not accepted; use a mapping or a dataclass.")
    flat: dict[str, Any] = {}
    _flatten_into(flat, CONFIG_PREFIX.rstrip("/"), config)
    return flat


def _flatten_into(flat: dict[str, Any], prefix: str, value: Any) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten_into(flat, f"{prefix}/{key}", item)
    else:
        flat[prefix] = _scalar(value)


def _scalar(value: Any) -> Any:
    """A config value as a table cell: plain scalars kept, None -> NaN, sequences -> JSON text."""
    if value is None:
        return math.nan
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else list(value)
        return json.dumps(items, default=str)
    return str(value)


def trial_table(trial_id: str, config: Any, trajectory: pd.DataFrame | Iterable[Mapping]) -> (
        pd.DataFrame):
    """The records table of one trial from its config and its ``run_trial`` trajectory.

    ``trajectory``: a DataFrame (or an iterable of record dicts) with the record's columns, one row
    per epoch; columns outside the record schema are dropped, missing record columns raise
    ``ConfigError``. ``budget_fraction`` divides by the config's ``epochs`` (the trajectory's last
    epoch when the config has none). The ``final_*`` columns hold the last row's errors, which
    are the final ones only once the trial has finished (``budget_fraction`` 1).
    """
    frame = trajectory if isinstance(trajectory, pd.DataFrame) else pd.DataFrame(list(trajectory))
    missing = [c for c in RECORD_COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(f"trajectory of trial {trial_id!r} lacks record columns {missing}; "
                          f"a record has: {', '.join(RECORD_COLUMNS)}.")
    frame = frame.loc[:, list(RECORD_COLUMNS)].sort_values("epoch").reset_index(drop=True)
    flat = flatten_config(config)
    epochs = flat.get(f"{CONFIG_PREFIX}epochs")
    if not isinstance(epochs, (int, float)) or not epochs > 0:
        epochs = int(frame["epoch"].max()) if len(frame) else 1
    table = frame.assign(trial_id=str(trial_id))
    config_frame = pd.DataFrame({name: [value] * len(table) for name, value in flat.items()},
                                index=table.index)
    table = pd.concat([table, config_frame], axis=1)
    last = frame.iloc[-1] if len(frame) else None
    table["final_test_error"] = math.nan if last is None else float(last["test_error"])
    table["final_val_error"] = math.nan if last is None else float(last["val_error"])
    table["budget_fraction"] = frame["epoch"].to_numpy(dtype=float) / float(epochs)
    return normalise_table(table)


def normalise_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table with the schema's dtypes: counters int64, ``diverged`` bool, ``trial_id`` str,
    the other record and table columns float64; config columns keep theirs."""
    validate_table(table)
    table = table.copy()
    for name in RECORD_COLUMNS:
        if name in INT_COLUMNS:
            if table[name].isna().any():
                raise ConfigError(f"records column {name!r} has missing values; it counts "
                                  "(epochs, iterations, samples, batch size) and must be whole.")
            table[name] = table[name].astype("int64")
        elif name in BOOL_COLUMNS:
            table[name] = table[name].fillna(False).astype(bool)
        else:
            table[name] = pd.to_numeric(table[name], errors="coerce").astype("float64")
    table["trial_id"] = table["trial_id"].astype(str)
    for name in _TABLE_FLOAT_COLUMNS:
        if name in table.columns:
            table[name] = pd.to_numeric(table[name], errors="coerce").astype("float64")
    return table


def validate_table(table: pd.DataFrame) -> None:
    """Raise ``ConfigError`` unless ``table`` has the record's columns and ``trial_id``."""
    if not isinstance(table, pd.DataFrame):
        raise ConfigError(f"records={type(table).__name__} is not accepted; use a pandas "
                          "DataFrame with the record's columns plus trial_id.")
    missing = [c for c in (*RECORD_COLUMNS, "trial_id") if c not in table.columns]
    if missing:
        raise ConfigError(f"records table lacks columns {missing}; it needs the record's columns "
                          f"({', '.join(RECORD_COLUMNS)}) and trial_id.")


def config_columns(table: pd.DataFrame) -> list[str]:
    """The ``config/...`` columns of a records table, in table order."""
    return [c for c in table.columns if c.startswith(CONFIG_PREFIX)]


def concat_tables(tables: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Records tables stacked (union of columns), dtypes normalised."""
    tables = [t for t in tables if len(t.columns)]
    if not tables:
        return empty_table()
    return normalise_table(pd.concat(tables, ignore_index=True, sort=False))


def empty_table() -> pd.DataFrame:
    """A records table with no rows and the schema's columns and dtypes."""
    columns = {name: pd.Series(dtype=_record_dtype(name)) for name in RECORD_COLUMNS}
    columns["trial_id"] = pd.Series(dtype=str)
    for name in _TABLE_FLOAT_COLUMNS:
        columns[name] = pd.Series(dtype="float64")
    table = pd.DataFrame(columns)
    return table.loc[:, [*RECORD_COLUMNS, *TABLE_EXTRA_COLUMNS]]


def _record_dtype(name: str) -> str:
    if name in INT_COLUMNS:
        return "int64"
    if name in BOOL_COLUMNS:
        return "bool"
    return "float64"
