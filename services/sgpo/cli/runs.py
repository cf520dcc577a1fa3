"""`sgpo runs compare DIR...`: run folders side by side (tables, overlaid plots) without the experiment machinery.

The library is `sgpo.experiments.compare`, which reads the folders with the study loaders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "look at run folders: `sgpo runs compare DIR...` prints their tables and overlays their curves"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="runs_command", metavar="SUBCOMMAND", required=True)
    c = sub.add_parser(
        "compare",
        help="side-by-side table and overlaid plots of any run folders",
        description="Held-out accuracy (first, last, best, by level), completions sampled, all-negative and "
        "colored fractions of each run; plots of held-out accuracy against trainer step and completions "
        "sampled, and of the all-negative and colored fractions.",
    )
    c.add_argument(
        "run_dirs", nargs="+", type=Path, metavar="DIR", help="run folders written by `sgpo train`"
    )
    c.add_argument(
        "--out", type=Path, default=Path("runs/compare"), help="folder for the plots (default: runs/compare)"
    )
    c.add_argument("--no-plots", action="store_true", help="print the tables only")
    c.add_argument("--markdown", action="store_true", help="print the tables as Markdown")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sgpo.experiments.compare import CompareError, compare

    try:
        tables, pngs, _ = compare(list(args.run_dirs), None if args.no_plots else args.out)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    console = Console()
    for t in tables:
        if args.markdown:
            print(t.markdown())
        else:
            console.print(t.rich())
    if pngs:
        print("plots: " + ", ".join(str(p) for p in pngs))
    return 0
