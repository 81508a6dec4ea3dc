"""Benchmark: every batch-size strategy on the same epoch budget, several seeds.

    python benchmarks/strategies.py [--datasets digits,synthetic] [--seeds 3] [--epochs N]
                                    [--smoke] [--threads 1] [--overhead-repeats 2]
                                    [--out results.csv]

Per dataset (digits/mlp, synthetic/cnn), CPU, base lr 0.1 with the seed's step decay (÷10 at
50% and 75%), seeds 0..S−1 (initialisation and data order; the data split is fixed):

1. one table: final test error and wall time (mean ± sd over seeds) and parameter updates of
   fixed 32, fixed 512, s32-to-512, s32-to-512-MS, s512-to-32, gg, fb (|B| = 512, B_ref = 32),
   abs, absa, is, rmsgd, navigator;
2. overhead per epoch of each strategy against fixed training at the same batch size (seed 0,
   back-to-back pairs of runs): Σ_e min_r t_strategy(r, e) / Σ_e min_r t_replay(r, e), the
   replay being plain SGD with the strategy's batch size of each epoch and no measures (so the
   navigator's ratio includes the C̄K/LK measures it needs); the minimum over the repeats
   resists the load spikes of a shared machine;
3. the seeds' claims, as numbers: dynamic sampling vs fixed 32 (time, error); s32-to-512 vs
   s512-to-32; -MS vs plain; abs/absa vs fixed 32 (updates, error, updates to first reach
   fixed 32's final error); is vs fixed 32 (training loss at 25/50/100% of the shorter run's
   wall time, log-interpolated on each run's per-epoch clock, and after the same epochs).

The navigator (ours) aims at a disk of radius 1 (natural log) around the end point of a
fixed-32 reference run of seed 0 in the (log C̄K, log LK) plane, with sizes 32..512 and
patience 2; its trials and their reference take C̄K/LK every 10 iterations, the others no
measures. Wall times are from a shared machine: compare ratios within one run only.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from tune_batchdyn.records import RECORD_COLUMNS
from tune_batchdyn.train import TrialConfig, run_trial

MODELS = {"digits": "mlp", "synthetic": "cnn"}
DEFAULT_EPOCHS = {"digits": 30, "synthetic": 15}
BASE_LR = 0.1
NAVIGATOR_MEASURE_EVERY = 10
NAVIGATOR_RADIUS = 1.0


@dataclass(frozen=True)
class Entry:
    """One row of the table: a strategy spec and its trial settings."""

    label: str
    strategy: Any
    batch_size: int = 32
    measures: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def entries(navigator_centre: tuple[float, float] | None, epochs: int) -> list[Entry]:
    """The table's rows; fb warms up over a sixth of the epochs (Goyal et al.: 5 of 90, at
    least one)."""
    rows = [
        Entry("fixed 32", "fixed", 32),
        Entry("fixed 512", "fixed", 512),
        Entry("s32-to-512", "s32-to-512"),
        Entry("s32-to-512-MS", "s32-to-512-MS"),
        Entry("s512-to-32", "s512-to-32"),
        Entry("gg", "gg"),
        Entry("fb (512, B_ref 32)", {"name": "fb", "ref_batch": 32,
                                     "warmup_epochs": max(1, epochs // 6)}, 512),
        Entry("abs", "abs"),
        Entry("absa", "absa"),
        Entry("is", "is"),
        Entry("rmsgd (η(0) 0.03)", {"name": "rmsgd", "initial_lr": 0.03}),
    ]
    if navigator_centre is not None:
        rows.append(Entry("navigator", {"name": "navigator", "centre": list(navigator_centre),
                                        "radius": NAVIGATOR_RADIUS,
                                        "sizes": [32, 64, 128, 256, 512], "patience": 2},
                          32, ("fisher",), {"measure_every": NAVIGATOR_MEASURE_EVERY}))
    return rows


def config(dataset: str, entry: Entry, seed: int, epochs: int) -> TrialConfig:
    return TrialConfig(dataset=dataset, model=MODELS[dataset], strategy=entry.strategy,
                       batch_size=entry.batch_size, lr=BASE_LR, epochs=epochs, seed=seed,
                       measures=entry.measures, device="cpu", **entry.extra)


def epoch_seconds(trajectory: pd.DataFrame) -> np.ndarray:
    return np.diff(np.concatenate([[0.0], trajectory["wall_time_s"].to_numpy()]))


def overhead(dataset: str, row: Entry, epochs: int, repeats: int) -> float:
    """Σ_e min_r t_strategy(r, e) / Σ_e min_r t_replay(r, e) over ``repeats`` back-to-back pairs
    of seed-0 runs (runs are deterministic, so epoch e has the same batch in every repeat).

    The replay is plain SGD with the strategy's batch size in each epoch (a dynamic-sampling
    list, one stage per epoch) and no measures.
    """
    strategy_times, replay_times = [], []
    for _ in range(repeats):
        trajectory = run_trial(config(dataset, row, 0, epochs))
        sizes = [int(b) for b in trajectory["batch_size"]]
        replay = Entry("replay", {"name": "dynamic", "sizes": sizes}, sizes[0])
        strategy_times.append(epoch_seconds(trajectory))
        replay_times.append(epoch_seconds(run_trial(config(dataset, replay, 0, len(sizes)))))
    return float(np.min(strategy_times, axis=0).sum() / np.min(replay_times, axis=0).sum())


def navigator_target(dataset: str, epochs: int) -> tuple[float, float] | None:
    """(log C̄K, log LK) at the end of a fixed-32 run of seed 0 with the navigator's measures."""
    reference = Entry("reference", "fixed", 32, ("fisher",),
                      {"measure_every": NAVIGATOR_MEASURE_EVERY})
    last = run_trial(config(dataset, reference, 0, epochs)).iloc[-1]
    if not (last["ck_bar"] > 0 and last["lk"] > 0):  # NaN: no measures, no target
        return None
    return math.log(last["ck_bar"]), math.log(last["lk"])


def mean_sd(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    values = [v * scale for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def loss_at_time(trajectory: pd.DataFrame, seconds: float) -> float:
    """Training loss of a run at ``seconds`` of its clock (log-linear between epochs)."""
    clock = trajectory["wall_time_s"].to_numpy()
    losses = np.log(np.maximum(trajectory["train_loss"].to_numpy(), 1e-12))
    return float(np.exp(np.interp(seconds, clock, losses)))


def run_dataset(dataset: str, seeds: int, epochs: int, repeats: int,
                out: csv.DictWriter | None) -> None:
    print(f"\n## {dataset}/{MODELS[dataset]}: {epochs} epochs, {seeds} seed(s), lr {BASE_LR}",
          flush=True)
    centre = navigator_target(dataset, epochs)
    rows = entries(centre, epochs)
    results: dict[str, list[pd.DataFrame]] = {row.label: [] for row in rows}
    for seed in range(seeds):
        for row in rows:
            start = time.perf_counter()
            trajectory = run_trial(config(dataset, row, seed, epochs))
            results[row.label].append(trajectory)
            last = trajectory.iloc[-1]
            print(f"  seed {seed} {row.label:<20} test {last['test_error']:.4f} "
                  f"time {last['wall_time_s']:.1f}s ({time.perf_counter() - start:.1f}s with "
                  f"set-up)", file=sys.stderr, flush=True)
            if out is not None:
                for record in trajectory.to_dict("records"):
                    out.writerow({"dataset": dataset, "label": row.label, "seed": seed,
                                  **record})
    print("\n| strategy | test error % | wall time s | updates | final batch | overhead/epoch |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        runs = results[row.label]
        first = runs[0]
        ratio = f"{overhead(dataset, row, epochs, repeats):.2f}" if repeats else "n/a"
        diverged = sum(bool(r["diverged"].iloc[-1]) for r in runs)
        note = f" ({diverged} diverged)" if diverged else ""
        print(f"| {row.label} | {mean_sd([r['test_error'].iloc[-1] for r in runs], 100)}{note} "
              f"| {mean_sd([r['wall_time_s'].iloc[-1] for r in runs], digits=1)} "
              f"| {statistics.mean(r['iterations'].iloc[-1] for r in runs):.0f} "
              f"| {int(first['batch_size'].iloc[-1])} | {ratio} |")
    if centre is not None:
        print(f"\nnavigator target: centre (log C̄K, log LK) = ({centre[0]:.2f}, {centre[1]:.2f}),"
              f" radius {NAVIGATOR_RADIUS}")
    print_claims(results)


def final(results: dict[str, list[pd.DataFrame]], label: str, column: str) -> float:
    return statistics.mean(float(r[column].iloc[-1]) for r in results[label])


def print_claims(results: dict[str, list[pd.DataFrame]]) -> None:
    err = {label: 100 * final(results, label, "test_error") for label in results}
    secs = {label: final(results, label, "wall_time_s") for label in results}
    print("\nclaims (means over seeds):")
    for label in ("s32-to-512", "s32-to-512-MS"):
        print(f"- {label} vs fixed 32: time x{secs[label] / secs['fixed 32']:.2f}, "
              f"test error {err[label]:.2f}% vs {err['fixed 32']:.2f}%")
    print(f"- s32-to-512 vs s512-to-32: {err['s32-to-512']:.2f}% vs {err['s512-to-32']:.2f}%")
    print(f"- s32-to-512-MS vs s32-to-512: {err['s32-to-512-MS']:.2f}% vs "
          f"{err['s32-to-512']:.2f}%")
    for label in ("abs", "absa"):
        print(f"- {label} vs fixed 32: {final(results, label, 'iterations'):.0f} vs "
              f"{final(results, 'fixed 32', 'iterations'):.0f} updates, test error "
              f"{err[label]:.2f}% vs {err['fixed 32']:.2f}%; {reach(results, label)}")
    print(f"- fixed 32 itself: {reach(results, 'fixed 32')}")
    pairs = list(zip(results["is"], results["fixed 32"], strict=True))
    for fraction in (0.25, 0.5, 1.0):
        times = [fraction * min(float(a["wall_time_s"].iloc[-1]), float(b["wall_time_s"].iloc[-1]))
                 for a, b in pairs]
        sampled = [loss_at_time(a, t) for (a, _), t in zip(pairs, times, strict=True)]
        uniform = [loss_at_time(b, t) for (_, b), t in zip(pairs, times, strict=True)]
        wins = sum(x < y for x, y in zip(sampled, uniform, strict=True))
        print(f"- is vs fixed 32 at {fraction:.0%} of the shorter run's wall time: training loss "
              f"{statistics.mean(sampled):.3g} vs {statistics.mean(uniform):.3g} (is lower in "
              f"{wins}/{len(pairs)} seeds)")
    print(f"- is vs fixed 32 after the same epochs: training loss "
          f"{final(results, 'is', 'train_loss'):.3g} vs "
          f"{final(results, 'fixed 32', 'train_loss'):.3g} (is's loss is its "
          "importance-weighted, unbiased estimate)")


def reach(results: dict[str, list[pd.DataFrame]], label: str) -> str:
    """Updates until a run's test error first reaches fixed 32's final error (same seed)."""
    updates = []
    for run, reference in zip(results[label], results["fixed 32"], strict=True):
        hit = run[run["test_error"] <= float(reference["test_error"].iloc[-1]) + 1e-12]
        if len(hit):
            updates.append(int(hit["iterations"].iloc[0]))
    if not updates:
        return f"never reached fixed 32's final test error (0/{len(results[label])} seeds)"
    return (f"reached fixed 32's final test error in {len(updates)}/{len(results[label])} "
            f"seeds, after {statistics.mean(updates):.0f} updates on average")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits",
                        help="comma-separated: digits, synthetic (default: digits)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per trial (default: digits 30, synthetic 15)")
    parser.add_argument("--smoke", action="store_true",
                        help="1 seed, 5 epochs, digits, 1 overhead pair: checks the harness")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: the machine is shared)")
    parser.add_argument("--overhead-repeats", type=int, default=2,
                        help="back-to-back strategy/replay pairs for the overhead (default 2; "
                             "0 skips it)")
    parser.add_argument("--out", default=None, help="write every epoch record to this CSV")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    datasets = ["digits"] if args.smoke else [d.strip() for d in args.datasets.split(",")]
    unknown = sorted(set(datasets) - set(MODELS))
    if unknown:
        parser.error(f"--datasets {unknown} not accepted; use digits, synthetic")
    seeds = 1 if args.smoke else args.seeds
    with open(args.out, "w", newline="") if args.out else contextlib.nullcontext() as handle:
        writer = None
        if handle is not None:
            writer = csv.DictWriter(handle, ["dataset", "label", "seed", *RECORD_COLUMNS])
            writer.writeheader()
        for dataset in datasets:
            epochs = 5 if args.smoke else (args.epochs or DEFAULT_EPOCHS[dataset])
            repeats = 1 if args.smoke else args.overhead_repeats
            run_dataset(dataset, seeds, epochs, repeats, writer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
