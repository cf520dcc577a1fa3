"""`POST /v1/score_groups` and the OpenRLHF path against the real services: `sgpo serve verifier` and `sgpo serve
judge` (symbolic backend) started as users start them, the judge calling the verifier over gRPC. Rewards are
checked against sgpo.core; auth, limits and metrics are the judge's other HTTP APIs'."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sgpo.core import AlgoConfig, ColoringParams, compute_colored_reward
from sgpo.integrations.client import ScoringClient, ScoringError
from tests.support import ServiceProcess, free_port, run_service

pytestmark = pytest.mark.integration

KEY = "score-key-1"
PROBLEM = "Start with 7. Add 5. Multiply by 3. Subtract 4."
REFERENCE = "Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 36\nStep 3: 36 - 4 = 32\nAnswer: 32"
RIGHT = REFERENCE
RIGHT_TERSE = "7 + 5 = 12\n12 * 3 = 36\n36 - 4 = 32\nAnswer: 32"
SLIP = "Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 35\nStep 3: 35 - 4 = 31\nAnswer: 31"  # first error: step 1
EARLY = "Step 1: 7 + 5 = 13\nStep 2: 13 * 3 = 39\nStep 3: 39 - 4 = 35\nAnswer: 35"  # first error: step 0
LATE = "Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 36\nStep 3: 36 - 4 = 30\nAnswer: 30"  # first error: step 2


def group(*completions: str, answer: str = "32", reference: str = REFERENCE) -> dict[str, object]:
    return {
        "problem": PROBLEM,
        "answer": answer,
        "reference_solution": reference,
        "completions": list(completions),
    }


class Judge:
    def __init__(self, service: ServiceProcess, http_port: int) -> None:
        self.service, self.url = service, f"http://127.0.0.1:{http_port}"
        self.http = httpx.Client(base_url=self.url, timeout=60, headers={"X-API-Key": KEY})

    def score(self, *groups: dict[str, object]) -> httpx.Response:
        return self.http.post("/v1/score_groups", json={"groups": list(groups)})


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with run_service(
        "verifier", tmp_path_factory.mktemp("verifier"), env={"SGPO_VERIFIER__WORKERS": "1"}
    ) as v:
        yield v


def start_judge(
    tmp: Path, verifier: ServiceProcess | None, extra: dict[str, str] | None = None
) -> tuple[Iterator[ServiceProcess], int]:
    http_port = free_port()
    env = {
        "SGPO_JUDGE__HTTP_PORT": str(http_port),
        "SGPO_JUDGE__API_KEYS": json.dumps([KEY]),
        "SGPO_JUDGE__MAX_ITEMS": "12",
        "SGPO_JUDGE__SCORING__N_SAMPLES_PER_PROMPT": "3",
        "SGPO_JUDGE__SCORING__GROUP_WAIT_S": "3",
        **({"SGPO_JUDGE__SCORING__VERIFIER": verifier.target} if verifier else {}),
        **(extra or {}),
    }
    return run_service("judge", tmp, env=env), http_port


@pytest.fixture(scope="module")
def judge(tmp_path_factory: pytest.TempPathFactory, verifier: ServiceProcess) -> Iterator[Judge]:
    ctx, port = start_judge(tmp_path_factory.mktemp("judge"), verifier)
    with ctx as service:
        j = Judge(service, port)
        yield j
        j.http.close()


def test_groups_mixed_all_positive_all_negative(judge: Judge) -> None:
    resp = judge.score(group(RIGHT, SLIP, RIGHT_TERSE), group(RIGHT, RIGHT_TERSE), group(SLIP, EARLY, LATE))
    assert resp.status_code == 200, resp.text
    mixed, positive, negative = resp.json()["groups"]

    assert mixed["kind"] == "mixed" and not mixed["colored"] and not mixed["uncolorable"]
    assert mixed["rewards"] == [
        1.0,
        0.0,
        1.0,
    ]  # color_scope all_negative: a mixed group's wrong answer keeps 0
    assert [c["verdict"] for c in mixed["completions"]] == ["correct", "wrong", "correct"]
    assert [c["judge_status"] for c in mixed["completions"]] == [None, None, None]

    assert positive["kind"] == "all_positive" and positive["rewards"] == [1.0, 1.0]

    assert negative["kind"] == "all_negative" and negative["colored"] and negative["judge_error"] is None
    cs = negative["completions"]
    assert [c["first_error_step"] for c in cs] == [1, 0, 2]
    assert [c["extracted"] for c in cs] == ["31", "35", "30"]
    assert all(c["colored"] and c["judge_status"] == "ok" for c in cs)
    # rewards are sgpo.core's colored rewards of the rts the judge measured, ordered by how late the first error is
    params = ColoringParams()
    assert negative["rewards"] == pytest.approx([compute_colored_reward(c["rts"], params) for c in cs])
    assert cs[1]["rts"] < cs[0]["rts"] < cs[2]["rts"]
    assert 0.0 < negative["rewards"][1] < negative["rewards"][0] < negative["rewards"][2] < params.r_max

    summary = resp.json()["summary"]
    assert summary == {
        "groups": 3,
        "completions": 8,
        "all_negative": 1,
        "colored": 1,
        "uncolorable": 0,
        "colored_completions": 3,
    }


def test_unscorable_items_get_zero_and_no_judgement(judge: Judge) -> None:
    resp = judge.score(group(RIGHT, SLIP, answer="\\frac{1}{"))  # a gold answer the verifier cannot parse
    assert resp.status_code == 200, resp.text
    (g,) = resp.json()["groups"]
    assert g["kind"] == "unscorable" and g["rewards"] == [0.0, 0.0] and not g["colored"]
    assert all(c["verdict"] == "unscorable" and c["judge_status"] is None for c in g["completions"])
    assert "gold answer" in g["completions"][0]["verdict_reason"]


def test_a_lone_completion_gets_its_verdict_and_is_never_colored(judge: Judge) -> None:
    """Validation passes sample one completion per prompt (verl's val n = 1): scored, not colored."""
    resp = judge.score(group(SLIP), group(RIGHT))
    assert resp.status_code == 200, resp.text
    wrong, right = resp.json()["groups"]
    assert wrong["rewards"] == [0.0] and not wrong["colored"] and not wrong["uncolorable"]
    assert wrong["completions"][0]["verdict"] == "wrong" and wrong["completions"][0]["judge_status"] is None
    assert right["rewards"] == [1.0] and right["completions"][0]["verdict"] == "correct"
    assert wrong["kind"] == right["kind"] == "unscorable"  # sgpo.core: a group needs 2 scorable answers


def test_empty_completion_is_colored_with_rts_zero(judge: Judge) -> None:
    (g,) = judge.score(group("", SLIP)).json()["groups"]
    assert g["colored"] and g["completions"][0]["rts"] == 0.0
    assert g["rewards"][0] == pytest.approx(compute_colored_reward(0.0, ColoringParams()))


def test_bad_requests_are_refused_with_the_judge_api_error_body(judge: Judge) -> None:
    r = httpx.post(f"{judge.url}/v1/score_groups", json={"groups": [group(RIGHT, SLIP)]})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    r = judge.score(group())
    assert r.status_code == 422 and r.json()["error"]["field"] == "groups.0.completions"
    assert "got none" in r.json()["error"]["message"]
    r = judge.score(*[group(RIGHT, SLIP, LATE)] * 5)  # 15 completions > max_items = 12
    assert r.status_code == 413 and "max_items = 12" in r.json()["error"]["message"]
    r = judge.http.post(
        "/v1/score_groups", json={"groups": [{"problem": PROBLEM, "completions": ["a", "b"]}]}
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "groups.0.answer"
    r = judge.http.post(
        "/v1/score_groups",
        content=b'{"groups": [' + b" " * 2_000_000 + b"]}",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_metrics_count_scored_groups_and_requests(judge: Judge) -> None:
    judge.score(group(SLIP, EARLY))
    text = judge.http.get("/metrics").text
    assert 'sgpo_judge_scored_groups_total{kind="all_negative",outcome="colored"}' in text
    assert 'sgpo_judge_requests_total{code="200",transport="http"}' in text
    assert 'sgpo_judge_requests_total{code="401",transport="http"}' in text
    assert "sgpo_judge_verify_call_seconds_count" in text


def test_openapi_documents_the_scoring_paths(judge: Judge) -> None:
    paths = judge.http.get("/openapi.json").json()["paths"]
    assert "/v1/score_groups" in paths and "/v1/openrlhf/reward" in paths


def test_client_chunks_groups_and_keeps_their_order(judge: Judge) -> None:
    """The integrations' client splits a batch larger than max_items into requests of whole groups."""
    client = ScoringClient(judge.url, api_key=KEY, max_completions_per_request=12)
    groups = [group(SLIP, EARLY, LATE), group(RIGHT, SLIP), group(RIGHT, RIGHT_TERSE)] * 3  # 21 completions
    out = client.score_groups(groups)
    assert [g["kind"] for g in out] == ["all_negative", "mixed", "all_positive"] * 3
    assert client.requests_sent == 2
    with pytest.raises(ScoringError, match="401"):
        ScoringClient(judge.url, api_key="wrong").score_groups([group(RIGHT, SLIP)])


# ------------------------------------------------------------------------------------------------ OpenRLHF


async def openrlhf_post(url: str, prompt: str, label: str, response: str) -> dict[str, object]:
    """What OpenRLHF's SingleTurnAgentExecutor sends for one sample (`_fetch_rewards_via_http`): no headers, one
    query (prompt + response decoded), its prompt and label."""
    async with httpx.AsyncClient(timeout=60) as c:
        r = await c.post(url, json={"query": [prompt + response], "prompts": [prompt], "labels": [label]})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


def test_openrlhf_samples_of_a_prompt_are_scored_as_a_group(judge: Judge) -> None:
    url = f"{judge.url}/v1/openrlhf/reward?api_key={KEY}"
    prompt = f"{PROBLEM}\n"

    async def rollout() -> list[dict[str, object]]:  # OpenRLHF gathers the n samples of a prompt concurrently
        samples = [
            (prompt, SLIP),
            (prompt, EARLY),
            (prompt, LATE),
            ("Start with 1. Add 1.\n", "1 + 1 = 2\nAnswer: 2"),
        ]
        labels = ["32", "32", "32", "3"]  # the lone sample of the other prompt is wrong
        return await asyncio.gather(
            *[openrlhf_post(url, p, lab, r) for (p, r), lab in zip(samples, labels, strict=True)]
        )

    slip, early, late, lone = asyncio.run(rollout())
    for out in (slip, early, late):
        assert set(out) == {"rewards", "scores", "extra_logs"}
        assert out["scores"] == [0.0]  # the verifier's 0/1: what OpenRLHF's dynamic filtering reads
        assert out["extra_logs"]["sgpo_colored"] == [1.0]  # type: ignore[index]
        assert out["extra_logs"]["sgpo_group_size"] == [3.0]  # type: ignore[index]
    rewards = [out["rewards"][0] for out in (slip, early, late)]  # type: ignore[index]
    assert 0.0 < rewards[1] < rewards[0] < rewards[2] < AlgoConfig().r_max
    # the other prompt's only sample waited group_wait_s (3 s) for 2 more, then kept its plain reward, flagged
    assert lone["rewards"] == [0.0] and lone["scores"] == [0.0]
    assert lone["extra_logs"]["sgpo_group_size"] == [1.0]  # type: ignore[index]
    assert lone["extra_logs"]["sgpo_uncolorable"] == [1.0]  # type: ignore[index]
    text = judge.http.get("/metrics").text
    assert 'sgpo_judge_openrlhf_groups_total{completion="full"} 1.0' in text
    assert 'sgpo_judge_openrlhf_groups_total{completion="partial"} 1.0' in text


def test_openrlhf_batched_request_and_n_override(judge: Judge) -> None:
    """Older OpenRLHF versions post a whole micro-batch; `?n_samples_per_prompt=` overrides the config."""
    prompt = f"{PROBLEM}\n"
    body = {
        "query": [prompt + r for r in (RIGHT, SLIP, SLIP, EARLY)],
        "prompts": [prompt] * 4,
        "labels": ["32", "32", "32", "32"],
    }
    r = httpx.post(
        f"{judge.url}/v1/openrlhf/reward",
        params={"n_samples_per_prompt": 2},
        json=body,
        headers={"X-API-Key": KEY},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    out = r.json()
    # groups of 2 in arrival order: (RIGHT, SLIP) mixed, (SLIP, EARLY) all-negative and colored
    assert out["rewards"][:2] == [1.0, 0.0] and out["scores"] == [1.0, 0.0, 0.0, 0.0]
    assert 0.0 < out["rewards"][3] < out["rewards"][2] < 0.5
    assert out["extra_logs"]["sgpo_colored"] == [0.0, 0.0, 1.0, 1.0]
    # OpenRLHF shards one sample over all its --reward.remote_url servers: the others get empty lists
    empty = httpx.post(
        f"{judge.url}/v1/openrlhf/reward?api_key={KEY}", json={"query": [], "prompts": [], "labels": []}
    )
    assert empty.status_code == 200 and empty.json()["rewards"] == [] and empty.json()["scores"] == []
    bad = httpx.post(f"{judge.url}/v1/openrlhf/reward", json={"query": ["x"], "prompts": [], "labels": []})
    assert bad.status_code == 401
    bad = httpx.post(
        f"{judge.url}/v1/openrlhf/reward?api_key={KEY}", json={"query": ["x"], "prompts": [], "labels": []}
    )
    assert bad.status_code == 422 and "one entry each" in bad.json()["error"]["message"]


# ------------------------------------------------------------------------------------------------ failures


def test_judge_failure_leaves_the_group_uncolored_and_says_so(
    tmp_path: Path, verifier: ServiceProcess
) -> None:
    """An LLM judge whose endpoint is down: its judgements fail, so the all-negative group keeps 0/1 rewards."""
    dead = free_port()  # nothing listens there
    extra = {
        "SGPO_JUDGE__BACKEND__TYPE": "llm",
        "SGPO_JUDGE__BACKEND__BASE_URL": f"http://127.0.0.1:{dead}/v1",
        "SGPO_JUDGE__BACKEND__MAX_RETRIES": "0",
        "SGPO_JUDGE__BACKEND__CONNECT_TIMEOUT_S": "1",
    }
    ctx, port = start_judge(tmp_path, verifier, extra)
    with ctx as service:
        j = Judge(service, port)
        resp = j.score(group(SLIP, EARLY), group(RIGHT, SLIP))
        assert resp.status_code == 200, resp.text
        negative, mixed = resp.json()["groups"]
        assert negative["kind"] == "all_negative" and negative["uncolorable"] and not negative["colored"]
        assert negative["rewards"] == [0.0, 0.0]
        assert negative["judge_error"].startswith("judgement failed for completion 0")
        assert [c["judge_status"] for c in negative["completions"]] == ["failed", "failed"]
        assert mixed["rewards"] == [1.0, 0.0] and not mixed["uncolorable"]  # nothing to judge: unaffected
        assert resp.json()["summary"]["uncolorable"] == 1
        text = j.http.get("/metrics").text
        assert 'sgpo_judge_scored_groups_total{kind="all_negative",outcome="uncolorable"} 1.0' in text
        j.http.close()


def test_without_a_verifier_the_paths_say_what_to_set(tmp_path: Path) -> None:
    ctx, port = start_judge(tmp_path, None)
    with ctx as service:
        j = Judge(service, port)
        r = j.score(group(RIGHT, SLIP))
        assert r.status_code == 503
        assert "SGPO_JUDGE__SCORING__VERIFIER" in r.json()["error"]["message"]
        j.http.close()


def test_verifier_down_is_unavailable_not_a_wrong_reward(tmp_path: Path) -> None:
    ctx, port = start_judge(
        tmp_path,
        None,
        {
            "SGPO_JUDGE__SCORING__VERIFIER": f"127.0.0.1:{free_port()}",
            "SGPO_JUDGE__SCORING__VERIFY_TIMEOUT_S": "2",
        },
    )
    with ctx as service:
        j = Judge(service, port)
        r = j.score(group(RIGHT, SLIP))
        assert r.status_code == 503 and "failed after 3 attempt(s)" in r.json()["error"]["message"]
        j.http.close()
