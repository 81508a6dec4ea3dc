"""Trial checkpoints: the full state at an epoch boundary, written atomically.

A checkpoint holds the model, optimiser, strategy and measure state, every random generator,
the per-epoch history and the wall time, so a run killed mid-training and resumed from its last
checkpoint ends with the same numbers as an uninterrupted run (exactly, on CPU). It also holds
the trial's config, so that a checkpoint is resumed only by the training config that wrote it
(``check_training_config``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.train.config import RUN_ONLY_FIELDS, TrialConfig

FILENAME = "trial.pt"
VERSION = 1


def checkpoint_path(directory: str | os.PathLike) -> Path:
    """The one checkpoint file of a trial's checkpoint directory."""
    return Path(directory) / FILENAME


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``directory/trial.pt`` via a temporary file and an atomic rename."""
    path = checkpoint_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".trial-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"version": VERSION, **state}, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The state saved in ``directory``, or ``None`` when there is none."""
    path = checkpoint_path(directory)
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("version", 0) > VERSION:
        raise ValueError(f"checkpoint {path} has version {state['version']}; this tune_batchdyn "
                         f"reads versions up to {VERSION}")
    return state


def check_training_config(directory: str | os.PathLike, saved: Mapping[str, Any] | None,
                          config: TrialConfig, *, ignore: Collection[str] = ()) -> None:
    """Raise ``ConfigError`` unless the checkpoint in ``directory`` was written by the training
    config ``config`` asks for.

    ``saved`` is the config stored in the checkpoint (``TrialConfig.to_dict()``). Fields in
    ``RUN_ONLY_FIELDS`` and ``ignore`` may differ; so may fields a checkpoint lacks (written by a
    version that did not store them: nothing to compare). Resuming another config's checkpoint
    would silently return, or continue, that run's results.
    """
    if not saved:
        return
    requested = config.to_dict()
    differing = [name for name in requested
                 if name not in RUN_ONLY_FIELDS and name not in ignore and name in saved
                 and not same_value(saved[name], requested[name])]
    if not differing:
        return
    changes = "; ".join(f"{name}={saved[name]!r} there, {requested[name]!r} requested"
                        for name in differing)
    raise ConfigError(
        f"checkpoint_dir={str(directory)!r} is not accepted; its checkpoint "
        f"{checkpoint_path(directory)} was written by another training config ({changes}). "
        f"Use another checkpoint directory (--checkpoint-dir), or remove {directory} to start "
        "afresh."
    )


def same_value(a: Any, b: Any) -> bool:
    """Equal config values, whatever representation they went through (JSON, pickle, numpy):
    tuples and lists, mappings in any order, numpy scalars and Python numbers (1 == 1.0)."""
    return _plain(a) == _plain(b)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
