"""Benchmark: MeasurePruner against Optuna's pruners, replaying recorded grids through Optuna.

    python benchmarks/pruners.py                        # records in benchmarks/data/*.parquet
    python benchmarks/pruners.py --orders 3             # a quick look (100 s against 7 min)
    python benchmarks/pruners.py --records a.parquet b.parquet
    python benchmarks/pruners.py --nqm                  # an NQM grid generated in-process

Each *grid* (a records file per (dataset, model), or the NQM grid: batch 8..512 × lr × 3 seeds)
is replayed through in-memory Optuna studies (``tune_batchdyn.optuna.replay``): every recorded
trial (one configuration and seed) is enqueued once, in a random *order*, and played back epoch
by epoch through the same reporter a live trial uses, so each pruner decides on exactly what
it would have seen live. For each grid, order and pruner:

- ``epochs``: trial-epochs consumed (the epochs each trial reported before it ended or was
  pruned, summed), the cost;
- ``best``: the best final val error among the completed trials, in points (×100), the result;
- ``by_bound``: trials ``MeasurePruner`` pruned by a bound of its own rather than its base's
  rungs (its ``prune/reason``; 0 for the other pruners);
- ``by_config`` and ``by_rung0``: of those, trials pruned before training (no epoch spent) by
  their configuration's bound on the final value, or on the value at the base's first rung;
  ``by_rung_later``: trials pruned at a rung the base promoted them past, by the bound on
  their value at the next rung.

Pruners, at their defaults: none (``NopPruner``), median, successive halving, hyperband
(``max_resource`` = the grid's epochs), wilcoxon, and ``MeasurePruner``; and, as a reference
for the target rather than a contender, ``record``: ``PercentilePruner(0)`` after one trial,
which prunes every trial not the best so far at its step, about the least a pruner that ranks
trials by their reported values can spend (it is not a *built-in* below). Per grid the table
gives the mean over orders; the pooled rows sum epochs and average ``best`` over every (grid,
order), 12 orders by default: over 3, the pooled figures swing with which orders drew a grid's
best configuration late or early (MeasurePruner's gap 0.03 to 0.69 points over four sets of 3).
The *best built-in* pruner is the one with the lowest pooled ``best`` (ties: fewer epochs).
Target: ``best`` within 0.5 points of it at half its epochs. When another built-in comes
within ``NEAR_BEST`` (0.05) points of that best with fewer epochs, a line before the last gives
the ratio and gap against it too: Hyperband and SuccessiveHalving, for one, end within 0.001
points of each other at twice and once SuccessiveHalving's epochs.

A second reference, computed from the tables rather than replayed: the *hindsight epoch-1
bound*. Knowing every trial's first-epoch value in advance (no live pruner can), rank each
grid's trials by it, run the best m to the end and stop the rest after one epoch, with m per
grid chosen afterwards for the lowest pooled ``best`` within half the best built-in's epochs.
It shows what a ranking by the first epoch allows at that budget, where nearly every trial
gets one epoch only, with knowledge a live pruner does not have. The last line:

    epochs_ratio_vs_best_builtin=<MeasurePruner epochs / best built-in's> best_gap=<points>

(pooled; ``best_gap`` = MeasurePruner's best minus the best built-in's, positive = worse). The
NQM's "error" is its risk (a loss), so its points are risk × 100. Times vary with the machine's
load; the ratios are measured within one run.
"""

from __future__ import annotations

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import glob  # noqa: E402
import itertools  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402

from tune_batchdyn.optuna import (  # noqa: E402
    DIVERGED_ERROR,
    PRUNE_REASON_ATTR,
    MeasurePruner,
    enqueue_replay,
    final_value,
    replay_objective,
)
from tune_batchdyn.records import concat_tables, read_records, trial_table  # noqa: E402
from tune_batchdyn.train import TrialConfig, run_trial  # noqa: E402

NQM_BATCH_SIZES = (8, 16, 32, 64, 128, 256, 512)
NQM_LRS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
NQM_SEEDS = (0, 1, 2)
NQM_EPOCHS = 10
NQM_OPTIONS = {"samples_per_epoch": 6400, "dim": 1000, "bins": 20}

BUILTINS = ("median", "successive_halving", "hyperband", "wilcoxon")
#: Points within which another built-in's pooled best counts as a tie with the best built-in's.
NEAR_BEST = 0.05


def pruners(epochs: int) -> dict[str, Callable[[], optuna.pruners.BasePruner]]:
    """Fresh pruners by name (a study gets its own instance)."""
    return {
        "none": optuna.pruners.NopPruner,
        "median": optuna.pruners.MedianPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": lambda: optuna.pruners.HyperbandPruner(max_resource=epochs),
        "wilcoxon": optuna.pruners.WilcoxonPruner,
        "measure": MeasurePruner,
        "record": lambda: optuna.pruners.PercentilePruner(0.0, n_startup_trials=1),
    }


def nqm_grid() -> pd.DataFrame:
    """The NQM grid: every (batch size, lr, seed), ``NQM_EPOCHS`` epochs each."""
    tables = []
    for batch in NQM_BATCH_SIZES:
        for lr in NQM_LRS:
            for seed in NQM_SEEDS:
                config = TrialConfig(dataset="nqm", model="nqm", batch_size=batch, lr=lr,
                                     seed=seed, epochs=NQM_EPOCHS, dataset_options=NQM_OPTIONS)
                tables.append(trial_table(f"b{batch}-lr{lr}-s{seed}", config.to_dict(),
                                          run_trial(config)))
    return concat_tables(tables)


def grids_from_files(paths: list[str]) -> dict[str, pd.DataFrame]:
    """One grid per (file, dataset, model)."""
    grids = {}
    for path in paths:
        table = read_records(path)
        keys = [c for c in ("config/dataset", "config/model") if c in table.columns]
        groups = table.groupby(keys) if keys else [((os.path.basename(path),), table)]
        for key, rows in groups:
            name = "/".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
            grids[f"{os.path.basename(path)}:{name}"] = rows
    return grids


def replay(records: pd.DataFrame, order: list[str], make_pruner: Callable,
           name: str = "replay") -> tuple[int, float, dict[str, int]]:
    """Trial-epochs consumed, best completed value, and how many trials MeasurePruner's
    bounds pruned (``by_bound``; ``by_config`` and ``by_rung0`` before training,
    ``by_rung_later`` at a later rung), of one
    replayed study (its name seeds HyperbandPruner's brackets, so runs repeat)."""
    study = optuna.create_study(study_name=name, pruner=make_pruner(),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    enqueue_replay(study, records, order)
    study.optimize(replay_objective(records), n_trials=len(order))
    epochs = sum(len(t.intermediate_values) for t in study.trials)
    completed = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    reasons = [t.user_attrs.get(PRUNE_REASON_ATTR, {}) for t in study.trials]
    by = [reason.get("by") for reason in reasons]
    rung0 = sum(reason.get("by") == "rung" and reason.get("rung") == 0 for reason in reasons)
    counts = {"by_config": by.count("configuration"), "by_rung0": rung0,
              "by_rung_later": by.count("rung") - rung0}
    counts["by_bound"] = by.count("bound") + by.count("configuration") + by.count("rung")
    return epochs, min(completed) if completed else float("nan"), counts


def run_grid(name: str, records: pd.DataFrame, n_orders: int, seed: int) -> pd.DataFrame:
    """Every pruner on every order of one grid: rows of (grid, order, pruner, epochs, best)."""
    ids = list(dict.fromkeys(records["trial_id"].astype(str)))
    epochs = int(pd.to_numeric(records["epoch"]).max())
    rng = np.random.default_rng(seed)
    rows = []
    for order_index in range(n_orders):
        order = [ids[i] for i in rng.permutation(len(ids))]
        for pruner_name, make_pruner in pruners(epochs).items():
            start = time.perf_counter()
            used, best, counts = replay(
                records, order, make_pruner, f"{name}-order{order_index}-{pruner_name}")
            rows.append({"grid": name, "order": order_index, "pruner": pruner_name,
                         "epochs": used, "best": 100.0 * best, **counts,
                         "seconds": time.perf_counter() - start})
    return pd.DataFrame(rows)


def summarise(results: pd.DataFrame) -> tuple[pd.DataFrame, str, pd.DataFrame]:
    """Per-grid means, the best built-in's name, and the pooled table."""
    per_grid = results.groupby(["grid", "pruner"], sort=False).agg(
        epochs=("epochs", "mean"), best=("best", "mean"), by_bound=("by_bound", "mean"),
        by_config=("by_config", "mean"), by_rung0=("by_rung0", "mean"),
        by_rung_later=("by_rung_later", "mean"),
        seconds=("seconds", "sum"))
    none = per_grid.xs("none", level="pruner")
    per_grid["epochs_vs_none"] = per_grid["epochs"] / none["epochs"].reindex(
        per_grid.index.get_level_values("grid")).to_numpy()
    per_grid["gap_vs_none"] = per_grid["best"] - none["best"].reindex(
        per_grid.index.get_level_values("grid")).to_numpy()
    pooled = results.groupby("pruner", sort=False).agg(
        epochs=("epochs", "sum"), best=("best", "mean"), by_bound=("by_bound", "sum"),
        by_config=("by_config", "sum"), by_rung0=("by_rung0", "sum"),
        by_rung_later=("by_rung_later", "sum"),
        seconds=("seconds", "sum"))
    builtins = pooled.loc[list(BUILTINS)].sort_values(["best", "epochs"])
    return per_grid, str(builtins.index[0]), pooled


def epoch_one_curve(records: pd.DataFrame) -> list[tuple[int, float]]:
    """(trial-epochs, best final value in points) of running the m trials with the lowest
    first-epoch val error to the end and stopping the others after one epoch, at each m where
    the best improves (a diverged first epoch ranks last)."""
    table = records.assign(trial_id=records["trial_id"].astype(str)).sort_values(
        ["trial_id", "epoch"])
    trials = []
    for _, rows in table.groupby("trial_id", sort=False):
        first = float(rows["val_error"].iloc[0])
        final = final_value(rows.reset_index(drop=True), "val_error", DIVERGED_ERROR)
        trials.append((math.inf if math.isnan(first) else first, len(rows), final))
    trials.sort(key=lambda trial: trial[0])
    epochs, best, curve = len(trials), math.inf, []
    for _, length, final in trials:
        epochs += length - 1
        if final < best:
            best = final
            curve.append((epochs, 100.0 * best))
    return curve


def hindsight_bound(curves: list[list[tuple[int, float]]], orders: int,
                    budget: float) -> tuple[float, int] | None:
    """The lowest pooled best (mean over grids) and its pooled epochs (× orders) among the
    choices of one point per grid's curve within ``budget``; None if none fits."""
    best = None
    for choice in itertools.product(*curves):
        epochs = orders * sum(used for used, _ in choice)
        if epochs <= budget:
            candidate = (float(np.mean([value for _, value in choice])), epochs)
            best = candidate if best is None else min(best, candidate)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", nargs="*", default=None, metavar="FILE",
                        help="records files (default: benchmarks/data/*.parquet)")
    parser.add_argument("--nqm", action="store_true", help="add the in-process NQM grid")
    parser.add_argument("--orders", type=int, default=12, help="trial orders per grid")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("tune_batchdyn").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    default_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    paths = args.records if args.records is not None else sorted(
        glob.glob(os.path.join(default_dir, "*.parquet")))
    grids = grids_from_files(paths)
    if args.nqm:
        start = time.perf_counter()
        grids["nqm"] = nqm_grid()
        print(f"nqm grid: {grids['nqm']['trial_id'].nunique()} trials in "
              f"{time.perf_counter() - start:.1f} s")
    if not grids:
        print("no grid: no records files found (benchmarks/data/*.parquet) and --nqm not given",
              file=sys.stderr)
        return 2

    results = pd.concat([run_grid(name, records, args.orders, args.seed)
                         for name, records in grids.items()], ignore_index=True)
    per_grid, best_builtin, pooled = summarise(results)
    with pd.option_context("display.width", 120, "display.float_format", "{:.3f}".format):
        print(per_grid.to_string())
        print()
        print(f"pooled over {len(grids)} grid(s) x {args.orders} order(s); best built-in: "
              f"{best_builtin}")
        print(pooled.to_string())
    budget = pooled.at[best_builtin, "epochs"] / 2
    bound = hindsight_bound([epoch_one_curve(records) for records in grids.values()],
                            args.orders, budget)
    if bound is None:
        print(f"hindsight epoch-1 bound: no choice within {budget:.0f} epochs")
    else:
        print(f"hindsight epoch-1 bound within half of {best_builtin}'s epochs ({budget:.0f}): "
              f"best {bound[0]:.3f} (gap {bound[0] - pooled.at[best_builtin, 'best']:.3f}) "
              f"at {bound[1]} epochs")
    cheapest = cheapest_near_best(pooled, best_builtin)
    if cheapest != best_builtin:
        print(f"against {cheapest}, the cheapest built-in within {NEAR_BEST} points of "
              f"{best_builtin}'s best: epochs ratio "
              f"{pooled.at['measure', 'epochs'] / pooled.at[cheapest, 'epochs']:.3f}, gap "
              f"{pooled.at['measure', 'best'] - pooled.at[cheapest, 'best']:.3f}")
    ratio = pooled.at["measure", "epochs"] / pooled.at[best_builtin, "epochs"]
    gap = pooled.at["measure", "best"] - pooled.at[best_builtin, "best"]
    print(f"epochs_ratio_vs_best_builtin={ratio:.3f} best_gap={gap:.3f}")
    return 0


def cheapest_near_best(pooled: pd.DataFrame, best_builtin: str) -> str:
    """The built-in with the fewest epochs among those within ``NEAR_BEST`` points of the best
    built-in's best: the fairer yardstick when another ties it at a fraction of its epochs."""
    near = pooled.loc[list(BUILTINS)]
    near = near[near["best"] <= pooled.at[best_builtin, "best"] + NEAR_BEST]
    return str(near["epochs"].idxmin())


if __name__ == "__main__":
    sys.exit(main())
