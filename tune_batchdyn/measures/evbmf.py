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
log-spaced grid over the whole interval, then finer grids around the best point until σ² is
known to ~1e-9 relative; it finds the global minimum where Brent can stop in a local one)
instead of SciPy's bounded Brent with its absolute xatol = 1e-5, which is coarse when σ² is
itself ~1e-4 (typical of network weights); F's constant −Σ log γ² is left out (so an exact
zero singular value needs no care), and the interval's lower end is floored at 1e-12 times
its upper end (it is 0 for an exactly rank-deficient matrix, e.g. a hand-made one).
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
_ZOOM_POINTS = 33
#: Final grid spacing in log σ² (σ² to ~1e-9 relative), and the passes it takes from the widest
#: interval the floor allows: each pass divides the spacing by (_ZOOM_POINTS − 1)/2.
_LOG_TOLERANCE = 1e-9
_ZOOM_PASSES = math.ceil(
    math.log(-math.log(_LOWER_FLOOR) / (_GRID_POINTS - 1) / _LOG_TOLERANCE)
    / math.log((_ZOOM_POINTS - 1) / 2)
)


@dataclass(frozen=True)
class EVBMFBatch:
    """EVBMF of N same-shape matrices.

    ``singular_values``: (N, min(L, M)) shrunk values d_h, descending, zero past each
    ``rank``; ``noise_variance``: (N,) σ²; ``left``/``right``: (N, rows, n) and (N, cols, n)
    singular vectors in the input's orientation (only with ``compute_vectors``; the columns
    past ``rank`` are meaningless). A matrix with NaN or inf entries gets NaN values and noise
    variance and rank 0: not "all noise", but no answer.
    """

    singular_values: Tensor
    rank: Tensor
    noise_variance: Tensor
    left: Tensor | None = None
    right: Tensor | None = None


def _tau(x: Tensor, alpha: float) -> Tensor:
    shifted = x - (1.0 + alpha)
    return 0.5 * (shifted + torch.sqrt(torch.clamp(shifted**2 - 4.0 * alpha, min=0.0)))


def free_energy(log_sigma2: Tensor, gamma_sq: Tensor, rows: int, cols: int) -> Tensor:
    """F less its constant −Σ log γ², at log σ² of shape (N, G), for squared singular values
    ``gamma_sq`` (N, L) in descending order: returns (N, G).

    All L terms' x_h − log x_h sum in closed form, Σγ²/(Mσ²) + L log Mσ² − Σ log γ², and a
    kept term (x_h > x̄) adds its difference to that, −τ_h + log(τ_h + 1) + α log(τ_h/α + 1):
    only the leading columns kept somewhere on the grid are evaluated (a few, past the first
    coarse grid).
    """
    alpha, x_bar = rows / cols, _x_bar(rows / cols)
    log_scaled_noise = log_sigma2 + math.log(cols)  # log Mσ²
    scaled_noise = torch.exp(log_scaled_noise)
    every_term = gamma_sq.sum(dim=1, keepdim=True) / scaled_noise + rows * log_scaled_noise
    keepable = int((gamma_sq > x_bar * scaled_noise.amin(dim=1, keepdim=True)).sum(dim=1).max())
    x = gamma_sq[:, :keepable].unsqueeze(1) / scaled_noise.unsqueeze(2)  # (N, G, keepable)
    tau = _tau(x, alpha)
    kept_difference = torch.log1p(tau) - tau + alpha * torch.log1p(tau / alpha)
    return every_term + torch.where(x > x_bar, kept_difference, 0.0).sum(dim=2)


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
    """σ² minimising F on the bounded interval, per matrix (N,), by a zooming grid in log σ²;
    ``gamma_sq`` (N, L) in descending order.

    A grid over the whole interval finds the best point; each further pass lays a finer grid
    over the two intervals beside the best point of the last (spacing ÷ (_ZOOM_POINTS − 1)/2),
    until the spacing is below _LOG_TOLERANCE. Every pass is one batched evaluation of F, so
    the whole search is a few dozen tensor operations whatever N.
    """
    lower, upper = noise_variance_bounds(gamma_sq, rows, cols)
    degenerate = upper <= 0  # a zero matrix: σ² = 0, nothing kept
    upper = torch.where(degenerate, torch.ones_like(upper), upper)
    lower = torch.maximum(torch.minimum(lower, upper), _LOWER_FLOOR * upper)
    log_lo, log_hi = torch.log(lower).unsqueeze(1), torch.log(upper).unsqueeze(1)
    options = dict(dtype=gamma_sq.dtype, device=gamma_sq.device)
    grid = log_lo + (log_hi - log_lo) * torch.linspace(0.0, 1.0, _GRID_POINTS, **options)
    spacing = (log_hi - log_lo) / (_GRID_POINTS - 1)
    offsets = torch.linspace(-1.0, 1.0, _ZOOM_POINTS, **options)
    for _ in range(_ZOOM_PASSES):
        energy = free_energy(grid, gamma_sq, rows, cols)
        best = grid.gather(1, energy.argmin(dim=1, keepdim=True))
        grid = torch.minimum(torch.maximum(best + spacing * offsets, log_lo), log_hi)
        spacing = spacing * 2.0 / (_ZOOM_POINTS - 1)
    energy = free_energy(grid, gamma_sq, rows, cols)
    sigma2 = torch.exp(grid.gather(1, energy.argmin(dim=1, keepdim=True)).squeeze(1))
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
    finite = torch.isfinite(y).flatten(1).all(dim=1)
    if not bool(finite.all()):
        sigma2 = torch.where(finite, sigma2, math.nan)
        shrunk = torch.where(finite.unsqueeze(1), shrunk, math.nan)
        kept = kept & finite.unsqueeze(1)
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
    if not bool(torch.isfinite(matrix).all()):
        raise ConfigError("evbmf needs a finite matrix; this one holds NaN or inf (a diverged "
                          "model's weights? layer_quality reports NaN for them).")
    result = evbmf_batched(matrix.unsqueeze(0), compute_vectors=True)
    rank = int(result.rank[0])
    return (result.left[0, :, :rank], result.singular_values[0, :rank], result.right[0, :, :rank])
