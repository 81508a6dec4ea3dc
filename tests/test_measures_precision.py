"""The Gram's checks scale with the rounding of the products behind the batch gradient."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.measures import gram, per_sample_gram
from tune_batchdyn.measures.precision import (
    TF32_ROUNDING,
    check_tolerance,
    module_rounding,
    product_rounding,
    tf32_allowed,
)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device name needs no GPU
_LEVELS = (torch.backends, torch.backends.cudnn, torch.backends.cudnn.conv,
           torch.backends.cudnn.rnn, torch.backends.cuda.matmul)


@pytest.fixture(autouse=True)
def _precision_settings_restored():
    """Tests set PyTorch's TF32 settings directly (pytest's monkeypatch cannot undo these
    properties on every pytest version); leave them exactly as found."""
    saved = [level.fp32_precision for level in _LEVELS]
    yield
    for level, value in zip(_LEVELS, saved, strict=True):
        level.fp32_precision = value


def test_float32_on_the_cpu_rounds_at_its_machine_epsilon() -> None:
    assert product_rounding(torch.float32, CPU, convolution=True) == 2.0**-23
    assert product_rounding(torch.float64, CPU, convolution=False) == 2.0**-52
    assert product_rounding(torch.bfloat16, CPU, convolution=False) == 2.0**-7
    assert product_rounding(torch.int64, CPU, convolution=False) == 0.0


def test_cuda_float32_rounds_at_tf32_where_pytorch_allows_it() -> None:
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = False
    assert product_rounding(torch.float32, CUDA, convolution=True) == TF32_ROUNDING == 2.0**-10
    assert product_rounding(torch.float32, CUDA, convolution=False) == 2.0**-23
    assert product_rounding(torch.float64, CUDA, convolution=True) == 2.0**-52
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = True
    assert product_rounding(torch.float32, CUDA, convolution=True) == 2.0**-23
    assert product_rounding(torch.float32, CUDA, convolution=False) == TF32_ROUNDING


@pytest.mark.parametrize("conv, matmul, expected", [
    ("tf32", "none", (True, False)),     # PyTorch's defaults
    ("ieee", "tf32", (False, True)),
    ("none", "ieee", (False, False)),
])
def test_per_operator_precision_settings_decide(conv, matmul, expected) -> None:
    # set through the new API alone: the legacy flags would raise on a mix (conv != rnn)
    torch.backends.cudnn.conv.fp32_precision = conv
    torch.backends.cuda.matmul.fp32_precision = matmul
    assert (tf32_allowed(convolution=True), tf32_allowed(convolution=False)) == expected
    rounding = product_rounding(torch.float32, CUDA, convolution=True)
    assert rounding == (TF32_ROUNDING if expected[0] else 2.0**-23)


def test_global_precision_applies_where_the_operator_says_none() -> None:
    torch.backends.cudnn.conv.fp32_precision = "none"
    torch.backends.cudnn.fp32_precision = "none"
    torch.backends.fp32_precision = "tf32"
    assert tf32_allowed(convolution=True)


def test_a_model_rounds_at_its_coarsest_trainable_layer() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2).to(torch.bfloat16))
    assert module_rounding(model) == 2.0**-7
    model[1].requires_grad_(False)  # frozen layers enter no gradient
    assert module_rounding(model) == 2.0**-23
    assert module_rounding(nn.ReLU()) == 0.0


def test_tolerance_is_the_float32_floor_or_ten_units_of_coarser_rounding() -> None:
    assert check_tolerance(1e-3, 2.0**-23) == 1e-3
    assert math.isclose(check_tolerance(1e-3, TF32_ROUNDING), 10 * 2.0**-10)


def _sum_check(found: float, expected: float, rounding: float) -> None:
    layer = gram.plan_layers(nn.Linear(1, 1, bias=False))[0]
    grads = {id(layer.module.weight): torch.tensor([[math.sqrt(expected)]])}
    share = torch.tensor([[found]], dtype=torch.float64)
    gram._check_layer_sum(layer, share, grads, check_tolerance(gram.SUM_TOLERANCE, rounding))


def test_sum_check_accepts_the_tf32_gap_measured_on_an_h200() -> None:
    # ResNet-20's layers.6.conv1 on an H200 (cuDNN in TF32): 341.674 against 342.156
    _sum_check(341.674, 342.156, TF32_ROUNDING)
    with pytest.raises(ConfigError, match="add up to 341.674, .* than the 1.0e-03 relative"):
        _sum_check(341.674, 342.156, 2.0**-23)


def test_tied_weights_are_still_refused_at_the_tf32_tolerance(monkeypatch) -> None:
    monkeypatch.setattr(gram, "module_rounding", lambda module: TF32_ROUNDING)
    torch.manual_seed(5)
    first, second = nn.Linear(4, 4), nn.Linear(4, 4)
    second.weight = first.weight
    model = nn.Sequential(first, nn.Tanh(), second, nn.Tanh(), nn.Linear(4, 3))
    with pytest.raises(ConfigError, match="tied"):
        per_sample_gram(model, torch.randn(4, 4), torch.randint(0, 3, (4,)))


def test_autocast_rounds_float32_products_at_its_dtype() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert product_rounding(torch.float32, CPU, convolution=True) == 2.0**-7
        assert product_rounding(torch.float64, CPU, convolution=True) == 2.0**-52
    assert product_rounding(torch.float32, CPU, convolution=True) == 2.0**-23


def test_gram_under_bfloat16_autocast_passes_its_checks_and_stays_close() -> None:
    # at float32's tolerance a batch-norm layer's sums were 1.5e-3 apart: refused as tied
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 10, (32,))
    exact = per_sample_gram(model, x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rounded = per_sample_gram(model, x, y, check=True)
    assert 1e-4 < float((rounded - exact).norm() / exact.norm()) < 5e-2
