"""A batch-size / lr sweep on digits: ``tune.run``, MeasureScheduler, DynamicSamplingSearcher.

Fixed-batch beacons (lr x batch size) run first; the scheduler stops trials predicted to end
confidently worse than the 3rd best and reroutes off-course ones; once enough beacons finished,
the searcher spawns dynamic-sampling trials planned toward the optimum region. The run ends
with ``decisions: stopped=<n> rerouted=<n> spawned=<n>`` and writes ``decisions.csv`` to the
experiment folder.

    python3 examples/tune_run_scheduler.py                 # laptop: local Ray, all CPUs
    python3 examples/tune_run_scheduler.py --smoke         # the same path, small and fast (CI)
    # cluster: `ray start --head` on one machine, `ray start --address=<head-ip>:6379` on the
    # others (Ray's token on each: examples/cluster_sweep.md), then on the head (storage_path
    # visible to every node: NFS or s3://...):
    python3 examples/tune_run_scheduler.py --address auto --storage-path /shared/ray_results \\
        --gpus-per-trial 0.5
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import time

import ray
from ray import tune

from tune_batchdyn.cli import OneLineParser
from tune_batchdyn.cli.sweep import check_trial_resources
from tune_batchdyn.errors import ConfigError
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
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="3 beacons, 5 epochs, 1 plan")
    add_ray_arguments(parser, name="digits-tune-run")
    args = parser.parse_args()
    try:
        check_resources(args)
        experiment = experiment_folder(args, "pass another --name or --storage-path (this "
                                             "example always starts a new experiment)")
        start_ray(args)
    except ConfigError as err:  # one line and exit status 2, before Ray runs any trial
        parser.error(str(err))
    print(f"experiment: {experiment}", flush=True)

    grid, searcher_settings = sweep(args.smoke)
    searcher = DynamicSamplingSearcher(grid, **searcher_settings)
    scheduler = MeasureScheduler(history=searcher.history)
    trainable = tune.with_resources(make_trainable(dataset="digits", model="mlp"),
                                    {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
    analysis = tune.run(
        trainable, metric="val_error", mode="min", search_alg=searcher, scheduler=scheduler,
        num_samples=searcher.max_trials, storage_path=os.path.dirname(experiment), name=args.name,
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


def add_ray_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """The flags both Ray examples take: where the experiment goes and what a trial needs."""
    parser.add_argument("--address", default=None, help="'auto' to join a running cluster")
    parser.add_argument("--storage-path", default=os.path.expanduser("~/ray_results"))
    parser.add_argument("--name", default=None,
                        help=f"experiment folder under --storage-path (default: {name}- and the "
                             "time, a new one per run)")
    parser.set_defaults(default_name=name)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--gpus-per-trial", type=float, default=0.0)


def check_resources(args: argparse.Namespace) -> None:
    """Refuse resources no trial could get, as ``tune-batchdyn sweep`` does: Ray would wait
    for them forever."""
    check_trial_resources(args.cpus_per_trial, args.gpus_per_trial,
                          local=args.address is None and not os.environ.get("RAY_ADDRESS"))


def experiment_folder(args: argparse.Namespace, instead: str, resume: bool = False) -> str:
    """``--storage-path``/``--name``, refused as ``tune-batchdyn sweep`` refuses it: a new run
    in a folder that holds an experiment would mix two runs' trials and overwrite the first
    one's ``decisions.csv``; ``resume`` needs an experiment there. ``instead``: what to do."""
    if args.name is None and resume:
        raise ConfigError("--resume needs the --name of the experiment to continue.")
    if args.name is None:  # a new folder per run, as Ray names its experiments
        args.name = f"{args.default_name}-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    if not args.name or os.sep in args.name or args.name in (".", ".."):
        raise ConfigError(f"--name {args.name!r} is not accepted; use a plain folder name (no "
                          f"'{os.sep}'): the experiment goes into --storage-path/NAME.")
    storage = args.storage_path
    if "://" not in storage:  # a local folder (a URI is Ray's to read)
        storage = os.path.abspath(os.path.expanduser(storage))
    path = os.path.join(storage, args.name)
    restorable = tune.Tuner.can_restore(path)  # a Tuner's experiment (tuner.pkl)
    # tune.run writes no tuner.pkl: its experiment state files say a run was there
    if not resume and (restorable or glob.glob(os.path.join(glob.escape(path),
                                                            "experiment_state-*.json"))):
        raise ConfigError(f"{path} holds an experiment already: {instead}.")
    if resume and not restorable:
        raise ConfigError(f"--resume: {path} holds no experiment that Tuner.restore can "
                          "continue.")
    return path


def start_ray(args: argparse.Namespace) -> None:
    """``ray.init`` for the examples: local, or the cluster ``--address`` names."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # one checkpoint kept per trial: Ray saves its experiment state at each, and would say so
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    logging.basicConfig(format="%(message)s")
    logging.getLogger("tune_batchdyn.tune").setLevel(logging.INFO)
    try:
        ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
    except ConnectionError as err:  # also a cluster that wants a token this shell lacks
        raise ConfigError(f"--address {args.address}: no Ray cluster could be joined: none is "
                          "running (start one with `ray start --head`), or it requires its "
                          "token (export RAY_AUTH_MODE=token with the token in "
                          "~/.ray/auth_token; see examples/cluster_sweep.md). Without --address "
                          "the trials run on this machine.") from err


if __name__ == "__main__":
    main()
