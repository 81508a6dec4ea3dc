"""The Gram baselines of benchmarks/measures.py compute the Gram they are compared with."""

from __future__ import annotations

import sys

import pytest
import torch
from _benchmarks import load_benchmark
from torch import nn

from tune_batchdyn.measures import per_sample_gram


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("measures")


@pytest.fixture
def case():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.Tanh(),
        nn.Linear(5, 4),
    ).double()
    x = torch.randn(6, 2, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (6,))
    return model, x, y


@pytest.mark.parametrize("name", ["vmap_gram", "loop_gram"])
def test_baseline_gram_equals_ours(bench, case, name) -> None:
    model, x, y = case
    expected = per_sample_gram(model, x, y)
    found = getattr(bench, name)(model, x, y)
    torch.testing.assert_close(found, expected, rtol=1e-10, atol=0.0)


def test_backpack_gram_equals_ours(bench, case) -> None:
    pytest.importorskip("backpack", reason="BackPACK is optional (pip install -e '.[bench]')")
    model, x, y = case
    expected = per_sample_gram(model, x, y)
    torch.testing.assert_close(bench.backpack_gram(model)(x, y), expected, rtol=1e-10, atol=0.0)
    assert all(p.grad is None for p in model.parameters())  # it runs on a copy


def test_backpack_gram_says_why_without_backpack(bench, case, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "backpack", None)  # import fails as if not installed
    assert bench.backpack_gram(case[0]) == 'BackPACK not installed (pip install -e ".[bench]")'


def test_start_seed_row_counts_the_runs_that_stopped_off_the_reference(bench, case, capsys):
    from tune_batchdyn.measures import hessian_top_eigenvalue

    model, x, y = case
    reference = hessian_top_eigenvalue(model, x, y, tol=1e-9, max_iter=200)
    bench.start_seed_row("tiny", model, x, y, 1.0, reference, seeds=3)
    assert "0 of 3 off by > 1e-2" in capsys.readouterr().out
    bench.start_seed_row("tiny", model, x, y, 1.0, 2.0 * reference, seeds=3)
    assert "3 of 3 off by > 1e-2" in capsys.readouterr().out


def test_distance_from_cpu_gram_is_zero_for_a_model_on_the_cpu(bench, case) -> None:
    model, x, y = case
    assert bench.distance_from_cpu_gram(model, x, y) == 0.0


def test_distance_from_cpu_gram_is_relative_to_the_cpus_gram(bench, case, monkeypatch) -> None:
    model, x, y = case
    grams = iter([torch.tensor([[3.0, 0.0], [0.0, 4.0]]),    # the device's, computed first
                  torch.tensor([[3.0, 0.0], [0.0, 0.0]])])   # the CPU's
    monkeypatch.setattr(bench, "per_sample_gram", lambda *args: next(grams))
    assert bench.distance_from_cpu_gram(model, x, y) == pytest.approx(4.0 / 3.0)
