"""`sgpo serve generator` as users run it: gRPC Generate / UpdateWeights / GetInfo, the OpenAI HTTP API, metrics."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from sgpo.tasks.arith import format_prompt
from sgpo.tasks.tiny import build_tiny_policy
from sgpo.v1 import common_pb2, generator_pb2, generator_pb2_grpc
from tests.support import ServiceProcess, free_port, run_service

pytestmark = pytest.mark.integration

PROMPT = format_prompt("Start with 7. Add 5.")
API_KEY = "test-key"


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("policies")
    return {"v0": build_tiny_policy(root / "v0", seed=0), "v1": build_tiny_policy(root / "v1", seed=1)}


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, policies: dict[str, Path]
) -> Iterator[tuple[ServiceProcess, int]]:
    http_port = free_port()
    env = {
        "SGPO_GENERATOR__MODEL": str(policies["v0"]),
        "SGPO_GENERATOR__SERVED_MODEL_NAME": "tiny",
        "SGPO_GENERATOR__HTTP_PORT": str(http_port),
        "SGPO_GENERATOR__API_KEY": API_KEY,
        "SGPO_GENERATOR__THREADS": "1",
    }
    with run_service("generator", tmp_path_factory.mktemp("generator"), env=env) as svc:
        yield svc, http_port


@pytest.fixture(scope="module")
def stub(service: tuple[ServiceProcess, int]) -> Iterator[Any]:
    with grpc.insecure_channel(service[0].target) as channel:
        yield generator_pb2_grpc.GeneratorServiceStub(channel)


def _sampling(**kw: Any) -> common_pb2.SamplingParams:
    base: dict[str, Any] = {"n": 2, "temperature": 1.0, "top_p": 1.0, "max_tokens": 24, "seed": 5}
    base.update(kw)
    return common_pb2.SamplingParams(**base)


def test_grpc_generate_returns_complete_records(stub: Any) -> None:
    resp = stub.Generate(
        generator_pb2.GenerateRequest(prompts=[PROMPT, "Start"], sampling=_sampling()), timeout=60
    )
    assert len(resp.results) == 2
    for r in resp.results:
        assert len(r.prompt_token_ids) > 0
        assert len(r.completions) == 2
        for c in r.completions:
            assert len(c.token_ids) == len(c.logprobs) == len(c.token_char_starts) > 0
            assert c.finish_reason in ("stop", "length")
            assert c.policy_version == 0
    again = stub.Generate(
        generator_pb2.GenerateRequest(prompts=[PROMPT, "Start"], sampling=_sampling()), timeout=60
    )
    assert again == resp
    info = stub.GetInfo(generator_pb2.GetInfoRequest(), timeout=10)
    assert (info.model, info.engine, info.policy_version) == ("tiny", "hf", 0)


@pytest.mark.parametrize(
    ("sampling", "field"),
    [
        ({"temperature": -1.0}, "sampling.temperature"),
        ({"top_p": 1.5}, "sampling.top_p"),
        ({"n": 0}, "sampling.n"),
        ({"max_tokens": 0}, "sampling.max_tokens"),
    ],
)
def test_grpc_bad_sampling_is_invalid_argument_naming_the_field(
    stub: Any, sampling: dict[str, Any], field: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(
            generator_pb2.GenerateRequest(prompts=[PROMPT], sampling=_sampling(**sampling)), timeout=30
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.value.details()


def test_grpc_empty_prompt_and_missing_sampling_are_invalid_argument(stub: Any) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(generator_pb2.GenerateRequest(prompts=[PROMPT, ""], sampling=_sampling()), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "prompts[1]" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(generator_pb2.GenerateRequest(prompts=[PROMPT]), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sampling" in err.value.details()


def test_openai_client_completions_chat_and_models(service: tuple[ServiceProcess, int]) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{service[1]}/v1", api_key=API_KEY, max_retries=0)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    comp = client.completions.create(
        model="tiny", prompt=[PROMPT, "Start"], max_tokens=12, n=2, seed=3, logprobs=0, stop=["\n\n"]
    )
    assert len(comp.choices) == 4
    for ch in comp.choices:
        assert ch.finish_reason in ("stop", "length")
        assert ch.logprobs is not None
        assert len(ch.logprobs.token_logprobs) == len(ch.logprobs.text_offset) <= 12
        assert all(lp <= 0 for lp in ch.logprobs.token_logprobs)
    assert comp.usage.completion_tokens == sum(len(ch.logprobs.token_logprobs) for ch in comp.choices)
    assert comp.system_fingerprint == "policy-v0"
    chat = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Start with 7. Add 5."}],
        max_tokens=10,
        temperature=0.0,
        logprobs=True,
    )
    # The chat template renders a user message as format_prompt(problem), so chat == completion on it.
    same = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=10, temperature=0.0)
    assert chat.choices[0].message.content == same.choices[0].text
    assert chat.choices[0].logprobs is not None and len(chat.choices[0].logprobs.content) > 0
    stream = client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=10, temperature=0.0, stream=True
    )
    assert "".join(ev.choices[0].text for ev in stream if ev.choices) == same.choices[0].text


def test_http_errors_are_openai_shaped(service: tuple[ServiceProcess, int]) -> None:
    base = f"http://127.0.0.1:{service[1]}"
    auth = {"Authorization": f"Bearer {API_KEY}"}
    r = httpx.post(f"{base}/v1/completions", json={"prompt": PROMPT})
    assert r.status_code == 401
    r = httpx.post(f"{base}/v1/completions", json={"prompt": PROMPT, "top_p": 2.0}, headers=auth)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "top_p"
    r = httpx.post(f"{base}/v1/completions", json={"prompt": PROMPT, "n": 0}, headers=auth)
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    r = httpx.post(f"{base}/v1/completions", json={"prompt": PROMPT, "model": "gpt-9"}, headers=auth)
    assert r.status_code == 404 and "tiny" in r.json()["error"]["message"]
    r = httpx.post(f"{base}/v1/completions", json={"prompt": PROMPT, "best_of": 3}, headers=auth)
    assert r.status_code == 400 and r.json()["error"]["param"] == "best_of"
    r = httpx.post(f"{base}/v1/completions", json={"prompt": ""}, headers=auth)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompts[0]"
    assert httpx.get(f"{base}/health").status_code == 200


def test_update_weights_in_flight_then_rejects_corrupt(
    stub: Any, service: tuple[ServiceProcess, int], policies: dict[str, Path], tmp_path: Path
) -> None:
    """Requests racing UpdateWeights all succeed and report a version; a bad uri leaves v1 serving."""
    greedy = _sampling(n=1, temperature=0.0, max_tokens=40)
    req = generator_pb2.GenerateRequest(prompts=[PROMPT] * 4, sampling=greedy)
    results: list[Any] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            for _ in range(4):
                results.append(stub.Generate(req, timeout=120))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    resp = stub.UpdateWeights(
        generator_pb2.UpdateWeightsRequest(version=1, uri=str(policies["v1"])), timeout=120
    )
    for t in threads:
        t.join()
    assert resp.version == 1
    assert not errors
    by_version: dict[int, set[tuple[int, ...]]] = {}
    for r in results:
        for pc in r.results:
            c = pc.completions[0]
            by_version.setdefault(c.policy_version, set()).add(tuple(c.token_ids))
    assert set(by_version) <= {0, 1}
    assert all(len(v) == 1 for v in by_version.values()), "each version gives one greedy answer"
    after = stub.Generate(req, timeout=60)
    assert {pc.completions[0].policy_version for pc in after.results} == {1}

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    for uri in (str(bad), str(tmp_path / "missing")):
        with pytest.raises(grpc.RpcError) as err:
            stub.UpdateWeights(generator_pb2.UpdateWeightsRequest(version=2, uri=uri), timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "uri" in err.value.details()
    assert stub.GetInfo(generator_pb2.GetInfoRequest(), timeout=10).policy_version == 1
    assert stub.Generate(req, timeout=60) == after

    metrics = httpx.get(f"http://127.0.0.1:{service[0].metrics_port}/metrics").text
    assert 'sgpo_generator_weight_updates_total{result="ok"} 1.0' in metrics
    assert 'sgpo_generator_weight_updates_total{result="rejected"} 2.0' in metrics
    assert "sgpo_generator_policy_version 1.0" in metrics
    assert 'sgpo_generator_requests_total{code="OK",transport="grpc"}' in metrics
