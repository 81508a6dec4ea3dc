"""The digits sweep of ``tune_run_scheduler.py`` with the ``tune.Tuner`` API, resumable.

Same beacons, scheduler and searcher; ``RunConfig`` carries the storage path, the failure
policy (a trial whose worker dies is retried from its last checkpoint) and the decisions
callback. After an interruption, ``--resume`` continues the experiment with ``Tuner.restore``:
finished trials are kept, unfinished and errored ones resume from their checkpoints, and the
searcher comes back with its beacons, plans and decisions.

    python3 examples/tuner_api.py                 # laptop
    python3 examples/tuner_api.py --smoke         # the same path, small and fast (CI)
    python3 examples/tuner_api.py --resume --name NAME   # continue the run it printed
    # cluster: `ray start --head` / `ray start --address=<head-ip>:6379` (Ray's token on each
    # node: examples/cluster_sweep.md), then on the head:
    python3 examples/tuner_api.py --address auto --storage-path /shared/ray_results
"""

from __future__ import annotations

import logging
import os

from ray import tune
from tune_run_scheduler import (  # the tune.run example's grid and checks (this folder)
    add_ray_arguments,
    check_resources,
    experiment_folder,
    start_ray,
    sweep,
)

from tune_batchdyn.cli import OneLineParser
from tune_batchdyn.errors import ConfigError
from tune_batchdyn.tune import (
    DECISIONS_FILE,
    DecisionLog,
    DecisionsCallback,
    DynamicSamplingSearcher,
    MeasureScheduler,
    make_trainable,
)


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="3 beacons, 5 epochs, 1 plan")
    parser.add_argument("--resume", action="store_true", help="Tuner.restore the experiment")
    add_ray_arguments(parser, name="digits-tuner")
    args = parser.parse_args()
    try:
        check_resources(args)
        path = experiment_folder(args, "pass --resume to continue it (finished trials are "
                                       "kept) or another --name", resume=args.resume)
        start_ray(args)
    except ConfigError as err:  # one line and exit status 2, before Ray runs any trial
        parser.error(str(err))
    print(f"experiment: {path}", flush=True)

    trainable = tune.with_resources(make_trainable(dataset="digits", model="mlp"),
                                    {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
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
                storage_path=os.path.dirname(path), name=args.name,
                verbose=0 if args.smoke else 1,
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
