"""What a predictor returns for one running trial."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prediction:
    """Predicted final error of a running trial.

    ``mean`` and ``std`` are in error units (fractions, 0..1); ``std`` is NaN for rules without an
    uncertainty model. ``mode`` names the rule that produced it: ``"gp"``, ``"knn5"``,
    ``"cold-start"``, ``"diverged"``, ``"val"``, ``"powerlaw"``. ``fraction`` is the budget
    fraction the trial had reached, ``n_reference`` the number of finished trials used.
    """

    mean: float
    std: float
    mode: str
    fraction: float
    n_reference: int = 0
