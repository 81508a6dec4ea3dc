"""Truncated condition number of J from its Gram matrix (fisher-measures-dynamic-sampling, eq. 7).

c_k = σmax(J)/σmin⁺(J) = sqrt(max E_k / min E_k), with E_k the non-zero eigenvalues of
F̃ = JᵀJ. "Non-zero" uses the rule of matrix-rank: an eigenvalue counts when it exceeds
eps · B · λmax (eps of float64, B the matrix size), so a rank-deficient Gram (B > rank J, or
repeated samples) is truncated rather than dominated by rounding noise.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.measures.checks import check_fraction
from tune_batchdyn.measures.eigen import eigvalsh


def check_gram(gram: Tensor) -> None:
    """Raise unless ``gram`` is a square matrix."""
    if not isinstance(gram, Tensor) or gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
        shape = tuple(gram.shape) if isinstance(gram, Tensor) else type(gram).__name__
        raise ConfigError(f"gram must be a square (B, B) tensor; got {shape}.")


def check_symmetric(gram: Tensor, rtol: float = 1e-6) -> None:
    """Raise unless ``gram`` equals its transpose to ``rtol`` of its largest entry: eigvalsh
    reads one triangle only, so another matrix would give the eigenvalues of a different one."""
    scale = float(gram.abs().max()) if gram.numel() else 0.0
    asymmetry = float((gram - gram.T).abs().max()) if gram.numel() else 0.0
    if asymmetry > rtol * scale:
        raise ConfigError(f"gram must be symmetric, a Gram matrix JᵀJ such as per_sample_gram "
                          f"returns; its largest |F̃ − F̃ᵀ| is {asymmetry:.3g} against entries "
                          f"up to {scale:.3g}.")


def nonzero_eigenvalues(gram: Tensor) -> Tensor:
    """The eigenvalues of the symmetric PSD ``gram`` above eps·B·λmax (float64, ascending);
    none when ``gram`` is not finite (a diverged model's)."""
    check_gram(gram)
    if not bool(torch.isfinite(gram).all()):
        return gram.new_empty(0, dtype=torch.float64)
    gram = gram.to(torch.float64)
    check_symmetric(gram)
    eigenvalues = eigvalsh(gram)
    if eigenvalues.numel() == 0:
        return eigenvalues
    largest = eigenvalues[-1]
    threshold = torch.finfo(torch.float64).eps * gram.shape[0] * largest
    return eigenvalues[eigenvalues > threshold]


def truncated_condition(gram: Tensor) -> float:
    """c = sqrt(λmax / λmin⁺) of F̃ = JᵀJ; NaN when F̃ has no non-zero eigenvalue (J = 0) or
    is not finite."""
    kept = nonzero_eigenvalues(gram)
    if kept.numel() == 0:
        return math.nan
    return math.sqrt(float(kept[-1] / kept[0]))


def active_condition(gram: Tensor, vanish: float = 1e-3) -> float:
    """c over the samples whose gradient has not vanished: F̃ restricted to the rows and columns
    i with F̃_ii ≥ ``vanish`` · tr F̃ / B, then `truncated_condition`.

    A sturdier variant of the seed's c_k (fisher-measures-dynamic-sampling asks for one if c_k
    proves unstable): once a network fits some samples, their gradients shrink towards zero and
    the smallest non-zero eigenvalue, hence c_k, is set by whichever sample fits best, not by
    the batch. ``benchmarks/ck_variants.py`` compares the two; C̄K stays the seed's.
    """
    check_gram(gram)
    check_fraction("vanish", vanish)
    diagonal = gram.diagonal().to(torch.float64)
    mean = float(diagonal.mean()) if diagonal.numel() else 0.0
    if not mean > 0:
        return math.nan
    keep = torch.nonzero(diagonal >= vanish * mean).flatten()
    return truncated_condition(gram[keep][:, keep])


def floored_condition(gram: Tensor, floor: float = 1e-3) -> float:
    """c with the smallest non-zero eigenvalue floored at ``floor`` · tr F̃ / B (the mean
    eigenvalue): another sturdier variant of c_k, bounded by sqrt(B / floor)."""
    check_fraction("floor", floor)
    kept = nonzero_eigenvalues(gram)
    if kept.numel() == 0:
        return math.nan
    smallest = max(float(kept[0]), floor * float(kept.sum()) / gram.shape[0])
    return math.sqrt(float(kept[-1]) / smallest)
