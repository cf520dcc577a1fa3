"""The `llm` backend: asks any OpenAI-compatible chat endpoint for the earliest wrong paragraph.

The critique prompt is ProcessBench's (Zheng et al. 2024, code/templates/critique_template.txt): the problem,
the response's steps as numbered `<paragraph_i>` blocks, and a request for the index of the earliest wrong
paragraph (-1: none) in `\\boxed{}`; the reference solution is shown when there is one. The last `\\boxed{...}`
of the reply is the answer. A reply without one, an index outside [-1, n-1], a timeout after all retries or
an HTTP error leaves the response `failed` (counted in metrics), never an invented index.

Requests follow the configured profile (`LlmBackend.request_fields`): `chat` sends temperature and
max_tokens, `reasoning` max_completion_tokens and reasoning_effort, both add `extra_body`. An HTTP 400/404/422
that names a request parameter (OpenAI's `error.param`, or the parameter named in its message), and a 401/403,
are configuration errors: every critique would fail the same way, so each is logged at ERROR with the fix and
counted in `sgpo_judge_llm_config_errors_total{param}`, and the judgement's reason starts with
"configuration error".

Plumbing: one `httpx.Client` (thread-safe) with a semaphore that caps requests in flight over all callers;
requests-per-minute and tokens-per-minute token buckets (`sgpo.judge.ratelimit`); a thread pool that fans out
the responses of one request; retries with exponential backoff and jitter on timeouts / connection errors /
429 / 5xx (honouring Retry-After), all within one response's wall-clock budget (`response_budget_s`). Parsed
answers (never failures) are cached in memory and, with `cache_redis_url`, in Redis, shared by replicas and
kept over restarts, keyed by (judge model, sha256 of the request's messages and decoding fields). Identical
requests in flight at once are sent once (the later ones wait for the first): a group re-sent by the
orchestrator after a deadline re-asks only what is neither answered nor in flight. Token usage of each reply
(and its cost at the configured prices) is counted in metrics and `stats()`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from sgpo.judge.config import LlmBackend
from sgpo.judge.metrics import JudgeMetrics
from sgpo.judge.ratelimit import RateLimitTimeout, TokenBucket
from sgpo.judge.types import Located

CRITIQUE_TEMPLATE = """The following is a math problem and a solution (split into paragraphs, enclosed with tags and \
indexed from 0):

[Math Problem]

{problem}
{reference}
[Solution]

{tagged_response}

Your task is to review and critique the solution paragraph by paragraph. Once you identify an error in a \
paragraph, return the index of the paragraph where the earliest error occurs. Otherwise, return the index of -1 \
(which typically denotes "not found").

Please put your final answer (i.e., the index) in \\boxed{{}}."""

REFERENCE_BLOCK = "\n[Reference Solution]\n\n{reference}\n"
_BOXED = re.compile(r"\\boxed\s*\{\s*([^{}]*?)\s*\}")
_INDEX = re.compile(r"^[+-]?\d{1,6}$")
log = logging.getLogger(__name__)
CACHE_PREFIX = "sgpo:judge_cache"


def build_prompt(
    problem: str, steps: Sequence[str], reference_solution: str = "", template: str | None = None
) -> str:
    tagged = "\n\n".join(f"<paragraph_{i}>\n{s}\n</paragraph_{i}>" for i, s in enumerate(steps))
    reference = REFERENCE_BLOCK.format(reference=reference_solution) if reference_solution.strip() else ""
    return (template or CRITIQUE_TEMPLATE).format(
        problem=problem, reference=reference, tagged_response=tagged
    )


def parse_reply(content: str, n_steps: int) -> tuple[int | None, str]:
    """(index, why): the last \\boxed{} of a reply, checked against the number of steps; None when unusable."""
    found = _BOXED.findall(content)
    if not found:
        return None, "unparseable: the reply has no \\boxed{index}"
    raw = found[-1].replace("$", "").strip()
    if not _INDEX.match(raw):
        return None, f"unparseable: \\boxed{{{raw[:40]}}} is not an integer index"
    idx = int(raw)
    if not -1 <= idx < n_steps:
        return None, f"out_of_range: \\boxed{{{idx}}} is not -1 or a paragraph index in [0, {n_steps - 1}]"
    return idx, "ok"


class _Lru:
    def __init__(self, size: int) -> None:
        self.size, self.data, self.lock = size, OrderedDict[str, int](), threading.Lock()

    def get(self, key: str) -> int | None:
        with self.lock:
            if key not in self.data:
                return None
            self.data.move_to_end(key)
            return self.data[key]

    def put(self, key: str, value: int) -> None:
        if self.size <= 0:
            return
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


class _RedisCache:
    """Parsed answers in Redis; an unreachable Redis is a miss (logged at most once a minute), never a failure."""

    def __init__(self, url: str, ttl_s: int) -> None:
        import redis

        from sgpo.common.queue import build_redis_client

        self.ttl_s = ttl_s
        # the queue's client: the password from the URL or SGPO_REDIS_PASSWORD; no retries (a miss is cheap)
        self.client = build_redis_client(url, client_name="sgpo-judge-cache", socket_timeout_s=2.0, retries=0)
        self.errors = redis.RedisError
        self._warned = 0.0

    def _warn(self, e: Exception) -> None:
        now = time.monotonic()
        if now - self._warned > 60:
            self._warned = now
            log.warning("judge cache: Redis unavailable, asking the LLM instead", extra={"error": str(e)})

    def get(self, key: str) -> int | None:
        try:
            raw = self.client.get(key)
        except self.errors as e:
            self._warn(e)
            return None
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return None

    def put(self, key: str, value: int) -> None:
        try:
            self.client.set(key, str(value), ex=self.ttl_s)
        except self.errors as e:
            self._warn(e)

    def close(self) -> None:
        self.client.close()


class _CallFailed(Exception):
    """One request failed; `retry` says whether trying again can help (timeouts, 429, 5xx)."""

    def __init__(
        self, outcome: str, message: str, *, retry: bool, wait_s: float | None = None, param: str = ""
    ) -> None:
        super().__init__(message)
        self.outcome, self.message, self.retry, self.wait_s, self.param = (
            outcome,
            message,
            retry,
            wait_s,
            param,
        )


class _Flight:
    """One critique being asked; identical requests wait for its answer instead of sending their own."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result = Located(None, "llm failed: the request in flight ended without an answer")


def _rejected_param(status: int, text: str, body: dict[str, Any]) -> str | None:
    """The request parameter an HTTP 4xx rejects (a configuration error), or None for a per-item failure.

    OpenAI names it in `error.param` (code unsupported_parameter / unsupported_value); vLLM and others name it
    in the message. `messages` (context too long) is about the item, not the config."""
    if status in (401, 403):
        return "api_key"
    if status not in (400, 404, 422):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        doc = {}
    # OpenAI nests the error ({"error": {...}}); vLLM puts its fields at the top level.
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        err = doc if isinstance(doc, dict) else {}
    message = str(err.get("message") or text)
    # This prompt is too long (even where the message names max_tokens): the item, not the config.
    if "context length" in message.lower() or "maximum context" in message.lower():
        return None
    param = err.get("param")
    if isinstance(param, str) and (param in body or param == "model") and param != "messages":
        return param
    if status == 404 and ("model" in message.lower()):
        return "model"
    for key in body:
        if key not in ("messages", "model") and re.search(rf"(?<![a-z_]){re.escape(key)}(?![a-z_])", message):
            return key
    return None


def _config_fix(param: str, cfg: LlmBackend, table: str = "[judge.backend]") -> str:
    if param in cfg.extra_body:
        return f"remove {param!r} from extra_body in {table}"
    if param in ("temperature", "max_tokens") and cfg.profile == "chat":
        return f'the endpoint looks like a reasoning model: set profile = "reasoning" in {table}'
    if param in ("max_completion_tokens", "reasoning_effort") and cfg.profile == "reasoning":
        return f'the endpoint takes no reasoning-model fields: set profile = "chat" in {table}'
    if param == "model":
        return f"model = {cfg.model!r} is not served there: check the endpoint's /v1/models"
    if param == "api_key":
        return f"the endpoint refused the key: set api_key in {table}"
    return f"the endpoint rejects {param!r}: check {table} (profile, extra_body) against its API"


class LlmLocator:
    """The `llm` backend. Thread-safe; `close()` releases the HTTP connections and the worker threads."""

    name = "llm"

    def __init__(
        self, cfg: LlmBackend, metrics: JudgeMetrics | None = None, table: str = "[judge.backend]"
    ) -> None:
        self.cfg, self.metrics = cfg, metrics
        self.table = table  # where its config lives, for the fixes error messages name
        headers = {"Authorization": f"Bearer {cfg.api_key.get_secret_value()}"} if cfg.api_key else {}
        self._client = httpx.Client(
            base_url=cfg.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s),
            limits=httpx.Limits(
                max_connections=cfg.max_concurrency, max_keepalive_connections=cfg.max_concurrency
            ),
        )
        self._slots = threading.BoundedSemaphore(cfg.max_concurrency)
        # Twice the connections: cache hits and joined requests need not wait behind requests in flight.
        self._pool = ThreadPoolExecutor(max_workers=2 * cfg.max_concurrency, thread_name_prefix="judge-llm")
        self._cache = _Lru(cfg.cache_size)
        self._redis = _RedisCache(cfg.cache_redis_url, cfg.cache_ttl_s) if cfg.cache_redis_url else None
        self._rpm = TokenBucket(cfg.max_requests_per_minute) if cfg.max_requests_per_minute else None
        self._tpm = TokenBucket(cfg.max_tokens_per_minute) if cfg.max_tokens_per_minute else None
        self._flights: dict[str, _Flight] = {}
        self._flights_lock = threading.Lock()
        self._config_logged: dict[str, float] = {}
        self._billed = (0, 0, 0, 0)  # prompt characters, prompt tokens, completion tokens, replies with usage
        self._stats_lock = threading.Lock()
        # asked: critiques wanted (cache hits included); ok / failed: replies used / not; retries: re-sent
        # requests; joined: answered by an identical request already in flight; tokens: the replies' usage
        self._stats: dict[str, float] = dict.fromkeys(
            (
                "llm_asked",
                "llm_cache_hits",
                "llm_redis_hits",
                "llm_joined",
                "llm_ok",
                "llm_failed",
                "llm_retries",
                "llm_config_errors",
                "llm_prompt_tokens",
                "llm_completion_tokens",
                "llm_rate_limit_wait_s",
            ),
            0,
        )
        if cfg.price_prompt_per_mtok or cfg.price_completion_per_mtok:
            self._stats["llm_cost"] = 0.0

    def stats(self) -> dict[str, float]:
        with self._stats_lock:
            return dict(self._stats)

    def _bump(self, key: str, outcome: str | None = None, n: float = 1) -> None:
        with self._stats_lock:
            self._stats[key] = self._stats.get(key, 0) + n
        if self.metrics is not None and outcome is not None:
            self.metrics.llm_calls.labels(outcome).inc()

    def locate(
        self, problem: str, reference_solution: str, step_lists: Sequence[Sequence[str]]
    ) -> list[Located]:
        reference = reference_solution if self.cfg.include_reference else ""
        futures = [self._pool.submit(self._one, problem, reference, steps) for steps in step_lists]
        return [f.result() for f in futures]

    def request_body(self, problem: str, reference: str, steps: Sequence[str]) -> dict[str, Any]:
        return {
            "model": self.cfg.model,
            "messages": [
                {"role": "user", "content": build_prompt(problem, steps, reference, self.cfg.prompt_template)}
            ],
            **self.cfg.request_fields(),
        }

    def cache_key(self, body: dict[str, Any]) -> str:
        """(judge model, digest of everything else the request says): the same key in every replica."""
        rest = {k: v for k, v in body.items() if k != "model"}
        digest = hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()
        return f"{CACHE_PREFIX}:{self.cfg.model}:{digest}"

    def _one(self, problem: str, reference: str, steps: Sequence[str]) -> Located:
        body = self.request_body(problem, reference, steps)
        key = self.cache_key(body)
        self._bump("llm_asked")
        cached = self._cache.get(key)
        if cached is not None:
            self._bump("llm_cache_hits", "cache_hit")
            return Located(cached, f"llm (cached): earliest wrong paragraph {cached}")
        with self._flights_lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.done.wait()
            self._bump("llm_joined", "joined")
            return flight.result
        try:
            flight.result = self._ask(key, body, len(steps))
        finally:
            with self._flights_lock:
                self._flights.pop(key, None)
            flight.done.set()
        return flight.result

    def _ask(self, key: str, body: dict[str, Any], n_steps: int) -> Located:
        if self._redis is not None:
            stored = self._redis.get(key)
            if stored is not None and -1 <= stored < n_steps:
                self._cache.put(key, stored)
                self._bump("llm_redis_hits", "redis_hit")
                return Located(stored, f"llm (cached in Redis): earliest wrong paragraph {stored}")
        start = time.perf_counter()
        try:
            content, finish = self._post_with_retries(body)
        except _CallFailed as e:
            self._bump("llm_failed", e.outcome)
            if e.outcome == "config_error":
                self._config_error(e)
                return Located(None, f"configuration error: {e.message}")
            return Located(None, f"llm failed: {e.message}")
        finally:
            if self.metrics is not None:
                self.metrics.llm_call_latency.observe(time.perf_counter() - start)
        idx, why = parse_reply(content, n_steps)
        if idx is None:
            if finish == "length":
                why = (
                    f"truncated: the critique reached max_tokens = {self.cfg.max_tokens} before its \\boxed{{}} "
                    f"answer (raise max_tokens in {self.table}; a reasoning model spends it on thinking too)"
                )
            self._bump("llm_failed", why.split(":")[0])
            return Located(None, f"llm failed: {why}; reply ends {content[-120:]!r}")
        self._bump("llm_ok", "ok")
        self._cache.put(key, idx)
        if self._redis is not None:
            self._redis.put(key, idx)
        return Located(idx, f"llm: earliest wrong paragraph {idx}")

    def _config_error(self, e: _CallFailed) -> None:
        """Loud: the metric counts every one; the log says it with the fix, once a minute per parameter."""
        known = {"model", "api_key", *self.cfg.request_fields()}
        label = e.param if e.param in known else "other"  # a bounded label set
        self._bump("llm_config_errors")
        if self.metrics is not None:
            self.metrics.llm_config_errors.labels(label).inc()
        now = time.monotonic()
        with self._stats_lock:
            due = now - self._config_logged.get(label, -1e9) > 60
            if due:
                self._config_logged[label] = now
        if due:
            log.error(
                "the LLM endpoint rejects the judge's requests: every critique fails until the config is fixed",
                extra={"param": e.param, "error": e.message, "base_url": self.cfg.base_url},
            )

    def _post_with_retries(self, body: dict[str, Any]) -> tuple[str, str]:
        """(content, finish_reason) of the reply; raises _CallFailed (with the final outcome) when it gives up:
        not retryable, out of attempts, or out of the response's budget."""
        cfg = self.cfg
        deadline = time.monotonic() + cfg.response_budget_s
        prompt_chars = sum(len(m["content"]) for m in body["messages"])
        attempts = cfg.max_retries + 1
        last: _CallFailed | None = None
        made = 0
        for attempt in range(attempts):
            if attempt:
                wait = min(cfg.backoff_max_s, cfg.backoff_s * 2 ** (attempt - 1))
                if last is not None and last.wait_s is not None:
                    wait = min(cfg.backoff_max_s, max(wait, last.wait_s))
                wait *= random.uniform(0.5, 1.0)
                if time.monotonic() + wait >= deadline:
                    break
                self._bump("llm_retries")
                if self.metrics is not None:
                    self.metrics.llm_retries.inc()
                time.sleep(wait)
            made += 1
            try:
                return self._post_once(body, deadline, prompt_chars)
            except _CallFailed as e:
                if not e.retry:
                    raise
                last = e
            if time.monotonic() >= deadline:
                break
        assert last is not None
        spent = f", response_budget_s = {cfg.response_budget_s} spent" if made < attempts else ""
        raise _CallFailed(last.outcome, f"{last.message} (gave up after {made} attempts{spent})", retry=False)

    def _admit(self, deadline: float, est_tokens: float) -> None:
        waited = 0.0
        try:
            if self._rpm is not None:
                waited += self._rpm.acquire(1, deadline)
            if self._tpm is not None:
                waited += self._tpm.acquire(est_tokens, deadline)
        except RateLimitTimeout as e:
            raise _CallFailed(
                "rate_limited",
                f"{e}, past response_budget_s = {self.cfg.response_budget_s} (raise the per-minute limits "
                "or the budget, or lower the load)",
                retry=False,
            ) from None
        if waited:
            self._bump("llm_rate_limit_wait_s", n=waited)
            if self.metrics is not None:
                self.metrics.llm_rate_limit_wait.inc(waited)

    def _post_once(self, body: dict[str, Any], deadline: float, prompt_chars: int) -> tuple[str, str]:
        est_tokens = self._estimate_tokens(prompt_chars)
        self._admit(deadline, est_tokens)
        timeout = max(0.05, min(self.cfg.timeout_s, deadline - time.monotonic()))
        try:
            with self._slots:
                r = self._client.post(
                    "chat/completions",
                    json=body,
                    timeout=httpx.Timeout(timeout, connect=min(self.cfg.connect_timeout_s, timeout)),
                )
        except httpx.TimeoutException as e:
            raise _CallFailed("timeout", f"timed out ({type(e).__name__})", retry=True) from None
        except httpx.TransportError as e:
            raise _CallFailed(
                "connection_error", f"cannot reach {self.cfg.base_url}: {e}", retry=True
            ) from None
        if r.status_code == 429 or r.status_code >= 500:
            retry_after = r.headers.get("retry-after", "")
            wait = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else None
            raise _CallFailed(
                "http_error", f"HTTP {r.status_code} from the endpoint", retry=True, wait_s=wait
            )
        if r.status_code >= 400:
            param = _rejected_param(r.status_code, r.text, body)
            if param is not None:
                raise _CallFailed(
                    "config_error",
                    f"HTTP {r.status_code}: the endpoint rejects parameter {param!r} "
                    f"({_config_fix(param, self.cfg, self.table)}): {r.text[:300]}",
                    retry=False,
                    param=param,
                )
            raise _CallFailed(
                "http_error", f"HTTP {r.status_code} from the endpoint: {r.text[:200]}", retry=False
            )
        try:
            reply = r.json()
            choice = reply["choices"][0]
            content = choice["message"]["content"]
            finish = str(choice.get("finish_reason") or "")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise _CallFailed(
                "malformed", f"malformed reply (not an OpenAI chat completion): {r.text[:200]!r}", retry=False
            ) from None
        self._count_usage(reply.get("usage"), est_tokens, prompt_chars)
        if content is None and finish == "length":
            content = ""  # a reasoning model that spent the whole budget thinking: reported as truncated
        if not isinstance(content, str):
            raise _CallFailed("malformed", "malformed reply: the message content is not text", retry=False)
        return content, finish

    def _estimate_tokens(self, prompt_chars: int) -> float:
        """A request's billed tokens, guessed before sending (the tokens-per-minute admission): the prompt at
        the tokens per character and the completion at the mean the replies so far have billed; before any
        reply, 4 characters a token and the whole completion budget (the first requests are over-charged,
        then refunded by `settle`, rather than a burst overrunning the limit)."""
        with self._stats_lock:
            chars, prompt, completion, n = self._billed
        per_char = prompt / chars if chars and prompt else 0.25
        completion_est = completion / n if n else self.cfg.max_tokens
        return prompt_chars * per_char + completion_est

    def _count_usage(self, usage: Any, est_tokens: float, prompt_chars: int = 0) -> None:
        prompt = completion = 0
        if isinstance(usage, dict):
            p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
            prompt = p if isinstance(p, int) and p >= 0 else 0
            completion = c if isinstance(c, int) and c >= 0 else 0
        if self._tpm is not None:
            # Settle the admission estimate with the billed size (no usage reported: keep the estimate).
            self._tpm.settle((prompt + completion - est_tokens) if prompt or completion else 0.0)
        cost = (
            prompt * self.cfg.price_prompt_per_mtok + completion * self.cfg.price_completion_per_mtok
        ) / 1e6
        with self._stats_lock:
            if prompt or completion:
                chars, p, c, n = self._billed
                self._billed = (chars + prompt_chars, p + prompt, c + completion, n + 1)
            self._stats["llm_prompt_tokens"] += prompt
            self._stats["llm_completion_tokens"] += completion
            if "llm_cost" in self._stats:
                self._stats["llm_cost"] += cost
        if self.metrics is not None:
            self.metrics.llm_tokens.labels("prompt").inc(prompt)
            self.metrics.llm_tokens.labels("completion").inc(completion)
            self.metrics.llm_cost.inc(cost)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
        if self._redis is not None:
            self._redis.close()
