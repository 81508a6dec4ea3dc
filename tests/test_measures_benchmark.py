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
