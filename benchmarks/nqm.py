"""Benchmark: the NQM's steps-to-target curves vs a straightforward per-step Python loop.

Workload (issue 8): 17 batch sizes (1..65536) x 4 optimisers (sgd, momentum, precond:0.5, ema)
with 50-point learning-rate grids (momentum and EMA also search 20 coefficients), target 0.01,
the seed's NQM (10^4 dims, 100 bins). Runs on one core (BLAS threads pinned to 1).

Baseline: for each batch size and optimiser, a Python loop over steps that advances the exact
second moments of every grid point and bin by one step (numpy over grid x bins) until some grid
point reaches the target, i.e. the same answer by brute force. Its total cost is
``sum over (B, optimiser) of steps-to-target x time per step``; the time per step is measured
here for each optimiser, the loop is run to completion where that takes at most a few seconds
(its answers are compared with the fast ones), and the rest is extrapolated from the measured
time per step, as running it would take days.

    python3 benchmarks/nqm.py            # prints times and the ratio
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import time  # noqa: E402

import numpy as np  # noqa: E402

from tune_batchdyn.nqm import NQM  # noqa: E402
from tune_batchdyn.nqm.dynamics import Dynamics  # noqa: E402

OPTIMIZERS = ("sgd", "momentum", "precond:0.5", "ema")
BATCH_SIZES = [2**k for k in range(17)]
LR_POINTS = 50
TARGET = 0.01
DIRECT_SECONDS = 5.0  # the baseline runs to completion where that takes at most this long
TIMING_STEPS = 2000
#: The default grids of ``steps_curve`` for the seed's spectrum (max h~ = 1), spelled out.
LR_RANGE = {"sgd": (-5.0, 0.5), "momentum": (-8.0, 1.0), "precond:0.5": (-5.0, 0.5),
            "ema": (-5.0, 0.5)}
COEFFICIENTS = {"sgd": 0.0, "momentum": 1.0 - np.logspace(-5.0, 0.0, 20),
                "precond:0.5": 0.0, "ema": 1.0 - np.logspace(-5.0, 0.0, 20)}


def fast_curves(model: NQM) -> tuple[dict, dict]:
    curves, seconds = {}, {}
    for name in OPTIMIZERS:
        start = time.perf_counter()
        curves[name] = model.steps_curve(BATCH_SIZES, name, TARGET, lr_points=LR_POINTS)
        seconds[name] = time.perf_counter() - start
    return curves, seconds


def baseline_steps(dynamics: Dynamics, batch: float, limit: int) -> tuple[int, float]:
    """Step the second moments one step at a time until some grid point reaches the target;
    returns (steps, seconds)."""
    stable = dynamics.subset(np.flatnonzero(dynamics.stable()))
    step = stable.step_map()
    noise = stable.noise_unit / batch
    state = stable.initial_state()
    weight = stable.weight
    start = time.perf_counter()
    for t in range(1, limit + 1):
        state = state.advance(step, noise)
        if np.min(stable.readout(state) @ weight) <= TARGET:
            return t, time.perf_counter() - start
    return limit + 1, time.perf_counter() - start


def main() -> None:
    model = NQM()
    start = time.perf_counter()
    curves, per_optimizer = fast_curves(model)
    fast_total = time.perf_counter() - start
    print(f"NQM {model!r}: {len(BATCH_SIZES)} batch sizes x {len(OPTIMIZERS)} optimisers, "
          f"{LR_POINTS}-point lr grids (x 20 coefficients for momentum / EMA)")
    for name in OPTIMIZERS:
        print(f"  fast {name:12s} {per_optimizer[name]:6.2f} s   B_crit = "
              f"{curves[name].critical_batch().b_crit:9.4g}")
    print(f"fast total: {fast_total:.2f} s")

    baseline_total = measured = 0.0
    compared, differences = 0, []
    for name in OPTIMIZERS:
        curve = curves[name]
        grid = model.dynamics(name, np.logspace(*LR_RANGE[name], LR_POINTS),
                              COEFFICIENTS[name])
        _, timing = baseline_steps(grid, 1.0, TIMING_STEPS)
        per_step = timing / TIMING_STEPS
        for batch, steps in zip(BATCH_SIZES, curve.steps, strict=True):
            if steps * per_step <= DIRECT_SECONDS:
                got, seconds = baseline_steps(grid, float(batch), int(steps))
                compared += 1
                if got != steps:
                    differences.append(f"{name} B={batch}: loop {got}, search {int(steps)}")
                measured += seconds
                baseline_total += seconds
            else:
                baseline_total += steps * per_step
        print(f"  baseline {name:12s} {per_step * 1e6:8.1f} us/step, "
              f"{int(curve.steps.sum()):>10d} steps over the curve")
    print(f"baseline: {measured:.1f} s measured ({compared} runs to completion), "
          f"{baseline_total:.0f} s in all (the rest extrapolated from the time per step)")
    print(f"answers: {compared - len(differences)} of {compared} identical to the loop's")
    for line in differences:
        print(f"  {line}  (an underdamped risk dips below the target before the bisection's "
              "crossing; the loop finds the first dip)")
    print(f"speed-up: {baseline_total / fast_total:.0f}x  "
          "(shared machine: timings vary from run to run)")


if __name__ == "__main__":
    main()
