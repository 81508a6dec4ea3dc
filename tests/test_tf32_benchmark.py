"""benchmarks/tf32.py: TF32 rounding and the emulated convolution it measures c_k with."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _benchmarks import BENCHMARKS, load_benchmark
from torch import nn


@pytest.fixture(scope="module")
def bench():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))  # it imports measures.make_case
        yield load_benchmark("tf32")


def test_rounds_to_ten_mantissa_bits_to_nearest(bench) -> None:
    x = torch.tensor([1.0, 1 + 2.0**-10, 1 + 2.0**-11 + 2.0**-20, 1 + 2.0**-12, -3.0 - 2.0**-12])
    assert bench.tf32(x).tolist() == [1.0, 1 + 2.0**-10, 1 + 2.0**-10, 1.0, -3.0]


def test_emulated_conv_equals_the_conv_of_rounded_operands(bench) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    x = torch.randn(2, 3, 5, 5)
    emulated = bench.with_tf32_convolutions(conv)
    # operands already exact in TF32: the emulation is the plain convolution, gradients too
    weight = bench.tf32(conv.weight.detach()).requires_grad_()
    exact_x = bench.tf32(x.detach()).requires_grad_()
    emulated.weight.data.copy_(weight)
    out = emulated(exact_x)
    reference = F.conv2d(exact_x, weight, padding=1)
    assert torch.allclose(out, reference, rtol=1e-6, atol=1e-6)
    grad = bench.tf32(torch.randn_like(out))
    got = torch.autograd.grad(out, (exact_x, emulated.weight), grad)
    want = torch.autograd.grad(reference, (exact_x, weight), grad)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="bias-free"):
        bench.with_tf32_convolutions(nn.Conv2d(3, 4, 3))


def test_tf32_moves_the_cnn_gram_by_rounding_and_c_k_far_less(bench) -> None:
    distance, exact, rounded = bench.compare("cnn", steps=0)
    assert 1e-4 < distance < 3e-2  # TF32's rounding, not float32's (1e-7)
    assert abs(rounded / exact - 1) < 1e-2
