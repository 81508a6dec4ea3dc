"""``tune-batchdyn record``: run a grid of trials to completion and keep every trajectory.

Each (configuration, seed) of the space's grid runs in this process with the one training
engine; its records table is appended atomically to ``--out`` as soon as it finishes. Running
the same command again skips the trials already in ``--out`` (a finished trial is never
recomputed), so an interrupted recording resumes where it stopped; more ``--seeds`` may be
added to it. A file whose trials were recorded with other settings (another space's fixed
fields, other ``--set`` values) is refused, naming the fields: one file holds one grid.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from tune_batchdyn.cli._settings import differences
from tune_batchdyn.cli.train import parse_config_overrides
from tune_batchdyn.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("record", help="run a grid of trials and write all trajectories",
                              description=__doc__.splitlines()[0].replace("``", ""))
    p.add_argument("--space", required=True,
                   help="a space file (searchspaces/*.toml) or a shipped space's name")
    p.add_argument("--out", required=True,
                   help="records file (.parquet or .csv); an existing one is continued when "
                        "its trials have the same settings (space, --set), else refused")
    p.add_argument("--seeds", default=None,
                   help="comma list of trial seeds, e.g. 0,1,2 (default: the space's seed, "
                        "else 0)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a TrialConfig field, e.g. epochs=10; a searched one is fixed "
                        "to that value (repeatable)")
    p.add_argument("--quiet", action="store_true", help="print only one line per trial")
    p.set_defaults(func=main)


def grid_configs(space: Any, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """Every configuration of a grid space (grid and choice parameters, all combinations); a
    searched field in ``overrides`` is fixed to that value (one configuration per combination
    of the others, as the Ray sweep's ``--set``)."""
    from tune_batchdyn.space import grid_search_space

    for key, param in space.params.items():
        if not param.is_categorical:
            raise ConfigError(f"{space.source}: [params] {key} is a {param.kind} range; record "
                              "needs a grid (use grid = [...] or choice = [...]).")
    grid = grid_search_space(space)
    keys = [key for key in grid if key not in overrides]
    return [{**dict(space.constants), **dict(zip(keys, values, strict=True)), **overrides}
            for values in itertools.product(*(grid[k] for k in keys))]


def trial_seeds(text: str | None, space: Any, overrides: dict[str, Any]) -> list[int | None]:
    """The seeds ``--seeds`` asks for; without it, [None]: each configuration keeps the seed
    the space (or ``--set seed=...``) gives it, else 0. Both at once are refused: one would
    silently replace the other."""
    declared = [where for where, has in (("--set seed", "seed" in overrides),
                                          ("[params] seed", "seed" in space.params),
                                          ("[fixed] seed", "seed" in space.constants)) if has]
    if text is None:
        return [None] if declared else [0]
    if declared:
        raise ConfigError(f"--seeds {text} and {declared[0]} of {space.source} both set the "
                          "seed; use one of them.")
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise ConfigError(f"--seeds {text!r} is not accepted; use a comma list of integers, "
                          "e.g. 0,1,2.") from err
    if not seeds:
        raise ConfigError(f"--seeds {text!r} is not accepted; use a comma list of integers, "
                          "e.g. 0,1,2.")
    return seeds


def trial_id(config: dict[str, Any]) -> str:
    """A readable, stable id: strategy, batch, lr, seed, and a hash of the whole config."""
    digest = hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    return (f"{config.get('strategy', 'fixed')}-b{config.get('batch_size')}-lr{config.get('lr')}"
            f"-s{config.get('seed', 0)}-{digest[:8]}")


def check_recorded(path: str, recorded: pd.DataFrame, configs: list[dict[str, Any]]) -> None:
    """Refuse to add ``configs`` to a records file whose trials were recorded with other
    settings (e.g. ``epochs=2`` there, ``epochs=3`` asked): skipping by trial id would append a
    second grid and mix them. The fields compared are those every requested config shares
    (the space's fixed fields, ``--set``, defaults), the seed excepted: more seeds may be added.
    """
    from tune_batchdyn.records import config_columns, flatten_config
    from tune_batchdyn.train import TrialConfig

    flats = [flatten_config(TrialConfig.from_dict(c).to_dict()) for c in configs]
    columns = (set(config_columns(recorded)) | set().union(*flats)) - {"config/seed"}
    stored: dict[str, Any] = {}
    given: dict[str, Any] = {}
    for column in sorted(columns):
        wanted = {_cell(flat.get(column)) for flat in flats}
        if len(wanted) > 1:  # a searched parameter
            continue
        there = (sorted({_cell(v) for v in recorded[column].unique()}, key=str)
                 if column in recorded.columns else [None])
        if there != list(wanted):
            field = column.removeprefix("config/")
            stored[field] = there[0] if len(there) == 1 else "|".join(map(str, there))
            given[field] = next(iter(wanted))
    absent = [field for field, value in stored.items() if value is None]  # e.g. a sweep's file
    found = differences({f: v for f, v in stored.items() if v is not None},
                        {f: given[f] for f, v in stored.items() if v is not None})
    if absent:
        found = "; ".join(part for part in (found, f"not in the file: {', '.join(absent)}")
                          if part)
    if found:
        raise ConfigError(f"--out {path} holds trials recorded with other settings ({found}); "
                          "pass another --out to record this grid, or the same --space and "
                          "--set to continue that one.")


def _cell(value: Any) -> Any:
    """A config cell as it compares: NaN and None alike, numpy numbers as Python ones, a whole
    float as an int (a CSV file may read ``2`` back as ``2.0``)."""
    if hasattr(value, "item"):
        value = value.item()
    if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def main(args: argparse.Namespace) -> int:
    from tune_batchdyn.cli._checks import check_records_file, check_user_code
    from tune_batchdyn.records import append_records, read_records, trial_table
    from tune_batchdyn.space import read_space
    from tune_batchdyn.train import TrialConfig, run_trial

    check_records_file("--out", args.out)  # before any training
    space = read_space(args.space)
    overrides = parse_config_overrides(args.set, "--set")
    space.check_trials(overrides)
    seeds = trial_seeds(args.seeds, space, overrides)
    check_user_code(space, overrides)
    configs = [c if seed is None else {**c, "seed": seed}
               for c in grid_configs(space, overrides) for seed in seeds]
    configs = list({trial_id(c): c for c in configs}.values())  # each trial once
    done = set()
    if Path(args.out).exists():
        recorded = read_records(args.out)
        check_recorded(args.out, recorded, configs)
        done = set(recorded["trial_id"].unique())
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    todo = [c for c in configs if trial_id(c) not in done]
    print(f"recording {len(configs)} trials of {space.source} into {args.out} "
          f"({len(configs) - len(todo)} already there)", flush=True)
    for number, values in enumerate(todo, start=len(configs) - len(todo) + 1):
        config = TrialConfig.from_dict(values)
        start = time.perf_counter()
        trajectory = run_trial(config)
        append_records(args.out, trial_table(trial_id(values), config.to_dict(), trajectory))
        last = trajectory.iloc[-1]
        flag = " DIVERGED" if bool(last["diverged"]) else ""
        print(f"[{number}/{len(configs)}] {config.strategy} b={config.batch_size} "
              f"lr={config.lr:g} seed={config.seed}: test {100 * last['test_error']:.2f}% after "
              f"{int(last['epoch'])} epochs{flag} ({time.perf_counter() - start:.1f} s)",
              flush=True)
    return 0
