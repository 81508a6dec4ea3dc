"""Importance sampling: the bound, τ, and an unbiased gradient on a fixed model."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.strategies import parse_strategy
from tune_batchdyn.strategies.importance import (
    gradient_norm_bound,
    importance_sample,
    tau_from_scores,
)
from tune_batchdyn.train import TrialConfig, run_trial


def test_bound_is_the_norm_of_the_logit_gradient_of_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(6, 4, requires_grad=True)
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    losses = F.cross_entropy(logits, targets, reduction="none")
    (grad,) = torch.autograd.grad(losses.sum(), logits)  # row i = dℓᵢ/dzᵢ
    torch.testing.assert_close(gradient_norm_bound(logits.detach(), targets), grad.norm(dim=1))


def test_tau_equals_the_closed_form_and_is_one_for_equal_scores():
    scores = torch.tensor([1.0, 2.0, 3.0, 10.0])
    g = scores / scores.sum()
    # 1 − ‖g − u‖²/Σg² = 1/(n Σg²), so τ = sqrt(n Σg²)
    assert tau_from_scores(scores) == pytest.approx(math.sqrt(4 * float((g * g).sum())))
    assert tau_from_scores(torch.ones(7)) == pytest.approx(1.0)
    assert tau_from_scores(torch.tensor([0.0, 0.0, 5.0])) == pytest.approx(math.sqrt(3))


def test_weights_make_the_expected_sampled_gradient_the_uniform_one_exactly():
    scores = torch.tensor([0.5, 1.0, 0.1, 2.0, 0.3, 0.7])
    p = scores / scores.sum()
    grads = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    positions, weights = importance_sample(scores=scores, batch_size=6,
                                           generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(weights.double(), 1 / (6 * p[positions].double()))
    # E_p[w G] = Σ pᵢ · 1/(B pᵢ) · Gᵢ = the uniform mean
    expectation = sum(p[i] * (1 / (6 * p[i])) * grads[i] for i in range(6))
    torch.testing.assert_close(expectation, grads.mean(0))
    zero = torch.tensor([1.0, 0.0, 1.0])
    drawn, _ = importance_sample(scores=zero, batch_size=500,
                                 generator=torch.Generator().manual_seed(0))
    assert 1 not in drawn.tolist()  # a zero score is never drawn


def _fixed_run(model, x, y, pool):
    """A RunView whose uniform pre-sample is always ``pool``."""
    return SimpleNamespace(model=model, train_x=x, train_y=y, device=torch.device("cpu"),
                           generator=torch.Generator().manual_seed(0),
                           draw_uniform=lambda k: pool[:k])


def test_importance_sampled_gradient_is_unbiased_on_a_fixed_model():
    torch.manual_seed(0)
    x, y = torch.randn(60, 5), torch.randint(0, 3, (60,))
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    params = list(model.parameters())
    per_sample = []
    for i in range(60):
        loss = F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        per_sample.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
    per_sample = torch.stack(per_sample)
    pool = torch.arange(10, 50)  # B = 40 = 5 x b
    uniform = per_sample[pool].mean(0)

    strategy = parse_strategy({"name": "is", "tau_threshold": 1.0})
    strategy.tau = 10.0  # sampling on, and the smoothed τ stays above 1 (τ >= 1 always)
    run = _fixed_run(model, x, y, pool)
    draws = []
    for _ in range(1000):
        indices, weights = strategy.select_batch(run, torch.arange(8))
        assert len(indices) == 8 and bool(torch.isin(indices, pool).all())
        draws.append((weights[:, None] * per_sample[indices]).mean(0))
    draws = torch.stack(draws)
    standard_error = draws.std(0) / math.sqrt(len(draws))
    error = (draws.mean(0) - uniform).abs()
    assert bool((error < 5 * standard_error + 1e-7).all())
    # and the weights are not all one: this is not uniform sampling in disguise
    assert float(weights.std()) > 0.05


def test_sampling_turns_on_above_the_threshold_and_off_is_plain_uniform(caplog):
    quick = dict(dataset="digits", model="mlp", measures=(), epochs=1, batch_size=32, lr=0.05,
                 device="cpu")
    with caplog.at_level("INFO", logger="tune_batchdyn.train"):
        sampled = run_trial(TrialConfig(**quick, strategy="is"))
    assert [r.message.split(":")[0] for r in caplog.records if "importance" in r.message] == \
        ["importance sampling on at epoch 1"]  # digits: the scores spread out within epoch 1
    assert sampled["tau"].iloc[0] > 1.5
    never = run_trial(TrialConfig(**quick, strategy={"name": "is", "tau_threshold": 1e9}))
    fixed = run_trial(TrialConfig(**quick))
    # sampling off: the same batches, unweighted, so the same run as the fixed strategy
    assert never["train_loss"].tolist() == fixed["train_loss"].tolist()
    assert never["tau"].notna().all() and fixed["tau"].isna().all()


def test_uniform_branch_passes_the_batch_through_unweighted():
    torch.manual_seed(0)
    x, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    model = nn.Linear(5, 3)
    strategy = parse_strategy({"name": "is", "smoothing": 0.5})
    run = _fixed_run(model, x, y, torch.arange(20))
    indices, weights = strategy.select_batch(run, torch.arange(4))
    assert weights is None and indices.tolist() == [0, 1, 2, 3]
    scores = gradient_norm_bound(model(x[:4]).detach(), y[:4])
    assert strategy.tau == pytest.approx(0.5 * tau_from_scores(scores))


@pytest.mark.parametrize("options, message", [
    ({"presample": 0.5}, r"strategy 'is': presample=0.5 is not accepted; use a number >= 1"),
    ({"smoothing": 1}, r"smoothing=1 is not accepted; use a number in \[0, 1\)"),
    ({"tau_threshold": "high"}, r"tau_threshold='high' is not accepted"),
])
def test_bad_options_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        parse_strategy({"name": "is", **options})
