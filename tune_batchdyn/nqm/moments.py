"""Exact second moments of linear stochastic dynamics, as affine maps on 2x2 blocks.

Every NQM optimiser here is, per dimension, a linear recursion ``z' = M z + u * eta`` on a state
``z`` of at most two numbers (SGD: ``x``; heavy ball: ``(x, v)``; EMA: ``(x, x_bar)``) driven by
zero-mean noise ``eta`` of variance ``lr**2 * n / B``. The second moment ``S = E[z z^T]`` then
follows ``S' = M S M^T + (lr**2 n / B) * u u^T`` exactly, whatever the noise's distribution.

``t`` steps of that recursion are again an affine map ``S -> M_t S M_t^T + (lr**2 n / B) Q_t``
with ``M_t = M^t`` and ``Q_t = sum_{k<t} M^k u u^T M^kT``; maps compose
(``Q_{s+t} = M_t Q_s M_t^T + Q_t``), so ``t`` steps cost ``O(log t)`` compositions by squaring
and need no eigenvalues (no special case at critical damping). Each map holds one 2x2 block per
array element (grid point x bin); the components are spelled out because that is four times
faster in numpy than ``matmul`` on stacks of 2x2 matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MomentMap:
    """``S -> M S M^T + Q`` elementwise; ``Q`` symmetric (``q12 = q21``), per unit noise."""

    m11: np.ndarray
    m12: np.ndarray
    m21: np.ndarray
    m22: np.ndarray
    q11: np.ndarray
    q12: np.ndarray
    q22: np.ndarray

    def then(self, later: MomentMap) -> MomentMap:
        """This map followed by ``later``: ``M = M_l M_s``, ``Q = M_l Q_s M_l^T + Q_l``."""
        a11, a12, a21, a22 = later.m11, later.m12, later.m21, later.m22
        # (M_l Q_s) first, then times M_l^T; only the upper triangle of the symmetric result.
        p11 = a11 * self.q11 + a12 * self.q12
        p12 = a11 * self.q12 + a12 * self.q22
        p21 = a21 * self.q11 + a22 * self.q12
        p22 = a21 * self.q12 + a22 * self.q22
        return MomentMap(
            m11=a11 * self.m11 + a12 * self.m21,
            m12=a11 * self.m12 + a12 * self.m22,
            m21=a21 * self.m11 + a22 * self.m21,
            m22=a21 * self.m12 + a22 * self.m22,
            q11=p11 * a11 + p12 * a12 + later.q11,
            q12=p11 * a21 + p12 * a22 + later.q12,
            q22=p21 * a21 + p22 * a22 + later.q22,
        )

    def squared(self) -> MomentMap:
        return self.then(self)

    def take(self, index: np.ndarray) -> MomentMap:
        """The map restricted to rows ``index`` of the leading (grid) axis."""
        return MomentMap(*(getattr(self, name)[index] for name in _FIELDS))


_FIELDS = ("m11", "m12", "m21", "m22", "q11", "q12", "q22")


def one_step_map(m11, m12, m21, m22, u1, u2) -> MomentMap:
    """The single-step map of ``z' = M z + u eta`` (``Q = u u^T`` per unit noise variance)."""
    arrays = np.broadcast_arrays(m11, m12, m21, m22, u1, u2)
    m11, m12, m21, m22, u1, u2 = (np.array(a, dtype=float) for a in arrays)
    return MomentMap(m11, m12, m21, m22, u1 * u1, u1 * u2, u2 * u2)


def power_by_squaring(step: MomentMap, steps: int) -> MomentMap:
    """``steps`` (>= 1) applications of ``step``, by binary decomposition of ``steps``."""
    result: MomentMap | None = None
    power = step
    remaining = int(steps)
    while True:
        if remaining & 1:
            result = power if result is None else result.then(power)
        remaining >>= 1
        if not remaining:
            return result  # type: ignore[return-value]
        power = power.squared()


@dataclass(frozen=True)
class MomentState:
    """Second moments ``S = [[s11, s12], [s12, s22]]`` per element (per bin, in a trial)."""

    s11: np.ndarray
    s12: np.ndarray
    s22: np.ndarray

    def advance(self, moment_map: MomentMap, noise: np.ndarray) -> MomentState:
        """``S' = M S M^T + noise * Q``, ``noise = lr**2 n / B`` per element."""
        m = moment_map
        p11 = m.m11 * self.s11 + m.m12 * self.s12
        p12 = m.m11 * self.s12 + m.m12 * self.s22
        p21 = m.m21 * self.s11 + m.m22 * self.s12
        p22 = m.m21 * self.s12 + m.m22 * self.s22
        return MomentState(
            s11=p11 * m.m11 + p12 * m.m12 + noise * m.q11,
            s12=p11 * m.m21 + p12 * m.m22 + noise * m.q12,
            s22=p21 * m.m21 + p22 * m.m22 + noise * m.q22,
        )

    def quadratic(self, e1: float, e2: float) -> np.ndarray:
        """``e^T S e``: the second moment of the read-out ``e . z``."""
        return e1 * e1 * self.s11 + 2.0 * e1 * e2 * self.s12 + e2 * e2 * self.s22
