"""The positions form of a layer's per-sample gradients: ψ_i[k] = Σ_t G_{ikt}ᵀ A_{ikt}.

A (B, K, T, p) holds the layer's input features at each position t, G (B, K, T, q) the
gradient of the summed per-sample losses with respect to the layer's output there; K counts
independent groups (conv groups), T positions (sequence steps, output pixels). A bias is an
implicit column of ones appended to A (``bias=True``), so it costs no copy of A.
`gram_products` turns a factor into the layer's share of F̃.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Factor:
    """A layer's per-sample gradients as positions: ψ_i[k] = Σ_t G[i,k,t]ᵀ A[i,k,t].

    ``activations`` is (B, K, T, p), or for ``one_hot`` factors (B, T) int64 indices whose
    one-hot rows are the activations (K = 1); ``output_grads`` is (B, K, T, q); ``bias``: A
    carries an implicit trailing column of ones.
    """

    activations: Tensor
    output_grads: Tensor
    one_hot: bool = False
    bias: bool = False


def concat_positions(factors: list[Factor]) -> Factor:
    """One factor for a layer called several times: the calls' positions side by side.

    ψ_i is the sum of every call's contribution, which is exactly a sum over the union of the
    calls' positions.
    """
    if len(factors) == 1:
        return factors[0]
    position_dim = 1 if factors[0].one_hot else 2
    return Factor(
        torch.cat([f.activations for f in factors], dim=position_dim),
        torch.cat([f.output_grads for f in factors], dim=2),
        factors[0].one_hot,
        factors[0].bias,
    )
