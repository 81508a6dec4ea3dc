"""Bad input to the measures: one clear ConfigError naming what is wrong, never a silent number
or an error from deep inside torch; and a non-finite matrix in a stack spoils only itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.measures import (
    FisherTracker,
    evbmf,
    hessian_top_eigenvalue,
    hessian_trace,
    per_sample_gram,
    truncated_condition,
)
from tune_batchdyn.measures.eigen import eigh, eigvalsh
from tune_batchdyn.measures.evbmf import evbmf_batched
from tune_batchdyn.measures.noise import batch_gradient_sq_norm, coupled_noise_scale


def tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    return model, torch.randn(6, 5, dtype=torch.float64), torch.randint(0, 3, (6,))


def hessian(model, x, y):
    return hessian_top_eigenvalue(model, x, y)


def trace(model, x, y):
    return hessian_trace(model, x, y)


MEASURES = [per_sample_gram, hessian, trace, batch_gradient_sq_norm]


@pytest.mark.parametrize("measure", MEASURES)
def test_an_empty_batch_is_refused(measure) -> None:
    model, x, y = tiny()
    with pytest.raises(ConfigError, match=r"at least one sample.*\(0, 5\)"):
        measure(model, x[:0], y[:0])


@pytest.mark.parametrize("measure", MEASURES)
def test_targets_of_another_batch_are_refused(measure) -> None:
    model, x, y = tiny()
    with pytest.raises(ConfigError, match=r"targets must hold one entry per sample, shape "
                                          r"\(6, \.\.\.\).*got targets of shape \(4,\)"):
        measure(model, x, y[:4])


def test_a_broadcasting_custom_loss_cannot_hide_a_target_mismatch() -> None:
    model, x, _ = tiny()
    loss = lambda outputs, targets: ((outputs - targets) ** 2).mean(1)  # noqa: E731
    with pytest.raises(ConfigError, match=r"shape \(1, 3\)"):
        per_sample_gram(model, x, torch.zeros(1, 3, dtype=torch.float64), loss)


def test_a_single_sample_without_its_batch_dimension_says_so() -> None:
    model, x, y = tiny()
    with pytest.raises(ConfigError, match=r"x\.unsqueeze\(0\)"):
        per_sample_gram(model, x[0], y[0])


def test_numpy_inputs_are_refused_by_name() -> None:
    model, x, y = tiny()
    with pytest.raises(ConfigError, match="inputs must be a torch.Tensor.*ndarray"):
        per_sample_gram(model, x.numpy(), y)


@pytest.mark.parametrize("measure", MEASURES)
def test_a_model_without_trainable_parameters_is_refused(measure) -> None:
    model, x, y = tiny()
    model.requires_grad_(False)
    with pytest.raises(ConfigError, match="Sequential has no trainable parameters"):
        measure(model, x, y)


def test_coupled_noise_scale_checks_the_targets_too() -> None:
    model, x, y = tiny()
    gram = per_sample_gram(model, x, y)
    with pytest.raises(ConfigError, match=r"got targets of shape \(2,\)"):
        coupled_noise_scale(gram, model, x, y[:2])


def test_fisher_tracker_reads_the_batch_size_off_the_gram_and_checks_a_given_one() -> None:
    model, x, y = tiny()
    gram = per_sample_gram(model, x, y)
    expected = 0.1 / 6 * math.sqrt(float(gram.trace()))
    for batch_size in (None, 6, np.int64(6)):
        tracker = FisherTracker()
        tracker.update(gram, 0.1, batch_size)
        assert tracker.lk == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ConfigError, match=r"batch_size=64 is not the Gram's batch.*\|B\| = 6"):
        FisherTracker().update(gram, 0.1, 64)


def test_fisher_tracker_refuses_a_noise_ema_that_is_not_a_number() -> None:
    with pytest.raises(ConfigError, match="noise_ema must be in"):
        FisherTracker(noise_ema="0.9")


def test_truncated_condition_refuses_a_matrix_that_is_not_symmetric() -> None:
    with pytest.raises(ConfigError, match="gram must be symmetric"):
        truncated_condition(torch.tensor([[1.0, 5.0], [0.0, 1.0]]))
    # rounding-level asymmetry, as products in another order give, is a Gram still
    gram = torch.tensor([[4.0, 1.0], [1.0 + 1e-12, 1.0]], dtype=torch.float64)
    assert truncated_condition(gram) == pytest.approx(
        math.sqrt((5 + math.sqrt(13)) / (5 - math.sqrt(13))), rel=1e-9)


def test_evbmf_of_a_matrix_with_nan_is_an_error_not_all_noise() -> None:
    matrix = torch.randn(4, 6)
    matrix[0, 0] = math.nan
    with pytest.raises(ConfigError, match="evbmf needs a finite matrix"):
        evbmf(matrix)


def test_a_nan_matrix_in_an_evbmf_stack_spoils_only_itself() -> None:
    torch.manual_seed(1)
    signal = torch.randn(3, 40, 2) @ torch.randn(3, 2, 60) * 3
    stack = signal + 0.1 * torch.randn(3, 40, 60)
    clean = evbmf_batched(stack, compute_vectors=True)
    stack[1, 3, 4] = math.inf
    spoilt = evbmf_batched(stack, compute_vectors=True)
    assert clean.rank.tolist() == [2, 2, 2]
    assert spoilt.rank.tolist() == [2, 0, 2]
    assert math.isnan(float(spoilt.noise_variance[1]))
    assert bool(spoilt.singular_values[1].isnan().all())
    for i in (0, 2):
        assert torch.equal(spoilt.singular_values[i], clean.singular_values[i])
        assert torch.equal(spoilt.noise_variance[i], clean.noise_variance[i])


def test_eigen_solvers_answer_nan_per_matrix_of_a_stack() -> None:
    scales = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(3, 1, 1)
    matrices = torch.eye(3, dtype=torch.float64).repeat(3, 1, 1) * scales
    matrices[1, 0, 1] = math.nan
    values = eigvalsh(matrices)
    assert values[0].tolist() == [1.0] * 3 and values[2].tolist() == [3.0] * 3
    assert bool(values[1].isnan().all())
    values, vectors = eigh(matrices)
    assert values[2].tolist() == [3.0] * 3 and bool(vectors[1].isnan().all())
    assert torch.allclose(vectors[0].abs(), torch.eye(3, dtype=torch.float64))
