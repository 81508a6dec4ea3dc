"""Benchmark: which trials a stop rule stops, given a few finished trials of a recorded grid.

    python benchmarks/stop_rules.py [RECORDS] [--sets 40] [--finished 8 12 20] [--epochs 1 2]

A scheduler's stop rule sees a handful of finished trials early in a run and must not stop the
trials that would end among the best. For each of ``--sets`` random sets of n finished
fixed-batch trials (n in ``--finished``) of a recorded grid (default: the synthetic mlp grid),
``FinalErrorPredictor`` is fitted on them and each of up to 30 other trials is judged after each
of ``--epochs`` against the rival v, the 3rd-best final val error of the finished set:

- ``mu-sigma`` (``MeasureScheduler``'s former rule): stop when μ − σ > v, the prediction's mean
  less one predictive standard deviation;
- ``conformal`` (``MeasureScheduler`` and ``MeasurePruner`` now): stop when the conformal lower
  bound at 0.9 (``FinalErrorPredictor.lower_bound``) > v; NaN with fewer than 9 finished trials.

Printed per n and epoch and rule: the share of all judged trials stopped, and of the *good* ones
(those that ended at or below v) stopped. Last line, over every n and epoch:

    stop_rules: judged=<n> good=<n> mu_sigma_good_stopped=<share> conformal_good_stopped=<share>
    mu_sigma_stopped=<share> conformal_stopped=<share>
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from tune_batchdyn.predict import FinalErrorPredictor
from tune_batchdyn.records import read_records

#: The scheduler's defaults: the 3rd best is the rival, the bound at 0.9.
TOP_K = 3
CONFIDENCE = 0.9
#: Trials judged per finished set (the rest of the grid, up to this many).
JUDGED_PER_SET = 30


def fixed_trials(records: pd.DataFrame) -> pd.DataFrame:
    """The fixed-batch trials' rows, sorted by trial and epoch."""
    first = records.groupby("trial_id").first()
    fixed = first.index[first["config/strategy"] == "fixed"]
    return records[records["trial_id"].isin(fixed)].sort_values(["trial_id", "epoch"])


def judge(records: pd.DataFrame, n_finished: int, epochs: list[int],
          rng: np.random.Generator) -> pd.DataFrame:
    """One random finished set of ``n_finished`` trials; each judged trial's decision under both
    rules after each of ``epochs``: one row per (trial, epoch)."""
    finals = records.groupby("trial_id")["val_error"].last()
    ids = rng.permutation(finals.index.to_numpy())
    finished, others = ids[:n_finished], ids[n_finished:n_finished + JUDGED_PER_SET]
    predictor = FinalErrorPredictor(target="final_val_error").fit(
        records[records["trial_id"].isin(finished)])
    rival = float(np.sort(finals[finished].to_numpy())[TOP_K - 1])
    rows = []
    for trial_id in others:
        trajectory = records[records["trial_id"] == trial_id]
        for epoch in epochs:
            seen = trajectory[trajectory["epoch"] <= epoch]
            guess = predictor.predict(seen)
            bound = predictor.lower_bound(seen, CONFIDENCE)
            rows.append({"finished": n_finished, "epoch": epoch,
                         "good": bool(finals[trial_id] <= rival),
                         "mu_sigma": bool(guess.mean - guess.std > rival),
                         "conformal": bool(np.isfinite(bound) and bound > rival)})
    return pd.DataFrame(rows)


def summary(decisions: pd.DataFrame) -> pd.DataFrame:
    """Per finished-set size and epoch: the share stopped by each rule, of all and of the good."""
    def shares(part: pd.DataFrame) -> pd.Series:
        good = part[part["good"]]
        return pd.Series({"judged": len(part), "good": len(good),
                          "mu_sigma_stopped": part["mu_sigma"].mean(),
                          "conformal_stopped": part["conformal"].mean(),
                          "mu_sigma_good_stopped": good["mu_sigma"].mean(),
                          "conformal_good_stopped": good["conformal"].mean()})
    return decisions.groupby(["finished", "epoch"]).apply(shares, include_groups=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="?", default="benchmarks/data/synthetic_mlp.parquet")
    parser.add_argument("--sets", type=int, default=40, help="random finished sets per size")
    parser.add_argument("--finished", type=int, nargs="+", default=[8, 12, 20])
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    records = fixed_trials(read_records(args.records))
    rng = np.random.default_rng(args.seed)
    decisions = pd.concat([judge(records, n, args.epochs, rng)
                           for _ in range(args.sets) for n in args.finished], ignore_index=True)
    print(f"{args.records}: {args.sets} random finished sets per size; rival v: the k-th "
          f"best final val error of the finished set (k={TOP_K}); good: ended at or below v")
    print(summary(decisions).to_string(float_format=lambda v: f"{v:.3f}"))
    good = decisions[decisions["good"]]
    print(f"stop_rules: judged={len(decisions)} good={len(good)} "
          f"mu_sigma_good_stopped={good['mu_sigma'].mean():.3f} "
          f"conformal_good_stopped={good['conformal'].mean():.3f} "
          f"mu_sigma_stopped={decisions['mu_sigma'].mean():.3f} "
          f"conformal_stopped={decisions['conformal'].mean():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
