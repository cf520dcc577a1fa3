"""Worker processes for the symbolic checks, killed and replaced when an item passes its deadline.

Sympy can hang on one input for minutes (`10^{10^{10^{10}}}`, factorial towers) or eat all memory, and
math-verify's SIGALRM timeout only works on a main thread. So each worker is a process with its own
pipe and an address-space limit; one driver thread per worker sends it one job at a time, waits on the
pipe up to the job's deadline and, when the deadline passes or the process dies, kills it and starts a
fresh one from a forkserver that has math-verify and sympy already imported and warmed (a restart costs
tens of milliseconds, not seconds of imports). Workers start in the background on the first symbolic job
(or `wait_ready`): a caller whose items all take the fast path never starts or waits for them. `concurrent.futures.ProcessPoolExecutor` cannot do this: it
cannot kill a task that is running.

Sharing (docs/design.md, "6. Limits"): jobs wait in one queue per call (`owner`), and a free worker takes
the next job round-robin over the calls, so a call of thousands of items holds a small one back by at most one
job per worker; a cancelled call's queued jobs are dropped and its running ones are killed with their worker
(polled every `_CANCEL_POLL_S`), so the next caller has a worker again within a worker restart.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any

from sgpo.verifier.equivalence import CheckRequest, CheckResult

log = logging.getLogger(__name__)

_PRELOAD = ["sgpo.verifier._warm"]
RestartReason = str  # "timeout" | "crash" | "recycle"
_READY = "ready"
# A fresh worker must say it is ready within this long (a job's deadline starts only after that).
STARTUP_TIMEOUT_S = 120.0
# How often a driver waiting on a worker looks whether its job was cancelled.
_CANCEL_POLL_S = 0.05


class _FairQueue:
    """Jobs in one FIFO per owner (a Verify call); `get` takes from the owners in turn. None stops a driver."""

    def __init__(self) -> None:
        self._owners: collections.OrderedDict[object, collections.deque[Job]] = collections.OrderedDict()
        self._stops = 0
        self._cv = threading.Condition()

    def put(self, job: Job | None, owner: object = None) -> None:
        with self._cv:
            if job is None:
                self._stops += 1
            else:
                self._owners.setdefault(owner, collections.deque()).append(job)
            self._cv.notify()

    def get(self) -> Job | None:
        with self._cv:
            while not self._owners and not self._stops:
                self._cv.wait()
            if self._stops:
                self._stops -= 1
                return None
            owner, q = next(iter(self._owners.items()))
            job = q.popleft()
            del self._owners[owner]
            if q:
                self._owners[owner] = q  # to the back: the next owner goes first
            return job

    def drain(self) -> list[Job]:
        with self._cv:
            jobs = [j for q in self._owners.values() for j in q]
            self._owners.clear()
            return jobs

    def qsize(self) -> int:
        with self._cv:
            return sum(len(q) for q in self._owners.values())


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when its parent, the forkserver, exits, so that a worker stuck in sympy
    does not outlive a service that was itself killed. The forkserver exits when the last holder of its
    "alive" pipe closes it; every forked child inherits a copy it never uses, so the worker closes its
    copy first (otherwise a hung worker would keep the forkserver, and so itself, alive forever)."""
    import ctypes
    import signal
    from multiprocessing import forkserver

    alive_fd = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_alive_fd", None)
    if isinstance(alive_fd, int):
        with contextlib.suppress(OSError):
            os.close(alive_fd)
    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(0)


def _worker_main(conn: Connection, memory_mb: int) -> None:
    """The worker loop: receive a CheckRequest, send back a CheckResult, forever."""
    import resource
    import sys

    _die_with_parent()
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.setrecursionlimit(3000)
    from sgpo.verifier.equivalence import check

    conn.send(_READY)
    while True:
        try:
            req = conn.recv()
        except (EOFError, OSError):
            return
        if req is None:
            return
        try:
            result = check(req)
        except MemoryError:
            result = CheckResult("unscorable", "", f"out of memory (worker limit {memory_mb} MiB)")
        except RecursionError:
            result = CheckResult("unscorable", "", "expression nested too deeply to parse")
        except Exception as exc:  # math-verify / sympy bugs: data, not a crash of the service
            result = CheckResult("unscorable", "", f"math-verify failed: {type(exc).__name__}")
        try:
            conn.send(result)
        except (OSError, ValueError):
            return


@dataclass(eq=False)
class Job:
    """One symbolic check waiting for (or running on) a worker."""

    req: CheckRequest
    deadline_s: float
    give_up_at: float  # monotonic time after which a job still queued is dropped
    done: threading.Event = field(default_factory=threading.Event)
    result: CheckResult | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    cancelled: bool = False

    def finish(self, result: CheckResult) -> None:
        if not self.done.is_set():
            self.result = result
            self.finished_at = time.monotonic()
            self.done.set()


try:  # forkserver internals (CPython 3.11+ on POSIX); without them workers use the stock Process class
    from multiprocessing import forkserver, popen_forkserver, reduction, spawn, util
    from multiprocessing.context import ForkServerProcess, set_spawning_popen

    class _NoMainPopen(popen_forkserver.Popen):  # type: ignore[misc]
        """`popen_forkserver.Popen` whose child does not re-import the parent's `__main__`.

        multiprocessing re-runs the parent's main module (as `__mp_main__`) in every spawned or
        forkserver child. Workers only need `_worker_main`; re-running a user's script there would repeat
        its side effects and its start-up time on every worker restart. This mirrors CPython 3.11's
        `_launch` except that the main-module entries are dropped from the preparation data.
        """

        def _launch(self, process_obj: Any) -> None:
            prep_data = spawn.get_preparation_data(process_obj._name)
            prep_data.pop("init_main_from_name", None)
            prep_data.pop("init_main_from_path", None)
            buf = io.BytesIO()
            set_spawning_popen(self)
            try:
                reduction.dump(prep_data, buf)
                reduction.dump(process_obj, buf)
            finally:
                set_spawning_popen(None)
            self.sentinel, w = forkserver.connect_to_new_process(self._fds)
            _parent_w = os.dup(w)
            self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))
            with open(w, "wb", closefd=True) as f:
                f.write(buf.getbuffer())
            self.pid = forkserver.read_signed(self.sentinel)

    class _WorkerProcess(ForkServerProcess):  # type: ignore[misc,valid-type]
        @staticmethod
        def _Popen(process_obj: Any) -> Any:
            return _NoMainPopen(process_obj)

    _NO_MAIN_PROCESS: Any = _WorkerProcess
except (ImportError, AttributeError):  # pragma: no cover - other platforms
    _NO_MAIN_PROCESS = None


def _process_class(ctx: BaseContext) -> Any:
    if ctx.get_start_method() == "forkserver" and _NO_MAIN_PROCESS is not None:
        return _NO_MAIN_PROCESS
    return ctx.Process  # type: ignore[attr-defined]


class _Worker:
    def __init__(self, ctx: BaseContext, memory_mb: int) -> None:
        parent, child = ctx.Pipe(duplex=True)
        self.proc = _process_class(ctx)(
            target=_worker_main, args=(child, memory_mb), daemon=True, name="sgpo-verifier-worker"
        )
        self.proc.start()
        child.close()
        self.conn: Connection = parent
        self.tasks = 0

    def kill(self) -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        self.proc.join(2)
        if self.proc.is_alive():
            self.kill()
        else:
            self.conn.close()


class WorkerPool:
    """`n` worker processes fed from one queue; thread-safe `submit`."""

    def __init__(
        self,
        n: int,
        *,
        memory_mb: int = 1024,
        max_tasks: int = 5000,
        on_restart: Callable[[RestartReason], None] | None = None,
        on_timeout: Callable[[], None] | None = None,
    ) -> None:
        self._ctx = _context()
        self._memory_mb, self._max_tasks = memory_mb, max_tasks
        self._on_restart = on_restart or (lambda _reason: None)
        self._on_timeout = on_timeout or (lambda: None)
        self._jobs = _FairQueue()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self.restarts: dict[str, int] = {"timeout": 0, "crash": 0, "recycle": 0, "cancel": 0}
        self.start_error = ""
        self._workers: list[_Worker | None] = [None] * n
        self._ready = [threading.Event() for _ in range(n)]
        self._go = threading.Event()  # workers start on the first symbolic job or wait_ready()
        self._threads = [
            threading.Thread(target=self._drive, args=(i,), name=f"sgpo-verifier-driver-{i}", daemon=True)
            for i in range(n)
        ]
        for t in self._threads:
            t.start()

    @property
    def size(self) -> int:
        return len(self._workers)

    def pids(self) -> list[int]:
        return [w.proc.pid for w in list(self._workers) if w is not None and w.proc.pid is not None]

    def pending(self) -> int:
        return self._jobs.qsize()

    def submit(self, req: CheckRequest, deadline_s: float, give_up_at: float, owner: object = None) -> Job:
        """Queue a check; jobs of one `owner` (a call) run in order, owners take turns."""
        if self._closed.is_set():
            raise RuntimeError("the verifier was closed; create a new MathVerifier")
        job = Job(req, deadline_s, give_up_at)
        self._jobs.put(job, owner)
        self._go.set()
        return job

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Start the workers if they are not yet, and block until every one has reported ready."""
        self._go.set()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for ev in self._ready:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not ev.wait(left):
                return False
        return True

    def _kill(self, i: int, reason: RestartReason) -> None:
        """Kill slot i's worker (its replacement is started by `_start`), counted as a restart."""
        old = self._workers[i]
        self._workers[i] = None
        if old is not None:
            old.kill()
        with self._lock:
            self.restarts[reason] = self.restarts.get(reason, 0) + 1
        self._on_restart(reason)

    def _start(self, i: int) -> _Worker | None:
        """A fresh worker in slot i once it reports ready, or None (logged) when it cannot be started.

        Waiting for the ready message keeps the worker's boot time (the first start also waits for the
        forkserver to import and warm math-verify) out of the next job's deadline."""
        worker = None
        try:
            worker = _Worker(self._ctx, self._memory_mb)
            if not worker.conn.poll(STARTUP_TIMEOUT_S) or worker.conn.recv() != _READY:
                raise TimeoutError(f"no ready message within {STARTUP_TIMEOUT_S:.0f}s")
        except Exception as exc:  # the forkserver or the fork failed: answer jobs unscorable, retry later
            if worker is not None:
                worker.kill()
            error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
            if error != self.start_error:  # once per distinct error, not once per job
                log.error("could not start a verifier worker: %s", error)
            self.start_error = error
            return None
        self._workers[i] = worker
        return worker

    def _drive(self, i: int) -> None:
        self._go.wait()
        try:
            if not self._closed.is_set():
                self._start(i)
        finally:
            self._ready[i].set()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            now = time.monotonic()
            if job.cancelled or job.done.is_set():
                continue
            if now >= job.give_up_at:
                job.finish(CheckResult("unscorable", "", "request deadline passed before a worker was free"))
                continue
            worker = self._workers[i]
            if worker is not None and not worker.proc.is_alive():
                self._kill(i, "crash")
                worker = None
            if worker is None:
                worker = self._start(i)
            if worker is None:
                job.finish(
                    CheckResult("unscorable", "", f"could not start a worker process ({self.start_error})")
                )
                continue
            job.started_at = now
            budget = max(0.0, min(job.deadline_s, job.give_up_at - now))
            try:
                worker.conn.send(job.req)
                ready = self._wait(worker, job, budget)
                result: CheckResult | None = worker.conn.recv() if ready else None
            except (EOFError, OSError, ValueError):
                self._kill(i, "crash")
                job.finish(CheckResult("unscorable", "", "worker process died (crash or memory limit)"))
                self._start(i)
                continue
            if ready is None:  # cancelled while it ran: free the worker for the next caller now
                self._kill(i, "cancel")
                job.finish(CheckResult("unscorable", "", "cancelled by the caller"))
                self._start(i)
                continue
            if result is None:
                self._kill(i, "timeout")  # first: a hung worker must stop burning CPU
                self._on_timeout()
                job.finish(CheckResult("unscorable", "", f"timed out after {budget:.3g}s"))
                self._start(i)  # the replacement boots while the caller already has its answer
                continue
            job.finish(result)
            worker.tasks += 1
            if worker.tasks >= self._max_tasks:
                self._kill(i, "recycle")
                self._start(i)

    @staticmethod
    def _wait(worker: _Worker, job: Job, budget: float) -> bool | None:
        """Whether the worker answered within `budget`; None when the job was cancelled meanwhile."""
        end = time.monotonic() + budget
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return False
            if worker.conn.poll(min(left, _CANCEL_POLL_S)):
                return True
            if job.cancelled:
                return None

    def close(self) -> None:
        """Stop the drivers and the workers; queued jobs are answered unscorable."""
        if self._closed.is_set():
            return
        self._closed.set()
        for job in self._jobs.drain():
            job.finish(CheckResult("unscorable", "", "the verifier was closed"))
        for _ in self._threads:
            self._jobs.put(None)
        self._go.set()
        for t in self._threads:
            t.join(10)
        for w in self._workers:
            if w is not None:
                w.stop()


_CTX_LOCK = threading.Lock()


def _context() -> BaseContext:
    """A forkserver context with math-verify preloaded (spawn where forkserver is missing)."""
    with _CTX_LOCK:
        if "forkserver" in multiprocessing.get_all_start_methods():
            ctx: Any = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(_PRELOAD)
            return ctx  # type: ignore[no-any-return]
        return multiprocessing.get_context("spawn")


def worker_rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc), 0 when unknown."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0
