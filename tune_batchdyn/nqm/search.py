"""Fewest steps to a target risk, over a hyperparameter grid, for many batch sizes at once.

For a grid point ``theta`` the risk after ``t`` steps at batch size ``B`` is
``D_theta(t) + N_theta(t) / B`` (:class:`~.dynamics.Dynamics`), so one pass over ``t`` serves
every batch size. Steps to target at ``B`` is ``min_theta T_theta`` with ``T_theta`` the first
``t`` where the risk is at or below the target. The search:

1. *Bracket*: evaluate every stable grid point at ``t = 1, 2, 4, ...`` (one squaring per step);
   the first ``2^k`` where some grid point reaches the target brackets the answer in
   ``(2^(k-1), 2^k]``; the candidates are the grid points that reach it by ``2^k``.
2. *Binary lifting* on the candidates (in chunks, to bound memory): from ``t = 2^(k-1)`` try
   adding ``2^b`` for ``b = k-2, ..., 0``, keeping each addition after which no candidate has
   reached the target; the answer is that ``t + 1``. Each trial costs one composition.

This is exact when each grid point's risk is non-increasing in ``t`` (SGD and preconditioned SGD
when every dimension starts above its steady state, as in the seed's setting). Where a risk
oscillates (momentum with underdamped dimensions, ``(1 - a + beta)^2 < 4 beta``; EMA with
``a > 1``) the search returns *a* crossing, not necessarily the first, as the authors'
notebook's binary search does: on the seed's model one of 21 brute-force checks differs
(momentum at B = 32768: first dip below the target at 251 steps, bisection 257).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice

import numpy as np

from tune_batchdyn.nqm.dynamics import Dynamics

#: Grid points x bins handled at once in the lifting phase (bounds memory of cached doublings).
CHUNK_ELEMENTS = 1 << 14


@dataclass(frozen=True)
class SearchResult:
    """Per batch size: ``steps`` (``inf`` if not reached), winning grid index (-1: none needed
    or none found), and that grid point's risk at ``steps``."""

    steps: np.ndarray
    index: np.ndarray
    risk: np.ndarray


def _risk(deterministic: np.ndarray, noise: np.ndarray, batch: float) -> np.ndarray:
    return deterministic + noise / batch


def _lift(dynamics: Dynamics, batch: float, target: float, k_star: int) -> tuple[int, int, float]:
    """Steps, local index and risk of the candidates' first crossing in ``(2^(k*-1), 2^k*]``."""
    doublings = list(islice(dynamics.doublings(), k_star))
    steps = 1 << (k_star - 1)
    state = doublings[k_star - 1]
    for b in range(k_star - 2, -1, -1):
        trial = dynamics.extend(state, steps, doublings[b], 1 << b)
        if np.min(_risk(*dynamics.risk_parts(trial), batch)) > target:
            state, steps = trial, steps + (1 << b)
    final = dynamics.extend(state, steps, doublings[0], 1)
    risk = _risk(*dynamics.risk_parts(final), batch)
    best = int(np.argmin(risk))
    return steps + 1, best, float(risk[best])


def _bracket(grid: Dynamics, batches: np.ndarray, target: float, k_max: int,
             pending: np.ndarray) -> dict[int, tuple[int, np.ndarray, np.ndarray]]:
    """Per pending batch size: the first ``k`` where some grid point reaches the target at
    ``2^k`` steps, those grid points, and their risks then."""
    brackets: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}
    pending = pending.copy()
    for k, moment_map in zip(range(k_max + 1), grid.doublings(), strict=False):
        deterministic, noise = grid.risk_parts(moment_map)
        for j in np.flatnonzero(pending):
            risk = _risk(deterministic, noise, batches[j])
            reached = np.flatnonzero(risk <= target)
            if reached.size:
                brackets[int(j)] = (k, reached, risk[reached])
                pending[j] = False
        if not pending.any():
            break
    return brackets


def steps_to_target(dynamics: Dynamics, batch_sizes: np.ndarray, target: float,
                    max_steps: int) -> SearchResult:
    """Fewest steps to ``target`` for every batch size, searching ``t <= 2^ceil(log2 max)``."""
    batches = np.asarray(batch_sizes, dtype=float)
    steps = np.full(batches.shape, np.inf)
    index = np.full(batches.shape, -1)
    risk = np.full(batches.shape, np.nan)
    initial = dynamics.spectrum.initial_risk()
    if initial <= target:
        return SearchResult(np.zeros(batches.shape), index, np.full(batches.shape, initial))
    stable = np.flatnonzero(dynamics.stable())
    if stable.size == 0:
        return SearchResult(steps, index, risk)
    grid = dynamics.subset(stable)
    k_max = max(0, int(np.ceil(np.log2(max_steps))))
    brackets = _bracket(grid, batches, target, k_max, np.ones(batches.shape, dtype=bool))
    per_chunk = max(1, CHUNK_ELEMENTS // grid.rate.shape[1])
    for j, (k_star, reached, risk_k) in brackets.items():
        if k_star == 0:
            best = int(np.argmin(risk_k))
            steps[j], index[j], risk[j] = 1.0, stable[reached[best]], risk_k[best]
            continue
        found = (np.inf, -1, np.inf)
        for start in range(0, reached.size, per_chunk):
            chunk = reached[start:start + per_chunk]
            chunk_steps, local, chunk_risk = _lift(grid.subset(chunk), batches[j], target, k_star)
            if (chunk_steps, chunk_risk) < (found[0], found[2]):
                found = (chunk_steps, int(chunk[local]), chunk_risk)
        steps[j], index[j], risk[j] = found[0], stable[found[1]], found[2]
    return SearchResult(steps, index, risk)
