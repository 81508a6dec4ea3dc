"""Benchmark: how early, and how well, do the predictors rank configurations by final error?

    python benchmarks/predictor.py [RECORDS ...] [--fractions 0.1 0.25] [--n-boot 1000]
    python benchmarks/predictor.py --synthetic          # a planted table, to check the harness

RECORDS: records files (Parquet/CSV; default ``benchmarks/data/*.parquet``). Each (dataset,
model) in them is a *study*; within a study a *configuration* is (strategy, lr, batch_size), and
its seeds are its trials. Leave-one-configuration-out: for each configuration, every method is
fitted on the study's other configurations (all seeds of the held-out one left out together),
each held-out trial is cut at budget fraction f (its epochs up to f; a trial whose first epoch
is later than f is read at its first epoch) and predicted, and the configuration's prediction is
the mean over its seeds. Reported per study, then pooled (the configuration-weighted mean of the
studies' values):

- Spearman ρ between predicted and true final test error (mean over seeds), with a 95%
  bootstrap interval (configurations resampled, ``--n-boot`` times), for: ours
  (``FinalErrorPredictor``), knn5 (the seed's rule), val (current val error), powerlaw,
  config (the same GP on ln lr, ln B), and ablations of ours without C̄K, LK, Q/λmax, the val
  curve;
- the same among healthy configurations (no seed diverged);
- the noise ceiling: ρ between two seeds' final errors (mean over seed pairs);
- how often our 90% ``lower_bound`` (what ``MeasurePruner`` prunes by) held: held-out trials
  whose final error is at or above it, of those given a finite bound (about 90% expected);
- the seed's observations as rank correlations over fixed-batch configurations at the end
  (|B| vs C̄K, |B| vs LK, lr vs C̄K, lr vs LK) and rank stability (C̄K, LK at 10% vs end).

The last line: ``spearman@10%: ours=<ρ> knn5=<ρ> val=<ρ> powerlaw=<ρ> config=<ρ>`` (pooled).
BLAS threads are limited to one (the matrices are small; extra threads only contend).
"""

from __future__ import annotations

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from itertools import combinations  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.stats import rankdata  # noqa: E402

from tune_batchdyn.errors import ConfigError  # noqa: E402
from tune_batchdyn.predict import (  # noqa: E402
    FEATURE_GROUPS,
    FEATURES,
    ConfigOnlyPredictor,
    CurrentValErrorPredictor,
    FinalErrorPredictor,
    NearestNeighbourPredictor,
    PowerLawPredictor,
    TrialSet,
)
from tune_batchdyn.predict.trials import Trial  # noqa: E402
from tune_batchdyn.records import read_records  # noqa: E402

DEFAULT_DATA = Path(__file__).parent / "data"
MAIN_METHODS = ("ours", "knn5", "val", "powerlaw", "config")
#: The confidence of the lower bound whose coverage is reported (MeasurePruner's default).
BOUND_CONFIDENCE = 0.9


def _without(*groups: str) -> tuple[str, ...]:
    dropped = {name for group in groups for name in FEATURE_GROUPS[group]}
    return tuple(name for name in FEATURES if name not in dropped)


#: Method name -> a fresh, unfitted predictor.
METHODS: dict[str, Callable[[], object]] = {
    "ours": FinalErrorPredictor,
    "knn5": NearestNeighbourPredictor,
    "val": CurrentValErrorPredictor,
    "powerlaw": PowerLawPredictor,
    "config": ConfigOnlyPredictor,
    "ours-no-ck": lambda: FinalErrorPredictor(features=_without("ck_bar")),
    "ours-no-lk": lambda: FinalErrorPredictor(features=_without("lk")),
    "ours-no-q-hessian": lambda: FinalErrorPredictor(features=_without("curvature")),
    "ours-no-val-curve": lambda: FinalErrorPredictor(features=_without("val_curve")),
    "ours-no-measures": lambda: FinalErrorPredictor(
        features=_without("ck_bar", "lk", "curvature")),
}


def configuration(trial: Trial) -> tuple:
    """(strategy, lr, batch_size) of a trial, from its config (base lr / first batch if absent)."""
    return (trial.strategy, round(trial.base_lr, 12),
            int(trial.config.get("batch_size", trial.rows["batch_size"][0])))


def study(trial: Trial) -> str:
    return f"{trial.config.get('dataset', '?')}/{trial.config.get('model', '?')}"


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman ρ (average ranks for ties); NaN with fewer than 3 pairs or a constant side."""
    keep = np.isfinite(x) & np.isfinite(y)
    if np.count_nonzero(keep) < 3:
        return math.nan
    return _rank_corr(x[keep][None, :], y[keep][None, :])[0]


def _rank_corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Spearman ρ of two (b, n) arrays."""
    rx = rankdata(x, axis=1)
    ry = rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denominator = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (rx * ry).sum(axis=1) / denominator, np.nan)


def bootstrap_rho(x: np.ndarray, y: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """ρ on each bootstrap resample (rows of ``samples``: indices into x and y)."""
    keep = np.isfinite(x) & np.isfinite(y)
    if np.count_nonzero(keep) < 3:
        return np.full(len(samples), np.nan)
    x, y = np.where(keep, x, np.nan), np.where(keep, y, np.nan)
    xs, ys = x[samples], y[samples]
    valid = np.isfinite(xs) & np.isfinite(ys)
    if valid.all():
        return _rank_corr(xs, ys)
    return np.array([spearman(a[v], b[v]) for a, b, v in zip(xs, ys, valid, strict=True)])


class Study:
    """One (dataset, model): its configurations' trials, truths and bootstrap resamples."""

    def __init__(self, name: str, trials: TrialSet, n_boot: int, rng: np.random.Generator):
        self.name = name
        self.trials = trials
        groups: dict[tuple, list[Trial]] = {}
        for trial in trials:
            if trial.finished:
                groups.setdefault(configuration(trial), []).append(trial)
        self.configs = sorted(groups)
        self.groups = [groups[c] for c in self.configs]
        self.truth = np.array([np.mean([t.final_error for t in g]) for g in self.groups])
        self.healthy = np.array([not any(t.diverged for t in g) for g in self.groups])
        self.samples = rng.integers(0, len(self.configs), size=(n_boot, len(self.configs)))
        n_healthy = int(self.healthy.sum())
        self.healthy_samples = rng.integers(0, max(n_healthy, 1), size=(n_boot, n_healthy))

    def predictions(self, make: Callable[[], object], fraction: float) -> np.ndarray:
        """Leave-one-configuration-out predictions (mean over seeds) at ``fraction``."""
        means = np.full(len(self.configs), np.nan)
        for index, group in enumerate(self.groups):
            held_out = [t.trial_id for t in group]
            model = make().fit(self.trials.excluding(held_out))
            guesses = [model.predict(_cut(t, fraction)).mean for t in group]
            finite = [g for g in guesses if math.isfinite(g)]
            means[index] = np.mean(finite) if finite else np.nan
        return means

    def bound_coverage(self, fraction: float, confidence: float) -> tuple[int, int]:
        """How many held-out trials (configurations left out) ended at or above our
        ``lower_bound`` at ``confidence``, of those that got a finite bound."""
        held, given = 0, 0
        for group in self.groups:
            model = FinalErrorPredictor().fit(self.trials.excluding([t.trial_id for t in group]))
            for trial in group:
                bound = model.lower_bound(_cut(trial, fraction), confidence)
                if math.isfinite(bound):
                    given += 1
                    held += bool(trial.final_error >= bound)
        return held, given

    def noise_ceiling(self) -> tuple[float, np.ndarray]:
        """ρ between seeds' final errors across configurations (mean over seed pairs)."""
        n_seeds = min(len(g) for g in self.groups) if self.groups else 0
        if n_seeds < 2:
            return math.nan, np.full(len(self.samples), np.nan)
        finals = np.array([[t.final_error for t in sorted(g, key=lambda t: t.trial_id)[:n_seeds]]
                           for g in self.groups])
        pairs = list(combinations(range(n_seeds), 2))
        rho = np.nanmean([spearman(finals[:, i], finals[:, j]) for i, j in pairs])
        boot = np.nanmean([bootstrap_rho(finals[:, i], finals[:, j], self.samples)
                           for i, j in pairs], axis=0)
        return float(rho), boot

    def measure_at(self, name: str, fraction: float, fixed_only: bool = False) -> np.ndarray:
        """Mean over seeds of a curve at ``fraction`` per configuration (NaN where excluded)."""
        values = np.full(len(self.configs), np.nan)
        for index, (config, group) in enumerate(zip(self.configs, self.groups, strict=True)):
            if fixed_only and config[0] != "fixed":
                continue
            readings = [t.at(name, fraction) for t in group if not t.diverged]
            readings = [r for r in readings if math.isfinite(r)]
            values[index] = np.mean(readings) if readings else np.nan
        return values


def _cut(trial: Trial, fraction: float) -> Trial:
    if trial.fractions[0] > fraction + 1e-9:
        return trial.until(float(trial.fractions[0]))
    return trial.until(fraction)


def _pooled(values: list[tuple[float, np.ndarray, int]]) -> tuple[float, float, float]:
    """Configuration-weighted mean over studies of ρ and of its bootstrap replicates."""
    usable = [(rho, boot, n) for rho, boot, n in values if math.isfinite(rho)]
    if not usable:
        return math.nan, math.nan, math.nan
    weights = np.array([n for _, _, n in usable], dtype=float)
    rho = float(np.average([r for r, _, _ in usable], weights=weights))
    boot = np.average(np.array([b for _, b, _ in usable]), axis=0, weights=weights)
    boot = boot[np.isfinite(boot)]
    if not len(boot):
        return rho, math.nan, math.nan
    return rho, float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def _format(rho: float, lo: float, hi: float) -> str:
    return f"{rho:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def run(trials: TrialSet, fractions: Sequence[float], n_boot: int, seed: int,
        methods: Sequence[str] = tuple(METHODS), out=sys.stdout) -> dict[str, float]:
    """Print the report; returns the pooled ρ at the first fraction for each method."""
    rng = np.random.default_rng(seed)
    by_study: dict[str, list[Trial]] = {}
    for trial in trials:
        by_study.setdefault(study(trial), []).append(trial)
    studies = [Study(name, TrialSet(tuple(group), trials.target, trials.n_classes), n_boot, rng)
               for name, group in sorted(by_study.items())]
    pooled: dict[tuple, list] = {}
    for s in studies:
        print(f"study {s.name}: {len(s.configs)} configurations ({int(s.healthy.sum())} "
              f"healthy), {sum(len(g) for g in s.groups)} finished trials", file=out)
        header = "".join(f"rho@{f:.0%} [95% CI]".ljust(32) for f in fractions)
        print(f"  {'method':<30}{header}", file=out)
        for method in methods:
            cells, healthy_cells = [], []
            for fraction in fractions:
                start = time.perf_counter()
                predicted = s.predictions(METHODS[method], fraction)
                elapsed = time.perf_counter() - start
                for subset, samples, label, row in (
                        (np.ones(len(s.configs), bool), s.samples, "all", cells),
                        (s.healthy, s.healthy_samples, "healthy", healthy_cells)):
                    x, y = predicted[subset], s.truth[subset]
                    rho, boot = spearman(x, y), bootstrap_rho(x, y, samples)
                    pooled.setdefault((method, fraction, label), []).append(
                        (rho, boot, int(subset.sum())))
                    row.append(_format(rho, *_ci(boot)))
                cells[-1] += f" ({elapsed:.1f}s)"
            print(f"  {method:<30}" + "".join(c.ljust(32) for c in cells), file=out)
            print(f"  {method + ' (healthy)':<30}" + "".join(c.ljust(32) for c in healthy_cells),
                  file=out)
        coverage = [s.bound_coverage(f, BOUND_CONFIDENCE) for f in fractions]
        print(f"  {BOUND_CONFIDENCE:.0%} lower bound of ours held for " + ", ".join(
            f"{held}/{given} trials at {f:.0%}" for f, (held, given) in zip(
                fractions, coverage, strict=True)), file=out)
        ceiling, boot = s.noise_ceiling()
        pooled.setdefault(("noise-ceiling",), []).append((ceiling, boot, len(s.configs)))
        print(f"  {'noise ceiling (2 seeds)':<30}{_format(ceiling, *_ci(boot))}", file=out)
        _observations(s, pooled, out)
    print("pooled over studies (configuration-weighted):", file=out)
    for key, values in pooled.items():
        print(f"  {' '.join(str(k) for k in key):<34} {_format(*_pooled(values))}", file=out)
    first = fractions[0]
    result = {m: _pooled(pooled[(m, first, "all")])[0] for m in methods}
    summary = " ".join(f"{m}={result[m]:.3f}" for m in MAIN_METHODS if m in result)
    print(f"spearman@{first:.0%}: {summary}", file=out)
    return result


def _ci(boot: np.ndarray) -> tuple[float, float]:
    boot = boot[np.isfinite(boot)]
    if not len(boot):
        return math.nan, math.nan
    return float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def _observations(s: Study, pooled: dict, out) -> None:
    batch = np.array([c[2] for c in s.configs], dtype=float)
    lr = np.array([c[1] for c in s.configs], dtype=float)
    ck_end, lk_end = s.measure_at("ck_bar", 1.0, True), s.measure_at("lk", 1.0, True)
    ck_early, lk_early = s.measure_at("ck_bar", 0.1), s.measure_at("lk", 0.1)
    ck_all, lk_all = s.measure_at("ck_bar", 1.0), s.measure_at("lk", 1.0)
    rows = {
        "seed obs: |B| vs C̄K (end)": (batch, ck_end),
        "seed obs: |B| vs LK (end)": (batch, lk_end),
        "seed obs: lr vs C̄K (end)": (lr, ck_end),
        "seed obs: lr vs LK (end)": (lr, lk_end),
        "rank stability C̄K 10% vs end": (ck_early, ck_all),
        "rank stability LK 10% vs end": (lk_early, lk_all),
    }
    for label, (x, y) in rows.items():
        rho, boot = spearman(x, y), bootstrap_rho(x, y, s.samples)
        pooled.setdefault((label,), []).append((rho, boot, len(s.configs)))
        print(f"  {label:<30}{_format(rho, *_ci(boot))}", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", nargs="*", help="records files (default: benchmarks/data/)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25])
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--synthetic", action="store_true",
                        help="use a planted synthetic table (60 configurations x 3 seeds x 20 "
                             "epochs) instead of files")
    args = parser.parse_args(argv)
    try:
        if args.synthetic:
            from tune_batchdyn.predict.synthetic import synthetic_records
            records = synthetic_records(seed=args.seed)
        else:
            paths = args.records or sorted(DEFAULT_DATA.glob("*.parquet"))
            if not paths:
                raise ConfigError(f"no records files given and none in {DEFAULT_DATA}; pass "
                                  "files or --synthetic.")
            records = read_records(paths)
        start = time.perf_counter()
        run(TrialSet.from_records(records), args.fractions, args.n_boot, args.seed,
            args.methods)
        print(f"# {time.perf_counter() - start:.1f}s (machine shared with other jobs)",
              file=sys.stderr)
    except ConfigError as err:
        print(f"predictor benchmark: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
