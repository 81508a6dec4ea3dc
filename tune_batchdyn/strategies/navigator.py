"""Navigator (ours, beyond the seeds): steer the (C̄K, LK) path by the batch size, closed loop.

The target is a disk in the plane (log C̄K, log LK): ``centre`` and ``radius`` (natural log by
default, ``log_base`` to change it). After each epoch the navigator predicts where one more
epoch with each allowed batch size B' would put the path, from the epoch just finished (batch
B, rate α, I iterations so far, of which m in this epoch) and the next epoch's rate α':

- LK: per sampled iteration l = α/|B|·sqrt(tr F̃) and tr F̃ (a sum of |B| per-sample squared
  gradient norms) grows like |B|, while the iterations per epoch shrink like 1/|B|, so
  ΔLK(B') = ΔLK(B)·(α'/α)·(B/B')^p with p = ``lk_exponent`` = 1.5 (DESIGN.md: LK ranks like
  lr·B^-1.5). A larger batch slows LK's growth.
- C̄K, a running mean: the epoch's mean c = (I·C̄K − (I−m)·C̄K_prev)/m is carried to B' as
  c' = c·(B'/B)^q and averaged in with m' = ⌈n/B'⌉ new iterations: C̄K' = (I·C̄K + m'·c')/(I + m').
  q = ``ck_exponent`` defaults to 0 (C̄K follows its own drift): the seed's |B| ∝ C̄K (q = 1)
  did not hold in our digits probe (DESIGN.md), so it is an option, not the default.

Decision (``choose_batch``): with d(B') the predicted distance from the centre, the target is
the largest size with d ≤ radius − dead_band; while the path is inside (d(B) ≤ radius) only a
larger target counts (it trains faster); outside, with no size predicted inside, the closest
size counts if its predicted distance beats the current size's by more than the dead band.
The batch moves one allowed size towards the target, at most once every ``patience`` (≥ 2)
epochs, so it can never change every epoch. NaN measures (no monitor, or a measure switched
off) mean "no information": the batch stays. Each change is logged with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.strategies.base import RunView, Strategy
from tune_batchdyn.strategies.registry import register


@dataclass(frozen=True)
class Observation:
    """One epoch's end point of the path and how the epoch was trained."""

    ck: float
    lk: float
    iterations: int
    batch: int
    lr: float


def predict_point(*, now: Observation, before: Observation | None, candidate: int,
                  next_lr: float, n_train: int, lk_exponent: float, ck_exponent: float,
                  log_base: float) -> tuple[float, float]:
    """(log C̄K, log LK) after one more epoch with batch ``candidate`` (module docstring)."""
    prev_lk = before.lk if before else 0.0
    prev_ck = before.ck if before else now.ck
    prev_iterations = before.iterations if before else 0
    lk_step = max(now.lk - prev_lk, 0.0) * (next_lr / now.lr) \
        * (now.batch / candidate) ** lk_exponent
    new_iterations = now.iterations - prev_iterations
    epoch_ck = now.ck
    if new_iterations > 0:
        estimate = (now.iterations * now.ck - prev_iterations * prev_ck) / new_iterations
        epoch_ck = estimate if math.isfinite(estimate) and estimate > 0 else now.ck
    steps = math.ceil(n_train / candidate)
    ck = (now.iterations * now.ck + steps * epoch_ck * (candidate / now.batch) ** ck_exponent) \
        / (now.iterations + steps)
    return math.log(ck, log_base), math.log(now.lk + lk_step, log_base)


def choose_batch(*, current: int, current_distance: float, distances: dict[int, float],
                 radius: float, dead_band: float) -> int | None:
    """The target size (``None``: keep); ``current_distance`` is the path's present distance
    from the centre, ``distances`` the predicted ones (the module docstring has the rule)."""
    inside = [size for size, d in distances.items() if d <= radius - dead_band]
    if current_distance <= radius:
        larger = [size for size in inside if size > current]
        return max(larger) if larger else None
    if inside:
        return max(inside)
    closest = min(distances, key=lambda size: (distances[size], -size))
    if closest != current and distances[closest] < distances[current] - dead_band:
        return closest
    return None


class Navigator(Strategy):
    """Keeps the (C̄K, LK) path inside a target disk with the largest batch that allows it."""

    name = "navigator"
    version = 1

    def __init__(self, centre: Sequence[float] | None = None, radius: float | None = None,
                 sizes: Sequence[int] | None = None, patience: int = 3,
                 dead_band: float | None = None, lk_exponent: float = 1.5,
                 ck_exponent: float = 0.0, log_base: float = math.e) -> None:
        super().__init__()
        form = ('{"name": "navigator", "centre": [log_ck, log_lk], "radius": r, '
                '"sizes": [16, 32, ...]}')
        if centre is None or radius is None:
            raise ConfigError(f"strategy 'navigator' needs centre and radius; use {form}.")
        if isinstance(centre, (str, bytes)) or not isinstance(centre, Sequence) \
                or len(centre) != 2 or not all(_finite(c) for c in centre):
            raise ConfigError(f"strategy 'navigator': centre={centre!r} is not accepted; use "
                              "two finite numbers [log_ck, log_lk].")
        _require(_finite(radius) and radius > 0, "radius", radius, "a finite number > 0")
        if sizes is not None:
            _require(not isinstance(sizes, (str, bytes)) and isinstance(sizes, Sequence)
                     and len(sizes) > 0 and all(isinstance(s, int) and not isinstance(s, bool)
                                                and s >= 1 for s in sizes),
                     "sizes", sizes, "a non-empty list of integers >= 1")
        _require(isinstance(patience, int) and not isinstance(patience, bool) and patience >= 2,
                 "patience", patience, "an integer >= 2 (epochs between changes)")
        if dead_band is not None:
            _require(_finite(dead_band) and 0 <= dead_band < radius, "dead_band", dead_band,
                     f"a number in [0, radius={radius})")
        for field, value in (("lk_exponent", lk_exponent), ("ck_exponent", ck_exponent)):
            _require(_finite(value), field, value, "a finite number")
        _require(_finite(log_base) and log_base > 1, "log_base", log_base, "a number > 1")
        self.centre = (float(centre[0]), float(centre[1]))
        self.radius = float(radius)
        self.sizes = sorted(set(sizes)) if sizes is not None else None
        self.patience = patience
        self.dead_band = 0.1 * self.radius if dead_band is None else float(dead_band)
        self.lk_exponent = float(lk_exponent)
        self.ck_exponent = float(ck_exponent)
        self.log_base = float(log_base)
        self._batch: int | None = None
        self._last_change = 0
        self._before: Observation | None = None
        self._warned = False

    def allowed_sizes(self, batch_size: int, n_train: int) -> list[int]:
        """``sizes``, or by default B_0·2^k for k = −2..4 within [1, n_train]."""
        if self.sizes is not None:
            return self.sizes
        return sorted({batch_size * 2 ** k if k >= 0 else batch_size // 2 ** -k
                       for k in range(-2, 5)} & set(range(1, n_train + 1)))

    def validate(self, *, epochs: int, n_train: int, batch_size: int) -> None:
        sizes = self.allowed_sizes(batch_size, n_train)
        if batch_size not in sizes:
            raise ConfigError(f"strategy 'navigator': batch_size={batch_size} is not one of its "
                              f"sizes {sizes}; add it to sizes or start from one of them.")
        if max(sizes) > n_train:
            raise ConfigError(f"strategy 'navigator': size {max(sizes)} is larger than the "
                              f"training set ({n_train} samples).")

    def batch_size(self, run: RunView) -> int:
        if self._batch is None:
            self._batch = run.base_batch_size
        return self._batch

    def end_epoch(self, run: RunView, record: dict[str, Any]) -> None:
        ck, lk = float(record["ck_bar"]), float(record["lk"])
        if not (math.isfinite(ck) and math.isfinite(lk) and ck > 0 and lk > 0):
            if not self._warned:
                self.log(f"navigator: no C̄K/LK at epoch {run.epoch + 1} (NaN): keeping batch "
                         f"{self.batch_size(run)} until they arrive")
                self._warned = True
            return
        now = Observation(ck, lk, int(record["iterations"]), int(record["batch_size"]),
                          float(record["lr"]))
        before, self._before = self._before, now
        if run.epoch + 1 - self._last_change < self.patience or run.epoch + 1 >= run.epochs:
            return
        next_lr = run.base_lr / run.lr_decay_factor ** sum(run.epoch + 1 >= m
                                                           for m in run.lr_milestones)
        sizes = self.allowed_sizes(run.base_batch_size, run.n_train)
        distances = {size: self._distance(predict_point(
            now=now, before=before, candidate=size, next_lr=next_lr, n_train=run.n_train,
            lk_exponent=self.lk_exponent, ck_exponent=self.ck_exponent,
            log_base=self.log_base)) for size in sizes}
        current = self.batch_size(run)
        here = (math.log(ck, self.log_base), math.log(lk, self.log_base))
        current_distance = self._distance(here)
        target = choose_batch(current=current, current_distance=current_distance,
                              distances=distances, radius=self.radius, dead_band=self.dead_band)
        if target is None or target == current:
            return
        position = sizes.index(current)
        new = sizes[position + 1] if target > current else sizes[position - 1]
        where = "inside" if current_distance <= self.radius else "outside"
        self.log(f"batch {current} -> {new} at epoch {run.epoch + 2} because (log C̄K, log LK) "
                 f"= ({here[0]:.2f}, {here[1]:.2f}) is {current_distance:.2f} from the centre "
                 f"({where}, radius {self.radius:g}) and batch {target} is predicted at "
                 f"{distances[target]:.2f} (batch {current}: {distances[current]:.2f})")
        self._batch = new
        self._last_change = run.epoch + 1

    def _distance(self, point: tuple[float, float]) -> float:
        return math.hypot(point[0] - self.centre[0], point[1] - self.centre[1])

    def state_dict(self) -> dict[str, Any]:
        before = self._before
        return {**super().state_dict(), "batch": self._batch, "last_change": self._last_change,
                "warned": self._warned,
                "before": None if before is None else [before.ck, before.lk, before.iterations,
                                                       before.batch, before.lr]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._batch = state.get("batch")
        self._last_change = int(state.get("last_change", 0))
        self._warned = bool(state.get("warned", False))
        before = state.get("before")
        self._before = None if before is None else Observation(
            float(before[0]), float(before[1]), int(before[2]), int(before[3]), float(before[4]))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _require(ok: bool, field: str, value: Any, accepted: str) -> None:
    if not ok:
        raise ConfigError(f"strategy 'navigator': {field}={value!r} is not accepted; use "
                          f"{accepted}.")


register("navigator", Navigator)
