"""DynamicSamplingSearcher on scripted results (no Ray cluster): beacons first, waiting, planned
trials from plan_schedule, FINISHED, state round trips; the history it owns."""

import math

import pandas as pd
import pytest
from ray import tune
from ray.tune.search import Searcher

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.predict import OptimumRegion, plan_schedule
from tune_batchdyn.predict.synthetic import synthetic_records
from tune_batchdyn.tune import DynamicSamplingSearcher, Planner, TrialHistory, expand_grid

EPOCHS = 10


@pytest.fixture(scope="module")
def records():
    return synthetic_records(n_configs=12, n_seeds=1, epochs=EPOCHS, seed=7, diverging=0.0)


def grid_of(records):
    first = records.groupby("trial_id", sort=False).first()
    return [{"strategy": "fixed", "lr": float(r["config/lr"]),
             "batch_size": int(r["config/batch_size"]), "seed": int(r["config/seed"]),
             "epochs": EPOCHS} for _, r in first.iterrows()], list(first.index)


def play(searcher, trial_id, rows, upto=None):
    """Feed a trial's recorded rows as Ray results (flattened config, as searchers get them)."""
    rows = rows.to_dict("records")[:upto]
    for row in rows:
        config = {k: v for k, v in row.items() if k.startswith("config/")}
        searcher.on_trial_result(trial_id, {**{k: row[k] for k in row
                                               if not k.startswith("config/")}, **config})
    return rows[-1]


def test_expand_grid_crosses_grid_search_entries_in_order():
    space = {"lr": tune.grid_search([0.1, 0.2]), "batch_size": tune.grid_search([32, 64]),
             "epochs": 5, "dataset_options": {"dim": tune.grid_search([10, 20])}}
    configs = expand_grid(space)
    assert len(configs) == 8
    assert configs[0] == {"lr": 0.1, "batch_size": 32, "epochs": 5, "dataset_options": {"dim": 10}}
    assert configs[1]["dataset_options"] == {"dim": 20} and configs[1]["batch_size"] == 32
    assert configs[-1] == {"lr": 0.2, "batch_size": 64, "epochs": 5,
                           "dataset_options": {"dim": 20}}


def test_expand_grid_repeats_the_grid_and_draws_sampled_fields_per_config():
    """As Ray's BasicVariantGenerator: the grid num_samples times, each sampling domain drawn
    per config (seeded, so a rebuilt searcher suggests the same trials)."""
    space = {"batch_size": tune.grid_search([32, 64]), "lr": tune.loguniform(0.05, 0.2),
             "strategy": tune.choice(["fixed", "gg"]), "epochs": 5}
    configs = expand_grid(space, num_samples=3)
    assert [c["batch_size"] for c in configs] == [32, 64] * 3
    rates = [c["lr"] for c in configs]
    assert all(0.05 <= lr <= 0.2 for lr in rates) and len(set(rates)) == 6
    assert {c["strategy"] for c in configs} <= {"fixed", "gg"}
    assert expand_grid(space, num_samples=3) == configs
    assert expand_grid(space, num_samples=3, seed=1) != configs
    with pytest.raises(ConfigError, match="num_samples=0 is not accepted"):
        expand_grid(space, num_samples=0)


def test_beacons_then_wait_then_a_planned_trial_then_finished(records):
    grid, ids = grid_of(records)
    searcher = DynamicSamplingSearcher(grid, metric="val_error", mode="min", max_planned=1,
                                       min_beacons=len(grid))
    suggested = [searcher.suggest(f"t{i}") for i in range(len(grid))]
    assert suggested == grid
    for i, trial_id in enumerate(ids[:-1]):
        last = play(searcher, f"t{i}", records[records["trial_id"] == trial_id])
        searcher.on_trial_complete(f"t{i}", last)
    # one beacon still running and fewer than min_beacons finished: wait
    play(searcher, f"t{len(ids) - 1}", records[records["trial_id"] == ids[-1]], upto=3)
    assert searcher.suggest("p0") is None
    last = play(searcher, f"t{len(ids) - 1}", records[records["trial_id"] == ids[-1]])
    searcher.on_trial_complete(f"t{len(ids) - 1}", last)
    planned = searcher.suggest("p0")
    # the reference: plan_schedule on the same records, at the best beacon lr first
    region = OptimumRegion(tolerance=0.01, target="final_val_error").fit(records)
    plans = [plan_schedule(records, region, lr=lr) for lr in sorted(records["config/lr"].unique())]
    best = min((p for p in plans if p.schedule != "fixed"),
               key=lambda p: (p.predicted_error, p.distance))
    assert (planned["strategy"], planned["batch_size"], planned["lr"]) == (
        best.schedule, best.batch_size, best.lr)
    best_beacon = records.groupby("trial_id")["final_val_error"].first().idxmin()
    assert planned["seed"] == grid[ids.index(best_beacon)]["seed"]
    assert searcher.suggest("p1") == Searcher.FINISHED
    decisions = searcher.history.decisions.frame()
    assert decisions["action"].tolist() == ["spawn"]
    assert decisions["predicted_error"].iloc[0] == pytest.approx(best.predicted_error)


def test_records_without_the_plane_never_plan(records):
    flat = records.assign(ck_bar=math.nan)  # as NQM trials report
    grid, ids = grid_of(flat)
    searcher = DynamicSamplingSearcher(grid, max_planned=2, min_beacons=2)
    for i in range(len(grid)):
        searcher.suggest(f"t{i}")
    for i, trial_id in enumerate(ids[:3]):
        searcher.on_trial_complete(f"t{i}", play(searcher, f"t{i}", flat[flat["trial_id"]
                                                                          == trial_id]))
    assert searcher.suggest("p0") is None  # beacons still running: maybe later
    for i, trial_id in enumerate(ids[3:], start=3):
        searcher.on_trial_complete(f"t{i}", play(searcher, f"t{i}", flat[flat["trial_id"]
                                                                          == trial_id]))
    assert searcher.suggest("p0") == Searcher.FINISHED
    assert len(searcher.history.decisions) == 0


def test_state_round_trip_resumes_where_it_stopped(records, tmp_path):
    grid, ids = grid_of(records)
    searcher = DynamicSamplingSearcher(grid, max_planned=2, min_beacons=3)
    for i in range(4):
        searcher.suggest(f"t{i}")
    last = play(searcher, "t0", records[records["trial_id"] == ids[0]])
    searcher.on_trial_complete("t0", last)
    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))

    history = TrialHistory()
    restored = DynamicSamplingSearcher(grid, max_planned=2, min_beacons=3, history=history)
    restored.restore(str(path))
    assert restored.history is history  # restored in place: a scheduler's reference holds
    assert restored.suggest("t4") == grid[4]
    assert history.status("t0") == "finished" and history.status("t1") == "running"
    pd.testing.assert_frame_equal(history.table(), searcher.history.table())
    assert restored.get_state()["position"] == 5


class ScriptedSearcher(Searcher):
    """Suggests the configs it was given, then FINISHED; remembers what it was told."""

    def __init__(self, configs):
        super().__init__(metric="val_error", mode="min")
        self.configs = list(configs)
        self.results: list[str] = []

    def suggest(self, trial_id):
        return self.configs.pop(0) if self.configs else Searcher.FINISHED

    def on_trial_result(self, trial_id, result):
        self.results.append(trial_id)

    def save(self, checkpoint_path):
        pd.to_pickle({"configs": self.configs, "results": self.results}, checkpoint_path)

    def restore(self, checkpoint_path):
        state = pd.read_pickle(checkpoint_path)
        self.configs, self.results = state["configs"], state["results"]


def test_a_ray_searcher_as_base_is_driven_and_saved(records, tmp_path):
    grid, ids = grid_of(records)
    searcher = DynamicSamplingSearcher(ScriptedSearcher(grid[:2]), max_planned=0)
    assert searcher.suggest("a") == grid[0]
    play(searcher, "a", records[records["trial_id"] == ids[0]], upto=2)
    assert searcher.base.results == ["a", "a"]
    searcher.save(str(tmp_path / "s.pkl"))
    fresh = DynamicSamplingSearcher(ScriptedSearcher(grid), max_planned=0)
    fresh.restore(str(tmp_path / "s.pkl"))
    assert fresh.base.configs == grid[1:2] and fresh.suggest("b") == grid[1]
    assert fresh.suggest("c") == Searcher.FINISHED  # base done, max_planned=0


def test_bad_arguments_say_what_is_accepted():
    with pytest.raises(ConfigError, match="base=int is not accepted"):
        DynamicSamplingSearcher(3)
    with pytest.raises(ConfigError, match="max_planned=-1"):
        DynamicSamplingSearcher([{"lr": 0.1}], max_planned=-1)
    for mode in ("max", "maximize"):
        with pytest.raises(ConfigError, match=f"mode='{mode}' is not accepted"):
            DynamicSamplingSearcher([{"lr": 0.1}], mode=mode)
    searcher = DynamicSamplingSearcher([{"lr": 0.1}])
    with pytest.raises(ConfigError, match="mode='max' is not accepted"):
        searcher.set_search_properties("val_error", "max", {})
    with pytest.raises(ConfigError, match="a Tuner param_space .* got keys \\['lr'\\]"):
        searcher.set_search_properties("val_error", "min", {"lr": tune.grid_search([0.1])})
    with pytest.raises(ConfigError, match="the base holds no config"):
        DynamicSamplingSearcher([])
    with pytest.raises(ConfigError, match=r"config 1 .* unknown key\(s\) \['batchsize'\]"):
        DynamicSamplingSearcher([{"lr": 0.1}, {"batchsize": 32}])
    with pytest.raises(ConfigError, match="config 0: batch_size=0 is not accepted"):
        DynamicSamplingSearcher({"batch_size": tune.grid_search([0, 32])})
    with pytest.raises(ConfigError, match="beacon_sizes=8 is not accepted"):
        DynamicSamplingSearcher([{"lr": 0.1}], beacon_sizes=8)
    with pytest.raises(ConfigError, match="base_trials=0 is not accepted"):
        DynamicSamplingSearcher(ScriptedSearcher([]), base_trials=0)


def test_a_base_searcher_that_never_finishes_hands_over_after_base_trials(records):
    grid, ids = grid_of(records)
    endless = ScriptedSearcher(grid * 10)
    searcher = DynamicSamplingSearcher(endless, max_planned=0, base_trials=2)
    assert searcher.max_trials == 2
    assert [searcher.suggest(t) for t in ("a", "b")] == grid[:2]
    assert searcher.suggest("c") == Searcher.FINISHED  # the base's turn is over (no plans)
    assert len(endless.configs) == 10 * len(grid) - 2


def test_planner_spawn_plans_are_dynamic_and_ordered(records):
    planner = Planner()
    region = planner.region(records, "val_error")
    plans = planner.spawn_plans(records, region)
    assert plans and all(p.schedule != "fixed" for p in plans)
    errors = [p.predicted_error for p in plans]
    assert errors == sorted(errors)


def test_beacons_run_first_and_are_tagged_the_rest_is_grid():
    grid = expand_grid({"lr": tune.grid_search([0.05, 0.1]), "batch_size": tune.grid_search(
        [8, 32, 128]), "strategy": "fixed", "epochs": 4})
    searcher = DynamicSamplingSearcher(grid, beacon_lr=0.1, beacon_sizes=[8, 128])
    suggested = [searcher.suggest(f"t{i}") for i in range(len(grid))]
    assert [(c["lr"], c["batch_size"]) for c in suggested] == [
        (0.1, 8), (0.1, 128), (0.05, 8), (0.05, 32), (0.05, 128), (0.1, 32)]
    assert [searcher.history.origin(f"t{i}") for i in range(len(grid))] == (
        ["beacon"] * 2 + ["grid"] * 4)
    everything = DynamicSamplingSearcher(grid)  # no beacons named: none protected
    assert not any(everything.is_beacon(c) for c in grid)
    with pytest.raises(ConfigError, match="beacon_lr=0 is not accepted"):
        DynamicSamplingSearcher(grid, beacon_lr=0)
    with pytest.raises(ConfigError, match="beacon_sizes="):
        DynamicSamplingSearcher(grid, beacon_sizes=[8.5])


def test_max_trials_is_the_grid_plus_the_plans():
    from ray import tune

    from tune_batchdyn.tune import DynamicSamplingSearcher

    grid = {"lr": tune.grid_search([0.05, 0.1]), "batch_size": tune.grid_search([8, 32, 128])}
    assert DynamicSamplingSearcher(grid, max_planned=4).max_trials == 10
    assert DynamicSamplingSearcher([{"lr": 0.1}], max_planned=0).max_trials == 1
