"""Reporting epochs to a Ray Tune session with a checkpoint that remembers how many were reported.

Shared by ``make_trainable`` and the replay trainable. The checkpoint folder holds whatever the
trial saves there (the engine's ``trial.pt``) plus ``reported.json``; on resume,
``restore_checkpoint`` copies Tune's checkpoint back into the trial's folder and returns the
number of epochs already reported, so none is reported twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray import tune as ray_tune

#: File in each checkpoint that says how many epochs were reported.
REPORTED_FILE = "reported.json"


def restore_checkpoint(workdir: Path) -> int:
    """Copy Tune's checkpoint (if any) into ``workdir``; the number of epochs it had reported."""
    checkpoint = ray_tune.get_checkpoint()
    if checkpoint is None:
        return 0
    checkpoint.to_directory(str(workdir))
    marker = workdir / REPORTED_FILE
    return int(json.loads(marker.read_text())["epochs"]) if marker.exists() else 0


def report_epoch(metrics: dict[str, Any], workdir: Path | None) -> None:
    """``ray.tune.report`` one epoch, with ``workdir`` as its checkpoint when given."""
    checkpoint = None
    if workdir is not None:
        (workdir / REPORTED_FILE).write_text(json.dumps({"epochs": int(metrics["epoch"])}))
        checkpoint = ray_tune.Checkpoint.from_directory(str(workdir))
    ray_tune.report(metrics, checkpoint=checkpoint)
