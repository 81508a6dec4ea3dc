"""An Optuna study on digits with MeasurePruner, RerouteCallback and SQLite storage.

The study first runs fixed-batch *beacons* at the beacon lr (enqueued with ``enqueue_beacon``:
the pruner lets them run to the end, since every plan is made of them), then lets the sampler
explore batch size × lr; ``MeasurePruner`` stops trials whose predicted final val error is
confidently worse than the best, and ``RerouteCallback`` enqueues the dynamic-sampling schedule
planned to land in the optimum region of the (C̄K, LK) plane. The study lives in SQLite (a
temporary directory unless ``--storage`` names one), so more workers may join it with the same
command and ``--storage``, and an interrupted run continues where it stopped. The last line is
``decisions: pruned=<n> enqueued=<n>``.

    python3 examples/optuna_pruner.py                       # searchspaces/digits_mlp.toml
    python3 examples/optuna_pruner.py --smoke               # the same path, small and fast (CI)
    python3 examples/optuna_pruner.py --storage sqlite:///sweep.db --trials 40 --figures out/
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path

import optuna

from tune_batchdyn.cli import OneLineParser
from tune_batchdyn.cli.sweep import check_writable_folder
from tune_batchdyn.errors import ConfigError
from tune_batchdyn.optuna import (
    MeasurePruner,
    RerouteCallback,
    composable,
    decisions_line,
    enqueue_beacon,
    make_objective,
    open_study,
    reason_text,
)
from tune_batchdyn.records import REPEAT_ATTR
from tune_batchdyn.space import read_space
from tune_batchdyn.train.engine import resolve_device

#: The smoke run: two batch sizes × two lrs, 5 epochs (a 5-stage schedule needs 5), C̄K and LK
#: only (no Q or λmax), so a trial takes seconds on a CPU.
SMOKE_SPACE = {"batch_size": [256, 512], "lr": [0.1, 0.2]}
SMOKE_DEFAULTS = {"epochs": 5, "measures": ("fisher",), "dataset": "digits", "model": "mlp"}


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="6 short trials (CI)")
    parser.add_argument("--storage", default=None, help="an Optuna storage URL or journal path "
                        "(default: SQLite in a temporary directory)")
    parser.add_argument("--study-name", default="optuna-pruner-digits")
    parser.add_argument("--trials", type=at_least_one, default=None,
                        help="trials for this process (default: 6 with --smoke, else 30)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--figures", default=None, metavar="DIR",
                        help="write Optuna's and our figures of the study there")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("tune_batchdyn.optuna").setLevel(logging.INFO)
    try:
        run(args)
    except ConfigError as err:  # one line and exit status 2, as the command line's
        parser.error(str(err))


def at_least_one(text: str) -> int:
    """``--trials``: an integer >= 1 (argparse names the flag)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not accepted; use an integer >= 1")
    return value


def run(args: argparse.Namespace) -> None:
    """The study: bad settings are refused before it is opened, so before any trial."""
    try:
        resolve_device(args.device)  # else every trial would fail on it
    except ConfigError as err:
        raise ConfigError(f"--device {args.device}: {err}") from err
    if args.figures:
        check_writable_folder("--figures", Path(args.figures))
    if args.smoke:
        space, defaults = SMOKE_SPACE, dict(SMOKE_DEFAULTS)
        beacons, beacon_lr, candidates = (256, 512), 0.1, None
        n_trials = 6 if args.trials is None else args.trials
        pruner = MeasurePruner(n_startup_trials=3)
        callback = RerouteCallback(min_beacons=2, max_plans=1, k=3)
    else:
        space = read_space("digits_mlp")
        defaults = {}
        beacons, beacon_lr = space.search.beacons, space.search.beacon_lr
        candidates = composable(space.search.dynamic, beacons) or None  # else: the family
        n_trials = 30 if args.trials is None else args.trials
        pruner = MeasurePruner()
        callback = RerouteCallback(min_beacons=3, max_plans=3, lr=beacon_lr,
                                   candidates=candidates)
    objective = make_objective(space, device=args.device, **defaults)

    with tempfile.TemporaryDirectory() as scratch:
        storage = args.storage or f"sqlite:///{Path(scratch) / 'optuna_pruner.db'}"
        study = open_study(storage, args.study_name, pruner=pruner,
                           sampler=optuna.samplers.TPESampler(seed=args.seed))
        for batch_size in beacons:  # the fixed-batch beacons first (once, even when rejoining)
            enqueue_beacon(study, {"batch_size": batch_size, "lr": beacon_lr})
        study.optimize(objective, n_trials=n_trials, callbacks=[callback, report])
        best = study.best_trial
        print(f"best: trial {best.number} val_error={best.value:.4f} "
              f"{best.user_attrs['config']['strategy']} {best.params}")
        if args.figures:
            write_all_figures(study, Path(args.figures))
        print(decisions_line(study))


def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """One line per finished trial."""
    config = trial.user_attrs.get("config", {})
    value = "-" if trial.value is None else f"{trial.value:.4f}"
    epochs = len(trial.intermediate_values)
    done_how = trial.state.name.lower() + (f" after {epochs} epochs" if epochs
                                           else " before training")
    if reason_text(trial.user_attrs):  # MeasurePruner says which rule pruned it
        done_how += f" {reason_text(trial.user_attrs)}"
    if REPEAT_ATTR in trial.user_attrs:  # TPE re-suggested a finished configuration
        done_how = f"repeats trial {trial.user_attrs[REPEAT_ATTR]} (not trained again)"
    print(f"trial {trial.number}: {done_how}, val_error={value}, "
          f"strategy={config.get('strategy')} batch_size={config.get('batch_size')} "
          f"lr={config.get('lr')}", flush=True)


def write_all_figures(study: optuna.Study, out_dir: Path) -> None:
    """Optuna's intermediate values and our (C̄K, LK) figures, from the study alone."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization.matplotlib import plot_intermediate_values

    from tune_batchdyn.figures import write_figures
    from tune_batchdyn.records import records_from_optuna

    out_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        plot_intermediate_values(study).figure.savefig(out_dir / "intermediate_values.png")
    for path in write_figures(records_from_optuna(study), out_dir):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
