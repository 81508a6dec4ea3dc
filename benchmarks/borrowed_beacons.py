"""Benchmark: how well beacons borrowed from other learning rates place a trial's end point.

    python benchmarks/borrowed_beacons.py [RECORDS ...] [--epochs-done K]

A reroute (and a plan at an lr between the grid's) reads batch sizes the trial's lr has no
beacon at from other lrs. On each recorded grid (default: the three in ``benchmarks/data``), every
lr is left out in turn and each of its fixed-batch trials' end point (C̄K, LK) is predicted
from the remaining lrs' beacons (``predict.beacons``). At an interior lr:

- ``nearest`` (the baseline, the planner's former rule): the nearest lr's beacon, LK scaled by the
  lr ratio, C̄K as it is;
- ``interpolated`` (``beacons_at``): the lrs below and above, per epoch in log scale;
- ``... from epoch K``: the same, continued from the trial's own measured position after K
  epochs (``continue_from``), as a reroute at that epoch sees it (default K: 20% of the epochs).

At the lowest and highest lr only the nearest lr can be read (``past the edge``, and ``past the
edge from epoch K``). Printed per grid and rule: the median and 90th percentile of |Δ ln C̄K| and
|Δ ln LK| between the predicted and the real end point, and each interior rule's median as a ratio
of ``nearest``. The seed spread (median |Δ ln| between seeds of one configuration) is what no
rule can beat. Last line, medians over grids of the ratios:

    borrowed: grids=<n> trials=<n> ck_ratio=<interpolated / nearest> lk_ratio=<same for LK>
    ck_ratio_from_k=<interpolated from K / nearest from K> lk_ratio_from_k=<same for LK>
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from planner import seed_spread  # benchmarks/ is the script's folder

from tune_batchdyn.predict.beacons import (
    BeaconSet,
    beacons_at,
    beacons_from_records,
    compose,
    continue_from,
    nearest_lr,
)
from tune_batchdyn.records import CONFIG_PREFIX, read_records

DATA = Path(__file__).parent / "data"
DEFAULT_GRIDS = [DATA / f"{name}.parquet" for name in ("synthetic_mlp", "synthetic_cnn",
                                                      "digits_mlp")]
RULES = ("nearest", "interpolated", "nearest from epoch K", "interpolated from epoch K")
EDGE_RULES = ("past the edge", "past the edge from epoch K")


def end_errors(records: pd.DataFrame, epochs_done: int | None) -> pd.DataFrame:
    """|Δ ln C̄K| and |Δ ln LK| at the end, one row per (left-out trial, rule)."""
    fixed = records[records[f"{CONFIG_PREFIX}strategy"] == "fixed"]
    lrs = sorted(fixed[f"{CONFIG_PREFIX}lr"].unique())
    rows = []
    for lr in lrs:
        others = beacons_from_records(fixed[fixed[f"{CONFIG_PREFIX}lr"] != lr])
        nearest = nearest_lr(others.lrs, lr)
        only_nearest = BeaconSet({key: beacon for key, beacon in others.beacons.items()
                                  if key[0] == nearest}, others.epochs, others.measure_every,
                                 others.failed)
        readings = ({"nearest": beacons_at(only_nearest, lr)[0],
                     "interpolated": beacons_at(others, lr)[0]} if lr not in (lrs[0], lrs[-1])
                    else {"past the edge": beacons_at(others, lr)[0]})
        k = epochs_done or max(1, round(0.2 * others.epochs))
        for _, trial in fixed[fixed[f"{CONFIG_PREFIX}lr"] == lr].groupby("trial_id"):
            trial = trial.sort_values("epoch")
            size = int(trial["batch_size"].iloc[0])
            if (trial["diverged"].any() or not np.isfinite(trial[["ck_bar", "lk"]]).all().all()
                    or any(size not in beacons for beacons in readings.values())):
                continue
            real = np.log(trial[["ck_bar", "lk"]].iloc[-1].to_numpy(float))
            course = np.full(len(trial), size)
            for name, beacons in readings.items():
                path = compose(beacons, course, others.measure_every)
                later = continue_from(path, trial.iloc[:k], others.measure_every)
                for rule, p in ((name, path), (f"{name} from epoch K", later)):
                    end = np.log([p["ck_bar"][-1], p["lk"][-1]])
                    rows.append({"lr": lr, "batch_size": size, "rule": rule,
                                 "dlog_ck": abs(end[0] - real[0]),
                                 "dlog_lk": abs(end[1] - real[1])})
    return pd.DataFrame(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="*", default=[str(p) for p in DEFAULT_GRIDS])
    parser.add_argument("--epochs-done", type=int, default=None,
                        help="K: the epochs a running trial has measured (default 20%%)")
    args = parser.parse_args()
    ratios: dict[str, list[float]] = {"ck": [], "lk": [], "ck_from_k": [], "lk_from_k": []}
    trials = 0
    for path in args.records:
        records = read_records(path)
        table = end_errors(records, args.epochs_done)
        seed_ck, seed_lk = seed_spread(records)
        summary = table.groupby("rule")[["dlog_ck", "dlog_lk"]]
        median, p90 = summary.median(), summary.quantile(0.9)
        counts = table.groupby("rule").size()
        interior, edge = int(counts.get("nearest", 0)), int(counts.get("past the edge", 0))
        trials += interior + edge
        print(f"{Path(path).stem}: {interior} trials at interior lrs, {edge} at the edges; seed "
              f"spread |Δ ln C̄K| {seed_ck:.2f}, |Δ ln LK| {seed_lk:.2f}")
        base = median.loc["nearest"]
        for rule in (*RULES, *EDGE_RULES):
            ratio = (f"(x{median.loc[rule, 'dlog_ck'] / base['dlog_ck']:.2f})", f"(x"
                     f"{median.loc[rule, 'dlog_lk'] / base['dlog_lk']:.2f})") if rule in RULES \
                else ("", "")
            print(f"  {rule:26s} |Δ ln C̄K| median {median.loc[rule, 'dlog_ck']:.2f} "
                  f"{ratio[0]:7s} p90 {p90.loc[rule, 'dlog_ck']:.2f}   |Δ ln LK| median "
                  f"{median.loc[rule, 'dlog_lk']:.2f} {ratio[1]:7s} "
                  f"p90 {p90.loc[rule, 'dlog_lk']:.2f}")
        for suffix, (better, worse) in (("", ("interpolated", "nearest")),
                                        ("_from_k", ("interpolated from epoch K",
                                                     "nearest from epoch K"))):
            for name, column in (("ck", "dlog_ck"), ("lk", "dlog_lk")):
                ratios[name + suffix].append(median.loc[better, column]
                                             / median.loc[worse, column])
    print(f"borrowed: grids={len(args.records)} trials={trials} " + " ".join(
        f"{name}_ratio{suffix}={float(np.median(ratios[name + suffix])):.2f}"
        for suffix in ("", "_from_k") for name in ("ck", "lk")))
    return 0 if all(math.isfinite(r) for values in ratios.values() for r in values) else 1


if __name__ == "__main__":
    sys.exit(main())
