"""Per-sample gradients of a module without a per-sample rule, by torch.func (the opt-in
``unsupported="torch.func"`` of `per_sample_gram`).

For one recorded call ``outputs = module(*args, **kwargs)`` and the outputs' gradients G, sample
i's gradient of the module's parameters is the vector-Jacobian product of the module called on
sample i's slice of every batched input, against sample i's slice of every output gradient:

    ψ_i = vjp(θ ↦ module_θ(args_i, kwargs_i))(G_i),

vmapped over the samples. Which dimension holds the batch:

- inputs (positional and keyword tensors): the first dimension of size B. Batch-first
  tensors, sequence-first ones (T, B, ...) and recurrent states (layers, B, H) all qualify; a
  tensor without such a dimension (a (T, T) attention mask) is shared by all samples;
- outputs (nested tuples too, as LSTM's ``(out, (h, c))``): the dimension of size B that has
  size 1 when the module runs on one sample.

Where a size equals B by coincidence (T = B) the first such dimension is taken, which may be
the wrong one; ``per_sample_gram(check=True)`` finds that out (a sub-batch's Gram then differs
from the block of the batch's). The rule holds for modules that treat samples independently
and deterministically: one that draws random numbers (dropout in training mode) is refused by
name. A module with an operation vmap has no batching rule for (LSTM in float64) is
differentiated one sample at a time instead (same numbers, slower).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from tune_batchdyn.errors import ConfigError


def batch_dimension(tensor: Tensor, batch: int) -> int | None:
    """The first dimension of size ``batch`` (None: the tensor is shared by all samples)."""
    return next((d for d, size in enumerate(tensor.shape) if size == batch), None)


def output_dimension(full: Tensor, single: Tensor, batch: int) -> int | None:
    """The dimension that has size ``batch`` in the batch's output and 1 in one sample's."""
    if full.dim() != single.dim():
        return None
    pairs = list(zip(full.shape, single.shape, strict=True))
    for d, (size, one) in enumerate(pairs):
        others_equal = all(a == b for k, (a, b) in enumerate(pairs) if k != d)
        if size == batch and one == 1 and others_equal:
            return d
    return None


def func_per_sample_gradients(name: str, module: nn.Module, inputs: tuple[tuple, dict],
                              outputs: tuple[Tensor | None, ...],
                              grads: tuple[Tensor | None, ...], batch: int) -> Tensor:
    """ψ (B, P) of ``module``'s trainable parameters (its sub-modules' included) for one call
    with ``inputs`` = (args, kwargs), recorded ``outputs`` (flattened, None where not a tensor
    or without gradient) and their gradients ``grads``."""
    label = f"module {name or '<model>'!r} ({type(module).__name__})"
    params = {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}
    leaves, spec = tree_flatten(inputs)
    in_dims = [batch_dimension(t, batch) if isinstance(t, Tensor) else None for t in leaves]
    mapped = [i for i, d in enumerate(in_dims) if d is not None]
    if not mapped:
        raise ConfigError(f"per_sample_gram: no input of {label} has a dimension of the batch's "
                          f"size {batch}; use exact=True.")
    present = [j for j, t in enumerate(outputs) if t is not None]

    def outputs_of(p: dict, values: list) -> list:
        args, kwargs = tree_unflatten(values, spec)
        found, _ = tree_flatten(functional_call(module, p, tuple(args), kwargs))
        return [found[j] for j in present]

    single = [t.narrow(d, 0, 1) if d is not None else t for t, d in zip(leaves, in_dims,
                                                                        strict=True)]
    with torch.no_grad():  # for the shapes only
        shapes = outputs_of(params, single)
    out_dims = []
    for j, one in zip(present, shapes, strict=True):
        dim = output_dimension(outputs[j], one, batch)
        if dim is None:
            raise ConfigError(
                f"per_sample_gram: output {j} of {label} has shape {tuple(outputs[j].shape)} "
                f"for the batch and {tuple(one.shape)} for one sample: no dimension of it "
                f"carries the batch (was another dimension of size {batch}, such as T = B, "
                "taken for the batch?); use exact=True.")
        out_dims.append(dim)
    cotangents = [grads[j] if grads[j] is not None else outputs[j].new_zeros(outputs[j].shape)
                  for j in present]

    def sample_gradient(sample_inputs: list, sample_cotangents: list) -> dict:
        values = list(leaves)
        for i, value in zip(mapped, sample_inputs, strict=True):
            values[i] = value.unsqueeze(in_dims[i])
        _, pullback = vjp(lambda p: outputs_of(p, values), params)
        return pullback([c.unsqueeze(d) for c, d in zip(sample_cotangents, out_dims,
                                                        strict=True)])[0]

    dims = [in_dims[i] for i in mapped]
    batched = vmap(sample_gradient, in_dims=(dims, out_dims))
    try:
        per_sample = batched([leaves[i] for i in mapped], cotangents)
    except RuntimeError as err:
        if "randomness" in str(err):
            raise ConfigError(
                f"per_sample_gram: {label} draws random numbers in its forward (dropout in "
                "training mode?), so its per-sample gradients cannot be rebuilt one sample at "
                "a time; measure in eval mode or use exact=True.") from err
        # no batching rule for some operation (LSTM in float64): the same, one sample each
        per_sample = _stacked(
            sample_gradient([leaves[i].select(d, s) for i, d in zip(mapped, dims, strict=True)],
                            [c.select(d, s) for c, d in zip(cotangents, out_dims, strict=True)])
            for s in range(batch))
    return torch.cat([g.reshape(batch, -1) for g in per_sample.values()], dim=1)


def _stacked(per_sample: Iterable[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Per-sample dicts of gradients stacked along a new first dimension."""
    rows = list(per_sample)
    return {name: torch.stack([row[name] for row in rows]) for name in rows[0]}
