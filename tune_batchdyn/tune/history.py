"""``TrialHistory``: every trial's per-epoch records, the data the predictor and planner learn from.

One history is shared by the ``DynamicSamplingSearcher`` (which owns it: Ray saves searchers
with the experiment and restores them on ``Tuner.restore``) and the ``MeasureScheduler`` (which
Ray restores only as it was built, so it keeps a reference to the searcher's history and nothing
else that matters). Both feed it every result they see; a result is keyed by (trial, epoch), so
feeding it twice changes nothing. Memory: one record per trial and epoch, the size of the
experiment's own ``result.json`` files.

A trial is ``running`` until Ray completes it, then ``finished`` when it reached its whole
budget (``budget_fraction`` 1) or diverged, else ``stopped`` (a scheduler ended it early).
``table()`` is the records table (``tune_batchdyn.records``) of the trials asked for, with
``final_<metric>`` added when the metric is not one the table already carries.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tune_batchdyn.records import (
    CONFIG_PREFIX,
    RECORD_COLUMNS,
    concat_tables,
    empty_record,
    target_column,
    trial_table,
)
from tune_batchdyn.tune.decisions import DecisionLog

RUNNING = "running"
FINISHED = "finished"
STOPPED = "stopped"
#: Origins of a trial (``register``): a protected beacon, another trial of the searcher's base
#: search, a planned dynamic-sampling trial.
BEACON = "beacon"
GRID = "grid"
PLANNED = "planned"
BASE_ORIGINS = (BEACON, GRID)
#: State format of ``get_state``.
STATE_VERSION = 1
#: Tables kept (the scheduler and the searcher ask for a few different selections in turn).
TABLE_CACHE = 4


def record_from_result(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The per-epoch record in a Ray result (plus ``budget_fraction``), or None without an epoch.

    Keys the result lacks take the empty record's values (NaN measures)."""
    if result.get("epoch") is None:
        return None
    record = empty_record()
    record.update({k: result[k] for k in RECORD_COLUMNS if result.get(k) is not None})
    fraction = result.get("budget_fraction")
    if isinstance(fraction, (int, float)) and math.isfinite(fraction) and fraction > 0:
        record["budget_fraction"] = float(fraction)
    return record


def config_from_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """The trial config carried by a Ray result: ``result["config"]``, or its flattened
    ``config/<key>`` entries (what searchers receive) nested again."""
    if isinstance(result.get("config"), Mapping):
        return dict(result["config"])
    config: dict[str, Any] = {}
    for key, value in result.items():
        if not key.startswith("config/"):
            continue
        *parents, leaf = key[len("config/"):].split("/")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


@dataclass
class _Entry:
    config: dict[str, Any]
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    status: str = RUNNING
    origin: str = ""
    #: Changes whenever the rows or the config change (the table cache's key).
    stamp: int = 0


class TrialHistory:
    """Per-trial records fed from Ray results (see the module docstring)."""

    def __init__(self) -> None:
        self._trials: dict[str, _Entry] = {}
        self.decisions = DecisionLog()
        self._version = 0
        self._tables: dict[tuple, pd.DataFrame] = {}
        self._trial_tables: dict[str, tuple[int, pd.DataFrame]] = {}

    # --- feeding ------------------------------------------------------------------------------
    def register(self, trial_id: str, config: Mapping[str, Any], origin: str = "") -> None:
        """Know a trial before its first result (its config and where it came from)."""
        entry = self._trials.setdefault(str(trial_id), _Entry(dict(config)))
        if origin:
            entry.origin = origin

    def observe(self, trial_id: str, config: Mapping[str, Any], result: Mapping[str, Any]) -> (
            bool):
        """Add the result's record; False when it has no epoch or that epoch is known.
        Without a reported ``budget_fraction`` it is epoch / the config's ``epochs``.

        ``config`` is taken for a trial seen for the first time; later changes go through
        ``set_config`` (a rerouted trial)."""
        record = record_from_result(result)
        entry = self._trials.setdefault(str(trial_id), _Entry(dict(config)))
        if record is None or int(record["epoch"]) in entry.rows:
            return False
        epochs = entry.config.get("epochs")
        if "budget_fraction" not in record and isinstance(epochs, int) and epochs > 0:
            record["budget_fraction"] = int(record["epoch"]) / epochs
        entry.rows[int(record["epoch"])] = record
        entry.status = RUNNING
        self._changed(entry)
        return True

    def complete(self, trial_id: str) -> str:
        """Mark a trial Ray has completed: ``finished`` or ``stopped`` (see the module doc)."""
        entry = self._trials.get(str(trial_id))
        if entry is None:
            return STOPPED
        last = entry.rows[max(entry.rows)] if entry.rows else None
        done = last is not None and (bool(last["diverged"])
                                     or last.get("budget_fraction", 0.0) >= 1.0 - 1e-9)
        entry.status = FINISHED if done else STOPPED
        self._changed(entry)
        return entry.status

    def set_config(self, trial_id: str, config: Mapping[str, Any]) -> None:
        entry = self._trials[str(trial_id)]
        entry.config = dict(config)
        self._changed(entry)

    # --- reading ------------------------------------------------------------------------------
    def __contains__(self, trial_id: object) -> bool:
        return str(trial_id) in self._trials

    def ids(self, *statuses: str, origin: str | None = None) -> list[str]:
        """Trial ids with one of ``statuses`` (all when none given), in arrival order."""
        return [tid for tid, e in self._trials.items()
                if (not statuses or e.status in statuses)
                and (origin is None or e.origin == origin)]

    def status(self, trial_id: str) -> str:
        return self._trials[str(trial_id)].status

    def origin(self, trial_id: str) -> str:
        return self._trials[str(trial_id)].origin

    def config(self, trial_id: str) -> dict[str, Any]:
        return dict(self._trials[str(trial_id)].config)

    def last(self, trial_id: str) -> dict[str, Any] | None:
        rows = self._trials[str(trial_id)].rows
        return dict(rows[max(rows)]) if rows else None

    def epochs_run(self) -> int:
        """Trial-epochs reported so far, over every trial."""
        return sum(len(e.rows) for e in self._trials.values())

    def table(self, trial_ids: Iterable[str] | None = None,
              metric: str | None = None) -> pd.DataFrame:
        """The records table of ``trial_ids`` (default: all) that reported at least one epoch,
        with ``final_<metric>`` (each trial's last value) when the table lacks that column.

        Each trial's table is built once per change of that trial and kept."""
        ids = tuple(t for t in (self._trials if trial_ids is None else map(str, trial_ids))
                    if t in self._trials and self._trials[t].rows)
        key = (ids, metric, tuple(self._trials[t].stamp for t in ids))
        if key not in self._tables:
            parts = [self._trial_table(tid) for tid in ids]
            table = (pd.concat(parts, ignore_index=True, sort=False) if parts
                     else concat_tables([]))
            if metric is not None and target_column(metric) not in table.columns:
                last = table.groupby("trial_id")[metric].transform("last") if len(table) else []
                table[target_column(metric)] = last
            if len(self._tables) >= TABLE_CACHE:
                self._tables.pop(next(iter(self._tables)))
            self._tables[key] = table
        return self._tables[key]

    def frame(self, trial_id: str) -> pd.DataFrame:
        """One trial's rows so far, quickly: the record's columns, ``budget_fraction``,
        ``trial_id`` and its scalar config fields as ``config/<field>`` (what the predictor and
        the planner read from a running trial, built on every result)."""
        entry = self._trials[str(trial_id)]
        rows = [entry.rows[e] for e in sorted(entry.rows)]
        extra = {"trial_id": str(trial_id)}
        extra.update({f"{CONFIG_PREFIX}{name}": value for name, value in entry.config.items()
                      if isinstance(value, (bool, int, float, str))})
        return pd.DataFrame([{**row, **extra} for row in rows])

    def _trial_table(self, trial_id: str) -> pd.DataFrame:
        entry = self._trials[trial_id]
        cached = self._trial_tables.get(trial_id)
        if cached is not None and cached[0] == entry.stamp:
            return cached[1]
        rows = [entry.rows[e] for e in sorted(entry.rows)]
        config = dict(entry.config)
        fractions = [r.get("budget_fraction", math.nan) for r in rows]
        if "epochs" not in config and math.isfinite(fractions[-1]):
            config["epochs"] = int(round(rows[-1]["epoch"] / fractions[-1]))
        table = trial_table(trial_id, config, rows)
        known = pd.Series(fractions, index=table.index)
        table["budget_fraction"] = known.where(known.notna(), table["budget_fraction"])
        self._trial_tables[trial_id] = (entry.stamp, table)
        return table

    # --- state --------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Plain data (dicts, lists, numbers) for the searcher's checkpoint."""
        return {
            "version": STATE_VERSION,
            "trials": {tid: {"config": e.config, "rows": list(e.rows.values()),
                             "status": e.status, "origin": e.origin}
                       for tid, e in self._trials.items()},
            "decisions": self.decisions.get_state(),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Replace the contents in place (the scheduler holds a reference to this object)."""
        self._trials = {
            tid: _Entry(dict(t["config"]), {int(r["epoch"]): dict(r) for r in t["rows"]},
                        t["status"], t["origin"])
            for tid, t in state["trials"].items()}
        self.decisions.set_state(state["decisions"])
        self._tables, self._trial_tables = {}, {}
        self._changed()

    def _changed(self, entry: _Entry | None = None) -> None:
        self._version += 1
        if entry is not None:
            entry.stamp = self._version
