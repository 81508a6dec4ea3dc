"""Baselines: the seed's 5-nearest rule, current val error, power-law extrapolation (hand
computations)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tune_batchdyn.predict import (
    ConfigOnlyPredictor,
    CurrentValErrorPredictor,
    NearestNeighbourPredictor,
    PowerLawPredictor,
    nearest_average,
)
from tune_batchdyn.records import empty_record, trial_table

#: (C̄K, LK) at fraction 0.5 and final error of seven finished trials.
FINISHED = [
    ("t0", 2.0, 1.0, 0.10),
    ("t1", 4.0, 1.0, 0.20),
    ("t2", 2.0, 4.0, 0.30),
    ("t3", 8.0, 8.0, 0.40),
    ("t4", 1.0, 1.0, 0.05),
    ("t5", 3.0, 2.0, 0.15),
    ("t6", 50.0, 50.0, 0.90),
]


def _trial(trial_id, ck_half, lk_half, final, val=(0.6, 0.4, 0.3, None), reached=4):
    """4 epochs; at fraction 0.5 (epoch 2) C̄K, LK = the given values; doubled at the end."""
    rows = []
    for e in range(1, reached + 1):
        scale = {1: 0.5, 2: 1.0, 3: 1.5, 4: 2.0}[e]
        value = val[e - 1] if val[e - 1] is not None else final
        rows.append({**empty_record(), "epoch": e, "iterations": 10 * e, "samples_seen": 320 * e,
                     "batch_size": 32, "lr": 0.1, "ck_bar": ck_half * scale,
                     "lk": lk_half * scale, "val_error": value,
                     "test_error": final if e == 4 else value})
    return trial_table(trial_id, {"lr": 0.1, "batch_size": 32, "epochs": 4}, pd.DataFrame(rows))


def _finished() -> pd.DataFrame:
    return pd.concat([_trial(*row) for row in FINISHED], ignore_index=True)


def test_five_nearest_equals_hand_computation():
    running = _trial("r", 2.5, 1.5, math.nan, reached=2)
    guess = NearestNeighbourPredictor().fit(_finished()).predict(running)
    # distances in (ln C̄K, ln LK) from (ln 2.5, ln 1.5), by hand:
    point = np.log([2.5, 1.5])
    distances = {name: float(np.hypot(*(np.log([c, lk]) - point)))
                 for name, c, lk, _ in FINISHED}
    nearest = sorted(distances, key=distances.get)[:5]
    assert sorted(nearest) == ["t0", "t1", "t2", "t4", "t5"]
    errors = [0.10, 0.20, 0.30, 0.05, 0.15]
    assert guess.mode == "knn5"
    assert guess.mean == pytest.approx(np.mean(errors))
    assert guess.std == pytest.approx(np.std(errors))
    assert guess.n_reference == 7


def test_nearest_average_with_fewer_points_than_k():
    mean, std = nearest_average(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([0.2, 0.4]),
                                np.array([[5.0, 5.0]]), k=5)
    assert mean[0] == pytest.approx(0.3) and std[0] == pytest.approx(0.1)


def test_five_nearest_cold_starts_with_too_few_trials():
    few = pd.concat([_trial(*row) for row in FINISHED[:3]], ignore_index=True)
    running = _trial("r", 2.5, 1.5, math.nan, reached=2)
    assert NearestNeighbourPredictor().fit(few).predict(running).mode == "cold-start"


def test_current_val_error():
    running = _trial("r", 2.5, 1.5, math.nan, reached=3)
    guess = CurrentValErrorPredictor().fit(_finished()).predict(running)
    assert (guess.mode, guess.mean) == ("val", 0.3) and math.isnan(guess.std)


def test_power_law_by_hand():
    # val errors 0.6, 0.4, 0.3 at fractions 0.25, 0.5, 0.75: least squares of ln e on ln f
    running = _trial("r", 2.5, 1.5, math.nan, reached=3)
    guess = PowerLawPredictor().fit(_finished()).predict(running)
    x, y = np.log([0.25, 0.5, 0.75]), np.log([0.6, 0.4, 0.3])
    slope = np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2)
    expected = math.exp(y.mean() - slope * x.mean())  # ln e(1) = intercept
    assert guess.mode == "powerlaw" and guess.mean == pytest.approx(expected)
    assert guess.std == pytest.approx(abs(expected - 0.3))


def test_power_law_never_predicts_a_rise():
    running = _trial("r", 2.5, 1.5, math.nan, val=(0.3, 0.4, None, None), reached=2)
    assert PowerLawPredictor().fit(_finished()).predict(running).mean == pytest.approx(0.4)


def test_config_only_uses_lr_and_batch():
    guess = ConfigOnlyPredictor().fit(_finished()).predict(_trial("r", 2.5, 1.5, 0.0,
                                                                  reached=2))
    assert guess.mode == "config-gp" and 0 < guess.mean < 1
