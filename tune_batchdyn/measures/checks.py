"""Argument checks and the warning shared by the iterative measures."""

from __future__ import annotations

from tune_batchdyn.errors import ConfigError


class ConvergenceWarning(RuntimeWarning):
    """An iterative measure stopped at its iteration limit before meeting its tolerance."""


def check_positive_int(name: str, value: object) -> None:
    """Raise `ConfigError` unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer; got {name}={value!r}.")


def check_tolerance(tol: object) -> None:
    """Raise `ConfigError` unless ``tol`` is a relative tolerance in (0, 1)."""
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0.0 < tol < 1.0:
        raise ConfigError(f"tol must be a number in (0, 1); got tol={tol!r}.")


def check_fraction(name: str, value: object) -> None:
    """Raise `ConfigError` unless ``value`` is a number in (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise ConfigError(f"{name} must be a number in (0, 1), e.g. 1e-3; got {name}={value!r}.")
