"""A synthetic records table with a planted answer, to test the predictors and the benchmark.

Trials are simulated at the level of the Fisher measurements (every ``measure_every`` iterations,
counted from iteration 1), with the scalings the seed and our probe report:

    ln c_k = 1 + 0.5 ln(B/32) + 0.3 ln(lr₀/0.1) + a_cfg + a_seed + 0.3 e/E + 0.2 ξ
    l_k    = (α_k / √B) · exp(b_cfg + b_seed) · sqrt(1 + 2 exp(-3 e/E)) · exp(0.1 ξ')

(B the batch size in effect, α_k the step-decayed lr, e the 0-based epoch, ξ standard normal;
a_cfg, b_cfg ~ N(0, 0.25²) a configuration's signature, a_seed, b_seed ~ N(0, 0.05²) a seed's),
so C̄K grows with B and LK behaves like lr · B^-1.5. The planted answer: the final test error is
a monotone function of the trial's own measures early on,

    final = 0.02 + 0.5 σ(1.5 (ln C̄K(f₀) - m_c) + 1.0 (ln LK(f₀) - m_l)) + 0.005 ξ

(f₀ = ``planted_fraction``, m_c and m_l the medians over trials, σ the logistic function), and
the val and test curves fall to it as A exp(-k e/E) + P (P until the first lr decay) with a
configuration's own A ~ U(0.1, 0.6), k ~ U(4, 15), P ~ U(0, 0.15), plus noise (sd 0.01), so
the early val error is only a rough guide to the final one. The configurations with the largest
lr/B (a share ``diverging``) diverge at epoch 3: errors at chance, measures NaN, ``diverged``
set. Dynamic schedules (``dynamic``: specs such as ``"s32-to-512"``) run at lr 0.1 with their
per-epoch batch sizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from tune_batchdyn.predict.schedules import epoch_batch_sizes, milestone_epochs, parse_schedule
from tune_batchdyn.records.schema import RECORD_COLUMNS
from tune_batchdyn.records.table import normalise_table

BATCH_SIZES: tuple[int, ...] = (16, 32, 64, 128, 256, 512)


def synthetic_records(n_configs: int = 60, n_seeds: int = 3, epochs: int = 20, *,
                      seed: int = 0, dynamic: Sequence[str] = (), n_train: int = 2000,
                      measure_every: int = 10, diverging: float = 0.05,
                      planted_fraction: float = 0.1, n_classes: int = 10) -> pd.DataFrame:
    """A records table of ``n_configs`` fixed-batch configurations (plus ``dynamic`` ones) ×
    ``n_seeds`` seeds × ``epochs`` epochs, with the planted relation of the module docstring."""
    rng = np.random.default_rng(seed)
    n_lrs = max(1, math.ceil(n_configs / len(BATCH_SIZES)))
    grid = [(float(lr), b) for lr in np.geomspace(0.01, 0.5, n_lrs) for b in BATCH_SIZES]
    chosen = sorted(rng.choice(len(grid), size=min(n_configs, len(grid)), replace=False))
    configs = [("fixed", *grid[i]) for i in chosen]
    configs += [(spec, 0.1, int(parse_schedule(spec).stages[0])) for spec in dynamic]
    ratios = np.array([lr / b for _, lr, b in configs])
    n_diverging = int(round(diverging * len(configs)))
    diverging_ids = set(np.argsort(-ratios)[:n_diverging]) if n_diverging else set()
    trials = []
    for index, (strategy, lr, batch) in enumerate(configs):
        signature = rng.normal(0.0, 0.25, size=2)
        curve = (rng.uniform(0.1, 0.6), rng.uniform(4.0, 15.0), rng.uniform(0.0, 0.15))
        sizes = (np.full(epochs, batch) if strategy == "fixed"
                 else epoch_batch_sizes(parse_schedule(strategy), epochs))
        for trial_seed in range(n_seeds):
            trial = _simulate(rng, sizes, lr, signature, n_train, measure_every)
            trial.update(strategy=strategy, lr0=lr, batch=batch, seed=trial_seed,
                         curve=curve, diverges=index in diverging_ids,
                         trial_id=f"{strategy}-lr{lr:.4g}-b{batch}-s{trial_seed}")
            trials.append(trial)
    _plant_errors(rng, trials, epochs, planted_fraction, n_classes)
    parts = [_columns(rng, t, epochs, measure_every, n_classes) for t in trials]
    table = pd.DataFrame({name: np.concatenate([p[name] for p in parts]) for name in parts[0]})
    for name in ("trial_id", "config/dataset", "config/model", "config/strategy"):
        table[name] = table[name].astype(str)
    return normalise_table(table)


def _simulate(rng: np.random.Generator, sizes: np.ndarray, lr0: float, signature: np.ndarray,
              n_train: int, measure_every: int) -> dict:
    epochs = len(sizes)
    decays = milestone_epochs(epochs)
    seed_offset = rng.normal(0.0, 0.05, size=2)
    c_sum, l_sum, count, iteration = 0.0, 0.0, 0, 0
    rows = {"iterations": [], "samples_seen": [], "lr": [], "ck_bar": [], "lk": []}
    samples = 0
    for e in range(epochs):
        batch = int(sizes[e])
        lr = lr0 / 10.0 ** sum(e >= m for m in decays)
        steps = math.ceil(n_train / batch)
        measured = np.arange(iteration, iteration + steps)
        measured = measured[measured % measure_every == 0]
        n = len(measured)
        log_c = (1.0 + 0.5 * math.log(batch / 32) + 0.3 * math.log(lr0 / 0.1) + signature[0]
                 + seed_offset[0] + 0.3 * e / epochs + 0.2 * rng.standard_normal(n))
        l_values = (lr / math.sqrt(batch) * math.exp(signature[1] + seed_offset[1])
                    * math.sqrt(1 + 2 * math.exp(-3 * e / epochs))
                    * np.exp(0.1 * rng.standard_normal(n)))
        c_sum += float(np.exp(log_c).sum())
        l_sum += float(l_values.sum())
        count += n
        iteration += steps
        samples += n_train
        rows["iterations"].append(iteration)
        rows["samples_seen"].append(samples)
        rows["lr"].append(lr)
        rows["ck_bar"].append(c_sum / count if count else math.nan)
        rows["lk"].append(l_sum)
    return {name: np.array(values) for name, values in rows.items()} | {"sizes": sizes}


def _plant_errors(rng: np.random.Generator, trials: list[dict], epochs: int, fraction: float,
                  n_classes: int) -> None:
    early = max(1, int(round(fraction * epochs))) - 1
    log_c = np.array([math.log(t["ck_bar"][early]) for t in trials])
    log_l = np.array([math.log(t["lk"][early]) for t in trials])
    score = 1.5 * (log_c - np.median(log_c)) + 1.0 * (log_l - np.median(log_l))
    finals = 0.02 + 0.5 / (1.0 + np.exp(-score)) + 0.005 * rng.standard_normal(len(trials))
    for trial, final in zip(trials, finals, strict=True):
        trial["final"] = 1.0 - 1.0 / n_classes if trial["diverges"] else float(np.clip(
            final, 0.005, 0.9))


def _columns(rng: np.random.Generator, trial: dict, epochs: int, measure_every: int,
             n_classes: int) -> dict[str, np.ndarray]:
    """The trial's records-table columns (a dict of equal-length arrays)."""
    epoch = np.arange(1, epochs + 1)
    amplitude, rate, plateau = trial["curve"]
    decay = amplitude * np.exp(-rate * (epoch - 1) / epochs) + plateau * (epoch <= epochs / 2)
    decay = decay - decay[-1]
    test = np.clip(trial["final"] + decay + 0.01 * rng.standard_normal(epochs), 0.0, 1.0)
    val = np.clip(trial["final"] + decay + 0.01 * rng.standard_normal(epochs), 0.0, 1.0)
    test[-1] = trial["final"]
    train_error = np.clip(val - 0.02, 0.0, 1.0)
    columns = {
        "epoch": epoch, "iterations": trial["iterations"], "samples_seen": trial["samples_seen"],
        "batch_size": trial["sizes"], "lr": trial["lr"],
        "train_loss": -np.log1p(-np.clip(train_error, 0.0, 0.99)), "train_error": train_error,
        "val_error": val, "test_error": test, "ck_bar": trial["ck_bar"], "lk": trial["lk"],
        "quality_q": 0.3 + 0.4 * epoch / epochs + 0.02 * rng.standard_normal(epochs),
        "hessian_top": 2.0 / trial["lr"] * trial["sizes"] ** 0.2 * np.exp(
            0.1 * rng.standard_normal(epochs)),
        "noise_scale": np.full(epochs, np.nan), "tau": np.full(epochs, np.nan),
        "wall_time_s": 0.01 * trial["iterations"], "diverged": np.zeros(epochs, dtype=bool),
    }
    if trial["diverges"]:
        columns = {name: np.array(values[:3], dtype=float if name not in (
            "epoch", "iterations", "samples_seen", "batch_size", "diverged") else None)
            for name, values in columns.items()}
        for name in ("val_error", "test_error", "train_error"):
            columns[name][-1] = 1.0 - 1.0 / n_classes
        for name in ("ck_bar", "lk", "hessian_top", "quality_q"):
            columns[name][-1] = np.nan
        columns["diverged"][-1] = True
    rows = len(columns["epoch"])
    config = {"dataset": "synthetic", "model": "mlp", "strategy": trial["strategy"],
              "lr": trial["lr0"], "batch_size": trial["batch"], "epochs": epochs,
              "seed": trial["seed"], "data_seed": 0, "measure_every": measure_every}
    table = {name: columns[name] for name in RECORD_COLUMNS}
    table["trial_id"] = np.full(rows, trial["trial_id"], dtype=object)
    for name, value in config.items():
        table[f"config/{name}"] = np.full(rows, value, dtype=object if isinstance(value, str)
                                          else None)
    table["final_test_error"] = np.full(rows, columns["test_error"][-1])
    table["final_val_error"] = np.full(rows, columns["val_error"][-1])
    table["budget_fraction"] = columns["epoch"] / epochs
    return table
