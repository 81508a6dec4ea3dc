"""Critical batch size per optimiser on the noisy quadratic model (the seed's Fig. 3).

Prints steps to target risk 0.01 per batch size for SGD, heavy-ball momentum, preconditioned SGD
(P = H^-0.5) and SGD with an EMA of the iterates, each with its best learning rate, the
information-theoretic lower bound, and each optimiser's fitted critical batch size; then the
batch sizes worth sweeping for SGD. ``--plot FILE.png`` also draws the curves.

    python3 examples/nqm_critical_batch.py --plot nqm.png
    python3 examples/nqm_critical_batch.py --smoke          # the same path, small and fast (CI)
"""

from __future__ import annotations

import argparse
import time

from tune_batchdyn.cli import OneLineParser
from tune_batchdyn.cli.nqm import check_plot_path, format_table, write_plot
from tune_batchdyn.errors import ConfigError
from tune_batchdyn.nqm import NQM, suggest_batch_sizes

OPTIMIZERS = ("sgd", "momentum", "precond:0.5", "ema")


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", default=None, metavar="FILE.png")
    parser.add_argument("--smoke", action="store_true",
                        help="1,000 dims, batch sizes 1..1024, coarse grids")
    args = parser.parse_args()
    try:
        if args.plot:
            check_plot_path(args.plot)  # before the curves are computed, not after
        run(args)
    except ConfigError as err:  # one line and exit status 2, as the command line's
        parser.error(str(err))


def run(args: argparse.Namespace) -> None:
    """Compute and print the curves (and draw them with ``--plot``)."""
    if args.smoke:
        model, largest, lr_points, coefficient_points = NQM(dim=1000), 1024, 20, 5
    else:
        model, largest, lr_points, coefficient_points = NQM(), 65536, 100, 20
    batch_sizes = [2**k for k in range(largest.bit_length())]
    start = time.perf_counter()
    curves = [model.steps_curve(batch_sizes, name, 0.01, lr_points=lr_points,
                                coefficient_points=coefficient_points) for name in OPTIMIZERS]
    seconds = time.perf_counter() - start
    lower_bound = model.lower_bound_steps(batch_sizes, 0.01)
    print(f"{model!r}, target risk 0.01 ({seconds:.2f} s)")
    print(format_table(curves, lower_bound))
    b_crit = curves[0].critical_batch().b_crit
    print(f"SGD's critical batch size {b_crit:.0f}; worth sweeping: "
          f"{suggest_batch_sizes(noise_scale=b_crit)}")
    if args.plot:
        write_plot(curves, lower_bound, args.plot, "NQM, target risk 0.01")
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
