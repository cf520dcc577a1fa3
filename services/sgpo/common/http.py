"""The HTTP side of a service: uvicorn in a background thread, beside the gRPC server of `common.server`.

The generator (OpenAI-compatible API) and the judge (POST /v1/judge) serve HTTP the same way, described in
docs/design.md, "2. Services and contracts": the socket is bound before uvicorn starts, so the port is
known at once (port 0 picks a free one) and a taken port fails with a message naming the setting to change.

Bounded resources (docs/design.md, "6. Limits"), the same for both services and set by `HttpLimits`:

- connections: an idle connection, or one whose request headers are not complete, is closed after
  `header_timeout_s` (uvicorn only times the gap *between* requests, `keep_alive_s`); headers larger than h11's
  16 KiB are a 400; at most `max_connections` connections are open (uvicorn's `limit_concurrency`);
- bodies: a declared Content-Length over `max_body_bytes` is a 413 decided before a byte is read (up to
  DRAIN_FACTOR x the limit the body is read and dropped first, so the client gets the answer rather than a
  connection reset; nothing of it is kept), a streamed body is cut at the limit, and a body that has not arrived `body_timeout_s` after the headers is a 408 (the
  connection is closed);
- admission: at most `max_active` requests to the costly routes run at once, `max_queued` more wait in
  arrival order, and the rest get 503 with `Retry-After`; health, metrics and the schema bypass it (and are
  `async`, so a saturated thread pool cannot hold them);
- errors: an unexpected exception is one logged traceback and a 500 whose connection stays usable; a client
  that goes away is one info line, counted as 499, never a 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

# The status a request whose client went away is counted under (nginx's "client closed request").
CLIENT_CLOSED = 499
# The scope key of the asyncio.Event LimitsMiddleware sets when the client disconnects.
DISCONNECTED = "sgpo.disconnected"


class HttpLimits(BaseModel):
    """`[<service>.http_limits]`: timeouts, body size and concurrency of the service's HTTP API."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(8 << 20, ge=1024, le=1 << 30)
    """Largest request body; a bigger one is a 413 before it is read."""
    header_timeout_s: float = Field(10.0, gt=0, le=600)
    """A connection must complete a request's headers this long after it opens or after its last data
    (idle fresh connections and slowly sent headers are closed)."""
    body_timeout_s: float = Field(30.0, gt=0, le=3600)
    """The whole body must arrive within this long of the headers (408 and close otherwise)."""
    keep_alive_s: int = Field(5, ge=1, le=600)
    """An idle keep-alive connection is closed after this long (uvicorn's `timeout_keep_alive`)."""
    max_connections: int = Field(1024, ge=1)
    """Open connections plus requests in flight before uvicorn answers 503 (its `limit_concurrency`)."""
    max_active: int = Field(16, ge=1)
    """Requests to the costly routes that run at once."""
    max_queued: int = Field(256, ge=0)
    """Requests that wait (in arrival order) for one of `max_active`; more are 503 with Retry-After."""


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


class ClientGone(Exception):
    """The client disconnected while its request was read or served."""


def _make_protocol(header_timeout_s: float) -> type:
    """uvicorn's h11 protocol with a deadline on request headers (uvicorn has none: a connection that never
    sends, or sends half a header, is held forever)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):  # type: ignore[misc]
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout_s, self._header_timeout)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()  # no complete request within the deadline

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                self._arm()
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return Protocol


ErrorBody = Callable[[int, str], Any]
"""(status, message) -> a JSON-able body in the service's own error format."""


# A declared body over the limit but within this many times it is read and discarded (chunk by chunk, nothing
# kept) before the 413, as nginx's lingering close does: a client that sends its whole body before it reads the
# answer (httpx, requests) then gets the 413 instead of a connection reset (a socket closed with unread data
# answers with RST). A larger declared body gets the 413 and the close at once, unread.
DRAIN_FACTOR = 4


async def _drain(receive: Any, timeout_s: float) -> None:
    """Read and drop the request body until its end, a disconnect or `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body"):
                    return
    except TimeoutError:
        return


class LimitsMiddleware:
    """Pure ASGI middleware: body limits, admission control and the catch-all error path (module docstring).

    `costly(path)` says which requests go through admission; `on_done(path, status, seconds)` is called once
    per request with the status sent (499 for a client that went away). `check_declared = False` leaves the
    Content-Length check to the app (the judge checks its key first); the streamed body is bounded either way."""

    def __init__(
        self,
        app: Any,
        limits: HttpLimits,
        error_body: ErrorBody,
        costly: Callable[[str], bool],
        on_done: Callable[[str, int, float], None] | None = None,
        exempt: Collection[str] = (),
        check_declared: bool = True,
    ) -> None:
        self.app, self.limits, self.error_body = app, limits, error_body
        self.check_declared = check_declared
        self.costly, self.on_done, self.exempt = costly, on_done, set(exempt)
        self._sem: asyncio.Semaphore | None = None
        self.waiting = 0

    async def _send_error(
        self,
        send: Any,
        status: int,
        message: str,
        headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    ) -> None:
        body = json.dumps(self.error_body(status, message)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path, lim = scope["path"], self.limits
        state = {"status": 500, "started": False}

        async def send_wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        gone = asyncio.Event()
        scope[DISCONNECTED] = gone
        watcher: list[asyncio.Future[None]] = []
        try:
            declared = dict(scope.get("headers") or ()).get(b"content-length")
            if (
                self.check_declared
                and declared is not None
                and (not declared.isdigit() or int(declared) > lim.max_body_bytes)
            ):
                msg = (
                    f"request body exceeds max_body_bytes = {lim.max_body_bytes}"
                    if declared.isdigit()
                    else "the Content-Length header is not a number"
                )
                if declared.isdigit() and int(declared) <= DRAIN_FACTOR * lim.max_body_bytes:
                    await _drain(receive, lim.body_timeout_s)
                await self._send_error(
                    send_wrapped, 413 if declared.isdigit() else 400, msg, [(b"connection", b"close")]
                )
                return
            if self.costly(path):
                if self._sem is None:
                    self._sem = asyncio.Semaphore(lim.max_active)
                if self._sem.locked() and self.waiting >= lim.max_queued:
                    await self._send_error(
                        send_wrapped,
                        503,
                        f"the server is busy ({lim.max_active} requests running, {self.waiting} waiting); "
                        "retry after the Retry-After seconds",
                        [(b"retry-after", b"1")],
                    )
                    return
                self.waiting += 1
                try:
                    await self._sem.acquire()
                finally:
                    self.waiting -= 1
                try:
                    await self.app(scope, self._bounded(receive, start, gone, watcher), send_wrapped)
                finally:
                    self._sem.release()
            else:
                await self.app(scope, self._bounded(receive, start, gone, watcher), send_wrapped)
        except BaseException as exc:
            status = self._status(exc)
            if status == CLIENT_CLOSED:
                log.info("client went away before the response: %s %s", scope.get("method"), path)
                state["status"] = CLIENT_CLOSED
            elif isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
            else:
                if status == 500:
                    log.error("unhandled error in %s %s", scope.get("method"), path, exc_info=exc)
                if state["started"]:
                    return  # a response is under way: nothing sensible to add
                msg = {
                    413: f"request body exceeds max_body_bytes = {lim.max_body_bytes}",
                    408: f"the request body did not arrive within body_timeout_s = {lim.body_timeout_s}",
                }.get(status, f"internal error in {scope.get('method')} {path}; see the server log")
                close = [(b"connection", b"close")] if status in (408, 413) else []
                await self._send_error(send_wrapped, status, msg, close)
        finally:
            for w in watcher:
                w.cancel()
            if self.on_done is not None:
                self.on_done(path, int(state["status"]), time.perf_counter() - start)

    @staticmethod
    def _status(exc: BaseException) -> int:
        from starlette.requests import ClientDisconnect

        if isinstance(exc, ClientDisconnect | ClientGone):
            return CLIENT_CLOSED
        if isinstance(exc, BodyTooLarge):
            return 413
        if isinstance(exc, BodyTimeout):
            return 408
        return 500

    def _bounded(
        self, receive: Any, start: float, gone: asyncio.Event, watcher: list[asyncio.Future[None]]
    ) -> Callable[[], Awaitable[dict[str, Any]]]:
        """`receive` that counts body bytes and enforces the body deadline; after the body, a plain pass-through,
        and a watcher task that sets `gone` when the client disconnects (Starlette's `is_disconnected` cannot
        see it through a BaseHTTPMiddleware: its task group swallows the message under a cancelled scope)."""
        lim = self.limits
        seen = {"bytes": 0, "done": False}

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        def body_done() -> None:
            seen["done"] = True
            watcher.append(asyncio.ensure_future(watch()))

        async def wrapped() -> dict[str, Any]:
            if seen["done"]:
                return await receive()  # type: ignore[no-any-return]
            left = lim.body_timeout_s - (time.perf_counter() - start)
            try:
                message = await asyncio.wait_for(receive(), max(0.001, left))
            except TimeoutError:
                raise BodyTimeout() from None
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > lim.max_body_bytes:
                    raise BodyTooLarge()
                if not message.get("more_body", False):
                    body_done()
            elif message["type"] == "http.disconnect":
                seen["done"] = True
                gone.set()
            return message  # type: ignore[no-any-return]

        return wrapped


async def run_cancellable(request: Any, fn: Callable[[threading.Event], Any], poll_s: float = 0.05) -> Any:
    """Run `fn(cancel)` in a worker thread; if the client disconnects first, set `cancel` (the engine drops the
    request's work) and raise ClientGone. The disconnect comes from LimitsMiddleware's watcher (or, without
    the middleware, from polling `is_disconnected`)."""
    import anyio.to_thread

    cancel = threading.Event()
    # anyio's pool (40 threads), not asyncio's default executor (cores + 4), so concurrent requests batch
    task = asyncio.ensure_future(anyio.to_thread.run_sync(fn, cancel))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved even when abandoned
    gone: asyncio.Event | None = request.scope.get(DISCONNECTED)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            if gone.is_set() if gone is not None else await request.is_disconnected():
                cancel.set()
                raise ClientGone()
    except BaseException:
        cancel.set()
        raise


class HttpServer:
    """uvicorn in a background thread on a socket bound before it starts (so the port is known at once).

    `service` names the config section in errors ("set a free http_port in [judge]") and the thread.
    """

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        grace_s: float,
        service: str = "sgpo",
        limits: HttpLimits | None = None,
    ) -> None:
        import uvicorn

        limits = limits or HttpLimits()
        self.service = service
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP, and
        # without it a keep-alive response's second write (the body after the headers) waits for the client's
        # delayed ACK: 44 ms per request where it takes 1 ms (bench/NOTES.md, "Load").
        self.sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as e:
            self.sock.close()
            raise OSError(
                f"could not bind HTTP {host}:{port} ({e}); set a free http_port in [{service}]"
            ) from e
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=max(1, int(grace_s)),
            lifespan="off",
            http=_make_protocol(limits.header_timeout_s),
            timeout_keep_alive=limits.keep_alive_s,
            limit_concurrency=limits.max_connections,
            backlog=2048,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name=f"{service}-http", daemon=True
        )

    def start(self, timeout_s: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the {self.service}'s HTTP server did not start; see the log above")
            time.sleep(0.02)

    def stop(self, timeout_s: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        self.sock.close()
