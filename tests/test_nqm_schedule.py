"""Optimised piecewise-constant schedules (seed section 3.7.2)."""

from __future__ import annotations

import numpy as np
import pytest

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.nqm import NQM, optimize_schedule, schedule_steps_to_target
from tune_batchdyn.nqm.schedule import _ScheduleRisk, piece_lengths

MODEL = NQM(dim=2000)


def test_piece_lengths():
    assert piece_lengths(10, 4).tolist() == [3, 3, 2, 2]
    assert piece_lengths(8, 4).sum() == 8


@pytest.mark.parametrize("optimizer", ["sgd", "precond:0.3"])
def test_risk_and_gradient_match_the_recursion_and_finite_differences(optimizer):
    lengths = piece_lengths(10_007, 7)
    objective = _ScheduleRisk(MODEL, optimizer, 4.0, lengths)
    log_lr = np.log([0.5, 0.3, 1.2, 0.01, 0.05, 0.02, 0.003])
    risk, gradient = objective(log_lr)
    assert risk == pytest.approx(
        MODEL.schedule_risk(np.exp(log_lr), lengths.astype(int), 4.0, optimizer), rel=1e-10)
    eps = 1e-6
    numeric = [(objective(log_lr + eps * e)[0] - objective(log_lr - eps * e)[0]) / (2 * eps)
               for e in np.eye(7)]
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-9)


def test_optimised_schedules_beat_constant_lr_at_small_batch_only():
    small = schedule_steps_to_target(MODEL, 1, 0.01, pieces=20)
    constant_small = MODEL.steps_to_target(1)[0]
    bound = MODEL.lower_bound_steps([1, 4096])
    assert bound[0] <= small.steps < 0.5 * constant_small
    assert small.steps < 2.5 * bound[0]  # "nearly achieve the information-theoretic optimum"
    assert small.lrs[-1] < small.lrs[0] / 10  # high, then decayed
    reached = MODEL.schedule_risk(small.lrs, small.piece_steps, 1)
    assert reached <= 0.01 and small.piece_steps.sum() == small.steps
    large = schedule_steps_to_target(MODEL, 4096, 0.01, pieces=20)
    assert large.steps > 0.8 * MODEL.steps_to_target(4096)[0]


def test_schedule_optimisation_rejects_unsupported_input():
    with pytest.raises(ConfigError, match="optimizer"):
        optimize_schedule(MODEL, 8, 1000, optimizer="momentum")
    with pytest.raises(ConfigError, match="steps"):
        optimize_schedule(MODEL, 8, 10, pieces=50)
    with pytest.raises(ConfigError, match="pieces"):
        optimize_schedule(MODEL, 8, 1000, pieces=0)
