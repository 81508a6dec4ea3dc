"""``dataset="nqm", model="nqm"``: the noisy quadratic model run as a trial.

The same config, strategy spec, reporter protocol and records as a network trial, in
milliseconds per epoch, so sweeps, schedulers and pruners can be tested end to end in seconds.
The strategy's per-epoch batch size and learning rate are read from its ``plan_step`` epoch by
epoch; strategies that need a network (abs, is, rmsgd, navigator) are refused.

``dataset_options``: ``optimizer`` ("sgd", "momentum", "precond:<p>", "ema"; default "sgd"),
``coefficient`` (momentum/EMA), ``samples_per_epoch`` (default 50,000), ``sampled`` (default
True: each trial seed follows its own sampled path; False: exact expectations), and any
``NQM(...)`` argument (``dim``, ``spectrum``, ``noise``, ``bins``, ``x0_var``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import pandas as pd

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.nqm import NQM, nqm_trial_records
from tune_batchdyn.predict.schedules import milestone_epochs
from tune_batchdyn.records.schema import RECORD_COLUMNS, empty_record
from tune_batchdyn.strategies import parse_strategy
from tune_batchdyn.train.config import TrialConfig

TRIAL_OPTIONS = {"optimizer": "sgd", "coefficient": None, "samples_per_epoch": 50_000,
                 "sampled": True}


def check_nqm_options(options: Mapping[str, Any]) -> None:
    """``ConfigError`` naming the ``dataset_options`` keys neither the trial nor ``NQM``
    takes."""
    accepted = set(inspect.signature(NQM).parameters)
    unknown = sorted(set(options) - accepted - set(TRIAL_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown nqm dataset_options {unknown}; accepted: "
                          f"{sorted([*TRIAL_OPTIONS, *accepted])}.")


def run_nqm_trial(config: TrialConfig,
                  reporter: Callable[[dict[str, Any]], None] | None = None) -> pd.DataFrame:
    check_nqm_options(config.dataset_options)
    options = {**TRIAL_OPTIONS, **dict(config.dataset_options)}
    trial_options = {k: options.pop(k) for k in TRIAL_OPTIONS}
    batches, lrs = epoch_schedule(config, trial_options["samples_per_epoch"])
    def report(record: dict[str, Any]) -> None:
        if reporter is not None:
            reporter({**empty_record(), **record})

    records = nqm_trial_records(
        NQM(**options), batch_size_per_epoch=batches, lr_per_epoch=lrs,
        samples_per_epoch=trial_options["samples_per_epoch"],
        optimizer=trial_options["optimizer"], coefficient=trial_options["coefficient"],
        noise_seed=config.seed if trial_options["sampled"] else None, reporter=report)
    full = [{**empty_record(), **record} for record in records]
    if reporter is not None and full:
        reporter({**full[-1], "done": True})
    return pd.DataFrame(full, columns=list(RECORD_COLUMNS))


def epoch_schedule(config: TrialConfig, samples_per_epoch: int) -> tuple[list[int], list[float]]:
    """The batch size and learning rate the strategy plans for each epoch."""
    strategy = parse_strategy(config.strategy)
    strategy.validate(epochs=config.epochs, n_train=samples_per_epoch,
                      batch_size=config.batch_size)
    view = SimpleNamespace(
        epoch=0, epochs=config.epochs, iteration=0, samples_seen=0, n_train=samples_per_epoch,
        base_lr=config.lr, base_batch_size=config.batch_size,
        lr_milestones=milestone_epochs(config.epochs, config.lr_milestones),
        lr_decay_factor=config.lr_decay_factor, momentum=config.momentum,
        weight_decay=config.weight_decay)
    batches, lrs = [], []
    for epoch in range(config.epochs):
        view.epoch = epoch
        try:
            strategy.begin_epoch(view)
            plan = strategy.plan_step(view)
        except AttributeError as err:
            raise ConfigError(f"strategy={config.strategy!r} needs a network; with dataset='nqm' "
                              "use a schedule: fixed, s{a}-to-{b}[-MS], a stage list, gg or fb."
                              ) from err
        if plan.lr is None:
            raise ConfigError(f"strategy={config.strategy!r} sets per-layer rates; with "
                              "dataset='nqm' use fixed, s{a}-to-{b}[-MS], a stage list, gg or fb.")
        batches.append(plan.batch_size)
        lrs.append(plan.lr)
        view.iteration += max(1, samples_per_epoch // plan.batch_size)
        view.samples_seen += samples_per_epoch
    return batches, lrs
