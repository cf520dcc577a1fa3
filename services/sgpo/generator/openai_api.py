"""The OpenAI-compatible HTTP surface of the generator: /v1/models, /v1/completions, /v1/chat/completions.

The subset vLLM users rely on: `prompt` (a string or a list of strings), `messages`, `n`, `max_tokens`
(`max_completion_tokens` in chat), `temperature`, `top_p`, `stop`, `seed`, `logprobs` (sampled-token
logprobs only: `logprobs: 0` in completions, `top_logprobs: 0` in chat), vLLM's `return_token_ids`, and
`stream` (server-sent events; the completion is produced whole and sent as one chunk per choice, not token
by token). Errors use OpenAI's body `{"error": {"message", "type", "param", "code"}}`; bad input is 400.
`system_fingerprint` carries the policy version that produced the choices (`policy-v<N>`).

Limits (docs/design.md, "6. Limits"): the body is bounded by the server's `LimitsMiddleware` before it is
parsed; `n`, the prompt count, the completions per request and the prompt characters are checked
(`check_request`, the gRPC checks) before anything is tokenized; a client that disconnects cancels its request
in the engine. /health is async: it never waits for a thread of the pool that runs the engine calls.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request as HTTPRequest  # FastAPI resolves handler annotations here

from sgpo.common.http import run_cancellable
from sgpo.common.server import ServiceError
from sgpo.core.errors import InvalidInputError
from sgpo.generator.engine import Engine, PromptResult
from sgpo.generator.sampling import RequestLimits, SamplingParams, check_request

# Fields OpenAI clients send that change nothing here when left at their defaults.
_NEUTRAL = {"presence_penalty": 0.0, "frequency_penalty": 0.0}


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    user: str | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    return_token_ids: bool = False
    """vLLM extension: add `token_ids` (and `prompt_token_ids`) to each choice."""

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def check_neutral(self) -> None:
        for name, neutral in _NEUTRAL.items():
            if getattr(self, name) != neutral:
                raise InvalidInputError(name, f"is not supported by this server; leave it at {neutral}")


class CompletionRequest(_Request):
    prompt: str | list[str]
    max_tokens: int = 16
    logprobs: int | None = None
    """0 returns the sampled tokens' logprobs; top-k alternatives (> 0) are not supported."""
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("needs at least one prompt")
        return v


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str
    name: str | None = None


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None


def _sampling(
    req: _Request, max_tokens: int, prompts: list[str], limits: RequestLimits | None = None
) -> SamplingParams:
    # SamplingParams validates and names the field; drop the "sampling." prefix for HTTP callers.
    try:
        params = SamplingParams(
            n=req.n,
            temperature=req.temperature,
            top_p=req.top_p,
            max_tokens=max_tokens,
            stop=req.stops(),
            seed=req.seed,
        )
        check_request(prompts, params, limits or RequestLimits())
        return params
    except InvalidInputError as e:
        field = e.field.removeprefix("sampling.")
        raise InvalidInputError(field, e.message) from None


def _token_strings(engine: Engine, ids: tuple[int, ...]) -> list[str]:
    tok = getattr(engine, "tokenizer", None)
    if tok is None:
        return [str(i) for i in ids]
    return [str(tok.decode([i], skip_special_tokens=False)) for i in ids]


def _fingerprint(results: list[PromptResult]) -> str:
    versions = sorted({c.policy_version for r in results for c in r.completions})
    return "policy-v" + ",".join(str(v) for v in versions)


def _usage(results: list[PromptResult]) -> dict[str, int]:
    prompt = sum(len(r.prompt_token_ids) for r in results)
    completion = sum(len(c.token_ids) for r in results for c in r.completions)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def run_completions(
    engine: Engine,
    req: CompletionRequest,
    limits: RequestLimits | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    req.check_neutral()
    if req.echo:
        raise InvalidInputError("echo", "is not supported by this server; send echo = false")
    if req.logprobs is not None and req.logprobs != 0:
        raise InvalidInputError(
            "logprobs", f"only 0 (the sampled tokens' logprobs) is supported; got {req.logprobs}"
        )
    prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
    results = engine.generate(prompts, _sampling(req, req.max_tokens, prompts, limits), cancel)
    choices = []
    for r in results:
        for c in r.completions:
            choice: dict[str, Any] = {
                "index": len(choices),
                "text": c.text,
                "finish_reason": c.finish_reason,
                "logprobs": None,
                "policy_version": c.policy_version,
            }
            if req.logprobs is not None:
                choice["logprobs"] = {
                    "tokens": _token_strings(engine, c.token_ids),
                    "token_logprobs": list(c.logprobs),
                    "top_logprobs": None,
                    "text_offset": list(c.token_char_starts),
                }
            if req.return_token_ids:
                choice["token_ids"] = list(c.token_ids)
                choice["prompt_token_ids"] = list(r.prompt_token_ids)
            choices.append(choice)
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": engine.model_name,
        "system_fingerprint": _fingerprint(results),
        "choices": choices,
        "usage": _usage(results),
    }


def run_chat(
    engine: Engine,
    req: ChatRequest,
    limits: RequestLimits | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    req.check_neutral()
    if req.top_logprobs:
        raise InvalidInputError(
            "top_logprobs", f"only 0 is supported (sampled tokens only); got {req.top_logprobs}"
        )
    if req.max_tokens is not None and req.max_completion_tokens is not None:
        raise InvalidInputError("max_completion_tokens", "give max_tokens or max_completion_tokens, not both")
    messages = [m.model_dump(exclude_none=True) for m in req.messages]
    chars = sum(len(m.content) for m in req.messages)
    max_chars = int(getattr(engine, "max_prompt_chars", 0) or 0)
    if max_chars and chars > max_chars:  # before the template and the tokenizer see it
        raise InvalidInputError(
            "messages", f"has {chars} characters; at most {max_chars} (max_prompt_chars) fit the context"
        )
    prompt = engine.render_chat(messages)
    limit = req.max_completion_tokens or req.max_tokens
    if limit is None:
        limit = max(1, engine.max_model_len - engine.count_tokens(prompt))
    results = engine.generate([prompt], _sampling(req, limit, [prompt], limits), cancel)
    choices = []
    for c in results[0].completions:
        choice: dict[str, Any] = {
            "index": len(choices),
            "message": {"role": "assistant", "content": c.text},
            "finish_reason": c.finish_reason,
            "logprobs": None,
            "policy_version": c.policy_version,
        }
        if req.logprobs:
            toks = _token_strings(engine, c.token_ids)
            choice["logprobs"] = {
                "content": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []}
                    for t, lp in zip(toks, c.logprobs, strict=True)
                ]
            }
        if req.return_token_ids:
            choice["token_ids"] = list(c.token_ids)
            choice["prompt_token_ids"] = list(results[0].prompt_token_ids)
        choices.append(choice)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": engine.model_name,
        "system_fingerprint": _fingerprint(results),
        "choices": choices,
        "usage": _usage(results),
    }


def _sse(body: dict[str, Any], chat: bool) -> Iterator[str]:
    """The whole response as server-sent events: one chunk per choice, then a finish chunk and [DONE]."""
    base = {k: body[k] for k in ("id", "created", "model", "system_fingerprint")}
    obj = "chat.completion.chunk" if chat else "text_completion"
    for ch in body["choices"]:
        if chat:
            delta = {
                "index": ch["index"],
                "delta": {"role": "assistant", "content": ch["message"]["content"]},
            }
            delta.update({"logprobs": ch["logprobs"], "finish_reason": None})
            yield "data: " + json.dumps({**base, "object": obj, "choices": [delta]}) + "\n\n"
            done = {"index": ch["index"], "delta": {}, "logprobs": None, "finish_reason": ch["finish_reason"]}
            yield "data: " + json.dumps({**base, "object": obj, "choices": [done]}) + "\n\n"
        else:
            yield "data: " + json.dumps({**base, "object": obj, "choices": [ch]}) + "\n\n"
    yield "data: " + json.dumps({**base, "object": obj, "choices": [], "usage": body["usage"]}) + "\n\n"
    yield "data: [DONE]\n\n"


_KINDS = {
    400: "BadRequestError",
    408: "RequestTimeoutError",
    413: "PayloadTooLargeError",
    503: "ServiceUnavailableError",
}


def error_body(
    status: int, message: str, param: str | None = None, kind: str | None = None
) -> dict[str, Any]:
    """OpenAI's error body."""
    kind = kind or _KINDS.get(status, "InternalServerError" if status >= 500 else "BadRequestError")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def _error(status: int, message: str, param: str | None = None, kind: str = "BadRequestError") -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content=error_body(status, message, param, kind))


def build_app(
    engine_ref: Any, api_key: str | None = None, ready: Any = None, limits: RequestLimits | None = None
) -> Any:
    """The FastAPI app; `engine_ref()` returns the engine (None while loading: requests get 503)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI(title="sgpo generator", description="OpenAI-compatible completions from the current policy")

    def engine() -> Engine:
        e = engine_ref()
        if e is None:
            raise _Loading()
        return e  # type: ignore[no-any-return]

    @app.middleware("http")
    async def auth(request: Request, call_next: Any) -> Any:
        if api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return _error(
                    401,
                    "missing or wrong API key; send Authorization: Bearer <key>",
                    None,
                    "AuthenticationError",
                )
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Any:
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        param = ".".join(loc) or None
        msg = "; ".join(
            f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: {e.get('msg')}"
            for e in errs
        )
        return _error(400, msg, param)

    @app.exception_handler(InvalidInputError)
    async def _invalid(_: Request, exc: InvalidInputError) -> Any:
        return _error(400, str(exc), exc.field)

    @app.exception_handler(ServiceError)
    async def _service(_: Request, exc: ServiceError) -> Any:
        if isinstance(exc, _Loading):
            return _error(503, "the model is still loading; retry shortly", None, "ServiceUnavailableError")
        return _error(exc.http_status, exc.message, None, type(exc).__name__)

    @app.get("/health")
    async def health() -> Any:
        if engine_ref() is None:
            return JSONResponse(status_code=503, content={"status": "loading"})
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        e = engine()
        return {
            "object": "list",
            "data": [
                {
                    "id": e.model_name,
                    "object": "model",
                    "created": int(time.time()),
                    "owned_by": "sgpo",
                    "root": e.model_name,
                    "max_model_len": e.max_model_len,
                    "policy_version": e.policy_version,
                }
            ],
        }

    def _check_model(e: Engine, name: str | None) -> None:
        if name is not None and name != e.model_name:
            raise _NotFound(
                f"model {name!r} is not served here; this server serves {e.model_name!r} (see /v1/models)"
            )

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: HTTPRequest) -> Any:
        e = engine()
        _check_model(e, req.model)
        body = await run_cancellable(request, lambda cancel: run_completions(e, req, limits, cancel))
        return (
            StreamingResponse(_sse(body, chat=False), media_type="text/event-stream") if req.stream else body
        )

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: HTTPRequest) -> Any:
        e = engine()
        _check_model(e, req.model)
        body = await run_cancellable(request, lambda cancel: run_chat(e, req, limits, cancel))
        return (
            StreamingResponse(_sse(body, chat=True), media_type="text/event-stream") if req.stream else body
        )

    return app


class _Loading(ServiceError):
    http_status = 503

    def __init__(self) -> None:
        super().__init__("the model is still loading; retry shortly")


class _NotFound(ServiceError):
    http_status = 404
