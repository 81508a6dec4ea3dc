"""``make_trainable``: a Ray Tune function trainable that runs one ``run_trial``.

The trial's config is ``TrialConfig.from_dict({**defaults, **tune_config})`` (unknown keys are
errors naming the accepted fields). Every epoch's record is reported with
``ray.tune.report(record, checkpoint=...)``: the metric names are the record's
(``val_error``, ``test_error``, ``ck_bar``, ``lk``, ...) plus ``budget_fraction`` (epoch / epochs,
which schedulers and the searcher need and Ray's config alone may not carry). The engine's own
checkpoint (``TrialConfig.checkpoint_dir``, a per-trial temporary folder written after each epoch
before the record is reported) is handed to Ray with ``Checkpoint.from_directory``; on start
the trainable copies ``ray.tune.get_checkpoint()`` there and the engine resumes from it. That is
what makes pausing, rerouting (a paused trial resumed under a new ``strategy``) and retries
after a worker failure (``FailureConfig(max_failures=...)``) continue where the trial was.

Each epoch is reported once: the checkpoint records how many were, and an engine that recomputes
a prefix on resume (NQM trials keep no engine state) has those epochs skipped. A checkpoint goes
with every ``checkpoint_every``-th epoch (and the last), as the engine writes them; Ray keeps
them all unless told otherwise, and only the latest is ever read, so pass
``RunConfig(checkpoint_config=tune.CheckpointConfig(num_to_keep=1))`` (the CLI does).

Resources: wrap the trainable with ``tune.with_resources``::

    trainable = make_trainable(dataset="digits", model="mlp", epochs=20)
    tune.with_resources(trainable, {"cpu": 1})              # CPU trials
    tune.with_resources(trainable, {"cpu": 2, "gpu": 1})    # one GPU each
    tune.with_resources(trainable, {"cpu": 1, "gpu": 0.25}) # four trials share a GPU

Ray sets ``CUDA_VISIBLE_DEVICES`` for each trial, so ``device="auto"`` (the default) trains on
the GPU Ray assigned, or on the CPU when the trial asked for none. Fractional GPUs share the
device's memory (Ray does not divide it); a batch that no longer fits runs as micro-batches
(the engine halves them on an out-of-memory error), so trials slow down rather than fail.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.train import TrialConfig, run_trial
from tune_batchdyn.train.engine import check_user_code
from tune_batchdyn.tune.session import report_epoch, restore_checkpoint

log = logging.getLogger("tune_batchdyn.tune")


def make_trainable(**defaults: Any) -> Callable[[dict[str, Any]], None]:
    """A function trainable running ``run_trial`` on ``{**defaults, **config}``.

    The defaults are checked here (a bad field fails now, not in every trial); with both a
    dataset and a model among them, a user's dataset or model is loaded and probed once
    (``train.engine.check_user_code``; modules left to the torch.func fallback are logged
    here, where the driver's log shows them); a function of the running script (``"__main__:..."``)
    is refused, since Ray's worker processes cannot import it."""
    config = TrialConfig.from_dict(defaults)
    for field in ("dataset", "model"):
        if str(defaults.get(field, "")).startswith("__main__:"):
            raise ConfigError(f"{field}={defaults[field]!r}: Ray's workers do not import the "
                              "running script (__main__); move the function into a module "
                              "of its own and name that module.")
    if "dataset" in defaults and "model" in defaults:
        fallback = check_user_code(config)
        if fallback:
            log.info("model=%r: no per-sample rule for %s; torch.func computes their share "
                     "of C̄K/LK (slower)", config.model, ", ".join(fallback))

    def batchdyn_trial(config: dict[str, Any]) -> None:
        run_tune_trial({**defaults, **config})

    return batchdyn_trial


def run_tune_trial(values: Mapping[str, Any]) -> None:
    """Run one trial inside a Ray Tune session, resuming from Tune's checkpoint if any."""
    workdir = Path(tempfile.mkdtemp(prefix="tune-batchdyn-"))
    try:
        reported = restore_checkpoint(workdir)
        config = TrialConfig.from_dict({**values, "checkpoint_dir": str(workdir)})
        # MeasureScheduler reroutes a paused trial by a new strategy in its config
        run_trial(config, TuneReporter(config, workdir, reported), reroute=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class TuneReporter:
    """The engine's reporter: ``ray.tune.report`` each new epoch, with the engine's checkpoint."""

    def __init__(self, config: TrialConfig, workdir: Path, reported: int = 0) -> None:
        self.config = config
        self.workdir = workdir
        self.reported = reported

    def __call__(self, record: dict[str, Any]) -> None:
        epoch = int(record["epoch"])
        if record.get("done") or epoch <= self.reported:
            return
        self.reported = epoch
        saved = (epoch % self.config.checkpoint_every == 0 or epoch == self.config.epochs
                 or bool(record["diverged"]))  # the engine's rule for writing its checkpoint
        report_epoch({**record, "budget_fraction": epoch / self.config.epochs},
                     self.workdir if saved else None)
