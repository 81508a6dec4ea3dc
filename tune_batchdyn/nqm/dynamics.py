"""Expected-risk dynamics of each NQM optimiser, vectorised over a hyperparameter grid x bins.

Per dimension (curvature ``h``, noise variance ``c``), with ``P = H^-p`` the update sees the
preconditioned curvature ``h~ = h^(1-p)`` and noise variance ``n = c h^(-2p)`` (the seed's
"SGD on h~, c~ = c h^-p" in rescaled coordinates; the risk is still ``h E[x^2] / 2``).
With ``a = lr * h~`` and noise ``eta`` of variance ``lr**2 n / B``:

- SGD: ``x' = (1 - a) x - eta``. Closed form (DESIGN.md), ``r = 1 - a``:
  ``E[x_t^2] = r^(2t) E[x_0^2] + lr**2 n / B * (1 - r^(2t)) / (1 - r^2)``.
- Heavy ball (seed eq. 5): ``v' = beta v - lr g``, ``x' = x + v'``, i.e. ``M = [[1-a, beta],
  [-a, beta]]``, ``u = (1, 1)``, ``v_0 = 0``, risk read from ``x``.
- EMA (seed eq. 11): ``x' = (1-a) x - eta``, ``x_bar' = beta x_bar + (1-beta) x'``, i.e.
  ``M = [[1-a, 0], [(1-beta)(1-a), beta]]``, ``u = (1, 1-beta)``, ``x_bar_0 = x_0``, risk read
  from ``x_bar``.

The matrix cases are propagated exactly by :mod:`.moments` (the seed's Theorems 1-2 are upper
bounds; this is the exact second-moment recursion they bound). Arrays are ``(grid, bins)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tune_batchdyn.nqm.moments import MomentMap, MomentState, one_step_map, power_by_squaring
from tune_batchdyn.nqm.optimizers import OptimizerSpec
from tune_batchdyn.nqm.spectrum import Spectrum

#: (init direction w0, read-out e) per kind: ``z_0 = x_0 * w0``, the risk is ``h (e . z)^2 / 2``.
_INIT_AND_READOUT = {
    "sgd": ((1.0, 0.0), (1.0, 0.0)),
    "momentum": ((1.0, 0.0), (1.0, 0.0)),
    "ema": ((1.0, 1.0), (0.0, 1.0)),
}


@dataclass(frozen=True)
class Dynamics:
    """One optimiser on one spectrum for a grid of ``(lr, coefficient)`` pairs.

    ``rate = lr h~`` and ``noise_unit = lr**2 n`` are ``(grid, bins)``; ``weight = count h / 2``
    turns a per-dimension second moment into risk. Risks split into a deterministic part and a
    noise part at batch size 1, so one evaluation serves every batch size:
    ``risk(t, B) = deterministic(t) + noise(t) / B``.
    """

    spec: OptimizerSpec
    spectrum: Spectrum
    lr: np.ndarray  # (grid,)
    coefficient: np.ndarray  # (grid,); zeros for SGD
    rate: np.ndarray  # (grid, bins)
    noise_unit: np.ndarray  # (grid, bins)

    @property
    def size(self) -> int:
        return int(self.lr.size)

    @property
    def weight(self) -> np.ndarray:
        return self.spectrum.count * self.spectrum.curvature / 2.0

    def stable(self) -> np.ndarray:
        """Grid points whose every bin has spectral radius < 1 (else the risk diverges)."""
        top = self.rate.max(axis=1)
        if self.spec.kind == "momentum":
            return (top < 2.0 * (1.0 + self.coefficient)) & (self.coefficient < 1.0)
        return (top < 2.0) & (self.coefficient < 1.0)

    def subset(self, index: np.ndarray) -> Dynamics:
        return Dynamics(self.spec, self.spectrum, self.lr[index], self.coefficient[index],
                        self.rate[index], self.noise_unit[index])

    def step_map(self) -> MomentMap:
        """The one-step second-moment map (grid x bins)."""
        r = 1.0 - self.rate
        beta = self.coefficient[:, None]
        zero = np.zeros_like(r)
        if self.spec.kind == "momentum":
            return one_step_map(r, beta + zero, -self.rate, beta + zero, 1.0, 1.0)
        if self.spec.kind == "ema":
            return one_step_map(r, zero, (1.0 - beta) * r, beta + zero, 1.0, 1.0 - beta)
        return one_step_map(r, zero, zero, zero, 1.0, 0.0)

    def map_after(self, steps: int) -> MomentMap:
        """The map of ``steps`` steps (>= 1): closed form for SGD, squaring otherwise."""
        if self.spec.kind == "sgd":
            return self._sgd_closed_form(steps)
        return power_by_squaring(self.step_map(), steps)

    def doublings(self) -> Iterator[MomentMap]:
        """Maps after 1, 2, 4, 8, ... steps (an endless generator)."""
        k = 0
        current = self.map_after(1)
        while True:
            yield current
            k += 1
            current = self._sgd_closed_form(2**k) if self.spec.kind == "sgd" else current.squared()

    def extend(self, state: MomentMap, steps: int, doubling: MomentMap, extra: int) -> MomentMap:
        """The map after ``steps + extra`` steps from the map after ``steps`` and the map of
        ``extra`` (a power of two) steps; SGD just re-evaluates its closed form."""
        if self.spec.kind == "sgd":
            return self._sgd_closed_form(steps + extra)
        return state.then(doubling)

    def _sgd_closed_form(self, steps: int) -> MomentMap:
        """``M_t = r^t``, ``Q_t = (1 - r^(2t)) / (1 - r^2)`` (``1 - r^2 = a (2 - a)``)."""
        a = self.rate
        r = 1.0 - a
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            log_abs_r = np.log(np.abs(r))
            small = a < 0.5
            log_abs_r[small] = np.log1p(-a[small])
            magnitude = np.exp(steps * log_abs_r)
            contraction = a * (2.0 - a)
            accumulated = np.where(contraction == 0.0, float(steps),
                                   -np.expm1(2.0 * steps * log_abs_r) / contraction)
        sign = np.where((r < 0) & (int(steps) % 2 == 1), -1.0, 1.0)
        zero = np.zeros_like(a)
        return MomentMap(sign * magnitude, zero, zero, zero, accumulated, zero, zero)

    def risk_parts(self, moment_map: MomentMap) -> tuple[np.ndarray, np.ndarray]:
        """``(deterministic, noise at B=1)`` risk after the map from ``z_0 = x_0 w0``, per grid
        point: ``sum_bins weight (x0_var (e M w0)^2 + lr^2 n e^T Q e)``."""
        (w1, w2), (e1, e2) = _INIT_AND_READOUT[self.spec.kind]
        m = moment_map
        gain = e1 * (m.m11 * w1 + m.m12 * w2) + e2 * (m.m21 * w1 + m.m22 * w2)
        spread = e1 * e1 * m.q11 + 2.0 * e1 * e2 * m.q12 + e2 * e2 * m.q22
        weight = self.weight
        deterministic = (gain * gain) @ weight * self.spectrum.x0_var
        noise = (self.noise_unit * spread) @ weight
        return deterministic, noise

    @property
    def initial_direction(self) -> tuple[float, float]:
        """``w0``: the state starts at ``z_0 = x_0 w0`` (``v_0 = 0``; ``x_bar_0 = x_0``)."""
        return _INIT_AND_READOUT[self.spec.kind][0]

    def initial_state(self) -> MomentState:
        """``S_0 = x0_var w0 w0^T`` per (grid, bin)."""
        w1, w2 = self.initial_direction
        base = np.full(self.rate.shape, self.spectrum.x0_var)
        return MomentState(base * w1 * w1, base * w1 * w2, base * w2 * w2)

    def readout(self, state: MomentState) -> np.ndarray:
        """Per-dimension second moment of the evaluated iterate (x, or x_bar for EMA)."""
        _, (e1, e2) = _INIT_AND_READOUT[self.spec.kind]
        return state.quadratic(e1, e2)

    def iterate_moment(self, state: MomentState) -> np.ndarray:
        """Per-dimension ``E[x^2]`` of the current iterate ``x`` (the gradient is taken there)."""
        return state.s11


def make_dynamics(spectrum: Spectrum, spec: OptimizerSpec, lr: np.ndarray,
                  coefficient: np.ndarray) -> Dynamics:
    """Dynamics for the grid of pairs ``(lr[j], coefficient[j])``."""
    lr = np.asarray(lr, dtype=float).reshape(-1)
    coefficient = np.broadcast_to(np.asarray(coefficient, dtype=float), lr.shape).copy()
    h = spectrum.curvature
    p = spec.precond_power
    curvature = h ** (1.0 - p)
    noise = spectrum.noise * h ** (-2.0 * p)
    return Dynamics(spec, spectrum, lr, coefficient, lr[:, None] * curvature[None, :],
                    (lr**2)[:, None] * noise[None, :])


def preconditioned_top_curvature(spectrum: Spectrum, spec: OptimizerSpec) -> float:
    """``max h~ = max h^(1-p)``: sets the scale of the learning-rate grid."""
    return float(np.max(spectrum.curvature ** (1.0 - spec.precond_power)))
