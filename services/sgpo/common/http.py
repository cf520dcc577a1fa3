"""The HTTP side of a service: uvicorn in a background thread, beside the gRPC server of `common.server`.

The generator (OpenAI-compatible API) and the judge (POST /v1/judge) serve HTTP the same way, described in
docs/design.md, "2. Services and contracts": the socket is bound before uvicorn starts, so the port is
known at once (port 0 picks a free one) and a taken port fails with a message naming the setting to change.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any


class HttpServer:
    """uvicorn in a background thread on a socket bound before it starts (so the port is known at once).

    `service` names the config section in errors ("set a free http_port in [judge]") and the thread.
    """

    def __init__(self, app: Any, host: str, port: int, grace_s: float, service: str = "sgpo") -> None:
        import uvicorn

        self.service = service
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
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
