"""The Ray Tune side of ``tune-batchdyn sweep`` (imported only when ``--backend ray``).

A new experiment folder gets ``sweep.json`` (the space's name and the ``--set`` overrides) next
to ``decisions.csv``; ``--resume`` with other settings is refused, as Ray would continue the
experiment with its stored ones. Ctrl-C (which Ray catches: it saves the experiment and
returns) ends with one line saying how to continue, and exit status 130.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from ray import tune
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
)

from tune_batchdyn.cli._settings import differences, run_settings, settings_differences
from tune_batchdyn.errors import ConfigError
from tune_batchdyn.records import records_from_ray_dir
from tune_batchdyn.space import Space
from tune_batchdyn.tune import (
    DECISIONS_FILE,
    DecisionLog,
    DecisionsCallback,
    DynamicSamplingSearcher,
    MeasureScheduler,
    make_trainable,
)
from tune_batchdyn.tune.decisions import REROUTED, SPAWNED, STOPPED


class Progress(tune.Callback):
    """A status line at most every ``every`` seconds: trials by state (finished trials split
    into stopped early and run to the end, with the scheduler's ``decisions``), reroutes and
    spawns, and the best trial by its latest result (what the summary ranks by at the end)."""

    #: Each trial's status after the latest step: at the end of an interrupted run Ray marks
    #: every live trial TERMINATED, so the last line shows the statuses from before.
    statuses: dict[str, str] | None = None

    def __init__(self, metric: str, every: float = 5.0,
                 decisions: DecisionLog | None = None) -> None:
        self.metric, self.every, self.decisions = metric, every, decisions
        self.latest: dict[str, float] = {}
        self.epochs = 0
        self._last = 0.0

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self.epochs += 1
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and value == value:
            self.latest[trial.trial_id] = float(value)
        else:
            self.latest.pop(trial.trial_id, None)
        if time.monotonic() - self._last >= self.every:
            self._last = time.monotonic()
            self.print(trials)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.statuses = {t.trial_id: t.status for t in trials}

    def get_state(self) -> dict:
        """Saved with Ray's experiment state, so a resumed sweep counts on from there."""
        return {"epochs": self.epochs, "latest": dict(self.latest)}

    def set_state(self, state: dict) -> None:
        self.epochs, self.latest = int(state["epochs"]), dict(state["latest"])

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.print(trials, self.statuses)

    def print(self, trials: list, statuses: dict[str, str] | None = None) -> None:
        status = {t.trial_id: t.status for t in trials}
        status.update(statuses or {})
        states = pd.Series([s.lower() for s in status.values()]).value_counts().to_dict()
        acted = ""
        if self.decisions is not None:
            log = self.decisions.frame()
            stopped = set(log.loc[log["action"] == STOPPED, "trial_id"])
            ended = states.pop("terminated", 0)
            states["stopped"] = sum(trial_id in stopped for trial_id, s in status.items()
                                    if s == "TERMINATED")
            states["finished"] = ended - states["stopped"]
            counts = self.decisions.counts()
            acted = f"; rerouted {counts[REROUTED]}, spawned {counts[SPAWNED]}"
        leader = min(self.latest, key=self.latest.get, default=None)
        best = "-" if leader is None else f"{self.latest[leader]:.4f} ({leader})"
        print(f"[trials {len(trials)}: " + ", ".join(f"{k} {v}" for k, v in
                                                     sorted(states.items()) if v)
              + f"{acted}] {self.epochs} trial-epochs, best {self.metric} {best}", flush=True)


class EpochBudget(tune.Stopper):
    """Ends the experiment once ``budget`` trial-epochs were trained: each (trial, epoch)
    counted once (Ray's closing result of a trial repeats its last epoch)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.trained: set[tuple[str, int]] = set()

    def __call__(self, trial_id: str, result: dict) -> bool:
        epoch = result.get("epoch", result.get("training_iteration"))
        if epoch is not None:
            self.trained.add((trial_id, int(epoch)))
        return False

    def stop_all(self) -> bool:
        return len(self.trained) >= self.budget


def scheduler_for(name: str, epochs: int, history: Any) -> FIFOScheduler:
    if name == "measure":
        return MeasureScheduler(history=history)
    if name == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=epochs, grace_period=1)
    if name == "hyperband":
        return HyperBandScheduler(time_attr="training_iteration", max_t=epochs)
    if name == "median":
        return MedianStoppingRule(time_attr="training_iteration", grace_period=1)
    return FIFOScheduler()


def quiet_resumed_file_loggers(record: logging.LogRecord) -> bool:
    """Drop Ray's "Remote file not found" for a resumed trial's result files: a rerouted trial
    is paused and resumed from its checkpoint, and Ray's file loggers then look for their files
    in the storage, which holds the checkpoints only; they go on writing the local files."""
    return not record.getMessage().startswith("Remote file not found:")


#: Ray's slow-operation notes shorter than this are dropped (unless TUNE_WARN_THRESHOLD_S is set).
SLOW_NOTE_S = 5.0
_SLOW_NOTE = re.compile(r"took (\d+(?:\.\d+)?) s, which may be a performance bottleneck")


def quiet_short_slow_notes(record: logging.LogRecord) -> bool:
    """Drop Ray's "operation took X s, which may be a performance bottleneck" for X below
    `SLOW_NOTE_S`. With trials and the driver sharing a laptop's cores, Ray notes each driver
    step over 0.5 s, up to three lines per result (dozens in the main job); the status line
    already shows the sweep moving, and longer stalls are still reported."""
    found = _SLOW_NOTE.search(record.getMessage())
    return found is None or float(found.group(1)) >= SLOW_NOTE_S


def quiet_unreported_trials(record: logging.LogRecord) -> bool:
    """Drop Ray's "Failed to fetch metrics" when every trial it lists has no result file yet:
    a budget (trial-epochs or time) ended it before its first epoch, which `_results` says in
    one line. Other failures to read a trial's results are still shown."""
    lines = record.getMessage().splitlines()
    return not (lines[0].startswith("Failed to fetch metrics for")
                and all("FileNotFoundError(" in line for line in lines[1:]))


def _add_filter(logger_name: str, rule: Any) -> None:
    logger = logging.getLogger(logger_name)
    if rule not in logger.filters:
        logger.addFilter(rule)


#: The experiment folder's record of what the sweep was started with (``run_settings``).
SETTINGS_FILE = "sweep.json"


def ray_settings(space: Space, overrides: dict[str, Any],
                 args: argparse.Namespace) -> dict[str, Any]:
    """``run_settings`` plus the flags a resumed experiment keeps from its start (Ray restores
    its searcher, scheduler, stopper and concurrency, whatever the command line says)."""
    return {**run_settings(space, overrides),
            "flags": {"--scheduler": args.scheduler, "--budget": args.budget,
                      "--max-planned": args.max_planned, "--max-concurrent": args.max_concurrent}}


def write_settings(experiment: str, settings: dict[str, Any]) -> None:
    """Write ``sweep.json`` into a new experiment folder (created here, before Ray does)."""
    os.makedirs(experiment, exist_ok=True)
    with open(os.path.join(experiment, SETTINGS_FILE), "w") as handle:
        json.dump(settings, handle, indent=1, sort_keys=True)


def check_resumed_settings(experiment: str, settings: dict[str, Any]) -> None:
    """Refuse ``--resume`` with settings other than ``sweep.json``'s: Ray would continue the
    stored experiment and ignore them. A folder without the file resumes as before."""
    path = os.path.join(experiment, SETTINGS_FILE)
    if not os.path.exists(path):
        return
    with open(path) as handle:
        stored = json.load(handle)
    found = settings_differences(stored, settings)
    if "flags" in stored:
        found = "; ".join(part for part in (found, differences(stored["flags"],
                                                               settings["flags"])) if part)
    if found:
        raise ConfigError(f"--resume: {experiment} holds another sweep ({found}); pass another "
                          "--name to start a new experiment, or the same --space (its contents "
                          "too), --set and flags to continue this one.")


class Interruption:
    """Log filter for Ray's loggers: notes Ray's "Experiment has been interrupted ... Resume
    experiment with: Tuner.restore(...)" (Ray catches Ctrl-C, saves the experiment and returns
    from ``fit`` as if done) and drops it, and then the "Failed to fetch metrics" notes on
    trials that never reported: the sweep says how to continue in its own words."""

    LOGGERS = ("ray.tune.tune", "ray.tune.analysis.experiment_analysis")

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Experiment has been interrupted"):
            self.seen = True
            return False
        return not (self.seen and message.startswith("Failed to fetch metrics"))


def fit(tuner: Any, experiment: str, resumed: bool | str) -> None:
    """``tuner.fit()``; when Ray reports it interrupted, ``interrupted_line`` and exit status 130
    (the CLI's for Ctrl-C; raised as ``SystemExit``, since the CLI's own interrupt line
    would follow a ``KeyboardInterrupt`` and be the last one)."""
    interruption = Interruption()
    loggers = [logging.getLogger(name) for name in Interruption.LOGGERS]
    for logger in loggers:
        logger.addFilter(interruption)
    try:
        tuner.fit()
        if interruption.seen:
            print(interrupted_line(experiment, resumed), file=sys.stderr, flush=True)
            raise SystemExit(130)
    finally:
        for logger in loggers:
            logger.removeFilter(interruption)


def interrupted_line(experiment: str, resumed: bool | str) -> str:
    """How to continue, with the trials finished before the interrupt (as the experiment state
    Ray saved then holds them: a trial it stopped on the way out is not one of them).
    ``resumed``: True, or the flags a new run must add to resume (its storage path too when
    that was a temporary folder of the sweep's choosing)."""
    finished = sum(t.status == "TERMINATED" for t in tune.ExperimentAnalysis(experiment).trials)
    again = "the same command" if resumed is True else f"the same command with {resumed}"
    return (f"tune-batchdyn sweep: interrupted: rerun {again} to continue ({finished} "
            f"trial{'' if finished == 1 else 's'} finished so far).")


def run_ray(space: Space, overrides: dict[str, Any],
            args: argparse.Namespace) -> tuple[pd.DataFrame, str]:
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # keeping one checkpoint per trial makes Ray save its experiment state at each epoch's
    # checkpoint (so a resume finds the checkpoint it names) and warn about it every time
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # TensorBoard logs every epoch; measures are NaN until first measured (not an error)
    logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)
    _add_filter("ray.tune.logger.logger", quiet_resumed_file_loggers)
    _add_filter("ray.tune.analysis.experiment_analysis", quiet_unreported_trials)
    if "TUNE_WARN_THRESHOLD_S" not in os.environ:  # the user's own threshold is Ray's to apply
        _add_filter("ray.tune.utils.util", quiet_short_slow_notes)
    storage_path = os.path.abspath(args.storage_path or tempfile.mkdtemp(prefix="tbd-ray-"))
    experiment = os.path.join(storage_path, args.name or (space.path.stem if space.path
                                                          else "sweep"))
    exists = tune.Tuner.can_restore(experiment)  # checked before Ray starts
    if exists and not args.resume:
        raise ConfigError(f"{experiment} holds an experiment already: pass --resume to continue "
                          "it (finished trials are kept) or another --name.")
    if args.resume and not exists:
        raise ConfigError(f"--resume: {experiment} holds no Ray experiment to continue.")
    if args.resume:
        check_resumed_settings(experiment, ray_settings(space, overrides, args))
    else:
        write_settings(experiment, ray_settings(space, overrides, args))
    # what a new run adds to continue: its storage path too when the sweep chose a temporary one
    resume_flags = "--resume" if args.storage_path else f"--resume --storage-path {storage_path}"
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as err:
            raise ConfigError(f"--address {args.address}: no running Ray cluster found. "
                              "Start one with `ray start --head` (see examples/cluster_sweep.md)"
                              ", or drop --address to run the trials on this machine.") from err
    try:
        say_how_gpus_are_used(args.gpus_per_trial)
        return _sweep(space, overrides, args, experiment, resume_flags)
    finally:
        if started:
            ray.shutdown()


def say_how_gpus_are_used(gpus_per_trial: float) -> None:
    """Two silent surprises, said at once: a cluster with fewer GPUs than one trial asks for
    starts no trial until nodes with GPUs join (an autoscaling cluster adds them; another
    waits forever); GPUs that no trial asks for stay idle (Ray hides them from such trials,
    which then train on CPUs)."""
    have = ray.cluster_resources().get("GPU", 0)
    if gpus_per_trial > have:
        print(f"warning: each trial asks for {gpus_per_trial:g} GPU(s) and the cluster has "
              f"{have:g} now: no trial starts until nodes with GPUs join. Ctrl-C and pass "
              "--gpus-per-trial 0 to run on CPUs.", flush=True)
    elif gpus_per_trial == 0 and have > 0:
        print(f"note: the cluster has {have:g} GPU(s) and trials ask for none, so they train "
              "on CPUs; pass --gpus-per-trial 1 (or 0.25: four trials share a GPU) to use "
              "them.", flush=True)


def _sweep(space: Space, overrides: dict[str, Any], args: argparse.Namespace,
           experiment: str, resume_flags: str) -> tuple[pd.DataFrame, str]:
    param_space = {**space.to_ray(), **overrides}
    epochs = int(param_space.get("epochs", 20))
    metric = space.search.metric
    trainable = tune.with_resources(make_trainable(),
                                    {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
    if args.resume:
        return _resumed(experiment, trainable, epochs)
    searcher = None
    if args.scheduler == "measure":
        search = space.search
        beacons = ({"beacon_lr": search.beacon_lr, "beacon_sizes": search.beacons or None}
                   if search.beacon_lr is not None else {})
        searcher = DynamicSamplingSearcher(param_space, max_planned=args.max_planned,
                                           num_samples=search.num_samples, **beacons)
    scheduler = scheduler_for(args.scheduler, epochs, searcher.history if searcher else None)
    budget = EpochBudget(args.budget) if args.budget else None
    callbacks: list[tune.Callback] = [
        Progress(metric, decisions=searcher.history.decisions if searcher else None)]
    if isinstance(scheduler, MeasureScheduler):
        callbacks.append(DecisionsCallback(scheduler, echo=lambda line: None))
    tuner = tune.Tuner(
        trainable,
        param_space=None if searcher else param_space,
        tune_config=tune.TuneConfig(metric=metric, mode=space.search.mode, search_alg=searcher,
                                    scheduler=scheduler,
                                    # the searcher runs the grid num_samples times, then
                                    # its plans
                                    num_samples=(searcher.max_trials if searcher
                                                 else space.search.num_samples),
                                    max_concurrent_trials=args.max_concurrent,
                                    time_budget_s=args.time_budget,
                                    # one worker process serves many trials: torch is
                                    # imported once, not once per trial (seconds each)
                                    reuse_actors=True),
        run_config=tune.RunConfig(storage_path=os.path.dirname(experiment),
                                  name=os.path.basename(experiment), verbose=0,
                                  callbacks=callbacks,
                                  stop=budget,
                                  # the latest checkpoint is all a resume or reroute reads
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                  failure_config=tune.FailureConfig(max_failures=2)))
    start = time.monotonic()
    fit(tuner, experiment, resumed=resume_flags)
    if args.time_budget is not None and time.monotonic() - start >= args.time_budget:
        print(f"time budget of {args.time_budget:g} s spent: the sweep ended there, trials "
              "still running then were stopped (kept with the epochs they trained)", flush=True)
    if budget is not None and budget.stop_all():
        print(f"budget of {args.budget} trial-epochs spent: the sweep ended there, trials still "
              "running then were stopped (kept with the epochs they trained)", flush=True)
    decisions = scheduler.history.decisions if isinstance(scheduler, MeasureScheduler) else None
    return _results(experiment, decisions, epochs)


def _resumed(experiment: str, trainable: Any, epochs: int) -> tuple[pd.DataFrame, str]:
    """``Tuner.restore`` of an interrupted sweep: the searcher, scheduler and callbacks come
    back from the experiment folder; the decisions are read back from its decisions.csv."""
    print(f"resuming {experiment}", flush=True)
    fit(tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True), experiment,
        resumed=True)
    path = os.path.join(experiment, DECISIONS_FILE)
    return _results(experiment, DecisionLog.read_csv(path) if os.path.exists(path) else None,
                    epochs)


def _results(experiment: str, decisions: DecisionLog | None,
             epochs: int) -> tuple[pd.DataFrame, str]:
    """The experiment's records, with the decision log printed, and the decisions line."""
    print(f"Ray results in {experiment}")
    started = sum(folder.is_dir() for folder in Path(experiment).iterdir())  # one per trial
    try:
        records = records_from_ray_dir(experiment)
    except ConfigError:  # no trial reported an epoch before the sweep ended
        records = pd.DataFrame()
    unreported = started - (records["trial_id"].nunique() if len(records) else 0)
    if unreported > 0:
        print(f"{unreported} trial(s) ended before their first epoch's result (nothing to "
              "keep: a budget ended the sweep first, or they failed)")
    if decisions is not None:
        lines = decisions.lines()
        if lines:
            print("\ndecision log (also decisions.csv in the results folder):")
            print("\n".join(f"  {line}" for line in lines))
        return records, decisions.summary()
    ended = records.groupby("trial_id")["epoch"].max() if len(records) else pd.Series(dtype=int)
    return records, f"decisions: stopped={int((ended < epochs).sum())} rerouted=0 spawned=0"
