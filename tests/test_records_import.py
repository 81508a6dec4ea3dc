"""Importers: a Ray Tune experiment directory and an Optuna study into records tables."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import optuna
import pytest

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.records import (
    RECORD_COLUMNS,
    record_attr_name,
    record_user_attr,
    records_from_optuna,
    records_from_ray_dir,
)


def _result(epoch: int, **extra) -> dict:
    return {"epoch": epoch, "iterations": 5 * epoch, "samples_seen": 160 * epoch,
            "batch_size": 32, "lr": 0.05, "train_loss": 1.0, "train_error": 0.3,
            "val_error": 0.2 / epoch, "test_error": 0.25 / epoch, "ck_bar": 3.0, "lk": 0.2 * epoch,
            "quality_q": float("nan"), "hessian_top": 4.0, "noise_scale": 10.0, "tau": 1.0,
            "wall_time_s": 0.5 * epoch, "diverged": False, "training_iteration": epoch,
            "trial_id": "abc_00000", "timestamp": 1700000000 + epoch, **extra}


def _write_trial(directory, params: dict, results: list[dict], tail: str = "") -> None:
    directory.mkdir(parents=True)
    (directory / "params.json").write_text(json.dumps(params))
    lines = [json.dumps(r) for r in results]
    (directory / "result.json").write_text("\n".join(lines) + "\n" + tail)


def test_ray_dir_reads_every_trial(tmp_path):
    params = {"dataset": "digits", "lr": 0.05, "batch_size": 32, "epochs": 4, "seed": 0,
              "strategy": {"name": "abs", "alpha": 2.0}}
    _write_trial(tmp_path / "trial_a", params, [_result(1), _result(2)],
                 tail='{"epoch": 3, "iterat')  # half-written line of a killed trial
    second = [_result(1, trial_id="abc_00001"), _result(2, trial_id="abc_00001"),
              _result(3, trial_id="abc_00001"), _result(4, trial_id="abc_00001")]
    for line in second:
        del line["noise_scale"]  # a measure the trial did not report
    _write_trial(tmp_path / "trial_b", {**params, "seed": 1}, second)
    (tmp_path / "basic-variant-state.json").write_text("{}")
    _write_trial(tmp_path / "trial_empty", params, [])

    table = records_from_ray_dir(tmp_path)

    assert sorted(table["trial_id"].unique()) == ["abc_00000", "abc_00001"]
    a = table[table["trial_id"] == "abc_00000"]
    b = table[table["trial_id"] == "abc_00001"]
    assert a["epoch"].tolist() == [1, 2] and b["epoch"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(a["budget_fraction"], [0.25, 0.5])
    np.testing.assert_allclose(b["final_test_error"], 0.25 / 4)
    assert b["noise_scale"].isna().all() and a["noise_scale"].tolist() == [10.0, 10.0]
    assert "training_iteration" not in table.columns and "timestamp" not in table.columns
    assert table["config/strategy/name"].iloc[0] == "abs"
    assert table["config/strategy/alpha"].iloc[0] == 2.0
    assert b["config/seed"].iloc[0] == 1
    assert table["epoch"].dtype == np.int64 and table["diverged"].dtype == bool


def test_a_folder_of_several_experiments_is_refused_naming_them(tmp_path):
    params = {"dataset": "digits", "lr": 0.05, "batch_size": 32, "epochs": 2}
    for experiment in ("run1", "run2"):
        _write_trial(tmp_path / experiment / "trial_a", params, [_result(1), _result(2)])
    with pytest.raises(ConfigError, match=r"holds 2 experiments \(run1, run2\); give one of "
                                          r"them, e.g. '.*run1'"):
        records_from_ray_dir(tmp_path)
    assert len(records_from_ray_dir(tmp_path / "run2")) == 2


def test_ray_dir_keeps_one_row_per_epoch_and_fills_from_progress_csv(tmp_path):
    """A resumed trial appends again the epochs after Ray's last saved state (the last line
    wins); a paused and resumed one may lose its first epochs from result.json, which
    progress.csv still holds."""
    import pandas as pd

    params = {"dataset": "digits", "lr": 0.05, "batch_size": 32, "epochs": 4}
    retrained = [_result(1), _result(2), _result(3), _result(3, val_error=0.01), _result(4)]
    _write_trial(tmp_path / "resumed", params, retrained)
    rerouted = [_result(e, trial_id="abc_00001", batch_size=32 if e < 3 else 128)
                for e in range(1, 5)]
    _write_trial(tmp_path / "rerouted", params, rerouted[2:])  # epochs 1-2 lost
    pd.DataFrame(rerouted).to_csv(tmp_path / "rerouted" / "progress.csv", index=False)

    table = records_from_ray_dir(tmp_path)

    resumed = table[table["trial_id"] == "abc_00000"]
    assert resumed["epoch"].tolist() == [1, 2, 3, 4]
    assert resumed["val_error"].tolist() == pytest.approx([0.2, 0.1, 0.01, 0.05])
    filled = table[table["trial_id"] == "abc_00001"]
    assert filled["epoch"].tolist() == [1, 2, 3, 4]
    assert filled["batch_size"].tolist() == [32, 32, 128, 128]
    assert filled["quality_q"].isna().all() and not filled["diverged"].any()


def test_ray_dir_without_trials_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no trial"):
        records_from_ray_dir(tmp_path)
    with pytest.raises(ConfigError, match="not a directory"):
        records_from_ray_dir(tmp_path / "missing")


def _optuna_trial(number: int, epochs: int, params: dict, config: dict | None) -> object:
    attrs = {record_attr_name(e): record_user_attr({**_result(e), "lr": np.float32(0.5)})
             for e in range(1, epochs + 1)}
    if config is not None:
        attrs["config"] = config
    attrs["note"] = "not a record"
    return SimpleNamespace(number=number, params=params, user_attrs=attrs)


def test_record_attribute_convention():
    assert record_attr_name(7) == "record/0007"
    attr = record_user_attr({"epoch": np.int64(3), "ck_bar": np.float32(2.5), "extra": 1,
                             "diverged": np.bool_(True)})
    assert set(attr) == set(RECORD_COLUMNS)
    assert type(attr["epoch"]) is int and type(attr["ck_bar"]) is float
    assert attr["diverged"] is True and math.isnan(attr["lk"])
    json.dumps(attr)  # plain values only


def test_optuna_trials_duck_typed():
    trials = [
        _optuna_trial(0, 3, {"lr": 0.5, "batch_size": 64}, {"epochs": 3, "lr": 0.1,
                                                             "model": "mlp"}),
        _optuna_trial(1, 2, {"lr": 0.2}, None),
        SimpleNamespace(number=2, params={"lr": 0.3}, user_attrs={}),  # never reported
    ]
    study = SimpleNamespace(get_trials=lambda: trials)
    table = records_from_optuna(study, prefix="s/")
    assert sorted(table["trial_id"].unique()) == ["s/0", "s/1"]
    first = table[table["trial_id"] == "s/0"]
    assert first["epoch"].tolist() == [1, 2, 3]
    assert first["config/lr"].iloc[0] == 0.1  # the config that ran wins over the params
    assert first["config/model"].iloc[0] == "mlp" and first["config/batch_size"].iloc[0] == 64
    np.testing.assert_allclose(first["budget_fraction"], [1 / 3, 2 / 3, 1.0])
    second = table[table["trial_id"] == "s/1"]
    np.testing.assert_allclose(second["budget_fraction"], [0.5, 1.0])  # no epochs: last one
    assert table["quality_q"].isna().all() and table["lr"].eq(0.5).all()


def test_optuna_real_study_round_trip():
    study = optuna.create_study()

    def objective(trial):
        lr = trial.suggest_float("lr", 0.01, 0.1, log=True)
        trial.set_user_attr("config", {"epochs": 2, "dataset": "digits"})
        for epoch in (1, 2):
            trial.set_user_attr(record_attr_name(epoch), record_user_attr(_result(epoch)))
        return lr

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=2)
    table = records_from_optuna(study)
    assert table["trial_id"].tolist() == ["0", "0", "1", "1"]
    assert table["config/dataset"].eq("digits").all()
    assert table["config/lr"].tolist()[::2] == [t.params["lr"] for t in study.trials]
