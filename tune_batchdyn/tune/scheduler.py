"""``MeasureScheduler``: stop hopeless trials early and reroute off-course ones by their measures.

On every new epoch of a trial the scheduler feeds the record to the shared ``TrialHistory`` and
decides, in this order:

1. **stop** (``_stop_reason``, the whole rule): a diverged trial at once; otherwise, from the
   grace fraction of its budget on and once ``min_finished`` trials have finished (before that
   the predictor has only the trial's own curve), a trial whose final metric is, with
   probability ``confidence``, above the ``top_k``-th best final value among the finished
   trials and the latest predictions of the other running trials: its conformal lower bound
   (``FinalErrorPredictor.lower_bound``, fitted on the finished trials and refitted as they
   accumulate) is above that value. The bound needs enough finished trials to vouch for
   ``confidence`` (9 at 0.9); before, nothing is stopped by prediction. It is the bound of
   ``MeasurePruner``, for the same reason: the normal quantile μ − σ of the prediction trusts
   a σ fitted on a few finished trials, and on the recorded synthetic grid it stopped every
   trial of the best configurations, slow starters at lr 0.025-0.07, in one trial order
   (benchmarks/README.md: Schedulers). Beacons and the plans the searcher spawned are stopped
   only when they diverge: the planner needs the beacons' whole paths, and each plan runs once,
   as the planner's test (``MeasurePruner`` does the same). A rerouted trial is judged like the
   others: in a replay of the recorded synthetic grid 7 of 24 reroutes ended more than 5
   points worse than planned, and running every rerouted trial to the end cost more epochs
   than the reroutes gained (benchmarks/README.md: Schedulers).
2. **reroute** (``_reroute_option``): between ``reroute_fraction`` and ``reroute_until`` of its
   budget, when the optimum region is known, checked again each time the region changes (another
   trial finished), at most one reroute per trial and none for a planned one (its course is a
   plan already): if the trial's course ends outside the region but a course planned from its
   current position (``Planner.reroute``) ends inside, return
   ``PAUSE``; while the trial is paused, ``choose_trial_to_run`` writes the new schedule into
   its config (``trial.set_config``, the pattern of Ray's ``ResourceChangingScheduler``) and
   resumes it first; it restarts from its own checkpoint and the engine trains the remaining
   epochs under the new schedule. Needs checkpoints every epoch
   (``TrialConfig.checkpoint_every=1``, the default: trials with a larger value are not
   rerouted) and ``reuse_actors`` either way.
3. otherwise **continue**. A result without the metric (or with NaN) continues.

Every stop and reroute is one line on the ``tune_batchdyn.tune`` logger and a row of
``decisions`` (see ``tune_batchdyn.tune.decisions``); continue decisions are logged at DEBUG
level with their numbers. The scheduler minimises: it predicts errors. Ray restores schedulers as
they were built, not as they ended, so everything worth keeping lives in the history, which the
``DynamicSamplingSearcher`` saves (pass ``history=searcher.history``) and so does
``DecisionsCallback(scheduler)``: with neither, ``Tuner.restore`` starts from an empty history.

Example::

    searcher = DynamicSamplingSearcher(grid)
    scheduler = MeasureScheduler(history=searcher.history)
    tune.run(make_trainable(epochs=20), metric="val_error", mode="min", search_alg=searcher,
             scheduler=scheduler, num_samples=searcher.max_trials,
             callbacks=[DecisionsCallback(scheduler)])
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from tune_batchdyn.errors import ConfigError, is_int, is_number
from tune_batchdyn.predict import FEATURES, FinalErrorPredictor, OptimumRegion, Prediction
from tune_batchdyn.records import target_column
from tune_batchdyn.strategies.dynamic_sampling import run_lengths
from tune_batchdyn.tune.decisions import REROUTED, STOPPED
from tune_batchdyn.tune.history import (
    BEACON,
    FINISHED,
    PLANNED,
    RUNNING,
    TrialHistory,
)
from tune_batchdyn.tune.planning import Planner, RerouteOption

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController

log = logging.getLogger("tune_batchdyn.tune")

CONTINUE = TrialScheduler.CONTINUE
PAUSE = TrialScheduler.PAUSE
STOP = TrialScheduler.STOP


class MeasureScheduler(FIFOScheduler):
    """Stop and reroute trials by their predicted final metric (see the module docstring).

    Parameters: ``metric`` / ``mode`` (or from ``tune.run`` / ``TuneConfig``; the metric is an
    error, so ``mode="min"``), ``history`` (the searcher's, to survive ``Tuner.restore``),
    ``grace_fraction`` (no stop before this budget fraction), ``top_k`` and ``confidence`` (the
    stop rule: the probability, in [0.5, 1), that a stopped trial would have ended worse than
    the ``top_k``-th best), ``min_finished`` (finished trials before the predictor's
    regression and the region are used), ``refit_growth`` (refit when the finished trials grew
    by this share, and on every newly finished trial up to 2·``min_finished``), ``reroute`` /
    ``reroute_fraction`` / ``reroute_until`` / ``planner`` (rerouting; default window: from
    the grace fraction to half the budget), ``protect_beacons`` (never stop the searcher's
    beacons unless they diverge: the planner needs their whole paths), ``protect_plans``
    (likewise for the searcher's planned trials), ``features`` (the predictor's). Defaults:
    grace 0.1, top 3, confidence 0.9 (``MeasurePruner``'s), chosen on the grids of
    ``benchmarks/schedulers.py``.
    """

    def __init__(self, metric: str | None = None, mode: str | None = None, *,
                 history: TrialHistory | None = None, grace_fraction: float = 0.1,
                 top_k: int = 3, confidence: float = 0.9, min_finished: int = 5,
                 refit_growth: float = 0.1, reroute: bool = True,
                 protect_beacons: bool = True, protect_plans: bool = True,
                 reroute_fraction: float | None = None, reroute_until: float = 0.5,
                 planner: Planner | None = None, features: Sequence[str] = FEATURES) -> None:
        super().__init__()
        _check_fraction("grace_fraction", grace_fraction)
        if reroute_fraction is not None:
            _check_fraction("reroute_fraction", reroute_fraction)
        start = grace_fraction if reroute_fraction is None else reroute_fraction
        if not (is_number(reroute_until) and start < reroute_until <= 1):
            raise ConfigError(f"reroute_until={reroute_until!r} is not accepted; use a budget "
                              f"fraction in ({start}, 1]: above reroute_fraction (the grace "
                              "fraction by default).")
        _check_int("top_k", top_k, 1)
        _check_int("min_finished", min_finished, 2)
        if not (is_number(confidence) and 0.5 <= confidence < 1):
            raise ConfigError(f"confidence={confidence!r} is not accepted; use a probability "
                              "in [0.5, 1) (0.9: stop a trial that ends worse than the top_k-th "
                              "best with probability 0.9).")
        if not (is_number(refit_growth) and refit_growth >= 0):
            raise ConfigError(f"refit_growth={refit_growth!r} is not accepted; use a share >= 0 "
                              "(0: refit on every finished trial).")
        self._metric = metric
        self._mode = mode
        self._check_mode()
        if history is not None and not isinstance(history, TrialHistory):
            raise ConfigError(f"history={type(history).__name__} is not accepted; use the "
                              "searcher's TrialHistory (history=searcher.history) or None.")
        self.history = history if history is not None else TrialHistory()
        self.grace_fraction = float(grace_fraction)
        self.top_k = int(top_k)
        self.confidence = float(confidence)
        self.min_finished = int(min_finished)
        self.refit_growth = float(refit_growth)
        self.reroute = bool(reroute)
        self.protect_beacons = bool(protect_beacons)
        self.protect_plans = bool(protect_plans)
        self.reroute_fraction = float(grace_fraction if reroute_fraction is None
                                      else reroute_fraction)
        self.reroute_until = float(reroute_until)
        self.planner = planner or Planner()
        self.features = tuple(features)
        # transient state, rebuilt from results (Ray does not restore it)
        self._predicted: dict[str, float] = {}
        self._reroutes: dict[str, dict[str, Any]] = {}
        self._resume_first: list[str] = []
        self._reroute_checked: dict[str, tuple[str, ...]] = {}  # trial: region it was checked in
        self._predictor: FinalErrorPredictor | None = None
        self._predictor_fitted_on = 0
        self._region: tuple[tuple[str, ...], OptimumRegion | None] = ((), None)

    # --- Ray's scheduler interface ------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        self._check_mode()
        return True

    def on_trial_add(self, tune_controller: TuneController, trial: Trial) -> None:
        if not self._metric:
            raise ConfigError("MeasureScheduler has no metric; pass metric='val_error' (and "
                              "mode='min') to it, to tune.run or to tune.TuneConfig.")
        self.history.register(trial.trial_id, trial.config)

    def on_trial_result(self, tune_controller: TuneController, trial: Trial,
                        result: dict) -> str:
        value = result.get(self._metric)
        if not (isinstance(value, (int, float)) and math.isfinite(value)):
            log.debug("continue %s: result has no finite %r", trial.trial_id, self._metric)
            return CONTINUE
        if not self.history.observe(trial.trial_id, trial.config, result):
            return CONTINUE  # an epoch seen before (a trial's final, repeated result)
        rows = self.history.frame(trial.trial_id)
        if "budget_fraction" not in rows.columns:
            log.debug("continue %s: no budget_fraction in its results and no epochs in its "
                      "config (use make_trainable, or put epochs in the config)", trial.trial_id)
            return CONTINUE
        last = rows.iloc[-1]
        where = {"epoch": int(last["epoch"]), "fraction": float(last["budget_fraction"])}
        stop = self._stop_reason(trial.trial_id, rows)
        if stop is not None:
            reason, numbers = stop
            self.history.decisions.add(STOPPED, trial.trial_id, reason, **where, **numbers)
            self._predicted.pop(trial.trial_id, None)
            return STOP
        option = self._reroute_option(trial, rows)
        if option is not None:
            self._reroutes[trial.trial_id] = {"strategy": option.schedule,
                                              "batch_size": option.batch_size}
            self.history.decisions.add(
                REROUTED, trial.trial_id, f"course ends outside the optimum region; "
                f"{run_lengths(option.schedule)} ends inside", **where, **option.numbers())
            return PAUSE
        return CONTINUE

    def on_trial_complete(self, tune_controller: TuneController, trial: Trial,
                          result: dict) -> None:
        if result:
            self.history.observe(trial.trial_id, trial.config, result)
        self.history.complete(trial.trial_id)
        self._forget(trial.trial_id)

    def on_trial_remove(self, tune_controller: TuneController, trial: Trial) -> None:
        if trial.trial_id in self.history:
            self.history.complete(trial.trial_id)
        self._forget(trial.trial_id)

    def choose_trial_to_run(self, tune_controller: TuneController) -> Trial | None:
        """Apply pending reroutes to paused trials and resume those first; then FIFO."""
        trials = {t.trial_id: t for t in tune_controller.get_trials()}
        for trial_id, change in list(self._reroutes.items()):
            trial = trials.get(trial_id)
            if trial is not None and trial.status == Trial.PAUSED:
                trial.set_config({**trial.config, **change})
                self.history.set_config(trial_id, trial.config)
                del self._reroutes[trial_id]
                self._resume_first.append(trial_id)
        self._resume_first = [t for t in self._resume_first
                              if t in trials and trials[t].status == Trial.PAUSED]
        if self._resume_first:
            return trials[self._resume_first[0]]
        return super().choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return (f"MeasureScheduler(metric={self._metric!r}, grace_fraction="
                f"{self.grace_fraction}, top_k={self.top_k}, confidence={self.confidence}): "
                f"{len(self.history.ids(FINISHED))} finished, "
                f"{len(self.history.ids(RUNNING))} running; {self.history.decisions.summary()}")

    # --- the rules ----------------------------------------------------------------------------
    def _stop_reason(self, trial_id: str, rows: pd.DataFrame) -> tuple[str, dict] | None:
        """Stop a diverged trial; after the grace fraction, once ``min_finished`` trials have
        finished, stop one that is not protected and whose final metric's conformal lower
        bound at ``confidence`` is above the k-th best (finished or predicted)."""
        last = rows.iloc[-1]
        fraction = float(last["budget_fraction"])
        if bool(last["diverged"]):
            return "diverged", {self._metric: float(last[self._metric])}
        if fraction < self.grace_fraction or fraction >= 1.0:
            return None
        if self.protect_beacons and self.history.origin(trial_id) == BEACON:
            return None  # the planner composes its schedules from the beacons' paths
        if self.protect_plans and self.history.origin(trial_id) == PLANNED:
            return None  # a plan runs once, as the planner's test
        if len(self.history.ids(FINISHED)) < self.min_finished:
            return None  # the predictor's cold start compares early errors with final ones
        guess, lower = self._prediction(rows)
        self._predicted[trial_id] = guess.mean
        rival = self._kth_best(excluding=trial_id)
        numbers = {self._metric: float(last[self._metric]), "predicted_mean": guess.mean,
                   "predicted_std": guess.std, "prediction_mode": guess.mode,
                   "lower_bound": lower, "rival": rival}
        if math.isfinite(lower) and math.isfinite(rival) and lower > rival:
            return (f"predicted final {self._metric} is confidently worse than the "
                    f"{_ordinal(self.top_k)} best", numbers)
        log.debug("continue %s at fraction %.3g: %s", trial_id, fraction, numbers)
        return None

    def _runs_a_plan(self, trial_id: str) -> bool:
        """Spawned by the searcher's planner, or rerouted by this scheduler."""
        return (self.history.origin(trial_id) == PLANNED
                or trial_id in self.history.decisions.trial_ids(REROUTED))

    def _reroute_option(self, trial: Trial, rows: pd.DataFrame) -> RerouteOption | None:
        """A better course for a trial inside the reroute window, checked once per region."""
        fraction = float(rows["budget_fraction"].iloc[-1])
        if (not self.reroute or self._runs_a_plan(trial.trial_id)
                or not self.reroute_fraction <= fraction < self.reroute_until
                or trial.config.get("checkpoint_every", 1) != 1):
            return None  # a reroute resumes from this epoch's checkpoint: one every epoch
        finished, region = self._current_region()
        if region is None or self._reroute_checked.get(trial.trial_id) == self._region[0]:
            return None
        self._reroute_checked[trial.trial_id] = self._region[0]
        try:
            option = self.planner.reroute(finished, region, rows, trial.config)
        except ConfigError as err:
            log.debug("no reroute for %s: %s", trial.trial_id, err)
            return None
        log.debug("reroute check for %s: %s -> %s", trial.trial_id, option.numbers(),
                  option.schedule)
        return option if option.worthwhile else None

    # --- predictions and the region -----------------------------------------------------------
    def _needs_refit(self, n_finished: int) -> bool:
        """Fit first; then refit when more trials finished and either their number grew by
        ``refit_growth`` since the fit or it is still at most 2·``min_finished`` (the first fits
        change most with each trial)."""
        if self._predictor is None:
            return True
        if n_finished == self._predictor_fitted_on:
            return False
        grown = n_finished >= math.ceil(self._predictor_fitted_on * (1 + self.refit_growth))
        return grown or n_finished <= 2 * self.min_finished

    def _prediction(self, rows: pd.DataFrame) -> tuple[Prediction, float]:
        """The trial's predicted final metric and its lower bound at ``confidence`` (NaN
        while too few trials finished to vouch for it)."""
        finished = self.history.ids(FINISHED)
        if self._needs_refit(len(finished)):
            self._predictor = FinalErrorPredictor(
                features=self.features, target=target_column(self._metric),
                min_finished=self.min_finished).fit(self.history.table(finished, self._metric))
            self._predictor_fitted_on = len(finished)
        return (self._predictor.predict(rows),
                self._predictor.lower_bound(rows, self.confidence))

    def _kth_best(self, excluding: str) -> float:
        """The k-th lowest of the finished trials' final values and the other running trials'
        predictions (NaN when there are fewer than k)."""
        values = []
        for trial_id in self.history.ids(FINISHED):
            last = self.history.last(trial_id)
            values.append(float(last[self._metric]) if last else math.nan)
        values += [v for t, v in self._predicted.items()
                   if t != excluding and t in self.history
                   and self.history.status(t) == RUNNING]
        values = sorted(v for v in values if math.isfinite(v))
        return values[self.top_k - 1] if len(values) >= self.top_k else math.nan

    def _current_region(self) -> tuple[pd.DataFrame, OptimumRegion | None]:
        finished = tuple(self.history.ids(FINISHED))
        table = self.history.table(finished, self._metric)
        if len(finished) < self.min_finished:
            return table, None
        if self._region[0] != finished:
            try:
                region = self.planner.region(table, self._metric)
            except ConfigError as err:
                log.debug("no optimum region from %d finished trials: %s", len(finished), err)
                region = None
            self._region = (finished, region)
        return table, self._region[1]

    # --- bookkeeping --------------------------------------------------------------------------
    @property
    def decisions(self) -> pd.DataFrame:
        """Every stop, reroute and spawn so far (``DecisionLog.frame``)."""
        return self.history.decisions.frame()

    def _forget(self, trial_id: str) -> None:
        self._predicted.pop(trial_id, None)
        self._reroutes.pop(trial_id, None)
        self._reroute_checked.pop(trial_id, None)

    def _check_mode(self) -> None:
        if self._mode not in (None, "min"):
            raise ConfigError(f"mode={self._mode!r} is not accepted; MeasureScheduler predicts "
                              "final errors, which are minimised: use mode='min' with an error "
                              "metric such as 'val_error'.")


def _check_fraction(name: str, value: Any) -> None:
    if not (is_number(value) and 0 <= value < 1):
        raise ConfigError(f"{name}={value!r} is not accepted; use a budget fraction in [0, 1).")


def _check_int(name: str, value: Any, low: int) -> None:
    if not (is_int(value) and value >= low):
        raise ConfigError(f"{name}={value!r} is not accepted; use an integer >= {low}.")


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"
