"""A trial's config from a search space: the space's forms, and suggesting with Optuna's API.

A space is one of:

- a plain dict, field -> list of choices (a ``CategoricalDistribution``) or an
  ``optuna.distributions`` object (``FloatDistribution``, ``IntDistribution``, ...); choices are
  what Optuna can store (``None``, bool, int, float, str: a strategy as its spec string);
- a ``tune_batchdyn.space`` ``Space`` or ``OptunaSpace`` (its ``[fixed]`` values come with it, and
  table or list choices are decoded back from the JSON text Optuna stores);
- a path or shipped name of a ``searchspaces/*.toml`` file;
- ``None``: nothing searched.

``suggest_config`` suggests each searched field with the trial's public ``suggest_*`` methods.
Fields in ``overrides`` (a rerouted trial's plan) are suggested only when the distribution
admits the planned value, which the queue fixed, so ``trial.params`` never holds a value the
trial did not run with; and a plan's ``batch_size`` only together with its ``strategy``: alone,
it would read as a fixed batch size (``reroute``'s docstring).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import BaseTrial

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.space import OptunaSpace, Space, load_space

#: Choice types Optuna stores as they are.
STORABLE = (type(None), bool, int, float, str)

SpaceLike = Mapping[str, Any] | Space | OptunaSpace | str | os.PathLike | None


@dataclass(frozen=True)
class TrialSpace:
    """Searched fields as Optuna distributions, fixed values, and how to decode stored choices."""

    distributions: Mapping[str, BaseDistribution]
    constants: Mapping[str, Any] = field(default_factory=dict)
    decode: Callable[[Mapping[str, Any]], dict[str, Any]] = dict


def as_trial_space(space: SpaceLike) -> TrialSpace:
    """Any accepted space form (module docstring) as a ``TrialSpace``."""
    if space is None:
        return TrialSpace({})
    if isinstance(space, (str, os.PathLike)):
        space = load_space(space, backend="optuna")
    if isinstance(space, Space):
        space = space.to_optuna()
    if isinstance(space, OptunaSpace):
        return TrialSpace(dict(space.distributions), dict(space.constants),
                          _decoder(space))
    if isinstance(space, Mapping):
        return TrialSpace({str(name): _distribution(name, value) for name, value in space.items()})
    raise ConfigError(f"space={space!r} is not accepted; use a dict (field -> list of choices or "
                      "optuna distribution), a tune_batchdyn.space Space, or a space file path.")


def suggest_config(trial: BaseTrial, space: TrialSpace,
                   overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The searched fields' values for ``trial`` (decoded), suggested through its public API.

    A field in ``overrides`` is suggested only if its distribution admits the override (the
    enqueued trial then returns exactly that value), and ``batch_size`` only if ``strategy``
    is suggested too; otherwise it is left to the override."""
    overrides = overrides or {}
    kept = {name for name, value in overrides.items()
            if name not in space.distributions or not admits(space.distributions[name], value)}
    if "strategy" in overrides and "strategy" in kept:  # the schedule is not a param:
        kept.add("batch_size")  # its first batch size is no fixed batch size either
    return space.decode({name: _suggest(trial, name, distribution)
                         for name, distribution in space.distributions.items()
                         if name not in kept})


def admits(distribution: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is one of the distribution's values (choices, or in range on the step)."""
    if isinstance(distribution, CategoricalDistribution):
        return any(type(value) is type(choice) and value == choice
                   for choice in distribution.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if not distribution.low <= value <= distribution.high:
        return False
    if isinstance(distribution, IntDistribution):
        return float(value).is_integer() and (value - distribution.low) % distribution.step == 0
    step = getattr(distribution, "step", None)
    if step is None:
        return True
    offset = (value - distribution.low) / step
    return math.isclose(offset, round(offset), abs_tol=1e-8)


def _suggest(trial: BaseTrial, name: str, distribution: BaseDistribution) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(name, distribution.low, distribution.high,
                                   step=distribution.step, log=distribution.log)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high,
                                 step=distribution.step, log=distribution.log)
    raise ConfigError(f"space[{name!r}]={distribution!r} is not accepted; use a "
                      "CategoricalDistribution, FloatDistribution or IntDistribution.")


def _distribution(name: str, value: Any) -> BaseDistribution:
    if isinstance(value, BaseDistribution):
        return value
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0:
        odd = [choice for choice in value if not isinstance(choice, STORABLE)]
        if odd:
            raise ConfigError(f"space[{name!r}] has choices {odd} that Optuna cannot store; use "
                              "None, bool, int, float or str (a strategy as its spec string), "
                              "or a searchspaces/*.toml file for table values.")
        return CategoricalDistribution(tuple(value))
    raise ConfigError(f"space[{name!r}]={value!r} is not accepted; use a non-empty list of "
                      "choices or an optuna distribution (fixed values go in the defaults).")


def _decoder(space: OptunaSpace) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    def decode(values: Mapping[str, Any]) -> dict[str, Any]:
        config = space.config(values)
        return {name: config[name] for name in values}

    return decode
