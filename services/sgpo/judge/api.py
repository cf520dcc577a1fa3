"""HTTP API of the judge: `POST /v1/judge` (same semantics as gRPC JudgeService.Judge), /healthz, /metrics,
and the OpenAPI schema at /openapi.json (docs at /docs).

Three layers: the wire models below, the logic (`sgpo.judge.judge.Judge`), and thin handlers. Before a
/v1 request's body is parsed, `_GuardedRoute` checks the API key (401) and reads at most `max_request_bytes`
(413), so an unauthenticated or oversized request costs nothing. One exception handler turns every error into
the same body: {"error": {"code", "message", "field"}}; anything unexpected is a sanitized 500.

Around the app, `sgpo.common.http.LimitsMiddleware` (docs/design.md, "6. Limits"): a declared body over
`max_request_bytes` is a 413 before the route runs, a body that does not arrive in time a 408, at most
`http_limits.max_active` /v1 requests run at once (more wait, then 503 + Retry-After), an unexpected error is
one logged traceback and a 500 on a connection that stays usable, and a client that disconnects is one info
line counted as 499. /healthz and /metrics are async and bypass admission.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from sgpo import __version__
from sgpo.common.http import CLIENT_CLOSED, HttpLimits, LimitsMiddleware
from sgpo.common.server import ResourceExhaustedError, ServiceError
from sgpo.core import ColoringParams, InvalidInputError, StepJudgement, compute_colored_reward, judgement_rts
from sgpo.core.config import MAX_BETA
from sgpo.judge.config import JudgeConfig
from sgpo.judge.scoring import build_scoring_router
from sgpo.judge.state import JudgeState
from sgpo.judge.types import JudgeItem

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"


class UnauthenticatedError(ServiceError):
    """No or a wrong API key (HTTP only; gRPC is the internal transport)."""

    http_status = 401


class BadLengthError(ServiceError):
    http_status = 400


# ------------------------------------------------------------------------------------------------ wire models


class JudgeItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    response: str | None = Field(None, description="The response text; the judge splits it into steps.")
    steps: list[str] | None = Field(None, description="Pre-split steps (instead of `response`).")
    token_char_starts: list[int] | None = Field(
        None,
        description="Character offset in `response` where each token starts; measures rts in tokens "
        "(without it, rts is measured in characters and the reason says so).",
    )


class ColoringIn(BaseModel):
    """Coloring parameters; a field left out takes the server's [algo] default. Checked by
    `sgpo.core.ColoringParams` (the one definition of their bounds), errors naming `coloring.<field>`."""

    model_config = ConfigDict(extra="forbid")

    beta: float | None = Field(None, description=f"Steepness of the sigmoid, in (0, {MAX_BETA:g}].")
    gamma: float | None = Field(None, description="rts at which the reward is r_max / 2, in [0, 1].")
    r_max: float | None = Field(None, description="Upper bound of colored rewards, in (0, 1).")
    rts_unit: Literal["tokens", "steps"] | None = Field(
        None, description="Measure the prefix in tokens or steps."
    )


class JudgeRequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    problem: str = Field(description="The problem the responses answer.")
    reference_solution: str = Field("", description="A reference step-by-step solution, when there is one.")
    items: list[JudgeItemIn] = Field(description="The responses to judge (one group).")
    coloring: ColoringIn | None = Field(None, description="Overrides of the server's coloring defaults.")


class StepJudgementOut(BaseModel):
    status: Literal["ok", "failed"] = Field(
        description="failed: the backend could not judge; leave it uncolored."
    )
    steps: list[str]
    first_error_step: int = Field(
        description="0-based index of the first wrong step; -1 when none was found."
    )
    rts: float = Field(description="Share of the response before its first error, in [0, 1].")
    reward: float = Field(description="Colored reward r_max * sigmoid(beta * (rts - gamma)).")
    reason: str
    backend: str

    @classmethod
    def of(cls, j: StepJudgement, coloring: ColoringParams) -> StepJudgementOut:
        """rts and reward by sgpo.core with the request's coloring (0 for a failed judgement, as before)."""
        rts = judgement_rts(j, coloring.rts_unit) if j.status == "ok" else 0.0
        return cls(
            status=j.status,
            steps=list(j.steps),
            first_error_step=j.first_error_step,
            rts=rts,
            reward=compute_colored_reward(rts, coloring) if j.status == "ok" else 0.0,
            reason=j.reason,
            backend=j.backend,
        )


class JudgeResponseOut(BaseModel):
    judgements: list[StepJudgementOut] = Field(description="One per item, in request order.")


class ErrorDetail(BaseModel):
    code: str = Field(
        description="unauthenticated | payload_too_large | invalid_argument | unavailable | ..."
    )
    message: str
    field: str | None = Field(None, description="The offending input, when one is to blame.")


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["serving", "loading"]
    backend: str


_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    408: "request_timeout",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_argument",
    503: "unavailable",
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong API key."},
    413: {
        "model": ErrorBody,
        "description": "Request larger than max_request_bytes, or too many items / steps.",
    },
    422: {"model": ErrorBody, "description": "The request does not match the schema, or a field is invalid."},
    503: {"model": ErrorBody, "description": "The backend is still loading."},
}


# ------------------------------------------------------------------------------------------------ errors


def _error_body(status: int, message: str, field: str | None = None) -> dict[str, Any]:
    code = _CODES.get(status, "internal" if status >= 500 else "error")
    return ErrorBody(error=ErrorDetail(code=code, message=message, field=field)).model_dump()


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(_error_body(status, message, field), status)


def http_limits(config: JudgeConfig) -> HttpLimits:
    """The judge's HTTP limits: `http_limits`, with `max_request_bytes` as the body limit."""
    return config.http_limits.model_copy(update={"max_body_bytes": config.max_request_bytes})


def _status_of(exc: BaseException) -> int:
    from starlette.requests import ClientDisconnect

    if isinstance(exc, ClientDisconnect):
        return CLIENT_CLOSED
    if isinstance(exc, ServiceError):
        return exc.http_status
    if isinstance(exc, InvalidInputError | RequestValidationError):
        return 422
    if isinstance(exc, StarletteHTTPException):
        return 422 if exc.status_code == 400 else exc.status_code
    return 500


async def handle_error(request: Request, exc: Exception) -> Response:
    """The one exception handler: every error becomes {"error": {"code", "message", "field"}}."""
    status = _status_of(exc)
    if isinstance(exc, ServiceError):
        return _error(status, exc.message)
    if isinstance(exc, InvalidInputError):
        return _error(422, str(exc), exc.field)
    if isinstance(exc, RequestValidationError):
        errors = list(exc.errors())
        parts = []
        for err in errors[:5]:
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
            parts.append(f"{loc}: {err.get('msg', 'invalid')}")
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        first = ".".join(str(x) for x in errors[0].get("loc", ()) if x != "body") if errors else None
        return _error(422, "; ".join(parts) + more, first or None)
    if isinstance(exc, StarletteHTTPException):
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (e.g. not UTF-8): a schema error too
            return _error(422, f"the request body is not valid JSON: {exc.detail}", "body")
        return _error(exc.status_code, str(exc.detail), None)
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return _error(500, f"internal error in {request.method} {request.url.path}; see the server log")


# ------------------------------------------------------------------------------------------------ guard


def _check_key(request: Request, keys: tuple[str, ...]) -> None:
    given = request.headers.get(API_KEY_HEADER, "")
    auth = request.headers.get("authorization", "")
    if not given and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    if not given:
        raise UnauthenticatedError(f"missing API key; send it in the {API_KEY_HEADER} header")
    if not any(hmac.compare_digest(given.encode(), k.encode()) for k in keys):
        raise UnauthenticatedError("wrong API key")


async def _read_body(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    too_big = f"request body exceeds max_request_bytes = {limit}; send fewer or shorter responses per request"
    if declared is not None:
        if not declared.isdigit():
            raise BadLengthError("the Content-Length header is not a number")
        if int(declared) > limit:
            raise ResourceExhaustedError(too_big)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ResourceExhaustedError(too_big)
        chunks.append(chunk)
    request._body = b"".join(chunks)  # Starlette serves later body() calls from this cache


class _GuardedRoute(APIRoute):
    """API key (401), then body size (413), then FastAPI's parsing (422) and the handler (timed and counted
    by the LimitsMiddleware's `on_done`, which also sees the requests it refuses itself)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            state: JudgeState = request.app.state.judge_state
            _check_key(request, state.api_keys)
            await _read_body(request, state.cfg.max_request_bytes)
            return await handler(request)

        return guarded


# ------------------------------------------------------------------------------------------------ app


def _coloring(c: ColoringIn | None, default: ColoringParams) -> ColoringParams:
    """The request's overrides over the server's defaults; a bad value names `coloring.<field>`."""
    if c is None:
        return default
    try:
        return ColoringParams(
            beta=default.beta if c.beta is None else c.beta,
            gamma=default.gamma if c.gamma is None else c.gamma,
            r_max=default.r_max if c.r_max is None else c.r_max,
            rts_unit=default.rts_unit if c.rts_unit is None else c.rts_unit,
        )
    except InvalidInputError as e:
        raise InvalidInputError(f"coloring.{e.field}", e.message) from None


def build_app(config: JudgeConfig, deps: JudgeState) -> FastAPI:
    """The FastAPI app over the dependencies `serve` (or a test) built from `config`: the judge, metrics, keys."""
    if config is not deps.cfg:
        raise ValueError("build_app(config, deps): deps must be built from the same config")
    app = FastAPI(
        title="SGPO judge",
        version=__version__,
        description="Finds the first wrong step of each response and colors it (SGPO; rts and reward computed by sgpo.core, docs/design.md §1).",
        responses={422: {"model": ErrorBody, "description": "Invalid request."}},
    )
    app.state.judge_state = deps
    # Not `Exception`: Starlette hands that one to its outermost middleware, which re-raises after the 500, so
    # uvicorn logged a second traceback and closed the connection. Unexpected errors reach LimitsMiddleware.
    for exc_type in (ServiceError, InvalidInputError, RequestValidationError, StarletteHTTPException):
        app.add_exception_handler(exc_type, handle_error)

    def done(path: str, status: int, seconds: float) -> None:
        if path.startswith("/v1/"):
            deps.metrics.request_latency.labels("http").observe(seconds)
            deps.metrics.requests.labels("http", str(status)).inc()

    app.add_middleware(
        LimitsMiddleware,
        limits=http_limits(config),
        error_body=lambda status, message: _error_body(status, message),
        costly=lambda path: path.startswith("/v1/"),
        on_done=done,
        exempt=("/healthz", "/metrics"),
        check_declared=False,  # the key is checked first (401 before 413), then _read_body
    )

    v1 = APIRouter(
        prefix="/v1",
        route_class=_GuardedRoute,
        dependencies=[
            Security(APIKeyHeader(name=API_KEY_HEADER, auto_error=False)),
            Security(HTTPBearer(auto_error=False)),
        ],
    )

    @v1.post("/judge", response_model=JudgeResponseOut, responses=_ERRORS)
    def judge(body: JudgeRequestIn) -> Response:
        """First wrong step, rts and colored reward of each response of one problem (one group)."""
        coloring = _coloring(body.coloring, deps.default_coloring)
        j = deps.require()
        items = [
            JudgeItem(it.response or "", tuple(it.steps or ()), tuple(it.token_char_starts or ()))
            for it in body.items
        ]
        out = j.judge(body.problem, body.reference_solution, items)
        # serialized here: FastAPI would validate the model again against `response_model` (the schema)
        body_out = JudgeResponseOut(judgements=[StepJudgementOut.of(x, coloring) for x in out])
        return Response(body_out.model_dump_json(), media_type="application/json")

    v1.include_router(build_scoring_router(deps, _GuardedRoute))  # /v1/score_groups, /v1/openrlhf/reward
    app.include_router(v1)

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    async def healthz() -> Response:
        """serving once the backend is loaded (200), loading before (503)."""
        ready = deps.judge is not None
        body = Health(status="serving" if ready else "loading", backend=deps.cfg.backend.type)
        return JSONResponse(body.model_dump(), 200 if ready else 503)

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        """Prometheus metrics (the same registry as the gRPC server's metrics port)."""
        return Response(generate_latest(deps.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
