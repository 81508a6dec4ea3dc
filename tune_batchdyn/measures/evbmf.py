"""Empirical variational Bayes matrix factorisation, global analytic solution (Nakajima et al.
2013), batched over same-shape matrices and run in torch on the matrices' device.

For an L×M matrix Y (L ≤ M; a taller matrix is transposed) with singular values γ₁ ≥ … ≥ γ_L:

    α = L/M,   τ̄ = 2.5129 √α,   x̄ = (1 + τ̄)(1 + α/τ̄)

- Noise variance σ²: the minimiser of the EVB free energy (up to constants)

      F(σ²) = Σ_{x_h ≤ x̄} (x_h − log x_h)
            + Σ_{x_h > x̄} (x_h − τ_h + log((τ_h + 1)/x_h) + α log(τ_h/α + 1)),
      x_h = γ_h² / (Mσ²),  τ_h = ½ (x_h − (1 + α) + sqrt((x_h − (1 + α))² − 4α)),

  over the interval of the reference code (RMSGD/AdaS ``matrix_factorization.py``): from
  max(γ²_{H̄+1}/(M x̄), mean(γ²_{H̄+1:})/M), H̄ = ⌈L/(1 + α)⌉ − 1, to Σγ²/(LM).
- Kept components: γ_h > sqrt(M σ² x̄).
- Their shrunk values: d_h = (γ_h/2)(1 − (L+M)σ²/γ_h² + sqrt((1 − (L+M)σ²/γ_h²)²
  − 4LMσ⁴/γ_h⁴)).

Departures from the reference code, none changing the equations: singular values come from the
eigenvalues of the smaller Gram side YYᵀ (cheaper than an SVD; float64 keeps them accurate down
to ~1e-8 γ₁, far below any kept component); the 1-D minimisation is a batched search (a
log-spaced grid, then golden-section refinement around the best grid point to relative
precision ~1e-12) instead of SciPy's bounded Brent with its absolute xatol = 1e-5, which is
coarse when σ² is itself ~1e-4 (typical of network weights); for an exact zero singular value
log x = log γ² − log Mσ² keeps its σ² term and only the constant log γ² is clamped, and the
interval's lower end is floored at 1e-12 times its upper end (it is 0 for an exactly
rank-deficient matrix, e.g. a hand-made one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.measures.eigen import eigh, eigvalsh

#: τ̄ / √α of Nakajima et al. (the root of their Ψ(τ) = 0), as in the reference code.
TAU_BAR_FACTOR = 2.5129

#: Floor of the search interval relative to its upper end: an exactly rank-deficient matrix
#: (zero tail of singular values) has a zero lower bound, where log σ² is undefined.
_LOWER_FLOOR = 1e-12
_GRID_POINTS = 65
_GOLDEN_STEPS = 60
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class EVBMFBatch:
    """EVBMF of N same-shape matrices.

    ``singular_values``: (N, min(L, M)) shrunk values d_h, descending, zero past each
    ``rank``; ``noise_variance``: (N,) σ²; ``left``/``right``: (N, rows, n) and (N, cols, n)
    singular vectors in the input's orientation (only with ``compute_vectors``; the columns
    past ``rank`` are meaningless).
    """

    singular_values: Tensor
    rank: Tensor
    noise_variance: Tensor
    left: Tensor | None = None
    right: Tensor | None = None


def _tau(x: Tensor, alpha: float) -> Tensor:
    shifted = x - (1.0 + alpha)
    return 0.5 * (shifted + torch.sqrt(torch.clamp(shifted**2 - 4.0 * alpha, min=0.0)))


def free_energy(sigma2: Tensor, gamma_sq: Tensor, rows: int, cols: int) -> Tensor:
    """F(σ²) for σ² of shape (N, G) and squared singular values (N, L): returns (N, G)."""
    alpha = rows / cols
    x_bar = _x_bar(alpha)
    scaled_noise = cols * sigma2.unsqueeze(2)
    x = gamma_sq.unsqueeze(1) / scaled_noise  # (N, G, L)
    # log x = log γ² − log Mσ²; for γ = 0 only the constant log γ² is clamped.
    log_gamma_sq = torch.log(torch.clamp(gamma_sq, min=torch.finfo(gamma_sq.dtype).tiny))
    log_x = log_gamma_sq.unsqueeze(1) - torch.log(scaled_noise)
    tau = _tau(x, alpha)
    kept = x - tau + torch.log1p(tau) - log_x + alpha * torch.log1p(tau / alpha)
    dropped = x - log_x
    return torch.where(x > x_bar, kept, dropped).sum(dim=2)


def _x_bar(alpha: float) -> float:
    tau_bar = TAU_BAR_FACTOR * math.sqrt(alpha)
    return (1.0 + tau_bar) * (1.0 + alpha / tau_bar)


def noise_variance_bounds(gamma_sq: Tensor, rows: int, cols: int) -> tuple[Tensor, Tensor]:
    """The reference code's search interval for σ², per matrix: (lower, upper), each (N,)."""
    alpha = rows / cols
    start = math.ceil(rows / (1.0 + alpha)) - 1
    tail = gamma_sq[:, start:]
    lower = torch.maximum(tail[:, 0] / (cols * _x_bar(alpha)), tail.mean(dim=1) / cols)
    upper = gamma_sq.sum(dim=1) / (rows * cols)
    return lower, upper


def minimise_free_energy(gamma_sq: Tensor, rows: int, cols: int) -> Tensor:
    """σ² minimising F on the bounded interval, per matrix (N,): grid, then golden section."""
    lower, upper = noise_variance_bounds(gamma_sq, rows, cols)
    degenerate = upper <= 0  # a zero matrix: σ² = 0, nothing kept
    upper = torch.where(degenerate, torch.ones_like(upper), upper)
    lower = torch.maximum(torch.minimum(lower, upper), _LOWER_FLOOR * upper)
    log_lo, log_hi = torch.log(lower), torch.log(upper)
    steps = torch.linspace(0.0, 1.0, _GRID_POINTS, dtype=gamma_sq.dtype, device=gamma_sq.device)
    grid = log_lo.unsqueeze(1) + (log_hi - log_lo).unsqueeze(1) * steps  # (N, G) in log σ²
    best = free_energy(torch.exp(grid), gamma_sq, rows, cols).argmin(dim=1)
    left = grid.gather(1, (best - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    right = grid.gather(1, (best + 1).clamp(max=_GRID_POINTS - 1).unsqueeze(1)).squeeze(1)

    def energy(log_sigma2: Tensor) -> Tensor:
        return free_energy(torch.exp(log_sigma2).unsqueeze(1), gamma_sq, rows, cols).squeeze(1)

    inner_left = right - _INV_PHI * (right - left)
    inner_right = left + _INV_PHI * (right - left)
    f_left, f_right = energy(inner_left), energy(inner_right)
    for _ in range(_GOLDEN_STEPS):
        go_left = f_left < f_right  # the minimum lies in [left, inner_right]
        right = torch.where(go_left, inner_right, right)
        left = torch.where(go_left, left, inner_left)
        new_inner_left = torch.where(go_left, right - _INV_PHI * (right - left), inner_right)
        new_inner_right = torch.where(go_left, inner_left, left + _INV_PHI * (right - left))
        fresh = torch.where(go_left, new_inner_left, new_inner_right)
        f_fresh = energy(fresh)
        f_left, f_right = (
            torch.where(go_left, f_fresh, f_right),
            torch.where(go_left, f_left, f_fresh),
        )
        inner_left, inner_right = new_inner_left, new_inner_right
    sigma2 = torch.exp(0.5 * (left + right))
    return torch.where(degenerate, torch.zeros_like(sigma2), sigma2)


def shrink(gamma: Tensor, sigma2: Tensor, rows: int, cols: int) -> tuple[Tensor, Tensor]:
    """Kept mask γ > sqrt(Mσ²x̄) and shrunk values d (zero where not kept), both (N, L)."""
    s2 = sigma2.unsqueeze(1)
    threshold = torch.sqrt(cols * s2 * _x_bar(rows / cols))
    kept = gamma > threshold
    safe = torch.where(kept, gamma, torch.ones_like(gamma))
    ratio = (rows + cols) * s2 / safe**2
    root = torch.sqrt(
        torch.clamp((1.0 - ratio) ** 2 - 4.0 * rows * cols * s2**2 / safe**4, min=0.0)
    )
    shrunk = safe / 2.0 * (1.0 - ratio + root)
    return kept, torch.where(kept, shrunk, torch.zeros_like(shrunk))


def evbmf_batched(matrices: Tensor, *, compute_vectors: bool = False) -> EVBMFBatch:
    """EVBMF of each matrix in a (N, rows, cols) stack (float64 on the stack's device)."""
    if not isinstance(matrices, Tensor) or matrices.dim() != 3 or 0 in matrices.shape:
        shape = tuple(matrices.shape) if isinstance(matrices, Tensor) else type(matrices)
        raise ConfigError(f"evbmf_batched needs a non-empty (N, rows, cols) tensor; got {shape}.")
    y = matrices.detach().to(torch.float64)
    transposed = y.shape[1] > y.shape[2]
    if transposed:
        y = y.transpose(1, 2)
    rows, cols = y.shape[1], y.shape[2]  # rows <= cols
    gram = y @ y.transpose(1, 2)
    if compute_vectors:
        eigenvalues, eigenvectors = eigh(gram)
        eigenvectors = eigenvectors.flip(-1)
    else:
        eigenvalues = eigvalsh(gram)
    gamma_sq = torch.clamp(eigenvalues.flip(-1), min=0.0)  # descending
    gamma = torch.sqrt(gamma_sq)
    sigma2 = minimise_free_energy(gamma_sq, rows, cols)
    kept, shrunk = shrink(gamma, sigma2, rows, cols)
    left = right = None
    if compute_vectors:
        safe = torch.where(kept, gamma, torch.ones_like(gamma))
        left, right = eigenvectors, (y.transpose(1, 2) @ eigenvectors) / safe.unsqueeze(1)
        if transposed:
            left, right = right, left
    return EVBMFBatch(shrunk, kept.sum(dim=1), sigma2, left, right)


def evbmf(matrix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """EVBMF low-rank part of one matrix: (U, s, V) with only the kept components.

    ``matrix ≈ U @ diag(s) @ V.T`` with U (rows, k), s (k,) descending, V (cols, k); k = 0
    when the matrix is indistinguishable from noise (e.g. at initialisation). float64.
    """
    if not isinstance(matrix, Tensor) or matrix.dim() != 2:
        shape = tuple(matrix.shape) if isinstance(matrix, Tensor) else type(matrix).__name__
        raise ConfigError(f"evbmf needs a 2-D tensor; got {shape}.")
    result = evbmf_batched(matrix.unsqueeze(0), compute_vectors=True)
    rank = int(result.rank[0])
    return (result.left[0, :, :rank], result.singular_values[0, :rank], result.right[0, :, :rank])
