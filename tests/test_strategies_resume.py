"""Every strategy, killed mid-run and resumed from its checkpoint, ends exactly as an
uninterrupted run (CPU)."""

import pandas as pd
import pytest

from tune_batchdyn.records import RECORD_COLUMNS
from tune_batchdyn.train import TrialConfig, run_trial

QUICK = dict(dataset="digits", model="mlp", measures=(), lr=0.05, batch_size=64, epochs=4,
             device="cpu")

#: (strategy spec, config changes, epoch after which the run is killed)
CASES = {
    "fixed": ("fixed", {}, 2),
    "s-range": ("s32-to-512", {"epochs": 6, "batch_size": 32}, 1),  # stage 1 of 2 epochs
    "s-range-MS": ("s32-to-128-MS", {"epochs": 6, "lr_milestones": (0.5,)}, 2),
    "list": ("[64,128]", {}, 1),  # mid-stage: epochs 1-2 at 64
    "gg": ("gg", {}, 2),
    "fb": ({"name": "fb", "ref_batch": 32, "warmup_epochs": 2}, {}, 1),  # mid warm-up
    # κ = 1: the batch doubles at every check (one per epoch), so it changes across the kill
    "abs": ({"name": "abs", "kappa": 1, "measure_samples": 64}, {}, 2),
    "absa": ({"name": "absa", "kappa": 1, "measure_samples": 64, "tau": 3}, {}, 2),
    "is": ("is", {"batch_size": 32}, 2),
    "rmsgd": ("rmsgd", {}, 2),
    "navigator": ({"name": "navigator", "centre": [0.0, 0.0], "radius": 100.0, "patience": 2},
                  {"measures": ("fisher",)}, 2),
}




class Kill(Exception):
    pass


@pytest.mark.parametrize("case", list(CASES))
def test_killed_run_resumes_to_the_same_trajectory(case, tmp_path):
    spec, changes, kill_after = CASES[case]
    config = TrialConfig(**{**QUICK, **changes}, strategy=spec,
                         checkpoint_dir=str(tmp_path / "ckpt"))
    uninterrupted = run_trial(config.replace(checkpoint_dir=None))

    def killer(record):
        if record["epoch"] == kill_after:
            raise Kill

    with pytest.raises(Kill):
        run_trial(config, reporter=killer)
    resumed = run_trial(config)
    columns = [c for c in RECORD_COLUMNS if c != "wall_time_s"]
    pd.testing.assert_frame_equal(resumed[columns], uninterrupted[columns])
    assert len(resumed) == config.epochs


def test_the_cases_exercise_changes_across_the_kill():
    """The schedules do change after the kill epoch, so the resumed part is not trivial."""
    for case in ("s-range", "list", "gg", "abs", "navigator"):
        spec, changes, kill_after = CASES[case]
        trajectory = run_trial(TrialConfig(**{**QUICK, **changes}, strategy=spec))
        sizes = trajectory["batch_size"].tolist()
        assert len(set(sizes[kill_after:])) > 1 or sizes[kill_after] != sizes[kill_after - 1]


def test_a_checkpoint_of_another_strategy_or_version_is_refused_by_name():
    from tune_batchdyn.errors import ConfigError
    from tune_batchdyn.strategies import parse_strategy
    from tune_batchdyn.train.monitor import Monitor

    state = parse_strategy("gg").state_dict()
    with pytest.raises(ConfigError, match=r"checkpoint holds strategy 'gg', not 'fixed'"):
        parse_strategy("fixed").load_state_dict(state)
    with pytest.raises(ConfigError, match=r"'gg' state version 0; accepted: 1"):
        parse_strategy("gg").load_state_dict({**state, "version": 0})
    monitor = Monitor(TrialConfig(**QUICK), n_train=100)
    with pytest.raises(ConfigError, match=r"measure state version 2; accepted: 1"):
        monitor.load_state_dict({**monitor.state_dict(), "version": 2})
