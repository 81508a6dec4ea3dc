"""Ray Tune integration: a trainable, a measure-driven scheduler and a dynamic-sampling searcher.

- ``make_trainable(**defaults)``: a function trainable running ``run_trial``; reports every
  epoch's record (plus ``budget_fraction``) with a checkpoint, resumes from Tune's checkpoint.
- ``MeasureScheduler``: stops trials whose predicted final error is confidently worse than the
  k-th best, stops diverged trials at once, reroutes a trial whose course ends outside the
  optimum region when a planned schedule brings it in (PAUSE, new ``strategy``, resume).
- ``DynamicSamplingSearcher``: fixed-batch beacons from a grid or any Tune searcher, then
  dynamic-sampling trials planned toward the optimum region; owns the ``TrialHistory`` that
  Ray saves and restores with the experiment.
- ``DecisionsCallback``: writes ``decisions.csv`` to the experiment folder and prints
  ``decisions: stopped=<n> rerouted=<n> spawned=<n>`` at the end of a run.
- ``make_replay_trainable``: plays recorded trajectories back, for benchmarks and tests.

Wiring (Ray restores searchers and callbacks on ``Tuner.restore``, not scheduler state, so the
scheduler shares the searcher's history)::

    from ray import tune
    from tune_batchdyn.tune import (DecisionsCallback, DynamicSamplingSearcher,
                                    MeasureScheduler, make_trainable)

    grid = {"lr": tune.grid_search([0.01, 0.1]), "batch_size": tune.grid_search([32, 128, 512])}
    searcher = DynamicSamplingSearcher(grid, max_planned=4)
    scheduler = MeasureScheduler(history=searcher.history)
    tuner = tune.Tuner(
        tune.with_resources(make_trainable(dataset="digits", model="mlp", epochs=20), {"cpu": 1}),
        tune_config=tune.TuneConfig(metric="val_error", mode="min", search_alg=searcher,
                                    scheduler=scheduler, num_samples=searcher.max_trials),
        run_config=tune.RunConfig(storage_path="/shared/ray_results", name="digits-sweep",
                                  callbacks=[DecisionsCallback(scheduler)],
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                  failure_config=tune.FailureConfig(max_failures=2)))
    tuner.fit()

Laptop: ``ray.init()`` (or nothing: Tune starts a local Ray) and a local ``storage_path``::

    python examples/tuner_api.py --storage-path ~/ray_results

Cluster: the same script. Start Ray on every machine, then run the script on the head node
(or any node) with ``address="auto"``; ``storage_path`` must be a folder every node sees at the
same path (NFS) or a cloud URI (``s3://bucket/ray_results``), because workers write
checkpoints there and the driver reads them back::

    # head node
    ray start --head --port=6379 --dashboard-host=0.0.0.0
    # each worker node (GPU machines advertise their GPUs themselves)
    ray start --address=<head-ip>:6379
    # driver, on the head node
    python examples/tuner_api.py --address auto --storage-path /shared/ray_results
    # after an interruption: the same command with --resume (Tuner.restore)
    python examples/tuner_api.py --address auto --storage-path /shared/ray_results --resume
    # when done, on every node
    ray stop

GPU trials: ``--gpus-per-trial 1`` (or ``0.5`` to share a GPU between two trials) wraps the
trainable in ``tune.with_resources(trainable, {"cpu": 1, "gpu": 0.5})``; Ray places trials on
the machines that have the resources and sets ``CUDA_VISIBLE_DEVICES`` for each.
"""

import importlib
from typing import Any

#: Public names and their modules. They are imported on first use (PEP 562), so a Ray worker
#: that only replays records or reports epochs does not import torch or the predictor.
_EXPORTS: dict[str, str] = {
    "CONTINUE": "scheduler", "PAUSE": "scheduler", "STOP": "scheduler",
    "MeasureScheduler": "scheduler",
    "DynamicSamplingSearcher": "searcher", "expand_grid": "searcher",
    "DECISIONS_FILE": "callback", "DecisionsCallback": "callback",
    "DecisionLog": "decisions", "TrialHistory": "history",
    "Planner": "planning", "RerouteOption": "planning",
    "make_trainable": "trainable",
    "cached_records": "replay", "make_replay_trainable": "replay", "replay_key": "replay",
    "trial_runner": "replay",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
