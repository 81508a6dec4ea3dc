"""Read a Ray Tune experiment directory into a records table, from its files (no Ray import).

Ray Tune writes one sub-directory per trial holding ``params.json`` (the trial's config) and
``result.json`` (JSON lines: one reported result per line, here our record's keys plus Ray's own,
such as ``training_iteration`` and ``trial_id``). Each trial becomes ``trial_table(trial_id,
params, results)``: Ray's extra keys are dropped, record keys a line lacks take the empty
record's values (NaN measures, zero counters; ``epoch`` falls back to ``training_iteration``).
A line that is not valid JSON (the half-written last line of a killed trial) is skipped, and so
is a trial without any result.

One row per epoch: a trial resumed after an interrupt trains again the epochs after Ray's last
saved state and appends them again, so the last line of an epoch wins (the run that went on
from it). Ray's ``progress.csv`` (the same results as CSV) fills epochs that ``result.json``
lacks: when a paused trial resumes (a reroute), Ray may replace the trial's ``result.json``
by one holding only the epochs after the pause.
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
    """The records table of every trial under a Ray Tune experiment directory; a folder holding
    several experiments (a ``storage_path``) is refused, naming them, rather than merged."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"ray results dir={str(path)!r} is not a directory.")
    params_files = sorted(root.rglob("params.json"))
    experiments = sorted({str(f.parent.parent.relative_to(root)) for f in params_files})
    if len(experiments) > 1:
        raise ConfigError(f"ray results dir={str(path)!r} holds {len(experiments)} experiments "
                          f"({', '.join(experiments)}); give one of them, e.g. "
                          f"{str(root / experiments[0])!r}.")
    tables = []
    for params_file in params_files:
        results = _one_per_epoch(_read_csv(params_file.with_name("progress.csv"))
                                 + _read_results(params_file.with_name("result.json")))
        if not results:
            continue
        config = json.loads(params_file.read_text())
        trial_id = str(results[-1].get("trial_id", params_file.parent.name))
        tables.append(trial_table(trial_id, config, [_record(line) for line in results]))
    if not tables:
        raise ConfigError(f"ray results dir={str(path)!r} holds no trial with params.json and a "
                          "non-empty result.json.")
    return concat_tables(tables)


def _epoch_of(result: dict) -> int | None:
    value = result.get("epoch", result.get("training_iteration"))
    return None if value is None or value != value else int(value)


def _one_per_epoch(results: list[dict]) -> list[dict]:
    """The last result of each epoch, in epoch order (results without an epoch dropped)."""
    by_epoch = {epoch: result for result in results
                if (epoch := _epoch_of(result)) is not None}
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def _read_csv(progress_file: Path) -> list[dict]:
    """Ray's progress.csv as result dicts (empty cells dropped); [] when absent or unreadable."""
    if not progress_file.is_file():
        return []
    try:
        table = pd.read_csv(progress_file)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return []
    return [{k: v for k, v in row.items() if not (isinstance(v, float) and v != v)}
            for row in table.to_dict(orient="records")]


def _read_results(result_file: Path) -> list[dict]:
    if not result_file.is_file():
        return []
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
