"""Replay: a trainable that plays back recorded trajectories epoch by epoch.

Real Ray Tune then runs the real schedulers and searchers over a recorded grid in seconds, and
every scheduler sees the same trials (the benchmark's premise). A trial's config is matched to a
recorded trial by ``(strategy, lr, batch_size, seed)``; strategies are compared in their
canonical spec (``"[32,64,128,256,512]"`` is ``"s32-to-512"``). A config with no recording (a
planned dynamic-sampling trial, a rerouted one) is computed by ``runner(config)`` (returning
that trial's records table) when one is given (e.g. ``trial_runner(dataset="nqm", ...)`` for
NQM grids: milliseconds), and the table is written to ``cache_dir`` (``cached_records`` reads
them back, so the next run replays it); without a runner such a trial fails with a
``ConfigError`` naming the config.

Reports are the recorded rows (the record's columns and ``budget_fraction``) with a checkpoint
that only says how many epochs were reported, so pausing, rerouting and retries resume where the
trial was, as with ``make_trainable``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.records import (
    CONFIG_PREFIX,
    RECORD_COLUMNS,
    concat_tables,
    read_records,
    trial_table,
    write_records,
)
from tune_batchdyn.tune.session import report_epoch, restore_checkpoint

Runner = Callable[[Mapping[str, Any]], pd.DataFrame]
Key = tuple[str, float, int, int]


def replay_key(config: Mapping[str, Any], canonical: bool = True) -> Key:
    """``(strategy, lr, batch_size, seed)`` of a trial config, the strategy in its canonical
    spec (or as written, with ``canonical=False``)."""
    try:
        strategy = str(config.get("strategy", "fixed"))
        return (canonical_strategy(strategy) if canonical else strategy,
                round(float(config["lr"]), 10), int(config["batch_size"]),
                int(config.get("seed", 0)))
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"config={dict(config)!r} cannot be replayed: it needs lr and "
                          "batch_size (and strategy, seed).") from err


def canonical_strategy(spec: str) -> str:
    """A staged schedule's canonical spec (``Schedule.spec``); any other strategy as given."""
    from tune_batchdyn.predict import parse_schedule  # the planner's stack, only when needed

    try:
        return parse_schedule(spec).spec
    except ConfigError:
        return spec


def recorded_trajectories(records: pd.DataFrame) -> dict[Key, list[dict[str, Any]]]:
    """The records table's trials by ``replay_key``: their rows, epoch order, as plain dicts."""
    trajectories: dict[Key, list[dict[str, Any]]] = {}
    columns = [*RECORD_COLUMNS, "budget_fraction"]
    for _, rows in records.sort_values(["trial_id", "epoch"]).groupby("trial_id", sort=False):
        first = rows.iloc[0]
        config = {name[len(CONFIG_PREFIX):]: first[name] for name in rows.columns
                  if name.startswith(CONFIG_PREFIX) and _present(first[name])}
        key = replay_key(config)
        trajectories.setdefault(key, [_plain(row) for row in rows[columns].to_dict("records")])
    return trajectories


def make_replay_trainable(records: pd.DataFrame, *, runner: Runner | None = None,
                          cache_dir: str | os.PathLike | None = None) -> (
        Callable[[dict[str, Any]], None]):
    """A function trainable that replays ``records`` (see the module docstring)."""
    library = recorded_trajectories(records)
    cache = None if cache_dir is None else str(Path(cache_dir).resolve())

    def replay_trial(config: dict[str, Any]) -> None:
        rows = _trajectory(config, library, runner, cache)
        workdir = Path(tempfile.mkdtemp(prefix="tune-batchdyn-replay-"))
        try:
            reported = restore_checkpoint(workdir)
            for row in rows[reported:]:
                report_epoch(row, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    return replay_trial


def trial_runner(**defaults: Any) -> Runner:
    """A runner computing a missing trajectory with ``run_trial`` on ``{**defaults, **config}``
    (its records table, the full ``TrialConfig`` in the ``config/`` columns)."""
    from tune_batchdyn.train import TrialConfig, run_trial  # torch, only where trials are run

    TrialConfig.from_dict(defaults)

    def run(config: Mapping[str, Any]) -> pd.DataFrame:
        trial_config = TrialConfig.from_dict({**defaults, **config})
        return trial_table("run", trial_config.to_dict(), run_trial(trial_config))

    return run


def cached_records(cache_dir: str | os.PathLike) -> pd.DataFrame:
    """The trajectories runners computed into ``cache_dir``, as one records table."""
    files = sorted(Path(cache_dir).glob("*.parquet")) if Path(cache_dir).is_dir() else []
    return concat_tables(read_records(f) for f in files)


def _trajectory(config: Mapping[str, Any], library: dict[Key, list[dict[str, Any]]],
                runner: Runner | None, cache: str | None) -> list[dict[str, Any]]:
    key = replay_key(config, canonical=False)  # specs written by the searcher are canonical
    if key not in library:
        key = replay_key(config)
    if key in library:
        return library[key]
    path = None if cache is None else Path(cache, _file_name(key))
    if path is not None and path.exists():
        return recorded_trajectories(read_records(path))[key]
    if runner is None:
        raise ConfigError(f"no recorded trajectory for strategy={key[0]!r}, lr={key[1]}, "
                          f"batch_size={key[2]}, seed={key[3]}; record it or pass a runner.")
    table = runner(config).assign(trial_id=_file_name(key))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_records(table, path)
    return recorded_trajectories(table)[key]


def _file_name(key: Key) -> str:
    return hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16] + ".parquet"


def _present(value: Any) -> bool:
    return not (isinstance(value, float) and math.isnan(value))


def _plain(row: Mapping[str, Any]) -> dict[str, Any]:
    """Numpy scalars as Python numbers (Ray logs results as JSON)."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
