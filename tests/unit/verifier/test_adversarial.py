"""Hostile inputs (>= 300, generated): every item comes back within its deadline, the verifier keeps
serving, and memory stays bounded. CI uses a 0.5 s deadline; the `slow` run uses the default 5 s."""

from __future__ import annotations

import gc
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sgpo.core import Verdict
from sgpo.verifier import MathVerifier, VerifierConfig
from sgpo.verifier.pool import worker_rss_mb
from tests.unit.verifier.adversarial import adversarial_items

# Killing a worker, reading the pipe and scheduling on a shared 2-core machine: a bound, not a speed.
SLACK_S = 5.0


def _rss_mb() -> float:
    return worker_rss_mb(os.getpid())


def _run(deadline_s: float) -> None:
    items = adversarial_items()
    assert len(items) >= 300
    cfg = VerifierConfig(workers=2, deadline_s=deadline_s, worker_memory_mb=1024)
    with MathVerifier(cfg) as v:
        v.wait_ready()
        gc.collect()
        rss_before = _rss_mb()

        def one(item: tuple[str, str, str]) -> tuple[str, str, str, Verdict, float]:
            family, gold, pred = item
            start = time.monotonic()
            verdict = v.verify_batch([(gold, pred)])[0]
            return family, gold, pred, verdict, time.monotonic() - start

        # two callers for two workers: no call waits behind another caller's item
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(one, items))

        for family, gold, pred, verdict, elapsed in results:
            where = f"{family}: gold {gold[:40]!r} pred {pred[:40]!r} -> {verdict}"
            assert elapsed <= deadline_s + SLACK_S, f"took {elapsed:.1f}s; {where}"
            assert verdict.status in ("correct", "wrong", "unscorable"), where
            assert verdict.reason, where
            assert len(verdict.extracted) <= 200, where
            if family == "hang":
                assert verdict.status in ("unscorable", "wrong"), where
            if family == "tower" and gold != pred and "boxed" not in pred:
                assert verdict.status != "correct", where
            if family in ("nested", "empty") and not gold.strip():
                assert verdict.status == "unscorable", where

        hangs = [r for r in results if r[0] == "hang"]
        assert any(r[3].reason.startswith("timed out") for r in hangs)  # the kill path was exercised
        # still serving: fresh items are scored right, by live workers, with nothing left queued
        assert v.verify_batch(
            [("x^2+1", "\\boxed{1+x^2}"), ("36", "Answer: 36"), ("\\frac12", "\\boxed{0.4}")]
        ) == [
            Verdict("correct", "1+x^2", "equivalent (boxed)"),
            Verdict("correct", "36", "identical after normalization (answer_line)"),
            Verdict("wrong", "0.4", "numbers differ (boxed)"),
        ]
        assert len(v.worker_pids) == 2
        for pid in v.worker_pids:
            os.kill(pid, 0)
            assert worker_rss_mb(pid) < cfg.worker_memory_mb
        assert v._pool.pending() == 0
        del results
        gc.collect()
        assert _rss_mb() - rss_before < 300, "the caller's memory grew by more than 300 MiB"


def test_adversarial_inputs_short_deadline() -> None:
    _run(deadline_s=0.5)


@pytest.mark.slow
def test_adversarial_inputs_default_deadline() -> None:
    _run(deadline_s=VerifierConfig().deadline_s)
