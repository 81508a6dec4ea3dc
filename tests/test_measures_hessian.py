"""Hessian λmax and trace against the explicit Hessian of tiny networks (float64)."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.measures import (
    ConvergenceWarning,
    EigenResult,
    hessian_top_eigenvalue,
    hessian_trace,
)
from tune_batchdyn.measures.hessian import lanczos, random_start_vector, warm_start_vector
from tune_batchdyn.measures.hvp import make_hvp


def tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def tiny_bn_net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Dropout(0.2),
                         nn.Linear(5, 3)).double()


def tiny_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Softplus(), nn.Flatten(),
                         nn.Linear(2 * 3 * 3, 3)).double()


def batch_for(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    shape = (10, 1, 5, 5) if name == "cnn" else (10, 4)
    x = torch.randn(*shape, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, 3, (10,), generator=generator)


MODELS = {"mlp": tiny_mlp, "bn": tiny_bn_net, "cnn": tiny_cnn}


@functools.cache
def reference_hessian(name: str) -> torch.Tensor:
    """The explicit Hessian of a prepared model (computed once per model)."""
    return explicit_hessian(*prepared(name))


def explicit_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Brute force: the full Hessian of the mean loss in eval mode (batch-norm running stats)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    training = model.training
    model.eval()

    def loss(vector: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(vector, [s.numel() for s in shapes])
        params = {n: piece.view(s) for n, piece, s in zip(names, pieces, shapes, strict=True)}
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    hessian = torch.autograd.functional.hessian(loss, flat, vectorize=True)
    model.train(training)
    return hessian


def top_eigenvalue(matrix: torch.Tensor) -> float:
    eigenvalues = torch.linalg.eigvalsh(matrix)
    return float(eigenvalues[eigenvalues.abs().argmax()])


def prepared(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = MODELS[name]()
    x, y = batch_for(name)
    with torch.no_grad():
        model(x)  # batch-norm running statistics away from their initial values
    model.train()
    return model, x, y


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("hvp", ["double_backward", "forward_over_reverse"])
def test_hessian_vector_products_equal_explicit_hessian(name: str, hvp: str) -> None:
    model, x, y = prepared(name)
    hessian = reference_hessian(name)
    params = list(model.parameters())
    model.eval()
    product = make_hvp(model, x, y, None, params, hvp)
    vectors = torch.randn(hessian.shape[0], 3, generator=torch.Generator().manual_seed(2),
                          dtype=torch.float64)
    found = torch.stack([product(v) for v in vectors.T], dim=1)
    assert torch.allclose(found, hessian @ vectors, rtol=1e-10, atol=1e-12)


def check_top_eigenvalue(name: str, method: str, hvp: str, tol: float) -> None:
    model, x, y = prepared(name)
    expected = top_eigenvalue(reference_hessian(name))
    result = hessian_top_eigenvalue(model, x, y, tol=tol, max_iter=500, method=method, hvp=hvp,
                                    return_info=True)
    assert isinstance(result, EigenResult) and result.converged
    assert result.relative_residual <= tol
    assert abs(result.eigenvalue - expected) <= tol * abs(expected)
    assert model.training  # eval mode only during the measurement


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("method", ["lanczos", "power"])
@pytest.mark.parametrize("tol", [1e-2, 1e-6])
def test_top_eigenvalue_equals_explicit_hessian(name: str, method: str, tol: float) -> None:
    check_top_eigenvalue(name, method, "double_backward", tol)


def test_top_eigenvalue_forward_over_reverse() -> None:
    check_top_eigenvalue("bn", "lanczos", "forward_over_reverse", 1e-2)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_float32_model_keeps_float32_vectors(name: str, method: str) -> None:
    """A float32 model's λmax, from float32 vectors, equals the float64 explicit Hessian's
    top eigenvalue within the tolerance; the eigenvector comes back in float32."""
    model, x, y = prepared(name)
    expected = top_eigenvalue(reference_hessian(name))
    model, x = model.float(), x.float()
    result = hessian_top_eigenvalue(model, x, y, tol=1e-3, max_iter=500, method=method,
                                    return_info=True)
    assert result.converged and result.vector.dtype == torch.float32
    assert abs(result.eigenvalue - expected) <= 2e-3 * abs(expected)
    warm = hessian_top_eigenvalue(model, x, y, tol=1e-3, start=result.vector.double(),
                                  return_info=True)
    assert warm.vector.dtype == torch.float32
    assert abs(warm.eigenvalue - expected) <= 2e-3 * abs(expected)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("method", ["lanczos", "power"])
@pytest.mark.parametrize("tol", [1e-2, 1e-6])
def test_top_eigenvalue_forward_over_reverse_table(name: str, method: str, tol: float) -> None:
    check_top_eigenvalue(name, method, "forward_over_reverse", tol)


def test_lanczos_needs_fewer_products_than_power_iteration() -> None:
    model, x, y = prepared("mlp")
    lanczos = hessian_top_eigenvalue(model, x, y, tol=1e-6, max_iter=500, return_info=True)
    power = hessian_top_eigenvalue(model, x, y, tol=1e-6, max_iter=500, method="power",
                                   return_info=True)
    assert lanczos.n_hvp < power.n_hvp


@pytest.mark.parametrize("name", ["mlp", "bn"])
@pytest.mark.parametrize("hvp", ["double_backward", "forward_over_reverse"])
def test_block_hessian_equals_explicit_sub_block(name: str, hvp: str) -> None:
    model, x, y = prepared(name)
    last = list(model[-1].parameters())
    size = sum(p.numel() for p in last)
    block = reference_hessian(name)[-size:, -size:]
    value = hessian_top_eigenvalue(model, x, y, tol=1e-8, params=last, hvp=hvp)
    assert value == pytest.approx(top_eigenvalue(block), rel=1e-8)
    # a parameter listed twice (a tied weight reached through both modules) counts once
    assert hessian_top_eigenvalue(model, x, y, tol=1e-8, params=last + last[:1],
                                  hvp=hvp) == pytest.approx(value, rel=1e-8)
    trace = hessian_trace(model, x, y, params=last, hvp=hvp, tol=0.05, max_samples=2000,
                          seed=1)
    assert abs(trace.trace - float(block.trace())) <= 4.0 * trace.std_error


def test_not_converged_warns_and_says_so() -> None:
    model, x, y = prepared("cnn")
    with pytest.warns(ConvergenceWarning, match="not converged"):
        result = hessian_top_eigenvalue(model, x, y, tol=1e-9, max_iter=2, method="power",
                                        return_info=True)
    assert not result.converged and result.n_hvp == 2
    with pytest.warns(ConvergenceWarning):
        assert isinstance(hessian_top_eigenvalue(model, x, y, tol=1e-9, max_iter=2), float)


def test_seededrandom_start_vector_is_reproducible() -> None:
    model, x, y = prepared("mlp")
    first = hessian_top_eigenvalue(model, x, y, seed=3, return_info=True)
    again = hessian_top_eigenvalue(model, x, y, seed=3, return_info=True)
    assert first == again


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_result_vector_is_the_top_eigenvector(method: str) -> None:
    model, x, y = prepared("mlp")
    eigenvalues, eigenvectors = torch.linalg.eigh(reference_hessian("mlp"))
    top = int(eigenvalues.abs().argmax())
    result = hessian_top_eigenvalue(model, x, y, tol=1e-8, max_iter=500, method=method,
                                    return_info=True)
    assert float(result.vector.norm()) == pytest.approx(1.0, abs=1e-10)
    assert abs(float(result.vector @ eigenvectors[:, top])) == pytest.approx(1.0, abs=1e-6)


def test_warm_start_halves_the_products_and_still_finds_the_top() -> None:
    """A diagonal H of 2000 (known spectrum, top 1.3, next 1.1): started near the top
    eigenvector Lanczos needs about half the products of a random start; started on the
    second eigenvector (the top one changed places since the last measurement) it still
    finds the top for most seeds (84 of 100), because the warm start keeps a random half; the
    others stop on the second eigenvalue, whose residual meets the rule first."""
    diagonal = torch.linspace(0.01, 1.0, 2000, dtype=torch.float64)
    diagonal[-2:] = torch.tensor([1.1, 1.3], dtype=torch.float64)
    product = diagonal.mul
    cold = lanczos(product, random_start_vector(2000, 0, torch.device("cpu")), tol=1e-2,
                   max_iter=200)
    top, second = torch.eye(2000, dtype=torch.float64)[[-1, -2]]
    noise = torch.randn(2000, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    warm = lanczos(product, warm_start_vector(top + 1e-3 * noise, 0), tol=1e-2, max_iter=200)
    moved = lanczos(product, warm_start_vector(second, 0), tol=1e-2, max_iter=200)
    assert cold.eigenvalue == pytest.approx(1.3, rel=1e-2) and cold.n_hvp == 9
    assert warm.eigenvalue == pytest.approx(1.3, rel=1e-2) and warm.n_hvp == 5
    assert moved.eigenvalue == pytest.approx(1.3, rel=1e-2)
    found = sum(lanczos(product, warm_start_vector(second, seed), tol=1e-2,
                        max_iter=200).eigenvalue > 1.2 for seed in range(100))
    assert found == 84


def test_warm_start_through_the_public_function() -> None:
    model, x, y = prepared("mlp")
    expected = top_eigenvalue(reference_hessian("mlp"))
    first = hessian_top_eigenvalue(model, x, y, tol=1e-6, max_iter=500, return_info=True)
    again = hessian_top_eigenvalue(model, x, y, tol=1e-6, max_iter=500, start=first.vector,
                                   return_info=True)
    assert again.eigenvalue == pytest.approx(expected, rel=1e-6)


def test_state_is_restored() -> None:
    model, x, y = prepared("bn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    hessian_top_eigenvalue(model, x, y, train_mode=True)
    hessian_trace(model, x, y, max_samples=3, min_samples=1, tol=0.9)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hutchinson_trace_within_its_reported_error(name: str) -> None:
    model, x, y = prepared(name)
    expected = float(reference_hessian(name).trace())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = hessian_trace(model, x, y, tol=0.05, max_samples=100, seed=1)
    assert result.n_samples >= 10
    assert abs(result.trace - expected) <= 3.0 * result.std_error
    if result.converged:
        assert result.std_error <= 0.05 * abs(result.trace)


def test_bad_arguments() -> None:
    model, x, y = prepared("mlp")
    with pytest.raises(ConfigError, match="tol"):
        hessian_top_eigenvalue(model, x, y, tol=0.0)
    with pytest.raises(ConfigError, match="max_iter"):
        hessian_top_eigenvalue(model, x, y, max_iter=0)
    with pytest.raises(ConfigError, match="method"):
        hessian_top_eigenvalue(model, x, y, method="arnoldi")
    with pytest.raises(ConfigError, match="hvp"):
        hessian_top_eigenvalue(model, x, y, hvp="finite_differences")
    with pytest.raises(ConfigError, match="start must be a non-zero vector of 51"):
        hessian_top_eigenvalue(model, x, y, start=torch.ones(7))
    with pytest.raises(ConfigError, match="params"):
        hessian_top_eigenvalue(model, x, y, params=[torch.zeros(3, requires_grad=True)])
    with pytest.raises(ConfigError, match="min_samples"):
        hessian_trace(model, x, y, min_samples=20, max_samples=10)
