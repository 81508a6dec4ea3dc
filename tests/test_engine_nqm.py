import pytest

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.records import RECORD_COLUMNS
from tune_batchdyn.train import TrialConfig, run_trial

NQM_TRIAL = dict(dataset="nqm", model="nqm", epochs=8, batch_size=64, lr=0.5,
                 dataset_options={"samples_per_epoch": 6400, "dim": 1000, "bins": 20})


def test_nqm_trial_runs_through_run_trial_with_the_record_schema():
    reports = []
    trajectory = run_trial(TrialConfig(**NQM_TRIAL), reporter=reports.append)
    assert list(trajectory.columns) == list(RECORD_COLUMNS)
    assert len(trajectory) == 8 and reports[-1]["done"] is True and len(reports) == 9
    assert trajectory["iterations"].tolist() == [100 * e for e in range(1, 9)]
    # the seed's step decay: ÷10 at 50% and 75% of the epochs
    assert trajectory["lr"].tolist() == pytest.approx([0.5] * 4 + [0.05] * 2 + [0.005] * 2)
    assert trajectory["test_error"].is_monotonic_decreasing


def test_nqm_seeds_differ_when_sampled_and_agree_in_expectation():
    a = run_trial(TrialConfig(**NQM_TRIAL, seed=1))["test_error"]
    b = run_trial(TrialConfig(**NQM_TRIAL, seed=2))["test_error"]
    assert not a.equals(b)
    exact = {**NQM_TRIAL, "dataset_options": {**NQM_TRIAL["dataset_options"], "sampled": False}}
    c = run_trial(TrialConfig(**exact, seed=1))["test_error"]
    d = run_trial(TrialConfig(**exact, seed=2))["test_error"]
    assert c.equals(d)
    assert a.iloc[-1] == pytest.approx(c.iloc[-1], rel=0.2)


def test_nqm_bad_option_names_the_key():
    bad = {**NQM_TRIAL, "dataset_options": {"colour": 1}}
    with pytest.raises(ConfigError, match=r"unknown nqm dataset_options \['colour'\]"):
        run_trial(TrialConfig(**bad))
