"""One searched field of a space: its distribution kind and values, checked once.

Kinds (the TOML forms, one key per table):

- ``{ grid = [v1, v2, ...] }``: every value is tried, once in each of the ``[search]``
  ``num_samples`` repeats (Ray ``grid_search``; the Optuna sweep enqueues every grid point,
  ``optuna_form.grid_points``).
- ``{ choice = [v1, v2, ...] }``: one value sampled per trial, on both backends
  (``tune.choice``; Optuna categorical, suggested by the sampler).
- ``{ uniform = [low, high] }`` and ``{ loguniform = [low, high] }``: floats, low < high
  (log: 0 < low).
- ``{ randint = [low, high] }`` and ``{ lograndint = [low, high] }``: integers, **both bounds
  included**, low < high (log: 1 <= low). Ray's ``randint``/``lograndint`` exclude the upper
  bound, so the Ray form passes ``high + 1``; Optuna's ``IntDistribution`` includes it.

Grid and choice values may be any TOML value (strategy tables, milestone lists); they must be
distinct.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from tune_batchdyn.errors import ConfigError, is_int

CATEGORICAL_KINDS = ("grid", "choice")
INT_KINDS = ("randint", "lograndint")
#: Kind -> the accepted TOML form, as error messages show it.
FORMS: dict[str, str] = {
    "grid": "{ grid = [v1, v2, ...] }",
    "choice": "{ choice = [v1, v2, ...] }",
    "uniform": "{ uniform = [low, high] } (low < high)",
    "loguniform": "{ loguniform = [low, high] } (0 < low < high)",
    "randint": "{ randint = [low, high] } (integers, low < high, both included)",
    "lograndint": "{ lograndint = [low, high] } (integers, 1 <= low < high, both included)",
}


@dataclass(frozen=True)
class Param:
    """A searched field: ``kind`` (a key of ``FORMS``) and ``values``.

    ``values`` holds the listed values for grid/choice and ``(low, high)`` for ranges; its first
    entry is the value a space's first configuration uses.
    """

    kind: str
    values: tuple[Any, ...]

    @property
    def is_categorical(self) -> bool:
        return self.kind in CATEGORICAL_KINDS

    @property
    def log(self) -> bool:
        return self.kind.startswith("log")


def canonical(value: Any) -> str:
    """A value's JSON text (sorted keys): tells TOML values apart (1, 1.0, true, "1")."""
    return json.dumps(value, sort_keys=True)


def parse_param(source: str, key: str, raw: Any) -> Param:
    """Check one ``[params]`` entry of ``source`` and return it as a ``Param``."""
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in FORMS:
        raise _form_error(source, key, raw, "a searched field is a table with one of the keys "
                          f"{', '.join(FORMS)} (fixed values go in [fixed])")
    kind, values = next(iter(raw.items()))
    if kind in CATEGORICAL_KINDS:
        return Param(kind, _listed(source, key, raw, values))
    if not isinstance(values, list) or len(values) != 2:
        raise _form_error(source, key, raw, f"{kind} takes a list [low, high] of two numbers")
    low, high = values
    if kind in INT_KINDS:
        if not all(is_int(v) for v in values):
            raise _form_error(source, key, raw, f"{kind} bounds must be integers")
    elif not all(_is_finite_number(v) for v in values):
        raise _form_error(source, key, raw, f"{kind} bounds must be finite numbers")
    else:
        low, high = float(low), float(high)
    if not low < high:
        raise _form_error(source, key, raw, f"low={low!r} must be less than high={high!r}")
    if kind == "loguniform" and not low > 0:
        raise _form_error(source, key, raw, f"loguniform needs low > 0, got low={low!r}")
    if kind == "lograndint" and low < 1:
        raise _form_error(source, key, raw, f"lograndint needs low >= 1, got low={low!r}")
    return Param(kind, (low, high))


def _listed(source: str, key: str, raw: Any, values: Any) -> tuple[Any, ...]:
    kind = next(iter(raw))
    if not isinstance(values, list) or not values:
        raise _form_error(source, key, raw, f"{kind} takes a non-empty list of values")
    texts = [canonical(v) for v in values]
    repeated = sorted({t for t in texts if texts.count(t) > 1})
    if repeated:
        raise _form_error(source, key, raw, f"{kind} values must be distinct; repeated: "
                          f"{', '.join(repeated)}")
    return tuple(values)


def describe_trials(params: Mapping[str, Param], num_samples: int,
                    held: Collection[str] = ()) -> str:
    """What a sweep of ``params`` runs, as its header says it, on either backend: ``"8 trials:
    4 grid configurations × 2 samples; sampled per trial: lr"``. Fields in ``held`` (``--set``)
    are fixed, not searched. Samples of a space with nothing sampled repeat the same
    configurations, which the header says (Ray trains them again; Optuna reuses the value)."""
    searched = {key: param for key, param in params.items() if key not in held}
    grid = math.prod(len(param.values) for param in searched.values() if param.kind == "grid")
    sampled = [key for key, param in searched.items() if param.kind != "grid"]
    text = (f"{_counted(grid * num_samples, 'trial')}: {_counted(grid, 'grid configuration')} "
            f"× {_counted(num_samples, 'sample')}")
    if sampled:
        return f"{text}; sampled per trial: {', '.join(sampled)}"
    if num_samples > 1:
        return (f"{text}; nothing is sampled, so each sample repeats its grid configuration, "
                "seed included (a seed grid repeats with other seeds)")
    return text


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _form_error(source: str, key: str, raw: Any, problem: str) -> ConfigError:
    forms = " | ".join(f"{key} = {form}" for form in FORMS.values())
    return ConfigError(f"{source}: [params] {key} = {raw!r} is not accepted: {problem}. "
                       f"Accepted forms: {forms}.")
