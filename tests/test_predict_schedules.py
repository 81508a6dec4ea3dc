"""Staged schedules: the seed's names, the per-epoch batch sizes, the spec strings."""

from __future__ import annotations

import pytest

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.predict import (
    Schedule,
    epoch_batch_sizes,
    geometric_stages,
    parse_schedule,
    schedule_family,
)
from tune_batchdyn.predict.schedules import milestone_epochs


@pytest.mark.parametrize("start,end,stages", [
    (32, 512, (32, 64, 128, 256, 512)),       # the seed's examples
    (512, 32, (512, 256, 128, 64, 32)),
    (16, 64, (16, 16, 32, 32, 64)),
    (64, 16, (64, 32, 32, 16, 16)),           # the reverse of s16-to-64
    (32, 128, (32, 32, 64, 64, 128)),
    (16, 256, (16, 32, 64, 128, 256)),
    (16, 128, (16, 16, 32, 64, 128)),          # exponents floor(0, .75, 1.5, 2.25), then b
    (24, 96, (24, 24, 48, 48, 96)),            # power-of-two multiples of a
    (64, 64, (64, 64, 64, 64, 64)),
    (100, 32, (100, 50, 50, 32, 32)),          # shrinking: rounding down stops at b
])
def test_geometric_stages(start, end, stages):
    assert geometric_stages(start, end) == stages


def test_bad_specs_are_config_errors():
    with pytest.raises(ConfigError, match="start batch size"):
        geometric_stages(0, 96)
    with pytest.raises(ConfigError, match="not accepted"):
        parse_schedule("s32-to")
    with pytest.raises(ConfigError, match="positive batch sizes"):
        parse_schedule([])


def test_whole_run_stages_over_20_epochs():
    sizes = epoch_batch_sizes(parse_schedule("s32-to-512"), 20)
    assert sizes.tolist() == [32] * 4 + [64] * 4 + [128] * 4 + [256] * 4 + [512] * 4


def test_multi_step_reruns_the_sequence_in_each_lr_phase():
    # lr milestones at epochs 10 and 15 (0-based): phases of 10, 5 and 5 epochs
    sizes = epoch_batch_sizes(parse_schedule("s32-to-512-MS"), 20)
    assert sizes.tolist() == ([32, 32, 64, 64, 128, 128, 256, 256, 512, 512]
                              + [32, 64, 128, 256, 512] * 2)


def test_uneven_epochs_assign_floor_of_position():
    # 7 epochs, 5 stages: stage of epoch i is floor(5 i / 7) = 0,0,1,2,2,3,4
    sizes = epoch_batch_sizes(Schedule((1, 2, 4, 8, 16)), 7)
    assert sizes.tolist() == [1, 1, 2, 4, 4, 8, 16]


@pytest.mark.parametrize("schedule,spec", [
    (Schedule((32, 64, 128, 256, 512)), "s32-to-512"),
    (Schedule((16, 16, 32, 32, 64), multi_step=True), "s16-to-64-MS"),
    (Schedule((16, 32, 64)), "[16,32,64]"),
    (Schedule((16, 64, 64, 64, 64), multi_step=True), "[16,64,64,64,64]-MS"),
    (Schedule((64,)), "fixed"),
])
def test_spec_strings_parse_back(schedule, spec):
    assert schedule.spec == spec
    if spec != "fixed":
        assert parse_schedule(spec) == schedule


def test_family_over_three_sizes():
    family = schedule_family([16, 32, 64])
    specs = sorted(s.spec for s in family)
    assert len(family) == 3 + 6 * 2
    assert "s16-to-64-MS" in specs and "s64-to-32" in specs and specs.count("fixed") == 3


def test_family_over_sparse_sizes_uses_ladders_of_the_allowed_sizes():
    family = schedule_family([8, 32, 128])
    specs = {s.spec for s in family}
    assert len(family) == 3 + 6 * 2
    assert all(set(s.stages) <= {8, 32, 128} for s in family)
    assert {"[8,32]", "[8,32,128]-MS", "[128,32,8]", "[128,32]-MS"} <= specs


@pytest.mark.parametrize("start,end", [(a, b) for a in (8, 16, 24, 32, 512)
                                       for b in (16, 32, 100, 128, 512) if a != b])
def test_sizes_agree_with_the_strategy(start, end):
    """The planner predicts what the strategy runs: same sizes, same spec strings."""
    strategies = pytest.importorskip("tune_batchdyn.strategies.dynamic_sampling")
    from tune_batchdyn.strategies import parse_strategy

    assert tuple(parse_strategy(f"s{start}-to-{end}").sizes) == geometric_stages(start, end)
    for spec in (f"s{start}-to-{end}", f"s{start}-to-{end}-MS", "[16,32,32,64]-MS"):
        assert strategies._RANGE.fullmatch(spec) or strategies._LIST.fullmatch(spec)
        assert parse_schedule(spec).spec in (spec, "fixed")


@pytest.mark.parametrize("epochs", [5, 7, 12, 20, 33])
@pytest.mark.parametrize("multi_step", [False, True])
def test_epochs_follow_equal_stages_within_each_phase(epochs, multi_step):
    stages = (1, 2, 3, 4, 5)
    milestones = milestone_epochs(epochs, (0.5, 0.75))
    bounds = sorted({0, *milestones, epochs}) if multi_step else [0, epochs]
    expected = []  # floor((i - s) * S / n) in each span
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        expected += [stages[(i - start) * 5 // (stop - start)] for i in range(start, stop)]
    assert epoch_batch_sizes(Schedule(stages, multi_step), epochs).tolist() == expected
