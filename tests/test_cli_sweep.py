import logging

import pytest

from tune_batchdyn.cli import main
from tune_batchdyn.records import read_records

SMALL_NQM = ["--set", "epochs=4", "--set",
             'dataset_options={"dim": 200, "bins": 10, "samples_per_epoch": 2000}']


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backend", "dask"], "--backend='dask' is not accepted; use one of: 'ray', 'optuna'"),
        (["--scheduler", "pbt"], "--scheduler='pbt' is not accepted"),
        (["--pruner", "random"], "--pruner='random' is not accepted"),
        (["--gpus-per-trial", "-1"], "--gpus-per-trial -1.0 is not accepted"),
        (["--budget", "0"], "--budget 0 is not accepted"),
        (["--out", "r.xlsx"], "has extension '.xlsx'"),
        (["--storage-path", "s3://bucket/runs"], "--storage-path s3://bucket/runs is not "
                                                 "accepted"),
    ],
)
def test_bad_sweep_arguments_exit_2_naming_the_flag(argv, message, capsys):
    assert main(["sweep", "--space", "nqm", *argv]) == 2
    assert message in capsys.readouterr().err


def test_optuna_sweep_prunes_and_keeps_every_trial(tmp_path, capsys):
    out = tmp_path / "sweep.parquet"
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    code = main(["sweep", "--space", "nqm", "--backend", "optuna", "--storage", storage,
                 "--max-planned", "0", "--out", str(out), *SMALL_NQM])
    text = capsys.readouterr().out
    assert code == 0
    records = read_records(out)
    assert records["trial_id"].nunique() == 21  # the 7 × 3 grid, each point once
    pruned = int(text.rsplit("decisions: pruned=", 1)[1].split()[0])
    assert pruned >= 1
    assert (records.groupby("trial_id")["epoch"].max() < 4).sum() == pruned
    # rejoining the finished study trains nothing again and loses nothing
    again = tmp_path / "again.parquet"
    assert main(["sweep", "--space", "nqm", "--backend", "optuna", "--storage", storage,
                 "--max-planned", "0", "--out", str(again), *SMALL_NQM]) == 0
    assert "already holds 21 finished trials: nothing to run" in capsys.readouterr().out
    assert read_records(again).equals(records)


def test_ray_sweep_runs_the_measure_scheduler(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TUNE_WARN_THRESHOLD_S", raising=False)  # else Ray's own threshold
    out = tmp_path / "sweep.csv"
    code = main(["sweep", "--space", "nqm", "--backend", "ray", "--storage-path",
                 str(tmp_path / "ray"), "--out", str(out), "--max-planned", "1", *SMALL_NQM])
    text = capsys.readouterr().out
    assert code == 0
    assert "decisions: stopped=" in text and "trial-epochs" in text
    records = read_records(out)
    assert records["trial_id"].nunique() >= 21
    stopped = int(text.rsplit("decisions: stopped=", 1)[1].split()[0])
    assert stopped >= 1
    from tune_batchdyn.cli._sweep_ray import quiet_resumed_file_loggers, quiet_short_slow_notes

    assert quiet_resumed_file_loggers in logging.getLogger("ray.tune.logger.logger").filters
    assert quiet_short_slow_notes in logging.getLogger("ray.tune.utils.util").filters


def test_ray_sweep_keeps_only_long_slow_operation_notes():
    from tune_batchdyn.cli._sweep_ray import quiet_short_slow_notes

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("ray.tune.utils.util", logging.WARNING, "util.py", 212,
                                 message, None, None)

    assert not quiet_short_slow_notes(record(
        "The `process_trial_result` operation took 1.042 s, which may be a performance "
        "bottleneck."))
    assert not quiet_short_slow_notes(record(
        "Processing trial results took 0.732 s, which may be a performance bottleneck. "
        "Please consider reporting results less frequently to Ray Tune."))
    assert quiet_short_slow_notes(record(
        "The `on_step_begin` operation took 12.5 s, which may be a performance bottleneck."))
    assert quiet_short_slow_notes(record("Trial failed to stop: see the log."))


def test_ray_sweep_quiets_only_the_resumed_trials_missing_file_warning():
    from tune_batchdyn.cli._sweep_ray import quiet_resumed_file_loggers

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("ray.tune.logger.logger", logging.WARNING, "logger.py", 132,
                                 message, None, None)

    assert not quiet_resumed_file_loggers(record("Remote file not found: /s/t/result.json"))
    assert quiet_resumed_file_loggers(record("Error downloading /s/t/result.json"))
