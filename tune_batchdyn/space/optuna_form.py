"""A ``Space`` as an Optuna search space: ``optuna.distributions`` objects plus constants.

============  ==================================================
TOML          Optuna
============  ==================================================
grid          ``CategoricalDistribution(values)``, named in ``grid_fields``
choice        ``CategoricalDistribution(values)``
uniform       ``FloatDistribution(low, high)``
loguniform    ``FloatDistribution(low, high, log=True)``
randint       ``IntDistribution(low, high)`` (both bounds included)
lograndint    ``IntDistribution(low, high, log=True)``
============  ==================================================

Optuna stores only ``None``, bool, int, float and str as categorical choices, so a table or
list value (a strategy such as ``{name = "gg", max_batch = 2048}``, a milestone list) is stored
as its JSON text and decoded back by ``OptunaSpace.config`` and ``suggest``. Four ways in::

    space = load_space("digits_mlp", backend="optuna")
    # 1. define-by-run
    def objective(trial):
        config = suggest(trial, space)              # constants + suggested values
        ...
    # 2. ask-and-tell
    trial = study.ask(space.distributions)
    config = space.config(trial.params)
    # 3. exhaustive grid (choice fields enumerated too)
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid_search_space(space)))
    # 4. the sweep's way: each grid point enqueued, choice and range fields left to the sampler
    for point in grid_points(space):
        study.enqueue_trial(point)

A ``grid`` field means every value (in each of ``num_samples`` repeats) and a ``choice`` field
one value sampled per trial, on both backends; Optuna's distributions alone cannot tell them
apart, so ``OptunaSpace.grid_fields`` names the grid fields.

Optuna is imported here, on first use, not when ``tune_batchdyn.space`` is imported.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.space.params import canonical

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import BaseTrial

    from tune_batchdyn.space.declaration import Space
    from tune_batchdyn.space.params import Param

STORABLE = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class OptunaSpace:
    """``distributions`` for the searched fields, ``constants`` apart, ``labels`` to decode.

    ``labels[field]`` maps a stored choice (JSON text) back to its table or list value; fields
    whose choices Optuna stores as they are have no entry. ``grid_fields``: the fields declared
    ``grid`` (every value tried), in declaration order; the other categorical ones are
    ``choice`` fields (sampled).
    """

    distributions: Mapping[str, BaseDistribution]
    constants: Mapping[str, Any]
    labels: Mapping[str, Mapping[str, Any]]
    path: Path | None = None
    grid_fields: tuple[str, ...] = ()

    def config(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The trial's full config: the constants plus ``params`` (``trial.params``) decoded."""
        decoded = {name: copy.deepcopy(self.labels.get(name, {}).get(value, value))
                   if isinstance(value, str) else value for name, value in params.items()}
        return {**copy.deepcopy(dict(self.constants)), **decoded}


def to_optuna(space: Space) -> OptunaSpace:
    """The Optuna form of ``space`` (see the module docstring)."""
    distributions, labels = {}, {}
    for key, param in space.params.items():
        distributions[key], field_labels = _distribution(space.source, key, param)
        if field_labels:
            labels[key] = field_labels
    grid_fields = tuple(key for key, param in space.params.items() if param.kind == "grid")
    return OptunaSpace(distributions=distributions, constants=copy.deepcopy(dict(space.constants)),
                       labels=labels, path=space.path, grid_fields=grid_fields)


def suggest(trial: BaseTrial, space: Space | OptunaSpace) -> dict[str, Any]:
    """Suggest every searched field with the trial's public ``suggest_*`` API; the full config."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    optuna_space = _as_optuna(space)
    values = {}
    for name, dist in optuna_space.distributions.items():
        if isinstance(dist, CategoricalDistribution):
            values[name] = trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, FloatDistribution):
            values[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
        else:
            values[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    return optuna_space.config(values)


def grid_search_space(space: Space | OptunaSpace) -> dict[str, list[Any]]:
    """``GridSampler``'s search space: every grid and choice field with its stored choices.

    ``GridSampler`` enumerates choice fields too, and cannot take ranges, so a space with a
    range field raises ``ConfigError``. The sweep enqueues ``grid_points`` instead, which
    leaves choice and range fields to the sampler.
    """
    from optuna.distributions import CategoricalDistribution

    optuna_space = _as_optuna(space)
    ranges = sorted(name for name, dist in optuna_space.distributions.items()
                    if not isinstance(dist, CategoricalDistribution))
    if ranges:
        source = str(optuna_space.path) if optuna_space.path is not None else "<space>"
        raise ConfigError(f"{source}: [params] {', '.join(ranges)} are ranges; GridSampler needs "
                          "every searched field as a list: use { grid = [...] } or "
                          "{ choice = [...] }.")
    return {name: list(dist.choices) for name, dist in optuna_space.distributions.items()}


def grid_points(space: Space | OptunaSpace) -> list[dict[str, Any]]:
    """Every combination of the grid fields' stored choices (the last field varying fastest):
    the partial params a sweep enqueues, one trial per point and ``num_samples`` repeat.

    Choice and range fields are not in the points: Optuna's sampler suggests them in each
    trial (``study.enqueue_trial`` takes partial params), as Ray samples them per trial. A
    space without a grid field has one point, ``{}``.
    """
    optuna_space = _as_optuna(space)
    choices = [optuna_space.distributions[name].choices for name in optuna_space.grid_fields]
    return [dict(zip(optuna_space.grid_fields, values, strict=True))
            for values in itertools.product(*choices)]


def _as_optuna(space: Space | OptunaSpace) -> OptunaSpace:
    return space if isinstance(space, OptunaSpace) else space.to_optuna()


def _distribution(source: str, key: str, param: Param) -> tuple[BaseDistribution, dict[str, Any]]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if param.is_categorical:
        choices, labels = [], {}
        for value in param.values:
            if isinstance(value, STORABLE):
                choices.append(value)
            else:
                labels[canonical(value)] = value
                choices.append(canonical(value))
        clashes = sorted(set(labels) & {c for c in param.values if isinstance(c, str)})
        if clashes:
            raise ConfigError(f"{source}: [params] {key}: the string value(s) {clashes} equal the "
                              "JSON text Optuna stores for a table or list value; rename them.")
        return CategoricalDistribution(choices), labels
    low, high = param.values
    if param.kind in ("uniform", "loguniform"):
        return FloatDistribution(low, high, log=param.log), {}
    return IntDistribution(low, high, log=param.log), {}
