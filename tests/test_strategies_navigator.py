"""Navigator: predictions by hand, the decision rule, hysteresis, NaN, state round trip."""

import math
from types import SimpleNamespace

import pytest

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.strategies import parse_strategy
from tune_batchdyn.strategies.navigator import Observation, choose_batch, predict_point
from tune_batchdyn.train import TrialConfig, run_trial

N_TRAIN = 3200





def test_prediction_matches_the_hand_computation():
    now = Observation(ck=10.0, lk=100.0, iterations=200, batch=32, lr=0.1)
    before = Observation(ck=8.0, lk=60.0, iterations=100, batch=32, lr=0.1)
    point = predict_point(now=now, before=before, candidate=64, next_lr=0.05, n_train=N_TRAIN,
                          lk_exponent=1.5, ck_exponent=1.0, log_base=math.e)
    # ΔLK = 40·(0.05/0.1)·(32/64)^1.5; epoch mean c = (200·10 − 100·8)/100 = 12, carried to
    # 64 as 24, averaged with 3200/64 = 50 new iterations: (2000 + 50·24)/250 = 12.8
    assert point == pytest.approx((math.log(12.8), math.log(100 + 40 * 0.5 * 0.5 ** 1.5)))
    first = predict_point(now=now, before=None, candidate=32, next_lr=0.1, n_train=N_TRAIN,
                          lk_exponent=1.5, ck_exponent=0.0, log_base=10)
    assert first == pytest.approx((1.0, math.log10(200)))  # LK doubles, C̄K stays


def test_decision_rule_prefers_the_largest_size_inside():
    inside = dict(radius=1.0, dead_band=0.1)
    d = {16: 0.2, 32: 0.5, 64: 0.85, 128: 0.95}
    assert choose_batch(current=32, current_distance=0.5, distances=d, **inside) == 64
    assert choose_batch(current=64, current_distance=0.5, distances=d, **inside) is None
    # outside: the largest size predicted inside, even if smaller than the current one
    assert choose_batch(current=128, current_distance=1.3, distances=d, **inside) == 64
    # outside with nothing inside: the closest, only if closer by more than the dead band
    far = {16: 1.6, 32: 1.5, 64: 1.45, 128: 1.38}
    assert choose_batch(current=32, current_distance=1.2, distances=far, **inside) == 128
    assert choose_batch(current=64, current_distance=1.2, distances=far, **inside) is None


def fake_run():
    return SimpleNamespace(epoch=0, epochs=30, base_lr=0.1, base_batch_size=32, n_train=N_TRAIN,
                           lr_milestones=(), lr_decay_factor=10.0)


class Path:
    """A synthetic trial obeying the navigator's relations: ΔLK ∝ B^-1.5, c ∝ B."""

    def __init__(self):
        self.ck, self.lk, self.iterations = 0.0, 0.0, 0

    def epoch(self, batch):
        steps = N_TRAIN // batch
        c = 10.0 * batch / 32
        self.ck = (self.iterations * self.ck + steps * c) / (self.iterations + steps)
        self.lk += 50.0 * (32 / batch) ** 1.5
        self.iterations += steps
        return {"ck_bar": self.ck, "lk": self.lk, "iterations": self.iterations,
                "batch_size": batch, "lr": 0.1}


def drive(navigator, epochs, run=None, path=None):
    run, path = run or fake_run(), path or Path()
    batches = []
    for epoch in range(epochs):
        run.epoch = epoch
        batch = navigator.plan_step(run).batch_size
        batches.append(batch)
        navigator.end_epoch(run, path.epoch(batch))
    return batches, navigator.drain_events()


def spec(centre, radius, **options):
    return {"name": "navigator", "centre": list(centre), "radius": radius,
            "sizes": [16, 32, 64, 128], **options}


def test_inside_a_wide_region_the_batch_climbs_one_size_per_patience_window():
    centre = (math.log(10.0), math.log(150.0))
    batches, events = drive(parse_strategy(spec(centre, 5.0, patience=3)), 9)
    assert batches == [32, 32, 32, 64, 64, 64, 128, 128, 128]
    assert len(events) == 2 and events[0].startswith("batch 32 -> 64 at epoch 4 because "
                                                     "(log C̄K, log LK) = (2.30, 5.01)")
    assert "(inside, radius 5)" in events[0]


def test_lk_above_the_region_pushes_to_larger_batches_below_to_smaller():
    # LK already past the centre: growing it slower (larger batch) keeps the path closer
    high = drive(parse_strategy(spec((math.log(10.0), math.log(20.0)), 0.3, patience=2,
                                     ck_exponent=0.0)), 6)[0]
    assert high == [32, 32, 64, 64, 128, 128]
    # LK far below the centre: a smaller batch grows it faster
    low = drive(parse_strategy(spec((math.log(10.0), math.log(5000.0)), 0.3, patience=2,
                                    ck_exponent=0.0)), 6)[0]
    assert low == [32, 32, 16, 16, 16, 16]


def test_batch_never_changes_in_consecutive_epochs_however_it_is_pushed():
    for centre in [(2.0, 3.0), (2.3, 6.0), (3.0, 4.5), (1.5, 8.0)]:
        batches, _ = drive(parse_strategy(spec(centre, 0.2, patience=2)), 20)
        changes = [e for e in range(1, 20) if batches[e] != batches[e - 1]]
        assert all(b - a >= 2 for a, b in zip(changes, changes[1:], strict=False))


def test_nan_measures_mean_no_information_keep_the_batch():
    navigator = parse_strategy(spec((2.0, 3.0), 0.5, patience=2))
    run = fake_run()
    for epoch in range(5):
        run.epoch = epoch
        navigator.end_epoch(run, {"ck_bar": math.nan, "lk": math.nan, "iterations": 100 * epoch,
                                  "batch_size": 32, "lr": 0.1})
    assert navigator.plan_step(run).batch_size == 32
    assert navigator.drain_events() == ["navigator: no C̄K/LK at epoch 1 (NaN): keeping batch 32 "
                                        "until they arrive"]
    trajectory = run_trial(TrialConfig(dataset="digits", model="mlp", measures=(), epochs=3,
                                       strategy=spec((2.0, 3.0), 0.5, patience=2)))
    assert trajectory["batch_size"].tolist() == [32, 32, 32]


def test_state_round_trip_continues_identically():
    centre = (math.log(10.0), math.log(150.0))
    whole, whole_events = drive(parse_strategy(spec(centre, 5.0, patience=3)), 9)
    first = parse_strategy(spec(centre, 5.0, patience=3))
    run, path = fake_run(), Path()
    part, events = [], []
    for epoch in range(4):
        run.epoch = epoch
        part.append(first.plan_step(run).batch_size)
        first.end_epoch(run, path.epoch(part[-1]))
    events += first.drain_events()
    second = parse_strategy(spec(centre, 5.0, patience=3))
    second.load_state_dict(first.state_dict())
    for epoch in range(4, 9):
        run.epoch = epoch
        part.append(second.plan_step(run).batch_size)
        second.end_epoch(run, path.epoch(part[-1]))
    assert part == whole and events + second.drain_events() == whole_events


@pytest.mark.parametrize("options, message", [
    ({"name": "navigator"}, r"strategy 'navigator' needs centre and radius; use \{\"name\""),
    (spec((1.0,), 1.0), r"centre=\[1.0\] is not accepted; use two finite numbers"),
    (spec((1.0, 2.0), 0.0), r"radius=0.0 is not accepted"),
    (spec((1.0, 2.0), 1.0, patience=1), r"patience=1 is not accepted; use an integer >= 2"),
    (spec((1.0, 2.0), 1.0, dead_band=1.0), r"dead_band=1.0 is not accepted"),
    ({**spec((1.0, 2.0), 1.0), "sizes": [32, "64"]}, r"sizes=\[32, '64'\] is not accepted"),
])
def test_bad_navigator_options_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        parse_strategy(options)


def test_start_batch_must_be_an_allowed_size():
    with pytest.raises(ConfigError, match=r"batch_size=48 is not one of its sizes"):
        run_trial(TrialConfig(dataset="digits", model="mlp", measures=(), epochs=2,
                              batch_size=48, strategy=spec((1.0, 2.0), 1.0)))
    default = parse_strategy({"name": "navigator", "centre": [1, 2], "radius": 1})
    assert default.allowed_sizes(32, 1077) == [8, 16, 32, 64, 128, 256, 512]
