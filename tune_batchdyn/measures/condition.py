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
from tune_batchdyn.measures.eigen import eigvalsh


def check_gram(gram: Tensor) -> None:
    """Raise unless ``gram`` is a square matrix."""
    if not isinstance(gram, Tensor) or gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
        shape = tuple(gram.shape) if isinstance(gram, Tensor) else type(gram).__name__
        raise ConfigError(f"gram must be a square (B, B) tensor; got {shape}.")


def nonzero_eigenvalues(gram: Tensor) -> Tensor:
    """The eigenvalues of the symmetric PSD ``gram`` above eps·B·λmax (float64, ascending)."""
    check_gram(gram)
    eigenvalues = eigvalsh(gram.to(torch.float64))
    if eigenvalues.numel() == 0:
        return eigenvalues
    largest = eigenvalues[-1]
    threshold = torch.finfo(torch.float64).eps * gram.shape[0] * largest
    return eigenvalues[eigenvalues > threshold]


def truncated_condition(gram: Tensor) -> float:
    """c = sqrt(λmax / λmin⁺) of F̃ = JᵀJ; NaN when F̃ has no non-zero eigenvalue (J = 0)."""
    kept = nonzero_eigenvalues(gram)
    if kept.numel() == 0:
        return math.nan
    return math.sqrt(float(kept[-1] / kept[0]))
