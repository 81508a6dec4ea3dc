"""Trial checkpoints: the full state at an epoch boundary, written atomically.

A checkpoint holds the model, optimiser, strategy and measure state, every random generator,
the per-epoch history and the wall time, so a run killed mid-training and resumed from its last
checkpoint ends with the same numbers as an uninterrupted run (exactly, on CPU).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

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
