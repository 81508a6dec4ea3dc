"""benchmarks/stop_rules.py: each rule's decision, on a planted table, against its definition."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _benchmarks import load_benchmark

from tune_batchdyn.predict import FinalErrorPredictor
from tune_batchdyn.predict.synthetic import synthetic_records


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("stop_rules")


@pytest.fixture(scope="module")
def records(bench):
    return bench.fixed_trials(synthetic_records(n_configs=12, n_seeds=2, epochs=6, seed=3,
                                                diverging=0.0))


def test_the_conformal_rule_needs_nine_finished_trials(bench, records):
    decisions = bench.judge(records, 8, [1, 2], np.random.default_rng(0))
    assert len(decisions) == 2 * (records["trial_id"].nunique() - 8)
    assert not decisions["conformal"].any()
    assert decisions["mu_sigma"].any()  # the former rule already stops at 8


def test_decisions_follow_the_rules_definitions(bench, records):
    decisions = bench.judge(records, 10, [2], np.random.default_rng(1))
    ids = np.random.default_rng(1).permutation(
        records.groupby("trial_id")["val_error"].last().index.to_numpy())
    finished, judged = ids[:10], ids[10:]
    finals = records.groupby("trial_id")["val_error"].last()
    rival = np.sort(finals[finished].to_numpy())[2]
    predictor = FinalErrorPredictor(target="final_val_error").fit(
        records[records["trial_id"].isin(finished)])
    expected = []
    for trial_id in judged:
        seen = records[(records["trial_id"] == trial_id) & (records["epoch"] <= 2)]
        guess, bound = predictor.predict(seen), predictor.lower_bound(seen, 0.9)
        expected.append((finals[trial_id] <= rival, guess.mean - guess.std > rival,
                         bool(np.isfinite(bound) and bound > rival)))
    got = list(decisions[["good", "mu_sigma", "conformal"]].itertuples(index=False, name=None))
    assert got == expected
    table = bench.summary(pd.concat([decisions, decisions.assign(epoch=3)]))
    assert table.loc[(10, 2), "judged"] == len(judged)
    assert table.loc[(10, 2), "conformal_stopped"] == pytest.approx(decisions["conformal"].mean())
