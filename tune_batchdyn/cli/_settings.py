"""What defines a sweep or a recording besides its space's contents, and how two of them
differ: the CLI stores it with a run (an Optuna study's user attributes, ``sweep.json`` in a Ray
experiment) and refuses to continue a run with other settings, naming the fields."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

#: Shown for a setting that one side does not have.
UNSET = "unset"


def plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples as lists, numpy numbers as Python ones): how a
    setting compares once stored in a study, a JSON file or a records file."""
    return json.loads(json.dumps(value, sort_keys=True, default=_json_default))


def _json_default(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


def run_settings(space: Any, overrides: Mapping[str, Any],
                 ignore: Iterable[str] = ()) -> dict[str, Any]:
    """What defines a sweep besides its space's contents: the space's name (the file's stem,
    the same on every machine) and the ``--set`` overrides but those in ``ignore``, as plain
    JSON values."""
    kept = {key: value for key, value in overrides.items() if key not in set(ignore)}
    return {"space": space.path.stem if space.path else "sweep", "set": plain(kept)}


def settings_differences(stored: Mapping[str, Any], given: Mapping[str, Any]) -> str:
    """The fields in which two ``run_settings`` differ, as ``--set epochs: 4 stored, 3 given``
    (``; ``-joined; ``""`` when they agree)."""

    def flat(settings: Mapping[str, Any]) -> dict[str, Any]:
        overrides = settings.get("set") or {}
        return {"--space": settings.get("space"),
                **{f"--set {key}": overrides[key] for key in sorted(overrides)}}

    return differences(flat(stored), flat(given))


def differences(stored: Mapping[str, Any], given: Mapping[str, Any]) -> str:
    """``field: <stored> stored, <given> given`` for each field whose values differ (a field
    missing on one side reads ``unset``), ``; ``-joined, in the order the fields come."""
    missing = object()
    fields = dict.fromkeys([*stored, *given])
    return "; ".join(
        f"{field}: {_shown(stored.get(field, missing))} stored, "
        f"{_shown(given.get(field, missing))} given"
        for field in fields if stored.get(field, missing) != given.get(field, missing))


def _shown(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or not isinstance(
            value, (str, int, float, list, dict)):
        return UNSET
    return value if isinstance(value, str) else json.dumps(value)
