"""Staged batch-size schedules (the fisher-measures seed, §3.2 and §4.3) as plain numbers.

- ``s{a}-to-{b}``: the epochs split into 5 equal stages; the batch size goes geometrically from
  ``a`` to ``b``, rounded down to a power-of-two multiple of ``a``:
  b_k = a · 2^⌊k · log2(b/a) / 4⌋ for k < 4 (never past b), and b_4 = b. This gives the seed's
  s32-to-512 = 32,64,128,256,512, s512-to-32 = the reverse and s16-to-64 = 16,16,32,32,64.
- ``-MS`` (multi-step): the same sequence re-run within each learning-rate phase (the lr is
  divided at ``lr_milestones``, by default 50% and 75% of the epochs).
- ``[16,32,32,64,64]``: an explicit list of equal stages (any length); ``-MS`` also applies.
- ``fixed``: one batch size throughout (a one-stage list).

Epoch ``i`` (0-based) of a span of ``n`` epochs starting at ``s`` is in stage
``floor((i - s) * n_stages / n)``. The lr milestones are the epochs ``floor(f * epochs + 0.5)``
(clamped to 1..epochs). ``strategies.dynamic_sampling`` runs the schedules by these same
functions (`stage_of_epoch`, `phase_bounds`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tune_batchdyn.errors import ConfigError

#: Stages of the seed's dynamic sampling.
N_STAGES = 5
#: The seed's learning-rate milestones (fractions of the epochs; lr ÷ LR_DECAY_FACTOR at each),
#: ``TrialConfig``'s defaults.
LR_MILESTONES: tuple[float, ...] = (0.5, 0.75)
LR_DECAY_FACTOR = 10.0

_GEOMETRIC = re.compile(r"^s(\d+)-to-(\d+)(-MS)?$", re.IGNORECASE)
_LIST = re.compile(r"^\[\s*(\d+(?:\s*,\s*\d+)*)\s*\](-MS)?$", re.IGNORECASE)
_FORMS = "'s{a}-to-{b}', 's{a}-to-{b}-MS', '[16,32,64]', '[16,32,64]-MS'"


@dataclass(frozen=True)
class Schedule:
    """A staged schedule: the batch size of each equal stage, and whether it repeats per lr
    phase (``multi_step``)."""

    stages: tuple[int, ...]
    multi_step: bool = False

    @property
    def spec(self) -> str:
        """The schedule as a strategy spec string (``fixed`` when there is one batch size)."""
        if len(set(self.stages)) == 1:
            return "fixed"
        suffix = "-MS" if self.multi_step else ""
        first, last = self.stages[0], self.stages[-1]
        if len(self.stages) == N_STAGES and geometric_stages(first, last) == self.stages:
            return f"s{first}-to-{last}{suffix}"
        return "[" + ",".join(str(b) for b in self.stages) + "]" + suffix


def geometric_stages(start: int, end: int, n_stages: int = N_STAGES) -> tuple[int, ...]:
    """Batch sizes of ``s{start}-to-{end}``: a · 2^⌊k · log2(b/a) / (S-1)⌋, then ``end``."""
    for name, value in (("start batch size", start), ("end batch size", end)):
        if not (isinstance(value, (int, np.integer)) and value >= 1):
            raise ConfigError(f"{name}={value!r} is not accepted; use an integer >= 1.")
    if not (isinstance(n_stages, int) and n_stages >= 1):
        raise ConfigError(f"n_stages={n_stages!r} is not accepted; use an integer >= 1.")
    if n_stages == 1:
        return (int(end),)
    step = math.log2(end / start) / (n_stages - 1)
    sizes = [int(round(start * 2 ** math.floor(k * step + 1e-9))) for k in range(n_stages - 1)]
    if end < start:  # rounding down must not pass b: s100-to-32 = 100,50,50,32,32, not ...,25,32
        sizes = [max(size, int(end)) for size in sizes]
    return (*sizes, int(end))


def parse_schedule(spec: str | Sequence[int]) -> Schedule:
    """A schedule from its spec string, or from a list of stage batch sizes."""
    if not isinstance(spec, str):
        stages = tuple(int(b) for b in spec)
        if not stages or min(stages) < 1:
            raise ConfigError(f"schedule={list(spec)!r} is not accepted; use a non-empty list of "
                              "positive batch sizes.")
        return Schedule(stages)
    match = _GEOMETRIC.match(spec.strip())
    if match:
        start, end, ms = match.groups()
        return Schedule(geometric_stages(int(start), int(end)), multi_step=ms is not None)
    match = _LIST.match(spec.strip())
    if match:
        sizes, ms = match.groups()
        return Schedule(tuple(int(b) for b in sizes.split(",")), multi_step=ms is not None)
    raise ConfigError(f"schedule={spec!r} is not accepted; use one of: {_FORMS}, or a list of "
                      "batch sizes.")


def milestone_epochs(epochs: int, fractions: Sequence[float] = LR_MILESTONES) -> tuple[int, ...]:
    """0-based epochs at which the lr is divided: ``floor(f * epochs + 0.5)`` in 1..epochs."""
    return tuple(max(1, min(epochs, int(math.floor(f * epochs + 0.5)))) for f in fractions)


def phase_bounds(epochs: int, milestones: Sequence[int]) -> list[int]:
    """The learning-rate phases' bounds: 0, the milestone epochs inside (0, epochs), epochs."""
    return sorted({0, epochs, *(m for m in milestones if 0 < m < epochs)})


def stage_of_epoch(epoch: int, epochs: int, n_stages: int, milestones: Sequence[int] = (),
                   multi_step: bool = False) -> int:
    """The stage (0-based) of ``epoch``: ⌊e·S/E⌋, or within its lr phase with ``multi_step``
    (``milestones``: 0-based epochs, `milestone_epochs`)."""
    bounds = phase_bounds(epochs, milestones) if multi_step else [0, epochs]
    start = max(b for b in bounds if b <= epoch)
    end = min(b for b in bounds if b > epoch)
    return (epoch - start) * n_stages // (end - start)


def epoch_batch_sizes(schedule: Schedule, epochs: int,
                      lr_milestones: Sequence[float] = LR_MILESTONES) -> np.ndarray:
    """The batch size of each epoch (length ``epochs``) under ``schedule``."""
    if epochs < 1:
        raise ConfigError(f"epochs={epochs!r} is not accepted; use a positive number.")
    milestones = milestone_epochs(epochs, tuple(lr_milestones))
    return np.array([schedule.stages[stage_of_epoch(e, epochs, len(schedule.stages), milestones,
                                                    schedule.multi_step)]
                     for e in range(epochs)], dtype=np.int64)


def schedule_family(sizes: Sequence[int]) -> list[Schedule]:
    """Every ``s{a}-to-{b}`` and ``s{a}-to-{b}-MS`` over ``sizes`` (a != b), plus each size
    fixed. Where ``s{a}-to-{b}`` needs a size outside ``sizes`` (beacons at 8, 32, 128, 512
    have no 16 or 64), the ladder of the allowed sizes from a to b (one stage each) stands in
    for it, so every pair of sizes has a schedule that can be composed from the beacons."""
    sizes = sorted({int(b) for b in sizes})
    family = [Schedule((b,)) for b in sizes]
    for start in sizes:
        for end in sizes:
            if start != end:
                stages = geometric_stages(start, end)
                if not set(stages) <= set(sizes):
                    low, high = sorted((start, end))
                    ladder = [b for b in sizes if low <= b <= high]
                    stages = tuple(ladder if start < end else ladder[::-1])
                family += [Schedule(stages), Schedule(stages, multi_step=True)]
    return family
