import math

import pandas as pd
import pytest
import torch

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.records import RECORD_COLUMNS
from tune_batchdyn.train import TrialConfig, run_trial
from tune_batchdyn.train.data import load_data
from tune_batchdyn.train.engine import Trial
from tune_batchdyn.train.models import build_model
from tune_batchdyn.train.stepper import Stepper

QUICK = dict(dataset="digits", model="mlp", measures=(), epochs=3, batch_size=64, lr=0.05)


def test_digits_split_is_fixed_stratified_60_20_20():
    data = load_data("digits", data_seed=0)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (1077, 360, 360)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert torch.bincount(data.test_y, minlength=10).min() >= 35  # stratified: 36 or 35 each
    again = load_data("digits", data_seed=0)
    assert torch.equal(data.test_x, again.test_x)
    other = load_data("digits", data_seed=1)
    assert not torch.equal(data.test_x, other.test_x)
    assert abs(float(data.train_x.mean())) < 1e-5  # normalised with training statistics


def test_synthetic_split_sizes_label_noise_and_seeding():
    options = {"n_train": 2000, "n_val": 300, "n_test": 10_000, "label_noise": 0.2}
    data = load_data("synthetic", data_seed=3, options=options)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (2000, 300, 10_000)
    assert data.input_shape == (3, 16, 16) and data.num_classes == 10
    assert torch.equal(data.test_x, load_data("synthetic", data_seed=3, options=options).test_x)
    assert not torch.equal(data.test_x, load_data("synthetic", data_seed=4,
                                                  options=options).test_x)
    assert bool(torch.isfinite(data.train_x).all())


def test_synthetic_bad_option_names_the_key():
    from tune_batchdyn.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown synthetic dataset_options \['colour'\]"):
        load_data("synthetic", options={"colour": 1})
    with pytest.raises(ConfigError, match="dataset_options.preset='huge' is not accepted"):
        load_data("synthetic", options={"preset": "huge"})


def test_torchvision_dataset_without_files_names_path_and_flag(tmp_path):
    from tune_batchdyn.errors import ConfigError

    with pytest.raises(ConfigError, match="Pass --download"):
        load_data("mnist", data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="needs data_dir"):
        load_data("cifar10")


@pytest.mark.parametrize("model", ["mlp", "cnn", "resnet8", "resnet20", "densenet"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 16, 16), (3, 32, 32)])
def test_every_model_runs_forward_and_backward_on_every_shape(model, shape):
    torch.manual_seed(0)
    net = build_model(model, shape, 10)
    out = net(torch.randn(4, *shape))
    assert out.shape == (4, 10)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_resnet_depths_have_the_cifar_layer_counts():
    for depth in (8, 20, 32, 56, 110):
        net = build_model(f"resnet{depth}", (3, 32, 32), 10)
        weighted = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        assert len(weighted) == depth


def test_short_digits_run_beats_chance_by_far_and_records_every_key():
    seen = []
    trajectory = run_trial(TrialConfig(**{**QUICK, "epochs": 5, "lr": 0.1, "batch_size": 32}),
                           reporter=seen.append)
    assert list(trajectory.columns) == list(RECORD_COLUMNS)
    assert len(trajectory) == 5 and len(seen) == 6 and seen[-1]["done"] is True
    assert set(RECORD_COLUMNS) <= set(seen[0])
    assert trajectory["test_error"].iloc[-1] < 0.10  # chance is 0.90
    assert trajectory["iterations"].tolist() == [34 * e for e in range(1, 6)]  # ceil(1077/32)
    assert trajectory["samples_seen"].iloc[-1] == 5 * 1077
    assert math.isnan(trajectory["ck_bar"].iloc[0])  # measures switched off: NaN, not missing
    assert not trajectory["diverged"].any()


def test_lr_decays_tenfold_at_half_and_three_quarters():
    trajectory = run_trial(TrialConfig(**{**QUICK, "epochs": 8, "lr": 0.2}))
    assert trajectory["lr"].tolist() == pytest.approx([0.2] * 4 + [0.02] * 2 + [0.002] * 2)


def test_seeded_runs_are_deterministic_on_cpu():
    a = run_trial(TrialConfig(**QUICK, seed=5))
    b = run_trial(TrialConfig(**QUICK, seed=5))
    c = run_trial(TrialConfig(**QUICK, seed=6))
    cols = ["train_loss", "val_error", "test_error"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert not a[cols].equals(c[cols])


class Kill(Exception):
    pass


def test_killed_run_resumes_to_the_same_numbers(tmp_path):
    config = TrialConfig(**{**QUICK, "epochs": 5, "dataset": "synthetic", "model": "cnn",
                            "dataset_options": {"n_train": 512, "n_val": 128, "n_test": 256}},
                         checkpoint_dir=str(tmp_path / "ckpt"))
    uninterrupted = run_trial(config.replace(checkpoint_dir=None))

    def killer(record):
        if record["epoch"] == 3:
            raise Kill

    with pytest.raises(Kill):
        run_trial(config, reporter=killer)
    resumed = run_trial(config)
    cols = [c for c in RECORD_COLUMNS if c != "wall_time_s"]
    pd.testing.assert_frame_equal(resumed[cols], uninterrupted[cols])
    # a finished trial is returned from its checkpoint, never recomputed
    reports = []
    again = run_trial(config, reporter=reports.append)
    assert [r.get("done") for r in reports] == [True]
    pd.testing.assert_frame_equal(again, resumed)


def test_divergence_is_flagged_not_raised():
    trajectory = run_trial(TrialConfig(**{**QUICK, "lr": 100.0, "epochs": 10}))
    assert bool(trajectory["diverged"].iloc[-1])
    assert len(trajectory) < 10
    assert trajectory["test_error"].iloc[-1] > 0.5
    # C̄K measured on every step meets the NaN weights before the divergence check does
    measured = run_trial(TrialConfig(**{**QUICK, "lr": 1e4, "epochs": 2, "batch_size": 32,
                                        "measures": ("fisher",), "measure_every": 1}))
    assert measured["diverged"].tolist() == [True]
    # NaN weights meet Q, RMSGD's stable ranks and ABS's λmax before the check as well
    for strategy, measures in (("fixed", ("quality",)), ("rmsgd", ()),
                               ({"name": "abs", "every": 32}, ())):
        trajectory = run_trial(TrialConfig(**{**QUICK, "lr": 50.0, "epochs": 3,
                                              "strategy": strategy, "measures": measures}))
        assert bool(trajectory["diverged"].iloc[-1]), strategy


def test_out_of_memory_falls_back_to_micro_batches_with_the_same_update(caplog):
    def build():
        torch.manual_seed(0)
        return build_model("mlp", (1, 8, 8), 10)

    x, y = torch.randn(64, 1, 8, 8), torch.randint(10, (64,))
    loss_fn = torch.nn.CrossEntropyLoss(reduction="none")

    reference = build()
    opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    Stepper(reference, loss_fn).step(opt, x, y)

    model = build()
    first = model[1]
    original = first.forward

    def forward_that_runs_out_of_memory(inp):
        if len(inp) > 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(inp)

    first.forward = forward_that_runs_out_of_memory
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    stepper = Stepper(model, loss_fn)
    with caplog.at_level("WARNING", logger="tune_batchdyn.train"):
        loss, _ = stepper.step(opt, x, y)
        stepper.step(opt, x, y)
    assert stepper.micro_batch_size == 16
    assert sum("micro-batches of 16" in r.message for r in caplog.records) == 1  # logged once
    reference_again = build()
    opt_ref = torch.optim.SGD(reference_again.parameters(), lr=0.1, momentum=0.9)
    ref_stepper = Stepper(reference_again, loss_fn)
    ref_stepper.step(opt_ref, x, y)
    ref_stepper.step(opt_ref, x, y)
    for p, q in zip(model.parameters(), reference_again.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_weighted_step_reports_loss_and_errors_on_the_same_basis():
    """With importance weights the error count is weighted like the loss (both unbiased
    estimates of the uniform-sample values), in whole batches and in micro-batches."""
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    x, y = torch.randn(12, 5), torch.randint(3, (12,))
    weights = torch.rand(12) * 2
    missed = model(x).argmax(dim=1).ne(y).float()
    losses = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
    for micro in (None, 4):
        stepper = Stepper(model, torch.nn.CrossEntropyLoss(reduction="none"), micro)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        loss, wrong = stepper.step(opt, x, y, weights)
        assert float(wrong) == pytest.approx(float(missed @ weights), rel=1e-6)
        assert float(loss) == pytest.approx(float(losses.detach() @ weights) / 12, rel=1e-6)
    assert int(Stepper(model, torch.nn.CrossEntropyLoss(reduction="none")).step(
        opt, x, y)[1]) == int(missed.sum())


def test_out_of_memory_at_micro_batch_of_one_raises():
    model = build_model("mlp", (1, 8, 8), 10)

    def always_oom(inp):
        raise torch.OutOfMemoryError("CUDA out of memory")

    model[1].forward = always_oom
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(torch.OutOfMemoryError):
        Stepper(model, torch.nn.CrossEntropyLoss(reduction="none")).step(
            opt, torch.randn(4, 1, 8, 8), torch.randint(10, (4,)))


def test_trial_exposes_the_run_view_strategies_read():
    trial = Trial(TrialConfig(**QUICK))
    assert trial.n_train == 1077 and trial.lr_milestones == (2, 2)
    idx = trial.draw_uniform(100)
    assert len(idx) == 100 and len(set(idx.tolist())) == 100


def test_measures_are_reported_and_do_not_change_training():
    base = dict(QUICK, epochs=2, batch_size=128, measure_every=3)
    plain = run_trial(TrialConfig(**base))
    measured = run_trial(TrialConfig(**{**base, "measures": ("fisher", "quality", "hessian")},
                                     hessian_every=1, hessian_samples=64))
    cols = ["train_loss", "train_error", "val_error", "test_error"]
    pd.testing.assert_frame_equal(plain[cols], measured[cols])
    for name in ("ck_bar", "lk", "noise_scale", "quality_q", "hessian_top"):
        assert measured[name].notna().all(), name
    assert (measured["ck_bar"] >= 1).all()  # a condition number
    # LK is a sum of positive increments: it grows
    assert measured["lk"].iloc[1] > measured["lk"].iloc[0] > 0


def test_a_batch_norm_models_noise_scale_comes_from_half_its_batch():
    """Batch-norm in training mode couples the per-sample gradients: the monitor feeds the
    tracker the two-batch estimate (`coupled_noise_scale`), and training is unchanged."""
    from types import SimpleNamespace

    from tune_batchdyn.measures import coupled_noise_scale, gradient_noise_scale, per_sample_gram
    from tune_batchdyn.train.monitor import Monitor

    config = TrialConfig(**dict(QUICK, model="cnn", measures=("fisher",), batch_size=16))
    model = build_model("cnn", (1, 8, 8), 10)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    run = SimpleNamespace(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                          loss_fn=None, iteration=0)
    for training in (True, False):  # eval mode: running statistics, the Gram's own estimate
        model.train(training)
        monitor = Monitor(config, 1077)
        monitor.before_step(run, x, y)
        gram = per_sample_gram(model, x, y)
        expected = (coupled_noise_scale(gram, model, x, y) if training
                    else gradient_noise_scale(gram))
        state = monitor.fisher.state_dict()["state"]
        assert state["ema_trace_covariance"] == pytest.approx(expected.trace_covariance,
                                                              rel=1e-6)
        assert state["ema_gradient_sq_norm"] == pytest.approx(expected.gradient_sq_norm,
                                                              rel=1e-6, abs=1e-9)
    base = dict(QUICK, model="cnn", epochs=2, batch_size=64, measure_every=3)
    plain = run_trial(TrialConfig(**base))
    measured = run_trial(TrialConfig(**{**base, "measures": ("fisher",)}))
    cols = ["train_loss", "train_error", "val_error", "test_error"]
    pd.testing.assert_frame_equal(plain[cols], measured[cols])
    assert measured["noise_scale"].notna().all()


def test_hessian_interval_keeps_its_cost_near_a_tenth_of_training():
    from tune_batchdyn.train.monitor import hessian_interval

    # digits at batch 32: 34 steps an epoch, one λmax ≈ 160 steps -> every 48 epochs
    assert hessian_interval(TrialConfig(batch_size=32), 1077) == 48
    assert hessian_interval(TrialConfig(batch_size=128), 8000) == 7  # 63 steps an epoch
    assert hessian_interval(TrialConfig(batch_size=128, hessian_every=3), 8000) == 3


@pytest.mark.parametrize("strategy", ["fixed", "gg", "rmsgd"])
def test_a_batch_larger_than_the_training_split_is_refused(strategy):
    with pytest.raises(ConfigError, match="batch_size=5000 is larger than the training split of "
                                          "dataset='digits' \\(1077 samples\\)"):
        run_trial(TrialConfig(**{**QUICK, "batch_size": 5000, "strategy": strategy}))


def test_rerouted_trial_resumes_its_weights_under_the_new_strategy(tmp_path, caplog):
    config = TrialConfig(**{**QUICK, "epochs": 6, "batch_size": 32},
                         checkpoint_dir=str(tmp_path / "ckpt"))

    def stop_at_three(record):
        if record["epoch"] == 3:
            raise Kill

    with pytest.raises(Kill):
        run_trial(config, reporter=stop_at_three)
    # resumed by hand with another strategy or batch size: refused, naming the fields
    for changed in ({"strategy": "s32-to-512"}, {"batch_size": 64}):
        with pytest.raises(ConfigError, match=f"{next(iter(changed))}=.* there, .* requested"):
            run_trial(config.replace(**changed))
    with caplog.at_level("INFO", logger="tune_batchdyn.train"):
        rerouted = run_trial(config.replace(strategy="[32,32,64,128,256,512]"), reroute=True)
    assert any("strategy changed from 'fixed'" in r.message for r in caplog.records)
    assert rerouted["batch_size"].tolist() == [32, 32, 32, 128, 256, 512]
    assert rerouted["iterations"].iloc[3] - rerouted["iterations"].iloc[2] == 9  # ceil(1077/128)


def test_run_trial_takes_a_plain_mapping_and_refuses_a_reporter_it_cannot_call() -> None:
    records = run_trial({"dataset": "digits", "epochs": 1, "measures": []})
    assert len(records) == 1 and records["epoch"].tolist() == [1]
    with pytest.raises(ConfigError, match="reporter must be a function.*got str"):
        run_trial({"dataset": "digits", "epochs": 1}, reporter="print")
    with pytest.raises(ConfigError, match="config must be a TrialConfig.*got str"):
        run_trial("digits")
