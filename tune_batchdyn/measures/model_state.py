"""Leave a model exactly as it was: what every measurement runs inside, and the shared loss.

A measurement may run forward passes (which update batch-norm running statistics and draw
dropout masks) and may switch train/eval mode; `preserved_state` restores every module's mode,
every buffer's value and the random number generators afterwards, so measuring never changes
the training run it observes (buffers are written back in place, so call a measure
outside, not between, a training step's forward and backward). Parameters, ``requires_grad``
and ``.grad`` are never touched by the measures (they differentiate with
``torch.autograd.grad``), so they need no restoring.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tune_batchdyn.errors import ConfigError

#: A loss returning one value per sample, shape (B,).
PerSampleLoss = Callable[[Tensor, Tensor], Tensor]


def cross_entropy_per_sample(outputs: Tensor, targets: Tensor) -> Tensor:
    """The default loss: softmax cross-entropy, one value per sample (reduction "none")."""
    return F.cross_entropy(outputs, targets, reduction="none")


def per_sample_losses(
    loss_fn: PerSampleLoss | None, outputs: Tensor, targets: Tensor, batch_size: int
) -> Tensor:
    """ℓᵢ for each sample, checked to be a vector of length B."""
    losses = (loss_fn or cross_entropy_per_sample)(outputs, targets)
    if not isinstance(losses, Tensor) or tuple(losses.shape) != (batch_size,):
        shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
        raise ConfigError(
            f"loss_fn must return one loss per sample, shape ({batch_size},); got {shape}. "
            "Use reduction='none'."
        )
    return losses


@contextmanager
def preserved_state(model: nn.Module, *tensors: Tensor) -> Iterator[None]:
    """Restore modes, buffers and the RNG streams (CPU and the devices in use) on exit."""
    modes = [(module, module.training) for module in model.modules()]
    # .data: an alias with its own version counter, so that writing the values back leaves
    # the buffers' versions alone and autograd sees them as never modified
    buffers = [buffer.data for buffer in model.buffers()]
    saved = [torch.empty_like(buffer) for buffer in buffers]
    if buffers:  # one call for all of them, not one operator call per buffer (57 on a resnet20)
        torch._foreach_copy_(saved, buffers)
    devices = {t.device for t in (*model.parameters(), *buffers, *tensors)}
    accelerator_type = next((d.type for d in devices if d.type != "cpu"), "cuda")
    indices = sorted({d.index or 0 for d in devices if d.type == accelerator_type})
    try:
        with torch.random.fork_rng(devices=indices, device_type=accelerator_type):
            yield
    finally:
        for module, training in modes:
            module.training = training
        if buffers:  # every buffer, unconditionally: comparing first would wait for the GPU
            torch._foreach_copy_(buffers, saved)
