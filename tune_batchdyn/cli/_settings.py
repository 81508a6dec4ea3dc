"""What defines a sweep: its space (name and contents) and the ``--set`` overrides, and how two
of them differ. The CLI stores it with a run (an Optuna study's user attributes, ``sweep.json``
in a Ray experiment) and refuses to continue a run with other settings, naming the fields."""

from __future__ import annotations

import dataclasses
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
    """What defines a sweep: the space's name (the file's stem, the same on every machine), its
    contents (`space_contents`) and the ``--set`` overrides, but the fields in ``ignore``, as
    plain JSON values."""
    ignored = set(ignore)
    kept = {key: value for key, value in overrides.items() if key not in ignored}
    return {"space": space.path.stem if space.path else "sweep", "set": plain(kept),
            "contents": space_contents(space, ignored)}


def space_contents(space: Any, ignore: Iterable[str] = ()) -> dict[str, Any]:
    """The space's tables as read (comments and layout aside): ``fixed`` values but the fields
    in ``ignore``, ``params`` as ``{kind: values}``, the ``search`` settings."""
    ignored = set(ignore)
    return plain({
        "fixed": {key: value for key, value in space.constants.items() if key not in ignored},
        "params": {key: {param.kind: list(param.values)} for key, param in space.params.items()},
        "search": dataclasses.asdict(space.search),
    })


def settings_differences(stored: Mapping[str, Any], given: Mapping[str, Any]) -> str:
    """The fields in which two ``run_settings`` differ, as ``--set epochs: 4 stored, 3 given``
    or ``[params] lr: {...} stored, {...} given`` (``; ``-joined; ``""`` when they agree). The
    contents are compared when both hold them (runs stored before they were kept do not) and
    the spaces' names agree (another space's contents differ anyway)."""
    both = ("contents" in stored and "contents" in given
            and stored.get("space") == given.get("space"))

    def flat(settings: Mapping[str, Any]) -> dict[str, Any]:
        overrides = settings.get("set") or {}
        tables = settings["contents"] if both else {}
        return {"--space": settings.get("space"),
                **{f"--set {key}": overrides[key] for key in sorted(overrides)},
                **{f"[{table}] {key}": values[key]
                   for table, values in tables.items() for key in sorted(values)}}

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
