"""A batch-size / lr sweep on digits: ``tune.run``, MeasureScheduler, DynamicSamplingSearcher.

Fixed-batch beacons (lr x batch size) run first; the scheduler stops trials predicted to end
confidently worse than the 3rd best and reroutes off-course ones; once enough beacons finished,
the searcher spawns dynamic-sampling trials planned toward the optimum region. The run ends
with ``decisions: stopped=<n> rerouted=<n> spawned=<n>`` and writes ``decisions.csv`` to the
experiment folder.

    python3 examples/tune_run_scheduler.py                 # laptop: local Ray, all CPUs
    python3 examples/tune_run_scheduler.py --smoke         # the same path, small and fast (CI)
    # cluster: `ray start --head` on one machine, `ray start --address=<head-ip>:6379` on the
    # others, then on the head (storage_path visible to every node: NFS or s3://...):
    python3 examples/tune_run_scheduler.py --address auto --storage-path /shared/ray_results \\
        --gpus-per-trial 0.5
"""

from __future__ import annotations

import argparse
import logging
import os

import ray
from ray import tune

from tune_batchdyn.tune import (
    DecisionsCallback,
    DynamicSamplingSearcher,
    MeasureScheduler,
    make_trainable,
)


def sweep(smoke: bool) -> tuple[dict, dict]:
    """The grid (fixed settings included, so the searcher and scheduler see them) and the
    searcher's settings."""
    if smoke:
        settings = {"epochs": 5, "measure_every": 5, "measures": ["fisher"], "seed": 0}
        grid = {"lr": tune.grid_search([0.05]),
                "batch_size": tune.grid_search([64, 128, 256]), **settings}
        return grid, {"max_planned": 1, "min_beacons": 2}
    settings = {"epochs": 20, "measure_every": 10, "seed": 0}
    grid = {"lr": tune.grid_search([0.01, 0.03, 0.1]),
            "batch_size": tune.grid_search([16, 32, 64, 128, 256, 512]), **settings}
    return grid, {"max_planned": 4, "min_beacons": 6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="3 beacons, 5 epochs, 1 plan")
    parser.add_argument("--address", default=None, help="'auto' to join a running cluster")
    parser.add_argument("--storage-path", default=os.path.expanduser("~/ray_results"))
    parser.add_argument("--name", default="digits-tune-run")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--gpus-per-trial", type=float, default=0.0)
    args = parser.parse_args()

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # one checkpoint kept per trial: Ray saves its experiment state at each, and would say so
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    logging.basicConfig(format="%(message)s")
    logging.getLogger("tune_batchdyn.tune").setLevel(logging.INFO)
    ray.init(address=args.address, include_dashboard=False, log_to_driver=False)

    grid, searcher_settings = sweep(args.smoke)
    searcher = DynamicSamplingSearcher(grid, **searcher_settings)
    scheduler = MeasureScheduler(history=searcher.history)
    trainable = tune.with_resources(make_trainable(dataset="digits", model="mlp"),
                                    {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
    analysis = tune.run(
        trainable, metric="val_error", mode="min", search_alg=searcher, scheduler=scheduler,
        num_samples=searcher.max_trials, storage_path=args.storage_path, name=args.name,
        verbose=0 if args.smoke else 1,
        callbacks=[DecisionsCallback(scheduler, echo=logging.getLogger(__name__).info)],
        max_failures=2, raise_on_failed_trial=False,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),  # the latest is all it reads
        reuse_actors=True)  # one worker process per slot: torch imported once
    best = analysis.get_best_trial(metric="val_error", mode="min", scope="last")
    if best is not None:
        print(f"best: strategy={best.config.get('strategy', 'fixed')} lr={best.config['lr']} "
              f"batch_size={best.config['batch_size']} "
              f"val_error={best.last_result['val_error']:.4f} "
              f"test_error={best.last_result['test_error']:.4f}")
    print(scheduler.history.decisions.summary())


if __name__ == "__main__":
    main()
