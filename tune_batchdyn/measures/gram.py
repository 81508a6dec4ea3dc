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
gradients from ``torch.func`` (vmap over a vjp of the layer on each sample's own input and
output gradient; right only for layers that treat samples independently and deterministically).

``exact=True`` instead takes the Jacobian of the per-sample loss vector by ``torch.func``
(``jacrev`` over ``functional_call``): ∂ℓᵢ/∂θ exactly, also through batch-norm's batch
statistics and tied weights, at the memory cost of B gradients at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge, get_gradient_edge
from torch.func import functional_call, jacrev, vjp, vmap

from tune_batchdyn.errors import ConfigError, check_choice
from tune_batchdyn.measures.factors import (
    FactorBuilder,
    LayerCall,
    builder_for,
    check_batch_first,
    unsupported_reason,
)
from tune_batchdyn.measures.gram_products import gram_contribution, summed, symmetric_gram
from tune_batchdyn.measures.model_state import (
    PerSampleLoss,
    per_sample_losses,
    preserved_state,
)

UNSUPPORTED_CHOICES = ("error", "torch.func")


@dataclass
class _Call:
    """One forward call of a recorded layer: its inputs (with their versions, to detect a
    later in-place change), its outputs and their gradient edges (None: no gradient)."""

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


def _as_tuple(output: object) -> tuple:
    return output if isinstance(output, tuple) else (output,)


def _record_hook(layer: _Layer):
    def hook(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        detached = tuple(a.detach() if isinstance(a, Tensor) else a for a in args)
        versions = tuple(a._version if isinstance(a, Tensor) else None for a in args)
        outputs = tuple(t if isinstance(t, Tensor) else None for t in _as_tuple(output))
        edges = tuple(
            get_gradient_edge(t) if t is not None and t.requires_grad else None for t in outputs
        )
        layer.calls.append(_Call(detached, kwargs, versions, outputs, edges))

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
    (x,) = call.args[:1]
    check_batch_first(layer.module, x, batch_size, "input")
    check_batch_first(layer.module, grad, batch_size, "output")
    return layer.builder(layer.module, x, grad)


def _func_per_sample_grads(layer: _Layer, call: _Call, grads: tuple, batch: int) -> Tensor:
    """ψ_i of a whole module by torch.func: vjp of the module on sample i's input alone."""
    module = layer.module
    params = {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}
    batched = tuple(
        isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == batch for a in call.args
    )
    present = [i for i, t in enumerate(call.outputs) if t is not None]
    for i in present:
        check_batch_first(module, call.outputs[i], batch, "output")
    cotangents = tuple(
        grads[i] if grads[i] is not None else torch.zeros_like(call.outputs[i]) for i in present
    )

    def sample_grad(args: tuple, cotangent: tuple) -> dict:
        sample_args = tuple(a.unsqueeze(0) if b else a for a, b in zip(args, batched, strict=True))

        def outputs_of(p: dict) -> tuple:
            out = _as_tuple(functional_call(module, p, sample_args, call.kwargs))
            return tuple(out[i] for i in present)

        _, pullback = vjp(outputs_of, params)
        return pullback(tuple(c.unsqueeze(0) for c in cotangent))[0]

    in_dims = (tuple(0 if b else None for b in batched), 0)
    per_sample = vmap(sample_grad, in_dims=in_dims)(call.args, cotangents)
    return torch.cat([g.reshape(batch, -1) for g in per_sample.values()], dim=1)


def _layer_gram(layer: _Layer, grads: list, batch: int) -> Tensor | None:
    """Sum over the layer's calls, then the layer's B×B share of F̃."""
    live = [
        (call, g)
        for call, g in zip(layer.calls, grads, strict=True)
        if any(x is not None for x in g)
    ]
    if not live:
        return None
    if layer.builder is None:
        return symmetric_gram(
            summed(_func_per_sample_grads(layer, call, g, batch) for call, g in live)
        )
    return gram_contribution([_layer_call(layer, call, g[0], batch) for call, g in live])


def per_sample_gram(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: PerSampleLoss | None = None,
    *,
    exact: bool = False,
    unsupported: str = "error",
    check_sums: bool = False,
) -> Tensor:
    """F̃ = JᵀJ ∈ R^{B×B} (float64) of the per-sample gradient contributions on one batch.

    ``loss_fn(outputs, targets)`` returns one loss per sample (default: cross-entropy with
    reduction "none"); J holds the gradients of those per-sample losses. The model's mode is
    used as it is (training mode during training: batch-norm with batch statistics, see the
    module docstring); modes, buffers (running statistics), RNG, hooks, ``requires_grad`` and
    ``.grad`` are as before afterwards. ``unsupported``: "error" or "torch.func" for layers
    without a per-sample rule; ``exact``: the exact ∂ℓᵢ/∂θ by torch.func. ``check_sums``: also
    compute the batch gradient and check that each layer's contributions add up to it
    (1ᵀF̃ₗ1 = ‖∇θₗ Σᵢ ℓᵢ‖²), raising ``ConfigError`` naming the layer whose parameter is also
    used outside it (a weight tied by ``h @ layer.weight``), which module hooks cannot see.

    Example::

        gram = per_sample_gram(model, x, y)          # (B, B), float64
        c_k = truncated_condition(gram)
    """
    check_choice("unsupported", unsupported, UNSUPPORTED_CHOICES)
    batch = inputs.shape[0]
    if exact:
        return exact_gram(model, inputs, targets, loss_fn)
    layers = plan_layers(model, unsupported)
    gram = torch.zeros(batch, batch, dtype=torch.float64, device=inputs.device)
    handles = [
        layer.module.register_forward_hook(_record_hook(layer), with_kwargs=True)
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
        share = _layer_gram(layer, per_call, batch)
        if check_sums:
            _check_layer_sum(layer, share, grads)
        if share is not None:
            gram += share
    return gram


#: Relative gap between a layer's 1ᵀF̃ₗ1 and its squared batch gradient that ``check_sums``
#: tolerates (rounding of float32 products; a missed use of a parameter is far larger).
SUM_TOLERANCE = 1e-3


def fallback_modules(model: nn.Module) -> list[str]:
    """``"name (Type)"`` of each module that ``unsupported="torch.func"`` hands to torch.func:
    it owns trainable parameters and no per-sample rule covers it."""
    return [f"{layer.name or '<model>'} ({type(layer.module).__name__})"
            for layer in plan_layers(model, "torch.func") if layer.builder is None]


def _layer_parameters(layer: _Layer) -> list[Tensor]:
    return [p for p in layer.module.parameters(recurse=layer.builder is None) if p.requires_grad]


def _check_layer_sum(layer: _Layer, share: Tensor | None, grads: dict[int, Tensor | None]) -> None:
    expected = sum(float(g.double().square().sum()) for p in _layer_parameters(layer)
                   if (g := grads.get(id(p))) is not None)
    found = 0.0 if share is None else float(share.sum())
    # the per-sample scale floors the tolerance: a batch gradient that cancels (a shift before
    # batch-norm) leaves only rounding in both sums
    scale = 0.0 if share is None else SUM_TOLERANCE * float(share.trace())
    if abs(found - expected) > SUM_TOLERANCE * max(expected, scale, 1e-30):
        raise ConfigError(
            f"per_sample_gram: the per-sample contributions of module {layer.name or '<model>'!r}"
            f" ({type(layer.module).__name__}) add up to {found:.6g}, not to its squared batch "
            f"gradient {expected:.6g}: a parameter of it is also used outside the module (a "
            "tied weight in a functional call?), which module hooks do not see. Use exact=True "
            "(or, in a trial, measures without 'fisher'), or make that use go through a module."
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
