"""One parameter update, split into micro-batches when the batch does not fit in memory.

Gradients of the micro-batches are accumulated with weights ``len(chunk) / len(batch)``, so the
update equals the one big batch's for models without batch-norm. With batch-norm in training
mode the statistics are per micro-batch (ghost batch-norm). An out-of-memory error halves the
micro-batch and retries the same update (logged once); only a micro-batch of one that still
fails raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

log = logging.getLogger("tune_batchdyn.train")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA/MPS out-of-memory errors and the CPU allocator's failure."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)


def optimizer_lr(optimizer: torch.optim.Optimizer) -> float:
    """The optimizer's learning rate: its groups' rates averaged by parameter count (one
    number for the record and for LK when the rates are per layer, as with ``rmsgd``; the
    common rate otherwise)."""
    rates, counts = [], []
    for group in optimizer.param_groups:
        rates.append(float(group["lr"]))
        counts.append(sum(p.numel() for p in group["params"]))
    if len(set(rates)) == 1 or not sum(counts):
        return rates[0]
    return sum(r * c for r, c in zip(rates, counts, strict=True)) / sum(counts)


class Stepper:
    """Runs optimisation steps; remembers the micro-batch size that fits."""

    def __init__(self, model: nn.Module, loss_fn: LossFn,
                 micro_batch_size: int | None = None) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.micro_batch_size = micro_batch_size
        self._logged = False

    def step(self, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
             weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Update once on (x, y); returns the (weighted) mean loss and the (weighted) count of
        errors, both as detached 0-d tensors on the device (no host synchronisation). With
        importance weights both are the same unbiased estimate of the uniform-sample value."""
        shrunk = False
        while True:
            chunk = min(self.micro_batch_size or len(x), len(x))
            try:
                result = self._accumulate(optimizer, x, y, weights, chunk)
            except RuntimeError as err:
                if not is_out_of_memory(err) or chunk == 1:
                    raise
                optimizer.zero_grad(set_to_none=True)
                if x.is_cuda:
                    torch.cuda.empty_cache()
                self.micro_batch_size, shrunk = chunk // 2, True
                continue
            if shrunk and not self._logged:
                log.warning("batch of %d did not fit in memory: running it as micro-batches of %d "
                            "with gradient accumulation (batch-norm statistics become per "
                            "micro-batch)", len(x), chunk)
                self._logged = True
            return result

    def _accumulate(self, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                    weights: torch.Tensor | None,
                    chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Few tensor operations per step: at small batches on CPU each costs as much as the
        arithmetic (a whole batch with uniform weights takes the mean directly)."""
        optimizer.zero_grad(set_to_none=True)
        n = len(x)
        total_loss: torch.Tensor | None = None
        wrong: torch.Tensor | None = None
        for start in range(0, n, chunk):
            xc, yc = x[start:start + chunk], y[start:start + chunk]
            logits = self.model(xc)
            losses = self.loss_fn(logits, yc)
            if weights is not None:
                losses = losses * weights[start:start + chunk]
            loss = losses.mean() if len(xc) == n else losses.sum() / n
            loss.backward()
            missed = logits.detach().argmax(dim=1).ne(yc)
            chunk_wrong = (missed.sum() if weights is None
                           else (missed * weights[start:start + chunk]).sum())
            total_loss = loss.detach() if total_loss is None else total_loss + loss.detach()
            wrong = chunk_wrong if wrong is None else wrong + chunk_wrong
        optimizer.step()
        return total_loss, wrong
