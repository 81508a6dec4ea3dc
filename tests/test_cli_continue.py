"""Continuing a sweep or a recording: other settings are refused, the same ones continue; the
Optuna sweep's decision log; the Ray sweep's Ctrl-C line."""

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from tune_batchdyn.cli import main
from tune_batchdyn.errors import ConfigError
from tune_batchdyn.optuna import (
    DUPLICATE_ATTR,
    PLAN_ATTR,
    PLAN_KEY_ATTR,
    PRUNE_REASON_ATTR,
    plan_key,
)
from tune_batchdyn.records import read_records

NQM_OPTIONS = 'dataset_options={"dim": 200, "bins": 10, "samples_per_epoch": 2000}'
SMALL_NQM = ["--set", "epochs=4", "--set", NQM_OPTIONS]


def test_optuna_sweep_refuses_other_settings_and_continues_the_same(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    argv = ["sweep", "--space", "nqm", "--backend", "optuna", "--storage", storage,
            "--max-planned", "0"]
    assert main([*argv, *SMALL_NQM]) == 0
    text = capsys.readouterr().out
    # the decision log: one line per pruned trial, before the decisions line
    pruned = int(text.rsplit("decisions: pruned=", 1)[1].split()[0])
    assert pruned >= 1
    log = text.split("decision log (read from study 'nqm'):\n", 1)[1].split("\n\n", 1)[0]
    lines = log.splitlines()
    assert len(lines) == pruned
    assert all(line.startswith("  prune trial ")
               and (" at epoch " in line or " before training: " in line)
               and "batch_size=" in line and "lr=" in line for line in lines)
    assert text.index("decision log") < text.index("decisions: pruned=")
    study = optuna.load_study(study_name="nqm", storage=storage)
    assert study.user_attrs["sweep/space"] == "nqm"
    assert study.user_attrs["sweep/set"] == {
        "epochs": 4, "dataset_options": {"dim": 200, "bins": 10, "samples_per_epoch": 2000}}
    # other --set: refused in one line naming the study, the storage and the field
    assert main([*argv, "--set", "epochs=3", "--set", NQM_OPTIONS]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"tune-batchdyn sweep: error: study 'nqm' in {storage} was created by another sweep "
        "(--set epochs: 4 stored, 3 given); pass another --study-name to start a new study, or "
        "the same --space (its contents too) and --set to continue this one.")
    # another space under the same study name: refused too
    assert main([*argv, "--space", "digits_mlp_smoke", "--study-name", "nqm",
                 "--set", "epochs=4"]) == 2
    assert "--space: nqm stored, digits_mlp_smoke given" in capsys.readouterr().err
    # the same command continues the study (finished: nothing to run) and logs the same
    assert main([*argv, *SMALL_NQM]) == 0
    again = capsys.readouterr().out
    assert "already holds 21 finished trials: nothing to run" in again
    assert "\n".join(f"  {line.strip()}" for line in lines) in again


def test_a_space_file_of_the_same_name_with_other_contents_is_refused(tmp_path, capsys):
    """The study keeps the space's contents: an edited copy under the same name (another lr
    grid, other epochs) is refused naming the tables' fields, and nothing is enqueued."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    argv = ["sweep", "--backend", "optuna", "--storage", storage, "--max-planned", "0",
            "--set", NQM_OPTIONS, "--set", "epochs=2", "--pruner", "none"]
    shipped = main(["sweep", "--space", "nqm", *argv[1:]])
    assert shipped == 0
    capsys.readouterr()
    study = optuna.load_study(study_name="nqm", storage=storage)
    assert study.user_attrs["sweep/contents"]["params"]["lr"] == {"grid": [0.025, 0.1, 0.4]}
    trials = len(study.trials)
    text = (Path(__file__).parents[1] / "searchspaces" / "nqm.toml").read_text()
    edited = tmp_path / "edited" / "nqm.toml"
    edited.parent.mkdir()
    edited.write_text(text.replace("lr = { grid = [0.025, 0.1, 0.4] }",
                                   "lr = { grid = [0.1, 0.3] }")
                      .replace("lr_decay_factor = 10.0", "lr_decay_factor = 5.0"))
    assert main(["sweep", "--space", str(edited), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert ('(--space (its contents too)' not in err and "[fixed] lr_decay_factor: 10.0 stored, "
            "5.0 given; [params] lr: {\"grid\": [0.025, 0.1, 0.4]} stored, {\"grid\": [0.1, "
            "0.3]} given)" in err), err
    assert len(optuna.load_study(study_name="nqm", storage=storage).trials) == trials
    # the shipped file again continues (finished: nothing to run)
    assert main(["sweep", "--space", "nqm", *argv[1:]]) == 0
    assert "nothing to run" in capsys.readouterr().out


def in_memory_study(trials: int = 0) -> optuna.Study:
    study = optuna.create_study()
    for value in range(trials):
        study.add_trial(optuna.trial.create_trial(value=float(value)))
    return study


def test_a_new_study_is_marked_once_and_an_unmarked_one_is_joined_as_before():
    from tune_batchdyn.cli._sweep_optuna import check_study_settings, stored_settings

    contents = {"fixed": {"epochs": 10}, "params": {"lr": {"grid": [0.1]}}, "search": {}}
    settings = {"space": "nqm", "set": {"epochs": 4}, "contents": contents}
    study = in_memory_study()
    check_study_settings(study, settings, None)
    assert stored_settings(study) == settings
    check_study_settings(study, settings, None)  # a second worker with the same command
    with pytest.raises(ConfigError, match=r"--set epochs: 4 stored, unset given"):
        check_study_settings(study, {**settings, "set": {}}, None)
    with pytest.raises(ConfigError, match=r"\[fixed\] epochs: 10 stored, 5 given"):
        check_study_settings(study, {**settings, "contents": {**contents, "fixed": {
            "epochs": 5}}}, None)
    # marked before the contents were kept: name and --set compared, as then
    older = in_memory_study()
    older.set_user_attr("sweep/set", {"epochs": 4})
    older.set_user_attr("sweep/space", "nqm")
    check_study_settings(older, settings, None)
    # made by user code (or before the marks): joined, and left unmarked
    legacy = in_memory_study(trials=1)
    check_study_settings(legacy, settings, None)
    assert stored_settings(legacy) is None and not legacy.user_attrs


def test_workers_with_their_own_data_path_or_device_join_one_study():
    from tune_batchdyn.cli._settings import run_settings
    from tune_batchdyn.cli._sweep_optuna import check_study_settings
    from tune_batchdyn.space import read_space
    from tune_batchdyn.train.config import RUN_ONLY_FIELDS

    space = read_space("nqm")
    study = in_memory_study()
    first = {"epochs": 4, "data_dir": "/nfs/data"}
    check_study_settings(study, run_settings(space, first, ignore=RUN_ONLY_FIELDS), None)
    other_machine = {"epochs": 4, "data_dir": "/scratch/data", "device": "cuda"}
    check_study_settings(study, run_settings(space, other_machine, ignore=RUN_ONLY_FIELDS), None)
    with pytest.raises(ConfigError, match=r"--set epochs: 4 stored, 5 given"):
        check_study_settings(study, run_settings(space, {"epochs": 5}, ignore=RUN_ONLY_FIELDS),
                             None)


def pruned_trial(params: dict, steps: int, **user_attrs: object) -> optuna.trial.FrozenTrial:
    distributions = {key: optuna.distributions.CategoricalDistribution([value])
                     for key, value in params.items()}
    return optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED, params=params, distributions=distributions,
        intermediate_values={step: 0.5 for step in range(1, steps + 1)}, user_attrs=user_attrs)


def test_optuna_decision_log_lists_pruned_trials_and_plans_once():
    from tune_batchdyn.cli._sweep_optuna import decision_lines
    from tune_batchdyn.optuna import decisions_line

    study = in_memory_study(trials=1)
    study.add_trial(pruned_trial({"batch_size": 8, "lr": 0.4}, steps=2))
    plan = {"strategy": "[8,128]-MS", "batch_size": 8, "lr": 0.1}
    attrs = {PLAN_ATTR: plan, PLAN_KEY_ATTR: plan_key(plan), "reroute/predicted_error": 0.1234}
    study.enqueue_trial(plan, user_attrs=attrs)
    study.add_trial(pruned_trial({}, steps=0, **attrs, **{DUPLICATE_ATTR: 2}))  # not counted
    # MeasurePruner's reasons: the base pruner's rung, or the bound with its numbers
    study.add_trial(pruned_trial({"batch_size": 32, "lr": 0.2}, steps=1, **{
        PRUNE_REASON_ATTR: {"by": "SuccessiveHalvingPruner"}}))
    study.add_trial(pruned_trial({"batch_size": 512, "lr": 0.05}, steps=3, **{
        PRUNE_REASON_ATTR: {"by": "bound", "lower_bound": 0.02134, "rival": 0.013889,
                            "k": 3, "confidence": 0.9}}))
    assert decision_lines(study) == [
        "prune trial 1 at epoch 2: batch_size=8 lr=0.4",
        "enqueue trial 2: strategy=[8,128]-MS batch_size=8 lr=0.1 (predicted error 0.1234, "
        "waiting)",
        "prune trial 4 at epoch 1: batch_size=32 lr=0.2 (by SuccessiveHalvingPruner)",
        "prune trial 5 at epoch 3: batch_size=512 lr=0.05 (by the bound: lower_bound=0.02134 "
        "> rival=0.01389, the k=3 best, confidence 0.9)",
    ]
    assert decisions_line(study) == "decisions: pruned=3 enqueued=1"


def fake_experiment(folder, settings: dict | None) -> None:
    """A folder that ``Tuner.can_restore`` takes for an experiment, with its ``sweep.json``."""
    folder.mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(b"")
    if settings is not None:
        (folder / "sweep.json").write_text(json.dumps(settings))


def test_ray_resume_with_other_settings_is_refused_before_ray_starts(tmp_path, capsys):
    experiment = tmp_path / "ray" / "run"
    fake_experiment(experiment, {"space": "digits_mlp_smoke", "set": {"epochs": 6}})
    argv = ["sweep", "--space", "nqm", "--storage-path", str(tmp_path / "ray"), "--name", "run",
            "--resume", "--set", "epochs=6"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"tune-batchdyn sweep: error: --resume: {experiment} holds another sweep (--space: "
        "digits_mlp_smoke stored, nqm given); pass another --name to start a new experiment, "
        "or the same --space (its contents too), --set and flags to continue this one.")
    # the flags Ray restores from the experiment are compared too
    fake_experiment(tmp_path / "ray" / "flags", {"space": "nqm", "set": {}, "flags": {
        "--scheduler": "measure", "--budget": 300, "--max-planned": 3, "--max-concurrent": None}})
    assert main(["sweep", "--space", "nqm", "--storage-path", str(tmp_path / "ray"), "--name",
                 "flags", "--resume", "--scheduler", "fifo"]) == 2
    assert ("(--scheduler: measure stored, fifo given; --budget: 300 stored, unset given)"
            in capsys.readouterr().err)


def test_ray_settings_file_round_trip(tmp_path):
    from tune_batchdyn.cli._sweep_ray import check_resumed_settings, write_settings

    settings = {"space": "nqm", "set": {"epochs": 4, "measures": ["fisher"]}}
    write_settings(str(tmp_path / "run"), settings)
    check_resumed_settings(str(tmp_path / "run"), settings)
    with pytest.raises(ConfigError, match=r"\(--set epochs: 4 stored, 3 given\)"):
        check_resumed_settings(str(tmp_path / "run"),
                               {"space": "nqm", "set": {"epochs": 3, "measures": ["fisher"]}})
    check_resumed_settings(str(tmp_path / "older"), settings)  # no sweep.json: resumed as before


def test_record_refuses_a_file_of_other_settings_and_continues_its_own(tmp_path, capsys):
    from tune_batchdyn.cli.record import check_recorded, grid_configs
    from tune_batchdyn.space import read_space

    out = tmp_path / "grid.csv"  # CSV: the values compared are the ones read back
    argv = ["record", "--space", "nqm", "--out", str(out), "--quiet", "--set", NQM_OPTIONS]
    assert main([*argv, "--set", "epochs=2"]) == 0
    recorded = read_records(out)
    assert recorded["trial_id"].nunique() == 21
    capsys.readouterr()
    assert main([*argv, "--set", "epochs=3"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"tune-batchdyn record: error: --out {out} holds trials recorded with other settings "
        "(epochs: 2 stored, 3 given); pass another --out to record this grid, or the same "
        "--space and --set to continue that one.")
    assert main(["record", "--space", "nqm", "--out", str(out), "--set", "epochs=2"]) == 2
    assert "(dataset_options/bins: 10 stored, unset given; " in capsys.readouterr().err
    assert read_records(out).equals(recorded)  # nothing was appended
    assert main([*argv, "--set", "epochs=2"]) == 0
    assert "(21 already there)" in capsys.readouterr().out
    # more seeds of the same grid may be added
    overrides = {"epochs": 2, "dataset_options": {"dim": 200, "bins": 10,
                                                  "samples_per_epoch": 2000}}
    configs = [{**c, "seed": seed} for c in grid_configs(read_space("nqm"), overrides)
               for seed in (0, 1)]
    check_recorded(str(out), recorded, configs)
    # a file without some fields (e.g. a sweep's): named once, after the real differences
    other = recorded.drop(columns=["config/lr_decay_factor", "config/momentum"])
    other["config/epochs"] = 3
    with pytest.raises(ConfigError, match=r"settings \(epochs: 3 stored, 2 given; not in the "
                                          r"file: lr_decay_factor, momentum\)"):
        check_recorded(str(out), other, configs)


def test_ray_interrupt_is_noted_and_its_notes_dropped():
    from tune_batchdyn.cli._sweep_ray import Interruption

    def record(name: str, message: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.WARNING, "tune.py", 1, message, None, None)

    interruption = Interruption()
    failed = record("ray.tune.analysis.experiment_analysis", "Failed to fetch metrics for 1")
    assert interruption(failed) and not interruption.seen  # kept: not after an interrupt
    assert not interruption(record("ray.tune.tune", "Experiment has been interrupted, but the "
                                   "most recent state was saved.\nResume experiment with: "
                                   "Tuner.restore(...)"))
    assert interruption.seen
    assert not interruption(failed)
    assert interruption(record("ray.tune.tune", "Stop signal received (e.g. via SIGINT/Ctrl+C)"))


def test_ray_progress_ends_with_the_statuses_from_before_the_interrupt(capsys):
    from tune_batchdyn.cli._sweep_ray import Progress

    progress = Progress("val_error")
    trials = [SimpleNamespace(trial_id="a", status="TERMINATED"),
              SimpleNamespace(trial_id="b", status="RUNNING")]
    progress.on_step_end(iteration=1, trials=trials)
    trials[1].status = "TERMINATED"  # what Ray sets on its way out of an interrupted run
    progress.on_experiment_end(trials)
    assert capsys.readouterr().out.startswith("[trials 2: running 1, terminated 1]")


class Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("storage", ["sqlite:///study.db", None])
def test_optuna_ctrl_c_says_how_to_continue_without_optunas_traceback(storage, tmp_path,
                                                                      monkeypatch, capsys):
    from tune_batchdyn.cli._sweep_optuna import interrupt_said

    monkeypatch.chdir(tmp_path)
    study = optuna.create_study(storage=storage)
    study.add_trial(optuna.trial.create_trial(value=0.5))

    def objective(trial):
        raise KeyboardInterrupt

    collected = Collected()
    logging.getLogger("optuna").addHandler(collected)
    try:
        with pytest.raises(SystemExit) as exit_, interrupt_said(study, storage):
            study.optimize(objective, n_trials=1)
    finally:
        logging.getLogger("optuna").removeHandler(collected)
    assert exit_.value.code == 130
    err = capsys.readouterr().err.strip()
    again = ("rerun the same command to continue (the interrupted trial runs again)" if storage
             else "the study was in memory; pass --storage sqlite:///runs/sweep.db to keep one "
                  "that a rerun continues")
    assert err == f"tune-batchdyn sweep: interrupted: {again}; 1 trial finished so far."
    assert not [r for r in collected.records if "Trial 1 failed" in r.getMessage()]
    assert study.trials[1].state == optuna.trial.TrialState.FAIL
    # the filter is gone afterwards
    logging.getLogger("optuna").addHandler(collected)
    try:
        logging.getLogger("optuna.study._optimize").warning("kept")
    finally:
        logging.getLogger("optuna").removeHandler(collected)
    assert collected.records[-1].getMessage() == "kept"


def test_a_trial_left_running_is_named_with_how_it_is_freed():
    from tune_batchdyn.cli._sweep_optuna import held_lines

    study = optuna.create_study(study_name="s")
    assert held_lines(study, "sqlite:///x.db") == []
    study.enqueue_trial({"batch_size": 128, "lr": 0.1})
    trial = study.ask()
    trial.suggest_categorical("batch_size", [128])
    trial.suggest_float("lr", 0.01, 1.0)
    database = held_lines(study, "sqlite:///x.db")
    assert database == ["still running in the study: trial 0 (batch_size=128 lr=0.1); if no other "
                        "worker is on it, a killed worker's trial is failed and enqueued again "
                        "once its heartbeat is 120 s old: rerun the same command then."]
    journal = held_lines(study, "runs/sweep.journal")[0]
    assert ("a journal has no heartbeat: if its worker is gone, free it with optuna.load_study("
            "study_name='s', storage=...).tell(<number>, state=optuna.trial.TrialState.FAIL)"
            in journal)


def test_optuna_budget_counts_the_studys_earlier_runs(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    argv = ["sweep", "--space", "nqm", "--backend", "optuna", "--storage", storage,
            "--max-planned", "0", "--budget", "4", *SMALL_NQM]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "budget of 4 trial-epochs spent: no trial was started after it" in first
    trials = len(optuna.load_study(study_name="nqm", storage=storage).trials)
    assert main(argv) == 0
    assert ("budget of 4 trial-epochs already spent in study 'nqm': no trial started"
            in capsys.readouterr().out)
    assert len(optuna.load_study(study_name="nqm", storage=storage).trials) == trials


def test_workers_on_one_machine_share_its_cores(monkeypatch):
    """Each trial takes the machine's cores divided by the study's trials running there (two
    2-thread workers on 2 cores took 31 s where one took 17 s); trials on other machines do
    not count, and a user's OMP_NUM_THREADS is left alone."""
    from tune_batchdyn.cli import _cores

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(_cores, "machine_threads", lambda: 4)
    threads = [4]
    monkeypatch.setattr(_cores.torch, "set_num_threads", threads.append)
    monkeypatch.setattr(_cores.torch, "get_num_threads", lambda: threads[-1])
    study = optuna.create_study()
    first, second = study.ask(), study.ask()
    assert _cores.share_cores(first) == 4 and threads == [4]  # alone: unchanged
    assert _cores.share_cores(second) == 2
    elsewhere = study.ask()
    study._storage.set_trial_system_attr(elsewhere._trial_id, _cores.HOST_ATTR, "other-node")
    third = study.ask()
    assert _cores.share_cores(third) == 1  # three here: 4 // 3
    study.tell(first, 0.1)
    study.tell(second, 0.1)
    assert _cores.share_cores(study.ask()) == 2  # third and this one
    assert threads == [4, 2, 1, 2]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert _cores.share_cores(study.ask()) == 2 and threads == [4, 2, 1, 2]
