"""Optimiser specs of the NQM and their default hyperparameter grids.

Spec strings: ``sgd``, ``momentum`` (heavy ball), ``ema`` (SGD with an exponential moving
average of the iterates, the average being evaluated), ``precond:<p>`` (SGD with the
preconditioner ``P = H^-p``, ``0 <= p <= 1``), and ``momentum+precond:<p>`` /
``ema+precond:<p>`` for the seed's combinations.

Default grids follow the authors' notebook, scaled by ``1 / max(h~)`` (``h~ = h^(1-p)``, the
preconditioned curvature; 1 for the seed's spectrum, so the seed's grids exactly): learning rates
``logspace(-5, 0.5)`` (``logspace(-8, 1)`` with momentum), coefficients ``1 - logspace(-5, 0)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tune_batchdyn.errors import ConfigError

ACCEPTED = ("sgd", "momentum", "ema", "precond:<p> (0 <= p <= 1)", "momentum+precond:<p>",
            "ema+precond:<p>")


@dataclass(frozen=True)
class OptimizerSpec:
    """``kind`` is the update rule; ``precond_power`` the p of ``P = H^-p`` (0: none)."""

    kind: str = "sgd"
    precond_power: float = 0.0

    @property
    def has_coefficient(self) -> bool:
        """Momentum and EMA carry a second hyperparameter (beta), searched on a grid."""
        return self.kind != "sgd"

    @property
    def label(self) -> str:
        if self.precond_power == 0.0:
            return self.kind
        precond = f"precond:{self.precond_power:g}"
        return precond if self.kind == "sgd" else f"{self.kind}+{precond}"


def _reject(text: object) -> ConfigError:
    return ConfigError(f"optimizer={text!r} is not accepted; use one of: {', '.join(ACCEPTED)}.")


def parse_optimizer(text: str | OptimizerSpec) -> OptimizerSpec:
    """Parse ``'momentum'``, ``'precond:0.5'``, ``'ema+precond:0.25'``, ... into a spec."""
    if isinstance(text, OptimizerSpec):
        return text
    if not isinstance(text, str):
        raise _reject(text)
    kind, power = "sgd", 0.0
    seen_kind = seen_precond = False
    for part in text.strip().lower().split("+"):
        name, _, value = part.strip().partition(":")
        if name in ("momentum", "ema") and not value and not seen_kind:
            kind, seen_kind = name, True
        elif name == "sgd" and not value and not seen_kind:
            seen_kind = True
        elif name == "precond" and value and not seen_precond:
            try:
                power = float(value)
            except ValueError as err:
                raise _reject(text) from err
            if not 0.0 <= power <= 1.0:
                raise ConfigError(
                    f"optimizer={text!r}: the preconditioning power p={power:g} is not accepted; "
                    "use 0 <= p <= 1."
                )
            seen_precond = True
        else:
            raise _reject(text)
    return OptimizerSpec(kind, power)


def default_lr_grid(spec: OptimizerSpec, top_curvature: float, size: int = 100) -> np.ndarray:
    """The notebook's learning-rate grid, divided by the largest preconditioned curvature."""
    low, high = (-8.0, 1.0) if spec.kind == "momentum" else (-5.0, 0.5)
    return np.logspace(low, high, size) / top_curvature


def default_coefficient_grid(spec: OptimizerSpec, size: int = 20) -> np.ndarray:
    """``1 - logspace(-5, 0)``: momentum / averaging coefficients from 0.99999 down to 0."""
    if not spec.has_coefficient:
        return np.zeros(1)
    return 1.0 - np.logspace(-5.0, 0.0, size)
