"""``parse_strategy``: a strategy spec (a name, a pattern or a table) to a strategy object.

Specs: a string (``"fixed"``, ``"s32-to-512"``, ``"abs"``, ...) or a mapping with ``name`` and
the strategy's options (``{"name": "abs", "alpha": 2.0}``). Each strategy module registers a
factory under its name or a parser for its pattern.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.strategies.base import Fixed, Strategy

Factory = Callable[..., Strategy]
#: Exact names -> factory(**options).
NAMED: dict[str, Factory] = {"fixed": Fixed}
#: Pattern parsers: (description of the accepted form, parser(name, options) -> Strategy | None).
PATTERNS: list[tuple[str, Callable[[str, dict[str, Any]], Strategy | None]]] = []


def register(name: str, factory: Factory) -> None:
    """Make ``name`` build ``factory(**options)``; its keyword parameters are the options."""
    NAMED[name] = factory


def register_pattern(form: str, parser: Callable[[str, dict[str, Any]], Strategy | None]) -> None:
    """Add a parser for names of a pattern (``form`` describes it in error messages); it
    returns None for names it does not match and checks its own options."""
    PATTERNS.append((form, parser))


def accepted_forms() -> list[str]:
    """The registered names and pattern forms, for error messages."""
    return [*NAMED, *(form for form, _ in PATTERNS)]


def option_names(factory: Factory, *, required: bool = False) -> list[str]:
    """The options a named strategy takes (its factory's keyword parameters), or with
    ``required`` those without a default."""
    return [p.name for p in inspect.signature(factory).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and (not required or p.default is p.empty)]


def parse_strategy(spec: str | Mapping[str, Any]) -> Strategy:
    """Build the strategy a spec names; a bad spec raises ConfigError listing the accepted forms."""
    if isinstance(spec, list | tuple):  # the schedule pattern is a string, as in the TOML spaces
        written = "[" + ",".join(map(str, spec)) + "]"
        raise ConfigError(f"strategy={spec!r} is not accepted: a batch-size schedule is written "
                          f"as a string, strategy={written!r}.")
    if isinstance(spec, Mapping):
        options = dict(spec)
        name = options.pop("name", None)
    else:
        name, options = spec, {}
    if not isinstance(name, str) or not name:
        raise ConfigError(f"strategy={spec!r} is not accepted; use one of: "
                          f"{', '.join(accepted_forms())} (or a table with 'name').")
    name = name.strip()
    if name in NAMED:
        accepted = option_names(NAMED[name])
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ConfigError(f"strategy={spec!r}: unknown option(s) {unknown}; '{name}' takes "
                              f"{', '.join(accepted) or 'no options'}.")
        missing = [option for option in option_names(NAMED[name], required=True)
                   if option not in options]
        if missing:
            raise ConfigError(f"strategy={spec!r}: '{name}' needs {', '.join(missing)} (a table "
                              f"such as {{name = \"{name}\", {missing[0]} = ...}}).")
        return NAMED[name](**options)
    for _, parser in PATTERNS:
        strategy = parser(name, options)
        if strategy is not None:
            return strategy
    raise ConfigError(f"strategy={spec!r} is not accepted; use one of: "
                      f"{', '.join(accepted_forms())}.")
