"""``TrialConfig``: everything one trial needs, validated once, with errors that name the field."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tune_batchdyn.errors import ConfigError, check_choice
from tune_batchdyn.strategies import parse_strategy
from tune_batchdyn.train.data import check_dataset_options
from tune_batchdyn.user_code import (
    DATASET_FORM,
    IMPORT_FORM,
    MODEL_FORM,
    checked_callable,
    is_import_path,
)

DATASETS = ("digits", "synthetic", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "nqm")
MODELS = ("mlp", "cnn", "resnet8", "resnet20", "resnet32", "resnet56", "resnet110", "densenet",
          "nqm")
DEVICES = ("auto", "cpu", "cuda")
MEASURES = ("fisher", "quality", "hessian")
#: Fields that say only where or how a trial runs or is saved, never what it computes, so a
#: checkpoint resumes under any value of them: the device (the engine warns that augmentation
#: draws differ), where the data lives and whether it may be downloaded, the micro-batch size
#: (the same gradients in smaller pieces; the checkpoint keeps its own, possibly halved after an
#: out-of-memory error), and where and how often checkpoints are written. Every other field
#: (data, model, strategy, optimiser recipe, epochs, measures, seeds, divergence rule) shapes
#: the trajectory.
RUN_ONLY_FIELDS = frozenset({"device", "data_dir", "download", "micro_batch_size",
                             "checkpoint_dir", "checkpoint_every"})


@dataclass(frozen=True)
class TrialConfig:
    """One trial: data, model, batch-size strategy and the optimiser recipe of the seeds.

    ``dataset`` and ``model`` are built-in names or a user's own functions as
    ``"package.module:function"`` (``load_data`` and ``build_model`` give the contracts).
    ``seed`` drives the trial (initialisation, data order, augmentation); ``data_seed`` drives
    the data (the digits split, the synthetic task). The learning rate is divided by
    ``lr_decay_factor`` at each fraction of the epochs in ``lr_milestones`` (the seed: ÷10 at
    50% and 75%). Measures: ``fisher`` (C̄K, LK, noise scale every ``measure_every``
    iterations), ``quality`` (stable-rank Q each epoch), ``hessian`` (λmax every
    ``hessian_every`` epochs on ``hessian_samples`` training samples; ``None``: the interval that
    keeps its cost near 10% of training).
    """

    dataset: str = "digits"
    model: str = "mlp"
    strategy: str | Mapping[str, Any] = "fixed"
    lr: float = 0.1
    batch_size: int = 32
    epochs: int = 20
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_milestones: tuple[float, ...] = (0.5, 0.75)
    lr_decay_factor: float = 10.0
    measure_every: int = 50
    measures: tuple[str, ...] = MEASURES
    hessian_every: int | None = None
    hessian_samples: int = 128
    seed: int = 0
    data_seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    download: bool = False
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    micro_batch_size: int | None = None
    divergence_factor: float = 100.0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        _check_name("dataset", self.dataset, DATASETS, DATASET_FORM, self.data_seed,
                    **(self.dataset_options if isinstance(self.dataset_options, Mapping) else {}))
        _check_name("model", self.model, MODELS, MODEL_FORM, (1,), 2)
        if (self.dataset == "nqm") != (self.model == "nqm"):
            raise ConfigError(
                f"dataset={self.dataset!r} with model={self.model!r}: the noisy quadratic model "
                "is its own dataset and model; use dataset='nqm' with model='nqm'."
            )
        check_choice("device", self.device, DEVICES)
        _positive_number("lr", self.lr)
        _positive_int("batch_size", self.batch_size)
        _positive_int("epochs", self.epochs)
        _positive_int("measure_every", self.measure_every)
        if self.hessian_every is not None:
            _positive_int("hessian_every", self.hessian_every)
        _positive_int("hessian_samples", self.hessian_samples)
        _positive_int("checkpoint_every", self.checkpoint_every)
        if self.micro_batch_size is not None:
            _positive_int("micro_batch_size", self.micro_batch_size)
        _in_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _in_range("weight_decay", self.weight_decay, 0.0, math.inf, high_open=True)
        _in_range("lr_decay_factor", self.lr_decay_factor, 1.0, math.inf, high_open=True)
        _in_range("divergence_factor", self.divergence_factor, 1.0, math.inf, low_open=True,
                  high_open=True)
        if isinstance(self.lr_milestones, (str, bytes)) or not hasattr(self.lr_milestones,
                                                                        "__iter__"):
            raise ConfigError(f"lr_milestones={self.lr_milestones!r} is not accepted; use a list "
                              "of budget fractions in (0, 1), e.g. [0.5, 0.75] (or [] for none).")
        for fraction in self.lr_milestones:
            _in_range("lr_milestones", fraction, 0.0, 1.0, low_open=True, high_open=True)
        if list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ConfigError(f"lr_milestones={self.lr_milestones!r} must be increasing.")
        if isinstance(self.measures, str):
            raise ConfigError(f"measures={self.measures!r} is not accepted; use a list of "
                              f"names from {list(MEASURES)}, e.g. measures=[{self.measures!r}] "
                              "(or [] for none).")
        for name in self.measures:
            check_choice("measures", name, MEASURES)
        for name in ("seed", "data_seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name}={value!r} is not accepted; use an integer >= 0.")
        if not isinstance(self.dataset_options, Mapping):
            raise ConfigError(
                f"dataset_options={self.dataset_options!r} is not accepted; use a mapping."
            )
        check_dataset_options(self.dataset, self.dataset_options)
        parse_strategy(self.strategy)  # raises ConfigError naming the spec and accepted forms
        object.__setattr__(self, "lr_milestones", tuple(float(m) for m in self.lr_milestones))
        object.__setattr__(self, "measures", tuple(self.measures))
        object.__setattr__(self, "lr", float(self.lr))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrialConfig:
        """Build from a plain mapping (a Ray Tune config, Optuna params); unknown keys are
        errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown TrialConfig field(s) {unknown}; accepted fields: {sorted(known)}."
            )
        # numpy scalars (a pandas row, a numpy grid) count as the Python numbers they hold
        values = {k: v.item() if isinstance(v, np.generic) else v for k, v in values.items()}
        for name in ("lr_milestones", "measures"):
            if name in values and isinstance(values[name], list):
                values[name] = tuple(values[name])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-friendly values (tuples as lists, mappings as dicts)."""
        out = dataclasses.asdict(self)
        out["lr_milestones"] = list(self.lr_milestones)
        out["measures"] = list(self.measures)
        out["dataset_options"] = dict(self.dataset_options)
        if isinstance(self.strategy, Mapping):
            out["strategy"] = dict(self.strategy)
        return out

    def replace(self, **changes: Any) -> TrialConfig:
        return dataclasses.replace(self, **changes)



def config_fields() -> list[str]:
    """The names of ``TrialConfig``'s fields, in declaration order: the keys a config takes."""
    return [f.name for f in dataclasses.fields(TrialConfig)]

def _check_name(field: str, value: Any, builtins: tuple[str, ...], form: str,
                *example_args: Any, **example_kwargs: Any) -> None:
    """A built-in name, or a user's function by import path, imported and its signature
    checked against ``form`` now (not called), so a typo fails before any trial starts."""
    if is_import_path(value):
        checked_callable(field, value, form, *example_args, **example_kwargs)
    elif value not in builtins:
        options = ", ".join(repr(name) for name in builtins)
        raise ConfigError(f"{field}={value!r} is not accepted; use one of: {options}, or your "
                          f"own as {IMPORT_FORM}.")


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name}={value!r} is not accepted; use an integer >= 1.")


def _positive_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} is not accepted; use a finite number > 0.")


def _in_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
              high_open: bool = False) -> None:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and not math.isnan(value)
    if not (is_number and (low < value if low_open else low <= value)
            and (value < high if high_open else value <= high)):
        left, right = ("(" if low_open else "["), (")" if high_open else "]")
        raise ConfigError(f"{name}={value!r} is not accepted; use a number in {left}{low}, "
                          f"{high}{right}.")
