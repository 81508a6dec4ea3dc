"""``tune-batchdyn nqm``: steps to target vs batch size on the noisy quadratic model.

Prints, per batch size and optimiser, the fewest steps to the target risk with the best learning
rate (and momentum / averaging coefficient), the information-theoretic lower bound, and each
optimiser's fitted critical batch size; ``--plot FILE.png`` draws the seed's Fig. 3 (steps vs
batch size, log-log, the lower bound dashed).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

from tune_batchdyn.errors import ConfigError


def parse_batch_sizes(text: str) -> list[int]:
    """``'A..B'``: A, 2A, 4A, ... up to B (``1..65536``: the seed's 17 powers of two);
    otherwise a comma list of integers >= 1."""
    accepted = "use A..B (A, 2A, 4A, ... up to B, 1 <= A <= B) or a comma list of integers >= 1"
    first, dots, last = text.partition("..")
    try:
        if dots:
            low, high = int(first), int(last)
            if not 1 <= low <= high:
                raise ValueError
            sizes = []
            while low <= high:
                sizes.append(low)
                low *= 2
            return sizes
        sizes = [int(part) for part in text.split(",")]
    except ValueError as err:
        raise ConfigError(f"--batch-sizes {text!r} is not accepted; {accepted}.") from err
    if any(b < 1 for b in sizes):
        raise ConfigError(f"--batch-sizes {text!r} is not accepted; {accepted}.")
    return sizes


def parse_optimizers(text: str) -> list[str]:
    """A comma list of optimiser specs, each checked by ``parse_optimizer``."""
    from tune_batchdyn.nqm import parse_optimizer

    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ConfigError(f"--optimizers {text!r} is not accepted; use a comma list such as "
                          "sgd,momentum,precond:0.5,ema.")
    try:
        return [parse_optimizer(name).label for name in names]
    except ConfigError as err:
        raise ConfigError(f"--optimizers: {err}") from err


def parse_bins(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError as err:
        raise ConfigError(
            f"--bins {text!r} is not accepted; use an integer >= 1 or 'none'."
        ) from err


def check_plot_path(path: str, flag: str = "--plot") -> None:
    """Refuse a plot file matplotlib would not write (a folder that does not exist, an extension
    that names no format it saves) before anything is computed, not after."""
    from matplotlib.backend_bases import FigureCanvasBase

    if not Path(path).resolve().parent.is_dir():
        raise ConfigError(f"{flag} {path!r} is not accepted; its folder does not exist.")
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    if Path(path).suffix.lower().lstrip(".") not in formats:
        raise ConfigError(f"{flag} {path!r} is not accepted; end the file name in one of: "
                          f"{', '.join('.' + name for name in formats)}.")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "nqm", help="steps to target vs batch size on the noisy quadratic model",
        description="Steps to a target risk vs batch size on the noisy quadratic model (exact "
                    "expected risk, best lr per batch size), with critical batch sizes.")
    p.add_argument("--optimizers", default="sgd,momentum,precond:0.5,ema",
                   help="comma list of sgd, momentum, ema, precond:<p>, momentum+precond:<p>, "
                        "ema+precond:<p>")
    p.add_argument("--batch-sizes", default="1..65536",
                   help="A..B for A, 2A, 4A, ... up to B, or a comma list")
    p.add_argument("--target", type=float, default=0.01, help="target expected risk")
    p.add_argument("--dim", type=int, default=10_000)
    p.add_argument("--spectrum", default="1/i", help="'1/i' or '1/i^<a>'")
    p.add_argument("--noise", default="C=H", help="'C=H', 'C=I' or 'C=H^<q>'")
    p.add_argument("--bins", default="100", help="curvature bins, or 'none' for every dimension")
    p.add_argument("--x0-var", type=float, default=1.0)
    p.add_argument("--lr-points", type=int, default=100, help="learning rates on the grid")
    p.add_argument("--coefficient-points", type=int, default=20,
                   help="momentum / EMA coefficients on the grid")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="write the steps-vs-batch-size plot (log-log) here")
    p.set_defaults(func=main)


def _number(value: float, digits: int = 4) -> str:
    if not math.isfinite(value):
        return "-" if math.isnan(value) else "inf"
    return f"{value:.{digits}g}"


def format_table(curves: Sequence, lower_bound: Sequence[float]) -> str:
    """Rows per batch size: steps, best lr (and coefficient) per optimiser; B_crit, S_min."""
    header = ["batch"]
    for curve in curves:
        header += [f"{curve.optimizer} steps", "lr"] + (
            ["beta"] if not curve.optimizer.startswith(("sgd", "precond")) else [])
    header.append("lower bound")
    rows = [header]
    for j, batch in enumerate(curves[0].batch_sizes):
        row = [f"{batch:g}"]
        for curve in curves:
            row += [_number(curve.steps[j]), _number(curve.best_lr[j])]
            if not curve.optimizer.startswith(("sgd", "precond")):
                row.append(_number(curve.best_coefficient[j], digits=6))
        row.append(_number(lower_bound[j]))
        rows.append(row)
    for label, field in (("B_crit", "b_crit"), ("S_min", "s_min")):
        row = [label]
        for curve in curves:
            fit = curve.critical_batch()
            row += [_number(getattr(fit, field) if fit.success else math.nan), ""]
            if not curve.optimizer.startswith(("sgd", "precond")):
                row.append("")
        rows.append(row + [""])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True))
                     for row in rows)


def write_plot(curves: Sequence, lower_bound: Sequence[float], path: str, title: str) -> None:
    """The seed's Fig. 3: steps to target vs batch size, log-log, lower bound dashed black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.8))
    for curve in curves:
        axes.loglog(curve.batch_sizes, curve.steps, marker="o", markersize=3,
                    label=curve.optimizer)
    axes.loglog(curves[0].batch_sizes, lower_bound, "k--", label="lower bound")
    axes.set_xlabel("batch size")
    axes.set_ylabel("steps to target")
    axes.set_title(title)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    try:
        figure.savefig(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"--plot {path!r} could not be written ({err}).") from err
    finally:
        plt.close(figure)


def main(args: argparse.Namespace) -> int:
    from tune_batchdyn.nqm import NQM

    optimizers = parse_optimizers(args.optimizers)
    batch_sizes = parse_batch_sizes(args.batch_sizes)
    if args.plot:
        check_plot_path(args.plot)
    model = NQM(dim=args.dim, spectrum=args.spectrum, noise=args.noise,
                bins=parse_bins(args.bins), x0_var=args.x0_var)
    curves = [model.steps_curve(batch_sizes, name, args.target, lr_points=args.lr_points,
                                coefficient_points=args.coefficient_points)
              for name in optimizers]
    lower_bound = model.lower_bound_steps(batch_sizes, args.target)
    print(f"{model!r}, target risk {args.target:g}")
    print(format_table(curves, lower_bound))
    if args.plot:
        write_plot(curves, lower_bound, args.plot, f"NQM, target risk {args.target:g}")
        print(f"plot written to {args.plot}")
    return 0
