"""Hessian-vector products of a model's mean batch loss, on flat vectors.

H = ∇²_θ L(θ) with L = (1/B) Σᵢ ℓᵢ the mini-batch loss the seed (hessian-adaptive-batch-abs)
differentiates, θ all trainable parameters or a chosen subset (its *block Hessian*: the
rows and columns of those parameters). Two implementations:

- "double_backward": ∇L built once with ``create_graph=True``, each product a backward pass
  through that retained graph, Hv = ∂(∇L·v)/∂θ. Fastest on CPU in our probes (benchmarks/
  measures.py measures it), at the memory cost of the retained double graph.
- "forward_over_reverse": ``torch.func.jvp`` of ``torch.func.grad``; every product redoes the
  forward and backward with dual numbers, keeping no graph between products (less memory).

Products run in the parameters' dtype and come back in the dtype of the vector given:
Lanczos and power iteration keep their vectors in `vector_dtype` (the parameters' dtype, at
least float32), Hutchinson's estimator sums in float64. `hessian_operator` gives the product
inside the measurement's context: eval mode by default, as the seed's authors' code
(PyHessian) takes it, so batch-norm uses its running statistics, dropout is off and L is a
fixed function of θ; ``train_mode=True`` keeps the model's mode (batch statistics; the running
ones are restored afterwards).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp

from tune_batchdyn.errors import ConfigError, check_choice
from tune_batchdyn.measures.checks import check_batch, check_trainable
from tune_batchdyn.measures.model_state import PerSampleLoss, per_sample_losses, preserved_state

HVP_CHOICES = ("double_backward", "forward_over_reverse")

HessianVectorProduct = Callable[[Tensor], Tensor]


def select_parameters(model: nn.Module, params: Iterable[Tensor] | None) -> list[Tensor]:
    """The trainable parameters of ``model`` to differentiate: all, or the given subset."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if params is None:
        check_trainable(model)
        return trainable
    chosen = list({id(p): p for p in params}.values())  # a tied weight listed twice is one
    known = {id(p) for p in trainable}
    if not chosen or any(id(p) not in known for p in chosen):
        raise ConfigError(
            "params must be a non-empty subset of the model's trainable parameters "
            "(e.g. list(model[-1].parameters())); got parameters outside it or none."
        )
    return chosen


def vector_dtype(params: list[Tensor]) -> torch.dtype:
    """The dtype of the iterative methods' vectors: the parameters' (promoted), at least float32.

    A product is no more precise than the parameters' dtype, so float64 vectors for a float32
    model only double the memory traffic of the re-orthogonalisation, which is half of a small
    net's λmax time in float64 (benchmarks/measures.py).
    """
    dtype = torch.float32
    for p in params:
        dtype = torch.promote_types(dtype, p.dtype)
    return dtype


def _split(vector: Tensor, params: list[Tensor]) -> list[Tensor]:
    pieces = torch.split(vector, [p.numel() for p in params])
    return [piece.view_as(p).to(p.dtype) for piece, p in zip(pieces, params, strict=True)]


def _flat(tensors: Iterable[Tensor | None], params: list[Tensor], dtype: torch.dtype) -> Tensor:
    """The pieces, cast to ``dtype``, written into one new flat vector (no per-piece copy)."""
    flat = torch.empty(sum(p.numel() for p in params), dtype=dtype,
                       device=params[0].device)
    for piece, t in zip(torch.split(flat, [p.numel() for p in params]), tensors, strict=True):
        if t is None:
            piece.zero_()
        else:
            piece.copy_(t.reshape(-1))
    return flat


def make_hvp(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: PerSampleLoss | None,
    params: list[Tensor],
    method: str = "double_backward",
) -> HessianVectorProduct:
    """v ↦ Hv for the mean loss of this batch at the model's current mode and parameters."""
    check_choice("hvp", method, HVP_CHOICES)
    batch = inputs.shape[0]
    if method == "double_backward":
        with torch.enable_grad():
            loss = per_sample_losses(loss_fn, model(inputs), targets, batch).mean()
            gradient = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        live = [
            (g, p)
            for g, p in zip(gradient, params, strict=True)
            if g is not None and g.requires_grad
        ]

        def product(vector: Tensor) -> Tensor:
            pieces = dict(zip(map(id, params), _split(vector, params), strict=True))
            found = (
                torch.autograd.grad(
                    [g for g, _ in live],
                    params,
                    grad_outputs=[pieces[id(p)] for _, p in live],
                    retain_graph=True,
                    allow_unused=True,
                )
                if live
                else [None] * len(params)
            )
            return _flat(found, params, vector.dtype)

        return product

    names = {id(p): n for n, p in model.named_parameters()}
    keys = [names[id(p)] for p in params]
    # the other parameters are constants of the transform (detached, as a block Hessian holds)
    others = {n: p.detach() for n, p in model.named_parameters() if n not in keys}
    buffers = {n: b.clone() for n, b in model.named_buffers()}

    def mean_loss(chosen: dict) -> Tensor:
        outputs = functional_call(model, (chosen, others, buffers), (inputs,))
        return per_sample_losses(loss_fn, outputs, targets, batch).mean()

    primal = {k: p.detach() for k, p in zip(keys, params, strict=True)}

    def product(vector: Tensor) -> Tensor:
        tangent = dict(zip(keys, _split(vector, params), strict=True))
        with torch.enable_grad():
            _, found = jvp(grad(mean_loss), (primal,), (tangent,))
        return _flat((found[k] for k in keys), params, vector.dtype)

    return product


@contextmanager
def hessian_operator(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: PerSampleLoss | None,
    params: list[Tensor],
    method: str = "double_backward",
    train_mode: bool = False,
) -> Iterator[HessianVectorProduct]:
    """v ↦ Hv inside the measurement's context: eval mode unless ``train_mode`` (batch-norm
    on its running statistics, dropout off), and modes, buffers and RNG restored on exit."""
    check_batch(inputs, targets)
    with preserved_state(model, inputs):
        if not train_mode:
            model.eval()
        yield make_hvp(model, inputs, targets, loss_fn, params, method)
