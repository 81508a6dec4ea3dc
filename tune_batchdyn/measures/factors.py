"""Per-module-type maths of the per-sample gradients: each supported layer as *positions*.

Every supported layer's per-sample parameter gradient has the form

    ψ_i[k] = Σ_t G_{i,k,t}ᵀ A_{i,k,t}        (one q×p block per group k)

with A the layer's input features at position t (plus a column of ones for the bias) and G the
gradient of the summed per-sample losses with respect to the layer's output at t. A `Factor`
holds A with shape (B, K, T, p) and G with shape (B, K, T, q); `gram_products` turns it into the
layer's share of F̃ = JᵀJ. This module only builds a layer call's description — a `Factor`, a
`ConvCall` or, for norm layers, the per-sample gradients themselves (one small function per
module type, found through `FACTOR_BUILDERS`); `batch_first` puts the batch first (or refuses
the call).

Layer by layer (x the layer input, g the output gradient, T the positions):

- Linear: A = x (and the bias's column of ones), G = g; a sequence Linear has T = the product
  of the middle dimensions.
- Conv1d / Conv2d: A = the input patches of each group, G = g of the group's output channels;
  T = output pixels, K = groups (a `ConvCall`: patches by shifted windows of the padded input,
  or im2col for the ghost product, see `conv_gradients`).
- BatchNorm / GroupNorm / LayerNorm / RMSNorm: γ and β act per channel, so the per-sample
  gradients are formed directly (a B × 2C tensor, cheaper than any product):
  ψ_i(γ_c) = Σ_t x̂_{itc} g_{itc}, ψ_i(β_c) = Σ_t g_{itc}, with x̂ from torch's own
  normalisation without affine. Batch-norm in training mode normalises with the batch
  statistics, so this is the per-module, per-sample decomposition of the seed rather than the
  exact ∂ℓᵢ/∂θ (DESIGN.md).
- Embedding: A = one-hot rows of the looked-up indices, kept as indices (`Factor.one_hot`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import prune

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.measures.conv_gradients import ConvCall
from tune_batchdyn.measures.positions import Factor


def check_batch_first(module: nn.Module, tensor: Tensor, batch_size: int, what: str) -> None:
    """Raise unless ``tensor`` carries the batch as its first dimension."""
    if tensor.dim() == 0 or tensor.shape[0] != batch_size:
        raise ConfigError(
            f"per_sample_gram: the {what} of {type(module).__name__} has shape "
            f"{tuple(tensor.shape)}; expected the batch ({batch_size}) as its first dimension "
            "(batch-first layouts only; a tensor shared by all samples, such as positions "
            "torch.arange(T), has none). Use exact=True for such a model."
        )


def _leading_dimensions(module: nn.Module, x: Tensor) -> int:
    """How many leading dimensions of the input are the batch and positions (0: the batch
    must come first, as for convolutions and batch-norm's channels)."""
    if isinstance(module, nn.Linear):
        return x.dim() - 1
    if isinstance(module, nn.LayerNorm | nn.RMSNorm):
        return x.dim() - len(module.normalized_shape)
    if isinstance(module, nn.Embedding):
        return x.dim()
    return 0


def batch_first(module: nn.Module, x: Tensor, g: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """Input and output gradient with the batch first: for layers whose leading dimensions
    are positions (Linear, LayerNorm, RMSNorm, Embedding), a sequence-first (T, B, ...) call
    is moved to (B, T, ...); otherwise the batch must already come first."""
    if x.dim() and x.shape[0] != batch_size:
        leading = _leading_dimensions(module, x)
        found = next((d for d in range(1, leading) if x.shape[d] == batch_size), None)
        if found is not None and g.dim() > found and g.shape[found] == batch_size:
            x, g = x.movedim(found, 0), g.movedim(found, 0)
    check_batch_first(module, x, batch_size, "input")
    check_batch_first(module, g, batch_size, "output")
    return x, g


def _trainable(param: Tensor | None) -> bool:
    return param is not None and param.requires_grad


def linear_factor(module: nn.Linear, x: Tensor, g: Tensor) -> Factor:
    """Linear on (B, ..., d_in): the middle dimensions are positions; the bias a ones column."""
    batch = x.shape[0]
    a = x.reshape(batch, 1, -1, x.shape[-1])
    if not _trainable(module.weight):
        a = a[..., :0]
    return Factor(a, g.reshape(batch, 1, -1, g.shape[-1]), bias=_trainable(module.bias))


def _spatial_padding(module: nn.Conv1d | nn.Conv2d, spatial: tuple[int, ...]) -> list[int]:
    """The (left, right) padding per spatial dimension, in F.pad's last-dimension-first order."""
    pads: list[int] = []
    for dim in reversed(range(len(spatial))):
        if module.padding == "same":
            total = module.dilation[dim] * (module.kernel_size[dim] - 1)
            pads += [total // 2, total - total // 2]
        elif module.padding == "valid":
            pads += [0, 0]
        else:
            pads += [module.padding[dim], module.padding[dim]]
    return pads


def conv_call(module: nn.Conv1d | nn.Conv2d, x: Tensor, g: Tensor) -> ConvCall:
    """Conv1d/Conv2d: the input, its padding and the output gradient (Conv1d as height 1).
    Symmetric zero padding is left to the products (`ConvCall.padding`); other padding
    (reflect, replicate, circular, 'same' with an even kernel) is applied here."""
    one_d = isinstance(module, nn.Conv1d)
    pads = _spatial_padding(module, x.shape[2:])  # [left, right] per dim, last dim first
    symmetric = all(pads[i] == pads[i + 1] for i in range(0, len(pads), 2))
    padding = (0, 0)
    if module.padding_mode == "zeros" and symmetric:
        padding = tuple(reversed(pads[::2]))
        padding = (0, *padding) if one_d else padding
    elif any(pads):  # before Conv1d's height is added: F.pad's modes take (B, C, *spatial)
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, pads, mode=mode)
    if one_d:
        x, g = x.unsqueeze(2), g.unsqueeze(2)
    return ConvCall(
        input=x,
        padding=padding,
        output_grads=g,
        kernel_size=(1, *module.kernel_size) if one_d else tuple(module.kernel_size),
        stride=(1, *module.stride) if one_d else tuple(module.stride),
        dilation=(1, *module.dilation) if one_d else tuple(module.dilation),
        groups=module.groups,
        weight=_trainable(module.weight),
        bias=_trainable(module.bias),
    )


def _affine_gradients(module: nn.Module, x_hat: Tensor, g: Tensor) -> Tensor:
    """ψ_i = [Σ_t x̂ ⊙ g, Σ_t g] per channel from (B, C, T) tensors: (B, P) for γ and/or β."""
    columns = []
    if _trainable(module.weight):
        columns.append((x_hat * g).sum(dim=2))  # half the time of the einsum on CPU
    if _trainable(getattr(module, "bias", None)):
        columns.append(g.sum(dim=2))
    return torch.cat(columns, dim=1)


def batch_norm_gradients(module: nn.modules.batchnorm._BatchNorm, x: Tensor, g: Tensor) -> Tensor:
    """BatchNorm: x̂ with the batch statistics when torch uses them (training mode, or no
    running statistics kept), else with the running statistics; never updates them."""
    batch, channels = x.shape[0], x.shape[1]
    use_batch_stats = module.training or module.running_mean is None
    running = (None, None) if use_batch_stats else (module.running_mean, module.running_var)
    x_hat = F.batch_norm(x, *running, training=use_batch_stats, eps=module.eps)
    return _affine_gradients(
        module, x_hat.reshape(batch, channels, -1), g.reshape(batch, channels, -1)
    )


def group_norm_gradients(module: nn.GroupNorm, x: Tensor, g: Tensor) -> Tensor:
    """GroupNorm: x̂ normalised per sample and group (no cross-sample statistics)."""
    batch, channels = x.shape[0], x.shape[1]
    x_hat = F.group_norm(x, module.num_groups, eps=module.eps)
    return _affine_gradients(
        module, x_hat.reshape(batch, channels, -1), g.reshape(batch, channels, -1)
    )


def _trailing_gradients(module: nn.Module, x_hat: Tensor, g: Tensor) -> Tensor:
    """Elementwise affine over the trailing normalised shape: those elements are the channels."""
    batch = x_hat.shape[0]
    features = math.prod(module.normalized_shape)
    return _affine_gradients(
        module,
        x_hat.reshape(batch, -1, features).transpose(1, 2),
        g.reshape(batch, -1, features).transpose(1, 2),
    )


def layer_norm_gradients(module: nn.LayerNorm, x: Tensor, g: Tensor) -> Tensor:
    """LayerNorm: x̂ over the trailing ``normalized_shape``; leading dimensions are positions."""
    x_hat = F.layer_norm(x, module.normalized_shape, eps=module.eps)
    return _trailing_gradients(module, x_hat, g)


def rms_norm_gradients(module: nn.RMSNorm, x: Tensor, g: Tensor) -> Tensor:
    """RMSNorm: x̂ = x / sqrt(mean(x²) + eps) over the trailing ``normalized_shape``."""
    x_hat = F.rms_norm(x, module.normalized_shape, eps=module.eps)
    return _trailing_gradients(module, x_hat, g)


def embedding_factor(module: nn.Embedding, x: Tensor, g: Tensor) -> Factor:
    """Embedding: one-hot rows of the indices; rows at ``padding_idx`` get no gradient."""
    batch = x.shape[0]
    indices = x.reshape(batch, -1)
    grads = g.reshape(batch, 1, indices.shape[1], g.shape[-1])
    if module.padding_idx is not None:
        keep = (indices != module.padding_idx).to(grads.dtype)
        grads = grads * keep.view(batch, 1, -1, 1)
    return Factor(indices, grads, one_hot=True)


#: What a builder returns for one call: positions, a convolution call, or ψ itself (B, P).
LayerCall = Factor | ConvCall | Tensor

FactorBuilder = Callable[[nn.Module, Tensor, Tensor], LayerCall]

#: Module type -> the function describing one call from (module, input, output gradient).
FACTOR_BUILDERS: dict[type[nn.Module], FactorBuilder] = {
    nn.Linear: linear_factor,
    nn.Conv1d: conv_call,
    nn.Conv2d: conv_call,
    nn.BatchNorm1d: batch_norm_gradients,
    nn.BatchNorm2d: batch_norm_gradients,
    nn.BatchNorm3d: batch_norm_gradients,
    nn.GroupNorm: group_norm_gradients,
    nn.LayerNorm: layer_norm_gradients,
    nn.RMSNorm: rms_norm_gradients,
    nn.Embedding: embedding_factor,
}


def unsupported_reason(module: nn.Module) -> str | None:
    """Why a module of a supported type still cannot be decomposed (None when it can)."""
    if isinstance(module, nn.Embedding) and (module.max_norm is not None):
        return "Embedding with max_norm renormalises its weight during the forward pass"
    if isinstance(module, nn.Embedding) and module.scale_grad_by_freq:
        return "Embedding with scale_grad_by_freq mixes samples in its gradient"
    pre_hooks = module._forward_pre_hooks.values()
    if any(isinstance(hook, prune.BasePruningMethod) for hook in pre_hooks):
        return "pruned by torch.nn.utils.prune: its weight is weight_orig times a mask"
    return None


def builder_for(module: nn.Module) -> FactorBuilder | None:
    """The factor builder of the module's exact type (subclasses may change the forward)."""
    return FACTOR_BUILDERS.get(type(module))
