"""The shared HTTP server helper: binds before it starts, serves, stops, and names the setting on a clash."""

from __future__ import annotations

import socket
import urllib.request

import grpc
import pytest

from sgpo.common.http import HttpServer
from sgpo.common.server import ResourceExhaustedError, ServiceError, error_code_name
from sgpo.core.errors import InvalidInputError


async def _hello(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


def test_serves_on_a_port_known_before_start_and_stops() -> None:
    http = HttpServer(_hello, "127.0.0.1", 0, grace_s=1, service="judge")
    assert http.port > 0
    http.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http.port}/", timeout=10) as r:
            assert r.read() == b"hello"
        assert http.thread.name == "judge-http"
    finally:
        http.stop()
    assert not http.thread.is_alive()


def test_taken_port_names_the_setting_to_change() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=r"set a free http_port in \[generator\]"):
            HttpServer(_hello, "127.0.0.1", port, grace_s=1, service="generator")


def test_error_code_name() -> None:
    assert error_code_name(ResourceExhaustedError("too big")) == "RESOURCE_EXHAUSTED"
    assert error_code_name(ServiceError("x")) == grpc.StatusCode.INTERNAL.name
    assert error_code_name(InvalidInputError("n", "must be positive")) == "INVALID_ARGUMENT"
    assert error_code_name(RuntimeError("boom")) == "INTERNAL"


def test_accepted_connections_have_nagle_off() -> None:
    """Keep-alive responses go out at once: with Nagle on, the body (a second write after the headers) waited
    for the client's delayed ACK, 44 ms a request on loopback. asyncio turns it off only on sockets whose
    proto is TCP, so the pre-bound listening socket must say so."""
    import http.client

    server = HttpServer(_hello, "127.0.0.1", 0, grace_s=1, service="judge")
    assert server.sock.proto == socket.IPPROTO_TCP
    server.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"hello"
        (server_side,) = list(server.server.server_state.connections)
        sock = server_side.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        conn.close()
    finally:
        server.stop()
