"""Schedules as exact sequences: dynamic sampling (plain and -MS), GG milestones, FB warm-up."""

from types import SimpleNamespace

import pytest

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.predict.schedules import geometric_stages, milestone_epochs, stage_of_epoch
from tune_batchdyn.strategies import parse_strategy
from tune_batchdyn.strategies.fb import fb_scale
from tune_batchdyn.strategies.gg import gg_schedule
from tune_batchdyn.train import TrialConfig, run_trial

QUICK = dict(dataset="digits", model="mlp", measures=(), lr=0.05)





def fake_run(epochs, *, fractions=(0.5, 0.75), base_lr=0.1, base_batch_size=32,
             n_train=1077, factor=10.0):
    return SimpleNamespace(epoch=0, epochs=epochs, iteration=0, samples_seen=0, n_train=n_train,
                           base_lr=base_lr, base_batch_size=base_batch_size,
                           lr_milestones=milestone_epochs(epochs, fractions),
                           lr_decay_factor=factor)


def per_epoch(strategy, run):
    """(batch, lr) of each epoch's first step, and the events logged."""
    plans = []
    for epoch in range(run.epochs):
        run.epoch = epoch
        strategy.begin_epoch(run)
        plan = strategy.plan_step(run)
        plans.append((plan.batch_size, plan.lr))
    return plans, strategy.drain_events()


@pytest.mark.parametrize("spec, sizes", [
    ("s32-to-512", [32, 64, 128, 256, 512]),
    ("s512-to-32", [512, 256, 128, 64, 32]),
    ("s16-to-64", [16, 16, 32, 32, 64]),  # the seed's example
    ("s64-to-16", [64, 32, 32, 16, 16]),
    ("s32-to-32", [32] * 5),
    ("[32,64,64,128,256]", [32, 64, 64, 128, 256]),
    ("[ 8, 16 ]-MS", [8, 16]),
])
def test_spec_strings_give_the_seeds_stage_sizes(spec, sizes):
    strategy = parse_strategy(spec)
    assert strategy.sizes == sizes
    assert strategy.multistep == spec.endswith("-MS")
    assert strategy.describe() == spec


def test_geometric_sizes_for_other_stage_counts_and_ratios():
    assert list(geometric_stages(32, 512, 3)) == [32, 128, 512]
    assert list(geometric_stages(32, 100)) == [32, 32, 32, 64, 100]  # rounded down, ends at b
    assert parse_strategy({"name": "s32-to-512", "stages": 3}).sizes == [32, 128, 512]


def test_table_forms_of_lists_and_multistep():
    table = parse_strategy({"name": "dynamic", "sizes": [32, 64, 64, 128, 256]})
    assert table.sizes == [32, 64, 64, 128, 256] and not table.multistep
    assert parse_strategy({"name": "dynamic", "sizes": [32, 64], "multistep": True}).multistep
    assert parse_strategy({"name": "s32-to-512", "multistep": True}).multistep
    assert parse_strategy("s32-to-512-ms").multistep


def test_stage_boundaries_split_epochs_equally():
    # 12 epochs in 5 stages: stage of epoch e is floor(5e/12)
    stages = [stage_of_epoch(e, 12, 5) for e in range(12)]
    assert stages == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4]
    plans, events = per_epoch(parse_strategy("s32-to-512"), fake_run(10))
    assert [b for b, _ in plans] == [32, 32, 64, 64, 128, 128, 256, 256, 512, 512]
    # the lr is the base rate with the seed's step decay (÷10 at epochs 5 and 8 of 10)
    assert [lr for _, lr in plans] == pytest.approx([0.1] * 5 + [0.01] * 3 + [0.001] * 2)
    assert events == [f"batch {a} -> {b} at epoch {e} (stage {s} of 5 of s32-to-512)"
                      for a, b, e, s in [(32, 64, 3, 2), (64, 128, 5, 3), (128, 256, 7, 4),
                                         (256, 512, 9, 5)]]


def test_multistep_reruns_the_sequence_in_each_lr_phase():
    # 20 epochs, milestones at 10 and 15: phases of 10, 5 and 5 epochs
    plans, _ = per_epoch(parse_strategy("s32-to-512-MS"), fake_run(20))
    seq = [32, 64, 128, 256, 512]
    assert [b for b, _ in plans] == [b for b in seq for _ in range(2)] + seq + seq
    assert [lr for _, lr in plans] == pytest.approx([0.1] * 10 + [0.01] * 5 + [0.001] * 5)
    plain, _ = per_epoch(parse_strategy("s32-to-512"), fake_run(20))
    assert sum(b for b, _ in plain) == sum(b for b, _ in plans)  # same sizes, other order


def test_multistep_short_phase_skips_stages_and_says_so():
    plans, events = per_epoch(parse_strategy("s32-to-512-MS"), fake_run(10))  # phases 5, 3, 2
    assert [b for b, _ in plans] == [32, 64, 128, 256, 512, 32, 64, 256, 32, 128]
    assert "shorter than the 5-stage sequence" in events[0]


def test_dynamic_sampling_in_a_trial_records_the_schedule():
    trajectory = run_trial(TrialConfig(**QUICK, strategy="s32-to-512-MS", epochs=10,
                                       lr_milestones=(0.5,)))
    assert trajectory["batch_size"].tolist() == [32, 64, 128, 256, 512] * 2
    assert trajectory["lr"].tolist() == pytest.approx([0.05] * 5 + [0.005] * 5)
    assert trajectory["iterations"].tolist()[:2] == [34, 34 + 17]  # ceil(1077/32), /64


def test_gg_multiplies_the_batch_at_each_milestone_then_decays_the_lr():
    schedule = [gg_schedule(milestones_reached=m, base_batch=32, base_lr=0.1, factor=10,
                            max_batch=512) for m in range(3)]
    assert schedule == [(32, 0.1), (320, 0.1), (512, pytest.approx(0.1 * 512 / 3200))]
    assert [gg_schedule(milestones_reached=m, base_batch=32, base_lr=0.1, factor=2,
                        max_batch=128) for m in range(4)] == \
        [(32, 0.1), (64, 0.1), (128, 0.1), (128, 0.05)]
    # default B_max = min(16 x 32, 1077) = 512; milestones at epochs 4 and 6 of 8
    plans, events = per_epoch(parse_strategy("gg"), fake_run(8))
    assert plans == [(32, 0.1)] * 4 + [(320, 0.1)] * 2 + [(512, pytest.approx(0.016))] * 2
    assert events[0].startswith("batch 32 -> 320 at epoch 5")
    plans, _ = per_epoch(parse_strategy({"name": "gg", "max_batch": 64}), fake_run(8))
    assert plans == [(32, 0.1)] * 4 + [(64, pytest.approx(0.02))] * 2 \
        + [(64, pytest.approx(0.002))] * 2


def test_fb_warm_up_is_linear_per_update_then_scaled_and_decayed():
    # |B| = 128, B_ref = 32, 2 warm-up epochs of ceil(1077/128) = 9 updates: T_w = 18
    strategy = parse_strategy({"name": "fb", "ref_batch": 32, "warmup_epochs": 2})
    run = fake_run(8, base_batch_size=128)
    lrs = []
    for epoch in range(8):
        run.epoch = epoch
        for _ in range(9):
            lrs.append(strategy.plan_step(run).lr)
            run.iteration += 1
    expected = [0.1 * (1 + 3 * k / 18) for k in range(18)] + [0.4] * 18 + [0.04] * 18 \
        + [0.004] * 18
    assert lrs == pytest.approx(expected)
    assert fb_scale(iteration=5, warmup_iterations=0, batch=64, ref_batch=32) == 2.0


def test_fb_in_a_trial_records_the_warm_up_rates():
    trajectory = run_trial(TrialConfig(**{**QUICK, "lr": 0.1}, batch_size=128, epochs=4,
                                       lr_milestones=(0.75,),
                                       strategy={"name": "fb", "ref_batch": 32,
                                                 "warmup_epochs": 2}))
    # the record holds each epoch's last rate: updates k = 8, 17, then warm, then ÷10
    assert trajectory["lr"].tolist() == pytest.approx(
        [0.1 * (1 + 3 * 8 / 18), 0.1 * (1 + 3 * 17 / 18), 0.4, 0.04])


@pytest.mark.parametrize("spec, message", [
    ("s32-to", r"strategy='s32-to' is not accepted; use one of: .*s\{a\}-to-\{b\}"),
    ("s0-to-64", r"strategy='s0-to-64' is not accepted: batch sizes must be >= 1; accepted "
                 r"forms: .*\[b1,b2,...\]"),
    ("[32,sixty-four]", r"the list must hold integers"),
    ("[]", r"the list must hold integers"),
    ({"name": "dynamic", "sizes": [32, 0]}, r"batch sizes must be integers >= 1"),
    ({"name": "dynamic", "sizes": "32,64"}, r"sizes must be a non-empty list"),
    ({"name": "s32-to-512", "stage": 4}, r"unknown option\(s\) \['stage'\]"),
    ({"name": "gg", "max_batch": 0}, r"max_batch=0 is not accepted"),
    ({"name": "fb", "ref_batch": 2.5}, r"ref_batch=2.5 is not accepted"),
    ({"name": "fb", "warm": 2}, r"strategy=.*unknown option\(s\) \['warm'\]; 'fb' takes "
                                  r"ref_batch, warmup_epochs"),
    ("nonsense", r"strategy='nonsense' is not accepted; use one of: fixed, "),
    ("dynamic", r"strategy='dynamic': 'dynamic' needs sizes \(a table such as "),
])
def test_bad_specs_raise_one_config_error_naming_spec_and_forms(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_strategy(spec)


@pytest.mark.parametrize("spec, epochs, message", [
    ("s32-to-512", 3, r"strategy='s32-to-512' is not accepted: 5 stages need at least 5 "
                      r"epochs, got epochs=3; accepted forms"),
    ("[32,64,2048]", 5, r"batch size 2048 is larger than the training set \(1077 samples\)"),
    ({"name": "gg", "max_batch": 4096}, 5, r"max_batch=4096 is larger than the training set"),
    ({"name": "fb", "warmup_epochs": 5}, 5, r"warmup_epochs=5 leaves no epoch"),
])
def test_specs_that_cannot_run_with_the_trial_settings_are_config_errors(spec, epochs, message):
    with pytest.raises(ConfigError, match=message):
        run_trial(TrialConfig(**QUICK, strategy=spec, epochs=epochs))

