"""MathVerifier with its real worker processes: verdicts, deadlines, crashes, threads, bad input, metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sgpo.core import InvalidInputError, Verdict
from sgpo.verifier import MathVerifier, VerifierConfig

# sympy tries to integrate this symbolically: it does not return within minutes.
HANGS = ("1", "\\boxed{\\int_0^1 e^{-x^{100}} \\sin(x^{99}) dx}")


def test_verdicts_for_common_answer_shapes(verifier: MathVerifier) -> None:
    items = [
        ("36", "Step 1: 4*9=36\nAnswer: 36"),
        ("36", "Step 1: 4*9=35\nAnswer: 35"),
        ("\\frac{1}{2}", "So the probability is $\\boxed{\\dfrac{1}{2}}$."),
        ("x^2+2x+1", "Expanding, we get $\\boxed{(x+1)^2}$."),
        ("\\sqrt{2}", "The length is \\boxed{2^{1/2}}"),
        ("[0, 1)", "$x \\in \\boxed{[0, 2)}$"),
        ("Natalia sold 72 clips in total.\n#### 72", "She sold 48+24=72 clips.\n#### 72"),
        ("025", "The answer is $\\boxed{25}$."),
        ("C", "The answer is \\textbf{(C)}."),
        ("36", "I could not finish the problem."),
        ("36", ""),
    ]
    got = verifier.verify_batch(items)
    assert [v.status for v in got] == [
        "correct",
        "wrong",
        "correct",
        "correct",
        "correct",
        "wrong",
        "correct",
        "correct",
        "correct",
        "wrong",
        "wrong",
    ]
    assert got[0].extracted == "36" and "answer_line" in got[0].reason
    assert got[2].extracted == "\\dfrac{1}{2}"
    assert got[3].extracted == "(x+1)^2" and got[3].reason == "equivalent (boxed)"
    assert got[9].reason.startswith("no answer found in the response")
    assert got[10].reason == "response is empty"


def test_an_unparseable_answer_is_the_responses_failure(verifier: MathVerifier) -> None:
    got = verifier.verify_batch(
        [("\\frac{1}{2}", "\\boxed{\\frac{1}{}}"), ("x^2", "\\boxed{\\sqrt[}"), ("7", "\\boxed{seven}")]
    )
    assert [v.status for v in got] == ["wrong", "wrong", "wrong"]
    assert "parse" in got[0].reason and "parse" in got[1].reason


def test_an_unreadable_gold_is_the_verifiers_failure(verifier: MathVerifier) -> None:
    got = verifier.verify_batch([("\\frac{1}{", "\\boxed{2}"), ("", "Answer: 3")])
    assert [v.status for v in got] == ["unscorable", "unscorable"]


def test_a_hanging_item_times_out_and_its_worker_is_replaced() -> None:
    with MathVerifier(VerifierConfig(workers=1, deadline_s=0.5)) as v:
        v.wait_ready()
        before = v.worker_pids
        start = time.monotonic()
        verdict = v.verify_batch([HANGS])[0]
        elapsed = time.monotonic() - start
        assert verdict.status == "unscorable"
        assert verdict.reason == "timed out after 0.5s"
        assert elapsed < 0.5 + 10  # bounded by the deadline, not by sympy (which would take hours)
        assert v.worker_pids != before
        for pid in before:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert v.verify("x^2", "\\boxed{x \\cdot x}") == Verdict(
            "correct", "x \\cdot x", "equivalent (boxed)"
        )
        metrics = v.metrics.registry
        assert metrics.get_sample_value("sgpo_verifier_timeouts_total") == 1
        assert metrics.get_sample_value("sgpo_verifier_worker_restarts_total", {"reason": "timeout"}) == 1


def test_per_call_deadline_overrides_the_default(verifier: MathVerifier) -> None:
    before = verifier.metrics.registry.get_sample_value("sgpo_verifier_timeouts_total") or 0
    verdict = verifier.verify_batch([HANGS], deadline_s=0.3)[0]
    assert verdict == Verdict("unscorable", "", "timed out after 0.3s")
    assert verifier.metrics.registry.get_sample_value("sgpo_verifier_timeouts_total") == before + 1


def test_a_worker_that_dies_mid_check_is_replaced() -> None:
    with MathVerifier(VerifierConfig(workers=1, deadline_s=30)) as v:
        v.wait_ready()
        [pid] = v.worker_pids
        threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
        verdict = v.verify_batch([HANGS])[0]
        assert verdict.status == "unscorable"
        assert "died" in verdict.reason
        assert v.verify("2x", "\\boxed{x+x}").status == "correct"
        assert len(v.worker_pids) == 1 and v.worker_pids != [pid]
        assert (
            v.metrics.registry.get_sample_value("sgpo_verifier_worker_restarts_total", {"reason": "crash"})
            == 1
        )


def test_request_timeout_bounds_the_whole_call() -> None:
    with MathVerifier(VerifierConfig(workers=1, deadline_s=5)) as v:
        v.wait_ready()
        start = time.monotonic()
        got = v.verify_batch([HANGS, HANGS, ("2", "2")], timeout_s=0.5)
        elapsed = time.monotonic() - start
        assert [x.status for x in got] == ["unscorable", "unscorable", "correct"]
        # the worker's kill and the caller's give-up fire at the same instant: either reason is right
        assert got[0].reason in ("timed out after 0.5s", "request deadline passed")
        assert got[1].reason in (
            "request deadline passed",
            "request deadline passed before a worker was free",
        )
        assert elapsed < 5  # the per-item deadline alone would have allowed 10 s


def test_worker_is_recycled_after_max_tasks() -> None:
    with MathVerifier(VerifierConfig(workers=1, worker_max_tasks=2)) as v:
        v.wait_ready()
        first = v.worker_pids
        got = v.verify_batch([("x+1", f"\\boxed{{1+x+{i}-{i}}}") for i in range(3)])
        assert [x.status for x in got] == ["correct"] * 3
        assert v.verify("y", "\\boxed{y}").status == "correct"
        assert len(v.worker_pids) == 1 and v.worker_pids != first
        assert (
            v.metrics.registry.get_sample_value("sgpo_verifier_worker_restarts_total", {"reason": "recycle"})
            == 1
        )


def test_thread_safe_under_concurrent_callers(verifier: MathVerifier) -> None:
    def call(i: int) -> list[str]:
        items = [(f"{i}x+1", f"\\boxed{{1+{i}x}}"), (str(i), f"Answer: {i + 1}"), (f"{i}", f"\\boxed{{{i}}}")]
        return [v.status for v in verifier.verify_batch(items)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(24)))
    assert results == [["correct", "wrong", "correct"]] * 24


def test_tolerances_are_absolute_and_per_element(verifier: MathVerifier) -> None:
    got = verifier.verify_batch(
        [
            ("7 \\times 10^{35}, 0.002", "0.001, 7.1 \\cdot 10^{35}"),
            ("7 \\times 10^{35}", "7.1 \\cdot 10^{35}"),
            ("0.6054", "0.6055"),
            ("0.6054", "0.6055"),
        ],
        tolerances=[[1e34, 0.001], [1e33], 1e-4, None],
    )
    assert [v.status for v in got] == ["correct", "wrong", "correct", "wrong"]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda v: v.verify_batch("36"), "items"),
        (lambda v: v.verify_batch([("36",)]), "items[0]"),
        (lambda v: v.verify_batch([("36", "36"), ("36", 36)]), "items[1].pred"),
        (lambda v: v.verify_batch([(None, "36")]), "items[0].gold"),
        (lambda v: v.verify_batch([("1", "1")], deadline_s=0), "deadline_s"),
        (lambda v: v.verify_batch([("1", "1")], deadline_s=-1), "deadline_s"),
        (lambda v: v.verify_batch([("1", "1")], tolerances=[1, 2]), "tolerances"),
        (lambda v: v.verify_batch([("1", "1")], tolerances=[-1]), "tolerances[0]"),
        (lambda v: v.verify_batch([("1", "1")] * 10_001), "items"),
    ],
)
def test_bad_input_names_the_field(verifier: MathVerifier, call: object, field: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        call(verifier)  # type: ignore[operator]
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_close_stops_workers_and_is_idempotent() -> None:
    v = MathVerifier(VerifierConfig(workers=2))
    v.wait_ready()
    pids = v.worker_pids
    assert len(pids) == 2
    assert v.verify("1/2", "\\boxed{0.5}").status == "correct"
    v.close()
    v.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(RuntimeError, match="closed"):
        v.verify("x", "\\boxed{x+0}")


def test_fast_path_never_waits_for_workers() -> None:
    with MathVerifier(VerifierConfig(workers=1)) as v:
        got = v.verify_batch([("36", "Answer: 36")] * 100)  # before the worker is necessarily up
        assert {x.status for x in got} == {"correct"}
        registry = v.metrics.registry
        assert (
            registry.get_sample_value("sgpo_verifier_verdicts_total", {"status": "correct", "path": "fast"})
            == 100
        )
        assert registry.get_sample_value("sgpo_verifier_batch_latency_seconds_count") == 1


def test_a_hung_worker_does_not_outlive_a_killed_service() -> None:
    code = (
        "from sgpo.verifier import MathVerifier, VerifierConfig\n"
        "v = MathVerifier(VerifierConfig(workers=1, deadline_s=300))\n"
        "v.wait_ready()\n"
        "print(v.worker_pids[0], flush=True)\n"
        f"v.verify_batch([{HANGS!r}])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    time.sleep(1.0)  # the worker is now deep in sympy
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"worker {pid} was still running 60 s after its service was killed")
