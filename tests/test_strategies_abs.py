"""ABS/ABSA (hessian-adaptive-batch-abs, Alg. 1) on scripted eigenvalues, and FGSM."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.strategies import parse_strategy
from tune_batchdyn.strategies.adaptive_batch import abs_decision, fgsm


def run_decisions(eigenvalues, *, kappa=3, max_batch=256):
    batch, reference, count, trace = 32, None, 0, []
    for value in eigenvalues:
        decision = abs_decision(eigenvalue=value, reference=reference, checks_without_fall=count,
                                batch=batch, alpha=2.0, beta=2.0, kappa=kappa,
                                max_batch=max_batch)
        batch, reference, count = decision.batch, decision.reference, decision.checks_without_fall
        trace.append((batch, reference, count, decision.reason))
    return trace


def test_decision_follows_algorithm_1_on_a_scripted_eigenvalue_sequence():
    trace = run_decisions([10, 8, 4.9, 4, 3, 2.6, 2.4, 1.0, 0.9, 0.8, 0.7])
    assert [t[0] for t in trace] == [32, 32, 64, 64, 64, 128, 256, 256, 256, 256, 256]
    # the reference moves only on a fall (line 12), not on the κ rule (lines 16–18)
    assert [t[1] for t in trace] == [10, 10, 4.9, 4.9, 4.9, 4.9, 2.4, 1.0, 1.0, 1.0, 1.0]
    assert [t[2] for t in trace] == [0, 1, 0, 1, 2, 0, 0, 0, 1, 2, 0]
    assert trace[2][3] == "λ fell from 10 to 4.9"
    assert trace[5][3] == "λ did not fall by 2x in 3 checks (now 2.6, reference 4.9)"
    assert trace[7][3] == "" and trace[10][3] == ""  # at B_max: nothing to report


def test_fall_needs_the_full_ratio_and_kappa_ten_is_the_default():
    # exactly half is not below λ/α: no fall
    assert run_decisions([8, 4.0])[-1][:3] == (32, 8, 1)
    trace = run_decisions([5.0] * 12, kappa=10)
    assert [t[0] for t in trace] == [32] * 10 + [64, 64]  # the 10th check after the first


def fake_run(model, n_train=100, epochs=10):
    torch.manual_seed(0)
    x, y = torch.randn(n_train, 4), torch.randint(0, 3, (n_train,))
    generator = torch.Generator().manual_seed(0)
    return SimpleNamespace(
        epoch=0, epochs=epochs, iteration=0, samples_seen=0, n_train=n_train, base_lr=0.1,
        base_batch_size=10, lr_milestones=(), lr_decay_factor=10.0, model=model,
        device=torch.device("cpu"), generator=generator, train_x=x,
        train_y=y, loss_fn=lambda z, t: F.cross_entropy(z, t, reduction="none"),
        draw_uniform=lambda k: torch.randperm(n_train, generator=generator)[:k])


def drive(strategy, run, eigenvalues, monkeypatch):
    """One check per epoch (every = n_train) with the scripted eigenvalues; per-epoch plans."""
    values = iter(eigenvalues)
    monkeypatch.setattr(strategy, "_eigenvalue", lambda run: next(values))
    plans = []
    for epoch in range(len(eigenvalues)):
        run.epoch = epoch
        strategy.begin_epoch(run)
        plan = strategy.plan_step(run)
        plans.append((plan.batch_size, plan.lr, strategy.gamma))
        run.samples_seen += run.n_train
        strategy.after_step(run, torch.tensor(0.0))
    return plans


def test_strategy_scales_lr_with_the_batch_and_logs_why(monkeypatch):
    strategy = parse_strategy({"name": "abs", "kappa": 3, "max_batch": 40})
    run = fake_run(nn.Linear(4, 3))
    plans = drive(strategy, run, [10, 4, 3, 1, 0.1], monkeypatch)
    assert [p[0] for p in plans] == [10, 10, 20, 20, 40]
    assert [p[1] for p in plans] == pytest.approx([0.1, 0.1, 0.2, 0.2, 0.4])  # lr/|B| fixed
    assert strategy.drain_events() == [
        "batch 10 -> 20 at epoch 2 (after 200 samples) because λ fell from 10 to 4",
        "batch 20 -> 40 at epoch 4 (after 400 samples) because λ fell from 4 to 1"]
    assert strategy.measure_indices.shape == (100,)  # min(128, n_train), drawn once


def test_absa_halves_gamma_on_each_increase_and_stops_at_tau(monkeypatch):
    strategy = parse_strategy({"name": "absa", "kappa": 100, "tau": 4})
    run = fake_run(nn.Linear(4, 3))
    plans = drive(strategy, run, [10, 4, 1, 0.1, 0.01, 0.001], monkeypatch)
    assert [p[2] for p in plans] == [0.2, 0.2, 0.1, 0.05, 0.0, 0.0]
    assert "adversarial examples off from epoch 5 (tau = 4)" in strategy.drain_events()
    assert parse_strategy("abs").gamma == 0.0


def test_fgsm_moves_each_input_by_epsilon_along_the_loss_gradient_sign():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    loss_fn = lambda z, t: F.cross_entropy(z, t, reduction="none")  # noqa: E731
    # closed form for a linear model: ∇ₓℓᵢ = Wᵀ(softmax(zᵢ) − onehot(yᵢ))
    residual = torch.softmax(model(x), 1).detach() - F.one_hot(y, 3)
    expected = x + 0.005 * (residual @ model.weight.detach()).sign()
    torch.testing.assert_close(fgsm(model, loss_fn, x, y, 0.005), expected)
    assert all(p.grad is None for p in model.parameters())

    strategy = parse_strategy("absa")  # γ = 0.2: the first ⌊0.2·5⌋ = 1 sample
    run = fake_run(model)
    out, labels = strategy.transform_batch(run, x, y)
    torch.testing.assert_close(out[:1], expected[:1])
    assert torch.equal(out[1:], x[1:]) and torch.equal(labels, y)


def test_block_hessian_uses_only_the_last_layers():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    run = fake_run(model)
    full = parse_strategy({"name": "abs", "measure_samples": 50})
    block = parse_strategy({"name": "abs", "measure_samples": 50, "block_layers": 1})
    for strategy in (full, block):
        strategy.begin_epoch(run)
    indices = block.measure_indices = full.measure_indices
    # the last layer's Hessian of the mean CE: brute force with autograd
    x, y = run.train_x[indices], run.train_y[indices]
    features = torch.tanh(model[0](x)).detach()
    w0 = torch.cat([model[2].weight.detach().flatten(), model[2].bias.detach()])

    def loss_of(w):
        logits = features @ w[:24].view(3, 8).T + w[24:]
        return F.cross_entropy(logits, y)

    hessian = torch.autograd.functional.hessian(loss_of, w0)
    top = float(torch.linalg.eigvalsh(hessian.double()).abs().max())
    assert block._eigenvalue(run) == pytest.approx(top, rel=2e-2)
    assert full._eigenvalue(run) >= block._eigenvalue(run) * 0.98  # a block can only be lower


@pytest.mark.parametrize("spec, message", [
    ({"name": "abs", "alpha": 1.0}, r"strategy 'abs': alpha=1.0 is not accepted; use a number > 1"),
    ({"name": "absa", "gamma": 2}, r"gamma=2 is not accepted; use a fraction in \[0, 1\]"),
    ({"name": "abs", "kappa": "ten"}, r"kappa='ten' is not accepted"),
    ({"name": "abs", "block_layers": 0}, r"block_layers=0 is not accepted"),
    ({"name": "abs", "max_batch": -1}, r"max_batch=-1 is not accepted"),
    ({"name": "abs", "gamma": 0.1}, r"'abs' takes no adversarial options .* use 'absa'"),
])
def test_bad_options_are_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_strategy(spec)


@pytest.mark.parametrize(("block_layers", "calls_per_epoch"), [(None, 1), (1, 2)])
def test_a_trial_reports_abs_eigenvalue_instead_of_measuring_twice(monkeypatch, block_layers,
                                                                   calls_per_epoch):
    """ABS measures λmax at each epoch's end; the record takes it (one Lanczos run per epoch,
    not two) unless ABS measured a block Hessian, which is not the record's λmax."""
    import tune_batchdyn.strategies.adaptive_batch as abs_module
    import tune_batchdyn.train.monitor as monitor_module
    from tune_batchdyn.measures import hessian_top_eigenvalue
    from tune_batchdyn.train import TrialConfig, run_trial

    calls = []

    def counted(*args, **kwargs):
        result = hessian_top_eigenvalue(*args, **kwargs)
        calls.append((kwargs.get("params") is not None, result.eigenvalue))
        return result

    monkeypatch.setattr(abs_module, "hessian_top_eigenvalue", counted)
    monkeypatch.setattr(monitor_module, "hessian_top_eigenvalue", counted)
    strategy = {"name": "abs"} if block_layers is None else {"name": "abs",
                                                            "block_layers": block_layers}
    config = TrialConfig(strategy=strategy, epochs=3, batch_size=128, lr=0.05,
                         measures=("hessian",), hessian_every=1)
    trajectory = run_trial(config)
    assert len(calls) == 3 * calls_per_epoch
    whole_model = [value for block, value in calls if not block]
    assert trajectory["hessian_top"].tolist() == pytest.approx(whole_model, rel=1e-12)


def test_the_monitor_measures_itself_when_abs_used_another_sample_count(monkeypatch):
    import tune_batchdyn.strategies.adaptive_batch as abs_module
    import tune_batchdyn.train.monitor as monitor_module
    from tune_batchdyn.measures import hessian_top_eigenvalue
    from tune_batchdyn.train import TrialConfig, run_trial

    calls = []

    def counted(model, inputs, *args, **kwargs):
        calls.append(len(inputs))
        return hessian_top_eigenvalue(model, inputs, *args, **kwargs)

    monkeypatch.setattr(abs_module, "hessian_top_eigenvalue", counted)
    monkeypatch.setattr(monitor_module, "hessian_top_eigenvalue", counted)
    config = TrialConfig(strategy={"name": "abs", "measure_samples": 64}, epochs=2,
                         batch_size=128, lr=0.05, measures=("hessian",), hessian_every=1)
    run_trial(config)
    assert calls == [64, 128, 64, 128]  # ABS's own, then the record's, each epoch


def test_an_unconverged_abs_eigenvalue_is_not_reported():
    strategy = parse_strategy("abs")
    strategy.eigenvalue, strategy.measured_epoch, strategy.converged = 3.0, 0, False
    run = SimpleNamespace(epoch=0)
    assert strategy.hessian_top(run, strategy.measure_samples) is None
    strategy.converged = True
    assert strategy.hessian_top(run, strategy.measure_samples) == 3.0
    assert strategy.hessian_top(run, strategy.measure_samples + 1) is None
