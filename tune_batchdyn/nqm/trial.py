"""The NQM as a trial: per-epoch records in the product's schema, in milliseconds per epoch.

``nqm_trial_records`` runs a batch-size / learning-rate schedule on an :class:`~.model.NQM`
epoch by epoch and emits one record per epoch (``tune_batchdyn.records.schema``), so schedulers,
pruners and strategies can be exercised end to end without a network. Each epoch is
``max(1, samples_per_epoch // batch_size)`` steps (``drop_last``) at the epoch's constant lr.

What the columns hold (analogues of the real trials' measures, all exact in expectation):

- ``train_loss`` = ``train_error`` = ``val_error`` = ``test_error`` = the risk
  ``sum_i h_i x_i^2 / 2`` of the evaluated iterate (the average for EMA). The NQM is online
  (fresh samples every step), so training and test risk coincide.
- ``noise_scale``: McCandlish's simple noise scale at the current state,
  ``B_simple = tr(C) / E|H x|^2`` (``C`` the per-sample gradient covariance, ``H x`` the true
  gradient; a ratio of expectations).
- ``hessian_top``: the top Hessian eigenvalue ``max h`` (constant: the loss is quadratic).
- ``lk``: the seed's ``L_K = sum_k lr / B * sqrt(tr F_k)`` over the steps so far, with
  ``tr F_k`` (trace of the B x B per-sample gradient Gram) replaced by its expectation
  ``B (E|H x_k|^2 + tr C)``. Evaluated at every step of an epoch of at most
  ``LK_POINTS_PER_EPOCH`` steps; longer epochs are summed over that many evenly spaced steps,
  each standing for its block of steps (a Riemann sum of a smooth, monotone sequence).
- ``ck_bar``, ``quality_q``, ``tau``: absent (no analogue: no network, no importance sampling);
  the engine (``tune_batchdyn.train``) completes the record with NaN there.
- ``diverged``: the risk became non-finite or exceeded ``DIVERGENCE_FACTOR`` times its initial
  value; that epoch is the last one reported.

``noise_seed``: ``None`` reports expectations (every "seed" identical). With a seed, the trial
follows one sampled path of the model instead: each coordinate's state is drawn exactly at
epoch ends from its Gaussian transition (``z' = M^L z + N(0, lr^2 n / B Q_L)``, with Gaussian
gradient noise, ``x(0) ~ N(0, x0_var)``), and every column is computed from that path's
per-bin empirical second moments. With 10^4 dimensions the realised risk differs from the
expectation by a few percent, as repeated seeds of a real trial do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.nqm import checks
from tune_batchdyn.nqm.dynamics import Dynamics
from tune_batchdyn.nqm.model import NQM
from tune_batchdyn.nqm.moments import MomentMap, MomentState
from tune_batchdyn.nqm.optimizers import parse_optimizer

#: The risk "explodes" above this multiple of the initial risk.
DIVERGENCE_FACTOR = 1e6
#: Steps of an epoch at which the LK analogue is evaluated (every step up to this many).
LK_POINTS_PER_EPOCH = 256
#: Coefficient used when none is given: the seed's momentum 0.9; a 100-step average for EMA.
DEFAULT_COEFFICIENT = {"sgd": 0.0, "momentum": 0.9, "ema": 0.99}


class _SampledPath:
    """One realisation: the state of every coordinate, grouped by bin (``bin_of``)."""

    def __init__(self, dynamics: Dynamics, rng: np.random.Generator) -> None:
        self.rng = rng
        counts = dynamics.spectrum.count.astype(int)
        self.bin_of = np.repeat(np.arange(counts.size), counts)
        self.counts = counts.astype(float)
        x0 = rng.standard_normal(self.bin_of.size) * np.sqrt(dynamics.spectrum.x0_var)
        w1, w2 = dynamics.initial_direction
        self.z1, self.z2 = x0 * w1, x0 * w2

    def advance(self, moment_map: MomentMap, noise: np.ndarray) -> None:
        """Exact Gaussian transition over the epoch: ``z' = M z + L xi``, ``L L^T = noise Q``."""
        m = moment_map.take(0)
        b = self.bin_of
        q11, q12, q22 = (noise[0] * getattr(m, name) for name in ("q11", "q12", "q22"))
        l11 = np.sqrt(np.maximum(q11, 0.0))
        l21 = np.divide(q12, l11, out=np.zeros_like(q12), where=l11 > 0)
        l22 = np.sqrt(np.maximum(q22 - l21 * l21, 0.0))
        xi1, xi2 = self.rng.standard_normal((2, b.size))
        z1 = m.m11[b] * self.z1 + m.m12[b] * self.z2 + l11[b] * xi1
        z2 = m.m21[b] * self.z1 + m.m22[b] * self.z2 + l21[b] * xi1 + l22[b] * xi2
        self.z1, self.z2 = z1, z2

    def moments(self) -> MomentState:
        """Per-bin empirical second moments (shape ``(1, bins)``, like the expected state)."""
        def mean(values: np.ndarray) -> np.ndarray:
            return (np.bincount(self.bin_of, weights=values, minlength=self.counts.size)
                    / self.counts)[None, :]
        return MomentState(mean(self.z1 * self.z1), mean(self.z1 * self.z2),
                           mean(self.z2 * self.z2))


def _gradient_energy(dynamics: Dynamics, state: MomentState) -> float:
    """``E|H x|^2 = sum_i h_i^2 E[x_i^2]`` of the current iterate."""
    spectrum = dynamics.spectrum
    return float(dynamics.iterate_moment(state)[0] @ (spectrum.count * spectrum.curvature**2))


def _epoch_lk(dynamics: Dynamics, state: MomentState, steps: int, batch: float,
              noise_trace: float) -> float:
    """``sum_{k<steps} lr / B sqrt(B (E|H x_k|^2 + tr C))`` from the epoch's starting state."""
    points = min(steps, LK_POINTS_PER_EPOCH)
    stride = -(-steps // points)
    block = dynamics.map_after(stride)
    noise = dynamics.noise_unit / batch
    total, k = 0.0, 0
    while k < steps:
        energy = _gradient_energy(dynamics, state) + noise_trace
        total += min(stride, steps - k) * np.sqrt(batch * max(energy, 0.0))
        state = state.advance(block, noise)
        k += stride
    return float(dynamics.lr[0] / batch * total)


def _check_schedule(batch_size_per_epoch: Sequence[int], lr_per_epoch: Sequence[float],
                    samples_per_epoch: int) -> tuple[list[int], list[float]]:
    batches = list(batch_size_per_epoch)
    lrs = list(lr_per_epoch)
    if len(batches) != len(lrs) or not batches:
        raise ConfigError(
            f"batch_size_per_epoch ({len(batches)} entries) and lr_per_epoch ({len(lrs)}) are not "
            "accepted; use two non-empty lists of equal length."
        )
    checks.whole_number("samples_per_epoch", samples_per_epoch, minimum=1)
    return ([checks.whole_number("batch_size_per_epoch entry", b, minimum=1) for b in batches],
            [checks.positive_number("lr_per_epoch entry", lr, allow_zero=True) for lr in lrs])


def nqm_trial_records(nqm: NQM, *, batch_size_per_epoch: Sequence[int],
                      lr_per_epoch: Sequence[float], samples_per_epoch: int,
                      optimizer: str = "sgd", coefficient: float | None = None,
                      noise_seed: int | None = None,
                      reporter: Callable[[dict], None] | None = None) -> list[dict]:
    """Run the schedule on ``nqm`` and return (and pass to ``reporter``) one record per epoch.

    ``coefficient``: momentum / EMA coefficient (default 0.9 for momentum, 0.99 for EMA).
    Stops after the first diverged epoch. See the module docstring for every column.
    """
    spec = parse_optimizer(optimizer)
    batches, lrs = _check_schedule(batch_size_per_epoch, lr_per_epoch, samples_per_epoch)
    beta = DEFAULT_COEFFICIENT[spec.kind] if coefficient is None else coefficient
    if noise_seed is not None:
        checks.whole_number("noise_seed", noise_seed)
    problem = nqm.problem
    noise_trace = float(problem.count @ problem.noise)
    hessian_top = float(problem.curvature.max())
    start = time.perf_counter()
    dynamics = nqm.dynamics(spec, lrs[0], beta)
    state = dynamics.initial_state()
    path = None if noise_seed is None else _SampledPath(dynamics, np.random.default_rng(noise_seed))
    if path is not None:
        state = path.moments()
    limit = DIVERGENCE_FACTOR * problem.initial_risk()
    records: list[dict] = []
    iterations = samples = 0
    lk = 0.0
    for epoch, (batch, lr) in enumerate(zip(batches, lrs, strict=True), start=1):
        dynamics = nqm.dynamics(spec, lr, beta)
        steps = max(1, samples_per_epoch // batch)
        noise = dynamics.noise_unit / batch
        with np.errstate(over="ignore", invalid="ignore"):
            lk += _epoch_lk(dynamics, state, steps, float(batch), noise_trace)
            epoch_map = dynamics.map_after(steps)
            if path is None:
                state = state.advance(epoch_map, noise)
            else:
                path.advance(epoch_map, noise)
                state = path.moments()
            risk = float(dynamics.readout(state)[0] @ dynamics.weight)
            energy = _gradient_energy(dynamics, state)
        iterations += steps
        samples += steps * batch
        diverged = not np.isfinite(risk) or risk > limit
        record = dict(
            epoch=epoch, iterations=iterations, samples_seen=samples, batch_size=batch, lr=lr,
            train_loss=risk, train_error=risk, val_error=risk, test_error=risk,
            lk=lk, hessian_top=hessian_top,
            noise_scale=noise_trace / energy if energy > 0 else float("inf"),
            wall_time_s=time.perf_counter() - start, diverged=bool(diverged),
        )
        records.append(record)
        if reporter is not None:
            reporter(dict(record))
        if diverged:
            break
    return records
