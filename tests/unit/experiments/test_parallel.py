"""`--jobs N`: the scheduler runs real subprocesses N at a time, in dependency order, retries a run whose
port was taken, skips complete runs when invoked again. The runs are small Python programs that write a run
folder the way `sgpo train` does (eval.jsonl, summary.json)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from rich.console import Console

from sgpo.experiments.plan import RunSpec, Study
from sgpo.experiments.schedule import Runner

FAKE = r"""
import json, os, sys, time
from pathlib import Path
from sgpo.common.ports import free_port
folder, journal, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
with journal.open("a") as j:
    j.write(json.dumps({"run": folder.name, "event": "start", "t": time.time(),
                        "range": os.environ.get("SGPO_PORT_RANGE"), "port": free_port()}) + "\n")
marker = folder.parent.parent / f"{folder.name}.tried"
if mode == "fail" or (mode == "port" and not marker.exists()):
    marker.touch()
    print("grpc: Failed to add port: Address already in use" if mode == "port" else "boom")
    with journal.open("a") as j:
        j.write(json.dumps({"run": folder.name, "event": "end", "t": time.time()}) + "\n")
    sys.exit(1)
(folder / "eval.jsonl").write_text(json.dumps({"step": 0, "overall": 0.25, "accuracy": {}}) + "\n")
time.sleep(0.4)
(folder / "summary.json").write_text(json.dumps({"interrupted": False}))
with journal.open("a") as j:
    j.write(json.dumps({"run": folder.name, "event": "end", "t": time.time()}) + "\n")
"""


def _spec(out: Path, name: str, mode: str = "ok", after: tuple[str, ...] = ()) -> RunSpec:
    argv = (str(out / "runs" / name), str(out / "journal.jsonl"), mode)
    return RunSpec(name, "sgpo", 0, argv, kind="score", after=after, program=(sys.executable, "-c", FAKE))


def _run(study: Study, jobs: int) -> tuple[int, str, Runner]:
    buf = io.StringIO()
    runner = Runner(
        study,
        Console(file=buf, width=200),
        poll_s=0.05,
        jobs=jobs,
        stagger_s=0.0,
        status_every_s=0.2,
        retries=1,
    )
    return runner.execute(), buf.getvalue(), runner


def test_parallel_runs_dependencies_retry_and_resume(tmp_path: Path) -> None:
    runs = [
        _spec(tmp_path, "a"),
        _spec(tmp_path, "b"),
        _spec(tmp_path, "c"),
        _spec(tmp_path, "after-a", after=("a",)),
        _spec(tmp_path, "port", mode="port"),
        _spec(tmp_path, "bad", mode="fail"),
        _spec(tmp_path, "after-bad", after=("bad",)),
    ]
    study = Study("tune", tmp_path, runs, {})
    code, log, runner = _run(study, jobs=3)
    assert code == 1, log  # `bad` failed
    events = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    running, most = 0, 0
    for e in sorted(events, key=lambda e: (e["t"], e["event"] == "start")):
        running += 1 if e["event"] == "start" else -1
        most = max(most, running)
    assert 2 <= most <= 3  # in parallel, never more than --jobs
    # runs at once draw their ports from disjoint ranges (gRPC binds with SO_REUSEPORT: a shared port would
    # not fail, it would join two runs)
    live: dict[str, str] = {}
    for e in sorted(events, key=lambda e: (e["t"], e["event"] == "start")):
        if e["event"] == "end":
            live.pop(e["run"], None)
            continue
        lo, hi = map(int, e["range"].split("-"))
        assert lo <= e["port"] < hi
        assert e["range"] not in live.values(), (e, live)
        live[e["run"]] = e["range"]
    end_a = next(e["t"] for e in events if e["run"] == "a" and e["event"] == "end")
    start_after = next(e["t"] for e in events if e["run"] == "after-a" and e["event"] == "start")
    assert start_after >= end_a
    starts = [e["run"] for e in events if e["event"] == "start"]
    assert starts.count("port") == 2  # retried once
    assert starts.count("bad") == 2  # any failure: retried once, then reported
    assert "port: failed (a port was taken); retrying" in log and "after-bad not run" in log
    assert "after-bad" not in {e["run"] for e in events}
    assert {n for n, _ in runner.failed} == {"bad", "after-bad"}
    assert (tmp_path / "runs" / "port" / "summary.json").is_file()
    assert any(p.name.startswith("port-") for p in (tmp_path / "attempts").iterdir())  # the failed try, kept
    assert "done ·" in log and "running" in log  # progress lines

    # Invoked again: the complete runs are skipped; only the failed one and its dependant run again.
    (tmp_path / "journal.jsonl").unlink()
    code, log, _ = _run(study, jobs=3)
    assert "5 already complete (skipped), 2 to run" in log
    again = [json.loads(x) for x in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert [e["run"] for e in again if e["event"] == "start"] == ["bad", "bad"]
