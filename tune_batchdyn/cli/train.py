"""``tune-batchdyn train``: one trial with progress per epoch and a final summary."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from tune_batchdyn.cli._checks import check_records_file, check_writable_folder
from tune_batchdyn.errors import ConfigError

#: ``--batch-size`` when not given.
DEFAULT_BATCH_SIZE = 32


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train one trial and print its progress",
                              description="Train one trial (any strategy) and print one line per "
                                          "epoch, then a summary.")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--model", default="mlp")
    p.add_argument("--strategy", default="fixed",
                   help="a strategy spec: fixed, s32-to-512, s32-to-512-MS, gg, fb, abs, absa, "
                        "is, rmsgd, navigator, or JSON with 'name' and options")
    p.add_argument("--batch-size", type=int, default=None,
                   help="the batch size (default 32); dynamic-sampling schedules set their own")
    p.add_argument("--lr", type=float, default=0.1,
                   help="base learning rate, divided by --lr-decay-factor at each of the "
                        "--lr-milestones (default 0.1)")
    p.add_argument("--lr-milestones", default="0.5,0.75", metavar="FRACTIONS",
                   help="fractions of the epochs where the lr decays, comma-separated, or "
                        "'none' (default 0.5,0.75: the seeds' recipe)")
    p.add_argument("--lr-decay-factor", type=float, default=10.0,
                   help="the lr is divided by this at each milestone (default 10)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--measure-every", type=int, default=50,
                   help="iterations between C̄K/LK measurements (the seed: 50)")
    p.add_argument("--measures", default="fisher,quality,hessian",
                   help="comma list of fisher, quality, hessian; 'none' for none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, e.g. preset=large or n_train=4000 (repeatable)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--download", action="store_true",
                   help="let torchvision download the dataset into --data-dir")
    p.add_argument("--checkpoint-dir", default=None,
                   help="save the full state here every epoch and resume from it")
    p.add_argument("--out", default=None, help="write the per-epoch records (.csv or .parquet)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(func=main)


def parse_options(pairs: list[str], flag: str = "--dataset-option") -> dict[str, Any]:
    """``KEY=VALUE`` pairs of ``flag``; values are read as JSON where they parse (numbers),
    else strings."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {pair!r} is not accepted; use KEY=VALUE.")
        options[key] = _json_or_text(value)
    return options


def parse_config_overrides(pairs: list[str], flag: str = "--set") -> dict[str, Any]:
    """``FIELD=VALUE`` overrides of TrialConfig fields, as `parse_options` reads them; a list
    field (``measures``, ``lr_milestones``) also takes a comma list or one value
    (``measures=fisher,quality``, ``lr_milestones=0.5``; ``none`` for the empty list), as
    ``train --measures`` does."""
    import dataclasses

    from tune_batchdyn.train import TrialConfig

    options = parse_options(pairs, flag)
    for field in dataclasses.fields(TrialConfig):
        if field.name in options and isinstance(field.default, tuple):
            options[field.name] = _as_list(options[field.name])
    if isinstance(options.get("strategy"), list):  # a stage list, "[32,64,128]", is a spec
        options["strategy"] = next(pair.partition("=")[2] for pair in reversed(pairs)
                                   if pair.partition("=")[0] == "strategy")
    return options


def _as_list(value: Any) -> Any:
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",") if item.strip()]
        return [] if items == ["none"] else [_json_or_text(item) for item in items]
    return [value] if isinstance(value, (int, float)) else value


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_strategy_arg(text: str) -> str | dict[str, Any]:
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--strategy {text!r} is not valid JSON ({err.msg}).") from err
    return text


def parse_milestones(text: str) -> tuple[float, ...]:
    """``--lr-milestones``: ``0.5,0.75`` or ``none`` (TrialConfig checks the values)."""
    if text.strip().lower() in ("none", ""):
        return ()
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError as err:
        raise ConfigError(f"--lr-milestones {text!r} is not accepted; use fractions of the "
                          "epochs such as 0.5,0.75, or none.") from err


def decay_text(config: Any) -> str:
    """`` (/10 at 50%, 75% of the epochs)``, or nothing for a constant lr."""
    if not config.lr_milestones:
        return ""
    at = ", ".join(f"{m:.0%}" for m in config.lr_milestones)
    return f" (/{config.lr_decay_factor:g} at {at} of the epochs)"


def main(args: argparse.Namespace) -> int:
    from tune_batchdyn.records import trial_table, write_records
    from tune_batchdyn.strategies import parse_strategy
    from tune_batchdyn.train import TrialConfig, run_trial

    if args.out:
        check_records_file("--out", args.out)
    if args.checkpoint_dir:
        check_writable_folder("--checkpoint-dir", args.checkpoint_dir)
    measures = () if args.measures == "none" else tuple(m for m in args.measures.split(",") if m)
    strategy = parse_strategy_arg(args.strategy)
    uses_batch_size = parse_strategy(strategy).uses_batch_size
    if args.batch_size is not None and not uses_batch_size:
        print(f"note: --batch-size {args.batch_size} is not used: strategy {strategy!r} sets the "
              "batch size of every epoch", file=sys.stderr, flush=True)
    config = TrialConfig(
        dataset=args.dataset, model=args.model, strategy=strategy,
        lr=args.lr, batch_size=DEFAULT_BATCH_SIZE if args.batch_size is None else args.batch_size,
        epochs=args.epochs, momentum=args.momentum,
        lr_milestones=parse_milestones(args.lr_milestones), lr_decay_factor=args.lr_decay_factor,
        weight_decay=args.weight_decay, measure_every=args.measure_every, measures=measures,
        seed=args.seed, data_seed=args.data_seed, device=args.device, data_dir=args.data_dir,
        download=args.download, dataset_options=parse_options(args.dataset_option),
        checkpoint_dir=args.checkpoint_dir)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    print(f"training {config.dataset}/{config.model}  strategy={config.strategy}  "
          f"batch={config.batch_size if uses_batch_size else 'by the schedule'}  "
          f"lr={config.lr}{decay_text(config)}  epochs={config.epochs}", flush=True)
    start = time.perf_counter()
    show = error_format(config.dataset)
    trajectory = run_trial(config, reporter=None if args.quiet
                           else ProgressPrinter(config.epochs, show))
    elapsed = time.perf_counter() - start
    last = trajectory.iloc[-1]
    best = trajectory["test_error"].min()
    status = "DIVERGED" if bool(last["diverged"]) else "done"
    name = "risk" if config.dataset == "nqm" else "error"
    print(f"{status}: {int(last['epoch'])} epochs, {int(last['iterations'])} updates, "
          f"final test {name} {show(last['test_error'])} (best {show(best)}), "
          f"val {name} {show(last['val_error'])}, {elapsed:.1f} s")
    if args.out:
        write_records(trial_table("train", config.to_dict(), trajectory), args.out)
        print(f"records written to {args.out}")
    return 0


def error_format(dataset: str) -> Callable[[float], str]:
    """Errors as percentages; the NQM's "errors" are its expected risk, a loss, shown as is."""
    if dataset == "nqm":
        return lambda value: f"{value:.4g}"
    return lambda value: f"{100 * value:5.2f}%"


class ProgressPrinter:
    """A reporter printing one line per epoch."""

    def __init__(self, epochs: int, show: Callable[[float], str] | None = None) -> None:
        self.epochs = epochs
        self.show = show or error_format("")

    def __call__(self, record: dict[str, Any]) -> None:
        if record.get("done"):
            return
        measures = "  ".join(f"{name}={record[name]:.3g}" for name in
                             ("ck_bar", "lk", "quality_q", "hessian_top", "noise_scale")
                             if record[name] == record[name])
        print(f"epoch {record['epoch']:>3}/{self.epochs}  batch {record['batch_size']:>5}  "
              f"lr {record['lr']:.4g}  loss {record['train_loss']:.4f}  "
              f"train {self.show(record['train_error'])}  val {self.show(record['val_error'])}  "
              f"test {self.show(record['test_error'])}  {measures}  "
              f"[{record['wall_time_s']:.1f}s]", flush=True)
