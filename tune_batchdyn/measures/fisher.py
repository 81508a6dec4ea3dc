"""C̄K, LK and the noise-scale EMA over a run (fisher-measures-dynamic-sampling, eqs. 7–8).

At each sampled iteration k, from the per-sample gradient Gram F̃_k of the training batch:

    c_k = sqrt(max E_k / min E_k)              C̄_K = (1/K) Σ_{k≤K} c_k
    l_k = (α_k / |B_k|) · sqrt(tr F̃_k)         L_K = Σ_{k≤K} l_k

with α_k the learning rate and |B_k| the batch size. The noise scale (McCandlish et al. 2018)
is tracked as EMAs of tr Σ and |G|² kept separately; ``noise_scale`` is their ratio. The first
measurement initialises each EMA (no zero start, so no bias correction is needed). Both come
from the Gram, or from the caller's estimate (a batch-norm model's: `noise`).

Departure: C̄_K averages the finite c_k only (c_k is NaN when the Gram is zero); ``ck_bar`` is
NaN until one finite c_k has been seen. The tracker keeps running sums, never the history.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.measures.checks import check_positive_int
from tune_batchdyn.measures.condition import check_gram, truncated_condition
from tune_batchdyn.measures.noise import NoiseScale, gradient_noise_scale, simple_noise_scale

STATE_VERSION = 1


def _initial_state() -> dict:
    return {
        "updates": 0,
        "finite_ck_count": 0,
        "ck_sum": 0.0,
        "lk": 0.0,
        "last_ck": math.nan,
        "last_lk": math.nan,
        "ema_trace_covariance": 0.0,
        "ema_gradient_sq_norm": 0.0,
        "noise_updates": 0,
    }


_STATE_KEYS = tuple(_initial_state())


def energy_step(gram: Tensor, *, lr: float, batch_size: int) -> float:
    """l_k = (lr / |B|) · sqrt(tr F̃)."""
    check_gram(gram)
    trace = float(gram.diagonal().sum().to(torch.float64))
    return lr / batch_size * math.sqrt(max(trace, 0.0))


def ema_update(previous: float, value: float, *, decay: float, first: bool) -> float:
    """decay · previous + (1 − decay) · value; the first value starts the average."""
    return value if first else decay * previous + (1.0 - decay) * value


class FisherTracker:
    """Running C̄K, LK and gradient-noise-scale EMA from per-sample gradient Grams.

    Example::

        tracker = FisherTracker()
        tracker.update(per_sample_gram(model, x, y), lr=0.1)
        tracker.ck_bar, tracker.lk, tracker.noise_scale
    """

    def __init__(self, noise_ema: float = 0.9) -> None:
        if (isinstance(noise_ema, bool) or not isinstance(noise_ema, int | float)
                or not 0.0 <= noise_ema < 1.0):
            raise ConfigError(f"noise_ema must be in [0, 1); got noise_ema={noise_ema!r}.")
        self.noise_ema = noise_ema
        self._state = _initial_state()

    def update(self, gram: Tensor, lr: float, batch_size: int | None = None,
               noise: NoiseScale | None = None) -> None:
        """Record one sampled iteration: c_k, l_k and (for B >= 2) the noise-scale EMAs, from
        ``noise`` when given (a batch-norm model's `coupled_noise_scale`), else from the Gram
        (`gradient_noise_scale`). ``batch_size``: |B|, the Gram's own size (checked; None
        reads it off the Gram)."""
        check_gram(gram)
        if batch_size is None:
            batch_size = gram.shape[0]
        check_positive_int("batch_size", batch_size)
        if batch_size != gram.shape[0]:
            raise ConfigError(f"batch_size={batch_size!r} is not the Gram's batch: l_k = "
                              f"(lr/|B|)·sqrt(tr F̃) needs the |B| = {gram.shape[0]} samples "
                              "the Gram was formed on (pass that, or leave batch_size out).")
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr >= 0):
            raise ConfigError(f"lr must be a finite number >= 0; got lr={lr!r}.")
        state = self._state
        # a few hundred numbers that become Python floats: one copy to the CPU, where LAPACK
        # also solves a matrix this small faster (c_k in 0.65-0.92 ms, copy included, against
        # 0.99-1.16 ms on an H200 at B = 128), instead of one wait for the GPU per figure
        gram = gram.detach().cpu()
        ck = truncated_condition(gram)
        lk_step = energy_step(gram, lr=lr, batch_size=batch_size)
        state["updates"] += 1
        state["last_ck"], state["last_lk"] = ck, lk_step
        state["lk"] += lk_step
        if math.isfinite(ck):
            state["finite_ck_count"] += 1
            state["ck_sum"] += ck
        if noise is None and gram.shape[0] >= 2:
            noise = gradient_noise_scale(gram)
        if noise is not None:
            first = state["noise_updates"] == 0
            state["ema_trace_covariance"] = ema_update(
                state["ema_trace_covariance"],
                noise.trace_covariance,
                decay=self.noise_ema,
                first=first,
            )
            state["ema_gradient_sq_norm"] = ema_update(
                state["ema_gradient_sq_norm"],
                noise.gradient_sq_norm,
                decay=self.noise_ema,
                first=first,
            )
            state["noise_updates"] += 1

    @property
    def ck_bar(self) -> float:
        """C̄_K: mean of the finite c_k so far (NaN before the first)."""
        count = self._state["finite_ck_count"]
        return self._state["ck_sum"] / count if count else math.nan

    @property
    def lk(self) -> float:
        """L_K: sum of l_k so far (0 before the first update)."""
        return self._state["lk"]

    @property
    def last_ck(self) -> float:
        """c_k of the latest update (NaN before the first)."""
        return self._state["last_ck"]

    @property
    def last_lk(self) -> float:
        """l_k of the latest update (NaN before the first)."""
        return self._state["last_lk"]

    @property
    def updates(self) -> int:
        """Number of updates so far (K)."""
        return self._state["updates"]

    @property
    def noise_scale(self) -> float:
        """EMA(tr Σ) / EMA(|G|²); NaN before the first batch of two or more samples."""
        if self._state["noise_updates"] == 0:
            return math.nan
        return simple_noise_scale(
            self._state["ema_trace_covariance"], self._state["ema_gradient_sq_norm"]
        )

    def state_dict(self) -> dict:
        """A versioned, plain-Python snapshot: {"version", "settings", "state"}."""
        return {
            "version": STATE_VERSION,
            "settings": {"noise_ema": self.noise_ema},
            "state": dict(self._state),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a snapshot from `state_dict` (version 1)."""
        version = state_dict.get("version") if isinstance(state_dict, dict) else None
        if version != STATE_VERSION:
            raise ConfigError(
                f"FisherTracker state_dict version={version!r} is not supported; "
                f"accepted: {STATE_VERSION}."
            )
        missing = [key for key in _STATE_KEYS if key not in state_dict.get("state", {})]
        if missing or "noise_ema" not in state_dict.get("settings", {}):
            raise ConfigError(
                f"FisherTracker state_dict lacks {missing or ['settings.noise_ema']}."
            )
        self.noise_ema = float(state_dict["settings"]["noise_ema"])
        self._state = {key: state_dict["state"][key] for key in _STATE_KEYS}
