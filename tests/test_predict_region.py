"""OptimumRegion: the level set of lowest 5-nearest-average error, on hand-made points."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.predict import OptimumRegion, informative_k
from tune_batchdyn.records import empty_record, trial_table

# Five good trials around (C̄K, LK) = (e^1, e^1), five poor ones around (e^3, e^3).
GOOD = [(1.0, 1.0), (1.2, 1.0), (0.8, 1.0), (1.0, 1.2), (1.0, 0.8)]
POOR = [(3.0, 3.0), (3.2, 3.0), (2.8, 3.0), (3.0, 3.2), (3.0, 2.8)]


def _records() -> pd.DataFrame:
    tables = []
    for index, ((log_ck, log_lk), error) in enumerate(
            [(p, 0.05) for p in GOOD] + [(p, 0.40) for p in POOR]):
        rows = [{**empty_record(), "epoch": e, "iterations": e, "samples_seen": e,
                 "batch_size": 32, "lr": 0.1, "ck_bar": math.exp(log_ck),
                 "lk": math.exp(log_lk) * e / 2, "test_error": error, "val_error": error}
                for e in (1, 2)]
        tables.append(trial_table(f"t{index}", {"epochs": 2}, pd.DataFrame(rows)))
    return pd.concat(tables, ignore_index=True)


def test_region_is_around_the_good_trials():
    region = OptimumRegion(grid_size=101).fit(_records())
    assert region.best_error_ == pytest.approx(0.05)
    assert region.threshold_ == pytest.approx(0.05)
    # the region is where the 5 nearest are exactly the good trials (nearer the good cluster)
    # inside the hull of the trials (the band x - 0.2 <= y <= x + 0.2 between the clusters, in
    # log coordinates), so its centre lies on the good side of the mid-line x + y = 4
    centre = np.array(region.centre_log_)
    assert centre.sum() < 4.0
    assert region.contains((math.e, math.e))
    assert region.contains((math.exp(1.5), math.exp(1.4)))
    assert not region.contains((math.exp(1.5), math.exp(0.9)))  # near, but outside the hull
    assert not region.contains((math.exp(3.0), math.exp(3.0)))
    assert not region.contains((math.exp(2.1), math.exp(2.1)))  # nearer the poor cluster
    assert not region.contains((math.exp(-5.0), math.exp(1.0)))  # far outside
    assert not region.contains((0.0, 1.0))  # log of zero: not a point of the plane
    (ck_lo, ck_hi), (lk_lo, lk_hi) = region.extent_
    assert ck_lo < math.e < ck_hi and lk_lo < math.e < lk_hi


def test_error_at_averages_the_five_nearest():
    region = OptimumRegion().fit(_records())
    mean, std = region.error_at([(math.e, math.e), (math.exp(3), math.exp(3))])
    np.testing.assert_allclose(mean, [0.05, 0.40])
    np.testing.assert_allclose(std, [0.0, 0.0])


def test_tolerance_widens_the_region():
    exact = OptimumRegion(grid_size=51).fit(_records())
    wide = OptimumRegion(grid_size=51, tolerance=1.0).fit(_records())
    assert wide.contains((math.exp(3.0), math.exp(3.0)))
    (lo, hi), _ = wide.extent_
    assert hi - lo > exact.extent_[0][1] - exact.extent_[0][0]


def test_running_trajectory_membership():
    records = _records()
    region = OptimumRegion(fraction=0.5).fit(records)
    good = records[records["trial_id"] == "t0"].iloc[:1]
    poor = records[records["trial_id"] == "t5"].iloc[:1]
    assert region.contains_trajectory(good) and not region.contains_trajectory(poor)
    with pytest.raises(ConfigError, match="fraction"):
        OptimumRegion(fraction=1.0).fit(records).contains_trajectory(good)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="fraction"):
        OptimumRegion(fraction=0).fit(_records())
    with pytest.raises(ConfigError, match="not fitted"):
        OptimumRegion().contains((1.0, 1.0))


def test_informative_k_is_at_most_half_the_trials():
    assert [informative_k(5, n) for n in (1, 2, 5, 9, 10, 60)] == [1, 1, 2, 4, 5, 5]
