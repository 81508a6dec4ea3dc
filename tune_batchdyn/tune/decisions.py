"""``DecisionLog``: every action of the scheduler and the searcher, with its reason and numbers.

Each action (``stop``, ``reroute``, ``spawn``) is one log line on the ``tune_batchdyn.tune``
logger at INFO level, e.g.::

    stop 3d34f550 at epoch 4 (fraction 0.5): predicted final val_error above the 3rd best
    (predicted_mean=0.41, predicted_std=0.02, rival=0.33, lower_bound=0.39)

and one row of ``frame()`` (columns ``action, trial_id, epoch, fraction, reason`` plus the
numbers, NaN where an action has no such number). Decisions to continue are logged at DEBUG
level only and not kept: a run makes one per result. ``summary()`` is the line printed at the end
of a run: ``decisions: stopped=<n> rerouted=<n> spawned=<n>``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from tune_batchdyn.errors import ConfigError

log = logging.getLogger("tune_batchdyn.tune")

#: Actions a run can take besides continuing.
STOPPED = "stop"
REROUTED = "reroute"
SPAWNED = "spawn"
ACTIONS: tuple[str, ...] = (STOPPED, REROUTED, SPAWNED)
#: The table's leading columns.
COLUMNS: tuple[str, ...] = ("action", "trial_id", "epoch", "fraction", "reason")
#: State format of ``get_state``.
STATE_VERSION = 1


class DecisionLog:
    """The actions taken in one run (bounded: at most a few per trial)."""

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []

    def add(self, action: str, trial_id: str, reason: str, *, epoch: int | None = None,
            fraction: float | None = None, **numbers: Any) -> None:
        """Record one action and log it as one line."""
        if action not in ACTIONS:
            raise ConfigError(f"action={action!r} is not accepted; use one of {ACTIONS}.")
        row = {"action": action, "trial_id": str(trial_id),
               "epoch": math.nan if epoch is None else int(epoch),
               "fraction": math.nan if fraction is None else float(fraction),
               "reason": reason, **numbers}
        self._rows.append(row)
        log.info("%s", format_decision(row))

    def frame(self) -> pd.DataFrame:
        """The actions as a table, one row each, in the order they were taken."""
        if not self._rows:
            return pd.DataFrame(columns=list(COLUMNS))
        frame = pd.DataFrame(self._rows)
        extra = [c for c in frame.columns if c not in COLUMNS]
        return frame.loc[:, [*COLUMNS, *extra]]

    def lines(self) -> list[str]:
        """The actions as the log lines ``add`` wrote, for printing after a run."""
        return [format_decision(row) for row in self._rows]

    def trial_ids(self, action: str) -> set[str]:
        """The trials this action was taken on."""
        return {r["trial_id"] for r in self._rows if r["action"] == action}

    def counts(self) -> dict[str, int]:
        return {action: sum(r["action"] == action for r in self._rows) for action in ACTIONS}

    def summary(self) -> str:
        counts = self.counts()
        return (f"decisions: stopped={counts[STOPPED]} rerouted={counts[REROUTED]} "
                f"spawned={counts[SPAWNED]}")

    def write_csv(self, path: str | os.PathLike) -> Path:
        """Write ``frame()`` to ``path`` (its folder is created)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.frame().to_csv(target, index=False)
        return target

    @classmethod
    def read_csv(cls, path: str | os.PathLike) -> DecisionLog:
        """The log that ``write_csv`` (or ``DecisionsCallback``) wrote, rows as ``add`` made
        them: a number a row did not have (blank in the table) is left out again."""
        frame = pd.read_csv(path, dtype={"trial_id": str, "reason": str})
        rows = []
        for row in frame.to_dict("records"):
            kept = {k: v for k, v in row.items()
                    if k in COLUMNS or not (isinstance(v, float) and math.isnan(v))}
            if not math.isnan(kept["epoch"]):
                kept["epoch"] = int(kept["epoch"])
            rows.append(kept)
        log_ = cls()
        log_.set_state({"version": STATE_VERSION, "rows": rows})
        return log_

    def get_state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "rows": [dict(r) for r in self._rows]}

    def set_state(self, state: dict[str, Any]) -> None:
        self._rows = [dict(r) for r in state["rows"]]

    def __len__(self) -> int:
        return len(self._rows)


def format_decision(row: dict[str, Any]) -> str:
    """One line: action, trial, where it was, why, and the numbers behind it."""
    where = ""
    if not math.isnan(row["epoch"]):
        where = f" at epoch {row['epoch']}"
        if not math.isnan(row["fraction"]):
            where += f" (fraction {row['fraction']:.3g})"
    numbers = ", ".join(f"{k}={_short(v)}" for k, v in row.items() if k not in COLUMNS)
    return f"{row['action']} {row['trial_id']}{where}: {row['reason']}" + (
        f" ({numbers})" if numbers else "")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
