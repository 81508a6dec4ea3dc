"""Error types shared by every layer, and the type tests their checks use."""

from typing import Any


class ConfigError(ValueError):
    """Bad user input (a config field, a strategy spec, a search-space file, a CLI argument).

    The message names the bad field, the value received and what is accepted; the CLI prints it
    as one line and exits with status 2.
    """


def check_choice(field: str, value: object, accepted: "tuple | list | frozenset") -> None:
    """Raise ``ConfigError`` unless ``value`` is one of ``accepted``."""
    if value not in accepted:
        options = ", ".join(repr(a) for a in accepted)
        raise ConfigError(f"{field}={value!r} is not accepted; use one of: {options}.")


def is_int(value: Any) -> bool:
    """An integer, not a bool (``True`` is an ``int`` to Python, never a count to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or a float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
