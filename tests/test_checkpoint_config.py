"""A checkpoint resumes only under the training config that wrote it; run-only fields may differ."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tune_batchdyn.cli import main as cli_main
from tune_batchdyn.errors import ConfigError
from tune_batchdyn.records import RECORD_COLUMNS
from tune_batchdyn.train import TrialConfig, run_trial
from tune_batchdyn.train.checkpoint import checkpoint_path, same_value

QUICK = dict(dataset="digits", model="mlp", measures=(), lr=0.05, batch_size=64, epochs=3,
             device="cpu")
COLUMNS = [c for c in RECORD_COLUMNS if c != "wall_time_s"]


class Kill(Exception):
    pass


def killed_after(config: TrialConfig, epoch: int) -> None:
    """Run ``config`` until ``epoch`` is checkpointed, then kill it."""
    def killer(record):
        if record["epoch"] == epoch:
            raise Kill

    with pytest.raises(Kill):
        run_trial(config, reporter=killer)


def edit_checkpoint(directory, edit) -> None:
    path = checkpoint_path(directory)
    state = torch.load(path, map_location="cpu", weights_only=False)
    edit(state)
    torch.save(state, path)


@pytest.fixture
def config(tmp_path):
    return TrialConfig(**QUICK, checkpoint_dir=str(tmp_path / "ckpt"))


@pytest.fixture
def uninterrupted(config):
    return run_trial(config.replace(checkpoint_dir=None))


def test_another_training_config_is_refused_naming_each_field(config):
    killed_after(config, 1)
    with pytest.raises(ConfigError) as err:
        run_trial(config.replace(lr=0.2, batch_size=128, epochs=4))
    message = str(err.value)
    assert "\n" not in message
    assert str(checkpoint_path(config.checkpoint_dir)) in message
    for change in ("lr=0.05 there, 0.2 requested", "batch_size=64 there, 128 requested",
                   "epochs=3 there, 4 requested"):
        assert change in message
    assert "--checkpoint-dir" in message and "start afresh" in message


@pytest.mark.parametrize("change", [{"seed": 1}, {"lr_milestones": (0.5,)},
                                    {"measures": ("quality",)}, {"momentum": 0.5}])
def test_every_training_field_counts(config, change):
    killed_after(config, 1)
    with pytest.raises(ConfigError, match=f"{next(iter(change))}="):
        run_trial(config.replace(**change))


def test_a_finished_trial_is_not_returned_for_another_config(config):
    run_trial(config)
    with pytest.raises(ConfigError, match="lr=0.05 there, 0.1 requested"):
        run_trial(config.replace(lr=0.1))


def test_run_only_changes_still_resume(config, uninterrupted):
    killed_after(config, 1)
    device = "cpu" if torch.cuda.is_available() else "auto"  # "auto" is the CPU here
    resumed = run_trial(config.replace(checkpoint_every=2, device=device, micro_batch_size=16,
                                       data_dir="/nowhere"))
    pd.testing.assert_frame_equal(resumed[COLUMNS], uninterrupted[COLUMNS])


def test_the_stored_config_is_compared_whatever_its_representation(config, uninterrupted):
    """As Ray or a JSON file may hand it back: lists, ints for floats, numpy scalars."""
    killed_after(config, 1)

    def represent(state):
        stored = json.loads(json.dumps(state["config"]))
        stored.update(lr=np.float64(0.05), epochs=np.int64(3), lr_decay_factor=10)
        state["config"] = dict(reversed(list(stored.items())))

    edit_checkpoint(config.checkpoint_dir, represent)
    resumed = run_trial(config)
    pd.testing.assert_frame_equal(resumed[COLUMNS], uninterrupted[COLUMNS])


def test_same_value_normalises_representations():
    assert same_value({"a": (1, 2), "b": {"c": 1}}, {"b": {"c": 1.0}, "a": [1, 2]})
    assert same_value(np.int64(3), 3.0)
    assert not same_value((0.5,), [0.5, 0.75])


def test_a_checkpoint_without_a_stored_config_still_loads(config, uninterrupted):
    killed_after(config, 1)
    edit_checkpoint(config.checkpoint_dir, lambda state: state.pop("config"))
    resumed = run_trial(config)
    pd.testing.assert_frame_equal(resumed[COLUMNS], uninterrupted[COLUMNS])


def test_a_stored_config_of_an_older_version_checks_the_fields_it_has(config):
    killed_after(config, 1)
    edit_checkpoint(config.checkpoint_dir, lambda state: state["config"].pop("momentum"))
    assert len(run_trial(config.replace(momentum=0.5))) == config.epochs  # no check possible
    with pytest.raises(ConfigError, match="seed=0 there, 1 requested"):
        run_trial(config.replace(seed=1))


def test_a_reroute_may_change_strategy_and_batch_size_only(config):
    killed_after(config, 1)
    with pytest.raises(ConfigError, match="lr=0.05 there, 0.1 requested"):
        run_trial(config.replace(strategy="[64,128,128]", batch_size=32, lr=0.1), reroute=True)
    with pytest.raises(ConfigError, match="strategy=.* there, '\\[64,128,128\\]' requested"):
        run_trial(config.replace(strategy="[64,128,128]", batch_size=32))  # not a reroute
    rerouted = run_trial(config.replace(strategy="[64,128,128]", batch_size=32), reroute=True)
    assert rerouted["batch_size"].tolist() == [64, 128, 128]


def test_cli_train_reports_another_config_in_one_line(tmp_path, capsys):
    args = ["train", "--epochs", "2", "--measures", "none", "--device", "cpu", "--quiet",
            "--checkpoint-dir", str(tmp_path / "ck")]
    assert cli_main(args) == 0
    out = tmp_path / "wrong.csv"
    assert cli_main([*args, "--lr", "0.2", "--batch-size", "128", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tune-batchdyn train: error: checkpoint_dir=") and "\n" not in err
    assert "lr=0.1 there, 0.2 requested" in err and "batch_size=32 there, 128 requested" in err
    assert not out.exists()
