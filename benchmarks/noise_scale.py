"""The gradient noise scale's two estimators against a reference fitted over batch sizes.

McCandlish et al. (2018): E|G_b|² = |G|² + tr Σ / b for the mean-loss gradient G_b of b
independent samples. The *reference* fits that line to |G_b|² averaged over ``--draws``
batches of each size in ``--sizes`` (each batch through its own forward and backward, so
batch-norm normalises by that batch, as in training). The two estimators, on batches of
B = ``--batch``, averaged over ``--batches`` of them:

- *Gram* (b = 1 against B): `gradient_noise_scale`, free from the C̄K/LK Gram; it assumes
  independent per-sample gradients, which batch-norm in training mode couples;
- *two-batch* (b = B/2 against B): `coupled_noise_scale`, what trials use for such models.

On the batch-norm CNN the Gram's tr Σ runs high and its |G|² low (B_simple too high, +inf
when |G|² <= 0), while the two-batch estimate follows the reference with more scatter; on the
MLP (no batch-norm) both follow it, the Gram's with less scatter (it uses every sample),
which is why trials keep it there. Measured along a short SGD run on the synthetic data:

    python benchmarks/noise_scale.py                       # cnn and mlp, 0..400 steps, 25 s
    python benchmarks/noise_scale.py --models cnn --steps 0 200
    python benchmarks/noise_scale.py --models resnet20 --steps 0 150 --device cuda

Last line, for the batch-norm CNN over the measured points: the medians of each estimator's
tr Σ over the reference's, and the share of its single-batch |G|² that were not positive.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tune_batchdyn.measures import coupled_noise_scale, gradient_noise_scale, per_sample_gram
from tune_batchdyn.measures.noise import batch_gradient_sq_norm
from tune_batchdyn.train.data import load_data
from tune_batchdyn.train.models import build_model


def reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sizes: list[int], draws: int,
              generator: torch.Generator) -> tuple[float, float]:
    """(tr Σ, |G|²) from a least-squares fit of mean |G_b|² = |G|² + tr Σ/b over ``sizes``."""
    rows, values = [], []
    for size in sizes:
        norms = [batch_gradient_sq_norm(model, x[idx], y[idx])
                 for idx in (torch.randint(0, len(x), (size,), generator=generator)
                             for _ in range(draws))]
        rows.append([1.0, 1.0 / size])
        values.append(statistics.fmean(norms))
    gradient_sq_norm, trace = np.linalg.lstsq(np.array(rows), np.array(values), rcond=None)[0]
    return float(trace), float(gradient_sq_norm)


def estimates(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, batches: int,
              generator: torch.Generator) -> dict[str, list[tuple[float, float]]]:
    """(tr Σ, |G|²) of each estimator on ``batches`` batches of ``batch`` samples."""
    found: dict[str, list[tuple[float, float]]] = {"gram": [], "two-batch": []}
    for _ in range(batches):
        idx = torch.randint(0, len(x), (batch,), generator=generator)
        gram = per_sample_gram(model, x[idx], y[idx])
        found["gram"].append(gradient_noise_scale(gram)[:2])
        found["two-batch"].append(coupled_noise_scale(gram, model, x[idx], y[idx])[:2])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "mlp"])
    parser.add_argument("--steps", nargs="+", type=int, default=[0, 200, 400],
                        help="SGD steps (batch 128, lr 0.05, momentum 0.9) before each point")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--sizes", nargs="+", type=int, default=[16, 32, 64, 128, 256])
    parser.add_argument("--draws", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda: data and models live there")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_data("synthetic", device=args.device)
    x, y = data.train_x, data.train_y
    print(f"synthetic data on {args.device}, B = {args.batch}; reference: sizes {args.sizes}, "
          f"{args.draws} batches each; estimators: mean of {args.batches} batches")
    print(f"{'model':<6} {'step':>5} {'ref trΣ':>9} {'ref |G|²':>9} {'ref Bsimple':>11} | "
          f"{'estimator':<9} {'trΣ/ref':>7} {'|G|²':>9} {'|G|²<=0':>7} {'Bsimple':>9}")
    summary: dict[str, list[float]] = {"gram": [], "two-batch": [], "gram_neg": [],
                                       "two-batch_neg": []}
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(name, data.input_shape, data.num_classes).to(args.device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        generator = torch.Generator().manual_seed(1)
        done = 0
        for steps in sorted(args.steps):
            for _ in range(steps - done):
                idx = torch.randint(0, len(x), (args.batch,), generator=generator)
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                optimizer.step()
            done = steps
            trace, g2 = reference(model, x, y, args.sizes, args.draws, generator)
            for label, pairs in estimates(model, x, y, args.batch, args.batches,
                                          generator).items():
                mean_trace = statistics.fmean(p[0] for p in pairs)
                mean_g2 = statistics.fmean(p[1] for p in pairs)
                negative = sum(p[1] <= 0 for p in pairs) / len(pairs)
                b_simple = mean_trace / mean_g2 if mean_g2 > 0 else float("inf")
                print(f"{name:<6} {steps:>5} {trace:>9.4g} {g2:>9.4g} {trace / g2:>11.4g} | "
                      f"{label:<9} {mean_trace / trace:>7.2f} {mean_g2:>9.4g} "
                      f"{negative:>7.0%} {b_simple:>9.4g}")
                if name == "cnn":
                    summary[label].append(mean_trace / trace)
                    summary[f"{label}_neg"].append(negative)
    if summary["gram"]:
        print(f"cnn: trace_ratio_gram={statistics.median(summary['gram']):.2f} "
              f"trace_ratio_two_batch={statistics.median(summary['two-batch']):.2f} "
              f"nonpositive_g2_gram={statistics.fmean(summary['gram_neg']):.2f} "
              f"nonpositive_g2_two_batch={statistics.fmean(summary['two-batch_neg']):.2f}")


if __name__ == "__main__":
    main()
