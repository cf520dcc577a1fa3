"""free_port: below the kernel's ephemeral range, bindable, never the same port twice in a process."""

from __future__ import annotations

import socket

from sgpo.common.ports import ephemeral_range, free_port


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    lo, hi = ephemeral_range()
    assert 0 < lo <= hi <= 65535
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(p < lo for p in ports), (lo, ports)
    for p in ports[:10]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))  # nothing holds it


def test_a_port_in_use_is_never_handed_out() -> None:
    held = []
    try:
        for _ in range(20):  # hold 20 of the ports it chose; none may come back while held
            s = socket.socket()
            s.bind(("127.0.0.1", free_port()))
            s.listen()
            held.append(s)
        taken = {s.getsockname()[1] for s in held}
        assert not taken & {free_port() for _ in range(200)}
    finally:
        for s in held:
            s.close()
