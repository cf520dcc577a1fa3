"""Authentication between and into services: the shared service token (gRPC) and secret files.

**gRPC.** Every service of a deployment shares one *service token*. `serve_grpc` installs
`TokenAuthInterceptor`, which accepts a call only with the metadata `authorization: Bearer <token>`
(constant-time comparison) and answers UNAUTHENTICATED otherwise. The standard health service
(`grpc.health.v1.Health`) stays open: Kubernetes probes, `sgpo-healthcheck` and compose health checks call it
without credentials, and it tells a caller only SERVING or NOT_SERVING. Clients build their channels with
`channel()`, which adds the metadata to every call.

Where the token comes from (the first that is set): `SGPO_SERVICE_TOKEN`, the file named by
`SGPO_SERVICE_TOKEN_FILE`, the service's `service_token_file` setting. None of them: authentication is off (a
local process on loopback; `sgpo train` generates one for its own services). A service process uses the token
it serves with for its own clients too (`set_process_token`), so the orchestrator, the trainer and the judge's
scoring path reach the other services with it.

**Secret files.** `read_secret_file` reads a key or token from a file (whitespace stripped; the error names the
file, never its content); `write_secret_file` writes one with mode 0600, created that way (never readable by
others, not even for an instant).
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from sgpo.common.settings import ConfigError

log = logging.getLogger(__name__)

TOKEN_ENV = "SGPO_SERVICE_TOKEN"
TOKEN_FILE_ENV = "SGPO_SERVICE_TOKEN_FILE"
METADATA_KEY = "authorization"
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
"""Methods callable without the token: health only (probes carry no credentials)."""

UNAUTHENTICATED_MESSAGE = (
    "missing or wrong service token: send the metadata 'authorization: Bearer <token>' with the token every "
    f"service of this deployment shares (clients read {TOKEN_ENV} or the file named by {TOKEN_FILE_ENV})"
)


class SecretFileError(ConfigError):
    """A key or token file that cannot be used; the message names the file, never its content."""


def generate_secret() -> str:
    """A random token or API key (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def read_secret_file(path: str | Path, what: str = "secret") -> str:
    """The secret in the file at `path`, stripped of surrounding whitespace (the first line only)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SecretFileError(f"cannot read the {what} file {p}: {e.strerror or type(e).__name__}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise SecretFileError(f"the {what} file {p} is empty; write the {what} into it")
    return lines[0]


def read_secret_lines(path: str | Path, what: str = "key") -> list[str]:
    """Every non-empty line of the file at `path` (a file of API keys, one per line)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SecretFileError(f"cannot read the {what} file {p}: {e.strerror or type(e).__name__}") from None
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not keys:
        raise SecretFileError(f"the {what} file {p} holds no {what}; write one per line")
    return keys


def write_secret_file(path: str | Path, value: str) -> Path:
    """Write `value` to `path` with mode 0600 (created so: never readable by others); replaces the file."""
    p = Path(path)
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the mode of a folder it creates
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (value + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, p)
    return p


def generated_secret_path(service: str, name: str) -> Path:
    """Where a service writes a key it generated when none was configured: a 0700 folder of its own."""
    folder = Path(tempfile.mkdtemp(prefix=f"sgpo-{service}-"))
    os.chmod(folder, 0o700)
    return folder / name


def resolve_service_token(token_file: str | Path | None = None) -> str | None:
    """The service token: `SGPO_SERVICE_TOKEN`, else the file `SGPO_SERVICE_TOKEN_FILE`, else `token_file`."""
    value = os.environ.get(TOKEN_ENV, "").strip()
    if value:
        return value
    path = os.environ.get(TOKEN_FILE_ENV, "").strip() or (str(token_file) if token_file else "")
    if path:
        return read_secret_file(path, "service token")
    return None


_UNSET: Any = object()
_process_token: Any = _UNSET


def set_process_token(token: str | None) -> None:
    """The token this process's clients send (a service sets the one it serves with; `sgpo train` its own)."""
    global _process_token
    _process_token = token


def reset_process_token() -> None:
    global _process_token
    _process_token = _UNSET


def process_token() -> str | None:
    """The token clients of this process send: the one set by `set_process_token`, else from the env."""
    if _process_token is not _UNSET:
        return _process_token  # type: ignore[no-any-return]
    return resolve_service_token()


def token_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _bearer(metadata: Sequence[tuple[str, Any]] | None) -> str:
    for key, value in metadata or ():
        if key.lower() == METADATA_KEY:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


def _refuse(request: Any, context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)


def _refuse_stream(request: Any, context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
    yield  # pragma: no cover


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Accept a call only with `authorization: Bearer <token>` (health excepted); UNAUTHENTICATED otherwise."""

    def __init__(self, token: str, open_methods: frozenset[str] = OPEN_METHODS) -> None:
        if not token:
            raise ValueError("the service token is empty")
        self._expected = token.encode()
        self._open = open_methods

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        if handler_call_details.method in self._open:
            return continuation(handler_call_details)
        given = _bearer(handler_call_details.invocation_metadata).encode()
        if hmac.compare_digest(given, self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:  # an unknown method: UNIMPLEMENTED, as without authentication
            return None
        # the refusing handler is of the same kind; the request is not even deserialized
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(_refuse)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(_refuse_stream)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(_refuse)
        return grpc.stream_stream_rpc_method_handler(_refuse_stream)


class _TokenClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, token: Callable[[], str | None]) -> None:
        self._token = token
        self._header: tuple[str, str] | None = None
        self._resolved = False

    def _details(self, details: Any) -> Any:
        if not self._resolved:  # at the first call: a service sets its token when it starts serving
            tok = self._token()
            self._header = (METADATA_KEY, f"Bearer {tok}") if tok else None
            self._resolved = True
        if self._header is None:
            return details
        metadata = [*(details.metadata or ()), self._header]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(
        self,
        method: str,
        timeout: float | None,
        metadata: Any,
        credentials: Any,
        wait_for_ready: Any,
        compression: Any,
    ) -> None:
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = credentials, wait_for_ready, compression


def channel(
    target: str, options: Sequence[tuple[str, Any]] | None = None, token: Any = _UNSET
) -> grpc.Channel:
    """A channel to another service that sends the service token with every call.

    `token` defaults to `process_token()`, read at the channel's first call (a service builds its clients
    before `serve_grpc` has read its token); None, or no token anywhere: nothing is sent (authentication off).
    """
    ch = grpc.insecure_channel(target, options=list(options or []))
    getter: Callable[[], str | None] = process_token if token is _UNSET else (lambda: token)
    return grpc.intercept_channel(ch, _TokenClientInterceptor(getter))


def server_interceptors(token: str | None) -> list[grpc.ServerInterceptor]:
    """The interceptors `serve_grpc` installs in front of the others (none when authentication is off)."""
    return [TokenAuthInterceptor(token)] if token else []


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")
