"""``parse_strategy``: a strategy spec (a name, a pattern or a table) to a strategy object.

Specs: a string (``"fixed"``, ``"s32-to-512"``, ``"abs"``, ...) or a mapping with ``name`` and
the strategy's options (``{"name": "abs", "alpha": 2.0}``). Each strategy module registers a
factory under its name or a parser for its pattern.
"""

from __future__ import annotations

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
    NAMED[name] = factory


def register_pattern(form: str, parser: Callable[[str, dict[str, Any]], Strategy | None]) -> None:
    PATTERNS.append((form, parser))


def accepted_forms() -> list[str]:
    return [*NAMED, *(form for form, _ in PATTERNS)]


def parse_strategy(spec: str | Mapping[str, Any]) -> Strategy:
    """Build the strategy a spec names; a bad spec raises ConfigError listing the accepted forms."""
    if isinstance(spec, Mapping):
        options = dict(spec)
        name = options.pop("name", None)
    else:
        name, options = spec, {}
    if not isinstance(name, str) or not name:
        raise ConfigError(f"strategy={spec!r} is not accepted; use one of: "
                          f"{', '.join(accepted_forms())} (or a table with 'name').")
    name = name.strip()
    try:
        if name in NAMED:
            return NAMED[name](**options)
        for _, parser in PATTERNS:
            strategy = parser(name, options)
            if strategy is not None:
                return strategy
    except TypeError as err:  # unknown option names
        raise ConfigError(f"strategy={spec!r}: {err}") from err
    raise ConfigError(f"strategy={spec!r} is not accepted; use one of: "
                      f"{', '.join(accepted_forms())}.")
