"""The one CLI: `sgpo <command>`, the entry points apart from the libraries.

Each command is one module of this package (`sgpo.cli.<command>`), a thin layer: it exposes `HELP`,
`add_arguments(parser)` and `run(args) -> int`, turns the parsed arguments into typed library calls, and
imports heavy libraries (torch, transformers, vllm) inside `run`, so `sgpo --help` stays fast. No library
module imports argparse or this package (the import-linter contracts in pyproject.toml say so).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")

# command name -> module implementing it
COMMANDS: dict[str, str] = {
    "pretrain": "sgpo.cli.pretrain",
    "serve": "sgpo.cli.serve",
    "verify": "sgpo.cli.verify",
    "judge": "sgpo.cli.judge",
    "eval-judge": "sgpo.cli.eval_judge",
    "eval": "sgpo.cli.eval",
    "simulate": "sgpo.cli.simulate",
    "train": "sgpo.cli.train",
    "record": "sgpo.cli.record",
    "data": "sgpo.cli.data",
    "experiment": "sgpo.cli.experiment",
    "runs": "sgpo.cli.runs",
}


def options(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """A library's typed options (a dataclass) from the parsed arguments of the same names."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if f.init and hasattr(args, f.name)}  # type: ignore[arg-type]
    return cls(**{**values, **overrides})


def build_parser() -> argparse.ArgumentParser:
    from sgpo import __version__

    parser = argparse.ArgumentParser(
        prog="sgpo", description="SGPO: RL fine-tuning that learns from all-negative groups."
    )
    parser.add_argument("--version", action="version", version=f"sgpo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_path in COMMANDS.items():
        module = importlib.import_module(module_path)
        # `help` is %-formatted by argparse, `description` is printed as is
        p = sub.add_parser(name, help=module.HELP, description=module.HELP.replace("%%", "%"))
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
