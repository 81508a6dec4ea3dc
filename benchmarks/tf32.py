"""How much TF32 convolutions move the Gram and c_k, emulated on the CPU.

On CUDA, PyTorch lets cuDNN run float32 convolutions in TF32 by default (a 10-bit mantissa).
On an H200 the ResNet-20 Gram was 6.6e-3 (relative Frobenius) from the CPU's for the same
weights and batch (`measures.py --device cuda`). Whether that matters depends on c_k, which
reads the smallest eigenvalue. This benchmark rounds every convolution's operands to TF32
(inputs, weights and output gradients, in the forward and in both backward products) on the
CPU, at initialisation and after SGD steps on the batch (as a net memorises, per-sample
gradients shrink and rounding weighs more), and prints the Gram's distance and both c_k.

    python benchmarks/tf32.py                      # cnn and resnet20, 0 and 200 steps
    python benchmarks/tf32.py --models cnn --steps 0 50
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from measures import make_case
from torch import Tensor, nn
from torch.nn.grad import conv2d_input, conv2d_weight

from tune_batchdyn.measures import per_sample_gram, truncated_condition


def tf32(t: Tensor) -> Tensor:
    """``t`` (float32) rounded to nearest at TF32's 10 explicit mantissa bits."""
    bits = t.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


class _TF32Conv(torch.autograd.Function):
    """conv2d whose three products (forward, input gradient, weight gradient) take TF32
    operands, as cuDNN's TF32 kernels do (accumulation stays float32)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, conv: nn.Conv2d) -> Tensor:
        ctx.conv = conv
        ctx.save_for_backward(x, weight)
        return F.conv2d(tf32(x), tf32(weight), None, conv.stride, conv.padding, conv.dilation,
                        conv.groups)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        x, weight = ctx.saved_tensors
        c = ctx.conv
        grad_x = conv2d_input(x.shape, tf32(weight), tf32(grad), c.stride, c.padding,
                              c.dilation, c.groups)
        grad_w = conv2d_weight(tf32(x), weight.shape, tf32(grad), c.stride, c.padding,
                               c.dilation, c.groups)
        return grad_x, grad_w, None


def with_tf32_convolutions(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose bias-free Conv2d layers compute in emulated TF32."""
    model = copy.deepcopy(model)
    for conv in model.modules():
        if isinstance(conv, nn.Conv2d):
            if conv.bias is not None:
                raise ValueError("with_tf32_convolutions: only bias-free Conv2d layers")
            conv.forward = lambda x, c=conv: _TF32Conv.apply(x, c.weight, c)
    return model


def compare(name: str, steps: int) -> tuple[float, float, float]:
    """(relative Gram distance, c_k float32, c_k TF32) after ``steps`` SGD steps on the batch."""
    model, x, y = make_case(name, (3, 32, 32))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    exact = per_sample_gram(model, x, y, check=False)
    rounded = per_sample_gram(with_tf32_convolutions(model), x, y, check=False)
    distance = float((rounded - exact).norm() / exact.norm())
    return distance, truncated_condition(exact), truncated_condition(rounded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "resnet20"])
    parser.add_argument("--steps", nargs="+", type=int, default=[0, 200])
    args = parser.parse_args()
    print(f"{'model':<10} {'steps':>5} {'Gram rel':>9} {'c float32':>10} {'c TF32':>10} "
          f"{'c change':>9}")
    for name in args.models:
        for steps in args.steps:
            distance, exact, rounded = compare(name, steps)
            print(f"{name:<10} {steps:5d} {distance:9.1e} {exact:10.4g} {rounded:10.4g} "
                  f"{rounded / exact - 1:+9.2%}")


if __name__ == "__main__":
    main()
