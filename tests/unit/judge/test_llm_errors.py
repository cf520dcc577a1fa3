"""Which HTTP errors of an OpenAI-compatible endpoint are configuration errors (the same for every request)
and which are about one item. Error bodies as OpenAI's API and vLLM's server write them."""

from __future__ import annotations

import json

import pytest

from sgpo.judge.config import LlmBackend
from sgpo.judge.llm import _config_fix, _rejected_param

CHAT = {"model": "m", "messages": [], "temperature": 0.0, "max_tokens": 4096}
REASONING = {"model": "m", "messages": [], "max_completion_tokens": 4096, "reasoning_effort": "low"}


def openai(message: str, param: str | None, code: str) -> str:
    return json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    )


def vllm(message: str) -> str:
    return json.dumps(
        {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400}
    )


@pytest.mark.parametrize(
    ("status", "text", "body", "param"),
    [
        (400, openai("Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                     "'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter"), CHAT, "max_tokens"),
        (400, openai("Unsupported value: 'temperature' does not support 0.0 with this model.", "temperature",
                     "unsupported_value"), CHAT, "temperature"),
        (400, vllm("Unrecognized request argument supplied: reasoning_effort"), REASONING, "reasoning_effort"),
        (404, openai("The model `gpt-9` does not exist", None, "model_not_found"), CHAT, "model"),
        (401, openai("Incorrect API key provided", None, "invalid_api_key"), CHAT, "api_key"),
        # about the item: the prompt is too long (even where the message names max_tokens)
        (400, openai("This model's maximum context length is 8192 tokens.", "messages", "context_length_exceeded"),
         CHAT, None),
        (400, vllm("'max_tokens' is too large: 4096. This model's maximum context length is 4096 tokens and your "
                   "request has 500 input tokens (4096 > 4096 - 500)."), CHAT, None),
        # the generator: a field of its own request model, not one the judge sent
        (400, json.dumps({"error": {"message": "has 900 tokens; the model's context is 512; shorten the prompt",
                                    "param": "prompts[0]"}}), CHAT, None),
        (500, openai("temperature", "temperature", "x"), CHAT, None),
        (400, "<html>bad gateway</html>", CHAT, None),
    ],
)  # fmt: skip
def test_which_errors_are_configuration_errors(
    status: int, text: str, body: dict[str, object], param: str | None
) -> None:
    assert _rejected_param(status, text, body) == param


def test_the_fix_names_what_to_change() -> None:
    assert 'profile = "reasoning" in [judge.backend]' in _config_fix("max_tokens", LlmBackend())
    cascade = _config_fix("temperature", LlmBackend(), "[judge.backend.llm]")
    assert 'set profile = "reasoning" in [judge.backend.llm]' in cascade
    assert 'profile = "chat"' in _config_fix("max_completion_tokens", LlmBackend(profile="reasoning"))
    assert "extra_body" in _config_fix("top_k", LlmBackend(extra_body={"top_k": 1}))
    assert "/v1/models" in _config_fix("model", LlmBackend())
