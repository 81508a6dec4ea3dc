"""Records tables: built from run_trial output, round-tripped through Parquet and CSV, appended
atomically."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.records import (
    RECORD_COLUMNS,
    append_records,
    empty_record,
    read_records,
    trial_table,
    write_records,
)


def _trajectory(epochs: int = 3, *, batch: int = 32, diverge_last: bool = False) -> pd.DataFrame:
    rows = []
    for e in range(1, epochs + 1):
        record = empty_record()
        record.update(epoch=e, iterations=10 * e, samples_seen=320 * e, batch_size=batch,
                      lr=0.1, train_loss=1.0 / e, train_error=0.5 / e, val_error=0.4 / e,
                      test_error=0.45 / e, ck_bar=2.0 + e, lk=0.1 * e, wall_time_s=1.5 * e)
        rows.append(record)
    if diverge_last:
        rows[-1].update(diverged=True, test_error=0.9, val_error=0.9)
    return pd.DataFrame(rows)


def _table() -> pd.DataFrame:
    config = {"dataset": "digits", "model": "mlp", "strategy": "fixed", "lr": 0.1,
              "batch_size": 32, "epochs": 4, "seed": 0, "data_seed": 7, "measure_every": 50,
              "lr_milestones": (0.5, 0.75), "data_dir": None, "download": False,
              "dataset_options": {"size": 100, "noise": 0.5}}
    first = trial_table("a", config, _trajectory(3))
    second = trial_table("00042", {**config, "seed": 1}, _trajectory(2, diverge_last=True))
    return pd.concat([first, second], ignore_index=True)


def test_trial_table_columns_and_values():
    table = trial_table("a", {"lr": 0.1, "epochs": 4, "nested": {"x": 1}}, _trajectory(3))
    assert list(table.columns[:len(RECORD_COLUMNS)]) == list(RECORD_COLUMNS)
    assert {"trial_id", "config/lr", "config/epochs", "config/nested/x", "final_test_error",
            "final_val_error", "budget_fraction"} <= set(table.columns)
    np.testing.assert_allclose(table["budget_fraction"], [0.25, 0.5, 0.75])
    assert (table["final_test_error"] == 0.45 / 3).all()
    assert (table["final_val_error"] == 0.4 / 3).all()
    assert table["epoch"].dtype == np.int64 and table["diverged"].dtype == bool
    assert table["config/epochs"].dtype == np.int64
    assert table["quality_q"].isna().all()


def test_trial_table_without_epochs_uses_last_epoch():
    table = trial_table("a", {"lr": 0.1}, _trajectory(4))
    np.testing.assert_allclose(table["budget_fraction"], [0.25, 0.5, 0.75, 1.0])


def test_trial_table_rejects_missing_record_columns():
    with pytest.raises(ConfigError, match="ck_bar"):
        trial_table("a", {}, _trajectory(2).drop(columns=["ck_bar"]))


def test_config_values_become_scalars():
    table = _table()
    assert table["config/lr_milestones"].iloc[0] == "[0.5, 0.75]"
    assert math.isnan(table["config/data_dir"].iloc[0])
    assert table["config/dataset_options/size"].iloc[0] == 100
    assert table["config/download"].dtype == bool


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_round_trip_is_lossless(tmp_path, suffix):
    table = _table()
    path = write_records(table, tmp_path / f"records{suffix}")
    back = read_records(path)
    pd.testing.assert_frame_equal(back, table, check_exact=True)
    assert back["trial_id"].tolist() == ["a"] * 3 + ["00042"] * 2
    assert back["quality_q"].isna().all() and back["diverged"].tolist()[-1]


def test_files_whose_trial_ids_collide_keep_their_trials_apart(tmp_path):
    a = write_records(_table(), tmp_path / "study_a.parquet")
    b = write_records(_table(), tmp_path / "study_b.csv")
    both = read_records([a, b])
    assert both.groupby("trial_id")["epoch"].max().to_dict() == {
        "study_a:a": 3, "study_a:00042": 2, "study_b:a": 3, "study_b:00042": 2}
    other = write_records(_table().assign(trial_id="z"), tmp_path / "other.parquet")
    assert set(read_records([a, other])["trial_id"]) == {"a", "00042", "z"}  # no collision


def test_csv_keeps_floats_exactly(tmp_path):
    table = trial_table("t", {"lr": 1 / 3}, _trajectory(2))
    table["ck_bar"] = [math.pi, 1e-300]
    back = read_records(write_records(table, tmp_path / "r.csv"))
    assert back["ck_bar"].tolist() == [math.pi, 1e-300]
    assert back["config/lr"].iloc[0] == 1 / 3


def test_unknown_extension_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="extension"):
        write_records(_table(), tmp_path / "records.xlsx")
    with pytest.raises(ConfigError, match="does not exist"):
        read_records(tmp_path / "missing.parquet")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1x")
    with pytest.raises(ConfigError, match="'.*empty.csv' cannot be read as csv \\(EmptyData"):
        read_records(tmp_path / "empty.csv")
    with pytest.raises(ConfigError, match="'.*broken.parquet' cannot be read as parquet"):
        read_records(tmp_path / "broken.parquet")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_append_adds_rows(tmp_path, suffix):
    table = _table()
    path = tmp_path / f"records{suffix}"
    append_records(path, table.iloc[:3])
    append_records(path, table.iloc[3:])
    pd.testing.assert_frame_equal(read_records(path), table, check_exact=True)


@pytest.mark.parametrize("suffix,method", [(".parquet", "to_parquet"), (".csv", "to_csv")])
def test_append_killed_mid_write_leaves_old_file(tmp_path, monkeypatch, suffix, method):
    table = _table()
    path = tmp_path / f"records{suffix}"
    write_records(table.iloc[:3], path)
    before = path.read_bytes()

    def half_write(self, stream, *args, **kwargs):
        stream.write(b"PAR1 half a file")
        raise OSError("disk pulled mid-write")

    monkeypatch.setattr(pd.DataFrame, method, half_write)
    with pytest.raises(OSError, match="mid-write"):
        append_records(path, table.iloc[3:])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]
    pd.testing.assert_frame_equal(read_records(path), table.iloc[:3], check_exact=True)


def test_dataclass_config_is_flattened():
    from dataclasses import dataclass, field

    @dataclass(frozen=True)
    class Config:  # the shape of train.TrialConfig: scalars, a tuple, a mapping, None
        strategy: object = "fixed"
        lr: float = 0.1
        epochs: int = 3
        lr_milestones: tuple = (0.5, 0.75)
        dataset_options: dict = field(default_factory=lambda: {"size": 10})
        data_dir: object = None

    table = trial_table("t", Config(strategy={"name": "abs", "alpha": 2.0}), _trajectory(3))
    row = table.iloc[0]
    assert row["config/strategy/name"] == "abs" and row["config/strategy/alpha"] == 2.0
    assert row["config/lr_milestones"] == "[0.5, 0.75]"
    assert row["config/dataset_options/size"] == 10 and math.isnan(row["config/data_dir"])
    np.testing.assert_allclose(table["budget_fraction"], [1 / 3, 2 / 3, 1.0])
