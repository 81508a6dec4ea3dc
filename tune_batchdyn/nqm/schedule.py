"""Optimised piecewise-constant learning-rate schedules for (preconditioned) SGD (seed 3.7.2).

For ``T`` steps split into ``pieces`` near-equal pieces (lengths differ by at most one), the
expected risk of a schedule ``lr_1..lr_K`` follows the exact recursion per dimension
``m_k = rho_k m_(k-1) + nu_k`` with ``rho_k = (1 - lr_k h~)^(2 L_k)`` and
``nu_k = lr_k^2 n / B * (1 - rho_k) / (1 - (1 - lr_k h~)^2)`` (the closed form over a piece).
The seed minimises it with BFGS for a fixed ``T`` and binary-searches ``T``; here L-BFGS-B
minimises over ``log lr`` with the exact gradient (reverse accumulation through the recursion),
with ``lr <= LR_CAP / max h~`` (the seed caps the learning rate for stability; its value is
lost in the text, so the cap sits just inside SGD's stability limit ``2 / max h~``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.nqm import checks
from tune_batchdyn.nqm.model import NQM
from tune_batchdyn.nqm.optimizers import parse_optimizer

#: Learning rates stay at or below ``LR_CAP / max h~``.
LR_CAP = 1.99
#: Learning rates stay at or above ``LR_FLOOR / max h~`` (log-parametrised search).
LR_FLOOR = 1e-8


@dataclass(frozen=True)
class ScheduleResult:
    """The best schedule found for ``steps`` total steps and its exact expected risk."""

    steps: float  # inf when the target was not reached
    lrs: np.ndarray  # one learning rate per piece
    piece_steps: np.ndarray  # steps per piece (sum = steps)
    risk: float
    success: bool
    message: str


def piece_lengths(steps: int, pieces: int) -> np.ndarray:
    """``steps`` split into ``pieces`` lengths differing by at most one (longer ones first)."""
    base, extra = divmod(int(steps), int(pieces))
    return np.array([base + (k < extra) for k in range(pieces)], dtype=float)


class _ScheduleRisk:
    """Exact risk of a schedule and its gradient with respect to ``log lr``."""

    def __init__(self, nqm: NQM, optimizer: str, batch: float, lengths: np.ndarray) -> None:
        spec = parse_optimizer(optimizer)
        problem = nqm.problem
        self.curvature = problem.curvature ** (1.0 - spec.precond_power)  # h~
        self.noise = problem.noise * problem.curvature ** (-2.0 * spec.precond_power) / batch
        self.weight = problem.count * problem.curvature / 2.0
        self.x0_var = problem.x0_var
        self.lengths = lengths[:, None]  # (pieces, 1)

    def __call__(self, log_lr: np.ndarray) -> tuple[float, np.ndarray]:
        lr = np.exp(log_lr)[:, None]  # (pieces, 1)
        h = self.curvature[None, :]
        a = lr * h
        r = 1.0 - a
        two_l = 2.0 * self.lengths
        rho = np.power(r, two_l)
        d_rho = -two_l * h * np.power(r, two_l - 1.0)
        contraction = 2.0 - a
        scale = self.noise[None, :] / h  # nu = scale * lr (1 - rho) / (2 - a)
        nu = scale * lr * (1.0 - rho) / contraction
        d_nu = scale * ((1.0 - rho) / contraction - lr * d_rho / contraction
                        + lr * (1.0 - rho) * h / contraction**2)
        before = np.empty_like(rho)  # m_(k-1), the moment entering piece k
        moment = np.full(self.curvature.shape, self.x0_var)
        for k in range(rho.shape[0]):
            before[k] = moment
            moment = rho[k] * moment + nu[k]
        # adjoint: dR/dm_k = w * prod_{j>k} rho_j (a suffix product over the pieces)
        later = np.vstack([rho[1:], np.ones_like(rho[:1])])
        adjoint = self.weight[None, :] * np.flip(np.cumprod(np.flip(later, 0), axis=0), 0)
        gradient = np.sum(adjoint * (before * d_rho + d_nu), axis=1) * lr[:, 0]
        return float(moment @ self.weight), gradient


def optimize_schedule(nqm: NQM, batch_size: float, steps: int, *, pieces: int = 50,
                      optimizer: str = "sgd", initial_lrs: np.ndarray | None = None
                      ) -> ScheduleResult:
    """Minimise the expected risk after ``steps`` over ``pieces``-piece schedules.

    Starts from ``initial_lrs`` or else the best constant learning rate on a fine grid.
    """
    spec = parse_optimizer(optimizer)
    if spec.kind != "sgd":
        raise ConfigError(f"optimizer={optimizer!r} is not accepted for schedule optimisation; "
                          "use sgd or precond:<p>.")
    checks.whole_number("pieces", pieces, minimum=1)
    checks.whole_number("steps", steps, minimum=pieces)
    batch = float(checks.batch_sizes("batch_size", batch_size)[0])
    top = float(np.max(nqm.problem.curvature ** (1.0 - spec.precond_power)))
    bounds = (np.log(LR_FLOOR / top), np.log(LR_CAP / top))
    if initial_lrs is None:
        grid = np.logspace(-5.0, np.log10(LR_CAP), 100) / top
        risks = nqm.expected_risk(int(steps), grid, batch, optimizer)
        start = np.full(pieces, np.log(grid[int(np.nanargmin(risks))]))
    else:
        start = np.clip(np.log(np.asarray(initial_lrs, dtype=float)), *bounds)
    lengths = piece_lengths(int(steps), pieces)
    objective = _ScheduleRisk(nqm, optimizer, batch, lengths)
    result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=[bounds] * pieces)
    return ScheduleResult(float(steps), np.exp(result.x), lengths.astype(int), float(result.fun),
                          bool(result.success), str(result.message))


def schedule_steps_to_target(nqm: NQM, batch_size: float, target: float = 0.01, *,
                             pieces: int = 50, optimizer: str = "sgd") -> ScheduleResult:
    """Fewest steps for which an optimised ``pieces``-piece schedule reaches ``target``.

    Binary search between the information-theoretic bound and the best constant learning
    rate's steps (a constant schedule is one of the candidates), warm-starting each
    optimisation from the last schedule that reached the target.
    """
    goal = checks.positive_number("target", target)
    constant_steps, constant_lr = nqm.steps_to_target(batch_size, optimizer, goal)
    if not np.isfinite(constant_steps):
        return ScheduleResult(np.inf, np.array([]), np.array([]), np.nan, False,
                              "the best constant learning rate does not reach the target")
    high = max(int(constant_steps), pieces)
    best = ScheduleResult(float(high), np.full(pieces, constant_lr), piece_lengths(high, pieces),
                          float(nqm.expected_risk(high, constant_lr, batch_size, optimizer)[0]),
                          True, "constant learning rate")
    low = max(pieces, int(np.floor(nqm.lower_bound_steps([batch_size], goal)[0]))) - 1
    while high - low > 1:
        middle = (low + high) // 2
        trial = optimize_schedule(nqm, batch_size, middle, pieces=pieces, optimizer=optimizer,
                                  initial_lrs=best.lrs)
        if trial.risk <= goal:
            high, best = middle, trial
        else:
            low = middle
    return best
