#!/usr/bin/env python3
"""Container health check of an sgpo service: standard gRPC health (grpc.health.v1) on its own port.

Exit 0 when the server reports SERVING, 1 otherwise (not listening, NOT_SERVING, timeout). Installed in
every image as `sgpo-healthcheck`; Docker's HEALTHCHECK and compose's `healthcheck` run it.

The port is, in order: the first argument (`sgpo-healthcheck 50051` or `host:port`), $SGPO_HEALTH_TARGET,
or the one `SGPO_<SERVICE>__PORT` variable of the container's environment (a container runs one service).
"""

from __future__ import annotations

import os
import re
import sys

PORT_VAR = re.compile(r"^SGPO_([A-Z]+)__PORT$")


def resolve_target(argv: list[str], env: dict[str, str]) -> str:
    given = argv[0] if argv else env.get("SGPO_HEALTH_TARGET", "")
    if not given:
        ports = sorted((k, v) for k, v in env.items() if PORT_VAR.match(k))
        if len(ports) != 1:
            found = ", ".join(k for k, _ in ports) or "none"
            raise SystemExit(
                f"sgpo-healthcheck: cannot tell which port to check (SGPO_<SERVICE>__PORT variables: {found}); "
                "pass the port as the first argument or set SGPO_HEALTH_TARGET=host:port"
            )
        given = ports[0][1]
    return given if ":" in given else f"127.0.0.1:{given}"


def check(target: str, timeout_s: float) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
            )
        except grpc.RpcError as e:
            print(f"{target}: {e.code().name}", file=sys.stderr)
            return False
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    print(f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")
    return serving


def main(argv: list[str]) -> int:
    target = resolve_target(argv, dict(os.environ))
    timeout_s = float(os.environ.get("SGPO_HEALTH_TIMEOUT_S", "3"))
    return 0 if check(target, timeout_s) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
