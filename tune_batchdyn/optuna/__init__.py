"""The Optuna plugin: objective, pruner on predicted final errors, rerouting, storage.

- ``objective`` / ``make_objective``: a trial samples a config from a search space, runs
  ``run_trial``, stores each epoch's record as a user attribute, reports the val error and
  honours ``trial.should_prune()`` (asked once before training too); returns the final error
  (a diverged trial: its error).
- ``MeasurePruner``: prunes a trial whose predicted final error (``FinalErrorPredictor`` on the
  study's finished trials) is confidently worse than the k-th best, on top of a base pruner's
  decisions (default ``SuccessiveHalvingPruner``, alone before the prediction can be used),
  and, from a fixed-batch trial's configuration alone, one confidently worse before it trains
  or confidently stopped by SuccessiveHalving's next rung before it trains up to it;
  the trial's user attribute ``prune/reason`` says which pruned it (``reason_text``).
- ``RerouteCallback``: once enough fixed-batch beacons finished, enqueues the dynamic-sampling
  schedule planned to land in the optimum region, each plan once; a planned trial's schedule
  is its user attribute ``reroute/schedule`` (its params hold no fixed-batch ``batch_size``);
  ``enqueue_beacon`` enqueues a beacon, which ``MeasurePruner`` lets run to the end.
- ``enqueue_once``: enqueue a configuration once per study, also when workers enqueue it at the
  same instant (the lowest-numbered trial runs it, later ones are skipped untrained:
  ``skip_duplicate``), and again when its trial failed (a killed worker's, once its heartbeat
  is stale).
- ``open_study``: join or create a study in memory, SQLite, PostgreSQL/MySQL or a journal file;
  ``decisions_line``: ``decisions: pruned=<n> enqueued=<n>``.
- ``measure_target``: plot a measure with Optuna's visualisations; ``enqueue_replay`` /
  ``replay_objective``: play a records table back through a study.

Every decision reads the storage, never process memory, so any number of workers on any
machines share one study, and a killed worker loses only its running trial.

Example::

    import optuna
    from tune_batchdyn.optuna import (MeasurePruner, RerouteCallback, decisions_line,
                                      make_objective, open_study)

    study = open_study("sqlite:///sweep.db", "digits", pruner=MeasurePruner())
    study.optimize(make_objective("digits_mlp", device="cpu"), n_trials=20,
                   callbacks=[RerouteCallback()])
    print(decisions_line(study))
"""

from tune_batchdyn.optuna.decisions import Decisions, count_decisions, decisions_line
from tune_batchdyn.optuna.enqueue import (
    DUPLICATE_ATTR,
    KEY_ATTR,
    UNQUEUED_ATTR,
    enqueue_once,
    repeat_key,
    requeue_failed,
    skip_duplicate,
    skipped,
    was_enqueued,
)
from tune_batchdyn.optuna.objective import (
    DIVERGED_ERROR,
    final_value,
    make_objective,
    objective,
    trial_config,
)
from tune_batchdyn.optuna.prune_reason import PRUNE_REASON_ATTR, reason_text
from tune_batchdyn.optuna.pruner import MeasurePruner
from tune_batchdyn.optuna.replay import REPLAY_ATTR, enqueue_replay, replay_objective
from tune_batchdyn.optuna.reporter import FINAL_METRICS, METRICS, TrialReporter
from tune_batchdyn.optuna.reroute import (
    BEACON_ATTR,
    PLAN_ATTR,
    PLAN_KEY_ATTR,
    SCHEDULE_ATTR,
    RerouteCallback,
    composable,
    enqueue_beacon,
    plan_key,
    plan_overrides,
    planned_keys,
)
from tune_batchdyn.optuna.sampling import TrialSpace, as_trial_space, suggest_config
from tune_batchdyn.optuna.storage import existing_storage, make_storage, open_study
from tune_batchdyn.optuna.targets import measure_target

__all__ = [
    "BEACON_ATTR",
    "DIVERGED_ERROR",
    "DUPLICATE_ATTR",
    "FINAL_METRICS",
    "KEY_ATTR",
    "METRICS",
    "PLAN_ATTR",
    "PLAN_KEY_ATTR",
    "PRUNE_REASON_ATTR",
    "REPLAY_ATTR",
    "SCHEDULE_ATTR",
    "UNQUEUED_ATTR",
    "Decisions",
    "MeasurePruner",
    "RerouteCallback",
    "TrialReporter",
    "TrialSpace",
    "as_trial_space",
    "composable",
    "count_decisions",
    "decisions_line",
    "enqueue_beacon",
    "enqueue_once",
    "enqueue_replay",
    "existing_storage",
    "final_value",
    "make_objective",
    "make_storage",
    "measure_target",
    "objective",
    "open_study",
    "plan_key",
    "plan_overrides",
    "planned_keys",
    "reason_text",
    "repeat_key",
    "replay_objective",
    "requeue_failed",
    "skip_duplicate",
    "skipped",
    "was_enqueued",
    "suggest_config",
    "trial_config",
]
