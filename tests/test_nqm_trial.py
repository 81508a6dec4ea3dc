"""The NQM as a trial: record schema, exact expectations per epoch, seeded paths, divergence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.nqm import NQM, nqm_trial_records
from tune_batchdyn.records.schema import RECORD_COLUMNS

MODEL = NQM()


def reference_sgd_epochs(model: NQM, batches: list[int], lrs: list[float], samples: int):
    """Per epoch: (risk, noise scale, cumulative LK), stepping the SGD second moments one step
    at a time: ``m' = (1 - lr h)^2 m + lr^2 c / B``."""
    p = model.problem
    m = np.full(p.curvature.shape, p.x0_var)
    trace_c = p.count @ p.noise
    lk, out = 0.0, []
    for batch, lr in zip(batches, lrs, strict=True):
        for _ in range(max(1, samples // batch)):
            energy = p.count @ (p.curvature**2 * m)
            lk += lr / batch * math.sqrt(batch * (energy + trace_c))
            m = (1 - lr * p.curvature) ** 2 * m + lr**2 * p.noise / batch
        energy = p.count @ (p.curvature**2 * m)
        out.append((p.count @ (p.curvature * m) / 2, trace_c / energy, lk))
    return out


def test_records_have_exactly_the_schema_and_counters():
    seen = []
    records = nqm_trial_records(MODEL, batch_size_per_epoch=[16, 16, 64],
                                lr_per_epoch=[0.1, 0.1, 0.3], samples_per_epoch=1000,
                                reporter=seen.append)
    assert seen == records
    # the NQM fills the record columns it has an analogue for; the engine adds the rest as NaN
    assert all(set(r) == set(RECORD_COLUMNS) - {"ck_bar", "quality_q", "tau"} for r in records)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["iterations"] for r in records] == [62, 124, 139]
    assert [r["samples_seen"] for r in records] == [992, 1984, 2944]
    for r in records:
        assert isinstance(r["epoch"], int) and isinstance(r["diverged"], bool)
        assert all(type(r[k]) is float for k in ("train_loss", "lk", "noise_scale", "lr"))
        assert r["train_loss"] == r["train_error"] == r["val_error"] == r["test_error"]
        assert r["hessian_top"] == 1.0 and not r["diverged"]
    assert records[0]["wall_time_s"] <= records[-1]["wall_time_s"]


def test_expected_records_equal_a_step_by_step_reference():
    batches, lrs = [16, 32, 8], [0.1, 0.2, 0.05]
    records = nqm_trial_records(MODEL, batch_size_per_epoch=batches, lr_per_epoch=lrs,
                                samples_per_epoch=2000)
    for record, (risk, noise_scale, lk) in zip(records, reference_sgd_epochs(
            MODEL, batches, lrs, 2000), strict=True):
        assert record["train_loss"] == pytest.approx(risk, rel=1e-10)
        assert record["noise_scale"] == pytest.approx(noise_scale, rel=1e-10)
        assert record["lk"] == pytest.approx(lk, rel=1e-10)  # <= 256 steps: every step


def test_long_epochs_sum_lk_over_sampled_steps_accurately():
    records = nqm_trial_records(MODEL, batch_size_per_epoch=[4, 8], lr_per_epoch=[0.02, 0.05],
                                samples_per_epoch=20_000)
    reference = reference_sgd_epochs(MODEL, [4, 8], [0.02, 0.05], 20_000)
    for record, (risk, _, lk) in zip(records, reference, strict=True):
        assert record["train_loss"] == pytest.approx(risk, rel=1e-9)
        assert record["lk"] == pytest.approx(lk, rel=1e-3)


@pytest.mark.parametrize(("optimizer", "beta"), [("momentum", 0.9), ("ema", 0.99),
                                                 ("precond:0.5", None)])
def test_other_optimisers_report_the_models_expected_risk(optimizer, beta):
    lrs = [0.05, 0.1]
    records = nqm_trial_records(MODEL, batch_size_per_epoch=[32, 32], lr_per_epoch=lrs,
                                samples_per_epoch=3200, optimizer=optimizer, coefficient=beta)
    want = MODEL.schedule_risk([lrs[:1] * 2, lrs], [100, 100], 32, optimizer, beta or 0.0)
    assert records[0]["train_loss"] == pytest.approx(
        MODEL.schedule_risk(lrs[:1], [100], 32, optimizer, beta or 0.0), rel=1e-10)
    assert records[1]["train_loss"] == pytest.approx(want[1], rel=1e-10)


def test_seeded_paths_differ_slightly_and_are_unbiased():
    kwargs = dict(batch_size_per_epoch=[32] * 3, lr_per_epoch=[0.2] * 3, samples_per_epoch=3200)
    expected = nqm_trial_records(MODEL, **kwargs)[-1]["train_loss"]

    def losses(seed: int) -> list[float]:
        return [r["train_loss"] for r in nqm_trial_records(MODEL, noise_seed=seed, **kwargs)]

    assert losses(1) == losses(1)
    finals = np.array([losses(seed)[-1] for seed in range(40)])
    assert np.unique(finals).size == 40
    assert np.all(np.abs(finals / expected - 1.0) < 0.1)
    assert abs(finals.mean() - expected) < 4 * finals.std(ddof=1) / np.sqrt(finals.size)


def test_divergence_is_flagged_and_stops_the_trial():
    records = nqm_trial_records(MODEL, batch_size_per_epoch=[32] * 4, lr_per_epoch=[2.5] * 4,
                                samples_per_epoch=3200)
    assert len(records) == 1 and records[0]["diverged"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"batch_size_per_epoch": [0], "lr_per_epoch": [0.1]}, "batch_size_per_epoch"),
     ({"batch_size_per_epoch": [8], "lr_per_epoch": [-1.0]}, "lr_per_epoch"),
     ({"batch_size_per_epoch": [8, 8], "lr_per_epoch": [0.1]}, "lr_per_epoch"),
     ({"batch_size_per_epoch": [8], "lr_per_epoch": [0.1], "samples_per_epoch": 0},
      "samples_per_epoch"),
     ({"batch_size_per_epoch": [8], "lr_per_epoch": [0.1], "optimizer": "adam"}, "optimizer")],
)
def test_bad_trial_input_raises_config_error(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        nqm_trial_records(MODEL, **{"samples_per_epoch": 100, **kwargs})
