"""The ``[search]`` table: what a sweep optimises and what it may add to the declared grid.

Keys (all optional):

- ``metric`` (default ``"val_error"``): a column of the per-epoch record.
- ``mode`` (``"min"`` or ``"max"``, default ``"min"``).
- ``num_samples`` (integer >= 1, default 1): Ray Tune's meaning, repeats of the whole grid
  (each repeat samples the non-grid fields afresh), so a sweep starts
  ``grid_size * num_samples`` trials.
- ``budget``: the most training epochs the sweep may spend over all its trials, planned and
  rerouted trials included; absent: no limit beyond the declared trials.
- ``beacons``: the batch sizes of the fixed-batch "beacon" trials that dynamic schedules are
  compared with (fisher-measures-dynamic-sampling §4.3: s{16..512}-lr0.1); default: the
  ``batch_size`` grid or choice values, when ``batch_size`` is searched.
- ``beacon_lr``: the learning rate of the beacons (the seed: 0.1); default: the fixed ``lr``.
- ``dynamic``: the dynamic-sampling schedules a planner may choose from
  (``"s32-to-512"``, ``"s32-to-512-MS"``, ``"[32,64,64,128,256]"``, or tables), each checked
  with ``parse_strategy``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tune_batchdyn.errors import ConfigError, is_int
from tune_batchdyn.space.params import Param

MODES = ("min", "max")


@dataclass(frozen=True)
class SearchSettings:
    """The checked ``[search]`` table (see the module docstring for each key)."""

    metric: str = "val_error"
    mode: str = "min"
    num_samples: int = 1
    budget: int | None = None
    beacons: tuple[int, ...] = ()
    beacon_lr: float | None = None
    dynamic: tuple[str | Mapping[str, Any], ...] = ()


ACCEPTED_KEYS = tuple(f.name for f in dataclasses.fields(SearchSettings))


def parse_search(source: str, table: Mapping[str, Any], params: Mapping[str, Param],
                 constants: Mapping[str, Any]) -> SearchSettings:
    """Check the ``[search]`` table of ``source``; fill the defaults that depend on the space."""
    unknown = sorted(set(table) - set(ACCEPTED_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown [search] key(s) {unknown}; accepted keys: "
                          f"{list(ACCEPTED_KEYS)}.")
    defaults = SearchSettings()
    metric = table.get("metric", defaults.metric)
    columns = _record_columns()
    if metric not in columns:
        raise _error(source, "metric", metric, f"one of: {', '.join(columns)}")
    mode = table.get("mode", defaults.mode)
    if mode not in MODES:
        raise _error(source, "mode", mode, "'min' or 'max'")
    num_samples = table.get("num_samples", defaults.num_samples)
    if not is_int(num_samples) or num_samples < 1:
        raise _error(source, "num_samples", num_samples, "an integer >= 1")
    budget = table.get("budget")
    if budget is not None and (not is_int(budget) or budget < 1):
        raise _error(source, "budget", budget, "an integer >= 1 (training epochs)")
    return SearchSettings(metric=metric, mode=mode, num_samples=num_samples, budget=budget,
                          beacons=_beacons(source, table, params, constants),
                          beacon_lr=_beacon_lr(source, table, params, constants),
                          dynamic=_dynamic(source, table.get("dynamic", []),
                                           _fewest_epochs(params, constants)))


def _beacons(source: str, table: Mapping[str, Any], params: Mapping[str, Param],
             constants: Mapping[str, Any]) -> tuple[int, ...]:
    """The beacon batch sizes: given, else the batch-size grid. A space with fixed-batch trials
    must run each (a beacon is one of its trials), or that beacon would never run."""
    batch = params.get("batch_size")
    default = list(batch.values) if batch is not None and batch.is_categorical else []
    beacons = table.get("beacons", default)
    if not isinstance(beacons, list) or not all(is_int(b) and b >= 1 for b in beacons) \
            or len(set(beacons)) != len(beacons):
        raise _error(source, "beacons", beacons, "a list of distinct batch sizes (integers "
                     ">= 1)")
    runs = _values(params, constants, "batch_size") if _runs_fixed(params, constants) else None
    if runs is not None and not set(beacons) <= set(runs):
        raise _error(source, "beacons", beacons, f"batch sizes the space runs: {list(runs)}")
    return tuple(beacons)


def _beacon_lr(source: str, table: Mapping[str, Any], params: Mapping[str, Param],
               constants: Mapping[str, Any]) -> float | None:
    """The beacons' lr: given, else the fixed lr; one of the lrs the space runs when it has
    fixed-batch trials."""
    value = table.get("beacon_lr", constants.get("lr"))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not (value > 0 and math.isfinite(value)):
        raise _error(source, "beacon_lr", value, "a finite number > 0")
    runs = _values(params, constants, "lr") if _runs_fixed(params, constants) else None
    if runs is not None and not any(math.isclose(value, lr) for lr in runs):
        raise _error(source, "beacon_lr", value, f"one of the lrs the space runs: {list(runs)}")
    return float(value)


def _runs_fixed(params: Mapping[str, Param], constants: Mapping[str, Any]) -> bool:
    """Whether some trials run at a fixed batch (the beacons' kind); a space of dynamic
    schedules only compares with beacons recorded from another space."""
    strategies = _values(params, constants, "strategy")
    if strategies is None:
        return "strategy" not in params  # not set: every trial is fixed-batch
    return "fixed" in strategies


def _values(params: Mapping[str, Param], constants: Mapping[str, Any],
            key: str) -> tuple | None:
    """Every value ``key`` takes in the space's trials, or None when a range leaves it open
    (or the space does not set it)."""
    if key in params:
        return tuple(params[key].values) if params[key].is_categorical else None
    return (constants[key],) if key in constants else None


def _dynamic(source: str, specs: Any, epochs: int) -> tuple[str | Mapping[str, Any], ...]:
    """Each spec must parse to a dynamic-sampling schedule with at most ``epochs`` stages."""
    from tune_batchdyn.strategies import parse_strategy
    from tune_batchdyn.strategies.dynamic_sampling import LIST_FORM, RANGE_FORM, DynamicSampling

    accepted = f"a list of dynamic-sampling schedules: {RANGE_FORM} or {LIST_FORM}"
    if not isinstance(specs, list):
        raise _error(source, "dynamic", specs, accepted)
    for spec in specs:
        try:
            strategy = parse_strategy(spec)
        except ConfigError as err:
            raise ConfigError(f"{source}: [search] dynamic: {err}") from err
        if not isinstance(strategy, DynamicSampling):
            raise _error(source, "dynamic", spec, accepted)
        if len(strategy.sizes) > epochs:
            raise _error(source, "dynamic", spec, f"schedules of at most {epochs} stages: a "
                         f"stage lasts at least one epoch and the space has trials of {epochs} "
                         "epochs")
    return tuple(specs)


def _fewest_epochs(params: Mapping[str, Param], constants: Mapping[str, Any]) -> int:
    """The shortest trial of the space, in epochs (ranges: their low bound)."""
    from tune_batchdyn.train.config import TrialConfig

    if "epochs" in params:
        return min(params["epochs"].values)
    return constants.get("epochs", TrialConfig.__dataclass_fields__["epochs"].default)


def _record_columns() -> tuple[str, ...]:
    from tune_batchdyn.records.schema import RECORD_COLUMNS

    return RECORD_COLUMNS



def _error(source: str, key: str, value: Any, accepted: str) -> ConfigError:
    return ConfigError(f"{source}: [search] {key}={value!r} is not accepted; use {accepted}.")
