"""End to end on real digits training (not replays), one local Ray session with 2 CPUs:
``tune.run`` and ``tune.Tuner`` with MeasureScheduler + DynamicSamplingSearcher stop at least
one trial and spawn a planned dynamic-sampling trial that really trains its schedule."""


import pytest

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402

from tune_batchdyn.records import records_from_ray_dir  # noqa: E402
from tune_batchdyn.tune import (  # noqa: E402
    DecisionsCallback,
    DynamicSamplingSearcher,
    MeasureScheduler,
    make_trainable,
)

EPOCHS = 3
#: lr 0.8 diverges on digits (a stop at once); the beacons are the lr 0.1 trials.
GRID = {"lr": tune.grid_search([0.05, 0.1, 0.8]), "batch_size": tune.grid_search([32, 128, 512]),
        "epochs": EPOCHS, "measure_every": 5, "measures": ["fisher"], "seed": 0}


pytestmark = pytest.mark.usefixtures("ray_session")  # tests/conftest.py


def components(lines):
    searcher = DynamicSamplingSearcher(GRID, max_planned=1, min_beacons=3, beacon_lr=0.1)
    scheduler = MeasureScheduler(history=searcher.history, min_finished=3)
    return searcher, scheduler, DecisionsCallback(scheduler, echo=lines.append)


def check(scheduler, experiment, lines):
    decisions = scheduler.decisions
    stopped = decisions[decisions["action"] == "stop"]
    spawned = decisions[decisions["action"] == "spawn"]
    assert len(stopped) >= 1 and len(spawned) == 1
    assert lines[-1].startswith(f"decisions: stopped={len(stopped)} ")
    records = records_from_ray_dir(experiment)
    planned = records[records["trial_id"] == spawned["trial_id"].iloc[0]]
    strategy = planned["config/strategy"].iloc[0]
    assert strategy != "fixed"
    # the planned trial trained all its epochs, at more than one batch size (its schedule)
    assert planned["epoch"].tolist() == list(range(1, EPOCHS + 1))
    assert planned["batch_size"].nunique() > 1
    # the beacons (lr 0.1) are never stopped by prediction, and they finish
    beacons = records[(records["config/lr"] == 0.1) & (records["config/strategy"] == "fixed")]
    assert beacons.groupby("trial_id")["epoch"].max().eq(EPOCHS).all()


def test_tune_run_on_digits_stops_and_spawns(tmp_path):
    lines = []
    searcher, scheduler, callback = components(lines)
    tune.run(tune.with_resources(make_trainable(dataset="digits", model="mlp"), {"cpu": 1}),
             metric="val_error", mode="min", search_alg=searcher, scheduler=scheduler,
             num_samples=-1, callbacks=[callback], storage_path=str(tmp_path), name="run",
             verbose=0, reuse_actors=True, raise_on_failed_trial=False)
    check(scheduler, tmp_path / "run", lines)


def test_tuner_on_digits_stops_and_spawns(tmp_path):
    lines = []
    searcher, scheduler, callback = components(lines)
    tuner = tune.Tuner(
        tune.with_resources(make_trainable(dataset="digits", model="mlp"), {"cpu": 1}),
        tune_config=tune.TuneConfig(metric="val_error", mode="min", search_alg=searcher,
                                    scheduler=scheduler, num_samples=-1, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="tuner", verbose=0,
                                  callbacks=[callback]))
    tuner.fit()
    check(scheduler, tmp_path / "tuner", lines)
