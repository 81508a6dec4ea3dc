"""Planner: the region, spawn plans and reroute options it builds on predict.plan_schedule."""


import numpy as np
import pytest

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.predict import OptimumRegion, plan_schedule
from tune_batchdyn.predict.synthetic import synthetic_records
from tune_batchdyn.tune import Planner
from tune_batchdyn.tune.planning import current_course, lr_recipe

EPOCHS = 10


@pytest.fixture(scope="module")
def records():
    return synthetic_records(n_configs=18, n_seeds=2, epochs=EPOCHS, seed=2, diverging=0.0)


def running(records, trial_id, epochs_done):
    rows = records[records["trial_id"] == trial_id].iloc[:epochs_done]
    config = {"strategy": "fixed", "lr": float(rows["config/lr"].iloc[0]),
              "batch_size": int(rows["config/batch_size"].iloc[0]), "epochs": EPOCHS}
    return rows, config


def test_reroute_keeps_the_epochs_done_and_places_the_current_course_like_plan_schedule(
        records):
    planner = Planner()
    trial_id = records["trial_id"].unique()[4]  # its other seed is a beacon for its course
    finished = records[records["trial_id"] != trial_id]
    region = planner.region(finished, "val_error")
    rows, config = running(records, trial_id, 3)
    option = planner.reroute(finished, region, rows, config)
    done = rows["batch_size"].astype(int).tolist()
    # every course starts with the epochs already trained
    assert option.schedule == "fixed" or option.schedule.startswith(
        "[" + ",".join(map(str, done)))
    # the current course, planned alone from the trial's position, lands where the option says
    alone = plan_schedule(finished, region, lr=config["lr"],
                          candidates=[[config["batch_size"]] * EPOCHS], start=rows)
    assert option.current_point == pytest.approx(alone.point)
    assert option.current_in_region == region.contains(alone.point)
    assert option.planned_in_region == region.contains(option.planned_point)
    assert option.worthwhile == (not option.current_in_region and option.planned_in_region)
    assert option.planned_distance <= option.current_distance + planner.tie_tolerance


def test_current_course_of_fixed_and_staged_trials():
    assert current_course({"strategy": "fixed", "batch_size": 64}, 4, (0.5, 0.75)) == [64] * 4
    assert current_course({"strategy": "s32-to-512", "batch_size": 32}, 10, (0.5, 0.75)) == [
        32, 32, 64, 64, 128, 128, 256, 256, 512, 512]
    with pytest.raises(ConfigError, match="not a staged schedule"):
        current_course({"strategy": {"name": "abs"}, "batch_size": 32}, 10, (0.5, 0.75))


def test_lr_recipe_is_read_from_the_configs(records):
    assert lr_recipe(records) == ((0.5, 0.75), 10.0)
    custom = records.assign(**{"config/lr_milestones": "[0.3, 0.6, 0.9]",
                               "config/lr_decay_factor": 5.0})
    assert lr_recipe(custom) == ((0.3, 0.6, 0.9), 5.0)


def test_a_course_without_beacons_cannot_be_placed(records):
    planner = Planner()
    rows, config = running(records, records["trial_id"].unique()[4], 3)
    same_size = records[records["config/batch_size"] == config["batch_size"]]["trial_id"]
    finished = records[~records["trial_id"].isin(set(same_size))]
    message = rf"no beacon holds the batch sizes \[{config['batch_size']}\]"
    with pytest.raises(ConfigError, match=message):
        planner.reroute(finished, planner.region(finished, "val_error"), rows, config)


def test_a_trial_whose_lr_has_only_its_own_beacon_reads_the_others_from_the_lrs_around(
        records):
    planner = Planner()
    trial_id = records["trial_id"].unique()[4]
    rows, config = running(records, trial_id, 3)
    lr, size = config["lr"], config["batch_size"]
    alone = records[(records["config/lr"] == lr) & (records["config/batch_size"] != size)]
    finished = records[~records["trial_id"].isin(set(alone["trial_id"]) | {trial_id})]
    region = planner.region(finished, "val_error")
    option = planner.reroute(finished, region, rows, config)
    # the current course reads the trial's own lr; a switch reads other sizes from around it
    current = plan_schedule(finished, region, lr=lr, candidates=[[size] * EPOCHS], start=rows)
    assert current.reads == f"{size}@{lr:g}"
    assert option.current_point == pytest.approx(current.point)
    assert option.schedule != "fixed"  # the region is elsewhere: a switch reads other lrs
    assert option.current_reads == f"{size}@{lr:g}"
    assert any(not read.endswith(f"@{lr:g}") for read in option.planned_reads.split())
    assert option.planned_distance <= option.current_distance + 0.05


def test_region_and_plans_need_the_plane(records):
    planner = Planner()
    with pytest.raises(ConfigError, match="finite C̄K and LK"):
        planner.region(records.assign(ck_bar=float("nan")), "val_error")
    region = planner.region(records, "val_error")
    assert isinstance(region, OptimumRegion)
    assert region.threshold_ == pytest.approx(region.best_error_ + 0.01)


def test_few_finished_trials_average_at_most_half_of_them(records):
    planner = Planner(region_k=5)
    ids = records["trial_id"].unique()
    assert planner.region(records[records["trial_id"].isin(ids[:5])], "val_error").k == 2
    assert planner.region(records[records["trial_id"].isin(ids[:11])], "val_error").k == 5
    # with k trials the k-nearest map would be flat: every trial's point in the region
    flat = OptimumRegion(k=5, tolerance=0.01, target="final_val_error").fit(
        records[records["trial_id"].isin(ids[:5])])
    half = planner.region(records[records["trial_id"].isin(ids[:5])], "val_error")
    assert all(flat.contains(tuple(p)) for p in np.exp(flat.points_))
    assert not all(half.contains(tuple(p)) for p in np.exp(half.points_))


@pytest.mark.parametrize("settings, message", [
    ({"region_k": 0}, r"Planner: region_k=0 is not accepted; use a positive integer"),
    ({"region_fraction": 1.5}, r"Planner: region_fraction=1.5 is not accepted; use a number in "
                               r"\(0, 1\]"),
    ({"region_tolerance": -0.1}, r"Planner: region_tolerance=-0.1 is not accepted"),
    ({"tie_tolerance": "x"}, r"Planner: tie_tolerance='x' is not accepted; use a number >= 0"),
    ({"lrs": [0.1, -1]}, r"Planner: lrs=\[0.1, -1\] is not accepted; use positive numbers"),
    ({"candidates": []}, r"Planner: candidates=\[\] is not accepted"),
    ({"candidates": ["s32-to-512", "s32-512"]}, r"Planner: candidates: schedule='s32-512' is "
                                                r"not accepted; use one of"),
])
def test_bad_settings_fail_at_construction_naming_the_setting(settings, message):
    with pytest.raises(ConfigError, match=message):
        Planner(**settings)


def test_settings_given_as_iterators_are_kept():
    planner = Planner(candidates=iter(["s32-to-512"]), lrs=(lr for lr in (0.1, 0.2)))
    assert planner.candidates == ["s32-to-512"] and planner.lrs == [0.1, 0.2]
