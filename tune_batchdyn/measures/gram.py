"""The per-sample gradient Gram matrix F̃ = JᵀJ (fisher-measures-dynamic-sampling, eq. 6).

Column i of J is sample i's gradient contribution: for every layer, the parameter gradient
built from sample i's own input and sample i's own output gradient of the *summed* per-sample
losses (not of loss/|B|: the seed's code undoes the mean reduction). The B columns add up to
the batch gradient. F̃ has the non-zero spectrum of the P×P Fisher JJᵀ and is accumulated
layer by layer, F̃ = Σ_l J_lᵀJ_l, so no P×B matrix of the whole model is ever formed.

Wiring (this module): forward hooks on the layers with trainable parameters record each call's
input, output and the output's gradient edge (the autograd node that produced it), one forward
and one ``torch.autograd.grad`` with respect to those edges for the output gradients (no
parameter gradients are computed and ``.grad`` is never touched). The edges are taken when the
output is made, so a later in-place operation on it (``ReLU(inplace=True)``) changes neither
the gradient we read nor the model's computation, and no output is copied. Then each layer's factor
(`factors`) gives its share of F̃ (`gram_products`). Layers of other types raise a
`ConfigError` naming them, or, with ``unsupported="torch.func"``, get their per-sample
gradients from ``torch.func`` (`func_fallback`: vmap over a vjp of the layer on each sample's
own inputs and output gradients; right only for layers that treat samples independently and
deterministically). The recording hooks run before the user's own forward hooks, so a hook
that changes a layer's output is differentiated through like any later operation.

What module hooks cannot see, ``check`` finds (on the first call for each model by default):
a parameter also used outside its module's call (``h @ embedding.weight``) breaks the sum of
the layer's per-sample contributions, which must equal its batch gradient; a tensor whose
size equals the batch's by coincidence (positions ``torch.arange(T)`` with T = B) taken for
per-sample makes a sub-batch's Gram differ from the block of the batch's (both in eval mode,
where samples are independent).

``exact=True`` instead takes the Jacobian of the per-sample loss vector by ``torch.func``
(``jacrev`` over ``functional_call``): ∂ℓᵢ/∂θ exactly, also through batch-norm's batch
statistics and tied weights, at the memory cost of B gradients at once.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge, get_gradient_edge
from torch.func import functional_call, jacrev
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._pytree import tree_flatten, tree_map

from tune_batchdyn.errors import ConfigError, check_choice
from tune_batchdyn.measures.checks import check_batch, check_trainable
from tune_batchdyn.measures.factors import (
    FactorBuilder,
    LayerCall,
    batch_first,
    builder_for,
    unsupported_reason,
)
from tune_batchdyn.measures.func_fallback import func_per_sample_gradients
from tune_batchdyn.measures.gram_products import (
    GramSum,
    gram_contribution,
    summed,
    symmetric_gram,
)
from tune_batchdyn.measures.model_state import (
    PerSampleLoss,
    per_sample_losses,
    preserved_state,
)
from tune_batchdyn.measures.precision import check_tolerance, module_rounding

UNSUPPORTED_CHOICES = ("error", "torch.func")


@dataclass
class _Call:
    """One forward call of a recorded layer: its inputs (with their versions, to detect a
    later in-place change), its outputs (flattened: LSTM's ``(out, (h, c))`` is three; None
    where not a tensor) and their gradient edges (None: no gradient)."""

    args: tuple
    kwargs: dict
    versions: tuple[int | None, ...]
    outputs: tuple[Tensor | None, ...]
    edges: tuple[GradientEdge | None, ...]


@dataclass
class _Layer:
    """A layer whose parameters enter J: maths by `builder`, or by torch.func if None."""

    name: str
    module: nn.Module
    builder: FactorBuilder | None
    calls: list[_Call] = field(default_factory=list)


def _trainable_direct(module: nn.Module) -> list[Tensor]:
    return [p for p in module.parameters(recurse=False) if p.requires_grad]


def plan_layers(model: nn.Module, unsupported: str = "error") -> list[_Layer]:
    """The layers carrying trainable parameters, each with the maths that handles it.

    A module of an unsupported type that owns trainable parameters raises `ConfigError`, or
    with ``unsupported="torch.func"`` is handled as a whole (its sub-modules included).
    """
    check_choice("unsupported", unsupported, UNSUPPORTED_CHOICES)
    layers: list[_Layer] = []

    def visit(name: str, module: nn.Module) -> None:
        direct = _trainable_direct(module)
        builder = builder_for(module)
        reason = unsupported_reason(module) if builder is not None else None
        if direct and builder is not None and reason is None:
            layers.append(_Layer(name, module, builder))
            return
        if direct:
            if unsupported == "error":
                why = reason or "no per-sample rule for this module type"
                raise ConfigError(
                    f"per_sample_gram: module {name or '<model>'!r} of type "
                    f"{type(module).__name__} owns trainable parameters but is not supported "
                    f"({why}). Pass unsupported='torch.func' to compute its per-sample "
                    "gradients with torch.func, or exact=True."
                )
            layers.append(_Layer(name, module, None))
            return
        for child_name, child in module.named_children():
            visit(f"{name}.{child_name}" if name else child_name, child)

    visit("", model)
    _check_untied(layers)
    return layers


def _check_untied(layers: list[_Layer]) -> None:
    """Tied parameters need cross terms between layers that per-layer products miss."""
    owner: dict[int, str] = {}
    for layer in layers:
        recurse = layer.builder is None
        for param in layer.module.parameters(recurse=recurse):
            if param.requires_grad and id(param) in owner and owner[id(param)] != layer.name:
                raise ConfigError(
                    f"per_sample_gram: a parameter is shared by modules {owner[id(param)]!r} "
                    f"and {layer.name!r} (tied weights); use exact=True for such models (in a "
                    "trial: measures without 'fisher')."
                )
            owner[id(param)] = layer.name


def _detached(value: object) -> object:
    return value.detach() if isinstance(value, Tensor) else value


def _record_hook(layer: _Layer):
    def hook(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        detached = tuple(_detached(a) for a in args)
        versions = tuple(a._version if isinstance(a, Tensor) else None for a in args)
        # the common case (one tensor out, no keyword arguments) skips the pytree walks: on a
        # GPU this hook's Python time is part of what the measurement waits for
        leaves = (output,) if isinstance(output, Tensor) else tree_flatten(output)[0]
        outputs = tuple(t if isinstance(t, Tensor) else None for t in leaves)
        edges = tuple(
            get_gradient_edge(t) if t is not None and t.requires_grad else None for t in outputs
        )
        kept = tree_map(_detached, kwargs) if kwargs else {}
        layer.calls.append(_Call(detached, kept, versions, outputs, edges))

    return hook


def _check_inputs_unchanged(layers: list[_Layer]) -> None:
    """A layer input changed in place after the layer used it would give wrong factors."""
    for layer in layers:
        for call in layer.calls:
            for arg, version in zip(call.args, call.versions, strict=True):
                if version is not None and arg._version != version:
                    raise ConfigError(
                        f"per_sample_gram: the input of module {layer.name or '<model>'!r} "
                        f"({type(layer.module).__name__}) was modified in place after the "
                        "module used it; make that operation out of place (inplace=False)."
                    )


def _layer_call(layer: _Layer, call: _Call, grad: Tensor, batch_size: int) -> LayerCall:
    x, grad = batch_first(layer.module, call.args[0], grad, batch_size)
    return layer.builder(layer.module, x, grad)


def _layer_calls(layer: _Layer, grads: list, batch: int) -> list[LayerCall]:
    """The layer's calls that reached the loss, each described for its share of F̃; for a
    layer without a per-sample rule, its ψ from torch.func summed over the calls."""
    live = [
        (call, g)
        for call, g in zip(layer.calls, grads, strict=True)
        if any(x is not None for x in g)
    ]
    if not live:
        return []
    if layer.builder is None:
        return [summed(
            func_per_sample_gradients(layer.name, layer.module, (call.args, call.kwargs),
                                      call.outputs, g, batch)
            for call, g in live)]
    return [_layer_call(layer, call, g[0], batch) for call, g in live]


def per_sample_gram(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: PerSampleLoss | None = None,
    *,
    exact: bool = False,
    unsupported: str = "error",
    check: bool | None = None,
) -> Tensor:
    """F̃ = JᵀJ ∈ R^{B×B} (float64) of the per-sample gradient contributions on one batch.

    ``loss_fn(outputs, targets)`` returns one loss per sample (default: cross-entropy with
    reduction "none"); J holds the gradients of those per-sample losses. The model's mode is
    used as it is (training mode during training: batch-norm with batch statistics, see the
    module docstring); modes, buffers (running statistics), RNG, hooks, ``requires_grad`` and
    ``.grad`` are as before afterwards. ``unsupported``: "error" or "torch.func" for layers
    without a per-sample rule; ``exact``: the exact ∂ℓᵢ/∂θ by torch.func. ``check``: also
    verify what module hooks cannot see (module docstring), raising ``ConfigError`` naming the
    cause; about three Grams' time, so by default (None) only on the first call for each model.

    Example::

        gram = per_sample_gram(model, x, y)          # (B, B), float64
        c_k = truncated_condition(gram)
    """
    check_choice("unsupported", unsupported, UNSUPPORTED_CHOICES)
    check_batch(inputs, targets)
    check_trainable(model)
    if torch.is_inference_mode_enabled():
        raise ConfigError("per_sample_gram differentiates the loss: call it outside "
                          "torch.inference_mode() (torch.no_grad() around it is fine).")
    if inputs.is_inference():  # made under inference_mode: autograd cannot save it
        inputs = inputs.clone()
    if exact:
        return exact_gram(model, inputs, targets, loss_fn)
    if check is None:
        check = model not in _CHECKED
    if check:  # first: a mistaken batch dimension also breaks the sums
        _check_samples_independent(model, inputs, targets, loss_fn, unsupported)
    gram = _hooked_gram(model, inputs, targets, loss_fn, unsupported, check_sums=check)
    if check:
        _CHECKED.add(model)
    return gram


#: The models `per_sample_gram` has checked (held weakly: a deleted model is forgotten).
_CHECKED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def _hooked_gram(model: nn.Module, inputs: Tensor, targets: Tensor,
                 loss_fn: PerSampleLoss | None, unsupported: str,
                 check_sums: bool = False) -> Tensor:
    """F̃ by module hooks, in the model's mode; ``check_sums``: each layer's contributions
    must add up to its batch gradient."""
    batch = inputs.shape[0]
    layers = plan_layers(model, unsupported)
    gram = GramSum(batch, inputs.device)
    handles = [
        layer.module.register_forward_hook(_record_hook(layer), with_kwargs=True, prepend=True)
        for layer in layers
    ]
    try:
        with preserved_state(model, inputs), torch.enable_grad():
            losses = per_sample_losses(loss_fn, model(inputs), targets, batch)
            _check_inputs_unchanged(layers)
            grads = _output_gradients(layers, losses, check_sums)
    finally:
        for handle in handles:
            handle.remove()
    for layer in layers:
        per_call = [tuple(grads.get(id(t)) for t in call.outputs) for call in layer.calls]
        calls = _layer_calls(layer, per_call, batch)
        if calls and isinstance(calls[0], Tensor) and not check_sums:
            gram.add_gradients(summed(calls))  # ψ itself: pooled with the other narrow ones
            continue
        share = gram_contribution(calls) if calls else None
        if check_sums:
            _check_layer_sum(layer, share, grads,
                             check_tolerance(SUM_TOLERANCE, module_rounding(layer.module)))
        if share is not None:
            gram.add(share)
    return gram.total()


#: Relative Frobenius gap between a sub-batch's Gram and the block of the batch's that the
#: independence check tolerates for float32 (a mistaken batch dimension is far larger); ten
#: units of a coarser rounding (TF32 on CUDA, half precision) where the model's products use it.
BLOCK_TOLERANCE = 1e-3


def _check_samples_independent(model: nn.Module, inputs: Tensor, targets: Tensor,
                               loss_fn: PerSampleLoss | None, unsupported: str) -> None:
    """In eval mode, where samples are independent, the Gram of the first h samples is the
    top-left block of the batch's, unless some module took a dimension whose size equals
    the batch's for the batch. Two sub-batch sizes (B − 1, then B // 2) are tried before
    raising, since a sub-batch's own size may collide with another dimension."""
    batch = inputs.shape[0]
    couples = any(isinstance(m, _BatchNorm) and not m.track_running_stats
                  for m in model.modules())  # batch statistics in eval mode too
    if batch < 2 or couples:
        return
    with preserved_state(model, inputs):
        model.eval()
        full = _hooked_gram(model, inputs, targets, loss_fn, unsupported)
        if not bool(torch.isfinite(full).all()):
            return  # a diverged model: nothing to compare
        found = []
        for size in dict.fromkeys((batch - 1, batch // 2)):
            try:
                part = _hooked_gram(model, inputs[:size], targets[:size], loss_fn, unsupported)
            except ConfigError as err:
                found.append(f"on the first {size} samples: {err}")
                continue
            block = full[:size, :size]
            gap = float((part - block).norm() / block.norm().clamp_min(1e-300))
            if gap <= check_tolerance(BLOCK_TOLERANCE, module_rounding(model)):
                return
            found.append(f"the first {size} samples' Gram differs from their block of the "
                         f"batch's by {gap:.2g} (relative)")
    raise ConfigError(
        f"per_sample_gram: samples are not measured independently ({found[0]}). A "
        f"module probably took a dimension of size {batch} for the batch that is not (positions"
        f" torch.arange(T) with T = B, a sequence-first tensor with T = B); use exact=True, or "
        "a batch size that differs from the model's other sizes.")


#: Relative gap between a layer's 1ᵀF̃ₗ1 and its squared batch gradient that ``check``
#: tolerates for float32 products (a missed use of a parameter is far larger); ten units of a
#: coarser rounding (TF32 on CUDA, half precision) where the layer's products use it.
SUM_TOLERANCE = 1e-3


def fallback_modules(model: nn.Module) -> list[str]:
    """``"name (Type)"`` of each module that ``unsupported="torch.func"`` hands to torch.func:
    it owns trainable parameters and no per-sample rule covers it."""
    return [f"{layer.name or '<model>'} ({type(layer.module).__name__})"
            for layer in plan_layers(model, "torch.func") if layer.builder is None]


def _layer_parameters(layer: _Layer) -> list[Tensor]:
    return [p for p in layer.module.parameters(recurse=layer.builder is None) if p.requires_grad]


def _check_layer_sum(layer: _Layer, share: Tensor | None, grads: dict[int, Tensor | None],
                     tolerance: float) -> None:
    expected = sum(float(g.double().square().sum()) for p in _layer_parameters(layer)
                   if (g := grads.get(id(p))) is not None)
    found = 0.0 if share is None else float(share.sum())
    # the per-sample scale floors the tolerance: a batch gradient that cancels (a shift before
    # batch-norm) leaves only rounding in both sums
    scale = 0.0 if share is None else tolerance * float(share.trace())
    if abs(found - expected) > tolerance * max(expected, scale, 1e-30):
        raise ConfigError(
            f"per_sample_gram: the per-sample contributions of module {layer.name or '<model>'!r}"
            f" ({type(layer.module).__name__}) add up to {found:.6g}, not to its squared batch "
            f"gradient {expected:.6g} (more than the {tolerance:.1e} relative that its products'"
            " rounding explains): a parameter of it is also used outside the module's own "
            "call (a tied weight in a functional call such as h @ embedding.weight?), which "
            "module hooks do not see. Use exact=True (or, in a trial, measures without "
            "'fisher'), or make that use go through a module."
        )


def _output_gradients(layers: list[_Layer], losses: Tensor,
                      with_parameters: bool = False) -> dict[int, Tensor | None]:
    """∂(Σᵢ ℓᵢ)/∂(each recorded output) as it was made, keyed by the output's id; the
    layers' parameter gradients too (keyed by the parameter's id) if ``with_parameters``."""
    recorded: list[tuple[Tensor, Any]] = [
        (t, edge)
        for layer in layers
        for call in layer.calls
        for t, edge in zip(call.outputs, call.edges, strict=True)
        if edge is not None
    ]
    if with_parameters:
        recorded += [(p, p) for layer in layers for p in _layer_parameters(layer)]
    if not losses.requires_grad or not recorded:
        return {}
    edges = [edge for _, edge in recorded]
    found = torch.autograd.grad(losses.sum(), edges, allow_unused=True)
    return {id(t): g for (t, _), g in zip(recorded, found, strict=True)}


def exact_gram(
    model: nn.Module, inputs: Tensor, targets: Tensor, loss_fn: PerSampleLoss | None = None
) -> Tensor:
    """F̃ from the exact Jacobian ∂ℓᵢ/∂θ of the per-sample loss vector (torch.func.jacrev)."""
    batch = inputs.shape[0]
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    # Buffers are arguments (clones) so that batch-norm may update its running statistics
    # inside the transform; the originals are restored by preserved_state anyway.
    buffers = {n: b.clone() for n, b in model.named_buffers()}

    def losses_of(p: dict, b: dict) -> Tensor:
        outputs = functional_call(model, (p, b), (inputs,))
        return per_sample_losses(loss_fn, outputs, targets, batch)

    with preserved_state(model, inputs), torch.enable_grad():
        jacobian = jacrev(losses_of)(params, buffers)
    gram = torch.zeros(batch, batch, dtype=torch.float64, device=inputs.device)
    for block in jacobian.values():
        gram += symmetric_gram(block.reshape(batch, -1))
    return gram
