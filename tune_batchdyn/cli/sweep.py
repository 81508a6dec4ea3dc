"""``tune-batchdyn sweep``: a scheduled batch-size / lr sweep on Ray Tune or Optuna.

By default our scheduler and searcher drive it (Ray: MeasureScheduler + DynamicSamplingSearcher;
Optuna: MeasurePruner + RerouteCallback); ``--scheduler`` / ``--pruner`` name a built-in one for
comparison. It prints a progress line as trials finish, then a summary table, the decision log
and ``decisions: ...``; ``--out`` writes every trial's records and ``--figures`` the (C̄K, LK)
figures.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from tune_batchdyn.cli._checks import check_records_file, check_writable_folder
from tune_batchdyn.cli.train import parse_config_overrides
from tune_batchdyn.errors import ConfigError, check_choice
from tune_batchdyn.strategies.dynamic_sampling import run_lengths

SCHEDULERS = ("measure", "asha", "hyperband", "median", "fifo")
PRUNERS = ("measure", "median", "successive-halving", "hyperband", "wilcoxon", "none")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sweep", help="run a scheduled sweep on Ray Tune or Optuna",
                              description=__doc__.splitlines()[0].replace("``", ""))
    p.add_argument("--space", required=True,
                   help="a space file (searchspaces/*.toml) or a shipped space's name")
    p.add_argument("--backend", default="ray", help="ray (default) or optuna")
    p.add_argument("--scheduler", default=None,
                   help=f"Ray: {', '.join(SCHEDULERS)} (default: measure)")
    p.add_argument("--pruner", default=None,
                   help=f"Optuna: {', '.join(PRUNERS)} (default: measure)")
    p.add_argument("--address", default=None, help="Ray cluster address (e.g. auto)")
    p.add_argument("--cpus-per-trial", type=float, default=None,
                   help="Ray: CPUs per trial (default: 1)")
    p.add_argument("--gpus-per-trial", type=float, default=None,
                   help="Ray: GPUs per trial; fractions share a GPU (0.5: two trials per GPU; "
                        "default: 0)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (sqlite:///f.db, postgresql://..., or a journal file)")
    p.add_argument("--study-name", default=None, help="Optuna study (default: the space's name)")
    p.add_argument("--storage-path", default=None, help="Ray results folder (shared on a cluster)")
    p.add_argument("--name", default=None, help="Ray experiment name (default: the space's name)")
    p.add_argument("--resume", action="store_true",
                   help="Ray: continue the experiment in --storage-path/--name (finished trials "
                        "are kept, the others resume from the checkpoint Ray's experiment state "
                        "recorded; after a hard kill, trials started since its last save start "
                        "again)")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at once")
    p.add_argument("--budget", type=int, default=None,
                   help="trial-epochs the sweep may train (default: the space's [search] "
                        "budget, else no limit); once spent, Optuna starts no trial (running "
                        "ones finish) and Ray ends the sweep (running trials stop there)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="wall-clock seconds the sweep may run (default: no limit); once spent, "
                        "Optuna starts no trial (running ones finish) and Ray ends the sweep "
                        "(running trials stop there, kept with the epochs they trained)")
    p.add_argument("--max-planned", type=int, default=3,
                   help="dynamic-sampling trials spawned (default: 3)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a fixed TrialConfig field, e.g. epochs=10 or "
                        "measures=fisher,quality (repeatable)")
    p.add_argument("--out", default=None, help="write all records (.parquet or .csv)")
    p.add_argument("--figures", default=None, metavar="DIR", help="write the (C̄K, LK) figures")
    p.set_defaults(func=main)


#: Flags that only one backend reads (attribute, flag): given to the other, they are refused.
RAY_ONLY = (("scheduler", "--scheduler"), ("address", "--address"),
            ("storage_path", "--storage-path"), ("name", "--name"),
            ("cpus_per_trial", "--cpus-per-trial"), ("gpus_per_trial", "--gpus-per-trial"))
OPTUNA_ONLY = (("pruner", "--pruner"), ("storage", "--storage"), ("study_name", "--study-name"))


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad or inapplicable flags before anything starts (one line, the flag named)."""
    check_choice("--backend", args.backend, ("ray", "optuna"))
    other = OPTUNA_ONLY if args.backend == "ray" else RAY_ONLY
    given = [flag for attribute, flag in other if getattr(args, attribute) is not None]
    if given:
        backend = "optuna" if args.backend == "ray" else "ray"
        device = (" (Optuna trains in this process: --set device=cuda for the GPU)"
                  if "--gpus-per-trial" in given else "")
        raise ConfigError(f"{', '.join(given)} is for --backend {backend}, not "
                          f"--backend {args.backend}; drop it or switch the backend{device}.")
    args.cpus_per_trial = 1.0 if args.cpus_per_trial is None else args.cpus_per_trial
    args.gpus_per_trial = 0.0 if args.gpus_per_trial is None else args.gpus_per_trial
    args.scheduler = args.scheduler or "measure"
    args.pruner = args.pruner or "measure"
    check_choice("--scheduler", args.scheduler, SCHEDULERS)
    check_choice("--pruner", args.pruner, PRUNERS)
    check_trial_resources(args.cpus_per_trial, args.gpus_per_trial,
                          local=args.backend == "ray" and runs_here(args))
    if args.name is not None and (not args.name or os.sep in args.name or args.name in
                                  (".", "..") or (os.altsep and os.altsep in args.name)):
        raise ConfigError(f"--name {args.name!r} is not accepted; use a plain folder name (no "
                          f"'{os.sep}'): the experiment goes into --storage-path/NAME.")
    for flag, value in (("--max-concurrent", args.max_concurrent), ("--budget", args.budget)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} {value} is not accepted; use an integer >= 1.")
    if args.time_budget is not None and not (math.isfinite(args.time_budget)
                                             and args.time_budget > 0):
        raise ConfigError(f"--time-budget {args.time_budget} is not accepted; use a number of "
                          "seconds > 0.")
    if args.max_planned < 0:
        raise ConfigError(f"--max-planned {args.max_planned} is not accepted; use an integer "
                          ">= 0.")
    if args.resume and (args.backend != "ray" or not args.storage_path):
        raise ConfigError("--resume continues a Ray experiment: pass --backend ray and the "
                          "--storage-path (and --name) of the run to continue. An Optuna study "
                          "continues by itself when the same --storage is given again.")
    if args.resume and args.time_budget is not None:
        raise ConfigError("--time-budget is not accepted with --resume: Ray continues an "
                          "experiment with the settings it was started with; drop the flag.")
    if args.storage_path and "://" in args.storage_path:
        raise ConfigError(f"--storage-path {args.storage_path} is not accepted; the sweep reads "
                          "its results back from a folder, so use one every node sees (NFS), "
                          "e.g. /shared/ray_results.")
    if args.out:
        check_records_file("--out", args.out)
    if args.figures:
        check_writable_folder("--figures", args.figures)
    if args.backend == "ray" and args.storage_path:
        check_writable_folder("--storage-path", args.storage_path)


def check_mode(space: Any, args: argparse.Namespace) -> None:
    """Our scheduler and every Optuna objective minimise an error: a space that maximises is
    refused before anything starts (a built-in Ray scheduler may maximise any record column)."""
    if space.search.mode == "min" or (args.backend == "ray" and args.scheduler != "measure"):
        return
    who = ("the Optuna objective" if args.backend == "optuna"
           else "MeasureScheduler (the default --scheduler)")
    raise ConfigError(f"{space.source}: [search] mode='max' is not accepted: {who} minimises an "
                      f"error ({space.search.metric!r} here); use mode = \"min\" with an error "
                      "metric such as \"val_error\", or on Ray another --scheduler.")


def runs_here(args: argparse.Namespace) -> bool:
    """Whether the trials run on this machine: no cluster named by --address or, as
    ``ray.init`` reads it, ``RAY_ADDRESS`` (Optuna trials always run here)."""
    return args.backend == "optuna" or (args.address is None
                                        and not os.environ.get("RAY_ADDRESS"))


def check_trial_resources(cpus: float, gpus: float, local: bool) -> None:
    """Refuse per-trial resources no trial could get (Ray would wait for them forever): CPUs
    not above 0 or GPUs below 0 anywhere; on this machine (``local``, no cluster), more CPUs
    than it has or a GPU it lacks."""
    if not (math.isfinite(cpus) and cpus > 0):
        raise ConfigError(f"--cpus-per-trial {cpus} is not accepted; use a number > 0 (e.g. 1, "
                          "or 0.5 for two trials per core).")
    if not (math.isfinite(gpus) and gpus >= 0):
        raise ConfigError(f"--gpus-per-trial {gpus} is not accepted; use a number >= 0 "
                          "(fractions share a GPU: 0.5 runs two trials per GPU).")
    if local and cpus > (os.cpu_count() or 1):
        raise ConfigError(f"--cpus-per-trial {cpus:g} is not accepted: this machine has "
                          f"{os.cpu_count()} CPUs, so no trial would ever start; use at most "
                          "that, or --address for a Ray cluster.")
    if local and gpus > 0:
        check_local_gpus(gpus)


def check_local_gpus(gpus_per_trial: float) -> None:
    """A local Ray run (no --address) waits for GPUs forever when this machine has none."""
    import torch

    if torch.cuda.device_count() == 0:
        raise ConfigError(f"--gpus-per-trial {gpus_per_trial:g} is not accepted: this machine "
                          "has no CUDA GPU, so no trial would ever start; use 0 here, or "
                          "--address for a Ray cluster with GPUs.")


def check_device(device: object, args: argparse.Namespace) -> None:
    """A CUDA device asked for on a machine without one fails in every trial (and Ray
    retries each): refuse it at once when the trials run here."""
    import torch

    if (isinstance(device, str) and device.startswith("cuda") and runs_here(args)
            and not torch.cuda.is_available()):
        raise ConfigError(f"device={device!r} is not accepted: this machine has no CUDA GPU; "
                          "use device=auto (the GPU when there is one) or cpu.")


def main(args: argparse.Namespace) -> int:
    from tune_batchdyn.cli._checks import check_data_files, check_user_code
    from tune_batchdyn.space import read_space
    from tune_batchdyn.space.params import describe_trials

    check_args(args)
    space = read_space(args.space)
    overrides = parse_config_overrides(args.set, "--set")
    space.check_trials(overrides)  # a typo fails here, not in every trial
    check_mode(space, args)
    if args.budget is None:
        args.budget = space.search.budget
    check_user_code(space, overrides)
    check_data_files(space, overrides, args.address or os.environ.get("RAY_ADDRESS"))
    check_device(overrides.get("device", space.constants.get("device")), args)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    start = time.perf_counter()
    measured = args.scheduler if args.backend == "ray" else args.pruner
    planned = (f"; then up to {args.max_planned} planned trials"
               if measured == "measure" and args.max_planned else "")
    print(f"sweep {space.source} on {args.backend} "
          f"({describe_trials(space.params, space.search.num_samples, overrides)}{planned})",
          flush=True)
    if args.backend == "ray":
        from tune_batchdyn.cli._sweep_ray import run_ray

        records, decisions = run_ray(space, overrides, args)
    else:
        from tune_batchdyn.cli._sweep_optuna import run_optuna

        records, decisions = run_optuna(space, overrides, args)
    print_summary(records, space.search.metric)
    if args.out and len(records):
        from tune_batchdyn.records import write_records

        print(f"records written to {write_records(records, args.out)}")
    if args.figures and len(records):
        from tune_batchdyn.figures import write_figures

        try:
            for path in write_figures(records, Path(args.figures)):
                print(f"wrote {path}")
        except ConfigError as err:  # e.g. no trial with C̄K and LK (measures off, nqm)
            print(f"figures skipped: {err}")
    print(f"wall time {time.perf_counter() - start:.0f} s")
    print(decisions, flush=True)
    return 0


#: Rows of the summary table (the best first).
SUMMARY_ROWS = 15


def print_summary(records: pd.DataFrame, metric: str) -> None:
    """One row per trial, best first: strategy, batch size, lr, epochs trained, final errors."""
    if not len(records):
        print("no trial reported a result")
        return
    last = records.sort_values("epoch").groupby("trial_id").tail(1)
    # a space without a strategy runs TrialConfig's default, "fixed"
    strategies = last.get("config/strategy", pd.Series("fixed", index=last.index)).fillna("fixed")
    table = pd.DataFrame({
        "trial": last["trial_id"],
        "strategy": strategies.map(run_lengths),
        "batch": last.get("config/batch_size"),
        "lr": last.get("config/lr"),
        "epochs": last["epoch"],
        metric: last[metric].round(4),
        "test_error": last["test_error"].round(4),
        "diverged": last["diverged"],
    }).sort_values(metric)
    epochs = int(records.groupby("trial_id")["epoch"].max().sum())
    shown = table.head(SUMMARY_ROWS)
    notes = [f"the best {SUMMARY_ROWS} below"] if len(table) > SUMMARY_ROWS else []
    if shown["strategy"].astype(str).str.contains("×").any():
        notes.append("a schedule's repeated stages read batch×n")
    print(f"\n{len(table)} trials, {epochs} trial-epochs trained; best {metric} "
          f"{table[metric].iloc[0]:.4f} ({table['trial'].iloc[0]})"
          + "".join(f"; {note}" for note in notes))
    print(shown.to_string(index=False))
