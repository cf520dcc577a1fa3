"""What the folders of a study say: each run's status (missing, incomplete, interrupted, complete), whether
a complete run was made by the planned command, whether a run is still being trained."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from sgpo.experiments.plan import Study


def run_status(run_dir: Path) -> str:
    """`complete` (summary.json says not interrupted), `interrupted`, `incomplete` (started, no summary:
    crashed, killed or still running) or `missing`."""
    if not run_dir.is_dir():
        return "missing"
    path = run_dir / "summary.json"
    if path.is_file():
        try:
            summary = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            return "incomplete"
        return "interrupted" if summary.get("interrupted", True) else "complete"
    return "incomplete"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError, ValueError):
        return None


def read_identity(folder: Path) -> dict[str, Any] | None:
    return read_json(folder / "experiment.json")


def pid_running(pid: int | None, needle: str) -> bool:
    """Whether process `pid` is alive and its command line contains `needle` (guards against pid reuse)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return needle in cmdline


def classify(study: Study) -> dict[str, str]:
    """Each run's status: `done` (complete, same command), `todo`, or an error message (a complete run made by
    a different command, or a run still running in a process that outlived its experiment)."""
    out: dict[str, str] = {}
    for spec in study.runs:
        folder = study.out / "runs" / spec.name
        status = run_status(folder)
        ident = read_identity(folder) if status != "missing" else None
        if status == "complete":
            if ident is None:
                out[spec.name] = "done"  # made outside `sgpo experiment`: trusted as is
            elif ident.get("argv") != list(spec.argv) or ident.get("config") != spec.config:
                out[spec.name] = (
                    f"{folder} holds a complete run made by a different command:\n  was: "
                    f"{shlex.join(['sgpo', *ident.get('argv', [])])}\n  now: {spec.command()}\n"
                    "use another --out, or delete that folder to redo it"
                )
            else:
                out[spec.name] = "done"
        elif status == "incomplete" and ident and pid_running(ident.get("pid"), str(folder)):
            out[spec.name] = f"{folder} is still being trained by pid {ident['pid']}; stop it or wait for it"
        else:
            out[spec.name] = "todo"
    return out


def record_status(study: Study, runs: dict[str, str]) -> str:
    """The offline recording: `done`, `todo` (none, or a partial one), or an error message (recorded by a
    different command, or offline runs already trained on an earlier recording that would be replaced)."""
    rec = study.record
    if rec is None:
        return "done"
    ident = read_json(rec.folder / "record.json")
    if ident is not None and rec.path.is_file():
        if ident.get("argv") != list(rec.argv):
            return (
                f"{rec.folder} holds a recording made by a different command:\n  was: "
                f"{shlex.join(['sgpo', *ident.get('argv', [])])}\n  now: {rec.command()}\n"
                "use another --out, or delete that folder (and the offline runs) to redo it"
            )
        return "done"
    trained = [name for name, s in runs.items() if s == "done"]
    if trained:
        return (
            f"offline runs {', '.join(trained)} were trained on a recording that is gone or incomplete: delete"
            " them too, or use another --out"
        )
    return "todo"
