"""Truncated condition, noise scale and FisherTracker against explicit J (float64)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.measures import (
    FisherTracker,
    active_condition,
    batch_statistics_couple,
    coupled_noise_scale,
    floored_condition,
    gradient_noise_scale,
    per_sample_gram,
    truncated_condition,
    two_batch_noise_scale,
)


def jacobian_with_singular_values(values: list[float], params: int, batch: int,
                                  seed: int) -> torch.Tensor:
    """J (params × batch) with the given non-zero singular values (rank = len(values))."""
    generator = torch.Generator().manual_seed(seed)
    left = torch.linalg.qr(torch.randn(params, len(values), generator=generator,
                                       dtype=torch.float64))[0]
    right = torch.linalg.qr(torch.randn(batch, len(values), generator=generator,
                                        dtype=torch.float64))[0]
    return left @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ right.T


@pytest.mark.parametrize("values,params,batch", [
    ([5.0, 2.0, 0.5], 50, 3),  # full rank
    ([3.0, 1.0, 1e-2, 1e-4], 50, 4),  # wide spread (c = 3e4), still full rank
    ([4.0, 2.0, 1.0], 3, 10),  # B > rank = P: truncated
    ([7.0, 0.7], 40, 16),  # B > rank < P: truncated
])
def test_truncated_condition_equals_singular_value_ratio(values, params, batch) -> None:
    jacobian = jacobian_with_singular_values(values, params, batch, seed=len(values) + batch)
    singular = torch.linalg.svdvals(jacobian)
    kept = singular[singular > singular[0] * 1e-7]
    assert len(kept) == len(values)
    gram = jacobian.T @ jacobian
    # λmin of JᵀJ carries an absolute error ~eps·λmax: c is accurate to ~eps·c² relative
    assert truncated_condition(gram) == pytest.approx(float(kept[0] / kept[-1]), rel=1e-6)


def test_truncated_condition_on_repeated_samples_and_zero_gram() -> None:
    generator = torch.Generator().manual_seed(0)
    columns = torch.randn(30, 3, generator=generator, dtype=torch.float64)
    jacobian = torch.cat([columns, columns[:, :2]], dim=1)  # 5 samples, rank 3
    singular = torch.linalg.svdvals(columns)
    gram = jacobian.T @ jacobian
    expected = float(torch.linalg.svdvals(jacobian)[0] / torch.linalg.svdvals(jacobian)[2])
    assert truncated_condition(gram) == pytest.approx(expected, rel=1e-8)
    assert singular.numel() == 3
    assert math.isnan(truncated_condition(torch.zeros(4, 4, dtype=torch.float64)))
    diverged = gram.clone()
    diverged[0, 0] = math.nan  # a model with NaN weights: NaN, not a linalg error
    assert math.isnan(truncated_condition(diverged))
    tracker = FisherTracker()
    tracker.update(diverged, lr=0.1, batch_size=5)
    assert tracker.updates == 1 and math.isnan(tracker.ck_bar) and math.isnan(tracker.lk)
    with pytest.raises(ConfigError, match="square"):
        truncated_condition(torch.zeros(3, 4))


def model_jacobian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None], reduction="sum")

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([g.reshape(len(x), -1) for g in grads.values()], dim=1)


def test_condition_of_a_model_gram_equals_explicit_jacobian() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(12, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (12,))
    singular = torch.linalg.svdvals(model_jacobian(model, x, y))
    assert truncated_condition(per_sample_gram(model, x, y)) == pytest.approx(
        float(singular[0] / singular[-1]), rel=1e-7)


@pytest.mark.parametrize("batch,seed", [(2, 0), (9, 1), (32, 2)])
def test_noise_scale_matches_per_sample_gradient_statistics(batch: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    per_sample = torch.randn(batch, 20, generator=generator, dtype=torch.float64) + 0.4
    noise = gradient_noise_scale(per_sample @ per_sample.T)
    trace_cov = float(per_sample.var(dim=0, correction=1).sum())
    mean_sq = float((per_sample.mean(dim=0) ** 2).sum())
    assert noise.trace_covariance == pytest.approx(trace_cov, rel=1e-10)
    assert noise.gradient_sq_norm == pytest.approx(mean_sq - trace_cov / batch, rel=1e-10)
    # McCandlish et al. (2018), App. A.1, with B_small = 1 and B_big = B
    small = float((per_sample**2).sum(dim=1).mean())
    big = mean_sq
    g2 = (batch * big - small) / (batch - 1)
    s = (small - big) / (1 - 1 / batch)
    assert noise.gradient_sq_norm == pytest.approx(g2, rel=1e-10)
    assert noise.b_simple == pytest.approx(s / g2, rel=1e-10)


def test_noise_scale_edge_cases() -> None:
    opposite = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)  # mean gradient 0
    assert gradient_noise_scale(opposite).b_simple == math.inf
    with pytest.raises(ConfigError, match="at least 2"):
        gradient_noise_scale(torch.ones(1, 1))


def test_two_batch_estimator_at_b_1_is_the_grams() -> None:
    generator = torch.Generator().manual_seed(3)
    per_sample = torch.randn(10, 30, generator=generator, dtype=torch.float64) + 0.2
    big = float(per_sample.mean(dim=0).square().sum())  # |G_B|²
    small = float(per_sample.square().sum(dim=1).mean())  # |G_1|², averaged over the samples
    expected = gradient_noise_scale(per_sample @ per_sample.T)
    assert two_batch_noise_scale(big, 10, small, 1) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ConfigError, match="small < big"):
        two_batch_noise_scale(big, 10, small, 10)


def test_two_batch_estimator_is_unbiased_for_independent_samples() -> None:
    """Batches drawn with replacement from a finite population of gradients: E|G_b|² =
    |G|² + tr Σ/b, so the estimates from a batch of 16 and its first 8, averaged over many
    batches, recover the population's |G|² and tr Σ (within 4 standard errors)."""
    generator = torch.Generator().manual_seed(5)
    scales = torch.tensor([3.0, 1.0, 1.0, 0.5, 0.5, 0.2], dtype=torch.float64)
    population = torch.randn(200, 6, generator=generator, dtype=torch.float64) * scales + 0.4
    true_g2 = float(population.mean(dim=0).square().sum())
    true_trace = float(population.var(dim=0, correction=0).sum())
    batches = population[torch.randint(0, 200, (20000, 16), generator=generator)]
    big = batches.mean(dim=1).square().sum(dim=-1).tolist()
    small = batches[:, :8].mean(dim=1).square().sum(dim=-1).tolist()
    estimates = torch.tensor([two_batch_noise_scale(b, 16, s, 8)[:2]
                              for b, s in zip(big, small, strict=True)], dtype=torch.float64)
    mean, error = estimates.mean(dim=0), estimates.std(dim=0) / math.sqrt(len(estimates))
    assert abs(float(mean[0]) - true_trace) < 4 * float(error[0])
    assert abs(float(mean[1]) - true_g2) < 4 * float(error[1])
    assert float(error[0]) < 0.02 * true_trace and float(error[1]) < 0.1 * true_g2


def batch_norm_net(norm: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), norm or nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_batch_statistics_couple_the_samples_of_batch_norm_in_training_mode() -> None:
    model = batch_norm_net()
    assert batch_statistics_couple(model)
    assert not batch_statistics_couple(model.eval())  # running statistics
    assert batch_statistics_couple(batch_norm_net(nn.BatchNorm2d(4, track_running_stats=False))
                                   .eval())
    assert not batch_statistics_couple(batch_norm_net(nn.GroupNorm(2, 4)))


def test_coupled_noise_scale_takes_half_the_batch_and_leaves_the_model() -> None:
    model = batch_norm_net()
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 1, 8, 8, generator=generator), torch.randint(0, 3, (8,))
    gram = per_sample_gram(model, x, y)
    buffers = [b.clone() for b in model.buffers()]
    rng = torch.get_rng_state()
    noise = coupled_noise_scale(gram, model, x, y)
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers(), strict=True))
    assert torch.equal(rng, torch.get_rng_state())
    assert all(p.grad is None for p in model.parameters())

    def squared_gradient(inputs: torch.Tensor, targets: torch.Tensor) -> float:
        twin = copy.deepcopy(model)
        loss = F.cross_entropy(twin(inputs), targets)
        return sum(float(g.double().square().sum())
                   for g in torch.autograd.grad(loss, list(twin.parameters())))

    big = float(gram.sum()) / 64
    assert big == pytest.approx(squared_gradient(x, y), rel=1e-5)  # 1ᵀF̃1/B² = |G_B|²
    expected = two_batch_noise_scale(big, 8, squared_gradient(x[:4], y[:4]), 4)
    assert noise == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ConfigError, match="at least 4"):
        coupled_noise_scale(gram[:2, :2], model, x[:2], y[:2])


def grams(count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    out = []
    for k in range(count):
        per_sample = torch.randn(6 + k, 15, generator=generator, dtype=torch.float64) + 0.3 * k
        out.append(per_sample @ per_sample.T)
    out.append(torch.zeros(4, 4, dtype=torch.float64))  # c_k is NaN, l_k is 0
    return out


def test_fisher_tracker_running_measures() -> None:
    tracker = FisherTracker(noise_ema=0.8)
    assert math.isnan(tracker.ck_bar) and tracker.lk == 0.0 and math.isnan(tracker.noise_scale)
    lrs = [0.1, 0.05, 0.2, 0.1]
    cks, lks, ema_s, ema_g = [], [], None, None
    for gram, lr in zip(grams(3), lrs, strict=True):
        batch = gram.shape[0]
        tracker.update(gram, lr, batch)
        eigenvalues = torch.linalg.eigvalsh(gram)
        kept = eigenvalues[eigenvalues > 1e-9 * eigenvalues[-1]]
        if kept.numel():
            cks.append(math.sqrt(float(kept[-1] / kept[0])))
        lks.append(lr / batch * math.sqrt(float(gram.trace())))
        s = batch / (batch - 1) * (float(gram.trace()) / batch - float(gram.sum()) / batch**2)
        g = float(gram.sum()) / batch**2 - s / batch
        ema_s = s if ema_s is None else 0.8 * ema_s + 0.2 * s
        ema_g = g if ema_g is None else 0.8 * ema_g + 0.2 * g
    assert tracker.updates == 4
    assert tracker.ck_bar == pytest.approx(sum(cks) / len(cks), rel=1e-9)
    assert tracker.lk == pytest.approx(sum(lks), rel=1e-12)
    assert tracker.last_lk == 0.0 and math.isnan(tracker.last_ck)
    assert tracker.noise_scale == pytest.approx(ema_s / ema_g, rel=1e-10)


def test_fisher_tracker_state_dict_round_trip() -> None:
    sequence = grams(3)
    whole = FisherTracker()
    for gram in sequence:
        whole.update(gram, 0.1, gram.shape[0])
    first = FisherTracker()
    for gram in sequence[:2]:
        first.update(gram, 0.1, gram.shape[0])
    state = first.state_dict()
    assert state["version"] == 1
    resumed = FisherTracker(noise_ema=0.5)
    resumed.load_state_dict(state)
    assert resumed.noise_ema == first.noise_ema
    for gram in sequence[2:]:
        resumed.update(gram, 0.1, gram.shape[0])
    for key, value in whole.state_dict()["state"].items():
        other = resumed.state_dict()["state"][key]
        assert (math.isnan(value) and math.isnan(other)) or other == pytest.approx(value)


def test_fisher_tracker_rejects_bad_input() -> None:
    tracker = FisherTracker()
    gram = torch.eye(3, dtype=torch.float64)
    with pytest.raises(ConfigError, match="batch_size"):
        tracker.update(gram, 0.1, 0)
    with pytest.raises(ConfigError, match="lr"):
        tracker.update(gram, float("nan"), 3)
    with pytest.raises(ConfigError, match="version"):
        tracker.load_state_dict({"version": 99})
    with pytest.raises(ConfigError, match="lacks"):
        tracker.load_state_dict({"version": 1, "settings": {"noise_ema": 0.9}, "state": {}})
    with pytest.raises(ConfigError, match="noise_ema"):
        FisherTracker(noise_ema=1.0)


def test_active_condition_drops_vanished_samples() -> None:
    """J with orthogonal columns of squared norms 4, 1, 1e-6 (a fitted sample): the seed's c
    is sqrt(4 / 1e-6) = 2000; the active variant drops the third (1e-6 < 1e-3 · tr/B) and
    gives sqrt(4 / 1) = 2; the floored one floors 1e-6 at 1e-3 · (5 + 1e-6)/3."""
    gram = torch.diag(torch.tensor([4.0, 1.0, 1e-6], dtype=torch.float64))
    rotation = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64,
                                           generator=torch.Generator().manual_seed(0)))[0]
    jacobian = rotation @ gram.sqrt()  # J with JᵀJ = diag: columns of the given norms
    gram = jacobian.T @ jacobian
    assert truncated_condition(gram) == pytest.approx(2000.0, rel=1e-6)
    assert active_condition(gram) == pytest.approx(2.0, rel=1e-9)
    floor = 1e-3 * (5.0 + 1e-6) / 3
    assert floored_condition(gram) == pytest.approx(math.sqrt(4.0 / floor), rel=1e-9)
    assert active_condition(gram, vanish=1e-7) == pytest.approx(2000.0, rel=1e-6)
    assert math.isnan(active_condition(torch.zeros(3, 3, dtype=torch.float64)))
    with pytest.raises(ConfigError, match="vanish=2"):
        active_condition(gram, vanish=2)
    with pytest.raises(ConfigError, match="floor=0"):
        floored_condition(gram, floor=0)
