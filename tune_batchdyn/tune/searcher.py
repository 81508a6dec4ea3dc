"""``DynamicSamplingSearcher``: fixed-batch beacons first, then planned dynamic-sampling trials.

The base search supplies the grid: a list of configs, a param-space dict expanded as Ray's
``BasicVariantGenerator`` would run it (``expand_grid``: its ``tune.grid_search`` entries
crossed in order, ``num_samples`` times, sampling domains drawn per trial), or any Ray
``Searcher``. Its
fixed-batch trials at ``beacon_lr`` with a batch size in ``beacon_sizes`` are the *beacons*
(fisher-measures-dynamic-sampling §4.3: the fixed runs a dynamic schedule is composed from):
they run first and ``MeasureScheduler`` stops them only when they diverge, because every plan is
made of their trajectories. Without ``beacon_lr`` and ``beacon_sizes`` every base trial is a
beacon for planning and none is protected. Once the base is exhausted, every further ``suggest``
asks the ``Planner`` for dynamic schedules toward the optimum region of the finished trials
(``plan_schedule``, one per beacon learning rate) and suggests the best one not suggested
before, as the best finished beacon's config with the plan's ``strategy``, ``batch_size`` and
``lr``. It returns ``None`` (Tune asks again later) while fewer than ``min_beacons`` base trials
have finished and some are still running, and ``Searcher.FINISHED`` once ``max_planned`` plans
were suggested, or when no beacon is left running and the records allow no new plan (the reason
is logged; NQM trials, which have no C̄K, never allow one). Tune's ``num_samples`` caps the
total as usual: pass ``num_samples=searcher.max_trials`` (the grid's size plus ``max_planned``)
to let the searcher decide.

The searcher owns the ``TrialHistory`` (``searcher.history``): every result is fed to it, and
``save`` / ``restore`` / ``get_state`` / ``set_state`` carry it (and the base's own state),
so ``Tuner.restore`` resumes with the beacons, plans and decisions of the interrupted run.
Give the same history to ``MeasureScheduler(history=searcher.history)``.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import pickle
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from tune_batchdyn.errors import ConfigError, is_int, is_number
from tune_batchdyn.predict import SchedulePlan
from tune_batchdyn.tune.decisions import SPAWNED
from tune_batchdyn.tune.history import (
    BASE_ORIGINS,
    BEACON,
    FINISHED,
    GRID,
    PLANNED,
    RUNNING,
    TrialHistory,
    config_from_result,
)
from tune_batchdyn.tune.planning import Planner

log = logging.getLogger("tune_batchdyn.tune")

#: Ranked when neither the searcher nor Tune names a metric (Tune tells searchers its metric
#: only when the run has a param space).
DEFAULT_METRIC = "val_error"
#: State format of ``get_state``.
STATE_VERSION = 1


def expand_grid(space: Mapping[str, Any], num_samples: int = 1,
                seed: int = 0) -> list[dict[str, Any]]:
    """The configs Ray's ``BasicVariantGenerator`` runs for a param space: its
    ``{"grid_search": [...]}`` entries (at any depth) crossed, the last key varying fastest, the
    whole grid ``num_samples`` times; each sampling domain (``tune.choice``,
    ``tune.loguniform``, ...) drawn per config from a generator seeded with ``seed``; other
    values copied as they are."""
    if not (is_int(num_samples) and num_samples >= 1):
        raise ConfigError(f"num_samples={num_samples!r} is not accepted; use an integer >= 1.")
    paths: list[tuple[str, ...]] = []
    values: list[list[Any]] = []
    domains: list[tuple[str, ...]] = []

    def walk(node: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping) and set(value) == {"grid_search"}:
                paths.append((*prefix, key))
                values.append(list(value["grid_search"]))
            elif isinstance(value, Mapping):
                walk(value, (*prefix, key))
            elif hasattr(value, "sample"):
                domains.append((*prefix, key))

    walk(space, ())
    random_state = np.random.RandomState(seed)
    configs = []
    for _, combination in itertools.product(range(num_samples), itertools.product(*values)):
        config = _deep_copy(space)
        for path, value in zip(paths, combination, strict=True):
            _node(config, path)[path[-1]] = value
        for path in domains:
            node = _node(config, path)
            node[path[-1]] = node[path[-1]].sample(random_state=random_state)
        configs.append(config)
    return configs


def _check_configs(configs: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a base config with a key that is no ``TrialConfig`` field, or a batch size, lr or
    strategy ``TrialConfig`` refuses, naming it (the other fields may need the trainable's
    defaults, so they are checked when a trial starts)."""
    from tune_batchdyn.train.config import TrialConfig, config_fields

    fields = config_fields()
    for index, config in enumerate(configs):
        unknown = sorted(set(config) - set(fields))
        if unknown:
            raise ConfigError(f"DynamicSamplingSearcher: config {index} {dict(config)!r} has "
                              f"unknown key(s) {unknown}; accepted keys (TrialConfig fields): "
                              f"{', '.join(fields)}.")
        checked = {k: config[k] for k in ("batch_size", "lr", "strategy") if k in config}
        try:
            TrialConfig.from_dict(checked)
        except ConfigError as err:
            raise ConfigError(f"DynamicSamplingSearcher: config {index}: {err}") from err


def _node(config: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """The mapping that holds ``path``'s last key."""
    for part in path[:-1]:
        config = config[part]
    return config



class DynamicSamplingSearcher(Searcher):
    """Beacons from a base search, then planned dynamic-sampling trials (module docstring).

    Parameters: ``base`` (list of configs, grid param space, or a ``Searcher``), ``metric``
    (default: Tune's, else ``val_error``) and ``mode`` (``"min"``: errors), ``max_planned``
    (planned trials at most), ``min_beacons`` (finished base trials before planning while
    others still run), ``beacon_lr`` and ``beacon_sizes`` (which base trials are protected
    beacons; either alone selects on that field), ``planner`` (region and plan settings),
    ``history`` (a new one by default), ``num_samples`` (repeats of a param-space base, as
    Tune's ``num_samples`` for a grid), ``base_trials`` (with a base ``Searcher``: how many of
    its trials run before planning starts; Ray's model-based searchers such as
    ``OptunaSearch`` never finish by themselves, so without it the planner would never be
    asked). A list or grid base is checked when the searcher is made: its keys must be
    ``TrialConfig`` fields, and its batch sizes, lrs and strategies accepted values.
    """

    def __init__(self, base: Sequence[Mapping[str, Any]] | Mapping[str, Any] | Searcher, *,
                 metric: str | None = None, mode: str | None = None, max_planned: int = 4,
                 min_beacons: int = 5, beacon_lr: float | None = None,
                 beacon_sizes: Sequence[int] | None = None, planner: Planner | None = None,
                 history: TrialHistory | None = None, num_samples: int = 1,
                 base_trials: int | None = None) -> None:
        _check_mode(mode)  # before Ray's Searcher, which asserts without a message
        super().__init__(metric=metric or DEFAULT_METRIC, mode=mode or "min")
        self._metric_given = metric is not None
        if not (is_int(max_planned) and max_planned >= 0):
            raise ConfigError(f"max_planned={max_planned!r} is not accepted; use an integer >= 0.")
        if not (is_int(min_beacons) and min_beacons >= 1):
            raise ConfigError(f"min_beacons={min_beacons!r} is not accepted; use an integer "
                              ">= 1.")
        if beacon_lr is not None and not (is_number(beacon_lr) and beacon_lr > 0):
            raise ConfigError(f"beacon_lr={beacon_lr!r} is not accepted; use a learning rate "
                              "> 0 or None.")
        if base_trials is not None and not (is_int(base_trials) and base_trials >= 1):
            raise ConfigError(f"base_trials={base_trials!r} is not accepted; use an integer "
                              ">= 1 or None.")
        if beacon_sizes is not None and not (
                isinstance(beacon_sizes, Sequence) and not isinstance(beacon_sizes, str)
                and all(is_int(b) and b >= 1 for b in beacon_sizes)):
            raise ConfigError(f"beacon_sizes={beacon_sizes!r} is not accepted; use batch sizes "
                              "(integers >= 1) or None.")
        self.beacon_lr = None if beacon_lr is None else float(beacon_lr)
        self.beacon_sizes = None if beacon_sizes is None else tuple(beacon_sizes)
        if isinstance(base, Searcher):
            self.base: Searcher | None = base
            self._queue: list[dict[str, Any]] = []
        elif isinstance(base, Mapping):
            self.base, self._queue = None, expand_grid(base, num_samples)
        elif isinstance(base, Sequence) and all(isinstance(c, Mapping) for c in base):
            self.base, self._queue = None, [_deep_copy(c) for c in base]
        else:
            raise ConfigError(f"base={type(base).__name__} is not accepted; use a list of "
                              "configs, a param space with tune.grid_search values, or a Ray "
                              "Searcher.")
        if self.base is None:
            if not self._queue:
                raise ConfigError("DynamicSamplingSearcher: the base holds no config; give the "
                                  "grid whose beacons the plans are made from.")
            _check_configs(self._queue)
        elif base_trials is None:
            log.info("DynamicSamplingSearcher: the base %s is asked until it finishes before "
                     "any plan; pass base_trials=N if it never does (e.g. OptunaSearch)",
                     type(base).__name__)
        self.base_trials = base_trials
        self._queue.sort(key=lambda config: not self.is_beacon(config))  # stable: grid order
        self.max_planned = max_planned
        self.min_beacons = min_beacons
        self.planner = planner or Planner()
        self.history = history if history is not None else TrialHistory()
        self._position = 0
        self._base_done = False
        self._suggested: dict[str, dict[str, Any]] = {}
        self._planned: list[dict[str, Any]] = []
        self._plans: tuple[tuple[str, ...], list[SchedulePlan]] = ((), [])

    @property
    def max_trials(self) -> int:
        """The most trials this searcher suggests: the grid (or list) plus ``max_planned``;
        -1 over a base Searcher, whose count it cannot know. Pass it as Tune's
        ``num_samples`` (with -1 Tune's header would show 2⁶³ − 1 trials)."""
        if self.base is not None:
            return -1 if self.base_trials is None else self.base_trials + self.max_planned
        return len(self._queue) + self.max_planned

    def is_beacon(self, config: Mapping[str, Any]) -> bool:
        """A fixed-batch config at the beacon lr and a beacon size (when those are given)."""
        if self.beacon_lr is None and self.beacon_sizes is None:
            return False
        lr, batch_size = config.get("lr"), config.get("batch_size")
        return (config.get("strategy", "fixed") == "fixed"
                and (self.beacon_lr is None or (isinstance(lr, (int, float))
                                                and math.isclose(lr, self.beacon_lr)))
                and (self.beacon_sizes is None or batch_size in self.beacon_sizes))

    # --- Ray's searcher interface -------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        if self._metric_given and metric and metric != self._metric:
            return False
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        _check_mode(self._mode)
        if self.base is not None:
            return self.base.set_search_properties(metric, mode, config, **spec)
        if config:  # Ray would run the searcher's grid and pass these keys on unresolved
            raise ConfigError(f"DynamicSamplingSearcher holds its grid already, so a Tuner "
                              f"param_space (tune.run config) is not accepted next to it; got "
                              f"keys {sorted(config)}. Put searched fields into the searcher's "
                              "grid and fixed ones into make_trainable(**defaults).")
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if not self._base_done:
            config = self._beacon(trial_id)
            if config is not None or not self._base_done:
                return config
        return self._planned_config(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.history.observe(trial_id, config_from_result(result), result)
        if self.base is not None and self.history.origin(trial_id) in BASE_ORIGINS:
            self.base.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if result:
            self.history.observe(trial_id, config_from_result(result), result)
        if trial_id in self.history:
            self.history.complete(trial_id)
            if self.base is not None and self.history.origin(trial_id) in BASE_ORIGINS:
                self.base.on_trial_complete(trial_id, result=result, error=error)

    # --- beacons ------------------------------------------------------------------------------
    def _beacon(self, trial_id: str) -> dict[str, Any] | None:
        if self.base is not None:
            if self.base_trials is not None and self._position >= self.base_trials:
                self._base_done = True
                return None
            config = self.base.suggest(trial_id)
            if config == Searcher.FINISHED:
                self._base_done = True
                return None
            if config is not None:
                self._position += 1
        elif self._position < len(self._queue):
            config = _deep_copy(self._queue[self._position])
            self._position += 1
        else:
            self._base_done = True
            return None
        if config is not None:
            self._remember(trial_id, config, BEACON if self.is_beacon(config) else GRID)
        return config

    # --- planned trials -----------------------------------------------------------------------
    def _planned_config(self, trial_id: str) -> dict[str, Any] | str | None:
        if len(self._planned) >= self.max_planned:
            return Searcher.FINISHED
        beacons_running = any(self.history.ids(RUNNING, origin=o) for o in BASE_ORIGINS)
        finished = self.history.ids(FINISHED)
        base_finished = sum(len(self.history.ids(FINISHED, origin=o)) for o in BASE_ORIGINS)
        if base_finished < self.min_beacons and beacons_running:
            return None
        plan = self._next_plan(finished)
        if plan is None:
            if beacons_running:
                return None
            why = ("every plan they allow was suggested" if self._plans[1] else
                   "none was possible (see the 'no plan' lines above, if any: a plan needs "
                   "finished fixed-batch trials at two or more batch sizes of one lr)")
            log.info("planning ends after %d plan(s), %d trials finished: %s",
                     len(self._planned), len(finished), why)
            return Searcher.FINISHED
        config = {**self._template(finished), "strategy": plan.schedule,
                  "batch_size": plan.batch_size, "lr": plan.lr}
        self._planned.append({"schedule": plan.schedule, "lr": plan.lr,
                              "batch_size": plan.batch_size})
        self._remember(trial_id, config, PLANNED)
        self.history.decisions.add(
            SPAWNED, trial_id, f"{plan.schedule} at lr {plan.lr:.4g} is planned toward the "
            "optimum region", predicted_error=plan.predicted_error, distance=plan.distance,
            planned_ck=plan.point[0], planned_lk=plan.point[1],
            reads=plan.reads, finished=len(finished))
        return config

    def _next_plan(self, finished: list[str]) -> SchedulePlan | None:
        """The best plan not suggested yet (plans are recomputed when trials finish)."""
        key = tuple(finished)
        if self._plans[0] != key:
            table = self.history.table(finished, self._metric)
            try:
                region = self.planner.region(table, self._metric)
                plans = self.planner.spawn_plans(table, region)
            except ConfigError as err:
                log.info("no plan from %d finished trials: %s", len(finished), err)
                plans = []
            self._plans = (key, plans)
        done = {(p["schedule"], round(p["lr"], 12), p["batch_size"]) for p in self._planned}
        for plan in self._plans[1]:
            if (plan.schedule, round(plan.lr, 12), plan.batch_size) not in done:
                return plan
        return None

    def _template(self, finished: list[str]) -> dict[str, Any]:
        """The suggested config of the best finished beacon (the plan overrides its schedule,
        batch size and lr; every other key, e.g. the seed, is kept)."""
        beacons = [t for t in finished if t in self._suggested
                   and self.history.origin(t) in BASE_ORIGINS]
        if not beacons:
            return {}

        def final(trial_id: str) -> float:
            value = (self.history.last(trial_id) or {}).get(self._metric, float("nan"))
            return value if value == value else float("inf")

        return _deep_copy(self._suggested[min(beacons, key=final)])

    def _remember(self, trial_id: str, config: dict[str, Any], origin: str) -> None:
        self._suggested[trial_id] = _deep_copy(config)
        self.history.register(trial_id, config, origin)

    # --- state --------------------------------------------------------------------------------
    @property
    def planned(self) -> list[dict[str, Any]]:
        """The plans suggested so far (schedule, lr, batch size)."""
        return [dict(p) for p in self._planned]

    def get_state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "history": self.history.get_state(),
                "position": self._position, "base_done": self._base_done,
                "suggested": _deep_copy(self._suggested), "planned": self.planned,
                "metric": self._metric, "mode": self._mode}

    def set_state(self, state: dict[str, Any]) -> None:
        self.history.set_state(state["history"])
        self._position = state["position"]
        self._base_done = state["base_done"]
        self._suggested = _deep_copy(state["suggested"])
        self._planned = [dict(p) for p in state["planned"]]
        self._metric = state["metric"]
        self._mode = state["mode"]
        self._plans = ((), [])

    def save(self, checkpoint_path: str) -> None:
        """Pickle ``get_state()`` (with the base searcher's own saved bytes) to a file."""
        state = self.get_state()
        state["base"] = self._base_bytes()
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(state, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            state = pickle.load(handle)
        self.set_state(state)
        if self.base is not None and state.get("base") is not None:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder, "base.pkl")
                path.write_bytes(state["base"])
                self.base.restore(str(path))

    def _base_bytes(self) -> bytes | None:
        if self.base is None:
            return None
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "base.pkl")
            try:
                self.base.save(path)
            except NotImplementedError:
                log.warning("base searcher %s cannot save its state; after Tuner.restore it "
                            "starts afresh", type(self.base).__name__)
                return None
            return Path(path).read_bytes()


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _check_mode(mode: str | None) -> None:
    if mode not in (None, "min"):
        raise ConfigError(f"mode={mode!r} is not accepted; the planner ranks final errors, "
                          "which are minimised: use mode='min'.")
