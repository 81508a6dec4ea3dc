import logging
import re
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch

from tune_batchdyn.cli import main
from tune_batchdyn.optuna import BEACON_ATTR
from tune_batchdyn.records import read_records

SMALL_NQM = ["--set", "epochs=4", "--set",
             'dataset_options={"dim": 200, "bins": 10, "samples_per_epoch": 2000}']


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backend", "dask"], "--backend='dask' is not accepted; use one of: 'ray', 'optuna'"),
        (["--scheduler", "pbt"], "--scheduler='pbt' is not accepted"),
        (["--backend", "optuna", "--pruner", "random"], "--pruner='random' is not accepted"),
        (["--backend", "optuna", "--scheduler", "asha"], "--scheduler is for --backend ray, not "
                                                         "--backend optuna; drop it"),
        (["--storage", "sqlite:///s.db", "--study-name", "s"], "--storage, --study-name is for "
                                                               "--backend optuna"),
        (["--backend", "optuna", "--gpus-per-trial", "1"], "--gpus-per-trial is for --backend "
         "ray, not --backend optuna; drop it or switch the backend (Optuna trains in this "
         "process: --set device=cuda for the GPU)"),
        (["--backend", "optuna", "--cpus-per-trial", "2"], "--cpus-per-trial is for --backend ray"),
        (["--gpus-per-trial", "-1"], "--gpus-per-trial -1.0 is not accepted; use a number >= 0"),
        (["--gpus-per-trial", "nan"], "--gpus-per-trial nan is not accepted"),
        (["--cpus-per-trial", "inf"], "--cpus-per-trial inf is not accepted"),
        (["--cpus-per-trial", "10000"], "--cpus-per-trial 10000 is not accepted: this machine "
                                        "has"),
        (["--name", "a/../b"], "--name 'a/../b' is not accepted; use a plain folder name"),
        (["--budget", "0"], "--budget 0 is not accepted"),
        (["--time-budget", "0"], "--time-budget 0.0 is not accepted; use a number of seconds > 0"),
        (["--time-budget", "nan"], "--time-budget nan is not accepted"),
        (["--resume", "--storage-path", "runs", "--time-budget", "60"],
         "--time-budget is not accepted with --resume"),
        (["--out", "r.xlsx"], "has extension '.xlsx'"),
        (["--storage-path", "s3://bucket/runs"], "--storage-path s3://bucket/runs is not "
                                                 "accepted"),
        (["--set", "epoch=5"], "with --set epoch=5: unknown TrialConfig field(s) ['epoch']"),
        (["--set", "epochs=0"], "with --set epochs=0: epochs=0 is not accepted"),
        (["--set", "epochs"], "--set 'epochs' is not accepted; use KEY=VALUE"),
        (["--space", "cifar10_resnet110"], "dataset='cifar10' needs data_dir"),
        (["--resume"], "--resume continues a Ray experiment: pass --backend ray and the "
                       "--storage-path"),
    ],
)
def test_bad_sweep_arguments_exit_2_naming_the_flag(argv, message, capsys):
    assert main(["sweep", "--space", "nqm", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize(("argv", "message"), [
    (["--gpus-per-trial", "1"], "--gpus-per-trial 1 is not accepted: this machine has no CUDA "
                                "GPU, so no trial would ever start"),
    (["--set", "device=cuda"], "device='cuda' is not accepted: this machine has no CUDA GPU"),
])
def test_gpus_a_local_run_cannot_have_are_refused_at_once(argv, message, capsys):
    assert main(["sweep", "--space", "nqm", *argv]) == 2
    assert message in capsys.readouterr().err


def test_output_folders_that_cannot_be_made_are_refused_before_any_trial(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    for flag, value in (("--out", "afile/records.parquet"), ("--figures", "afile/figures")):
        assert main(["sweep", "--space", "nqm", flag, str(tmp_path / value)]) == 2
        assert (f"{flag}: cannot create the folder '{tmp_path / 'afile'}" in
                capsys.readouterr().err)


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("argv", [
    ["sweep", "--space", "nqm", "--out", "/proc/records.parquet"],
    ["sweep", "--space", "nqm", "--backend", "optuna", "--out", "/proc/records.parquet"],
    ["record", "--space", "nqm", "--out", "/proc/records.parquet"],
    ["train", "--dataset", "nqm", "--model", "nqm", "--epochs", "1", "--out", "/proc/x.csv"],
])
def test_a_records_file_in_a_folder_that_cannot_be_written_is_refused_before_training(argv,
                                                                                      capsys):
    """/proc exists but takes no new file: caught by writing a scratch file there first, not
    after the last trial (when the records would be lost)."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert ("--out: cannot write in the folder '/proc' (No such file or directory)"
            in captured.err)
    assert "epoch" not in captured.out


def test_other_outputs_that_cannot_be_made_are_refused_before_any_trial(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    afile = str(tmp_path / "afile")
    for argv in (["sweep", "--space", "nqm", "--storage-path", afile],
                 ["train", "--dataset", "nqm", "--model", "nqm", "--checkpoint-dir", afile],
                 ["plot", "benchmarks/data/digits_mlp.parquet", "--out", afile]):
        assert main(argv) == 2
        assert f"cannot create the folder '{afile}' (File exists)" in capsys.readouterr().err
    assert main(["sweep", "--space", "nqm", "--out", str(tmp_path)]) == 2
    assert "has extension ''" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["ray", "optuna"])
def test_a_data_dir_without_the_files_is_refused_before_any_trial(tmp_path, capsys, backend):
    """An empty data_dir would fail every trial (Ray retrying each): the sweep opens the
    files once where it starts and stops with one line."""
    code = main(["sweep", "--space", "cifar10_resnet110", "--backend", backend, "--set",
                 f"data_dir={tmp_path}", "--out", str(tmp_path / "r.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert (f"dataset='cifar10': no torchvision files under '{tmp_path}' on this machine, "
            "where the sweep starts" in err)
    assert "--set download=true" in err
    assert not (tmp_path / "r.parquet").exists()


def test_an_address_without_a_cluster_is_one_line(monkeypatch, capsys):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["sweep", "--space", "nqm", "--address", "auto"]) == 2
    assert ("--address auto: no running Ray cluster found. Start one with `ray start --head`"
            in capsys.readouterr().err)


def test_the_space_files_budget_applies_unless_the_flag_says_otherwise(tmp_path, capsys):
    from pathlib import Path

    import tune_batchdyn

    shipped = Path(tune_batchdyn.__file__).parent.parent / "searchspaces" / "nqm.toml"
    space = tmp_path / "budgeted.toml"
    space.write_text(shipped.read_text().replace('mode = "min"', 'mode = "min"\nbudget = 8'))
    argv = ["sweep", "--space", str(space), "--backend", "optuna", "--pruner", "none",
            "--max-planned", "0", *SMALL_NQM]
    for extra, budget in (([], 8), (["--budget", "12"], 12)):
        out = tmp_path / f"records_{budget}.csv"
        assert main([*argv, "--storage", f"sqlite:///{tmp_path / f'{budget}.db'}",
                     "--out", str(out), *extra]) == 0
        epochs = read_records(out).groupby("trial_id")["epoch"].max()
        assert epochs.sum() == budget and (epochs == 4).all()  # whole trials, then it stops
    capsys.readouterr()


def test_optuna_time_budget_starts_no_trial_after_it(tmp_path, capsys):
    out = tmp_path / "records.csv"
    assert main(["sweep", "--space", "nqm", "--backend", "optuna", "--pruner", "none",
                 "--max-planned", "0", "--time-budget", "0.01", "--out", str(out),
                 *SMALL_NQM]) == 0
    text = capsys.readouterr().out
    assert "time budget of 0.01 s spent: no trial was started after it" in text
    epochs = read_records(out).groupby("trial_id")["epoch"].max()
    assert epochs.tolist() == [4]  # the one trial running then finished


def test_ray_time_budget_ends_the_sweep_keeping_what_was_trained(tmp_path, capsys,
                                                                monkeypatch):
    monkeypatch.delenv("TUNE_WARN_THRESHOLD_S", raising=False)
    out = tmp_path / "records.csv"
    assert main(["sweep", "--space", "nqm", "--storage-path", str(tmp_path / "ray"),
                 "--max-planned", "0", "--time-budget", "6", "--out", str(out), *SMALL_NQM,
                 "--set", "epochs=2000"]) == 0
    text = capsys.readouterr().out
    assert "time budget of 6 s spent: the sweep ended there" in text
    if out.exists():  # trials that reported before the end are kept, none trained to the end
        assert (read_records(out).groupby("trial_id")["epoch"].max() < 2000).all()


@pytest.mark.parametrize(("backend", "message"), [
    (["--backend", "optuna"], "the Optuna objective minimises an error ('val_error' here)"),
    ([], "MeasureScheduler (the default --scheduler) minimises an error"),
])
def test_a_space_that_maximises_is_refused_before_anything_starts(tmp_path, capsys, backend,
                                                                 message):
    from pathlib import Path

    import tune_batchdyn

    shipped = Path(tune_batchdyn.__file__).parent.parent / "searchspaces" / "nqm.toml"
    space = tmp_path / "maximise.toml"
    space.write_text(shipped.read_text().replace('mode = "min"', 'mode = "max"'))
    assert main(["sweep", "--space", str(space), *backend]) == 2
    assert f"[search] mode='max' is not accepted: {message}" in capsys.readouterr().err


def test_ray_budget_counts_each_trained_epoch_once():
    from tune_batchdyn.cli._sweep_ray import EpochBudget

    budget = EpochBudget(3)
    for trial_id, epoch in (("a", 1), ("a", 2), ("a", 2), ("b", 1)):  # Ray repeats a's last
        assert budget(trial_id, {"epoch": epoch, "val_error": 0.5}) is False
        assert budget.stop_all() is (trial_id == "b")


def test_optuna_sweep_prunes_and_keeps_every_trial(tmp_path, capsys):
    out = tmp_path / "sweep.parquet"
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    code = main(["sweep", "--space", "nqm", "--backend", "optuna", "--storage", storage,
                 "--max-planned", "0", "--out", str(out), *SMALL_NQM])
    text = capsys.readouterr().out
    assert code == 0
    records = read_records(out)
    # the 7 × 3 grid, each point once: every trained trial in the records, the others pruned
    # before training by their configuration's bound
    unseen = text.count(" pruned before training by the configuration's bound: ")
    assert unseen >= 1
    assert records["trial_id"].nunique() + unseen == 21
    pruned = int(text.rsplit("decisions: pruned=", 1)[1].split()[0])
    assert (records.groupby("trial_id")["epoch"].max() < 4).sum() + unseen == pruned
    assert pruned > unseen
    # the beacons (batch 8..512 at lr 0.1) were enqueued as such and ran to the end
    study = optuna.load_study(study_name="nqm", storage=storage)
    beacons = [t for t in study.trials if t.user_attrs.get(BEACON_ATTR)]
    assert sorted(t.params["batch_size"] for t in beacons) == [8, 16, 32, 64, 128, 256, 512]
    assert {t.params["lr"] for t in beacons} == {0.1}
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.last_step == 4
               for t in beacons)
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
    # Ray's header states the bound the searcher keeps: the 21 grid points and 1 plan
    assert re.search(r"Number of trials\s+22\b", text)
    records = read_records(out)
    assert records["trial_id"].nunique() >= 21
    stopped = int(text.rsplit("decisions: stopped=", 1)[1].split()[0])
    assert stopped >= 1
    # one checkpoint per trial is kept (the latest: all a resume or a reroute reads)
    trials = [folder for folder in (tmp_path / "ray" / "nqm").iterdir() if folder.is_dir()]
    assert len(trials) >= 21
    assert max(len(list(folder.glob("checkpoint_*"))) for folder in trials) == 1
    # the same command again would mix a second run into the folder: refused, before Ray
    # starts; --resume continues the finished experiment and trains nothing again
    argv = ["sweep", "--space", "nqm", "--backend", "ray", "--storage-path",
            str(tmp_path / "ray"), "--max-planned", "1", *SMALL_NQM]
    assert main(argv) == 2
    assert "holds an experiment already: pass --resume" in capsys.readouterr().err
    again = tmp_path / "again.csv"
    assert main([*argv, "--resume", "--out", str(again)]) == 0
    resumed = capsys.readouterr().out
    assert f"decisions: stopped={stopped} " in resumed
    pd.testing.assert_frame_equal(read_records(again), records)
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


def test_ray_sweep_quiets_only_missing_results_of_trials_a_budget_ended():
    from tune_batchdyn.cli._sweep_ray import quiet_unreported_trials

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("ray.tune.analysis.experiment_analysis", logging.WARNING,
                                 "experiment_analysis.py", 186, message, None, None)

    missing = ("- batchdyn_trial_{0}: FileNotFoundError('Could not fetch metrics for "
               "batchdyn_trial_{0}: both result.json and progress.csv were not found at /r')")
    assert not quiet_unreported_trials(record(
        "Failed to fetch metrics for 2 trial(s):\n" + missing.format("a") + "\n"
        + missing.format("b")))
    assert quiet_unreported_trials(record(
        "Failed to fetch metrics for 2 trial(s):\n" + missing.format("a")
        + "\n- batchdyn_trial_b: JSONDecodeError('Expecting value: line 1 column 1')"))
    assert quiet_unreported_trials(record("Trial failed to stop: see the log."))


def test_results_of_a_sweep_ended_before_any_epoch_are_empty_not_an_error(tmp_path, capsys):
    from tune_batchdyn.cli._sweep_ray import _results

    (tmp_path / "batchdyn_trial_a_1").mkdir()  # Ray's folder of a trial stopped at its start
    (tmp_path / "tuner.pkl").write_bytes(b"")
    records, decisions = _results(str(tmp_path), None, epochs=4)
    assert records.empty and decisions == "decisions: stopped=0 rerouted=0 spawned=0"
    assert "1 trial(s) ended before their first epoch's result" in capsys.readouterr().out


def test_ray_sweep_quiets_only_the_resumed_trials_missing_file_warning():
    from tune_batchdyn.cli._sweep_ray import quiet_resumed_file_loggers

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("ray.tune.logger.logger", logging.WARNING, "logger.py", 132,
                                 message, None, None)

    assert not quiet_resumed_file_loggers(record("Remote file not found: /s/t/result.json"))
    assert quiet_resumed_file_loggers(record("Error downloading /s/t/result.json"))


def test_summary_shows_schedules_as_runs_and_says_how_many_rows(capsys):
    from tune_batchdyn.cli.sweep import SUMMARY_ROWS, print_summary
    from tune_batchdyn.strategies.dynamic_sampling import run_lengths

    assert run_lengths("[32,32,128,128,128,512]") == "[32×2,128×3,512]"
    assert run_lengths("[32,64,64,128,256]-MS") == "[32,64×2,128,256]-MS"
    assert run_lengths("[8,128]-MS") == "[8,128]-MS"
    assert run_lengths("s32-to-512") == "s32-to-512"
    trials = SUMMARY_ROWS + 2
    records = pd.DataFrame({
        "trial_id": [f"t{i}" for i in range(trials)],
        "epoch": 3,
        "config/strategy": ["[32,32,128]"] + ["fixed"] * (trials - 1),
        "config/batch_size": 32,
        "config/lr": 0.1,
        "val_error": [0.01 * (i + 1) for i in range(trials)],
        "test_error": 0.5,
        "diverged": False,
    })
    print_summary(records, "val_error")
    text = capsys.readouterr().out
    assert f"{trials} trials, {3 * trials} trial-epochs trained; best val_error 0.0100 (t0); " \
           f"the best {SUMMARY_ROWS} below; a schedule's repeated stages read batch×n" in text
    assert "[32×2,128]" in text and f"t{SUMMARY_ROWS - 1} " in text and f"t{SUMMARY_ROWS} " \
        not in text
    assert len(text.strip().splitlines()) == 2 + SUMMARY_ROWS


def test_summary_names_the_default_strategy_of_a_space_without_one(capsys):
    from tune_batchdyn.cli.sweep import print_summary

    records = pd.DataFrame({"trial_id": ["a", "b"], "epoch": 2,
                            "config/strategy": [None, "s32-to-128"], "config/batch_size": 32,
                            "config/lr": 0.1, "val_error": [0.1, 0.2], "test_error": 0.5,
                            "diverged": False})
    print_summary(records, "val_error")
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()]
    assert ["a", "fixed"] in rows and ["b", "s32-to-128"] in rows


def test_progress_line_ranks_trials_by_their_latest_result(capsys):
    from types import SimpleNamespace

    from tune_batchdyn.cli._sweep_ray import Progress

    progress = Progress("val_error", every=1e9)
    first = SimpleNamespace(trial_id="a", status="RUNNING")
    second = SimpleNamespace(trial_id="b", status="RUNNING")
    for trial, value in ((first, 0.05), (second, 0.2), (first, 0.3), (second, 0.1)):
        progress.on_trial_result(0, [first, second], trial, {"val_error": value})
    progress.on_experiment_end([first, second])
    # a's 0.05 was an earlier epoch: the best by latest result is b at 0.1, as the summary says
    assert "4 trial-epochs, best val_error 0.1000 (b)" in capsys.readouterr().out
    # a resumed sweep's progress (restored from Ray's experiment state) counts on
    resumed = Progress("val_error", every=1e9)
    resumed.set_state(progress.get_state())
    resumed.on_trial_result(0, [first, second], first, {"val_error": 0.02})
    resumed.on_experiment_end([first, second])
    assert "5 trial-epochs, best val_error 0.0200 (a)" in capsys.readouterr().out


def test_optuna_progress_line_says_diverged_and_why_pruned(capsys):
    from tune_batchdyn.cli._sweep_optuna import Budget
    from tune_batchdyn.optuna import PRUNE_REASON_ATTR
    from tune_batchdyn.records import record_attr_name

    study = optuna.create_study()
    for diverged in (False, True):
        trial = study.ask()
        trial.set_user_attr(record_attr_name(1), {"val_error": 0.9, "diverged": diverged})
        trial.report(0.9, 1)
        study.tell(trial, 0.9)
        Budget("val_error", None)(study, study.trials[-1])
    trial = study.ask()
    trial.set_user_attr(PRUNE_REASON_ATTR, {"by": "SuccessiveHalvingPruner"})
    for epoch in (1, 2):
        trial.report(0.5, epoch)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    Budget("val_error", None)(study, study.trials[-1])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("trial 0 complete after 1 epoch: val_error=0.9000")
    assert lines[1].startswith("trial 1 diverged after 1 epoch: val_error=0.9000")
    assert lines[2].startswith("trial 2 pruned after 2 epochs by SuccessiveHalvingPruner: "
                               "val_error=0.5000")
    # a killed worker's trial, failed once its heartbeat went stale: its epochs were spent
    # (--budget counts them) but it holds no finished result (the summary leaves it out)
    killed = study.ask()
    for epoch in (1, 2, 3):
        killed.report(0.4, epoch)
    study.tell(killed, state=optuna.trial.TrialState.FAIL)
    Budget("val_error", None)(study, study.trials[2])
    assert capsys.readouterr().out.rstrip().endswith(
        "| 7 trial-epochs (3 in failed trials, run again), best 0.9000")


def test_a_cluster_named_by_ray_address_is_not_checked_for_local_gpus(monkeypatch):
    from types import SimpleNamespace

    from tune_batchdyn.cli.sweep import runs_here

    args = SimpleNamespace(backend="ray", address=None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert runs_here(args)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert not runs_here(args)
    assert runs_here(SimpleNamespace(backend="optuna", address=None))


def test_a_cluster_without_the_gpus_a_trial_asks_for_is_said_at_once(monkeypatch, capsys):
    """Ray would wait silently (an autoscaler may add GPU nodes, so it is a warning)."""
    from tune_batchdyn.cli import _sweep_ray

    monkeypatch.setattr(_sweep_ray.ray, "cluster_resources", lambda: {"CPU": 16.0})
    _sweep_ray.say_how_gpus_are_used(1)
    assert ("warning: each trial asks for 1 GPU(s) and the cluster has 0 now: no trial starts "
            "until nodes with GPUs join" in capsys.readouterr().out)
    _sweep_ray.say_how_gpus_are_used(0)
    monkeypatch.setattr(_sweep_ray.ray, "cluster_resources", lambda: {"GPU": 4.0})
    _sweep_ray.say_how_gpus_are_used(0.5)
    assert capsys.readouterr().out == ""


def test_gpus_no_trial_asks_for_are_said_at_once(monkeypatch, capsys):
    """Ray hides GPUs from a trial that asks for none: it trains on CPUs, silently."""
    from tune_batchdyn.cli import _sweep_ray

    monkeypatch.setattr(_sweep_ray.ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 2.0})
    _sweep_ray.say_how_gpus_are_used(0)
    assert capsys.readouterr().out == (
        "note: the cluster has 2 GPU(s) and trials ask for none, so they train on CPUs; pass "
        "--gpus-per-trial 1 (or 0.25: four trials share a GPU) to use them.\n")


def test_the_measure_pruner_predicts_the_spaces_metric_or_refuses_it():
    from tune_batchdyn.cli._sweep_optuna import pruner_for
    from tune_batchdyn.errors import ConfigError
    from tune_batchdyn.optuna import MeasurePruner

    assert pruner_for("measure", "test_error").metric == "test_error"
    with pytest.raises(ConfigError, match="metric='train_loss' is not accepted by MeasurePruner"):
        pruner_for("measure", "train_loss")
    assert not isinstance(pruner_for("median", "train_loss"), MeasurePruner)
