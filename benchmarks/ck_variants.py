"""Benchmark: is the seed's C̄K sturdier with vanished samples left out, or its floor raised?

    python benchmarks/ck_variants.py [--epochs 20] [--seeds 0] [--batches 4]

The seed's c_k is set by the smallest non-zero eigenvalue of the batch's Gram F̃; once a
network fits some samples, their gradients vanish and that eigenvalue comes from whichever
sample fits best (the predictor issue's probe: C̄K's ranks did not persist, ρ ≈ 0 between 10%
of the budget and the end). This trains the digits/mlp grid of ``searchspaces/digits_mlp.toml``
(|B| 8, 32, 128, 512 × lr 0.025..0.4, SGD momentum 0.9, lr /10 at 50% and 75%) and, after each
epoch, computes on ``--batches`` seeded training batches of the trial's batch size (the model
in training mode, as the engine measures) three c's from the same Gram:

- ``seed``: `truncated_condition` (the default measure, C̄K);
- ``active``: `active_condition` (samples with F̃_ii < 1e-3 · tr F̃ / B left out);
- ``floored``: `floored_condition` (λmin floored at 1e-3 · tr F̃ / B).

Each trial's C̄ is the running mean of its epochs' c's (the engine's C̄K averages every 50
iterations instead; this samples once per epoch, the same way for all three). Printed per
variant, as Spearman ρ over the configurations: rank stability (C̄ at 10% of the budget vs the
end), |B| vs C̄ at the end (the seed expects +), lr vs C̄ at the end, and C̄ at 10% vs the final
test error; also the mean share of samples the active variant left out at the end. Trials
that diverged (they end early) are left out of the C̄ correlations.
"""

from __future__ import annotations

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from tune_batchdyn.measures import (  # noqa: E402
    active_condition,
    floored_condition,
    per_sample_gram,
    truncated_condition,
)
from tune_batchdyn.train import TrialConfig  # noqa: E402
from tune_batchdyn.train.engine import Trial  # noqa: E402

BATCH_SIZES = (8, 32, 128, 512)
LRS = (0.025, 0.05, 0.1, 0.2, 0.4)
VARIANTS: dict[str, Callable[[torch.Tensor], float]] = {
    "seed": truncated_condition,
    "active": active_condition,
    "floored": floored_condition,
}
VANISH = 1e-3


def trial_variants(batch: int, lr: float, seed: int, epochs: int, n_batches: int) -> dict:
    """Train one configuration; per epoch, each variant's c averaged over the seeded batches."""
    config = TrialConfig(dataset="digits", model="mlp", batch_size=batch, lr=lr, seed=seed,
                         epochs=epochs, momentum=0.9, lr_milestones=(0.5, 0.75),
                         lr_decay_factor=10.0, measures=())
    trial = Trial(config)
    generator = torch.Generator().manual_seed(seed + 104729)
    per_epoch: dict[str, list[float]] = {name: [] for name in VARIANTS}
    dropped: list[float] = []

    def after_epoch(record: dict) -> None:
        if record.get("done"):
            return
        values: dict[str, list[float]] = {name: [] for name in VARIANTS}
        share = []
        for _ in range(n_batches):
            idx = torch.randperm(trial.n_train, generator=generator)[:batch]
            gram = per_sample_gram(trial.model, trial.train_x[idx], trial.train_y[idx],
                                   trial.loss_fn)
            for name, variant in VARIANTS.items():
                values[name].append(variant(gram))
            diagonal = gram.diagonal()
            share.append(float((diagonal < VANISH * diagonal.mean()).double().mean()))
        for name in VARIANTS:
            finite = [v for v in values[name] if math.isfinite(v)]
            per_epoch[name].append(float(np.mean(finite)) if finite else math.nan)
        dropped.append(float(np.mean(share)))

    table = trial.run(after_epoch)
    running = {name: np.array([np.nanmean(v[: k + 1]) if k < len(v) else math.nan
                               for k in range(epochs)])
               for name, v in per_epoch.items()}  # NaN after a divergence ended the trial
    return {"batch": batch, "lr": lr, "running": running,
            "dropped": dropped[-1] if dropped else math.nan,
            "final_test_error": float(table["test_error"].iloc[-1])}


def spearman(x: list[float], y: list[float]) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    return float(spearmanr(x[ok], y[ok])[0]) if ok.sum() >= 3 else math.nan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--batches", type=int, default=4, help="Gram batches per epoch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.perf_counter()
    trials = [trial_variants(b, lr, seed, args.epochs, args.batches)
              for seed in seeds for b in BATCH_SIZES for lr in LRS]
    print(f"digits/mlp, {len(trials)} trials x {args.epochs} epochs, {args.batches} Gram "
          f"batches per epoch, {time.perf_counter() - start:.0f} s")
    early = max(0, round(0.1 * args.epochs) - 1)
    errors = [t["final_test_error"] for t in trials]
    batches = [t["batch"] for t in trials]
    lrs = [t["lr"] for t in trials]
    print(f"{'variant':<8} {'stable 10%->end':>16} {'|B| vs C':>9} {'lr vs C':>8} "
          f"{'C@10% vs error':>15}")
    for name in VARIANTS:
        first = [t["running"][name][early] for t in trials]
        last = [t["running"][name][-1] for t in trials]
        print(f"{name:<8} {spearman(first, last):16.2f} {spearman(batches, last):9.2f} "
              f"{spearman(lrs, last):8.2f} {spearman(first, errors):15.2f}")
    print(f"share of samples left out by 'active' at the end: "
          f"{np.nanmean([t['dropped'] for t in trials]):.2f}; diverged trials: "
          f"{sum(math.isnan(t['running']['seed'][-1]) for t in trials)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
