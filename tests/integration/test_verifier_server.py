"""`sgpo serve verifier` as users start it: batched gRPC Verify, deadlines (per item and the call's own),
bad requests, hostile inputs, health, Prometheus metrics, --print-config, and a clean SIGTERM."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sgpo.common.convert import verdict_from_pb
from sgpo.core import Verdict
from sgpo.v1 import verifier_pb2, verifier_pb2_grpc
from tests.support import ServiceProcess, run_service, sgpo_cmd
from tests.unit.verifier.adversarial import adversarial_items

pytestmark = pytest.mark.integration

HANGS = ("1", "\\boxed{\\int_0^1 e^{-x^{100}} \\sin(x^{99}) dx}")


class Verifier:
    def __init__(self, service: ServiceProcess) -> None:
        self.service = service
        self.channel = grpc.insecure_channel(service.target)
        self.stub = verifier_pb2_grpc.VerifierServiceStub(self.channel)

    def verify(
        self,
        items: list[tuple[str, str]],
        deadline_s: float = 0.0,
        timeout: float = 60,
        **tolerances: list[float],
    ) -> list[Verdict]:
        req = verifier_pb2.VerifyRequest(
            items=[
                verifier_pb2.VerifyItem(gold=g, pred=p, tolerance=tolerances.get(f"item{i}", []))
                for i, (g, p) in enumerate(items)
            ],
            deadline_s=deadline_s,
        )
        return [verdict_from_pb(v) for v in self.stub.Verify(req, timeout=timeout).verdicts]

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.service.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Verifier]:
    env = {"SGPO_VERIFIER__MAX_BATCH_ITEMS": "64", "SGPO_VERIFIER__DEADLINE_S": "30"}
    with run_service("verifier", tmp_path_factory.mktemp("verifier"), env=env) as service:
        v = Verifier(service)
        yield v
        v.channel.close()
        assert service.stop() == 0
        assert "stopped" in service.log()


def test_health_reports_serving_for_the_service(verifier: Verifier) -> None:
    stub = health_pb2_grpc.HealthStub(verifier.channel)
    for name in ("", "sgpo.v1.VerifierService"):
        resp = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_batch_verdicts_in_request_order(verifier: Verifier) -> None:
    got = verifier.verify(
        [
            ("36", "Step 1: 4*9=36\nAnswer: 36"),
            ("36", "Answer: -36"),
            ("x^2+2x+1", "so $\\boxed{(x+1)^2}$"),
            ("Natalia sold 72 clips.\n#### 72", "She sold 48+24=72.\n#### 72"),
            ("0.6054", "0.6055"),
            ("36", "no idea"),
        ],
        item4=[1e-4],
    )
    assert got == [
        Verdict("correct", "36", "identical after normalization (answer_line)"),
        Verdict("wrong", "-36", "numbers differ (answer_line)"),
        Verdict("correct", "(x+1)^2", "equivalent (boxed)"),
        Verdict("correct", "72", "identical after normalization (hashes)"),
        Verdict("correct", "0.6055", "within tolerance (whole)"),
        Verdict("wrong", "", "no answer found in the response (math_verify)"),
    ]


def test_item_deadline_kills_the_check_and_the_server_keeps_serving(verifier: Verifier) -> None:
    [verdict] = verifier.verify([HANGS], deadline_s=0.5)
    assert verdict == Verdict("unscorable", "", "timed out after 0.5s")
    assert verifier.verify([("x+x", "\\boxed{2x}")])[0].status == "correct"
    text = verifier.metrics()
    timeouts = [line for line in text.splitlines() if line.startswith("sgpo_verifier_timeouts_total ")]
    assert timeouts and float(timeouts[0].split()[1]) >= 1
    assert 'sgpo_verifier_worker_restarts_total{reason="timeout"}' in text
    assert 'sgpo_verifier_verdicts_total{path="symbolic",status="correct"}' in text
    assert "sgpo_verifier_item_latency_seconds_bucket" in text
    assert "sgpo_verifier_batch_latency_seconds_count" in text


def test_the_calls_grpc_deadline_bounds_the_answer(verifier: Verifier) -> None:
    # per-item budget 30 s, but the caller only waits 3 s: the server answers in time, unscorable
    [verdict] = verifier.verify([HANGS], deadline_s=30, timeout=3)
    assert verdict.status == "unscorable"
    assert verdict.reason == "request deadline passed" or verdict.reason.startswith("timed out after 2.")


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            verifier_pb2.VerifyRequest(items=[verifier_pb2.VerifyItem(gold="1", pred="1")], deadline_s=-1),
            "deadline_s",
        ),
        (verifier_pb2.VerifyRequest(items=[verifier_pb2.VerifyItem(gold="1", pred="1")] * 65), "items"),
        (
            verifier_pb2.VerifyRequest(items=[verifier_pb2.VerifyItem(gold="1", pred="1", tolerance=[-1.0])]),
            "tolerances[0]",
        ),
    ],
)
def test_bad_requests_are_invalid_argument_naming_the_field(
    verifier: Verifier, request_: verifier_pb2.VerifyRequest, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        verifier.stub.Verify(request_, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}: ")


def test_hostile_inputs_over_grpc(verifier: Verifier) -> None:
    families = {"long", "nested", "odd", "malformed", "tower"}
    items = [
        (g, p)
        for f, g, p in adversarial_items()
        if f in families and "\ud800" not in g + p  # a lone surrogate cannot be sent as a proto string
    ][::5]
    got = verifier.verify(items, deadline_s=0.5, timeout=300)
    assert len(got) == len(items)
    assert {v.status for v in got} <= {"correct", "wrong", "unscorable"}
    assert all(len(v.extracted) <= 200 for v in got)
    assert verifier.verify([("\\frac{1}{2}", "\\boxed{0.5}")])[0].status == "correct"


def test_print_config_and_bad_config_name_the_field() -> None:
    out = subprocess.run(
        sgpo_cmd("serve", "verifier", "--print-config"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    cfg = json.loads(out.stdout)
    assert cfg["workers"] == 2 and cfg["deadline_s"] == 5.0 and cfg["fallback"] == "math_verify"
    bad = subprocess.run(
        sgpo_cmd("serve", "verifier", "--print-config"),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SGPO_VERIFIER__WORKERS": "0"},
    )
    assert bad.returncode == 2
    assert "workers" in bad.stderr and "SGPO_VERIFIER__WORKERS" in bad.stderr
