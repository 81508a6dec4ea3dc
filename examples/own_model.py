"""Your own PyTorch model and data in a tune_batchdyn study (Optuna, MeasurePruner).

The model and the dataset are plain functions of this file, named by import path, so every
process that runs a trial imports them itself (Optuna workers, Ray workers, resumed runs):

- ``own_model:make_net(input_shape, num_classes)`` returns an ``nn.Module`` giving class logits
  (its ``Gate`` module has no per-sample rule in ``per_sample_gram``: the trial computes that
  module's per-sample gradients with torch.func and says so once);
- ``own_model:two_spirals(data_seed, **dataset_options)`` returns the three splits as a
  mapping of arrays (keys ``train_x, train_y, val_x, val_y, test_x, test_y``), used as given.

The same names work wherever a config does: ``TrialConfig(model="own_model:make_net")``,
``make_trainable(model=...)``, a TOML space's ``[fixed]`` table, or the command line, run from
this folder (it imports from its working directory)::

    tune-batchdyn sweep --space digits_mlp_smoke --backend optuna \\
        --set dataset=own_model:two_spirals --set model=own_model:make_net

On a Ray cluster the module must be importable on every node: install it, or put it on the
shared folder and start the nodes with ``PYTHONPATH`` naming it.

    python3 examples/own_model.py            # 4 batch sizes x 3 lrs, 15 epochs
    python3 examples/own_model.py --smoke    # the same path, small and fast (CI)
"""

from __future__ import annotations

import argparse
import itertools
import logging

import numpy as np
import optuna
import torch
from torch import nn

from tune_batchdyn.cli import OneLineParser
from tune_batchdyn.errors import ConfigError
from tune_batchdyn.optuna import (
    MeasurePruner,
    RerouteCallback,
    decisions_line,
    enqueue_beacon,
    enqueue_once,
    make_objective,
    open_study,
)

#: This file's import name (its folder is on sys.path when it runs as a script).
MODULE = "own_model"
#: The smoke run: the same path (the Gate's torch.func share of C̄K/LK, beacons, a pruned
#: trial, a planned one) on a 2 x 2 grid of 5 epochs, with C̄K/LK measured every 10 steps.
SMOKE_SPACE = {"batch_size": [32, 128], "lr": [0.05, 0.2]}
SMOKE_SETTINGS = {"epochs": 5, "measure_every": 10}


class Gate(nn.Module):
    """A learned per-feature gate: a module of the user's own, with its own parameter."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.zeros(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.logit) * 2.0


def make_net(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Two hidden layers of 64 with a gate between them."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 64), nn.Tanh(),
                         Gate(64), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, num_classes))


def two_spirals(data_seed: int, n: int = 3000, noise: float = 0.6,
                turns: float = 1.75) -> dict[str, np.ndarray]:
    """Two interleaved noisy spirals in the plane, split 60/20/20 by ``data_seed``."""
    rng = np.random.default_rng(data_seed)
    labels = rng.integers(0, 2, size=n)
    angle = np.sqrt(rng.uniform(size=n)) * turns * 2 * np.pi
    radius = angle + np.pi * labels
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1) / 5.0
    points = (points + rng.normal(scale=noise / 5.0, size=points.shape)).astype(np.float32)
    train, val = int(0.6 * n), int(0.8 * n)
    return {"train_x": points[:train], "train_y": labels[:train],
            "val_x": points[train:val], "val_y": labels[train:val],
            "test_x": points[val:], "test_y": labels[val:]}


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="2 x 2 grid, 5 epochs (CI)")
    parser.add_argument("--storage", default=None, help="an Optuna storage URL (default: memory)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("tune_batchdyn").setLevel(logging.INFO)
    # 2-d inputs and 64-wide layers: one thread trains as fast, and a second one waiting for a
    # busy core made the trials 5x slower on a loaded 2-core machine
    torch.set_num_threads(1)
    try:
        run(args)
    except ConfigError as err:  # one line and exit status 2, as the command line's
        parser.error(str(err))


def run(args: argparse.Namespace) -> None:
    """The study: the storage opened and the model and data checked before any trial."""
    if args.smoke:
        space, beacon_lr, settings = SMOKE_SPACE, 0.05, SMOKE_SETTINGS
    else:
        space, beacon_lr = {"batch_size": [16, 32, 64, 128], "lr": [0.05, 0.1, 0.2]}, 0.1
        settings = {"epochs": 15, "measure_every": 5}
    study = open_study(args.storage, "own-model-spirals", pruner=MeasurePruner())
    objective = make_objective(space, dataset=f"{MODULE}:two_spirals", model=f"{MODULE}:make_net",
                               device="cpu", **settings)
    for batch_size in space["batch_size"]:  # beacons first: the plans are made of them
        enqueue_beacon(study, {"batch_size": batch_size, "lr": beacon_lr})
    for batch_size, lr in itertools.product(space["batch_size"], space["lr"]):
        enqueue_once(study, {"batch_size": batch_size, "lr": lr})  # once, however many workers
    reroute = RerouteCallback(min_beacons=len(space["batch_size"]), max_plans=1, lr=beacon_lr,
                              k=3)
    study.optimize(objective, callbacks=[report, reroute, stop_when_queue_empty])
    print(f"best: trial {study.best_trial.number} val_error={study.best_value:.4f}")
    if reroute.no_plan_reason:
        print(f"no plan enqueued: {reroute.no_plan_reason}")
    print(decisions_line(study))


def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """One line per trial as it finishes (a study of a few minutes says what it is doing)."""
    config = trial.user_attrs.get("config", {})
    value = "-" if trial.value is None else f"{trial.value:.4f}"
    print(f"trial {trial.number}: {trial.state.name.lower():8} "
          f"{len(trial.intermediate_values):2} epochs  val_error={value}  "
          f"strategy={config.get('strategy')} batch_size={config.get('batch_size')} "
          f"lr={config.get('lr')}", flush=True)


def stop_when_queue_empty(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """End ``study.optimize`` once the grid and the enqueued plans have all run."""
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    if not waiting:
        study.stop()


if __name__ == "__main__":
    main()
