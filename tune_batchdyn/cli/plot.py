"""``tune-batchdyn plot RECORDS... --out DIR``: the figures of a records table, as PNG files.

RECORDS are records files (.parquet, .csv) or one Ray results folder (a sweep's experiment,
read as ``records_from_ray_dir`` reads it).

``--storage URL --study NAME`` reads an Optuna study instead (its trials' user attributes), so
a study written by ``tune-batchdyn sweep --backend optuna`` plots without an export step;
``--storage`` takes what ``sweep --storage`` takes (a database URL or a journal file path), and
a file that does not exist is an error, not created empty.

Writes ``plane.png`` (the (C̄K, LK) plane with the 5-nearest error contours and the optimum
region), ``travel.png`` (dynamic-sampling paths over their beacons) and ``measures.png`` (C̄K,
LK against the epoch), and prints their paths, one per line.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tune_batchdyn.cli._checks import check_writable_folder
from tune_batchdyn.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plot", help="draw the (C̄K, LK) plane, travelling paths and "
                                   "measures of a records file",
                                   description=__doc__.replace("``", ""))
    parser.add_argument("records", nargs="*",
                        help="records files (.parquet or .csv), or one Ray results folder")
    parser.add_argument("--storage", default=None,
                        help="an Optuna storage (a database URL or a journal file path, as "
                        "sweep --storage) to read a study from instead")
    parser.add_argument("--study", default=None, help="the study's name (with --storage)")
    parser.add_argument("--out", required=True, help="directory for the PNG files")
    parser.add_argument("--fraction", type=float, default=1.0,
                        help="budget fraction at which to draw the plane (default 1.0: the end)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tune_batchdyn.figures import write_figures

    if not 0 < args.fraction <= 1:
        raise ConfigError(f"--fraction={args.fraction} is not accepted; use a number in (0, 1].")
    if bool(args.records) == bool(args.storage):
        raise ConfigError("give records files or --storage URL --study NAME (one of the two).")
    check_writable_folder("--out", args.out)
    if args.storage:
        records = study_records(args.storage, args.study)
    else:
        records = records_of(args.records)
    for path in write_figures(records, args.out, fraction=args.fraction):
        print(path)
    return 0


def records_of(paths: list[str]) -> pd.DataFrame:
    """The records of files, or of one Ray results folder."""
    from pathlib import Path

    from tune_batchdyn.records import read_records, records_from_ray_dir

    folders = [path for path in paths if Path(path).is_dir()]
    if not folders:
        return read_records(paths)
    if len(paths) > 1:
        raise ConfigError(f"{folders[0]} is a folder: give one Ray results folder, or records "
                          "files.")
    return records_from_ray_dir(folders[0])


def study_records(storage: str, study: str | None) -> pd.DataFrame:
    """The records table of an existing Optuna study (``ConfigError`` when it is not there)."""
    import optuna

    from tune_batchdyn.optuna import existing_storage
    from tune_batchdyn.records import records_from_optuna

    opened = existing_storage(storage)
    if not study:
        raise ConfigError(f"--storage {storage} needs --study NAME; the studies there: "
                          f"{optuna.get_all_study_names(opened)}.")
    try:
        return records_from_optuna(optuna.load_study(study_name=study, storage=opened))
    except KeyError as err:
        raise ConfigError(f"--study {study!r} is not in {storage}; the studies there: "
                          f"{optuna.get_all_study_names(opened)}.") from err
