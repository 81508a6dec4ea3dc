"""Error types shared by every layer."""


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
