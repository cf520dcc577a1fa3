"""Free loopback ports for services started on this machine (the local launcher, tests).

A port taken from the kernel with bind(0) comes from the ephemeral range, the same range every outgoing
connection's source port is drawn from: between choosing it and the service binding it, a gRPC or Redis client
anywhere on the machine can take it, and the service then fails with "Address already in use" (seen in CI).
Ports below that range are never handed out as source ports, so `free_port` draws from there, checks that the
port can be bound right now, and never hands the same port out twice in one process.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path

_LOW = 20000
"""Lowest port drawn: above the registered services most machines run (databases, brokers, dev servers)."""
_given: set[int] = set()
_lock = threading.Lock()
_rng = random.SystemRandom()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range of source ports for outgoing connections (Linux; the IANA default elsewhere)."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 49152, 65535


def _bindable(port: int, host: str) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_range_env() -> tuple[int, int] | None:
    """SGPO_PORT_RANGE=LO-HI: draw only from [LO, HI). A scheduler that runs several launchers side by side
    (`sgpo experiment --jobs N`) gives each its own range: gRPC servers bind with SO_REUSEPORT, so two
    launchers that chose the same port would not fail but share it, and one run would reach the other's
    services."""
    text = os.environ.get("SGPO_PORT_RANGE", "")
    lo, _, hi = text.partition("-")
    try:
        return (int(lo), int(hi)) if text and int(lo) < int(hi) else None
    except ValueError:
        return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, below the ephemeral range when there is room there, else from the kernel;
    within SGPO_PORT_RANGE when it is set."""
    lo = ephemeral_range()[0]
    with _lock:
        own = port_range_env()
        if own is not None:
            for _ in range(400):
                port = _rng.randrange(*own)
                if port not in _given and _bindable(port, host):
                    _given.add(port)
                    return port
            raise RuntimeError(f"no free port in SGPO_PORT_RANGE={own[0]}-{own[1]}")
        if lo - _LOW >= 1000:
            for _ in range(200):
                port = _rng.randrange(_LOW, lo)
                if port not in _given and _bindable(port, host):
                    _given.add(port)
                    return port
        while True:  # no room below the range (or all tries taken): let the kernel choose
            with socket.socket() as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
            if port not in _given:
                _given.add(port)
                return port
