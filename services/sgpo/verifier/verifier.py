"""MathVerifier: the in-process API (orchestrator, `sgpo eval`, the gRPC servicer, `sgpo verify`).

Per item: extract the answer from the response (and from the gold when it is a solution), settle plain
numbers, choice letters and identical strings here (`extract.decide_fast`), and send the rest to a
worker process running math-verify under a deadline (`pool.WorkerPool`).

Who failed decides the status. The verifier failing (a timeout, a crashed worker, a gold answer it cannot
read) is `unscorable`, never `wrong`: the orchestrator masks it out of the group. The response failing (empty,
no final answer, an answer that is not math, an absurdly long answer) is `wrong`, as in every RL reward:
otherwise a policy that stops answering hard problems would never be penalised. Thread-safe.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from typing import Any

from sgpo.core.errors import InvalidInputError
from sgpo.core.types import Verdict
from sgpo.verifier.config import VerifierConfig
from sgpo.verifier.equivalence import CheckRequest
from sgpo.verifier.extract import decide_fast, extract_answer, extract_gold
from sgpo.verifier.metrics import VerifierMetrics
from sgpo.verifier.pool import Job, WorkerPool

Tolerance = float | Sequence[float] | None
_MAX_SHOWN = 200


def _shown(s: str) -> str:
    return s if len(s) <= _MAX_SHOWN else s[: _MAX_SHOWN - 1] + "…"


def _tolerance(value: Tolerance, index: int) -> tuple[float, ...]:
    if value is None:
        return ()
    values = (value,) if isinstance(value, int | float) else tuple(value)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise InvalidInputError(
                f"tolerances[{index}]", f"must be a non-negative number or a list of them; got {value!r}"
            )
    return tuple(float(v) for v in values)


def prepare(
    gold: str, pred: str, cfg: VerifierConfig, tolerance: tuple[float, ...] = ()
) -> Verdict | CheckRequest:
    """A verdict reached without sympy, or the request a worker must check."""
    if not gold.strip():
        return Verdict("unscorable", "", "gold answer is empty")
    if not pred.strip():
        return Verdict("wrong", "", "response is empty")
    g = extract_gold(gold, cfg.scan_chars)
    if g is None and len(gold) > cfg.scan_chars:
        return Verdict(
            "unscorable", "", f"gold is longer than scan_chars={cfg.scan_chars} with no answer marker"
        )
    if g is not None and not g.raw and len(g.answer) > cfg.max_answer_chars:
        return Verdict(
            "unscorable", "", f"gold answer is longer than max_answer_chars={cfg.max_answer_chars}"
        )
    p = extract_answer(pred, cfg.fallback, cfg.scan_chars)
    if p is None and cfg.fallback != "math_verify":
        return Verdict("wrong", "", f"no answer found (no box, ####, Answer: line; fallback {cfg.fallback})")
    if p is not None and not p.raw and len(p.answer) > cfg.max_answer_chars:
        return Verdict(
            "wrong", _shown(p.answer), f"answer is longer than max_answer_chars={cfg.max_answer_chars}"
        )
    if g is not None and p is not None and not g.raw and not p.raw:
        fast = decide_fast(g.answer, p.answer, cfg.float_rounding, tolerance)
        if fast is not None:
            return Verdict(fast.status, _shown(p.answer), f"{fast.reason} ({p.method})")
    return CheckRequest(
        gold=g.answer if g is not None else gold,
        pred=p.answer if p is not None else pred[-cfg.scan_chars :],
        gold_raw=g is None or g.raw,
        pred_raw=p is None or p.raw,
        tolerance=tolerance,
        float_rounding=cfg.float_rounding,
        strict=cfg.strict,
        allow_set_relation_comp=cfg.allow_set_relation_comp,
        pred_method=p.method if p is not None else "math_verify",
    )


class MathVerifier:
    """Scores (gold, response) pairs as correct / wrong / unscorable. Use as a context manager or `close()`."""

    def __init__(self, config: VerifierConfig | None = None, metrics: VerifierMetrics | None = None) -> None:
        self.config = config or VerifierConfig()
        self.metrics = metrics or VerifierMetrics()
        m = self.metrics
        self._pool = WorkerPool(
            self.config.workers,
            memory_mb=self.config.worker_memory_mb,
            max_tasks=self.config.worker_max_tasks,
            on_restart=lambda reason: m.worker_restarts.labels(reason=reason).inc(),
            on_timeout=m.timeouts.inc,
        )
        m.queue_depth.set_function(self._pool.pending)

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (idempotent)."""
        self._pool.close()

    @property
    def worker_pids(self) -> list[int]:
        return self._pool.pids()

    def wait_ready(self, timeout_s: float | None = 60.0) -> None:
        """Block until the worker processes are up (they start in the background at construction)."""
        if not self._pool.wait_ready(timeout_s):
            raise TimeoutError(f"verifier workers did not start within {timeout_s}s")

    def _validate(
        self,
        items: Sequence[tuple[str, str]],
        deadline_s: float | None,
        tolerances: Sequence[Tolerance] | None,
    ) -> float:
        if isinstance(items, str | bytes) or not isinstance(items, Sequence):
            raise InvalidInputError(
                "items", f"must be a list of (gold, pred) pairs; got {type(items).__name__}"
            )
        if len(items) > self.config.max_batch_items:
            raise InvalidInputError(
                "items",
                f"at most max_batch_items={self.config.max_batch_items} per call; got {len(items)}: split the batch",
            )
        for i, item in enumerate(items):
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise InvalidInputError(f"items[{i}]", f"must be a (gold, pred) pair; got {item!r:.80}")
            for name, value in zip(("gold", "pred"), item, strict=True):
                if not isinstance(value, str):
                    raise InvalidInputError(
                        f"items[{i}].{name}", f"must be a string; got {type(value).__name__}"
                    )
        if tolerances is not None and len(tolerances) != len(items):
            raise InvalidInputError(
                "tolerances",
                f"needs one entry per item (None for none); got {len(tolerances)} for {len(items)}",
            )
        deadline = self.config.deadline_s if deadline_s is None else deadline_s
        if isinstance(deadline, bool) or not isinstance(deadline, int | float) or not 0 < deadline <= 600:
            raise InvalidInputError(
                "deadline_s", f"must be a number of seconds in (0, 600]; got {deadline_s!r}"
            )
        return float(deadline)

    def verify_batch(
        self,
        items: Sequence[tuple[str, str]],
        deadline_s: float | None = None,
        *,
        tolerances: Sequence[Tolerance] | None = None,
        timeout_s: float | None = None,
        cancel: threading.Event | None = None,
    ) -> list[Verdict]:
        """One verdict per (gold, pred) item, in order.

        `deadline_s`: each symbolic check's budget (default `config.deadline_s`). `tolerances`: per item,
        an absolute tolerance (or one per element of a list answer) for numeric answers, OlympiadBench
        style. `timeout_s`: a bound on the whole call (a gRPC deadline); items not started by then are
        unscorable. `cancel`, once set, drops the call's queued checks and kills its running ones (their
        items are unscorable, "cancelled by the caller").
        """
        start = time.monotonic()
        deadline = self._validate(items, deadline_s, tolerances)
        give_up_at = start + timeout_s if timeout_s is not None else math.inf
        out: list[Verdict | None] = [None] * len(items)
        jobs: list[tuple[int, Job]] = []
        call = object()  # this call's queue in the pool (calls take turns)
        m = self.metrics
        for i, (gold, pred) in enumerate(items):
            tol = _tolerance(tolerances[i], i) if tolerances is not None else ()
            planned = prepare(gold, pred, self.config, tol)
            if isinstance(planned, Verdict):
                out[i] = planned
                m.verdicts.labels(status=planned.status, path="fast").inc()
                m.item_latency.labels(path="fast").observe(time.monotonic() - start)
            else:
                jobs.append((i, self._pool.submit(planned, deadline, give_up_at, owner=call)))
        for i, job in jobs:
            remaining = give_up_at - time.monotonic()
            if cancel is None:
                finished = job.done.wait(None if remaining == math.inf else max(0.0, remaining))
            else:
                finished = _wait_or_cancel(job, remaining, cancel)
            if cancel is not None and cancel.is_set():
                for _, other in jobs:
                    other.cancelled = True
                    other.finish(_cancelled_result())
            elif not finished:
                job.cancelled = True
                job.finish(job.result or _deadline_result())
            res = job.result
            assert res is not None
            reason = f"{res.reason} ({job.req.pred_method})" if res.status != "unscorable" else res.reason
            out[i] = Verdict(res.status, _shown(res.extracted), reason)
            m.verdicts.labels(status=res.status, path="symbolic").inc()
            m.item_latency.labels(path="symbolic").observe(job.finished_at - start)
        m.batch_latency.observe(time.monotonic() - start)
        return [v for v in out if v is not None]

    def verify(self, gold: str, pred: str, deadline_s: float | None = None) -> Verdict:
        """One pair (convenience for scripts)."""
        return self.verify_batch([(gold, pred)], deadline_s)[0]


def _wait_or_cancel(job: Job, remaining: float, cancel: threading.Event) -> bool:
    end = time.monotonic() + remaining
    while not cancel.is_set():
        left = end - time.monotonic()
        if left <= 0:
            return False
        if job.done.wait(min(left, 0.05)):
            return True
    return job.done.is_set()


def _cancelled_result() -> Any:
    from sgpo.verifier.equivalence import CheckResult

    return CheckResult("unscorable", "", "cancelled by the caller")


def _deadline_result() -> Any:
    from sgpo.verifier.equivalence import CheckResult

    return CheckResult("unscorable", "", "request deadline passed")
