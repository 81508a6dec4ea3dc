"""TrialHistory (what the scheduler and the searcher learn from) and DecisionLog."""

import logging
import math

import pandas as pd
import pytest

from tune_batchdyn.records import RECORD_COLUMNS, empty_record
from tune_batchdyn.tune import DecisionLog, TrialHistory
from tune_batchdyn.tune.history import config_from_result, record_from_result


def result(epoch, val_error, fraction=None, **extra):
    record = empty_record()
    record.update(epoch=epoch, batch_size=32, lr=0.1, val_error=val_error,
                  test_error=val_error + 0.01, train_loss=2 * val_error)
    if fraction is not None:
        record["budget_fraction"] = fraction
    return {**record, "training_iteration": epoch, "time_total_s": 1.0, **extra}


def test_results_become_records_once_per_epoch():
    history = TrialHistory()
    config = {"lr": 0.1, "batch_size": 32, "epochs": 4}
    assert history.observe("a", config, result(1, 0.5)) is True
    assert history.observe("a", config, result(1, 0.4)) is False  # the same epoch again
    assert history.observe("a", config, {"done": True}) is False  # no epoch
    history.observe("a", config, result(2, 0.3))
    table = history.table(metric="val_error")
    assert table["val_error"].tolist() == [0.5, 0.3]
    assert table["budget_fraction"].tolist() == [0.25, 0.5]  # epoch / config epochs
    assert table["final_val_error"].tolist() == [0.3, 0.3]
    assert list(table.columns[:len(RECORD_COLUMNS)]) == list(RECORD_COLUMNS)
    assert math.isnan(table["ck_bar"].iloc[0])  # absent measures are NaN
    assert history.epochs_run() == 2


def test_reported_budget_fraction_wins_and_gives_the_epochs():
    history = TrialHistory()
    history.observe("a", {"lr": 0.1}, result(3, 0.2, fraction=0.75))
    table = history.table()
    assert table["budget_fraction"].tolist() == [0.75]
    assert table["config/epochs"].tolist() == [4]


def test_completion_tells_finished_from_stopped_and_other_metrics_get_a_final_column():
    history = TrialHistory()
    for epoch in (1, 2):
        history.observe("whole", {"epochs": 2}, result(epoch, 0.3))
        history.observe("cut", {"epochs": 4}, result(epoch, 0.6))
    history.observe("blown", {"epochs": 4}, {**result(1, 0.9), "diverged": True})
    assert [history.complete(t) for t in ("whole", "cut", "blown")] == [
        "finished", "stopped", "finished"]
    assert history.ids("finished") == ["whole", "blown"]
    table = history.table(["whole", "cut"], metric="train_loss")
    assert table.groupby("trial_id")["final_train_loss"].first().to_dict() == {
        "cut": 1.2, "whole": 0.6}


def test_state_round_trip_is_in_place():
    history = TrialHistory()
    history.register("a", {"lr": 0.1, "epochs": 2}, origin="beacon")
    history.observe("a", {}, result(1, 0.5))
    history.decisions.add("spawn", "b", "planned", predicted_error=0.1)
    other = TrialHistory()
    other.observe("z", {"epochs": 1}, result(1, 0.1))
    other.set_state(history.get_state())
    assert other.ids() == ["a"] and other.origin("a") == "beacon"
    pd.testing.assert_frame_equal(other.table(), history.table())
    pd.testing.assert_frame_equal(other.decisions.frame(), history.decisions.frame())


def test_config_from_a_flattened_result():
    flat = {"val_error": 0.1, "config/lr": 0.1, "config/dataset_options/dim": 10}
    assert config_from_result(flat) == {"lr": 0.1, "dataset_options": {"dim": 10}}
    assert config_from_result({"config": {"lr": 0.2}}) == {"lr": 0.2}
    assert record_from_result({"loss": 1.0}) is None


def test_decision_log_lines_table_and_summary(caplog):
    log = DecisionLog()
    with caplog.at_level(logging.INFO, logger="tune_batchdyn.tune"):
        log.add("stop", "t1", "diverged", epoch=2, fraction=0.25, val_error=0.9)
        log.add("reroute", "t2", "off course", epoch=3, fraction=0.375, planned_distance=0.12345)
        log.add("spawn", "t3", "planned", predicted_error=0.05)
    assert caplog.messages[0] == "stop t1 at epoch 2 (fraction 0.25): diverged (val_error=0.9)"
    assert caplog.messages[2] == "spawn t3: planned (predicted_error=0.05)"
    frame = log.frame()
    assert frame.columns.tolist()[:5] == ["action", "trial_id", "epoch", "fraction", "reason"]
    assert frame["planned_distance"].iloc[1] == pytest.approx(0.12345)
    assert log.summary() == "decisions: stopped=1 rerouted=1 spawned=1"
    with pytest.raises(ValueError, match="action='pause'"):
        log.add("pause", "t4", "no")


def test_decision_log_reads_back_what_it_wrote(tmp_path):
    """A resumed sweep prints the log from decisions.csv: the same lines, no blank numbers."""
    log = DecisionLog()
    log.add("stop", "0123", "diverged", epoch=2, fraction=0.25, val_error=0.9)
    log.add("spawn", "t3", "planned", predicted_error=0.05)
    again = DecisionLog.read_csv(log.write_csv(tmp_path / "decisions.csv"))
    assert again.lines() == log.lines()
    assert again.lines()[0] == "stop 0123 at epoch 2 (fraction 0.25): diverged (val_error=0.9)"
    assert again.summary() == log.summary()
