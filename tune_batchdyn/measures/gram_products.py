"""A layer's share of F̃ = JᵀJ from its calls, by whichever of two products costs less.

For ψ_i[k] = Σ_t G_{ikt}ᵀ A_{ikt} (the positions form, `positions`), the Gram entry is

    F̃_ij = Σ_k ⟨ψ_i[k], ψ_j[k]⟩_F = Σ_k Σ_{s,t} (A_{iks}·A_{jkt}) (G_{iks}·G_{jkt}).

- *ghost*: the right-hand side, pairwise T×T products of positions, never forming ψ; costs
  about B²T²K(p + q + 1) multiply-adds and is the fast path for one-position layers (Linear in
  an MLP: F̃ = (AAᵀ) ⊙ (GGᵀ)).
- *materialise*: ψ (B × Kqp), then ψψᵀ; costs about BTKpq + B²Kpq and wins when T² is large
  against pq (convolutions: ψ per kernel offset without im2col, see `conv_gradients`).

The choice is made per layer from these counts, as differential-privacy libraries do for
per-sample norms. Norm layers hand over ψ itself (B × 2C, cheaper than either product),
which `GramSum` pools into one product for all of them. Ghost kernels are formed in float64
from the factors; a materialised ψ is formed in the model's dtype (it is the per-sample
gradient itself, as autograd would compute it) and its Gram is accumulated in float64, so the
small eigenvalues of F̃ keep float64 accuracy. Work is split into blocks of at most
``block_elements`` intermediate elements.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from tune_batchdyn.measures.conv_gradients import ConvCall
from tune_batchdyn.measures.positions import Factor, concat_positions

#: Default bound on the elements of one intermediate block (2**24 float64 = 128 MiB).
DEFAULT_BLOCK_ELEMENTS = 2**24
#: Below this many columns x xᵀ stays one product (the split's extra calls cost more).
_SPLIT_MIN_COLUMNS = 256


def factor_sizes(factor: Factor) -> tuple[int, int, int, int, int]:
    """(B, K, T, p, q), p with the bias column; p of a one-hot factor is the number of
    distinct indices."""
    grads = factor.output_grads
    batch, groups, positions, q = grads.shape
    if factor.one_hot:
        p = int(torch.unique(factor.activations).numel())
    else:
        p = factor.activations.shape[-1]
    return batch, groups, positions, p + int(factor.bias), q


def ghost_cost(batch: int, groups: int, positions: int, p: int, q: int, one_hot: bool) -> int:
    """Multiply-adds of the ghost product (a one-hot kernel is one comparison per pair)."""
    kernel = 1 if one_hot else p
    return batch * batch * positions * positions * groups * (kernel + q + 1)


def materialise_cost(batch: int, groups: int, positions: int, p: int, q: int) -> int:
    """Multiply-adds of forming ψ and then ψψᵀ."""
    return batch * positions * groups * p * q + batch * batch * groups * p * q


def choose_product(sizes: tuple[int, int, int, int, int], one_hot: bool = False) -> str:
    """ "ghost" or "materialise", whichever needs fewer multiply-adds for (B, K, T, p, q)."""
    batch, groups, positions, p, q = sizes
    ghost = ghost_cost(batch, groups, positions, p, q, one_hot)
    return "ghost" if ghost < materialise_cost(batch, groups, positions, p, q) else "materialise"


def gram_contribution(
    calls: list[Factor] | list[ConvCall] | list[Tensor],
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> Tensor:
    """A layer's B×B share of F̃ (float64) from its calls, by the cheaper product.

    Tensors are per-sample gradients ψ (B, P) already (norm layers): F̃ = (Σ calls ψ)(…)ᵀ.
    """
    first = calls[0]
    if isinstance(first, Tensor):
        return gram_of_blocks([summed(calls)])
    if isinstance(first, ConvCall):
        total_positions = sum(call.sizes()[2] for call in calls)
        sizes = (*first.sizes()[:2], total_positions, *first.sizes()[3:])
        if choose_product(sizes) == "materialise":
            return conv_materialised_gram(calls)
        calls = [call.factor() for call in calls]
    factor = concat_positions(calls)
    if choose_product(factor_sizes(factor), factor.one_hot) == "ghost":
        return ghost_gram(factor, block_elements)
    return materialised_gram(factor, block_elements)


class GramSum:
    """F̃ = Σ the layers' shares (float64, B×B). Narrow per-sample gradients ψ (norm layers:
    B × 2C) are pooled and multiplied together, up to ``block_elements`` at a time: on a GPU
    a product's launches, not its arithmetic, are their cost (a resnet20's 19 batch-norm
    layers: one product instead of 19)."""

    #: ψ with at least this many columns gets its own product (no copy into the pool).
    POOL_MAX_COLUMNS = 4096

    def __init__(self, batch: int, device: torch.device,
                 block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> None:
        self._gram = torch.zeros(batch, batch, dtype=torch.float64, device=device)
        self._pool: list[Tensor] = []
        self._pool_columns = 0
        self._flush_columns = max(1, block_elements // max(1, batch))

    def add(self, share: Tensor) -> None:
        """Add a layer's B×B share."""
        self._gram += share

    def add_gradients(self, psi: Tensor) -> None:
        """Add ψψᵀ for per-sample gradients ψ (B, P), pooled while narrow."""
        if psi.shape[1] >= self.POOL_MAX_COLUMNS:
            self.add(symmetric_gram(psi))
            return
        self._pool.append(psi)
        self._pool_columns += psi.shape[1]
        if self._pool_columns >= self._flush_columns:
            self._flush()

    def _flush(self) -> None:
        if self._pool:
            self.add(symmetric_gram(torch.cat(self._pool, dim=1)))
            self._pool, self._pool_columns = [], 0

    def total(self) -> Tensor:
        """F̃ with everything added so far."""
        self._flush()
        return self._gram


def summed(parts: Iterable[Tensor]) -> Tensor:
    """Σ parts; one part is returned as it is (Python's ``sum`` would copy it: 0 + part)."""
    total = None
    for part in parts:
        total = part if total is None else total + part
    return total


def symmetric_gram(x: Tensor) -> Tensor:
    """x xᵀ in float64 for x (B, P); on the CPU from its two row halves: the off-diagonal
    block is computed once and mirrored, 3/4 of the multiply-adds of ``x @ x.T`` (torch has
    no symmetric rank-k update; 0.83-0.92x the time for P = 500 to 36864 on CPU). On a GPU
    the one product is faster: its four launches cost more than the work they save (0.04
    against 0.14 ms for 128 × 500 on an H200)."""
    x = x.to(torch.float64)
    half = x.shape[0] // 2
    if x.device.type != "cpu" or x.shape[1] < _SPLIT_MIN_COLUMNS or half == 0:
        return x @ x.T
    top, bottom = x[:half], x[half:]
    gram = torch.empty(x.shape[0], x.shape[0], dtype=torch.float64, device=x.device)
    gram[:half, :half] = top @ top.T
    gram[half:, half:] = bottom @ bottom.T
    gram[half:, :half] = bottom @ top.T
    gram[:half, half:] = gram[half:, :half].T
    return gram


def gram_of_blocks(blocks: list[Tensor] | Iterator[Tensor]) -> Tensor:
    """Σ_blocks ψψᵀ in float64 for per-sample gradient blocks ψ (B, P_block)."""
    gram = None
    for block in blocks:
        share = symmetric_gram(block.reshape(block.shape[0], -1))
        gram = share if gram is None else gram.add_(share)
    return gram


def conv_materialised_gram(calls: list[ConvCall]) -> Tensor:
    """ψψᵀ of a convolution from its weight blocks (one per kernel offset) and bias.

    With several calls, each block is summed over the calls before its product.
    """
    first = calls[0]
    blocks: list[Tensor] = []
    if first.bias:
        blocks.append(summed(call.bias_gradients() for call in calls))
    gram = gram_of_blocks(blocks) if blocks else None
    if first.weight:
        per_call = zip(*(call.weight_gradient_blocks() for call in calls), strict=True)
        weights = gram_of_blocks(summed(parts) for parts in per_call)
        gram = weights if gram is None else gram + weights
    return gram


def _position_kernel(rows: Tensor, columns: Tensor, factor: Factor) -> Tensor:
    """Pairwise products of positions, (K, r, n) from (K, r, d) and (K, n, d), in float64."""
    if factor.one_hot:
        kernel = (rows.unsqueeze(-1) == columns.unsqueeze(-2)).to(torch.float64)
    else:
        kernel = rows @ columns.transpose(1, 2)
    return kernel + 1.0 if factor.bias else kernel


def ghost_gram(factor: Factor, block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> Tensor:
    """F̃_ij = Σ_k Σ_{s,t} (A_{iks}·A_{jkt})(G_{iks}·G_{jkt}), blocked over rows i.

    One position and one group (an MLP's Linear): F̃ = (AAᵀ + 1) ⊙ (GGᵀ) directly.
    """
    grads = factor.output_grads
    batch, groups, positions, q = grads.shape
    if positions == 1 and groups == 1 and not factor.one_hot:
        kernel = symmetric_gram(factor.activations.reshape(batch, -1))
        if factor.bias:
            kernel.add_(1.0)
        return kernel.mul_(symmetric_gram(grads.reshape(batch, q)))
    g = grads.to(torch.float64).permute(1, 0, 2, 3).reshape(groups, batch * positions, q)
    if factor.one_hot:
        a = factor.activations.reshape(1, batch * positions)
    else:
        a = factor.activations.to(torch.float64).permute(1, 0, 2, 3)
        a = a.reshape(groups, batch * positions, -1)
    gram = torch.zeros(batch, batch, dtype=torch.float64, device=grads.device)
    rows_per_block = max(1, block_elements // max(1, groups * positions * batch * positions))
    for start in range(0, batch, rows_per_block):
        stop = min(batch, start + rows_per_block)
        span = slice(start * positions, stop * positions)
        kernel = _position_kernel(a[:, span], a, factor)
        kernel = kernel * (g[:, span] @ g.transpose(1, 2))
        kernel = kernel.view(groups, stop - start, positions, batch, positions)
        gram[start:stop] = kernel.sum(dim=(0, 2, 4))
    return gram


def _one_hot_psi(factor: Factor) -> Tensor:
    """ψ of an Embedding factor over the distinct indices only: (B, 1, q, U) rows."""
    grads = factor.output_grads
    batch, _, positions, q = grads.shape
    distinct, inverse = torch.unique(factor.activations, return_inverse=True)
    slots = inverse + distinct.numel() * torch.arange(batch, device=grads.device).view(-1, 1)
    psi = grads.new_zeros(batch * distinct.numel(), q)
    psi.index_add_(0, slots.reshape(-1), grads.reshape(batch * positions, q))
    return psi.view(batch, 1, distinct.numel(), q)


def _materialised_blocks(factor: Factor, block_elements: int) -> Iterator[Tensor]:
    """ψ in blocks of disjoint parameters: weight blocks over output columns, then the bias."""
    grads = factor.output_grads
    batch, groups, _, q = grads.shape
    if factor.one_hot:
        yield _one_hot_psi(factor)
    elif factor.activations.shape[-1]:
        a = factor.activations
        columns = max(1, block_elements // max(1, batch * groups * a.shape[-1]))
        for start in range(0, q, columns):
            yield grads[..., start : start + columns].transpose(2, 3) @ a  # (B, K, q', p)
    if factor.bias:
        yield grads.sum(dim=2)  # (B, K, q)


def materialised_gram(factor: Factor, block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> Tensor:
    """F̃ = ψψᵀ with ψ_i[k] = Σ_t G_{ikt}ᵀ A_{ikt}, formed in blocks of parameters."""
    return gram_of_blocks(_materialised_blocks(factor, block_elements))
