"""Read a Ray Tune experiment directory into a records table, from its files (no Ray import).

Ray Tune writes one sub-directory per trial holding ``params.json`` (the trial's config) and
``result.json`` (JSON lines: one reported result per line, here our record's keys plus Ray's own,
such as ``training_iteration`` and ``trial_id``). Each trial becomes ``trial_table(trial_id,
params, results)``: Ray's extra keys are dropped, record keys a line lacks take the empty
record's values (NaN measures, zero counters; ``epoch`` falls back to ``training_iteration``).
A line that is not valid JSON (the half-written last line of a killed trial) is skipped, and so
is a trial without any result.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.records.schema import RECORD_COLUMNS, empty_record
from tune_batchdyn.records.table import concat_tables, trial_table


def records_from_ray_dir(path: str | os.PathLike) -> pd.DataFrame:
    """The records table of every trial under a Ray Tune experiment directory."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"ray results dir={str(path)!r} is not a directory.")
    tables = []
    for params_file in sorted(root.rglob("params.json")):
        result_file = params_file.with_name("result.json")
        if not result_file.is_file():
            continue
        results = _read_results(result_file)
        if not results:
            continue
        config = json.loads(params_file.read_text())
        trial_id = str(results[-1].get("trial_id", params_file.parent.name))
        tables.append(trial_table(trial_id, config, [_record(line) for line in results]))
    if not tables:
        raise ConfigError(f"ray results dir={str(path)!r} holds no trial with params.json and a "
                          "non-empty result.json.")
    return concat_tables(tables)


def _read_results(result_file: Path) -> list[dict]:
    results = []
    for line in result_file.read_text().splitlines():
        if not line.strip():
            continue
        try:
            results.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return results


def _record(result: dict) -> dict:
    record = empty_record()
    record.update({k: result[k] for k in RECORD_COLUMNS if result.get(k) is not None})
    if "epoch" not in result and "training_iteration" in result:
        record["epoch"] = int(result["training_iteration"])
    return record
