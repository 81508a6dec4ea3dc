"""Benchmark: does a planned dynamic-sampling schedule land where ``plan_schedule`` says?

    python benchmarks/planner.py [RECORDS] [--seeds 0] [--out planned.parquet]

From a recorded grid (default ``benchmarks/data/digits_mlp.parquet``): fit the optimum region of
the final test error, plan one dynamic schedule per beacon learning rate (``plan_schedule`` over
the dynamic members of ``schedule_family`` on the beacons' batch sizes, composed from the
fixed-batch trials' per-epoch measures), then train each plan for real with ``run_trial`` (same
dataset, model, epochs, lr recipe and measurement interval as the grid) and compare:

- the end point: predicted vs actual (C̄K, LK) at the last epoch, as |Δ ln C̄K| and |Δ ln LK|;
- the final test error: predicted (the region's 5-nearest average at the predicted end) vs
  actual, in points (x100).

The reference for the errors is the spread of the grid itself: the median |Δ ln| between the
seeds of one fixed configuration (what a perfect planner could not beat). The last line:

    planner: plans=<n> end_dlog_ck=<median> end_dlog_lk=<median> seed_dlog_ck=<median>
    seed_dlog_lk=<median> error_gap=<median points>
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _grids import grid_settings  # benchmarks/ is the script's folder

from tune_batchdyn.predict import OptimumRegion, plan_schedule, schedule_family
from tune_batchdyn.predict.beacons import beacons_from_records
from tune_batchdyn.records import CONFIG_PREFIX, read_records, trial_table, write_records
from tune_batchdyn.train import TrialConfig, run_trial

DEFAULT_RECORDS = Path(__file__).parent / "data" / "digits_mlp.parquet"


def seed_spread(records: pd.DataFrame) -> tuple[float, float]:
    """Median |Δ ln C̄K| and |Δ ln LK| at the end between seeds of one fixed configuration."""
    last = records.sort_values("epoch").groupby("trial_id").tail(1)
    last = last[~last["diverged"].astype(bool)]
    keys = [f"{CONFIG_PREFIX}lr", f"{CONFIG_PREFIX}batch_size"]
    gaps = {"ck_bar": [], "lk": []}
    for _, group in last.groupby(keys):
        for name in gaps:
            logs = np.log(group[name].to_numpy(float))
            logs = logs[np.isfinite(logs)]
            gaps[name] += [abs(a - b) for i, a in enumerate(logs) for b in logs[i + 1:]]
    return float(np.median(gaps["ck_bar"])), float(np.median(gaps["lk"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="?", default=str(DEFAULT_RECORDS))
    parser.add_argument("--seeds", default="0", help="comma list: seeds each plan is run with")
    parser.add_argument("--out", default=None, help="write the planned trials' records")
    args = parser.parse_args()
    torch.set_num_threads(1)
    records = read_records(args.records)
    settings = grid_settings(records)
    region = OptimumRegion(fraction=1.0, k=5).fit(records)
    beacons = beacons_from_records(records)
    print(f"grid {args.records}: {records['trial_id'].nunique()} trials, "
          f"{settings['dataset']}/{settings['model']}, {settings['epochs']} epochs; region "
          f"centre C̄K={region.centre_[0]:.4g} LK={region.centre_[1]:.4g}", flush=True)
    rows, tables = [], []
    for lr in beacons.lrs:
        sizes = sorted(beacons.at_lr(lr))
        dynamic = [s.spec for s in schedule_family(sizes) if s.spec != "fixed"]
        plan = plan_schedule(beacons, region, lr=lr, candidates=dynamic,
                             lr_milestones=settings.get("lr_milestones", (0.5, 0.75)),
                             lr_decay_factor=settings.get("lr_decay_factor", 10.0))
        for seed in (int(s) for s in args.seeds.split(",")):
            config = TrialConfig.from_dict({**settings, "strategy": plan.schedule,
                                            "batch_size": plan.batch_size, "lr": plan.lr,
                                            "seed": seed})
            start = time.perf_counter()
            trajectory = run_trial(config)
            last = trajectory.iloc[-1]
            tables.append(trial_table(f"planned-{plan.schedule}-lr{lr:g}-s{seed}",
                                      config.to_dict(), trajectory))
            rows.append({
                "schedule": plan.schedule, "lr": lr, "seed": seed,
                "pred_ck": plan.end[0], "actual_ck": float(last["ck_bar"]),
                "pred_lk": plan.end[1], "actual_lk": float(last["lk"]),
                "dlog_ck": abs(np.log(float(last["ck_bar"]) / plan.end[0])),
                "dlog_lk": abs(np.log(float(last["lk"]) / plan.end[1])),
                "pred_error": 100 * plan.predicted_error,
                "actual_error": 100 * float(last["test_error"]),
                "in_region_pred": region.contains(plan.end),
                "in_region_actual": region.contains((float(last["ck_bar"]),
                                                     float(last["lk"]))),
                "seconds": round(time.perf_counter() - start, 1)})
            print(f"  {plan.schedule} lr={lr:g} seed={seed}: C̄K {plan.end[0]:.4g} -> "
                  f"{float(last['ck_bar']):.4g}, LK {plan.end[1]:.4g} -> "
                  f"{float(last['lk']):.4g}, error {100 * plan.predicted_error:.2f} -> "
                  f"{100 * float(last['test_error']):.2f} points", flush=True)
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 160)
    print(table.round(4).to_string(index=False))
    if args.out:
        write_records(pd.concat(tables, ignore_index=True), args.out)
    seed_ck, seed_lk = seed_spread(records)
    gap = (table["actual_error"] - table["pred_error"]).abs().median()
    print(f"planner: plans={len(table)} end_dlog_ck={table['dlog_ck'].median():.3f} "
          f"end_dlog_lk={table['dlog_lk'].median():.3f} seed_dlog_ck={seed_ck:.3f} "
          f"seed_dlog_lk={seed_lk:.3f} error_gap={gap:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
