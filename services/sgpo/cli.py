"""The one CLI: `sgpo <command>`. Each command lives in its own module, imported only when it runs.

A command module exposes `HELP`, `add_arguments(parser)` and `run(args) -> int`; it imports heavy
libraries (torch, transformers, vllm) inside `run`, so `sgpo --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# command name -> module implementing it
COMMANDS: dict[str, str] = {
    "pretrain": "sgpo.tasks.pretrain",
    "serve": "sgpo.serve",
    "verify": "sgpo.verifier.cli",
    "judge": "sgpo.judge.batch",
    "eval-judge": "sgpo.judge.evaluate",
    "eval": "sgpo.tasks.evaluate",
    "simulate": "sgpo.simulate",
    "train": "sgpo.launch.train",
    "record": "sgpo.launch.record",
    "data": "sgpo.launch.data",
    "experiment": "sgpo.launch.experiment",
}


def build_parser() -> argparse.ArgumentParser:
    from sgpo import __version__

    parser = argparse.ArgumentParser(
        prog="sgpo", description="SGPO: RL fine-tuning that learns from all-negative groups."
    )
    parser.add_argument("--version", action="version", version=f"sgpo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_path in COMMANDS.items():
        module = importlib.import_module(module_path)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
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
