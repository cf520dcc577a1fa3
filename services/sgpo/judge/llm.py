"""The `llm` backend: asks any OpenAI-compatible chat endpoint for the earliest wrong paragraph.

The critique prompt is ProcessBench's (Zheng et al. 2024, code/templates/critique_template.txt): the problem,
the response's steps as numbered `<paragraph_i>` blocks, and a request for the index of the earliest wrong
paragraph (-1: none) in `\\boxed{}`; the reference solution is shown when there is one. The last `\\boxed{...}`
of the reply is the answer. A reply without one, an index outside [-1, n-1], a timeout after all retries or
an HTTP error leaves the response `failed` (counted in metrics), never an invented index.

Plumbing: one `httpx.Client` (thread-safe) with a semaphore that caps requests in flight over all callers,
a thread pool that fans out the responses of one request, retries with exponential backoff and jitter on
timeouts / connection errors / 429 / 5xx (honouring Retry-After), and an in-memory LRU cache keyed by the
sha256 of the exact request body, which stores parsed answers only (failures are retried next time).
"""

from __future__ import annotations

import hashlib
import json
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


def build_prompt(problem: str, steps: Sequence[str], reference_solution: str = "") -> str:
    tagged = "\n\n".join(f"<paragraph_{i}>\n{s}\n</paragraph_{i}>" for i, s in enumerate(steps))
    reference = REFERENCE_BLOCK.format(reference=reference_solution) if reference_solution.strip() else ""
    return CRITIQUE_TEMPLATE.format(problem=problem, reference=reference, tagged_response=tagged)


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


class _CallFailed(Exception):
    """One request failed; `retry` says whether trying again can help (timeouts, 429, 5xx)."""

    def __init__(self, outcome: str, message: str, *, retry: bool, wait_s: float | None = None) -> None:
        super().__init__(message)
        self.outcome, self.message, self.retry, self.wait_s = outcome, message, retry, wait_s


class LlmLocator:
    """The `llm` backend. Thread-safe; `close()` releases the HTTP connections and the worker threads."""

    name = "llm"

    def __init__(self, cfg: LlmBackend, metrics: JudgeMetrics | None = None) -> None:
        self.cfg, self.metrics = cfg, metrics
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
        self._pool = ThreadPoolExecutor(max_workers=cfg.max_concurrency, thread_name_prefix="judge-llm")
        self._cache = _Lru(cfg.cache_size)
        self._stats_lock = threading.Lock()
        # asked: critiques wanted (cache hits included); ok / failed: replies used / not; retries: re-sent requests
        self._stats = {"llm_asked": 0, "llm_cache_hits": 0, "llm_ok": 0, "llm_failed": 0, "llm_retries": 0}

    def stats(self) -> dict[str, int]:
        with self._stats_lock:
            return dict(self._stats)

    def _bump(self, key: str, outcome: str | None = None) -> None:
        with self._stats_lock:
            self._stats[key] += 1
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
            "messages": [{"role": "user", "content": build_prompt(problem, steps, reference)}],
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
        }

    def _one(self, problem: str, reference: str, steps: Sequence[str]) -> Located:
        body = self.request_body(problem, reference, steps)
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        self._bump("llm_asked")
        cached = self._cache.get(key)
        if cached is not None:
            self._bump("llm_cache_hits", "cache_hit")
            return Located(cached, f"llm (cached): earliest wrong paragraph {cached}")
        start = time.perf_counter()
        try:
            content = self._post_with_retries(body)
        except _CallFailed as e:
            self._bump("llm_failed", e.outcome)
            return Located(None, f"llm failed: {e.message}")
        finally:
            if self.metrics is not None:
                self.metrics.llm_call_latency.observe(time.perf_counter() - start)
        idx, why = parse_reply(content, len(steps))
        if idx is None:
            self._bump("llm_failed", why.split(":")[0])
            return Located(None, f"llm failed: {why}; reply ends {content[-120:]!r}")
        self._bump("llm_ok", "ok")
        self._cache.put(key, idx)
        return Located(idx, f"llm: earliest wrong paragraph {idx}")

    def _post_with_retries(self, body: dict[str, Any]) -> str:
        """The reply's message content; raises _CallFailed (with the final outcome) when it gives up."""
        attempts = self.cfg.max_retries + 1
        last: _CallFailed | None = None
        for attempt in range(attempts):
            if attempt:
                self._bump("llm_retries")
                if self.metrics is not None:
                    self.metrics.llm_retries.inc()
                wait = min(self.cfg.backoff_max_s, self.cfg.backoff_s * 2 ** (attempt - 1))
                if last is not None and last.wait_s is not None:
                    wait = min(self.cfg.backoff_max_s, max(wait, last.wait_s))
                time.sleep(wait * random.uniform(0.5, 1.0))
            try:
                return self._post_once(body)
            except _CallFailed as e:
                if not e.retry:
                    raise
                last = e
        assert last is not None
        raise _CallFailed(last.outcome, f"{last.message} (gave up after {attempts} attempts)", retry=False)

    def _post_once(self, body: dict[str, Any]) -> str:
        try:
            with self._slots:
                r = self._client.post("chat/completions", json=body)
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
            raise _CallFailed(
                "http_error", f"HTTP {r.status_code} from the endpoint: {r.text[:200]}", retry=False
            )
        try:
            content = r.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _CallFailed(
                "malformed", f"malformed reply (not an OpenAI chat completion): {r.text[:200]!r}", retry=False
            ) from None
        if not isinstance(content, str):
            raise _CallFailed("malformed", "malformed reply: the message content is not text", retry=False)
        return content

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
