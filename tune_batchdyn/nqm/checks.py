"""Argument checks shared by the NQM modules: each raises ``ConfigError`` naming the field, the
value received and what is accepted."""

from __future__ import annotations

import math

import numpy as np

from tune_batchdyn.errors import ConfigError


def positive_number(field: str, value: object, *, allow_zero: bool = False) -> float:
    """A finite number > 0 (>= 0 with ``allow_zero``)."""
    bound = ">= 0" if allow_zero else "> 0"
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{field}={value!r} is not accepted; use a number {bound}.") from err
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise ConfigError(f"{field}={value!r} is not accepted; use a finite number {bound}.")
    return number


def whole_number(field: str, value: object, *, minimum: int = 0) -> int:
    """An integer >= ``minimum`` (numpy integers accepted, booleans not)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{field}={value!r} is not accepted; use an integer >= {minimum}.")
    return int(value)


def batch_sizes(field: str, value: object) -> np.ndarray:
    """One batch size > 0 or a non-empty 1-D list of them, as a float array."""
    try:
        values = np.atleast_1d(np.asarray(value, dtype=float))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{field}={value!r} is not accepted; use a number > 0 or a list of "
                          "them.") from err
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)) or np.any(
        values <= 0
    ):
        raise ConfigError(f"{field}={value!r} is not accepted; use a number > 0 or a non-empty "
                          "list of them.")
    return values


def grid(field: str, value: object, *, low: float, high: float, closed_high: bool) -> np.ndarray:
    """A non-empty 1-D grid of finite values in ``[low, high)`` (``[low, high]`` if closed)."""
    bracket = "]" if closed_high else ")"
    message = (f"{field}={value!r} is not accepted; use a non-empty 1-D grid of values in "
               f"[{low:g}, {high:g}{bracket}.")
    try:
        values = np.atleast_1d(np.asarray(value, dtype=float))
    except (TypeError, ValueError) as err:
        raise ConfigError(message) from err
    upper_ok = values <= high if closed_high else values < high
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)) or not np.all(
        (values >= low) & upper_ok
    ):
        raise ConfigError(message)
    return values
