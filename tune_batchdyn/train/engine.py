"""``run_trial``: the one training loop every backend (CLI, Ray Tune, Optuna) runs.

The loop owns data order, the optimisation step, evaluation, divergence handling and
checkpoints; the strategy decides batch size and learning rate per step; the monitor takes the
training-dynamics measures; the reporter (any callable) receives each epoch's flat record.
"""

from __future__ import annotations

import logging
import math
import textwrap
import time
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.measures import per_sample_gram
from tune_batchdyn.measures.gram import fallback_modules
from tune_batchdyn.predict.schedules import milestone_epochs
from tune_batchdyn.records.schema import RECORD_COLUMNS, empty_record
from tune_batchdyn.strategies import Strategy, parse_strategy
from tune_batchdyn.train.augment import augment
from tune_batchdyn.train.checkpoint import (
    check_training_config,
    load_checkpoint,
    same_value,
    save_checkpoint,
)
from tune_batchdyn.train.config import TrialConfig
from tune_batchdyn.train.data import DeviceData, load_data
from tune_batchdyn.train.models import build_model, probe_model
from tune_batchdyn.train.monitor import FALLBACK, Monitor
from tune_batchdyn.train.stepper import Stepper, optimizer_lr
from tune_batchdyn.user_code import is_import_path

log = logging.getLogger("tune_batchdyn.train")

Reporter = Callable[[dict[str, Any]], None]
EVAL_BATCH = 2048
#: Steps between host-side divergence checks (each check synchronises with the device).
CHECK_EVERY = 10
#: Training inputs a user's model is first run on, to check what it returns.
PROBE_INPUTS = 2


def run_trial(config: TrialConfig | Mapping[str, Any], reporter: Reporter | None = None, *,
              reroute: bool = False) -> pd.DataFrame:
    """Train one trial and return its trajectory, one row per epoch (``RECORD_COLUMNS``).

    ``config``: a `TrialConfig`, or a plain mapping of its fields (`TrialConfig.from_dict`).

    ``reporter(record)`` is called after every epoch with the flat record, then once more with
    the final result: the last record plus ``done=True``. With ``config.checkpoint_dir`` set,
    the full state is saved every ``checkpoint_every`` epochs and a run restarts from the last
    checkpoint; a finished trial found there is returned without recomputation. A checkpoint of
    another config is refused, naming the fields; with ``reroute`` (a scheduler moving a
    running trial onto a new schedule) its ``strategy`` and ``batch_size`` may change.
    """
    if isinstance(config, Mapping):
        config = TrialConfig.from_dict(config)
    if not isinstance(config, TrialConfig):
        raise ConfigError(f"config must be a TrialConfig or a mapping of its fields; got "
                          f"{type(config).__name__}.")
    if reporter is not None and not callable(reporter):
        raise ConfigError(f"reporter must be a function of the record, reporter(record), or "
                          f"None; got {type(reporter).__name__}.")
    if config.dataset == "nqm":
        from tune_batchdyn.train.nqm_trial import run_nqm_trial

        return run_nqm_trial(config, reporter)
    return Trial(config, reroute=reroute).run(reporter)


def check_user_code(config: TrialConfig) -> list[str]:
    """Load a user's dataset and build and probe a user's model (``config.dataset`` or
    ``config.model`` by import path) on the CPU, as a trial would, and with ``fisher`` among
    the measures take the checked Gram of a few inputs (``Monitor``'s first measurement):
    sweeps call it once before any trial starts, so a wrong return value or a model whose
    C̄K/LK cannot be measured is one line there, not an error in every trial.

    Returns the model's modules whose per-sample gradients will come from torch.func
    (``"name (Type)"``, slower), so the sweep can say so where the user sees it.
    """
    if not (is_import_path(config.dataset) or is_import_path(config.model)):
        return []
    data = load_data(config.dataset, data_seed=config.data_seed, options=config.dataset_options,
                     data_dir=config.data_dir, download=config.download)
    model = build_model(config.model, data.input_shape, data.num_classes).to("cpu")
    x, y = data.train_x[:PROBE_INPUTS], data.train_y[:PROBE_INPUTS]
    probe_model(config.model, model, x, data.num_classes)
    if "fisher" not in config.measures:
        return []
    per_sample_gram(model, x, y, unsupported=FALLBACK, check=True)
    return fallback_modules(model)


def resolve_device(name: str) -> torch.device:
    """The config's device: "auto" is CUDA when available, else the CPU; an unavailable one
    is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but no CUDA GPU is visible; use device='auto' or 'cpu'.")
    return torch.device(name)


class Trial:
    """The state of one running trial; also the ``RunView`` its strategy reads."""

    def __init__(self, config: TrialConfig, reroute: bool = False) -> None:
        self.config = config
        self.reroute = reroute  # a checkpoint's strategy may be replaced (run_trial)
        self.device = resolve_device(config.device)
        self.strategy: Strategy = parse_strategy(config.strategy)
        self.data: DeviceData = load_data(config.dataset, data_seed=config.data_seed,
                                          options=config.dataset_options,
                                          data_dir=config.data_dir, download=config.download,
                                          device=self.device)
        self.strategy.validate(epochs=config.epochs, n_train=self.data.n_train,
                               batch_size=config.batch_size)
        if self.strategy.uses_batch_size and config.batch_size > self.data.n_train:
            raise ConfigError(f"batch_size={config.batch_size} is larger than the training split "
                              f"of dataset={config.dataset!r} ({self.data.n_train} samples); use "
                              f"at most {self.data.n_train}.")
        torch.manual_seed(config.seed)
        self.model: nn.Module = build_model(config.model, self.data.input_shape,
                                            self.data.num_classes).to(self.device)
        if is_import_path(config.model):
            probe_model(config.model, self.model, self.data.train_x[:PROBE_INPUTS],
                        self.data.num_classes)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.aug_generator = torch.Generator(device=self.device).manual_seed(config.seed + 1)
        # RunView fields
        self.epoch = 0
        self.epochs = config.epochs
        self.iteration = 0
        self.samples_seen = 0
        self.n_train = self.data.n_train
        self.base_lr = config.lr
        self.base_batch_size = config.batch_size
        self.lr_milestones = milestone_epochs(config.epochs, config.lr_milestones)
        self.lr_decay_factor = config.lr_decay_factor
        self.momentum = config.momentum
        self.weight_decay = config.weight_decay
        self.train_x, self.train_y = self.data.train_x, self.data.train_y
        self.optimizer = self.strategy.make_optimizer(self.model, self)
        self.monitor = Monitor(config, self.data.n_train)
        self.stepper = Stepper(self.model, self.loss_fn, config.micro_batch_size)
        self.history: list[dict[str, Any]] = []
        self.wall_time_s = 0.0
        self.first_loss: float | None = None

    # --- RunView ------------------------------------------------------------------------------
    def loss_fn(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, reduction="none")

    def draw_uniform(self, k: int) -> torch.Tensor:
        k = min(k, self.n_train)
        return torch.randperm(self.n_train, generator=self.generator)[:k].to(self.device)

    # --- the loop -----------------------------------------------------------------------------
    def run(self, reporter: Reporter | None = None) -> pd.DataFrame:
        reporter = reporter or (lambda record: None)
        if self._restore():
            log.info("resumed %s at epoch %d", self.config.checkpoint_dir, len(self.history))
        if self._finished():
            reporter({**self.history[-1], "done": True})
            return self.trajectory()
        for epoch in range(len(self.history), self.epochs):
            self.epoch = epoch
            record = self._train_epoch()
            self.history.append(record)
            if self.config.checkpoint_dir and (record["diverged"] or self._checkpoint_due()):
                save_checkpoint(self.config.checkpoint_dir, self.state_dict())
            reporter(dict(record))
            if record["diverged"]:
                break
        reporter({**self.history[-1], "done": True})
        return self.trajectory()

    def trajectory(self) -> pd.DataFrame:
        return pd.DataFrame(self.history, columns=list(RECORD_COLUMNS))

    def _finished(self) -> bool:
        return bool(self.history) and (len(self.history) >= self.epochs
                                       or bool(self.history[-1]["diverged"]))

    def _checkpoint_due(self) -> bool:
        done = len(self.history)
        return done % self.config.checkpoint_every == 0 or done == self.epochs

    def _train_epoch(self) -> dict[str, Any]:
        start = time.perf_counter()
        self.model.train()
        self.strategy.begin_epoch(self)
        order = torch.randperm(self.n_train, generator=self.generator).to(self.device)
        step_losses: list[torch.Tensor] = []  # summed once per epoch: no per-step host sync
        step_sizes: list[int] = []
        step_wrong: list[torch.Tensor] = []
        seen, cursor, steps, diverged = 0, 0, 0, False
        plan = None
        while cursor < self.n_train:
            plan = self.strategy.plan_step(self)
            indices = order[cursor:cursor + plan.batch_size]
            cursor += plan.batch_size
            indices, weights = self.strategy.select_batch(self, indices)
            x = augment(self.train_x[indices], self.data.augmentation, self.aug_generator)
            x, y = self.strategy.transform_batch(self, x, self.train_y[indices])
            if plan.lr is not None:
                for group in self.optimizer.param_groups:
                    group["lr"] = plan.lr
            self.monitor.before_step(self, x, y)
            loss, wrong = self.stepper.step(self.optimizer, x, y, weights)
            self.iteration += 1
            self.samples_seen += len(y)
            seen += len(y)
            steps += 1
            step_losses.append(loss)
            step_sizes.append(len(y))
            step_wrong.append(wrong)
            self.strategy.after_step(self, loss)
            if steps % CHECK_EVERY == 0 or cursor >= self.n_train:
                diverged = self._diverged(float(loss))
                if diverged:
                    break
        loss_sum = (float(torch.stack(step_losses).double() @ torch.tensor(
            step_sizes, dtype=torch.float64, device=self.device)) if step_losses else math.nan)
        wrong_sum = float(torch.stack(step_wrong).double().sum()) if step_wrong else 0.0
        record = empty_record()
        record.update(
            epoch=self.epoch + 1, iterations=self.iteration, samples_seen=self.samples_seen,
            batch_size=plan.batch_size if plan else self.base_batch_size,
            lr=optimizer_lr(self.optimizer),
            train_loss=loss_sum / max(seen, 1), train_error=wrong_sum / max(seen, 1),
            val_error=self.error(self.data.val_x, self.data.val_y),
            test_error=self.error(self.data.test_x, self.data.test_y),
            diverged=diverged or not math.isfinite(loss_sum),
        )
        record.update(self.monitor.end_epoch(
            self, self.strategy.hessian_top(self, self.config.hessian_samples)))
        self.strategy.end_epoch(self, record)
        for event in self.strategy.drain_events():
            log.info("%s", event)
        self.wall_time_s += time.perf_counter() - start
        record["wall_time_s"] = self.wall_time_s
        return record

    def _diverged(self, loss: float) -> bool:
        """A non-finite loss, or one ``divergence_factor`` times above the first."""
        if not math.isfinite(loss):
            return True
        if self.first_loss is None:
            self.first_loss = max(loss, 1e-3)
            return False
        return loss > self.config.divergence_factor * self.first_loss

    @torch.no_grad()
    def error(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Classification error of the model in eval mode, as a fraction."""
        was_training = self.model.training
        self.model.eval()
        wrong = torch.zeros((), device=self.device, dtype=torch.long)
        for start in range(0, len(x), EVAL_BATCH):
            logits = self.model(x[start:start + EVAL_BATCH])
            wrong += (logits.argmax(dim=1) != y[start:start + EVAL_BATCH]).sum()
        self.model.train(was_training)
        return float(wrong) / max(len(x), 1)

    def _switch_strategy(self, state: dict[str, Any]) -> None:
        previous = state["config"]["strategy"]
        try:  # momentum buffers carry over when the parameter groups match
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError:
            log.info("optimiser state of %r does not fit %r: starting it afresh", previous,
                     self.config.strategy)
        log.info("strategy changed from %r to %r at epoch %d", previous, self.config.strategy,
                 len(state["history"]) + 1)

    # --- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "strategy": self.strategy.state_dict(),
            "monitor": self.monitor.state_dict(),
            "generator": self.generator.get_state(),
            "aug_generator": self.aug_generator.get_state(),
            "device_type": self.device.type,
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "iteration": self.iteration,
            "samples_seen": self.samples_seen,
            "wall_time_s": self.wall_time_s,
            "first_loss": self.first_loss,
            "micro_batch_size": self.stepper.micro_batch_size,
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def _restore(self) -> bool:
        if not self.config.checkpoint_dir:
            return False
        state = load_checkpoint(self.config.checkpoint_dir)
        if state is None:
            return False
        saved = state.get("config") or {}  # absent: written before configs were stored
        rerouted = self.reroute and "strategy" in saved and not same_value(
            saved["strategy"], self.config.strategy)
        # a reroute (MeasureScheduler) resumes the weights under a new strategy and its base
        # batch size; every other training field must be the checkpoint's
        check_training_config(self.config.checkpoint_dir, saved, self.config,
                              ignore=("strategy", "batch_size") if rerouted else ())
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:  # a user's model changed behind the same import path
            raise ConfigError(
                f"checkpoint_dir={self.config.checkpoint_dir!r} holds the weights of another "
                f"model than model={self.config.model!r} builds now (its code changed?): "
                f"{textwrap.shorten(str(err), 300, placeholder=' …')} Use a new "
                "checkpoint_dir.") from err
        if rerouted:  # the new strategy starts fresh from the checkpointed weights
            self._switch_strategy(state)
        else:
            self.optimizer.load_state_dict(state["optimizer"])
            self.strategy.load_state_dict(state["strategy"])
        self.monitor.load_state_dict(state["monitor"])
        self.generator.set_state(state["generator"])
        if state["device_type"] == self.device.type:
            self.aug_generator.set_state(state["aug_generator"])
        else:
            log.warning("checkpoint was written on %s, resuming on %s: augmentation draws differ",
                        state["device_type"], self.device.type)
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.history = list(state["history"])
        self.iteration = state["iteration"]
        self.samples_seen = state["samples_seen"]
        self.wall_time_s = state["wall_time_s"]
        self.first_loss = state["first_loss"]
        self.stepper.micro_batch_size = state["micro_batch_size"]
        return True
