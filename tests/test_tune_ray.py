"""End to end on a real Ray Tune (one local session for the module, 2 CPUs): tune.run and
Tuner stop trials and spawn planned ones; a rerouted trial resumes under its new schedule; a
failed trial is retried from its checkpoint; Tuner.restore resumes an interrupted experiment."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray")
from ray import cloudpickle, tune  # noqa: E402

from tune_batchdyn.predict import schedule_family  # noqa: E402
from tune_batchdyn.predict.synthetic import BATCH_SIZES, synthetic_records  # noqa: E402
from tune_batchdyn.records import records_from_ray_dir  # noqa: E402
from tune_batchdyn.train import TrialConfig, run_trial  # noqa: E402
from tune_batchdyn.tune import (  # noqa: E402
    DecisionsCallback,
    DynamicSamplingSearcher,
    MeasureScheduler,
    Planner,
    RerouteOption,
    make_replay_trainable,
    make_trainable,
)

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/

EPOCHS = 6
DYNAMIC = [s.spec for s in schedule_family(BATCH_SIZES) if len(set(s.stages)) > 1]
NQM = dict(dataset="nqm", model="nqm", epochs=8, lr=0.5,
           dataset_options={"samples_per_epoch": 6400, "dim": 1000, "bins": 20})


pytestmark = pytest.mark.usefixtures("ray_session")  # tests/conftest.py


@pytest.fixture(scope="module")
def records():
    """18 fixed-batch configs (3 lrs x 6 batch sizes; 3 diverge at epoch 3) and every staged
    schedule at lr 0.1, all replayable."""
    return synthetic_records(n_configs=18, n_seeds=1, epochs=EPOCHS, seed=3, dynamic=DYNAMIC)


def grid_of(records):
    first = records[records["config/strategy"] == "fixed"].groupby("trial_id").first()
    return [{"strategy": "fixed", "lr": float(r["config/lr"]), "seed": 0, "epochs": EPOCHS,
             "batch_size": int(r["config/batch_size"])} for _, r in first.iterrows()]


def components(records, lines):
    searcher = DynamicSamplingSearcher(grid_of(records), max_planned=1, min_beacons=6,
                                       planner=Planner(lrs=[0.1], candidates=DYNAMIC))
    scheduler = MeasureScheduler(history=searcher.history, top_k=12, min_finished=4,
                                 reroute=False)
    return searcher, scheduler, DecisionsCallback(scheduler, echo=lines.append)


def check_stops_and_spawns(decisions, trials_table, path, lines):
    assert (decisions["action"] == "stop").sum() >= 1
    spawned = decisions[decisions["action"] == "spawn"]
    assert len(spawned) == 1
    planned = trials_table[trials_table["trial_id"] == spawned["trial_id"].iloc[0]]
    assert planned["config/strategy"].iloc[0] in DYNAMIC
    assert planned["epoch"].tolist() == list(range(1, EPOCHS + 1))
    written = pd.read_csv(path)
    assert written["action"].tolist() == decisions["action"].tolist()
    assert lines[-1] == (f"decisions: stopped={(decisions['action'] == 'stop').sum()} "
                         "rerouted=0 spawned=1")


def test_tune_run_stops_trials_and_spawns_a_planned_one(records, tmp_path):
    lines = []
    searcher, scheduler, callback = components(records, lines)
    tune.run(make_replay_trainable(records), metric="val_error", mode="min",
             search_alg=searcher, scheduler=scheduler, num_samples=-1, callbacks=[callback],
             storage_path=str(tmp_path), name="run", verbose=0, reuse_actors=True,
             resources_per_trial={"cpu": 0.5}, raise_on_failed_trial=False)
    table = records_from_ray_dir(tmp_path / "run")
    check_stops_and_spawns(scheduler.decisions, table, tmp_path / "run" / "decisions.csv",
                           lines)
    # every stopped trial ran fewer epochs than its budget, every other one all of them
    stopped = set(scheduler.decisions.query("action == 'stop'")["trial_id"])
    epochs = table.groupby("trial_id")["epoch"].max()
    assert all(epochs[t] < EPOCHS for t in stopped)
    assert all(epochs[t] == EPOCHS for t in set(epochs.index) - stopped)


def failing_once(trainable, marker: Path, fail_at: int, when):
    """``trainable`` raising right after reporting epoch ``fail_at`` the first time ``when``
    (config) holds; the marker file remembers across retries and restores. Each start is
    logged to ``starts.jsonl`` next to the marker."""

    def flaky(config):
        with open(marker.parent / "starts.jsonl", "a") as handle:
            handle.write(json.dumps({"batch_size": config["batch_size"],
                                     "lr": config.get("lr")}) + "\n")
        original = tune.report

        def report_then_fail(metrics, checkpoint=None):
            original(metrics, checkpoint=checkpoint)
            if metrics["epoch"] == fail_at and when(config) and not marker.exists():
                marker.write_text("failed once")
                raise RuntimeError("injected failure")

        tune.report = report_then_fail  # this worker's ray.tune, for this trial only
        try:
            trainable(config)
        finally:
            tune.report = original

    return flaky


def test_tuner_run_then_restore_after_an_interruption(records, tmp_path):
    lines = []
    searcher, scheduler, callback = components(records, lines)
    victim = {"lr": 0.01, "batch_size": 512}
    flaky = failing_once(make_replay_trainable(records), tmp_path / "failed", 3,
                         lambda c: c["batch_size"] == 512 and c["lr"] == 0.01)
    tuner = tune.Tuner(
        tune.with_resources(flaky, {"cpu": 0.5}),
        tune_config=tune.TuneConfig(metric="val_error", mode="min", search_alg=searcher,
                                    scheduler=scheduler, num_samples=-1, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="tuner", verbose=0,
                                  callbacks=[callback],
                                  failure_config=tune.FailureConfig(max_failures=0)))
    first = tuner.fit()
    assert len(first.errors) == 1  # the victim, interrupted at epoch 3
    before = pd.read_csv(tmp_path / "tuner" / "decisions.csv")
    assert (before["action"] == "spawn").sum() == 1

    restored = tune.Tuner.restore(str(tmp_path / "tuner"), trainable=tune.with_resources(
        flaky, {"cpu": 0.5}), resume_errored=True)
    second = restored.fit()
    assert not second.errors
    table = records_from_ray_dir(tmp_path / "tuner")
    check_stops_and_spawns(pd.read_csv(tmp_path / "tuner" / "decisions.csv"), table,
                           tmp_path / "tuner" / "decisions.csv", lines)
    # the searcher's history came back: the first run's decisions are kept, none repeated
    after = pd.read_csv(tmp_path / "tuner" / "decisions.csv")
    pd.testing.assert_frame_equal(after.iloc[:len(before)], before)
    # the victim resumed from its checkpoint: every epoch reported once, all ten
    victim_rows = table[(table["config/lr"] == victim["lr"])
                        & (table["config/batch_size"] == victim["batch_size"])]
    assert victim_rows["epoch"].tolist() == list(range(1, EPOCHS + 1))
    # finished trials were not run again: only the victim started twice
    starts = pd.read_json(tmp_path / "starts.jsonl", lines=True)
    counts = starts.groupby(["lr", "batch_size"]).size()
    assert counts[(victim["lr"], victim["batch_size"])] == 2
    assert (counts.drop((victim["lr"], victim["batch_size"])) == 1).all()


class RerouteToLarge:
    """A planner that reroutes any running trial to 256 for its remaining epochs."""

    def region(self, table, metric):
        return "region"

    def reroute(self, finished, region, rows, config):
        done = rows["batch_size"].astype(int).tolist()
        course = done + [256] * (int(config["epochs"]) - len(done))
        spec = "[" + ",".join(map(str, course)) + "]"
        return RerouteOption(spec, course[0], (1.0, 1.0), 1.0, False, (1.0, 1.0), 0.0, True,
                             0.0)


@pytest.fixture(scope="module")
def nqm_run(tmp_path_factory):
    """Three NQM trials one after another: the first fails once after epoch 3 (retried from
    its checkpoint), the third is rerouted at a quarter of its budget."""
    folder = tmp_path_factory.mktemp("nqm")
    flaky = failing_once(make_trainable(**NQM), folder / "failed", 3,
                         lambda c: c["batch_size"] == 32)
    scheduler = MeasureScheduler(planner=RerouteToLarge(), min_finished=2,
                                 reroute_fraction=0.25, grace_fraction=0.9)
    grid = [{"batch_size": b, "epochs": 8} for b in (32, 64, 128)]
    analysis = tune.run(
        flaky, metric="val_error", mode="min", scheduler=scheduler,
        search_alg=DynamicSamplingSearcher(grid, max_planned=0, history=scheduler.history),
        num_samples=-1, max_concurrent_trials=1, max_failures=1, storage_path=str(folder),
        name="nqm", verbose=0, resources_per_trial={"cpu": 1}, reuse_actors=True)
    return analysis, scheduler, records_from_ray_dir(folder / "nqm")


def test_rerouted_trial_resumes_from_its_checkpoint_under_the_new_schedule(nqm_run):
    analysis, scheduler, table = nqm_run
    reroutes = scheduler.decisions.query("action == 'reroute'")
    assert len(reroutes) == 1
    trial_id = reroutes["trial_id"].iloc[0]
    rows = table[table["trial_id"] == trial_id]
    assert rows["epoch"].tolist() == list(range(1, 9))
    assert rows["batch_size"].tolist() == [128, 128] + [256] * 6
    assert rows["config/strategy"].iloc[0] == "[128,128,256,256,256,256,256,256]"
    # the same numbers as the new schedule run straight through (NQM: exact)
    straight = run_trial(TrialConfig(**{**NQM, "batch_size": 128,
                                        "strategy": rows["config/strategy"].iloc[0]}))
    assert rows["test_error"].tolist() == pytest.approx(straight["test_error"].tolist())


def test_failed_trial_is_retried_from_its_last_checkpoint(nqm_run):
    analysis, scheduler, table = nqm_run
    trial = next(t for t in analysis.trials if t.config["batch_size"] == 32)
    assert trial.status == "TERMINATED" and trial.run_metadata.num_failures == 1
    seen = scheduler.history.frame(trial.trial_id)  # every result Ray passed on
    assert seen["epoch"].tolist() == list(range(1, 9))
    straight = run_trial(TrialConfig(**{**NQM, "batch_size": 32}))
    assert seen["test_error"].tolist() == pytest.approx(straight["test_error"].tolist())
    # restored at epoch 3: the iteration count goes on, the count since restore starts again
    frame = pd.read_json(Path(trial.path) / "result.json", lines=True)
    after = frame[frame["epoch"] > 3]
    assert after["training_iteration"].tolist() == [4, 5, 6, 7, 8]
    assert after["iterations_since_restore"].tolist() == [1, 2, 3, 4, 5]
