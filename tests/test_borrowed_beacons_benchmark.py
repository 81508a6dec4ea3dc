"""benchmarks/borrowed_beacons.py: the end-point errors it reports, on a grid with known lr laws."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from _benchmarks import BENCHMARKS, load_benchmark

from tune_batchdyn.records import empty_record, trial_table


def _fixed_trial(lr: float, batch: int) -> pd.DataFrame:
    """C̄K ∝ lr² and LK ∝ lr every epoch: laws linear in log scale."""
    rows = [{**empty_record(), "epoch": e, "iterations": 4 * e, "samples_seen": 64 * e,
             "batch_size": batch, "lr": lr, "ck_bar": 100 * lr**2 * e * batch,
             "lk": lr * e / batch, "train_loss": 1.0 / e, "test_error": 0.1, "val_error": 0.1}
            for e in range(1, 6)]
    config = {"strategy": "fixed", "lr": lr, "batch_size": batch, "epochs": 5,
              "measure_every": 2, "seed": 0}
    return trial_table(f"b{batch}-lr{lr}", config, pd.DataFrame(rows))


def test_interpolation_is_exact_on_log_linear_laws_and_nearest_is_not(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    borrowed = load_benchmark("borrowed_beacons")
    grid = pd.concat([_fixed_trial(lr, b) for lr in (0.1, 0.2, 0.4) for b in (16, 32)],
                     ignore_index=True)
    table = borrowed.end_errors(grid, epochs_done=2)
    rules = table.groupby("lr")["rule"].agg(set)
    assert rules[0.2] == set(borrowed.RULES)  # the interior lr
    assert rules[0.1] == rules[0.4] == set(borrowed.EDGE_RULES)
    errors = table.groupby("rule")[["dlog_ck", "dlog_lk"]].max()
    # past the edge: C̄K off by 2² again (0.2 is the nearest lr of both edges), LK scaled exactly
    assert errors.loc["past the edge", "dlog_ck"] == pytest.approx(2 * math.log(2))
    assert errors.loc["past the edge", "dlog_lk"] == pytest.approx(0.0, abs=1e-9)
    for rule in ("interpolated", "interpolated from epoch K"):
        assert errors.loc[rule].tolist() == pytest.approx([0.0, 0.0], abs=1e-9)
    # the nearest lr is half or twice 0.2: C̄K off by 2², LK exact once scaled by the lr ratio
    assert errors.loc["nearest", "dlog_ck"] == pytest.approx(2 * math.log(2))
    assert errors.loc["nearest", "dlog_lk"] == pytest.approx(0.0, abs=1e-9)
    assert np.isfinite(table[["dlog_ck", "dlog_lk"]]).all().all()
