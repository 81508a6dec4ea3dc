"""Every batch-size strategy on one dataset, one table.

    python examples/strategies_compare.py                       # digits/mlp, 20 epochs
    python examples/strategies_compare.py --dataset synthetic --model cnn
    python examples/strategies_compare.py --smoke               # 6 epochs, the same code path

Each strategy trains the same model from the same seed with the same epoch budget; the table
shows the final test error, the parameter updates (fewer: faster on parallel hardware), the
last epoch's batch size and the wall time. The navigator runs last, steered toward the optimum
region of the (C̄K, LK) plane that the other strategies' runs outline.
"""

from __future__ import annotations

import math

import pandas as pd

from tune_batchdyn.cli import OneLineParser
from tune_batchdyn.errors import ConfigError
from tune_batchdyn.predict import OptimumRegion
from tune_batchdyn.records import trial_table
from tune_batchdyn.train import TrialConfig, run_trial
from tune_batchdyn.train.engine import check_user_code

#: RMSGD adapts its per-layer rates from η(0); the seed's η(0) is 0.03, not the shared lr.
STRATEGIES = ("fixed", "s32-to-512", "s32-to-512-MS", "s512-to-32", "gg", "fb", "abs", "absa",
              "is", {"name": "rmsgd", "initial_lr": 0.03})


def navigator_spec(records: pd.DataFrame) -> dict:
    """Steer toward the optimum region of the trials run so far (centre and radius in ln)."""
    region = OptimumRegion(fraction=1.0).fit(records)
    (ck_lo, ck_hi), (lk_lo, lk_hi) = region.extent_
    radius = max(0.25, 0.5 * max(math.log(ck_hi / ck_lo), math.log(lk_hi / lk_lo)))
    return {"name": "navigator", "centre": list(region.centre_log_), "radius": radius}


def compare(dataset: str, model: str, epochs: int, batch_size: int, lr: float,
            strategies: tuple[str | dict, ...]) -> pd.DataFrame:
    rows, tables = [], []
    for strategy in [*strategies, "navigator"]:
        if strategy == "navigator":
            strategy = navigator_spec(pd.concat(tables, ignore_index=True))
        config = TrialConfig(dataset=dataset, model=model, strategy=strategy, epochs=epochs,
                             batch_size=batch_size, lr=lr, measures=("fisher",))
        trajectory = run_trial(config)
        tables.append(trial_table(str(len(tables)), config.to_dict(), trajectory))
        last = trajectory.iloc[-1]
        name = strategy if isinstance(strategy, str) else strategy["name"]
        rows.append({"strategy": name, "test_error_%": round(100 * last["test_error"], 2),
                     "updates": int(last["iterations"]), "final_batch": int(last["batch_size"]),
                     "ck_bar": round(last["ck_bar"], 2), "lk": round(last["lk"], 3),
                     "wall_s": round(last["wall_time_s"], 1), "diverged": bool(last["diverged"])})
        print(f"{name:>14}: test {rows[-1]['test_error_%']:.2f}%", flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--smoke", action="store_true", help="6 epochs (CI)")
    args = parser.parse_args()
    epochs = 6 if args.smoke else args.epochs
    if args.dataset == "nqm":  # found only once the first such strategy would start
        parser.error("--dataset nqm is not accepted: strategies such as abs steer by a "
                     "network's measures, which the noisy quadratic model has none of; use a "
                     "network's dataset (`tune-batchdyn nqm` compares optimisers on the NQM).")
    try:
        # the fields every strategy shares, checked (a dataset or model of yours loaded and
        # probed) once before the first one trains
        check_user_code(TrialConfig(dataset=args.dataset, model=args.model, epochs=epochs,
                                    batch_size=args.batch_size, lr=args.lr,
                                    measures=("fisher",)))
        table = compare(args.dataset, args.model, epochs, args.batch_size, args.lr, STRATEGIES)
    except ConfigError as err:  # one line and exit status 2, as the command line's
        parser.error(str(err))
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
