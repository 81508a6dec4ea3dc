"""The noisy quadratic model (seed: "Which algorithmic choices matter at which batch sizes?").

>>> model = NQM()                          # 10^4 dims, h_i = 1/i, C = H, 100 bins, x(0) ~ N(0, I)
>>> steps, lr = model.steps_to_target(64)  # plain SGD, target risk 0.01
>>> 5e6 < steps * 64 < 7e6
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.nqm import checks
from tune_batchdyn.nqm.critical import CriticalBatchFit, fit_critical_batch, lower_bound_steps
from tune_batchdyn.nqm.dynamics import Dynamics, make_dynamics, preconditioned_top_curvature
from tune_batchdyn.nqm.optimizers import (
    OptimizerSpec,
    default_coefficient_grid,
    default_lr_grid,
    parse_optimizer,
)
from tune_batchdyn.nqm.search import steps_to_target as search_steps
from tune_batchdyn.nqm.spectrum import Spectrum, build_spectrum

#: The seed's batch sizes: 1, 2, 4, ..., 65536.
DEFAULT_BATCH_SIZES: tuple[int, ...] = tuple(2**k for k in range(17))
#: Searches stop at 2^40 steps; a target not reached by then reports ``inf`` steps.
DEFAULT_MAX_STEPS = 2**40


@dataclass(frozen=True)
class StepsCurve:
    """Steps to target and the best hyperparameters per batch size, for one optimiser."""

    optimizer: str
    target: float
    batch_sizes: np.ndarray
    steps: np.ndarray  # inf where the target was not reached
    best_lr: np.ndarray  # NaN where no step was needed or none found
    best_coefficient: np.ndarray  # momentum / EMA coefficient; 0 for SGD
    lower_bound: np.ndarray  # information-theoretic minimum steps

    @property
    def effective_lr(self) -> np.ndarray:
        """``lr / (1 - beta)`` for momentum (the seed's effective learning rate), else ``lr``."""
        if self.optimizer.startswith("momentum"):
            return self.best_lr / (1.0 - self.best_coefficient)
        return self.best_lr

    def critical_batch(self) -> CriticalBatchFit:
        """Fit ``S(B) = S_min (1 + B_crit / B)`` to this curve."""
        return fit_critical_batch(self.batch_sizes, self.steps)


class NQM:
    """Noisy quadratic model: ``L(x) = sum_i h_i x_i^2 / 2``, gradient noise covariance ``C``.

    ``spectrum``: ``'1/i'`` (``h_i = 1/i``, the seed), ``'1/i^a'``, or the eigenvalues.
    ``noise``: ``'C=H'`` (the seed), ``'C=I'``, ``'C=H^q'``, or the diagonal of ``C`` in H's
    eigenbasis. ``bins``: geometric curvature bins (the seed: 100) or ``None`` for every
    dimension. ``x0_var``: ``E[x_i(0)^2]``. Optimisers: ``sgd``, ``momentum``, ``ema``,
    ``precond:<p>`` and ``momentum+precond:<p>`` / ``ema+precond:<p>``
    (:mod:`tune_batchdyn.nqm.optimizers`).
    """

    def __init__(self, dim: int = 10_000, spectrum: str | Sequence[float] = "1/i",
                 noise: str | Sequence[float] = "C=H", bins: int | None = 100,
                 x0_var: float = 1.0) -> None:
        self.dim = dim
        self.spectrum = spectrum
        self.noise = noise
        self.bins = bins
        self.x0_var = x0_var
        self.problem: Spectrum = build_spectrum(dim, spectrum, noise, bins, x0_var)

    def __repr__(self) -> str:
        return (f"NQM(dim={self.dim}, spectrum={self.spectrum!r}, noise={self.noise!r}, "
                f"bins={self.bins}, x0_var={self.x0_var})")

    # -- dynamics ---------------------------------------------------------------------------

    def dynamics(self, optimizer: str | OptimizerSpec, lr: object,
                 coefficient: object = 0.0) -> Dynamics:
        """Dynamics for the pairs ``(lr, coefficient)`` (broadcast, flattened)."""
        spec = parse_optimizer(optimizer)
        lrs = checks.grid("lr", lr, low=0.0, high=np.inf, closed_high=False)
        coefficients = checks.grid("coefficient", coefficient, low=0.0, high=1.0,
                                  closed_high=False)
        if spec.kind == "sgd" and np.any(coefficients != 0.0):
            raise ConfigError(f"coefficient={coefficient!r} is not accepted for "
                              f"optimizer={spec.label!r}; only momentum and ema take one.")
        lrs, coefficients = np.broadcast_arrays(lrs[:, None], coefficients[None, :])
        return make_dynamics(self.problem, spec, lrs.ravel(), coefficients.ravel())

    def expected_risk(self, steps: int | Sequence[int], lr: object, batch_size: float,
                      optimizer: str = "sgd", coefficient: float = 0.0) -> np.ndarray:
        """Exact expected risk after ``steps`` at constant ``lr`` (a number or a 1-D grid).

        With a grid of coefficients too, the columns are every ``(lr, coefficient)`` pair, lr
        major. Returns ``(len(steps), columns)`` for a sequence of steps, else ``(columns,)``.
        Closed form for (preconditioned) SGD, the exact second-moment recursion otherwise.
        """
        batch = float(checks.batch_sizes("batch_size", batch_size)[0])
        dynamics = self.dynamics(optimizer, lr, coefficient)
        counts = [checks.whole_number("steps", s) for s in np.atleast_1d(steps).tolist()]
        rows = []
        for count in counts:
            if count == 0:
                rows.append(np.full(dynamics.size, self.problem.initial_risk()))
                continue
            with np.errstate(over="ignore", invalid="ignore"):
                deterministic, noise = dynamics.risk_parts(dynamics.map_after(count))
                rows.append(deterministic + noise / batch)
        risk = np.array(rows)
        return risk if np.ndim(steps) else risk[0]

    def schedule_risk(self, lrs: object, steps_per_piece: int | Sequence[int],
                      batch_size: float, optimizer: str = "sgd",
                      coefficient: float = 0.0) -> np.ndarray:
        """Exact expected risk after a piecewise-constant schedule (the seed's section 3.7.2).

        ``lrs``: ``(pieces,)`` or ``(schedules, pieces)``; ``steps_per_piece``: one count or one
        per piece. The second moments are carried piece by piece through each piece's exact
        map (the seed's dynamic programming over eq. 3). Returns one risk per schedule.
        """
        batch = float(checks.batch_sizes("batch_size", batch_size)[0])
        table = np.asarray(lrs, dtype=float)
        if table.ndim not in (1, 2) or table.shape[-1] == 0:
            raise ConfigError(f"lrs with shape {table.shape} is not accepted; use (pieces,) or "
                              "(schedules, pieces).")
        schedules = np.atleast_2d(table)
        pieces = schedules.shape[1]
        lengths = np.broadcast_to(np.asarray(steps_per_piece), (pieces,))
        lengths = [checks.whole_number("steps_per_piece", n) for n in lengths.tolist()]
        pieces_dynamics = [self.dynamics(optimizer, schedules[:, k], coefficient)
                           for k in range(pieces)]
        state = pieces_dynamics[0].initial_state()
        for dynamics, length in zip(pieces_dynamics, lengths, strict=True):
            if length:
                with np.errstate(over="ignore", invalid="ignore"):
                    state = state.advance(dynamics.map_after(length),
                                          dynamics.noise_unit / batch)
        risk = pieces_dynamics[-1].readout(state) @ pieces_dynamics[-1].weight
        return risk if table.ndim == 2 else risk[0]

    # -- steps to target ----------------------------------------------------------------------

    def _grids(self, spec: OptimizerSpec, lr_grid: object, coefficient_grid: object,
               lr_points: int, coefficient_points: int) -> tuple[object, object]:
        checks.whole_number("lr_points", lr_points, minimum=1)
        checks.whole_number("coefficient_points", coefficient_points, minimum=1)
        top = preconditioned_top_curvature(self.problem, spec)
        lrs = default_lr_grid(spec, top, lr_points) if lr_grid is None else lr_grid
        coefficients = (default_coefficient_grid(spec, coefficient_points)
                        if coefficient_grid is None else coefficient_grid)
        return lrs, coefficients

    def steps_curve(self, batch_sizes: Sequence[float] = DEFAULT_BATCH_SIZES,
                    optimizer: str = "sgd", target: float = 0.01, *, lr_grid: object = None,
                    coefficient_grid: object = None, lr_points: int = 100,
                    coefficient_points: int = 20,
                    max_steps: int = DEFAULT_MAX_STEPS) -> StepsCurve:
        """Fewest steps to ``target`` per batch size over the lr (x coefficient) grid.

        Default grids: :func:`~.optimizers.default_lr_grid` with ``lr_points`` points and, for
        momentum / EMA, :func:`~.optimizers.default_coefficient_grid` with
        ``coefficient_points``; every pair of the two is searched.
        """
        spec = parse_optimizer(optimizer)
        batches = checks.batch_sizes("batch_sizes", batch_sizes)
        goal = checks.positive_number("target", target)
        limit = checks.whole_number("max_steps", max_steps)
        lrs, coefficients = self._grids(spec, lr_grid, coefficient_grid, lr_points,
                                        coefficient_points)
        dynamics = self.dynamics(spec, lrs, coefficients)
        result = search_steps(dynamics, batches, goal, max(limit, 1))
        steps = np.where(result.steps > limit, np.inf, result.steps)
        found = (result.index >= 0) & np.isfinite(steps)
        best_lr = np.where(found, dynamics.lr[result.index], np.nan)
        best_coefficient = np.where(found, dynamics.coefficient[result.index], np.nan)
        bound = lower_bound_steps(self.problem, batches, goal)
        return StepsCurve(spec.label, goal, batches, steps, best_lr, best_coefficient, bound)

    def steps_to_target(self, batch_size: float, optimizer: str = "sgd", target: float = 0.01,
                        **grid_options: object) -> tuple[float, float]:
        """``(steps, best_lr)`` at one batch size; ``(inf, nan)`` if the target is not reached.

        ``grid_options``: ``lr_grid``, ``coefficient_grid``, ``lr_points``,
        ``coefficient_points``, ``max_steps`` as in :meth:`steps_curve`.
        """
        curve = self.steps_curve([batch_size], optimizer, target, **grid_options)
        return float(curve.steps[0]), float(curve.best_lr[0])

    def critical_batch_size(self, optimizer: str = "sgd", target: float = 0.01,
                            batch_sizes: Sequence[float] = DEFAULT_BATCH_SIZES,
                            **grid_options: object) -> float:
        """``B_crit`` of the fit ``S(B) = S_min (1 + B_crit / B)``; NaN when the fit fails
        (use ``steps_curve(...).critical_batch()`` for the fit's status and ``S_min``)."""
        fit = self.steps_curve(batch_sizes, optimizer, target, **grid_options).critical_batch()
        return fit.b_crit if fit.success else float("nan")

    def lower_bound_steps(self, batch_sizes: Sequence[float] = DEFAULT_BATCH_SIZES,
                          target: float = 0.01) -> np.ndarray:
        """The information-theoretic minimum steps per batch size (seed section 3.6)."""
        return lower_bound_steps(self.problem, checks.batch_sizes("batch_sizes", batch_sizes),
                                 checks.positive_number("target", target))
