"""Read and write records tables as Parquet or CSV (chosen by the file's extension).

Writes are atomic: the table goes to a temporary file in the target's directory, is flushed to
disk, and replaces the target with ``os.replace``; a writer killed mid-way leaves the old file
as it was (and at worst a stray ``.tmp`` file, never a torn one). ``append_records`` reads,
stacks and rewrites the file that way; it does not lock, so two processes appending to the same
file at once can lose one's rows: give each writer its own file and read them together.

Parquet keeps every dtype. CSV keeps the schema's dtypes (they are given to the reader) and
floats exactly (round-trip parsing); config columns are re-inferred, so a string config
value that reads as a number comes back as a number, and an empty string as NaN.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.records.schema import BOOL_COLUMNS, INT_COLUMNS, RECORD_COLUMNS
from tune_batchdyn.records.table import concat_tables, normalise_table

#: pandas 3 parses floats exactly by default (and deprecates the option); pandas 2 needs it.
_EXACT_FLOATS = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}

#: File extensions understood, by format.
FORMATS: dict[str, str] = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


def records_format(path: str | os.PathLike) -> str:
    """``"parquet"`` or ``"csv"`` from the file's extension; ``ConfigError`` otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"records file={str(path)!r} has extension {suffix!r}; use one of: "
                          f"{', '.join(FORMATS)}.")
    return FORMATS[suffix]


def read_records(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One records table from one file or several (stacked in the order given).

    Files whose trial ids collide (two Optuna studies both number their trials 0, 1, ...) get
    their ids prefixed with the file's name (``study_a:0``), so their trials stay apart."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(path) for path in paths]
    tables = []
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"records file={str(path)!r} does not exist.")
        try:
            tables.append(_read_one(path))
        except (ValueError, OSError) as err:  # pandas' and pyarrow's parse errors among them
            raise ConfigError(f"records file={str(path)!r} cannot be read as "
                              f"{records_format(path)} ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}).") from err
    if len(tables) == 1:
        return normalise_table(tables[0])
    ids = [set(table["trial_id"].astype(str)) for table in tables]
    if sum(map(len, ids)) != len(set().union(*ids)):
        names = [path.stem if [p.stem for p in paths].count(path.stem) == 1 else f"{i}-{path.stem}"
                 for i, path in enumerate(paths)]
        tables = [table.assign(trial_id=name + ":" + table["trial_id"].astype(str))
                  for name, table in zip(names, tables, strict=True)]
    return concat_tables(tables)


def _read_one(path: Path) -> pd.DataFrame:
    if records_format(path) == "parquet":
        return pd.read_parquet(path)
    dtypes: dict[str, object] = {"trial_id": str}
    for name in RECORD_COLUMNS:
        dtypes[name] = "int64" if name in INT_COLUMNS else bool if name in BOOL_COLUMNS else (
            "float64")
    return pd.read_csv(path, dtype=dtypes, **_EXACT_FLOATS)


def write_records(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``table`` to ``path`` atomically (format by extension); returns the path."""
    path = Path(path)
    fmt = records_format(path)
    table = normalise_table(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temp_name, 0o666 & ~_umask())  # as open() would create it, not mkstemp's 0600
        with os.fdopen(handle, "wb") as stream:
            if fmt == "parquet":
                table.to_parquet(stream, index=False)
            else:
                table.to_csv(stream, index=False)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def append_records(path: str | os.PathLike, table: pd.DataFrame) -> Path:
    """Add ``table``'s rows to the records file at ``path`` (created if absent), atomically."""
    path = Path(path)
    records_format(path)
    if path.exists():
        table = concat_tables([read_records(path), table])
    return write_records(table, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
