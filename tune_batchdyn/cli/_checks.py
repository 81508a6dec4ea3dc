"""Checks a command runs before any trial starts, so a mistake is one line, not a failed trial
each."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tune_batchdyn.errors import ConfigError

if TYPE_CHECKING:
    from tune_batchdyn.space import Space


def check_user_code(space: Space, overrides: Mapping[str, Any]) -> None:
    """Load and probe each user dataset and model the space (with ``overrides``) names, once
    per combination (``train.engine.check_user_code``), naming the space in the error; a
    model whose C̄K/LK needs the torch.func fallback is said here, once (the trials' own log
    lines stay in their workers)."""
    configs = space.user_code_configs(overrides)
    if not configs:
        return
    from tune_batchdyn.train import TrialConfig
    from tune_batchdyn.train.engine import check_user_code as check_config

    said: set[tuple[str, ...]] = set()
    for values in configs:
        try:
            config = TrialConfig.from_dict(values)
            fallback = tuple(check_config(config))
        except ConfigError as err:
            raise ConfigError(f"{space.source}: {err}") from err
        if fallback and fallback not in said:
            said.add(fallback)
            print(f"note: model={config.model!r}: no per-sample rule for "
                  f"{', '.join(fallback)}; torch.func computes their share of C̄K/LK (slower)",
                  flush=True)


def check_data_files(space: Space, overrides: Mapping[str, Any], address: str | None) -> None:
    """Each torchvision dataset of the space opened once under its ``data_dir`` on this
    machine, where the sweep starts: an empty or wrong folder would fail every trial (and Ray
    retries each). Skipped when the trials download the files themselves, when ``data_dir``
    is searched, and for a Ray Client address (``ray://``: this machine is outside the
    cluster, whose nodes may see other files)."""
    from tune_batchdyn.train.data import TORCHVISION, torchvision_splits

    if address is not None and address.startswith("ray://"):
        return
    if any(space.listed("download", overrides)) or "data_dir" in space.params:
        return
    (data_dir,) = space.listed("data_dir", overrides)
    for dataset in space.listed("dataset", overrides):
        if dataset in TORCHVISION:
            try:
                torchvision_splits(dataset, data_dir, download=False)
            except ConfigError as err:
                raise ConfigError(
                    f"{space.source}: dataset={dataset!r}: no torchvision files under "
                    f"{data_dir!r} on this machine, where the sweep starts ({err.__cause__}). "
                    "Every node reads the same path: download the files there once, on "
                    "storage all nodes see (examples/cluster_sweep.md), or pass --set "
                    "download=true.") from err


def check_writable_folder(flag: str, folder: str | Path) -> None:
    """Create ``folder`` and write a scratch file in it now, as writing would at the end: a
    path through a file, or a folder that cannot be made or written to, fails before any
    trial trains rather than after all of them."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{flag}: cannot create the folder {str(folder)!r} ({err.strerror}); "
                          "pass a path in a folder you can write to.") from err
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(f"{flag}: cannot write in the folder {str(folder)!r} "
                          f"({err.strerror}); pass a path in a folder you can write to.") from err


def check_records_file(flag: str, path: str | Path) -> None:
    """A records file to write at the end: its extension (``records_format``), not a folder,
    in a folder that can be written to."""
    from tune_batchdyn.records import records_format

    records_format(path)
    if Path(path).is_dir():
        raise ConfigError(f"{flag} {str(path)!r} is a folder; pass a file name in it, e.g. "
                          f"{str(Path(path) / 'records.parquet')!r}.")
    check_writable_folder(flag, Path(path).parent)
