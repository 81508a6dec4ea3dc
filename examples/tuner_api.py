"""The digits sweep of ``tune_run_scheduler.py`` with the ``tune.Tuner`` API, resumable.

Same beacons, scheduler and searcher; ``RunConfig`` carries the storage path, the failure
policy (a trial whose worker dies is retried from its last checkpoint) and the decisions
callback. After an interruption, ``--resume`` continues the experiment with ``Tuner.restore``:
finished trials are kept, unfinished and errored ones resume from their checkpoints, and the
searcher comes back with its beacons, plans and decisions.

    python3 examples/tuner_api.py                 # laptop
    python3 examples/tuner_api.py --smoke         # the same path, small and fast (CI)
    python3 examples/tuner_api.py --resume        # continue an interrupted run
    # cluster: `ray start --head` / `ray start --address=<head-ip>:6379`, then on the head:
    python3 examples/tuner_api.py --address auto --storage-path /shared/ray_results
"""

from __future__ import annotations

import argparse
import logging
import os

import ray
from ray import tune
from tune_run_scheduler import sweep  # the same grid as the tune.run example (this folder)

from tune_batchdyn.tune import (
    DECISIONS_FILE,
    DecisionLog,
    DecisionsCallback,
    DynamicSamplingSearcher,
    MeasureScheduler,
    make_trainable,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="3 beacons, 5 epochs, 1 plan")
    parser.add_argument("--resume", action="store_true", help="Tuner.restore the experiment")
    parser.add_argument("--address", default=None, help="'auto' to join a running cluster")
    parser.add_argument("--storage-path", default=os.path.expanduser("~/ray_results"))
    parser.add_argument("--name", default="digits-tuner")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--gpus-per-trial", type=float, default=0.0)
    args = parser.parse_args()

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # one checkpoint kept per trial: Ray saves its experiment state at each, and would say so
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    logging.basicConfig(format="%(message)s")
    logging.getLogger("tune_batchdyn.tune").setLevel(logging.INFO)
    ray.init(address=args.address, include_dashboard=False, log_to_driver=False)

    trainable = tune.with_resources(make_trainable(dataset="digits", model="mlp"),
                                    {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
    path = os.path.join(args.storage_path, args.name)
    if args.resume:
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    else:
        grid, searcher_settings = sweep(args.smoke)
        searcher = DynamicSamplingSearcher(grid, **searcher_settings)
        scheduler = MeasureScheduler(history=searcher.history)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(metric="val_error", mode="min", search_alg=searcher,
                                        scheduler=scheduler,
                                        num_samples=searcher.max_trials,
                                        reuse_actors=True),
            run_config=tune.RunConfig(
                storage_path=args.storage_path, name=args.name, verbose=0 if args.smoke else 1,
                callbacks=[DecisionsCallback(scheduler, echo=logging.getLogger(__name__).info)],
                # a trial resumes (and a reroute restarts) from its latest checkpoint only
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=2)))
    results = tuner.fit()
    best = results.get_best_result(metric="val_error", mode="min", scope="last")
    print(f"best: strategy={best.config.get('strategy', 'fixed')} lr={best.config['lr']} "
          f"batch_size={best.config['batch_size']} val_error={best.metrics['val_error']:.4f} "
          f"test_error={best.metrics['test_error']:.4f}")
    # the searcher and scheduler of a restored run live inside the tuner: read their table
    print(DecisionLog.read_csv(os.path.join(path, DECISIONS_FILE)).summary())


if __name__ == "__main__":
    main()
