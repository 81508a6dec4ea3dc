"""``MeasurePruner``: prune a trial whose final error is confidently worse than the k-th best
finished trial's, on top of a built-in pruner's rungs.

Rule, for a running trial at step (epoch) t with records stored by ``TrialReporter``:

    prune  ⇔  base prunes  or  b > v₍k₎

where ``base`` is a built-in pruner consulted at every step (default
``SuccessiveHalvingPruner()``), b is ``FinalErrorPredictor.lower_bound`` at ``confidence``
(fitted on the study's completed trials' records, read at the running trial's budget fraction):
the error the trial ends below with probability at most 1 − ``confidence``, calibrated by how
far the completed trials ended from their predictions with their configuration left out
(conformal), and v₍k₎ is the k-th lowest value among the completed trials. Guards, in order
(each returns "continue"): no step reported; t < ``n_warmup_steps``; the trial runs a plan of
``RerouteCallback`` (unless ``prune_plans``: a plan's early epochs run other batch sizes than
its end, which the prediction cannot know, and each plan runs once, as the planner's test); the
trial is a beacon enqueued by ``enqueue_beacon`` (unless ``prune_beacons``: every plan is
composed of the beacons' whole trajectories, so they run to the end, as on Ray). Then ``base``
decides alone while the bound cannot be given: fewer than ``n_startup_trials`` completed trials,
no records on the running trial, or too few completed trials to vouch for ``confidence`` (9 at
0.9).

Before training (no step reported yet: the objective asks once before the first epoch, when
``n_warmup_steps`` is 0, the default), the trial is judged on its configuration alone:

    prune  ⇔  b₀ > v₍k₎  or  b_r > v_r      (r = 0, the base's first rung)

b₀ the same conformal bound from its learning rate and batch size
(``FinalErrorPredictor.config_lower_bound``), fitted on its *peers*: the completed trials
whose configuration differs from its own only in lr, batch size and seeds (another momentum,
model or epoch count is not comparable on lr and batch size). b_r the same kind of bound on
the value it would report at the base's rung r, when the base is a ``SuccessiveHalvingPruner``
(the default): fitted on the peers that reached that rung, pruned ones too, from the values
the base stored there (``predict.configuration_bound``); v_r the value the rung would still
promote with this one (`rungs`). So a trial the rung would stop with probability at least
``confidence`` does not spend the rung's epochs first, and this bound is there long before
nine trials complete: every trial reaches the first rung. At rung r − 1's step, once the base
has promoted the trial past it, the same rule judges it on rung r: a promoted trial the next
rung would stop does not spend the epochs up to it (3 at η = 4 from step 1). The bound reads
the configuration alone there too: conditioned also on the trial's value at rung r − 1 it
saved no more epochs in the replay (benchmarks/README.md: Pruners). A trial pruned so stands at the
rung with b_r (the base's ``completed_rung_<r>``), as it would with its value had it run: the
rung's cutoff is a quantile of the values there, and without the trials stopped for standing
below it the rung grew stricter than alone, stopping the grid's best slow starters after their
first epoch (benchmarks/README.md: Pruners). Only a fixed batch size is judged so (a
schedule's mean batch size is known once it ran), a rung holding a value that is no error
(above 1) is not judged, and with a predictor that has no ``config_lower_bound`` b₀ is not
used. Over 12 replayed trial orders of three grids, b₀ took MeasurePruner from 0.86 of
SuccessiveHalving's trial-epochs to 0.75, the first rung's bound to 0.58 and the later rungs'
to 0.52, all within 0.2 points of its best (benchmarks/README.md: Pruners).

Why on top of a base pruner: replaying the recorded grids (benchmarks/pruners.py, 3 grids ×
3 orders, two order seeds), the bound alone after a ``MedianPruner`` cold start spent 0.96 of
the best built-in pruner's trial-epochs at a mean gap of 0.35 points to its best result; on
top of SuccessiveHalving's rungs, 0.80 at 0.34 (benchmarks/README.md: Pruners). The bound
prunes what the rungs keep but the predictor confidently rejects.

Why conformal, not the prediction's normal quantile μ − z·σ: σ is fitted on the completed
trials, few early in a study and all survivors of the pruner itself, and the normal quantile
trusted it. Replaying the recorded grids (benchmarks/pruners.py) it pruned the best
configuration, a slow starter at the grid's lowest learning rate, in several trial orders;
the conformal bound widens exactly when the completed trials were predicted badly
(benchmarks/README.md: Pruners, for and against).

NaN: a NaN reported value does not prune by itself; the decision reads the records. A
diverged trial's bound is its own error (chance level when NaN, as ``FinalErrorPredictor``
does), so it is pruned when that is worse than v₍k₎ (``objective`` never asks: diverged
trials end on their own). NaN measures and val errors are filled by the finished trials'
median at that fraction. A trial without records is left to the base pruner and its NaN rule.

Why, in the storage: a trial this pruner prunes gets the user attribute ``prune/reason``
(`prune_reason`): the base pruner's class, or the bound (the configuration's, a
rung's) and its rival.

Storage only: Optuna does not store pruners, so every worker builds its own, and the decision
is a function of what the storage holds. The one memo, the fitted predictor, is keyed by the
completed trials' contents (number, value, start and completion times: completed trials never
change; one for the running trials' bound, one for the peers of the last configuration
judged), so it is rebuilt exactly when another worker's trial completes, and never serves
another study: a pruner reused for a second study, even one of the same name in another
storage (a notebook cell run again, a loop over datasets), fits that study's own predictor.
A rung's bound is fitted anew at each judgment (a GP on at most ``RUNG_PEERS`` points).

Example::

    import optuna
    from tune_batchdyn.optuna import MeasurePruner, make_objective

    study = optuna.create_study(pruner=MeasurePruner(k=3, n_startup_trials=5))
    study.optimize(make_objective({"batch_size": [8, 32, 128, 512], "lr": [0.05, 0.2]},
                                  dataset="nqm", model="nqm", epochs=8,
                                  dataset_options={"samples_per_epoch": 6400, "dim": 1000}),
                   n_trials=16)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.pruners import BasePruner, SuccessiveHalvingPruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sklearn.base import clone

from tune_batchdyn.errors import ConfigError, is_int, is_number
from tune_batchdyn.optuna.prune_reason import store_reason
from tune_batchdyn.optuna.reporter import FINAL_METRICS
from tune_batchdyn.optuna.reroute import BEACON_ATTR, PLAN_ATTR
from tune_batchdyn.optuna.rungs import promotion_cutoff, rung_values, rungs, stand_at_rung
from tune_batchdyn.predict import FinalErrorPredictor
from tune_batchdyn.predict.configuration_bound import ERROR_CLIP, ConfigurationBound
from tune_batchdyn.records import CONFIG_ATTR, REPEAT_ATTR, records_from_optuna, target_column
from tune_batchdyn.train.config import RUN_ONLY_FIELDS


class MeasurePruner(BasePruner):
    """Prune on the predicted final error (see the module docstring).

    Args:
        k: the running trial is compared with the k-th best completed trial (1: the best).
        confidence: probability that the trial ends worse than the k-th best before it is
            pruned (conformal: needs at least confidence/(1 − confidence) completed trials,
            else the base pruner decides alone).
        n_startup_trials: completed trials before the prediction is used (at least ``k``).
            The predictor has a floor of its own: the default ``FinalErrorPredictor`` gives no
            bound before ``min_finished`` (5) completed trials, so below 5 the base decides
            alone until the fifth completes; for fewer, pass
            ``predictor=FinalErrorPredictor(target="final_val_error", min_finished=...)``
            (at least 2).
        n_warmup_steps: no pruning while the epoch is below it; epochs count from 1, so
            1 first judges a trial after its first epoch, and the default 0 also before it
            trains, on its configuration (see the module docstring).
        base: a built-in pruner consulted at every step, whose "prune" stands (alone before
            ``n_startup_trials`` and for trials without records); default
            ``SuccessiveHalvingPruner()``; ``optuna.pruners.NopPruner()`` for the bound alone.
        predictor: an unfitted predictor to clone and fit (``fit(records)``,
            ``lower_bound(rows, confidence)`` returning an error or NaN); default
            ``FinalErrorPredictor`` of ``final_<metric>``.
        metric: the record column the objective returns at the end: ``val_error`` or
            ``test_error``, the finals the records table carries (``final_<metric>``).
        prune_plans: judge rerouted trials (``reroute/plan``) like the others.
        prune_beacons: judge beacons (``reroute/beacon``) like the others.
    """

    def __init__(self, *, k: int = 1, confidence: float = 0.9, n_startup_trials: int = 5,
                 n_warmup_steps: int = 0, base: BasePruner | None = None,
                 predictor: Any = None, metric: str = "val_error",
                 prune_plans: bool = False, prune_beacons: bool = False) -> None:
        if not is_int(k) or k < 1:
            raise ConfigError(f"k must be an integer of at least 1, but got {k=}.")
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) \
                or not 0.5 <= confidence < 1.0:
            raise ConfigError(f"confidence must be in [0.5, 1), but got {confidence=}.")
        if not is_int(n_startup_trials) or n_startup_trials < k:
            raise ConfigError(f"n_startup_trials must be an integer of at least k={k}, but got "
                              f"{n_startup_trials=}.")
        if not is_int(n_warmup_steps) or n_warmup_steps < 0:
            raise ConfigError(f"n_warmup_steps must be a non-negative integer, but got "
                              f"{n_warmup_steps=}.")
        if base is not None and not isinstance(base, BasePruner):
            raise ConfigError(f"base must be an optuna pruner or None, but got {base=}.")
        if metric not in FINAL_METRICS:
            raise ConfigError(f"{metric=} is not accepted by MeasurePruner; use one of: "
                              f"{', '.join(map(repr, FINAL_METRICS))} (the records table holds "
                              "no other final value to predict).")
        if predictor is not None and not (hasattr(predictor, "fit")
                                          and hasattr(predictor, "lower_bound")):
            raise ConfigError(f"predictor must have fit(records) and lower_bound(rows, "
                              f"confidence), but got {predictor=}.")
        for name, value in (("prune_plans", prune_plans), ("prune_beacons", prune_beacons)):
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be True or False, but got {name}={value!r}.")
        self._k = k
        self._confidence = float(confidence)
        self._n_startup_trials = n_startup_trials
        self._n_warmup_steps = n_warmup_steps
        self._base = base or SuccessiveHalvingPruner()
        self._predictor = predictor or FinalErrorPredictor(target=target_column(metric))
        self._prune_plans = prune_plans
        self._prune_beacons = prune_beacons
        self._metric = metric
        self._memo: tuple[frozenset[tuple], Any] | None = None
        self._peers_memo: tuple[frozenset[tuple], Any] | None = None

    @property
    def metric(self) -> str:
        """The record column whose final value the bound predicts."""
        return self._metric

    def check_metric(self, metric: str) -> None:
        """Refuse an objective that reports another ``metric``: its values would be compared
        with a bound on ``final_<self.metric>``. The storage does not say which metric an
        objective reports, so the objective must ask, before a trial trains."""
        if metric != self._metric:
            raise ConfigError(f"the objective's {metric=} is not accepted with "
                              f"MeasurePruner(metric={self._metric!r}), whose bound predicts "
                              f"final_{self._metric}; pass the same metric to both.")

    @staticmethod
    def check_direction(direction: str | StudyDirection | Sequence[str | StudyDirection]
                        ) -> None:
        """Refuse a study that does not minimise one objective: checked by ``open_study``
        before the study is made, by ``objective`` before a trial trains, and at every
        decision. Takes ``study.directions`` too, where a multi-objective study is refused by
        name (``study.direction`` raises Optuna's RuntimeError there)."""
        if not isinstance(direction, (str, StudyDirection)):
            names = [d.name.lower() if isinstance(d, StudyDirection) else d for d in direction]
            if len(names) != 1:
                raise ConfigError(f"directions={names} is not accepted with MeasurePruner, "
                                  "which predicts one error: it needs a single-objective study; "
                                  "create it with direction='minimize'.")
            direction = names[0]
        name = direction.name.lower() if isinstance(direction, StudyDirection) else direction
        if name != "minimize":
            raise ConfigError(f"direction={name!r} is not accepted with MeasurePruner, which "
                              "predicts errors; create the study with direction='minimize'.")

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        self.check_direction(study.directions)
        if PLAN_ATTR in trial.user_attrs and not self._prune_plans:
            return False
        if trial.user_attrs.get(BEACON_ATTR) and not self._prune_beacons:
            return False
        step = trial.last_step
        if step is None:
            return self._n_warmup_steps == 0 and self._judged_before_training(study, trial)
        if step < self._n_warmup_steps:
            return False
        if self._base.prune(study, trial):  # every step: its rungs are kept in the storage
            return _pruned(study, trial, {"by": type(self._base).__name__})
        completed = _completed(study)
        running = records_from_optuna([trial])
        if len(completed) >= self._n_startup_trials and not running.empty:
            bound = float(self._fitted(completed).lower_bound(running, self._confidence))
            if self._above_kth_best(study, trial, "bound", bound, completed):
                return True
        return self._next_rung_pruned(study, trial, step, completed)

    def _judged_before_training(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """A fixed-batch configuration, before it trains: its final error's bound among its
        peers, then its value's at the base's first rung (module docstring)."""
        config = trial.user_attrs.get(CONFIG_ATTR)
        if not (isinstance(config, dict) and _fixed_batch(config)):
            return False
        return (self._configuration_pruned(study, trial, config)
                or self._rung_pruned(study, trial, config, study.get_trials(deepcopy=False), 0))

    def _next_rung_pruned(self, study: optuna.Study, trial: FrozenTrial, step: int,
                          completed: list[FrozenTrial]) -> bool:
        """At the step of rung j, which the base has just promoted it past: a fixed-batch
        trial's value at rung j + 1 (module docstring). The rungs' steps need the completed
        trials only; the others are read at a rung's step alone."""
        config = trial.user_attrs.get(CONFIG_ATTR)
        if not (isinstance(config, dict) and _fixed_batch(config)):
            return False
        ladder = rungs(self._base, completed)
        index = None if ladder is None else ladder.index_at(step)
        return index is not None and self._rung_pruned(
            study, trial, config, study.get_trials(deepcopy=False), index + 1)

    def _configuration_pruned(self, study: optuna.Study, trial: FrozenTrial,
                              config: dict[str, Any]) -> bool:
        """b₀ > v₍k₎: the final error's bound from the completed peers."""
        if not hasattr(self._predictor, "config_lower_bound"):
            return False
        peers = [t for t in _completed(study) if _peers(t.user_attrs.get(CONFIG_ATTR), config)]
        if len(peers) < self._n_startup_trials:
            return False
        bound = float(self._fitted(peers, "_peers_memo").config_lower_bound(
            float(config["lr"]), float(config["batch_size"]), self._confidence))
        return self._above_kth_best(study, trial, "configuration", bound, peers)

    def _rung_pruned(self, study: optuna.Study, trial: FrozenTrial, config: dict[str, Any],
                     trials: list[FrozenTrial], index: int) -> bool:
        """b > v₍m₎: the bound of the value at the base's rung ``index``, from the peers among
        ``trials`` that reached it, above the value the rung would promote; a trial pruned so
        stands at the rung with b (module docstring)."""
        ladder = rungs(self._base, trials)
        if ladder is None:
            return False
        values, step = rung_values(trials, index), ladder.step(index)
        peers = [t for t in trials if t.number in values and (t.last_step or 0) >= step
                 and _fixed_batch(t.user_attrs.get(CONFIG_ATTR) or {})
                 and _peers(t.user_attrs.get(CONFIG_ATTR), config)]
        if (len(peers) < self._n_startup_trials or len(values) < ladder.bootstrap_count
                or not all(_within(v, (0.0, 1.0)) for v in values.values())):
            return False  # the bound is one on errors (a loss is not judged)
        peers = sorted(peers, key=lambda t: t.number)[-RUNG_PEERS:]
        settings = [t.user_attrs[CONFIG_ATTR] for t in peers]
        bound = ConfigurationBound.fit(
            [float(c["lr"]) for c in settings], [float(c["batch_size"]) for c in settings],
            [values[t.number] for t in peers],
        ).lower_bound(float(config["lr"]), float(config["batch_size"]), self._confidence)
        if not bound > max(cutoff := promotion_cutoff(list(values.values()), bound,
                                                      ladder.reduction_factor), ERROR_CLIP[0]):
            return False  # also for a NaN bound; below the logit's clip a bound says nothing
        stand_at_rung(study, trial, index, bound)
        return _pruned(study, trial, {"by": "rung", "rung": index, "lower_bound": bound,
                                      "rival": cutoff, "step": step,
                                      "confidence": self._confidence})

    def _above_kth_best(self, study: optuna.Study, trial: FrozenTrial, by: str, bound: float,
                        completed: list[FrozenTrial]) -> bool:
        """Prune (and say why) when ``bound`` is above the k-th best of ``completed``."""
        kth_best = sorted(t.value for t in completed)[self._k - 1]
        if not bound > kth_best:  # also for a NaN bound
            return False
        return _pruned(study, trial, {"by": by, "lower_bound": bound, "rival": kth_best,
                                      "k": self._k, "confidence": self._confidence})

    def _fitted(self, completed: list[FrozenTrial], slot: str = "_memo") -> Any:
        """The predictor fitted on ``completed``: refitted only when that set changes. The key
        is the trials' contents, not their numbers (every study numbers from 0) nor the
        study's name (two storages may hold the same name), so no other study's trials match."""
        key = frozenset((t.number, t.value, t.datetime_start, t.datetime_complete)
                        for t in completed)
        for name in ("_memo", "_peers_memo"):  # the peers are often all completed trials
            memo = getattr(self, name)  # read once: threads of optimize(n_jobs=...) share it
            if memo is not None and memo[0] == key:
                return memo[1]
        memo = (key, clone(self._predictor, safe=False).fit(records_from_optuna(completed)))
        setattr(self, slot, memo)
        return memo[1]


#: A rung's bound is fitted on the latest this many peers that reached the rung: the
#: GP's cost grows with the cube of its points (60 ms for 500 on a 2-core CPU, 0.8 s for 1200),
#: and a grid's configurations have their seeds among the latest few hundred.
RUNG_PEERS = 500

#: Config fields a configuration's peers may differ in: the ones its bound reads (lr, batch
#: size) and the seeds; a run-only field (device, paths) does not change a trajectory.
PEER_FREE_FIELDS = frozenset({"lr", "batch_size", "seed", "data_seed"}) | RUN_ONLY_FIELDS


def _completed(study: optuna.Study) -> list[FrozenTrial]:
    """The study's completed trials, each configuration counted once (no repeats)."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if REPEAT_ATTR not in t.user_attrs]


def _fixed_batch(config: dict[str, Any]) -> bool:
    """A fixed batch-size strategy with a numeric lr and batch size."""
    strategy = config.get("strategy")
    name = strategy.get("name") if isinstance(strategy, dict) else strategy
    return (isinstance(name, str) and name.strip() == "fixed"
            and is_number(config.get("lr")) and is_number(config.get("batch_size")))


def _within(value: Any, interval: tuple[float, float]) -> bool:
    return is_number(value) and interval[0] <= value <= interval[1]


def _peers(stored: Any, config: dict[str, Any]) -> bool:
    """Whether a completed trial's stored config differs from ``config`` only in
    ``PEER_FREE_FIELDS``."""
    if not isinstance(stored, dict):
        return False
    keys = (set(stored) | set(config)) - PEER_FREE_FIELDS
    return all(stored.get(key) == config.get(key) for key in keys)


def _pruned(study: optuna.Study, trial: FrozenTrial, reason: dict[str, Any]) -> bool:
    store_reason(study, trial, reason)
    return True
