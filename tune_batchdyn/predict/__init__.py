"""The brain: predict final errors early, locate the optimum region, plan batch-size schedules.

numpy/scipy/pandas (and scikit-learn's estimator base) only; works on records tables
(``tune_batchdyn.records``), never on models. The names below are imported on first use
(PEP 562), so code that needs only ``predict.schedules`` (the strategies, so every trial) does
not import scikit-learn and SciPy (1.5 s of a trial's start).

- ``FinalErrorPredictor``: a running trial's final error with an uncertainty (GP on its
  measures at the same budget fraction as the finished trials), cold-start and diverged rules;
  baselines ``NearestNeighbourPredictor`` (the seed's 5-nearest rule), ``CurrentValErrorPredictor``,
  ``PowerLawPredictor``, ``ConfigOnlyPredictor``.
- ``ConfigurationBound``: a conformal lower bound on an error of a fixed-batch configuration
  not yet trained, from a GP on ln lr and ln batch size (what a pruner judges before training).
- ``OptimumRegion``: the seed's level set of lowest 5-nearest-average error in (ln C̄K, ln LK);
  ``informative_k``: fewer neighbours while few trials have finished, so the map is not flat.
- ``plan_schedule``: the staged schedule (``s{a}-to-{b}``, ``-MS``, stage lists) whose path,
  composed from fixed-batch beacons, ends nearest the region's centre.
"""

import importlib
import importlib.util
from typing import Any

#: Public names and their modules.
_EXPORTS: dict[str, str] = {
    "CurrentValErrorPredictor": "baselines", "NearestNeighbourPredictor": "baselines",
    "PowerLawPredictor": "baselines",
    "Beacon": "beacons", "BeaconSet": "beacons", "beacons_from_records": "beacons",
    "beacons_at": "beacons", "compose": "beacons", "continue_from": "beacons",
    "reads_text": "beacons",
    "nearest_lr": "beacons",
    "ConfigurationBound": "configuration_bound",
    "CONFIG_FEATURES": "features", "FEATURE_GROUPS": "features", "FEATURES": "features",
    "nearest_average": "neighbours",
    "SchedulePlan": "planner", "plan_schedule": "planner",
    "ConfigOnlyPredictor": "predictor", "FinalErrorPredictor": "predictor",
    "OptimumRegion": "region", "informative_k": "region",
    "Prediction": "result",
    "Schedule": "schedules", "epoch_batch_sizes": "schedules", "geometric_stages": "schedules",
    "parse_schedule": "schedules", "schedule_family": "schedules",
    "Trial": "trials", "TrialSet": "trials",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:  # ``predict.planner``
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_EXPORTS.values()})
