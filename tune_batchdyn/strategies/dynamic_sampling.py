"""Dynamic sampling (fisher-measures-dynamic-sampling, §3.2 and §4.3): the batch size in stages.

Training is split into S stages of equal epochs; stage k uses batch size b_k. Epoch e (0-based)
of E is in stage ⌊e·S/E⌋, so with E not a multiple of S the stages differ by at most one epoch.
The stage arithmetic is ``predict.schedules``' (`stage_of_epoch`), which the planner predicts
schedules with.

- ``s{a}-to-{b}``: S = 5 and sizes geometric from a to b, rounded down to a power-of-two multiple
  of a: b_k = a·2^⌊k·log2(b/a)/(S−1)⌋ for k < S−1 (never past b), and b_{S−1} = b. This
  gives the seed's sequences: s32-to-512 = 32,64,128,256,512; s512-to-32 = the reverse;
  s16-to-64 = 16,16,32,32,64. (The seed only names power-of-two sequences; for other ratios
  the rounding is ours.)
- ``[b_1, ..., b_S]``: the sizes given (a string spec, or ``{"name": "dynamic", "sizes": [...]}``).
- ``-MS`` (multi-step): the sequence re-runs inside each learning-rate phase (the epochs between
  decay milestones), each phase split into S stages the same way. A phase shorter than S epochs
  skips stages (its epochs take the stages ⌊e_local·S/L⌋); this is logged.

The learning rate stays the base rate with the step decay, as in the seed.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.predict.schedules import (
    N_STAGES,
    geometric_stages,
    phase_bounds,
    stage_of_epoch,
)
from tune_batchdyn.strategies.base import RunView, Strategy
from tune_batchdyn.strategies.registry import accepted_forms, register, register_pattern

RANGE_FORM = "s{a}-to-{b}[-MS] (e.g. s32-to-512, s32-to-512-MS)"
LIST_FORM = "[b1,b2,...][-MS] (e.g. [32,64,64,128,256])"
_RANGE = re.compile(r"s(\d+)-to-(\d+)(-ms)?", re.IGNORECASE)
_LIST = re.compile(r"\[(.*)\](-ms)?", re.IGNORECASE | re.DOTALL)


class DynamicSampling(Strategy):
    """A batch-size schedule of S equal stages (``s{a}-to-{b}``, a list, optional ``-MS``)."""

    name = "dynamic"
    uses_batch_size = False
    version = 1

    def __init__(self, sizes: Sequence[int], *, multistep: bool = False,
                 spec: str | None = None) -> None:
        super().__init__()
        self.spec = spec or format_list(sizes, multistep)
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not sizes:
            raise _spec_error(self.spec, "sizes must be a non-empty list of integers")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
            raise _spec_error(self.spec, f"batch sizes must be integers >= 1, got {list(sizes)}")
        if not isinstance(multistep, bool):
            raise ConfigError(f"strategy {self.spec!r}: multistep={multistep!r} is not "
                              "accepted; use true or false.")
        self.sizes = [int(s) for s in sizes]
        self.multistep = multistep
        self._batch: int | None = None

    def validate(self, *, epochs: int, n_train: int, batch_size: int) -> None:
        if len(self.sizes) > epochs:
            raise _spec_error(self.spec, f"{len(self.sizes)} stages need at least "
                              f"{len(self.sizes)} epochs, got epochs={epochs}")
        if max(self.sizes) > n_train:
            raise _spec_error(self.spec, f"batch size {max(self.sizes)} is larger than the "
                              f"training set ({n_train} samples)")

    def begin_epoch(self, run: RunView) -> None:
        if run.epoch == 0 and self.multistep:
            bounds = phase_bounds(run.epochs, run.lr_milestones)
            short = [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)
                     if b - a < len(self.sizes)]
            if short:
                self.log(f"{self.spec}: lr phases of {short} epochs are shorter than the "
                         f"{len(self.sizes)}-stage sequence; those phases skip stages")
        stage = stage_of_epoch(run.epoch, run.epochs, len(self.sizes), run.lr_milestones,
                               self.multistep)
        batch = self.sizes[stage]
        if self._batch is not None and batch != self._batch:
            self.log(f"batch {self._batch} -> {batch} at epoch {run.epoch + 1} "
                     f"(stage {stage + 1} of {len(self.sizes)} of {self.spec})")
        self._batch = batch

    def batch_size(self, run: RunView) -> int:
        if self._batch is None:
            self.begin_epoch(run)
        return self._batch

    def describe(self) -> str:
        return self.spec

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "batch": self._batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._batch = state.get("batch")


def format_list(sizes: Sequence[int], multistep: bool) -> str:
    """The list form of a schedule, ``[32,64,128]`` or ``[32,64,128]-MS``."""
    body = ",".join(str(s) for s in sizes) if isinstance(sizes, Sequence) else repr(sizes)
    return f"[{body}]" + ("-MS" if multistep else "")


def _spec_error(spec: str, problem: str) -> ConfigError:
    return ConfigError(f"strategy={spec!r} is not accepted: {problem}; accepted forms: "
                       f"{', '.join(accepted_forms())}.")


def _from_range(name: str, options: dict[str, Any]) -> Strategy | None:
    match = _RANGE.fullmatch(name)
    if match is None:
        return None
    first, last = int(match.group(1)), int(match.group(2))
    stages = options.pop("stages", N_STAGES)
    multistep = options.pop("multistep", False) or bool(match.group(3))
    if options:
        raise _spec_error(name, f"unknown option(s) {sorted(options)}; use stages, multistep")
    if first < 1 or last < 1:
        raise _spec_error(name, "batch sizes must be >= 1")
    if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
        raise _spec_error(name, f"stages={stages!r}; use an integer >= 1")
    return DynamicSampling(list(geometric_stages(first, last, stages)), multistep=multistep,
                           spec=name)


def _from_list(name: str, options: dict[str, Any]) -> Strategy | None:
    match = _LIST.fullmatch(name)
    if match is None:
        return None
    multistep = options.pop("multistep", False) or bool(match.group(2))
    if options:
        raise _spec_error(name, f"unknown option(s) {sorted(options)}; use multistep")
    try:
        sizes = [int(item) for item in match.group(1).split(",")]
    except ValueError:
        raise _spec_error(name, "the list must hold integers separated by commas") from None
    return DynamicSampling(sizes, multistep=multistep, spec=name)


register("dynamic", DynamicSampling)
register_pattern(RANGE_FORM, _from_range)
register_pattern(LIST_FORM, _from_list)


def run_lengths(strategy: object) -> object:
    """A stage list with its repeated stages as runs, ``[32,32,128,128,128]`` as
    ``[32×2,128×3]`` (a rerouted trial's 20-stage schedule would make a summary table or a
    decision line too wide to read); other strategies as they are."""
    if not (isinstance(strategy, str) and strategy.startswith("[") and "]" in strategy):
        return strategy
    body, _, suffix = strategy[1:].partition("]")
    runs = [(size, len(list(group))) for size, group in itertools.groupby(body.split(","))]
    return "[" + ",".join(size if n == 1 else f"{size}×{n}" for size, n in runs) + "]" + suffix

