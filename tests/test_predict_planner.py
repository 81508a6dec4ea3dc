"""The schedule planner: composition of beacon increments (hand computations), the choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.predict import (
    FinalErrorPredictor,
    OptimumRegion,
    beacons_from_records,
    compose,
    epoch_batch_sizes,
    parse_schedule,
    plan_schedule,
)
from tune_batchdyn.predict.synthetic import synthetic_records
from tune_batchdyn.records import empty_record, trial_table


def _beacon(batch: int, iterations, ck_bar, lk, *, lr: float = 0.1, seed: int = 0):
    rows = []
    for e, (i, c, l_value) in enumerate(zip(iterations, ck_bar, lk, strict=True), start=1):
        rows.append({**empty_record(), "epoch": e, "iterations": i, "samples_seen": 64 * e,
                     "batch_size": batch, "lr": lr, "ck_bar": c, "lk": l_value,
                     "test_error": 0.1, "val_error": 0.1})
    config = {"strategy": "fixed", "lr": lr, "batch_size": batch, "epochs": len(rows),
              "measure_every": 2, "seed": seed}
    return trial_table(f"b{batch}-lr{lr}-s{seed}", config, pd.DataFrame(rows))


def _toy_beacons(lr: float = 0.1) -> pd.DataFrame:
    # measure_every = 2: B=16 takes 4 iterations per epoch (M = 2, 4), B=32 two (M = 1, 2)
    return pd.concat([_beacon(16, [4, 8], [3.0, 4.0], [1.0, 1.5], lr=lr),
                      _beacon(32, [2, 4], [5.0, 7.0], [0.4, 0.6], lr=lr)], ignore_index=True)


def test_two_stage_composition_by_hand():
    beacons = beacons_from_records(_toy_beacons())
    assert beacons.epochs == 2 and beacons.measure_every == 2
    path = compose(beacons.at_lr(0.1), np.array([16, 32]), 2)
    # epoch 1 at B=16: 4 iterations, measurements at iterations 1, 3 (c mean 3); LK 1.0
    # epoch 2 at B=32: 2 more iterations (6 in all, measurement at 5), c = the B=32 beacon's
    # epoch-2 measurement: S = 7*2 - 5*1 = 9; LK += 0.6 - 0.4
    np.testing.assert_allclose(path["iterations"], [0, 4, 6])
    np.testing.assert_allclose(path["measurements"], [0, 2, 3])
    np.testing.assert_allclose(path["lk"], [0, 1.0, 1.2])
    np.testing.assert_allclose(path["ck_bar"][1:], [3.0, (3 + 3 + 9) / 3])


def test_reverse_composition_by_hand():
    beacons = beacons_from_records(_toy_beacons())
    path = compose(beacons.at_lr(0.1), np.array([32, 16]), 2)
    # epoch 1 at 32: 2 iterations, 1 measurement, c = 5. Epoch 2 at 16: iterations 3..6,
    # measurements at 3, 5 (M 1 -> 3); the B=16 beacon's epoch-2 mean c = (4*4 - 3*2)/2 = 5.
    np.testing.assert_allclose(path["measurements"], [0, 1, 3])
    np.testing.assert_allclose(path["ck_bar"][1:], [5.0, 5.0])
    np.testing.assert_allclose(path["lk"], [0, 0.4, 0.9])


def test_one_stage_plan_reproduces_its_beacon():
    records = synthetic_records(n_configs=6, n_seeds=2, epochs=10, diverging=0.0, seed=3)
    beacons = beacons_from_records(records)
    for (lr, batch), beacon in beacons.beacons.items():
        path = compose(beacons.at_lr(lr), np.full(10, batch), beacons.measure_every)
        np.testing.assert_allclose(path["ck_bar"][1:], beacon.ck_bar[1:], rtol=1e-12)
        np.testing.assert_allclose(path["lk"], beacon.lk, rtol=1e-12)


def test_plan_picks_the_candidate_nearest_the_target():
    plan = plan_schedule(_toy_beacons(), (5.0, 1.1),
                         candidates=[[16, 32], [32, 16], [16], [32]])
    # ends: 16->32 (5, 1.2), 32->16 (5, 0.9), 16 (4, 1.5), 32 (7, 0.6); target (5, 1.1)
    assert plan.schedule == "[16,32]" and plan.batch_size == 16
    assert plan.batch_sizes == (16, 32)
    np.testing.assert_allclose(plan.end, (5.0, 1.2))
    assert plan.distance == pytest.approx(abs(np.log(1.2 / 1.1)))
    assert plan.iterations == 6
    assert plan.path["lk"].tolist() == pytest.approx([1.0, 1.2])
    assert list(plan.candidates["schedule"])[:2] == ["[16,32]", "[32,16]"]
    assert np.isnan(plan.predicted_error)


def test_near_ties_go_to_fewer_updates():
    plan = plan_schedule(_toy_beacons(), (5.0, 1.1), candidates=[[16, 32], [32, 16], [16], [32]],
                         tie_tolerance=10.0)
    assert plan.schedule == "fixed" and plan.batch_size == 32 and plan.iterations == 4


def test_an_lr_beyond_the_beacons_scales_the_nearest_lrs_lk_increments():
    beacons = pd.concat([_toy_beacons(0.1), _toy_beacons(0.4)], ignore_index=True)
    with pytest.raises(ConfigError, match="learning rates"):
        plan_schedule(beacons, (5.0, 1.1), candidates=[[16, 32]])
    plan = plan_schedule(beacons, (5.0, 1.1), lr=0.05, candidates=[[16, 32]])
    assert plan.reads == "16@0.1 32@0.1" and plan.lr == 0.05  # nearest in log scale
    np.testing.assert_allclose(plan.end, (5.0, 1.2 * 0.5))  # LK x lr / beacon lr, C̄K as is
    assert plan.path["lr"].tolist() == [0.05, 0.005]  # milestone 0.5 of 2 epochs: epoch 1


def test_an_lr_between_beacons_interpolates_them_in_log_scale():
    low = _toy_beacons(0.1)
    high = _toy_beacons(0.4).assign(ck_bar=lambda t: 4 * t["ck_bar"], lk=lambda t: 9 * t["lk"])
    beacons = pd.concat([low, high], ignore_index=True)
    at_low = plan_schedule(low, (5.0, 1.1), candidates=[[16, 32]])
    plan = plan_schedule(beacons, (5.0, 1.1), lr=0.2, candidates=[[16, 32]])
    # 0.2 is halfway between 0.1 and 0.4 in ln lr: C̄K x sqrt(4), LK x sqrt(9) every epoch
    assert plan.reads == "16@0.1~0.4 32@0.1~0.4"
    np.testing.assert_allclose(plan.end, (2 * at_low.end[0], 3 * at_low.end[1]))
    own = plan_schedule(beacons, (5.0, 1.1), lr=0.4, candidates=[[16, 32]])
    assert own.reads == "16@0.4 32@0.4"
    np.testing.assert_allclose(own.end, (4 * at_low.end[0], 9 * at_low.end[1]))


def test_each_batch_size_reads_its_own_beacon_where_the_lr_has_one():
    beacons = pd.concat([_toy_beacons(0.1),
                         _beacon(16, [4, 8], [12.0, 16.0], [4.0, 6.0], lr=0.4)],
                        ignore_index=True)
    plan = plan_schedule(beacons, (5.0, 1.1), lr=0.4, candidates=[[16, 32]])
    # batch 16 is 0.4's own beacon; batch 32 has one at 0.1 only: LK x 4
    assert plan.reads == "16@0.4 32@0.1"
    np.testing.assert_allclose(plan.path["lk"], [4.0, 4.0 + 4 * 0.2])


def test_a_running_trial_continues_from_its_measured_position_by_hand():
    # one epoch at batch 16 measured: 4 iterations (M = 2), C̄K 6 (c-sum 12), LK 2
    start = _beacon(16, [4], [6.0], [2.0])
    plan = plan_schedule(_toy_beacons(), (5.0, 1.1), start=start,
                         candidates=[[16, 16], [16, 32], [32, 32]])
    ends = plan.candidates.set_index("schedule")
    assert sorted(ends.index) == ["[16,32]", "fixed"]  # [32,32] does not begin with its 16
    # [16,16]: beacon 16's epoch 2 adds 2 measurements, c-sum 16 - 6, LK 0.5
    assert ends.loc["fixed", ["ck_bar", "lk"]].tolist() == pytest.approx([(12 + 10) / 4, 2.5])
    # [16,32]: beacon 32's epoch 2 (mean c 9) adds 1 measurement and LK 0.2
    assert ends.loc["[16,32]", ["ck_bar", "lk"]].tolist() == pytest.approx([(12 + 9) / 3, 2.2])
    assert plan.path["lk"].iloc[0] == 2.0
    with pytest.raises(ConfigError, match="measures over its 1 epochs are not all finite"):
        plan_schedule(_toy_beacons(), (5.0, 1.1), start=start.assign(ck_bar=np.nan))


def test_a_running_trial_is_read_in_epoch_order():
    beacons = _beacon(16, [4, 8, 12], [3.0, 4.0, 5.0], [1.0, 1.5, 2.0])
    start = _beacon(16, [4, 8], [6.0, 7.0], [2.0, 2.5])
    one = plan_schedule(beacons, (5.0, 1.1), start=start, candidates=[[16] * 3])
    other = plan_schedule(beacons, (5.0, 1.1), start=start.iloc[::-1], candidates=[[16] * 3])
    assert one.path["ck_bar"].tolist()[:2] == other.path["ck_bar"].tolist()[:2] == [6.0, 7.0]
    assert one.path["lk"].tolist() == other.path["lk"].tolist() == [2.0, 2.5, 3.0]


@pytest.mark.parametrize("change, message", [
    (lambda t: t.drop(columns="samples_seen"), "need the columns epoch, iterations, "
                                               "samples_seen, ck_bar, lk .*missing samples_seen"),
    (lambda t: t.iloc[:0], "no rows"),
    (lambda t: t.assign(epoch=[1, 3]), r"epochs \[1, 3\] are not 1..2"),
    (lambda t: pd.concat([t, t.assign(epoch=[3, 4])]), "has 4 epochs, the beacons 3"),
])
def test_a_running_trial_that_cannot_be_placed_is_named(change, message):
    beacons = _beacon(16, [4, 8, 12], [3.0, 4.0, 5.0], [1.0, 1.5, 2.0])
    start = change(_beacon(16, [4, 8], [6.0, 7.0], [2.0, 2.5]))
    with pytest.raises(ConfigError, match=message):
        plan_schedule(beacons, (5.0, 1.1), start=start, candidates=[[16] * 3])


def test_a_trial_that_collapsed_to_chance_is_no_beacon():
    # batch 8 at lr 0.1 on digits: loss 1.67 after epoch 1, then flat at ln 10 (not diverged)
    collapsed = _beacon(8, [4, 8], [3.0, 4.0], [1.0, 1.5]).assign(train_loss=[1.67, 2.303])
    learned = _toy_beacons().assign(train_loss=[1.0, 0.5, 1.0, 0.5])
    beacons = beacons_from_records(pd.concat([learned, collapsed], ignore_index=True))
    assert sorted(beacons.at_lr(0.1)) == [16, 32] and beacons.failed == {(0.1, 8)}
    with pytest.raises(ConfigError, match="that learned"):
        beacons_from_records(collapsed)


@pytest.mark.parametrize("loss, error", [
    ([3.547, 2.048], [0.445, 0.793]),  # digits batch 8 lr 0.1: a first epoch of loss 3.5
    ([2.385, 2.303], [0.90, 0.85]),  # synthetic: at chance from the start (3 SE = 0.11 at n=64)
])
def test_a_trial_whose_training_error_did_not_fall_is_no_beacon(loss, error):
    trial = _beacon(16, [4, 8], [3.0, 4.0], [1.0, 1.5]).assign(train_loss=loss,
                                                              train_error=error)
    with pytest.raises(ConfigError, match="that learned"):
        beacons_from_records(trial)
    slow = trial.assign(train_error=[0.90, 0.70])  # 5 standard errors: learning, slowly
    assert sorted(beacons_from_records(slow).at_lr(0.1)) == [16]
    fine_tuned = trial.assign(train_error=[0.01, 0.01])  # right from the first epoch
    assert sorted(beacons_from_records(fine_tuned).at_lr(0.1)) == [16]


def test_a_failed_seed_fails_its_configuration():
    other_seed = _beacon(16, [4, 8], [3.0, 4.0], [1.0, 1.5], seed=1).assign(diverged=[False, True])
    beacons = beacons_from_records(pd.concat([_toy_beacons(), other_seed], ignore_index=True))
    assert sorted(beacons.at_lr(0.1)) == [32] and beacons.failed == {(0.1, 16)}


def test_a_size_is_never_read_across_a_failed_configuration():
    diverged = _beacon(16, [4, 8], [3.0, 4.0], [1.0, 1.5], lr=0.2).assign(diverged=True)
    beacons = pd.concat([_toy_beacons(0.1), _toy_beacons(0.4), diverged], ignore_index=True)
    # batch 16 at lr 0.3 reads 0.4 only (0.1 lies across the failure at 0.2); 32 interpolates
    assert plan_schedule(beacons, (5.0, 1.1), lr=0.3, candidates=[[16, 32]]).reads == (
        "16@0.4 32@0.1~0.4")
    # at lr 0.2 itself batch 16 has no beacon: no candidate uses it
    plan = plan_schedule(beacons, (5.0, 1.1), lr=0.2, candidates=[[16, 32], [32, 32]])
    assert plan.schedule == "fixed" and plan.reads == "32@0.1~0.4"


def test_candidates_without_beacons_are_skipped():
    with pytest.raises(ConfigError, match="no candidate"):
        plan_schedule(_toy_beacons(), (5.0, 1.0), candidates=["s64-to-128"])


def test_plan_against_a_region_from_synthetic_trials():
    records = synthetic_records(n_configs=12, n_seeds=2, epochs=10, seed=4, diverging=0.0)
    lr = sorted(records["config/lr"].unique())[0]
    beacons = records[records["config/lr"] == lr]
    region = OptimumRegion().fit(records)
    plan = plan_schedule(beacons, region, lr=lr)
    sizes = sorted(beacons["batch_size"].unique())
    assert set(plan.batch_sizes) <= set(sizes)
    assert plan.distance == pytest.approx(plan.candidates["distance"].min(), abs=0.05)
    assert plan.prediction_mode == "knn5" and 0 < plan.predicted_error < 1
    expected = epoch_batch_sizes(parse_schedule(plan.schedule), 10) if plan.schedule != "fixed" \
        else np.full(10, plan.batch_size)
    assert tuple(expected) == plan.batch_sizes


def test_plan_error_from_a_fitted_predictor():
    records = synthetic_records(n_configs=12, n_seeds=2, epochs=10, seed=4, diverging=0.0)
    lr = sorted(records["config/lr"].unique())[0]
    predictor = FinalErrorPredictor().fit(records)
    plan = plan_schedule(records[records["config/lr"] == lr], OptimumRegion().fit(records),
                         lr=lr, predictor=predictor)
    assert plan.prediction_mode == "gp"
    assert 0 < plan.predicted_error < 1 and plan.predicted_error_std > 0


def test_candidates_that_train_as_a_beacon_or_as_another_candidate_are_dropped():
    # 2 epochs with milestones at 50%/75%: "[16,32]-MS" has 1-epoch phases, so it runs 16 both
    # epochs (a beacon's run); "[16,16,32,32]" runs as "[16,32]" does
    plan = plan_schedule(_toy_beacons(), (5.0, 1.0),
                         candidates=["[16,32]-MS", "[16,32]", "[16,16,32,32]", "[16]", "[32]"])
    assert plan.candidates["schedule"].tolist().count("[16,32]-MS") == 0
    assert sorted(plan.candidates["schedule"]) == ["[16,32]", "fixed", "fixed"]
