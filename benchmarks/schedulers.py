"""Benchmark: trial-epochs spent and best final test error found, per Ray Tune scheduler.

    python benchmarks/schedulers.py [--records FILES ...] [--nqm] [--synthetic]
                                    [--orderings 3] [--concurrency 4]

Real Ray Tune runs the real schedulers over recorded grids replayed epoch by epoch
(``tune_batchdyn.tune.make_replay_trainable``), so every method sees the same trials:

- ``ours``: ``MeasureScheduler`` + ``DynamicSamplingSearcher`` (beacons = the grid, then up to
  ``--max-planned`` planned dynamic-sampling trials; defaults of both);
- ``asha``: ``AsyncHyperBandScheduler`` defaults (grace period 1 epoch, reduction factor 4);
- ``asha-tuned``: the same with a grace period of a quarter of the epochs;
- ``hyperband``: ``HyperBandScheduler`` (pauses and resumes trials from their checkpoints);
- ``median``: ``MedianStoppingRule`` on epochs, grace period a quarter of the epochs;
- ``fifo``: the full grid, every trial to the end.

Each method runs the grid's fixed-batch trials in the same order, over ``--orderings`` random
orderings. Trial-epochs: the epochs every trial reported (paused and resumed ones counted once
per epoch run). Best: the lowest final test error among trials that ran their whole budget
(not diverged); the gap is in points (x100) to the grid's best (the best fixed-batch trial).
A run that exceeds ``--time-budget`` seconds is stopped by Tune and flagged ``timed_out``
(synchronous HyperBand can wait forever for a bracket that a finished search never fills).
A planned or rerouted trial replays the records of its schedule (any seed of it) when the grid
holds them; otherwise it is trained for real with ``run_trial`` and the grid's settings (NQM:
milliseconds; a recorded digits or synthetic grid: seconds to a minute) and kept under
``benchmarks/data/planned/<grid>/``, so later runs replay it. On the planted ``--synthetic``
table the planner is restricted to the schedules recorded there and rerouting is off.

Grids: ``--records`` files (default ``benchmarks/data/*.parquet``; one grid per file and
(dataset, model)), ``--nqm`` (batch 8..512 x lr 0.3, 1.0, 1.9 x 3 seeds, 12 epochs, generated
in-process), ``--synthetic`` (``predict.synthetic``: the planted table, all staged schedules
recorded at lr 0.1). The last line, pooled over grids and orderings:
``epochs_ratio_vs_asha=<ours/asha> epochs_ratio_vs_grid=<ours/fifo> best_gap=<points>``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no result files: faster
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import argparse  # noqa: E402
import glob  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import ray  # noqa: E402
from _grids import grid_settings  # noqa: E402  (benchmarks/ is the script's folder)
from ray import tune  # noqa: E402
from ray.tune.schedulers import (  # noqa: E402
    AsyncHyperBandScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
)

from tune_batchdyn.errors import ConfigError  # noqa: E402
from tune_batchdyn.predict import schedule_family  # noqa: E402
from tune_batchdyn.predict.synthetic import BATCH_SIZES, synthetic_records  # noqa: E402
from tune_batchdyn.records import concat_tables, read_records  # noqa: E402
from tune_batchdyn.tune import (  # noqa: E402
    DynamicSamplingSearcher,
    MeasureScheduler,
    Planner,
    make_replay_trainable,
    trial_runner,
)
from tune_batchdyn.tune.replay import canonical_strategy, replay_key  # noqa: E402

#: Trials trained for the recorded grids (planned and rerouted ones the records lack), one
#: folder per grid; replayed from there by later runs.
PLANNED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "planned")
METHODS = ("ours", "asha", "asha-tuned", "hyperband", "median", "fifo")
NQM_DEFAULTS = dict(dataset="nqm", model="nqm", epochs=12,
                    dataset_options={"samples_per_epoch": 6400, "dim": 1000, "bins": 20})
NQM_GRID = dict(batch_sizes=(8, 16, 32, 64, 128, 256, 512), lrs=(0.3, 1.0, 1.9), seeds=(0, 1, 2))


@dataclass
class Grid:
    """One benchmark grid: its records, how missing trials are computed, what may be planned."""

    name: str
    records: pd.DataFrame
    runner: Callable[[Mapping[str, Any]], pd.DataFrame] | None
    planner: Planner
    reroute: bool
    #: Where trials computed for this grid are kept (None: a temporary folder).
    cache: str | None = None

    @property
    def epochs(self) -> int:
        return int(self.records["config/epochs"].max())

    def configs(self) -> list[dict[str, Any]]:
        """The fixed-batch trials' configs (what the grid runs)."""
        first = self.records.groupby("trial_id", sort=True).first()
        first = first[first["config/strategy"].map(canonical_strategy) == "fixed"]
        return [{"strategy": "fixed", "lr": float(r["config/lr"]),
                 "batch_size": int(r["config/batch_size"]),
                 "seed": int(r.get("config/seed", 0)), "epochs": self.epochs}
                for _, r in first.iterrows()]

    def grid_best(self) -> float:
        finals = self.records.groupby("trial_id").last()
        finals = finals[(finals["config/strategy"].map(canonical_strategy) == "fixed")
                        & (finals["budget_fraction"] >= 1 - 1e-9) & ~finals["diverged"]]
        return float(finals["test_error"].min())


def nqm_grid() -> Grid:
    runner = trial_runner(**NQM_DEFAULTS)
    tables = [runner({"batch_size": b, "lr": lr, "seed": s}).assign(trial_id=f"b{b}-lr{lr}-s{s}")
              for b in NQM_GRID["batch_sizes"] for lr in NQM_GRID["lrs"]
              for s in NQM_GRID["seeds"]]
    return Grid("nqm", concat_tables(tables), runner, Planner(), reroute=True)


def synthetic_grid() -> Grid:
    dynamic = [s.spec for s in schedule_family(BATCH_SIZES) if len(set(s.stages)) > 1]
    records = synthetic_records(n_configs=36, n_seeds=2, epochs=12, seed=11, dynamic=dynamic)
    return recorded_grid("synthetic", records, run_missing=False)


def recorded_grid(name: str, records: pd.DataFrame, run_missing: bool = True) -> Grid:
    """A recorded grid. With ``run_missing`` (files of real trials), a planned or rerouted
    trial the records lack is trained for real with the grid's settings (``run_trial``) and
    kept in ``PLANNED_DIR`` (replayed from there next time); otherwise (the planted table)
    planned trials are only the dynamic schedules it recorded, and nothing is rerouted."""
    if run_missing:
        runner = seedless_runner(records, trial_runner(**grid_settings(records)))
        return Grid(name, records, runner, Planner(), reroute=True,
                    cache=os.path.join(PLANNED_DIR, _folder(name)))
    first = records.groupby("trial_id").first()
    dynamic = first[first["config/strategy"].map(canonical_strategy) != "fixed"]
    planner = Planner(candidates=sorted(set(dynamic["config/strategy"])) or ["fixed"],
                      lrs=sorted(set(dynamic["config/lr"].astype(float))) or None)
    return Grid(name, records, seedless_runner(records), planner, reroute=False)


def _folder(name: str) -> str:
    return name.replace("/", "_").replace(":", "_")


def seedless_runner(records: pd.DataFrame, fallback: Callable[[Mapping[str, Any]], pd.DataFrame]
                    | None = None) -> Callable[[Mapping[str, Any]], pd.DataFrame]:
    """A planned trial's records from any recorded seed of its schedule, lr and batch size;
    else from ``fallback`` (a real run) when given."""
    by_schedule: dict[tuple, pd.DataFrame] = {}
    for _, rows in records.groupby("trial_id"):
        strategy, lr, batch, _ = replay_key({k[len("config/"):]: v for k, v in
                                             rows.iloc[0].items() if k.startswith("config/")})
        by_schedule.setdefault((strategy, lr, batch), rows)

    def run(config: Mapping[str, Any]) -> pd.DataFrame:
        strategy, lr, batch, seed = replay_key(config)
        if (strategy, lr, batch) not in by_schedule and fallback is not None:
            return fallback(config)
        if (strategy, lr, batch) not in by_schedule:
            raise ConfigError(f"grid has no recording of {strategy} at lr={lr}, batch={batch}")
        return by_schedule[(strategy, lr, batch)].assign(**{"config/seed": seed})

    return run


def file_grids(patterns: list[str]) -> list[Grid]:
    grids = []
    for path in sorted({p for pattern in patterns for p in glob.glob(pattern)}):
        table = read_records(path)
        keys = [c for c in ("config/dataset", "config/model") if c in table.columns]
        groups = table.groupby(keys) if keys else [((os.path.basename(path),), table)]
        for key, part in groups:
            label = "/".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
            grids.append(recorded_grid(f"{os.path.basename(path)}:{label}", part))
    return grids


def scheduler_for(method: str, grid: Grid, searcher: Any) -> Any:
    epochs = grid.epochs
    quarter = max(1, epochs // 4)
    if method == "ours":
        return MeasureScheduler(history=searcher.history, reroute=grid.reroute,
                                planner=grid.planner)
    if method == "asha":
        return AsyncHyperBandScheduler(time_attr="training_iteration", max_t=epochs)
    if method == "asha-tuned":
        return AsyncHyperBandScheduler(time_attr="training_iteration", max_t=epochs,
                                       grace_period=quarter)
    if method == "hyperband":
        return HyperBandScheduler(time_attr="training_iteration", max_t=epochs)
    if method == "median":
        return MedianStoppingRule(time_attr="training_iteration", grace_period=quarter,
                                  min_samples_required=3)
    return FIFOScheduler()


def run_method(method: str, grid: Grid, configs: list[dict[str, Any]], trainable: Callable,
               concurrency: int, max_planned: int, storage: str,
               time_budget_s: float) -> dict[str, Any]:
    searcher = DynamicSamplingSearcher(configs, max_planned=max_planned if method == "ours"
                                       else 0, planner=grid.planner)
    scheduler = scheduler_for(method, grid, searcher)
    start = time.perf_counter()
    analysis = tune.run(
        trainable, metric="val_error", mode="min", search_alg=searcher, scheduler=scheduler,
        num_samples=-1, max_concurrent_trials=concurrency, reuse_actors=True, verbose=0,
        resources_per_trial={"cpu": 2.0 / concurrency}, storage_path=storage,
        raise_on_failed_trial=False, time_budget_s=time_budget_s,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
    seconds = time.perf_counter() - start
    epochs, complete, planned = 0, [], 0
    for trial in analysis.trials:
        last = trial.last_result or {}
        epochs += int(last.get("training_iteration", 0))
        planned += canonical_strategy(str(trial.config.get("strategy", "fixed"))) != "fixed"
        if last.get("budget_fraction", 0) >= 1 - 1e-9 and not last.get("diverged", True):
            complete.append(float(last["test_error"]))
    counts = (searcher.history.decisions.counts() if method == "ours"
              else {"stop": math.nan, "reroute": math.nan, "spawn": math.nan})
    return {"trials": len(analysis.trials), "planned": planned, "trial_epochs": epochs,
            "best_test": min(complete) if complete else math.nan, "stopped": counts["stop"],
            "rerouted": counts["reroute"], "seconds": seconds,
            "timed_out": seconds >= time_budget_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", nargs="*", default=["benchmarks/data/*.parquet"])
    parser.add_argument("--nqm", action="store_true", help="add the in-process NQM grid")
    parser.add_argument("--synthetic", action="store_true", help="add the planted grid")
    parser.add_argument("--orderings", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-planned", type=int, default=4)
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument("--time-budget", type=float, default=600.0,
                        help="seconds per run before Tune stops it (flagged timed_out)")
    parser.add_argument("--out", default=None, help="write the per-run table as CSV (kept "
                        "up to date after every run)")
    args = parser.parse_args()

    grids = file_grids(args.records)
    if args.nqm:
        grids.append(nqm_grid())
    if args.synthetic:
        grids.append(synthetic_grid())
    if not grids:
        print("no grid: no --records file matched; add --nqm or --synthetic", file=sys.stderr)
        return 2
    logging.getLogger("tune_batchdyn").setLevel(logging.WARNING)
    # without result files (see the top) Ray's analysis warns that it found none: expected
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-schedulers-") as storage:
        for grid in grids:
            configs = grid.configs()
            cache = grid.cache or os.path.join(storage, f"cache-{_folder(grid.name)}")
            trainable = make_replay_trainable(grid.records, runner=grid.runner,
                                              cache_dir=cache)
            best = grid.grid_best()
            print(f"grid {grid.name}: {len(configs)} trials x {grid.epochs} epochs, "
                  f"best final test error {100 * best:.2f}", flush=True)
            for ordering in range(args.orderings):
                order = np.random.default_rng(ordering).permutation(len(configs))
                ordered = [configs[i] for i in order]
                for method in args.methods:
                    row = run_method(method, grid, ordered, trainable, args.concurrency,
                                     args.max_planned, storage, args.time_budget)
                    row.update(grid=grid.name, ordering=ordering, method=method,
                               gap=100 * (row["best_test"] - best))
                    rows.append(row)
                    print(f"  ordering {ordering} {method:10s} trials={row['trials']:3d} "
                          f"planned={row['planned']} epochs={row['trial_epochs']:5d} "
                          f"best={100 * row['best_test']:6.2f} gap={row['gap']:+.2f} "
                          f"({row['seconds']:.0f} s{', timed out' if row['timed_out'] else ''})",
                          flush=True)
                    if args.out:
                        pd.DataFrame(rows).to_csv(args.out, index=False)
    ray.shutdown()
    table = pd.DataFrame(rows)
    summary = table.groupby(["grid", "method"], sort=False).agg(
        trial_epochs=("trial_epochs", "mean"), best_gap=("gap", "mean"),
        worst_gap=("gap", "max"), planned=("planned", "mean"), stopped=("stopped", "mean"),
        timed_out=("timed_out", "sum"))
    print("\nmean over orderings (gap in points to the grid's best fixed-batch trial):")
    print(summary.to_string(float_format=lambda v: f"{v:.2f}"))
    pooled = table.groupby("method")["trial_epochs"].sum()
    ours = table[table["method"] == "ours"]
    vs_asha = pooled.get("ours", math.nan) / pooled.get("asha", math.nan)
    vs_grid = pooled.get("ours", math.nan) / pooled.get("fifo", math.nan)
    print(f"epochs_ratio_vs_asha={vs_asha:.3f} epochs_ratio_vs_grid={vs_grid:.3f} "
          f"best_gap={ours['gap'].mean():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
