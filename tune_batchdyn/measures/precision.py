"""The rounding of the products behind a layer's gradient, for the Gram's consistency checks.

`per_sample_gram` checks its sums against the batch gradient that autograd computes. On the
CPU that gradient is float32 products, a relative rounding near 1e-7. On CUDA, PyTorch lets
cuDNN run float32 convolutions in TF32 by default (``torch.backends.cudnn.conv.fp32_precision``,
formerly ``allow_tf32``), a 10-bit mantissa, and float32 matmuls too where the user allows it
(``torch.backends.cuda.matmul.fp32_precision``, ``torch.set_float32_matmul_precision``): the
batch gradient then differs from ours by about 1e-3 (1.4e-3 measured on ResNet-20 on an
H200), which is rounding, not a missed parameter use. Inside ``torch.autocast`` the products
run in the autocast dtype (bfloat16 by default on the CPU, float16 on CUDA) whatever the
parameters' dtype. The checks scale with this.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

#: Unit roundoff of TF32 products (10 explicit mantissa bits).
TF32_ROUNDING = 2.0**-10


def product_rounding(dtype: torch.dtype, device: torch.device, convolution: bool) -> float:
    """Relative rounding of one product of tensors of ``dtype`` on ``device``: the dtype's
    machine epsilon; for float32 the autocast dtype's inside ``torch.autocast``, or TF32's
    where CUDA is allowed to use it (convolutions by cuDNN's flag, other products by the
    matmul flag)."""
    if not dtype.is_floating_point:
        return 0.0
    if dtype == torch.float32 and torch.is_autocast_enabled(device.type):
        return torch.finfo(torch.get_autocast_dtype(device.type)).eps
    if device.type == "cuda" and dtype == torch.float32 and tf32_allowed(convolution):
        return TF32_ROUNDING
    return torch.finfo(dtype).eps


def tf32_allowed(convolution: bool) -> bool:
    """Whether CUDA may run float32 convolutions (or matmuls) in TF32. PyTorch's per-operator
    ``fp32_precision`` settings decide where they exist: the first that is not ``"none"``,
    from the operator up to the global one ("none" everywhere: not TF32). The legacy
    ``allow_tf32`` flags are read only on a torch without them: they raise once the two APIs
    were mixed."""
    backends = torch.backends
    levels = ((backends.cudnn.conv, backends.cudnn, backends) if convolution
              else (backends.cuda.matmul, backends))
    if not hasattr(levels[0], "fp32_precision"):
        return bool(backends.cudnn.allow_tf32 if convolution else backends.cuda.matmul.allow_tf32)
    for level in levels:
        if level.fp32_precision != "none":
            return level.fp32_precision == "tf32"
    return False


def module_rounding(module: nn.Module) -> float:
    """The coarsest `product_rounding` among the trainable parameters of ``module`` and its
    sub-modules."""
    return max((product_rounding(p.dtype, p.device, isinstance(owner, _ConvNd))
                for owner in module.modules()
                for p in owner.parameters(recurse=False) if p.requires_grad), default=0.0)


def check_tolerance(floor: float, rounding: float) -> float:
    """A consistency check's relative tolerance: ``floor`` (set for float32), or ten units of
    a coarser rounding, whichever is larger; a real mistake is orders of magnitude above."""
    return max(floor, 10.0 * rounding)
