"""``tune-batchdyn plot RECORDS... --out DIR``: the figures of a records table, as PNG files.

Writes ``plane.png`` (the (C̄K, LK) plane with the 5-nearest error contours and the optimum
region), ``travel.png`` (dynamic-sampling paths over their beacons) and ``measures.png`` (C̄K,
LK against the epoch), and prints their paths, one per line.
"""

from __future__ import annotations

import argparse

from tune_batchdyn.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plot", help="draw the (C̄K, LK) plane, travelling paths and "
                                   "measures of a records file", description=__doc__)
    parser.add_argument("records", nargs="+", help="records files (.parquet or .csv)")
    parser.add_argument("--out", required=True, help="directory for the PNG files")
    parser.add_argument("--fraction", type=float, default=1.0,
                        help="budget fraction at which to draw the plane (default 1.0: the end)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tune_batchdyn.figures import write_figures
    from tune_batchdyn.records import read_records

    if not 0 < args.fraction <= 1:
        raise ConfigError(f"--fraction={args.fraction} is not accepted; use a number in (0, 1].")
    for path in write_figures(read_records(args.records), args.out, fraction=args.fraction):
        print(path)
    return 0
