"""Test helpers: free ports, real service processes started the way users start them, Redis prefixes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from sgpo.common.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def sgpo_cmd(*args: str) -> list[str]:
    """The real CLI, run by this interpreter (same as the `sgpo` console script)."""
    return [sys.executable, "-m", "sgpo.cli", *args]


class ServiceProcess:
    """A service started with `sgpo serve NAME` in a subprocess (vLLM's test style)."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, metrics_port: int, log_path: Path) -> None:
        self.proc, self.port, self.metrics_port, self.log_path = proc, port, metrics_port, log_path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"service did not stop within {timeout}s of SIGTERM:\n{self.log()[-3000:]}"
                ) from None
        return int(self.proc.returncode)


@contextmanager
def run_service(
    name: str,
    tmp_path: Path,
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
    ready_timeout: float = 120.0,
) -> Iterator[ServiceProcess]:
    """Start `sgpo serve NAME` on free ports, wait for gRPC health SERVING, fail fast if it dies."""
    from sgpo.common.server import wait_for_health

    port, metrics_port = free_port(), free_port()
    full_env = dict(os.environ)
    prefix = f"SGPO_{name.upper()}__"
    full_env.update({f"{prefix}PORT": str(port), f"{prefix}METRICS_PORT": str(metrics_port)})
    full_env.update(env or {})
    log_path = tmp_path / f"{name}-{port}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            sgpo_cmd("serve", name, *args), env=full_env, stdout=log_file, stderr=subprocess.STDOUT
        )
    service = ServiceProcess(proc, port, metrics_port, log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"sgpo serve {name} exited with {proc.returncode}:\n{service.log()[-3000:]}"
                )
            try:
                wait_for_health(service.target, timeout_s=1.0)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"sgpo serve {name} not SERVING after {ready_timeout}s:\n{service.log()[-3000:]}"
                    ) from None
        yield service
    finally:
        service.stop()
