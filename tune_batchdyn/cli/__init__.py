"""The ``tune-batchdyn`` command: every module of this package with a ``register`` function is a
sub-command.

``register(subparsers)`` adds the sub-command's parser and sets ``func=<callable(args) -> int>``.
Bad arguments exit with status 2 and one line, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.user_code import import_from_working_directory

#: The order ``--help`` lists sub-commands in; any other sub-command module follows, by name.
ORDER: tuple[str, ...] = ("train", "sweep", "record", "replay", "plot", "nqm")


def command_modules() -> list[str]:
    """Names of the sub-command modules of this package, in ``ORDER`` first."""
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse's signature
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="tune-batchdyn",
        description="Batch-size and learning-rate search steered by training-dynamics measures.",
    )
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=OneLineParser, required=True
    )
    for name in command_modules():
        module = importlib.import_module(f"tune_batchdyn.cli.{name}")
        if hasattr(module, "register"):
            module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import_from_working_directory()
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"tune-batchdyn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tune-batchdyn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
