"""The brain: predict final errors early, locate the optimum region, plan batch-size schedules.

numpy/scipy/pandas (and scikit-learn's estimator base) only; works on records tables
(``tune_batchdyn.records``), never on models.

- ``FinalErrorPredictor``: a running trial's final error with an uncertainty (GP on its
  measures at the same budget fraction as the finished trials), cold-start and diverged rules;
  baselines ``NearestNeighbourPredictor`` (the seed's 5-nearest rule), ``CurrentValErrorPredictor``,
  ``PowerLawPredictor``, ``ConfigOnlyPredictor``.
- ``OptimumRegion``: the seed's level set of lowest 5-nearest-average error in (ln C̄K, ln LK);
  ``informative_k``: fewer neighbours while few trials have finished, so the map is not flat.
- ``plan_schedule``: the staged schedule (``s{a}-to-{b}``, ``-MS``, stage lists) whose path,
  composed from fixed-batch beacons, ends nearest the region's centre.
"""

from tune_batchdyn.predict.baselines import (
    CurrentValErrorPredictor,
    NearestNeighbourPredictor,
    PowerLawPredictor,
)
from tune_batchdyn.predict.beacons import (
    Beacon,
    BeaconSet,
    beacons_from_records,
    compose,
    nearest_lr,
)
from tune_batchdyn.predict.features import CONFIG_FEATURES, FEATURE_GROUPS, FEATURES
from tune_batchdyn.predict.neighbours import nearest_average
from tune_batchdyn.predict.planner import SchedulePlan, plan_schedule
from tune_batchdyn.predict.predictor import ConfigOnlyPredictor, FinalErrorPredictor
from tune_batchdyn.predict.region import OptimumRegion, informative_k
from tune_batchdyn.predict.result import Prediction
from tune_batchdyn.predict.schedules import (
    Schedule,
    epoch_batch_sizes,
    geometric_stages,
    parse_schedule,
    schedule_family,
)
from tune_batchdyn.predict.trials import Trial, TrialSet

__all__ = [
    "CONFIG_FEATURES",
    "FEATURES",
    "FEATURE_GROUPS",
    "Beacon",
    "BeaconSet",
    "ConfigOnlyPredictor",
    "CurrentValErrorPredictor",
    "FinalErrorPredictor",
    "NearestNeighbourPredictor",
    "OptimumRegion",
    "PowerLawPredictor",
    "Prediction",
    "Schedule",
    "SchedulePlan",
    "Trial",
    "TrialSet",
    "beacons_from_records",
    "compose",
    "epoch_batch_sizes",
    "geometric_stages",
    "informative_k",
    "nearest_average",
    "nearest_lr",
    "parse_schedule",
    "plan_schedule",
    "schedule_family",
]
