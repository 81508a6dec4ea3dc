"""RMSGD (stable-rank-quality-rmsgd, Alg. 1): a hand-computed two-epoch update, layer groups."""

import dataclasses

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.measures import layer_quality
from tune_batchdyn.strategies import parse_strategy
from tune_batchdyn.strategies.rmsgd import RMSGD, layer_param_groups, rmsgd_rate
from tune_batchdyn.train import TrialConfig, run_trial
from tune_batchdyn.train.models import build_model


def two_layer_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    with torch.no_grad():
        u, v = torch.randn(5), torch.randn(6)
        model[0].weight.copy_(3 * torch.outer(u, v) + 0.01 * torch.randn(5, 6))  # rank one
        model[2].weight.copy_(torch.randn(2, 5))  # noise only: an empty low-rank part
    return model


def test_two_epochs_match_the_hand_computed_update():
    model = two_layer_model()
    x, y = torch.randn(8, 6), torch.randint(0, 2, (8,))
    params = [p.detach().clone() for p in model.parameters()]  # w0, b0, w1, b1

    def grads(values):
        w0, b0, w1, b1 = (v.clone().requires_grad_(True) for v in values)
        loss = F.cross_entropy(F.relu(x @ w0.T + b0) @ w1.T + b1, y)
        return torch.autograd.grad(loss, (w0, b0, w1, b1))

    optimizer = RMSGD(layer_param_groups(model), weight_decay=0.0)
    assert [len(g["params"]) for g in optimizer.param_groups] == [2, 2]

    def epoch():
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        return optimizer.epoch_step()

    # epoch 1 at η(0) = 0.03: v = −η g, w = w + v
    g = grads(params)
    velocity = [-0.03 * gi for gi in g]
    after_1 = [p + v for p, v in zip(params, velocity, strict=True)]
    rates_1 = epoch()
    for p, expected in zip(model.parameters(), after_1, strict=True):
        torch.testing.assert_close(p.detach(), expected)
    # stable rank of layer 1: one kept component, s = σ₁²/(n σ₁²) = 1/5; layer 2 keeps none
    assert layer_quality(after_1[0])["rank"] == 1 and layer_quality(after_1[2])["rank"] == 0
    eta = [0.98 * 0.03 + 1.0 * (1 / 5 - 0.0), 0.03]  # layer 2 not ready: stays at η(0)
    assert rates_1 == pytest.approx(eta)

    # epoch 2: v = 0.9 v − η_ℓ g, w = w + v with each layer's own rate
    g = grads(after_1)
    layer_rate = [eta[0], eta[0], eta[1], eta[1]]
    velocity = [0.9 * v - r * gi for v, r, gi in zip(velocity, layer_rate, g, strict=True)]
    after_2 = [p + v for p, v in zip(after_1, velocity, strict=True)]
    rates_2 = epoch()
    for p, expected in zip(model.parameters(), after_2, strict=True):
        torch.testing.assert_close(p.detach(), expected)
    s_2 = layer_quality(after_2[0])["stable_rank"]  # a second, small component appears
    assert layer_quality(after_2[2])["rank"] == 0
    assert rates_2 == pytest.approx([0.98 * eta[0] + 1.0 * (s_2 - 1 / 5), 0.03])


def test_rate_rule_with_momentum_floor_and_readiness():
    common = dict(beta=0.98, zeta=1.0, initial_rate=0.03, min_rate=1e-10)
    assert rmsgd_rate(rate=0.1, stable_rank=0.5, previous_stable_rank=0.3, ready=True,
                      **common) == pytest.approx(0.98 * 0.1 + 0.2)
    assert rmsgd_rate(rate=0.01, stable_rank=0.1, previous_stable_rank=0.5, ready=True,
                      **common) == 1e-10
    assert rmsgd_rate(rate=0.01, stable_rank=0.0, previous_stable_rank=0.0, ready=False,
                      **common) == 0.03


def test_layer_groups_cover_every_parameter_once_with_norms_on_their_layer():
    model = build_model("resnet8", (3, 16, 16), 10)
    groups = layer_param_groups(model)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(groups) == len(layers)  # one rate per conv / linear layer
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert [id(p) for p in groups[0]["params"]] == \
        [id(model.conv.weight), id(model.bn.weight), id(model.bn.bias)]


def test_initial_rate_is_the_trials_lr_unless_the_strategy_fixes_it():
    config = TrialConfig(dataset="digits", model="mlp", measures=(), epochs=1, lr=0.05,
                         strategy="rmsgd")
    assert run_trial(config)["lr"].iloc[0] == pytest.approx(0.05)  # a swept lr is η(0)
    fixed = dataclasses.replace(config, strategy={"name": "rmsgd", "initial_lr": 0.03})
    assert run_trial(fixed)["lr"].iloc[0] == pytest.approx(0.03)


def test_strategy_leaves_the_rates_to_the_optimiser_and_reports_them(caplog):
    """The log gives every layer's rate; the record's ``lr`` is their mean by parameter
    count."""
    with caplog.at_level("INFO", logger="tune_batchdyn.train"):
        trajectory = run_trial(TrialConfig(dataset="digits", model="mlp", measures=(), epochs=2,
                                           strategy="rmsgd", lr=0.03))
    assert trajectory["lr"].iloc[0] == pytest.approx(0.03)  # η(0)
    events = [r.message for r in caplog.records if r.message.startswith("per-layer lr")]
    assert len(events) == 2 and events[0].startswith("per-layer lr after epoch 1: 1 ")
    rates = [float(part.split()[1]) for part in events[0].split(": ", 1)[1].split(", ")]
    assert len(set(rates)) > 1  # the layers' rates have parted
    model = build_model("mlp", (64,), 10)
    sizes = [sum(p.numel() for p in group["params"]) for group in layer_param_groups(model)]
    assert len(sizes) == len(rates)
    mean = sum(r * n for r, n in zip(rates, sizes, strict=True)) / sum(sizes)  # by parameter count
    assert trajectory["lr"].iloc[1] == pytest.approx(mean, rel=1e-3)


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match=r"RMSGD: beta=1.0 is not accepted; use a number in "
                                          r"\[0, 1\)"):
        RMSGD(layer_param_groups(two_layer_model()), beta=1.0)
    with pytest.raises(ConfigError, match=r"strategy 'rmsgd': initial_lr=0 is not accepted; "
                                          r"use a number in \(0, inf\)"):
        parse_strategy({"name": "rmsgd", "initial_lr": 0})
