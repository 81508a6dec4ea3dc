"""Top Hessian eigenvalue of the mini-batch loss (hessian-adaptive-batch-abs).

λmax is the eigenvalue of largest magnitude of H = ∇²L (L the mean loss of the batch; with
``params`` the block Hessian of those parameters only), found from Hessian-vector products
(`hvp`) by Lanczos (default) or power iteration, both started from a seeded random vector or
warm-started from an earlier measurement's eigenvector (`warm_start_vector`):

- power iteration: v ← Hv/‖Hv‖, θ = vᵀHv (PyHessian's method);
- Lanczos with full re-orthogonalisation: θ = the Ritz value of largest magnitude of the
  tridiagonal Tₖ, residual ‖Hx − θx‖ = βₖ|yₖ| read off Tₖ's eigenvector y.

Stopping rule (both): the residual ‖Hx − θx‖ ≤ tol·|θ|. For a symmetric H this guarantees an
eigenvalue within tol·|θ| of θ (Bauer–Fike). The seed's and PyHessian's rule, a relative change
of θ below tol between iterations, can stop with errors far above tol when the top
eigenvalues are close (benchmarks/measures.py shows both). Lanczos meets the rule in far fewer
products than power iteration, hence the default.

Mode: eval mode by default, as the seed's authors' code (PyHessian) takes it — batch-norm
uses its running statistics and dropout is off, so L is a fixed function of θ (see `hvp`).

A result that did not converge within ``max_iter`` products is still returned, with a
`ConvergenceWarning`; ``return_info=True`` gives the full `EigenResult`. Lanczos keeps its k
basis vectors (k·P numbers after k products); power iteration needs O(P). Vectors are in the
parameters' dtype (`vector_dtype`: float32 for a float32 model, whose products are no more
precise; the re-orthogonalisation then reads half the bytes), the tridiagonal in float64.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tune_batchdyn.errors import ConfigError, check_choice
from tune_batchdyn.measures.checks import ConvergenceWarning, check_positive_int, check_tolerance
from tune_batchdyn.measures.eigen import eigh
from tune_batchdyn.measures.hvp import (
    HessianVectorProduct,
    hessian_operator,
    select_parameters,
    vector_dtype,
)
from tune_batchdyn.measures.model_state import PerSampleLoss

METHOD_CHOICES = ("lanczos", "power")
_DGKS = 1.0 / math.sqrt(2.0)


@dataclass(frozen=True)
class EigenResult:
    """Outcome of an eigenvalue iteration (SciPy's OptimizeResult habit)."""

    eigenvalue: float
    converged: bool
    n_hvp: int
    relative_residual: float  #: ‖Hx − θx‖ / |θ| at the returned θ
    message: str
    #: the unit eigenvector estimate x (`vector_dtype`), to warm-start the next measurement
    vector: Tensor | None = field(default=None, repr=False, compare=False)


def random_start_vector(size: int, seed: int, device: torch.device,
                        dtype: torch.dtype = torch.float64) -> Tensor:
    """A seeded unit vector of uniformly random direction, ``dtype`` on ``device``.

    Drawn in float32 and cast: the direction is as random, and torch draws float32 normals
    several times faster (288k of them: 3 ms against 14 ms, a tenth of a small net's λmax).
    """
    generator = torch.Generator().manual_seed(seed)
    vector = torch.randn(size, generator=generator).to(device=device, dtype=dtype)
    return vector / vector.norm()


def _relative(residual: float, value: float) -> float:
    return residual / abs(value) if value != 0.0 else math.inf


def power_iteration(
    hvp: HessianVectorProduct, start: Tensor, *, tol: float, max_iter: int
) -> EigenResult:
    """Eigenvalue of largest magnitude by power iteration, residual stopping rule."""
    vector = start
    value, relative = math.nan, math.inf
    for step in range(1, max_iter + 1):
        product = hvp(vector)
        value = float(vector @ product)
        if not math.isfinite(value):
            return _not_finite(step, vector)
        relative = _relative(float((product - value * vector).norm()), value)
        if relative <= tol:
            return EigenResult(value, True, step, relative, f"converged after {step} products",
                               vector)
        norm = product.norm()
        if norm == 0:
            return EigenResult(0.0, True, step, 0.0, "H v = 0: the Hessian is zero on v", vector)
        vector = product / norm
    return _not_converged(value, max_iter, relative, tol, vector)


def _orthogonalise_(w: Tensor, basis: list[Tensor]) -> Tensor:
    """Remove from w (in place) its projection on the vectors of ``basis``; a second pass when
    the first removed most of w (the DGKS criterion: "twice is enough")."""
    norm = w.norm()
    _subtract_projection_(w, basis)
    if w.norm() < _DGKS * norm:
        _subtract_projection_(w, basis)
    return w


def _subtract_projection_(w: Tensor, basis: list[Tensor]) -> None:
    """w -= Σ (v·w) v, classical Gram-Schmidt, in place: the coefficients stay 0-d tensors (no
    host sync) and ``addcmul_`` takes them without a temporary vector."""
    coefficients = [v @ w for v in basis]
    for v, c in zip(basis, coefficients, strict=True):
        w.addcmul_(v, c, value=-1.0)


def _tridiagonal(alphas: list[float], betas: list[float]) -> Tensor:
    matrix = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas, dtype=torch.float64)
        matrix += torch.diag(off, 1) + torch.diag(off, -1)
    return matrix


def _combination(basis: list[Tensor], weights: Tensor) -> Tensor:
    """Σ weights[j] basis[j]: the Ritz vector."""
    vector = basis[0] * float(weights[0])
    for v, weight in zip(basis[1:], weights[1:].tolist(), strict=True):
        vector.add_(v, alpha=weight)
    return vector


def lanczos(hvp: HessianVectorProduct, start: Tensor, *, tol: float, max_iter: int) -> EigenResult:
    """Eigenvalue of largest magnitude by Lanczos with full re-orthogonalisation.

    The basis is kept (k vectors of P after k products, in the start vector's dtype) as
    separate vectors, each the product that made it, normalised in place.
    """
    basis = [start]
    alphas: list[float] = []
    betas: list[float] = []
    value, relative = math.nan, math.inf
    for step in range(1, max_iter + 1):
        w = hvp(basis[-1])
        alphas.append(float(basis[-1] @ w))
        if not math.isfinite(alphas[-1]):
            return _not_finite(step, basis[-1])
        w.add_(basis[-1], alpha=-alphas[-1])  # the three-term recurrence, then
        if betas:  # full re-orthogonalisation against the whole basis
            w.add_(basis[-2], alpha=-betas[-1])
        _orthogonalise_(w, basis)
        beta = float(w.norm())
        ritz_values, ritz_vectors = eigh(_tridiagonal(alphas, betas))
        top = int(ritz_values.abs().argmax())
        value = float(ritz_values[top])
        relative = _relative(beta * abs(float(ritz_vectors[-1, top])), value)
        ritz = ritz_vectors[:, top]
        if relative <= tol:
            return EigenResult(value, True, step, relative, f"converged after {step} products",
                               _combination(basis, ritz))
        if beta <= torch.finfo(w.dtype).eps * max(abs(value), 1.0):
            return EigenResult(value, True, step, relative,
                               f"invariant subspace found after {step} products",
                               _combination(basis, ritz))
        betas.append(beta)
        basis.append(w.div_(beta))
    return _not_converged(value, max_iter, relative, tol, _combination(basis[:max_iter], ritz))


def _not_finite(step: int, vector: Tensor) -> EigenResult:
    """A product with NaN or inf (a diverged model): NaN at once, no further products."""
    return EigenResult(math.nan, False, step, math.nan, "the Hessian-vector product is not "
                       "finite (a diverged model?)", vector)


def _not_converged(value: float, max_iter: int, relative: float, tol: float,
                   vector: Tensor) -> EigenResult:
    return EigenResult(value, False, max_iter, relative, f"not converged after {max_iter} "
                       f"products (relative residual {relative:.2e} > tol {tol:g})", vector)


def warm_start_vector(previous: Tensor, seed: int) -> Tensor:
    """A start vector half the previous eigenvector, half a seeded random direction.

    The previous measurement's eigenvector is close to the new one when the Hessian changed
    little (Lanczos then needs about half the products: benchmarks/measures.py); the random
    half keeps every direction in the Krylov space, so a top eigenvector that changed places
    with another is usually still found. Not always: when the old vector is now the second
    eigenvector, its pair can meet the residual rule first (84 seeds of 100 find the top of a
    diagonal test spectrum 1.3, 1.1, ...; tests/test_measures_hessian.py).
    """
    random = random_start_vector(previous.numel(), seed, previous.device, previous.dtype)
    mixed = previous / previous.norm() + random
    return mixed / mixed.norm()


def hessian_top_eigenvalue(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: PerSampleLoss | None = None,
    *,
    tol: float = 1e-2,
    max_iter: int = 100,
    params: Iterable[Tensor] | None = None,
    seed: int = 0,
    method: str = "lanczos",
    hvp: str = "double_backward",
    train_mode: bool = False,
    start: Tensor | None = None,
    return_info: bool = False,
) -> float | EigenResult:
    """λmax of the Hessian of the batch's mean loss (block Hessian with ``params``).

    ``tol``: relative residual ‖Hx − θx‖/|θ| to reach (1e-2 as the seed); ``max_iter``:
    at most this many Hessian-vector products; ``method``: "lanczos" or "power"; ``hvp``:
    "double_backward" or "forward_over_reverse" (see `hvp`); ``train_mode``: keep the model's
    training mode instead of eval mode; ``start``: the eigenvector estimate of an earlier
    measurement (``EigenResult.vector``) to warm-start from (`warm_start_vector`), else a
    seeded random vector. Returns the eigenvalue, or with ``return_info`` an `EigenResult`
    (its ``vector`` warm-starts the next call); warns (`ConvergenceWarning`) when
    ``max_iter`` was reached first.

    Example::

        lam = hessian_top_eigenvalue(model, x, y, params=list(model.fc.parameters()))
    """
    check_tolerance(tol)
    check_positive_int("max_iter", max_iter)
    check_choice("method", method, METHOD_CHOICES)
    solver = lanczos if method == "lanczos" else power_iteration
    chosen = select_parameters(model, params)
    size = sum(p.numel() for p in chosen)
    if start is not None and (start.numel() != size or not bool(start.norm() > 0)):
        raise ConfigError(f"start must be a non-zero vector of {size} elements (one per "
                          f"differentiated parameter), got shape {tuple(start.shape)}.")
    with hessian_operator(model, inputs, targets, loss_fn, chosen, hvp, train_mode) as product:
        dtype = vector_dtype(chosen)
        vector = (random_start_vector(size, seed, inputs.device, dtype) if start is None
                  else warm_start_vector(start.reshape(-1).to(inputs.device, dtype), seed))
        result = solver(product, vector, tol=tol, max_iter=max_iter)
    if not result.converged:
        warnings.warn(f"hessian_top_eigenvalue: {result.message}", ConvergenceWarning, stacklevel=2)
    return result if return_info else result.eigenvalue
