"""Stable rank, condition and quality of weights after EVBMF (stable-rank-quality-rmsgd, eqs. 1–5).

A layer's weight as a matrix: Linear as it is; a convolution (n_o, n_i, k...) unfolded on its
input-channel mode (n_i × n_o·k) or output-channel mode (n_o × n_i·k) — the paper's (whn_o × n_i)
and (whn_i × n_o), transposed, which leaves the singular values unchanged. With σ₁ ≥ … ≥ σ_{n'}
the kept EVBMF components (`evbmf`) and n the smaller side of the matrix:

    s = Σ σᵢ² / (n σ₁²)       κ = 1 − σ_{n'}/σ₁       q = arctan(s/κ) ∈ [0, π/2]
    Q = ‖q‖₂² / √L            (L layers)

An empty low-rank part (typical at initialisation) gives s = 0 and, by definition here, κ = 1,
so q = 0. A single kept component gives κ = 0 and q = π/2 (arctan(s/0⁺)).

With ``unfolding="both"`` (the default for convolutions) s and κ are the means over the two
unfoldings, as the RMSGD code averages its per-unfolding values, and q = arctan(s̄/κ̄); the
per-unfolding values are reported too. Departure: the RMSGD code's stable rank sums σᵢ/σ₁
(not squared) and skips 1×1 convolutions; here eq. (2) of the paper is used and every Linear
and Conv1d/2d/3d layer counts. All matrices of one shape go through one batched EVBMF.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from tune_batchdyn.errors import ConfigError, check_choice
from tune_batchdyn.measures.evbmf import evbmf_batched

UNFOLDING_CHOICES = ("both", "input", "output")
_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def unfold_weight(weight: Tensor, mode: str) -> Tensor:
    """A weight as a matrix: as is if 2-D, else a conv weight unfolded on ``mode``'s channels."""
    if weight.dim() == 2:
        return weight
    if mode == "input":
        return weight.transpose(0, 1).reshape(weight.shape[1], -1)
    return weight.reshape(weight.shape[0], -1)


#: The record of a weight with NaN or inf entries (a diverged model's).
NOT_FINITE = {"stable_rank": math.nan, "condition": math.nan, "q": math.nan, "rank": 0}


def quality_from_values(values: Tensor, smaller_side: int) -> dict:
    """s, κ and q from the kept singular values (descending) of an n-by-m matrix, n ≤ m."""
    rank = int(values.numel())
    if rank == 0:
        return {"stable_rank": 0.0, "condition": 1.0, "q": 0.0, "rank": 0}
    top = float(values[0])
    stable_rank = float((values**2).sum()) / (smaller_side * top**2)
    condition = 1.0 - float(values[-1]) / top
    return {
        "stable_rank": stable_rank,
        "condition": condition,
        "q": math.atan2(stable_rank, condition),
        "rank": rank,
    }


def _modes(weight: Tensor, unfolding: str) -> tuple[str, ...]:
    if weight.dim() == 2:
        return ("matrix",)
    return ("input", "output") if unfolding == "both" else (unfolding,)


def _combine(per_mode: dict[str, dict], unfolding: str) -> dict:
    """One layer's record: the single mode's values, or means over both with q = atan(s̄/κ̄)."""
    if len(per_mode) == 1:
        ((mode, values),) = per_mode.items()
        return {**values, "unfolding": mode}
    stable_rank = sum(v["stable_rank"] for v in per_mode.values()) / len(per_mode)
    condition = sum(v["condition"] for v in per_mode.values()) / len(per_mode)
    return {
        "stable_rank": stable_rank,
        "condition": condition,
        "q": math.atan2(stable_rank, condition),
        "unfolding": unfolding,
        **per_mode,
    }


def _check_weight(weight: object) -> None:
    if not isinstance(weight, Tensor) or weight.dim() < 2 or weight.numel() == 0:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ConfigError(
            f"weight must be a non-empty tensor of 2 or more dimensions; got {shape}."
        )


def _qualities(weights: dict[str, Tensor], unfolding: str) -> dict[str, dict]:
    """Per-layer records for named weights, one batched EVBMF per matrix shape and device."""
    jobs: dict[tuple, list[tuple[str, str, Tensor]]] = {}
    for name, weight in weights.items():
        for mode in _modes(weight, unfolding):
            matrix = unfold_weight(weight.detach().to(torch.float64), mode)
            key = (tuple(matrix.shape), matrix.device)
            jobs.setdefault(key, []).append((name, mode, matrix))
    per_mode: dict[str, dict[str, dict]] = {name: {} for name in weights}
    for (shape, _), items in jobs.items():
        result = evbmf_batched(torch.stack([matrix for _, _, matrix in items]))
        for (name, mode, matrix), values, rank in zip(
            items, result.singular_values, result.rank, strict=True
        ):
            per_mode[name][mode] = (quality_from_values(values[: int(rank)], min(shape))
                                    if bool(torch.isfinite(matrix).all()) else dict(NOT_FINITE))
    return {name: _combine(modes, unfolding) for name, modes in per_mode.items()}


def layer_quality(weight: Tensor, unfolding: str = "both") -> dict:
    """s, κ, q (and kept rank) of one weight; ``unfolding`` ("both", "input", "output")
    applies to convolution weights, and the record's "unfolding" says which was used."""
    check_choice("unfolding", unfolding, UNFOLDING_CHOICES)
    _check_weight(weight)
    return _qualities({"weight": weight}, unfolding)["weight"]


def network_quality(model: nn.Module, unfolding: str = "both") -> dict:
    """Q = ‖q‖²/√L over the Linear and Conv layers, with every layer's record.

    Returns {"Q": float, "layers": {module name: layer_quality record}}; Q is NaN for a model
    without such layers.

    Example::

        network_quality(model)["Q"]
    """
    check_choice("unfolding", unfolding, UNFOLDING_CHOICES)
    weights = {
        name: module.weight
        for name, module in model.named_modules()
        if isinstance(module, _LAYER_TYPES) and module.weight is not None
    }
    lazy = [name for name, weight in weights.items() if is_lazy(weight)]
    if lazy:
        raise ConfigError(f"network_quality: the weights of {lazy} are not initialised yet "
                          "(lazy modules); run one forward pass first.")
    layers = _qualities(weights, unfolding)
    if not layers:
        return {"Q": math.nan, "layers": {}}
    q = torch.tensor([record["q"] for record in layers.values()], dtype=torch.float64)
    return {"Q": float((q**2).sum()) / math.sqrt(len(layers)), "layers": layers}
