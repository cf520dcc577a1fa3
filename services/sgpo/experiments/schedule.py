"""Running a study: its runs one at a time as `sgpo train` subprocesses, each followed from its folder
(progress, stall detection, ETA); interrupted and crashed runs are moved aside and run again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sgpo.experiments.plan import RecordSpec, RunSpec, Study
from sgpo.experiments.state import classify, read_json, record_status, run_status


def _fmt_duration(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Tail:
    """New complete JSON lines of a growing file."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        rows = []
        for line in data[:end].splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows


class Follow:
    """A run's progress from its folder: trainer step, completions its steps consumed, last evaluation."""

    def __init__(self, folder: Path, batch_groups: int) -> None:
        self.evals, self.metrics, self.groups = (
            Tail(folder / "eval.jsonl"),
            Tail(folder / "metrics.jsonl"),
            Tail(folder / "groups.jsonl"),
        )
        self.batch_groups = batch_groups
        self.group_sampled: list[int] = []
        self.step, self.reward, self.last_eval = 0, float("nan"), float("nan")
        self.last_change = time.monotonic()

    @property
    def sampled(self) -> int:
        """Completions sampled to make the groups trainer steps 1..step consumed (queue order)."""
        n = min(self.step * self.batch_groups, len(self.group_sampled))
        return self.group_sampled[n - 1] if n > 0 else 0

    def poll(self) -> list[dict[str, Any]]:
        """Update; return the new evaluation records."""
        groups, metrics, new = self.groups.read(), self.metrics.read(), self.evals.read()
        if groups or metrics or new:
            self.last_change = time.monotonic()
        self.group_sampled += [int(g.get("sampled") or 0) for g in groups]
        for m in metrics:
            self.step = max(self.step, int(m.get("step", 0)))
            self.reward = float(m.get("reward_mean", self.reward))
        for e in new:
            self.last_eval = float(e.get("overall", float("nan")))
        return new


class Runner:
    def __init__(
        self,
        study: Study,
        console: Any,
        sgpo: tuple[str, ...] = (sys.executable, "-m", "sgpo.cli"),
        poll_s: float = 1.0,
        stall_timeout: float = 900.0,
        jobs: int = 1,
        stagger_s: float = 3.0,
        status_every_s: float = 30.0,
        retries: int = 1,
    ) -> None:
        """`sgpo`: how to run the CLI (this interpreter by default, same as the console script). `jobs`: runs
        at once (each `sgpo train` has its own embedded Redis and free ports); starts `stagger_s` apart, so two
        launchers do not pick ports in the same instant (a run that still fails to bind is retried)."""
        self.study, self.console, self.sgpo, self.poll_s = study, console, tuple(sgpo), poll_s
        self.stall_timeout = stall_timeout
        self.jobs, self.stagger_s, self.status_every_s = max(1, jobs), stagger_s, status_every_s
        self.retries = retries
        """Parallel runs: a failed run is started again this many times (a service that crashed while starting
        under load should not hold a study up); a port taken by another launcher, twice more."""
        self.durations: list[float] = []
        self.failed: list[tuple[str, str]] = []
        self._sigterm = False

    # -- environment ----------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "SGPO_REDIS_URL"}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _on_sigterm(self, *_: object) -> None:
        self._sigterm = True
        raise KeyboardInterrupt

    def _spawn(
        self,
        argv: tuple[str, ...],
        log_path: Path,
        program: tuple[str, ...] = (),
        ports: tuple[int, int] | None = None,
    ) -> subprocess.Popen[bytes]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = self.env()
        if ports is not None:
            env["SGPO_PORT_RANGE"] = f"{ports[0]}-{ports[1]}"
        if program:  # another interpreter (TRL's venv): it imports this very sgpo
            import sgpo

            services = str(Path(sgpo.__file__).resolve().parents[1])
            env["PYTHONPATH"] = os.pathsep.join(p for p in (services, env.get("PYTHONPATH", "")) if p)
        with log_path.open("ab") as log:
            # A session of its own: Ctrl-C reaches only this process, which stops the run with one SIGTERM
            # (`sgpo train` treats it as Ctrl-C and shuts its services down cleanly).
            return subprocess.Popen(
                [*(program or self.sgpo), *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def _stop(self, proc: subprocess.Popen[bytes], what: str, redo: bool = True) -> None:
        if proc.poll() is not None:
            return
        later = "; it will be redone next time" if redo else ""
        self.console.print(f"[yellow]stopping {what} (pid {proc.pid}){later}...[/]")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=180)
        except (KeyboardInterrupt, subprocess.TimeoutExpired):
            self.console.print(
                f"[red]not waiting any longer: {what} (pid {proc.pid}) may still be stopping[/]"
            )

    # -- the study --------------------------------------------------------------------------------------
    def execute(self) -> int:
        import fcntl

        study, console = self.study, self.console
        study.out.mkdir(parents=True, exist_ok=True)
        lock = (study.out / ".experiment.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print(f"[red]error:[/] another `sgpo experiment` is running on {study.out}")
            return 2
        old = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            status = classify(study)
            record = record_status(study, status)
            errors = [v for v in (*status.values(), record) if v not in ("done", "todo")]
            if errors:
                for e in errors:
                    console.print(f"[red]error:[/] {e}", soft_wrap=True, highlight=False)
                return 2
            write_plan(study)
            if study.record is not None and not self.ensure_record(study.record):
                console.print("[red]the recording failed: no offline run can start[/]")
                return 1
            todo = [r for r in study.runs if status[r.name] == "todo"]
            done = len(study.runs) - len(todo)
            console.print(
                f"[bold]{study.name}[/]: {len(study.runs)} runs in {study.out / 'runs'}; "
                f"{done} already complete (skipped), {len(todo)} to run"
            )
            if self.jobs > 1:
                self.run_parallel(todo, {n for n, v in status.items() if v == "done"})
            else:
                failed: set[str] = set()
                for i, spec in enumerate(todo):
                    blocked = [d for d in spec.after if d in failed]
                    if blocked:
                        self.failed.append((spec.name, f"not run: {', '.join(blocked)} failed"))
                        failed.add(spec.name)
                        continue
                    n_failed = len(self.failed)
                    self.run_one(spec, i, len(todo))
                    if len(self.failed) > n_failed:
                        failed.add(spec.name)
        except KeyboardInterrupt:
            console.print(
                "[yellow]interrupted: run the same command again to continue (complete runs are kept)[/]"
            )
            return 130
        finally:
            signal.signal(signal.SIGTERM, old)
            lock.close()
        if self.failed:
            console.print(f"[red]{len(self.failed)} run(s) failed:[/]")
            for name, log in self.failed:
                console.print(f"  {name}: log {log}")
        return 1 if self.failed else 0

    def ensure_record(self, rec: RecordSpec) -> bool:
        if record_status(self.study, {}) == "done":
            self.console.print(f"recorded groups: {rec.path} (already recorded; skipped)")
            return True
        rec.folder.mkdir(parents=True, exist_ok=True)
        if rec.path.exists():
            rec.path.unlink()  # a partial recording
        if (rec.folder / "record.d").exists():
            shutil.rmtree(rec.folder / "record.d")  # its logs, config and group stats
        log = rec.folder / "record.log"
        self.console.print(f"recording groups from the initial policy: {rec.command()}\n  log: {log}")
        total = int(rec.argv[rec.argv.index("--prompts") + 1])
        tail = Tail(rec.folder / "record.d" / "groups.jsonl")
        count = 0
        t0 = time.monotonic()
        proc = self._spawn(rec.argv, log)
        try:
            while proc.poll() is None:
                time.sleep(self.poll_s)
                new = len(tail.read())
                if new:
                    count += new
                    self.console.print(f"  recorded {count}/{total} groups ({time.monotonic() - t0:.0f}s)")
        except KeyboardInterrupt:
            self._stop(proc, "the recording")
            raise
        if proc.returncode != 0 or not rec.path.is_file():
            self.console.print(
                f"[red]sgpo record exited with {proc.returncode}[/]; log {log}:\n{tail_text(log)}"
            )
            return False
        (rec.folder / "record.json").write_text(
            json.dumps({**rec.identity(), "seconds": time.monotonic() - t0}, indent=2)
        )
        return True

    def _prepare(self, spec: RunSpec) -> tuple[Path, Path, dict[str, Any]]:
        """The run's fresh folder (an earlier attempt moved to OUT/attempts), its config, experiment.json."""
        study, console = self.study, self.console
        folder = study.out / "runs" / spec.name
        if folder.exists():  # interrupted or crashed: keep it for diagnosis, start afresh
            dest = study.out / "attempts" / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            n = 1
            while dest.exists():
                dest, n = dest.with_name(f"{dest.name}-{n}"), n + 1
            dest.parent.mkdir(parents=True, exist_ok=True)
            folder.rename(dest)
            console.print(f"[yellow]{spec.name}: an earlier attempt did not complete; moved it to {dest}[/]")
        folder.mkdir(parents=True)
        if spec.config is not None:
            cfg = study.out / "configs" / f"{spec.name}.toml"
            cfg.parent.mkdir(parents=True, exist_ok=True)
            cfg.write_text(spec.config)
        ident = {**spec.identity(), "study": study.name, "started": time.time()}
        (folder / "experiment.json").write_text(json.dumps(ident, indent=2))
        return folder, folder / ("train.log" if spec.kind == "train" else f"{spec.kind}.log"), ident

    def run_one(self, spec: RunSpec, index: int, total: int) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        study, console = self.study, self.console
        folder, log, ident = self._prepare(spec)
        console.print(
            f"[bold][{index + 1}/{total}] {spec.name}[/] · started {time.strftime('%H:%M:%S')} · "
            + self._eta(total - index)
        )
        console.print("  " + spec.command(), soft_wrap=True, markup=False, highlight=False)
        console.print(f"  log: {log}", soft_wrap=True, markup=False, highlight=False)
        t0 = time.monotonic()
        proc = self._spawn(spec.argv, log, spec.program)
        (folder / "experiment.json").write_text(json.dumps({**ident, "pid": proc.pid}, indent=2))
        follow = Follow(folder, study.batch_groups)
        stalled = False
        budget, cap = study.budget, study.steps
        cols = [
            TextColumn(f"  {spec.name}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
        ]

        def show_evals(printer: Any) -> None:
            for e in follow.poll():
                at = f" · sampled {e['sampled']}" if e.get("sampled") is not None else ""
                accs = " ".join(f"{k}:{v:.2f}" for k, v in e.get("accuracy", {}).items())
                printer.print(
                    f"  {spec.name} eval @ step {e.get('step')}{at}: overall {e.get('overall', float('nan')):.3f}"
                    f" | {accs}",
                    soft_wrap=True,
                    highlight=False,
                )

        try:
            with Progress(*cols, console=console, transient=True, refresh_per_second=1) as progress:
                task = progress.add_task(spec.name, total=1.0, info="starting services...")
                while proc.poll() is None:
                    time.sleep(self.poll_s)
                    show_evals(progress.console)
                    idle = time.monotonic() - follow.last_change
                    if spec.kind == "train" and self.stall_timeout and idle > self.stall_timeout:
                        stalled = True
                        progress.console.print(
                            f"  [red]{spec.name} stalled:[/] nothing new in its folder for {idle:.0f}s "
                            f"(step {follow.step}, {len(follow.group_sampled)} groups queued); stopping it"
                        )
                        self._stop(proc, spec.name, redo=False)
                        break
                    frac = follow.step / cap if cap else 0.0
                    if budget:
                        frac = max(frac, min(1.0, follow.sampled / budget))
                    elapsed = time.monotonic() - t0
                    progress.update(
                        task,
                        completed=min(frac, 1.0),
                        info=(
                            f"step {follow.step}/{cap} · sampled {follow.sampled}"
                            + (f"/{budget}" if budget else "")
                            + f" · reward {follow.reward:.3f} · eval {follow.last_eval:.3f} · "
                            + self._eta(total - index, elapsed, frac)
                        ),
                    )
            show_evals(console)
        except KeyboardInterrupt:
            self._stop(proc, spec.name)
            raise
        seconds = time.monotonic() - t0
        status = run_status(folder)
        if proc.returncode == 0 and status == "complete":
            self.durations.append(seconds)
            console.print(
                f"  [green]{spec.name} done[/] in {_fmt_duration(seconds)}: step {follow.step}, "
                f"sampled {follow.sampled}, final eval {follow.last_eval:.3f}"
            )
        else:
            self.failed.append((spec.name, str(log)))
            why = (
                f"stalled for {self.stall_timeout:.0f}s, then stopped"
                if stalled
                else f"exit {proc.returncode}"
            )
            console.print(
                f"  [red]{spec.name} failed[/] ({why}, {status}) after {_fmt_duration(seconds)}; "
                f"log {log}:\n{tail_text(log)}"
            )

    def run_parallel(self, todo: list[RunSpec], done: set[str]) -> None:
        """Up to `jobs` runs at once, each started when its `after` runs are complete; a line per start, end
        and evaluation, and every `status_every_s` the runs done / running / waiting and the study's ETA. A
        run whose log says a port was taken (two launchers chose the same free port) is retried, twice at
        most."""
        study, console = self.study, self.console
        pending = list(todo)
        running: dict[str, _Active] = {}
        failed: set[str] = set()
        retries: dict[str, int] = {}
        total, finished, succeeded = len(todo), 0, 0
        slots = port_slots(self.jobs)  # each run at once its own port range (see `sgpo.common.ports`)
        free_slots = list(range(len(slots)))
        last_start = last_status = 0.0
        console.print(f"running {total} runs, {self.jobs} at a time")
        try:
            while pending or running:
                now = time.monotonic()
                for spec in list(pending):
                    if len(running) >= self.jobs or now - last_start < self.stagger_s:
                        break
                    blocked = [d for d in spec.after if d in failed]
                    if blocked:
                        pending.remove(spec)
                        failed.add(spec.name)
                        finished += 1
                        self.failed.append((spec.name, f"not run: {', '.join(blocked)} failed"))
                        console.print(f"  [red]{spec.name} not run[/]: {', '.join(blocked)} failed")
                        continue
                    if not all(d in done for d in spec.after):
                        continue
                    pending.remove(spec)
                    folder, log, ident = self._prepare(spec)
                    slot = free_slots.pop(0)
                    proc = self._spawn(spec.argv, log, spec.program, slots[slot])
                    (folder / "experiment.json").write_text(
                        json.dumps({**ident, "pid": proc.pid, "ports": list(slots[slot])}, indent=2)
                    )
                    running[spec.name] = _Active(
                        spec, proc, Follow(folder, study.batch_groups), now, log, folder, slot
                    )
                    last_start = now
                    console.print(
                        f"[bold]\\[start {finished + len(running)}/{total}] {spec.name}[/] · "
                        f"{time.strftime('%H:%M:%S')} · log {log}",
                        soft_wrap=True,
                        highlight=False,
                    )
                for name, act in list(running.items()):
                    for e in act.follow.poll():
                        at = f" · sampled {e['sampled']}" if e.get("sampled") is not None else ""
                        console.print(
                            f"  {name} eval @ step {e.get('step')}{at}: overall {e.get('overall', float('nan')):.3f}",
                            highlight=False,
                        )
                    idle = time.monotonic() - act.follow.last_change
                    if act.spec.kind == "train" and self.stall_timeout and idle > self.stall_timeout:
                        console.print(f"  [red]{name} stalled[/]: nothing new for {idle:.0f}s; stopping it")
                        self._stop(act.proc, name, redo=False)
                    if act.proc.poll() is None:
                        continue
                    del running[name]
                    free_slots.append(act.slot)
                    seconds = time.monotonic() - act.t0
                    status = run_status(act.folder)
                    taken = port_taken(act.log)
                    if act.proc.returncode == 0 and status == "complete":
                        finished += 1
                        succeeded += 1
                        done.add(name)
                        self.durations.append(seconds)
                        console.print(
                            f"  [green]{name} done[/] in {_fmt_duration(seconds)} "
                            f"(step {act.follow.step}, eval {act.follow.last_eval:.3f}) · "
                            f"{succeeded}/{total} done",
                            highlight=False,
                        )
                    elif retries.get(name, 0) < self.retries + (2 if taken else 0) and not self._sigterm:
                        retries[name] = retries.get(name, 0) + 1
                        why = "a port was taken" if taken else f"exit {act.proc.returncode}, {status}"
                        console.print(
                            f"  [yellow]{name}: failed ({why}); retrying[/]; log of the failed try:\n"
                            + tail_text(act.log, 6),
                            highlight=False,
                        )
                        pending.insert(0, act.spec)
                    else:
                        finished += 1
                        failed.add(name)
                        self.failed.append((name, str(act.log)))
                        console.print(
                            f"  [red]{name} failed[/] (exit {act.proc.returncode}, {status}) after "
                            f"{_fmt_duration(seconds)}; log {act.log}:\n{tail_text(act.log)}",
                            highlight=False,
                        )
                if now - last_status >= self.status_every_s and (pending or running):
                    last_status = now
                    console.print(
                        f"[dim]{time.strftime('%H:%M:%S')} · {succeeded}/{total} done · {len(running)} running"
                        f" · {len(pending)} waiting · failed {len(failed)} · "
                        + self._eta_parallel(pending, running)
                        + "[/]",
                        highlight=False,
                    )
                time.sleep(self.poll_s)
        except KeyboardInterrupt:
            for name, act in running.items():
                act.proc.send_signal(signal.SIGTERM)
                console.print(f"[yellow]stopping {name} (pid {act.proc.pid}); it will be redone next time[/]")
            for act in running.values():
                self._stop(act.proc, act.spec.name)
            raise

    def _eta_parallel(self, pending: list[RunSpec], running: dict[str, _Active]) -> str:
        if not self.durations:
            return "ETA: after the first run ends"
        per = sum(self.durations) / len(self.durations)
        now = time.monotonic()
        work = per * len(pending) + sum(max(0.0, per - (now - a.t0)) for a in running.values())
        return f"ETA {_fmt_duration(work / self.jobs)}"

    def _eta(self, remaining: int, elapsed: float = 0.0, frac: float = 0.0) -> str:
        """ETA of the study: remaining runs x mean duration of the runs finished in this invocation (the
        current run's own projection until one has finished)."""
        if self.durations:
            per = sum(self.durations) / len(self.durations)
        elif frac > 0.05:
            per = elapsed / frac
        else:
            return "ETA: after the first run"
        left = max(0.0, per - elapsed) + per * (remaining - 1)
        return f"ETA {_fmt_duration(left)}"


class _Active:
    """A run in progress (parallel scheduling)."""

    def __init__(
        self,
        spec: RunSpec,
        proc: subprocess.Popen[bytes],
        follow: Follow,
        t0: float,
        log: Path,
        folder: Path,
        slot: int = 0,
    ) -> None:
        self.spec, self.proc, self.follow, self.t0, self.log, self.folder = (
            spec,
            proc,
            follow,
            t0,
            log,
            folder,
        )
        self.slot = slot
        """The index of the port range the run draws from."""


def port_slots(jobs: int, low: int = 20000) -> list[tuple[int, int]]:
    """`jobs` disjoint port ranges below the kernel's ephemeral range, one per run at once (a run needs a few
    dozen ports at most)."""
    from sgpo.common.ports import ephemeral_range

    top = ephemeral_range()[0]
    if top - low < 100 * jobs:
        low, top = 10000, 10000 + 1000 * jobs  # an unusual ephemeral range: below 20000 then
    size = min(1000, (top - low) // jobs)
    return [(low + i * size, low + (i + 1) * size) for i in range(jobs)]


def port_taken(log: Path) -> bool:
    """Whether a run's log says a service could not bind its port (another launcher chose it too)."""
    try:
        text = log.read_text(errors="replace")[-20000:].lower()
    except OSError:
        return False
    return "address already in use" in text or "failed to bind" in text


def tail_text(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "  (no log)"
    return "\n".join("    " + line for line in text[-lines:])


def write_plan(study: Study) -> None:
    """Record the study in OUT/experiment.json (aggregation reads it); other studies' entries are kept."""
    path = study.out / "experiment.json"
    doc = read_json(path) or {}
    plan = study.plan_json()
    before = doc.get("studies", {}).get(study.name)
    if study.merge_plan and before:
        names = {r["name"] for r in plan["runs"]}
        plan["runs"] = [r for r in before.get("runs", []) if r["name"] not in names] + plan["runs"]
    doc.setdefault("studies", {})[study.name] = plan
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)


def print_dry_run(study: Study, console: Any) -> None:
    status = classify(study)
    print(f"# {study.name}: {len(study.runs)} runs, one at a time; folders under {study.out / 'runs'}")
    for note in study.notes:
        print(f"# note: {note}")
    if study.record is not None:
        rs = record_status(study, status)
        tag = {"done": "already recorded: skipped", "todo": "to record"}.get(
            rs, "error: " + rs.splitlines()[0]
        )
        print(f"# record once ({tag})")
        print(study.record.command())
    for spec in study.runs:
        s = status[spec.name]
        folder = study.out / "runs" / spec.name
        tag = (
            "complete: skipped"
            if s == "done"
            else ("error: " + s.splitlines()[0] if s != "todo" else f"to run ({run_status(folder)})")
        )
        print(f"# {spec.name}: {tag}")
        if spec.config is not None:
            print(f"# writes {study.out / 'configs' / (spec.name + '.toml')}:")
            for line in spec.config.strip().splitlines():
                print(f"#   {line}")
        print(spec.command())
