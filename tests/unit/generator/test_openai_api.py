"""The OpenAI-compatible app on a real hf engine, in-process (the served process is in tests/integration)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sgpo.generator.hf import HFEngine
from sgpo.generator.openai_api import build_app
from sgpo.tasks.arith import format_prompt

PROMPT = format_prompt("Start with 9. Subtract 4.")


@pytest.fixture(scope="module")
def client(tiny_policy: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    engine = HFEngine(str(tiny_policy), device="cpu", dtype="float32", served_model_name="tiny")
    with TestClient(build_app(lambda: engine)) as c:
        yield c
    engine.close()


def test_completion_logprobs_offsets_and_token_ids(client: Any) -> None:
    r = client.post(
        "/v1/completions",
        json={"prompt": PROMPT, "max_tokens": 9, "logprobs": 0, "return_token_ids": True, "seed": 1, "n": 2},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "tiny"
    for ch in body["choices"]:
        lp = ch["logprobs"]
        assert (
            len(ch["token_ids"]) == len(lp["token_logprobs"]) == len(lp["text_offset"]) == len(lp["tokens"])
        )
        assert ch["prompt_token_ids"][0] == 1  # <bos>
        assert ch["policy_version"] == 0
    assert (
        body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )


def test_chat_streams_the_same_text_it_returns(client: Any) -> None:
    req = {
        "messages": [{"role": "user", "content": "Start with 9."}],
        "max_completion_tokens": 8,
        "temperature": 0,
    }
    whole = client.post("/v1/chat/completions", json=req).json()
    with client.stream("POST", "/v1/chat/completions", json={**req, "stream": True}) as r:
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == whole["usage"]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"prompt": PROMPT, "temperature": -1}, "temperature"),
        ("/v1/completions", {"prompt": PROMPT, "logprobs": 5}, "logprobs"),
        ("/v1/completions", {"prompt": PROMPT, "echo": True}, "echo"),
        ("/v1/completions", {"prompt": PROMPT, "presence_penalty": 0.5}, "presence_penalty"),
        ("/v1/completions", {"prompt": []}, "prompt"),
        ("/v1/completions", {}, "prompt"),
        ("/v1/chat/completions", {"messages": []}, "messages"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "max_tokens": 3, "max_completion_tokens": 3},
            "max_completion_tokens",
        ),
        ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ],
)
def test_bad_requests_are_400_naming_the_param(
    client: Any, path: str, body: dict[str, Any], param: str
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param
    assert err["message"]


def test_loading_engine_is_503(tiny_policy: Path) -> None:
    from fastapi.testclient import TestClient

    with TestClient(build_app(lambda: None)) as c:
        assert c.get("/health").status_code == 503
        r = c.post("/v1/completions", json={"prompt": "x"})
        assert r.status_code == 503 and "loading" in r.json()["error"]["message"]
