"""The pruner benchmark's hindsight epoch-1 bound on hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _benchmarks import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("pruners")


def table(trials: dict[str, list[float]]) -> pd.DataFrame:
    rows = [{"trial_id": tid, "epoch": epoch, "val_error": value,
             "diverged": bool(np.isnan(value))}
            for tid, values in trials.items() for epoch, value in enumerate(values, start=1)]
    return pd.DataFrame(rows)


def test_epoch_one_curve_ranks_by_first_epoch_and_counts_epochs(bench) -> None:
    records = table({"a": [0.5, 0.4, 0.3], "b": [0.2, 0.3, 0.4], "c": [0.3, 0.1],
                     "d": [float("nan")]})
    # b first (4 + 2 epochs, best 40), then c (+1, best 10), then a (+2, no better), d last
    assert bench.epoch_one_curve(records) == [(6, 40.0), (7, 10.0)]


def test_hindsight_bound_picks_the_best_choice_within_budget(bench) -> None:
    curves = [[(6, 40.0), (7, 10.0)], [(3, 20.0), (5, 5.0)]]
    assert bench.hindsight_bound(curves, orders=2, budget=24) == (7.5, 24)
    assert bench.hindsight_bound(curves, orders=2, budget=23) == (15.0, 20)
    assert bench.hindsight_bound(curves, orders=2, budget=17) is None
