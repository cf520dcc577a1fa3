"""The orchestrator against real generator, verifier and judge processes and the real Redis.

Covers: whole groups enqueued with rewards and advantages from sgpo.core, all-negative groups judged and
colored, a judge that is down leaving groups uncolored and counted, recording and offline replay.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgpo.common.queue import GroupQueue
from sgpo.orchestrator.clients import Clients
from sgpo.orchestrator.config import OrchestratorConfig
from sgpo.orchestrator.loop import Orchestrator
from sgpo.orchestrator.offline import GroupWriter, read_groups
from sgpo.orchestrator.server import QueuePacer, QueueSink
from sgpo.tasks.arith import generate_split, write_jsonl
from sgpo.tasks.tiny import build_tiny_policy
from tests.support import ServiceProcess, run_service

pytestmark = pytest.mark.integration
G = 4


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServiceProcess]]:
    root = tmp_path_factory.mktemp("orch")
    policy = build_tiny_policy(root / "policy", seed=0)
    with (
        run_service("verifier", root, env={"SGPO_VERIFIER__WORKERS": "1"}) as verifier,
        run_service("judge", root, env={"SGPO_JUDGE__HTTP_ENABLED": "false"}) as judge,
        run_service(
            "generator",
            root,
            env={
                "SGPO_GENERATOR__MODEL": str(policy),
                "SGPO_GENERATOR__HTTP_ENABLED": "false",
                "SGPO_GENERATOR__THREADS": "1",
            },
        ) as generator,
    ):
        yield {"verifier": verifier, "judge": judge, "generator": generator}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    write_jsonl(path, generate_split("test", [2], 6, seed=3))
    return path


def config(
    dataset: Path, services: dict[str, ServiceProcess], run_id: str, redis_url: str, **kw: object
) -> OrchestratorConfig:
    return OrchestratorConfig(
        dataset=dataset,
        run_id=run_id,
        redis_url=redis_url,
        generator_target=services["generator"].target,
        verifier_target=services["verifier"].target,
        judge_target=services["judge"].target,
        prompts_per_request=3,
        sampling={"max_tokens": 24},
        **{"algo": {"group_size": G}, **kw},
    )


def clients(services: dict[str, ServiceProcess], judge_target: str | None = None) -> Clients:
    return Clients(
        services["generator"].target, services["verifier"].target, judge_target or services["judge"].target
    )


def test_orchestrator_enqueues_whole_scored_groups(
    services: dict[str, ServiceProcess], dataset: Path, redis_prefix: str, redis_url: str, tmp_path: Path
) -> None:
    cfg = config(
        dataset, services, redis_prefix, redis_url, max_groups=6, stats_path=tmp_path / "groups.jsonl"
    )
    queue = GroupQueue(redis_url, redis_prefix)
    stats = Orchestrator(cfg, QueueSink(queue), clients=clients(services)).run()
    assert stats.enqueued == 6 and stats.by_kind.get("failed", 0) == 0
    entries = queue.read(count=100, block_ms=100)
    assert len(entries) == 6
    for e in entries:
        g = e.group
        assert len(g.completions) == len(g.verdicts) == len(g.rewards) == len(g.advantages) == G
        assert all(c.token_ids and len(c.logprobs) == len(c.token_ids) for c in g.completions)
        # A random policy answers nothing right: every group is all-negative, judged and colored.
        assert g.kind == "all_negative" and g.colored
        assert all(j is not None and j.status == "ok" for j in g.judgements)
        assert all(0.0 < r < 0.5 for r in g.rewards)
        assert abs(sum(g.advantages)) < 1e-6
    rows = [json.loads(line) for line in (tmp_path / "groups.jsonl").read_text().splitlines()]
    assert sorted(r["group_id"] for r in rows) == sorted(e.group.group_id for e in entries)
    # The sampling budget: whole chunks (3 prompts x G), counted before their groups, never decreasing.
    sampled = [r["sampled"] for r in rows]
    assert sampled == sorted(sampled) and all(s % (3 * G) == 0 for s in sampled)
    assert all(s >= (i + 1) * G for i, s in enumerate(sampled)) and stats.sampled >= sampled[-1]


def test_dynamic_sampling_counts_the_completions_of_dropped_groups(
    services: dict[str, ServiceProcess], dataset: Path, redis_prefix: str, redis_url: str
) -> None:
    cfg = config(dataset, services, redis_prefix, redis_url, epochs=1, algo={"group_size": G, "algo": "dapo"})
    stats = Orchestrator(cfg, QueueSink(GroupQueue(redis_url, redis_prefix)), clients=clients(services)).run()
    # A random policy solves nothing: DAPO drops every group, yet their completions were sampled.
    assert stats.enqueued == 0 and stats.by_kind["filtered"] == 6
    assert stats.sampled == 6 * G


def test_dynamic_sampling_under_the_staleness_bound_does_not_deadlock(
    services: dict[str, ServiceProcess], dataset: Path, redis_prefix: str, redis_url: str
) -> None:
    """In-flight prompts count as groups until drained; the orchestrator once waited on the pacer without
    draining, so chunks whose groups were all dropped held the staleness bound shut forever."""
    cfg = config(
        dataset, services, redis_prefix, redis_url, epochs=1, max_concurrency=2,
        algo={"group_size": G, "algo": "dapo"},
    )  # fmt: skip
    queue = GroupQueue(redis_url, redis_prefix)
    # Policy version 0 and no lag allowed: groups 1..4 only. The second chunk (groups 4..6 if the first
    # one's 3 prompts were kept) may start only once the first chunk is known to have kept none.
    pacer = QueuePacer(queue, batch_groups=4, max_policy_lag=0, poll_s=0.05)
    orch = Orchestrator(cfg, QueueSink(queue), clients=clients(services), pacer=pacer)
    done = threading.Thread(target=orch.run)
    done.start()
    done.join(120)
    stuck = done.is_alive()
    orch.stop.set()
    done.join(30)
    assert not stuck, "the orchestrator waited on the pacer with finished chunks undrained"
    assert orch.stats.by_kind["filtered"] == 6 and orch.stats.sampled == 6 * G


def test_judge_down_leaves_groups_uncolored_and_counted(
    services: dict[str, ServiceProcess], dataset: Path, redis_prefix: str, redis_url: str
) -> None:
    cfg = config(
        dataset, services, redis_prefix, redis_url, max_groups=3, judge_attempts=2, retry={"backoff_s": 0.05}
    )
    queue = GroupQueue(redis_url, redis_prefix)
    dead_judge = "127.0.0.1:9"  # nothing listens there: every Judge call fails as UNAVAILABLE
    orch = Orchestrator(cfg, QueueSink(queue), clients=clients(services, judge_target=dead_judge))
    stats = orch.run()
    assert stats.enqueued == 3 and stats.by_kind["uncolorable"] == 3
    for e in queue.read(count=10, block_ms=100):
        assert not e.group.colored and e.group.advantages == (0.0,) * G
    text = orch.metrics.registry.get_sample_value("sgpo_orchestrator_groups_total", {"kind": "uncolorable"})
    assert text == 3.0


def test_record_then_replay_trains_on_exactly_the_recorded_groups(
    services: dict[str, ServiceProcess], dataset: Path, redis_prefix: str, redis_url: str, tmp_path: Path
) -> None:
    recorded = tmp_path / "groups.bin"
    cfg = config(
        dataset, services, redis_prefix, redis_url, max_groups=4, algo={"group_size": G, "algo": "grpo"}
    )
    with GroupWriter(recorded) as writer:
        Orchestrator(cfg, writer, clients=clients(services), judge_all_wrong=True).run()
    groups = list(read_groups(recorded))
    assert len(groups) == 4 and all(all(j is not None for j in g.judgements) for g in groups)

    replay = cfg.model_copy(
        update={
            "dataset": None,
            "replay": recorded,
            "epochs": 2,
            "max_groups": 0,
            "algo": cfg.algo.model_copy(update={"algo": "sgpo"}),
        }
    )
    queue = GroupQueue(redis_url, redis_prefix)
    stats = Orchestrator(replay, QueueSink(queue)).run()
    assert stats.enqueued == 8
    queued = [e.group for e in queue.read(count=100, block_ms=100)]
    assert sorted(g.group_id for g in queued) == sorted(f"{g.group_id}-e{k}" for g in groups for k in (0, 1))
    by_source = {g.group_id: g for g in groups}
    for g in queued:
        source = by_source[g.group_id.rsplit("-e", 1)[0]]
        assert g.completions == source.completions and g.verdicts == source.verdicts
        assert g.colored  # replayed as sgpo: the recorded judgements color the all-negative groups


def test_chat_prompts_reach_the_generator_as_sgpo_eval_renders_them(
    services: dict[str, ServiceProcess], redis_prefix: str, redis_url: str, tmp_path: Path
) -> None:
    """The tiny chat policy served for real: the orchestrator's groups carry the prompt `sgpo eval` renders, and
    the generator tokenized exactly that text."""
    from transformers import AutoTokenizer

    from sgpo.tasks.chat import CHAT_PROMPT, build_chat_policy
    from sgpo.tasks.evaluate import build_prompter, prompt_style

    policy = build_chat_policy(tmp_path / "chat")
    dataset = tmp_path / "prompts.jsonl"
    write_jsonl(dataset, generate_split("test", [2], 2, seed=3))
    env = {"SGPO_GENERATOR__MODEL": str(policy), "SGPO_GENERATOR__HTTP_ENABLED": "false"}
    with run_service("generator", tmp_path, env={**env, "SGPO_GENERATOR__THREADS": "1"}) as generator:
        cfg = config(
            dataset,
            {**services, "generator": generator},
            redis_prefix,
            redis_url,
            max_groups=2,
            prompt=CHAT_PROMPT.model_copy(update={"tokenizer": str(policy)}).model_dump(),
        )
        with GroupWriter(tmp_path / "groups.bin") as writer:
            Orchestrator(cfg, writer, clients=clients(services | {"generator": generator})).run()
    groups = list(read_groups(tmp_path / "groups.bin"))
    tokenizer = AutoTokenizer.from_pretrained(policy)
    evaluation = build_prompter(prompt_style("auto", policy, tokenizer), "auto", policy, tokenizer)
    assert len(groups) == 2
    for g in groups:
        assert g.prompt_text == evaluation.render(g.problem)
        assert g.prompt_text.startswith("<|im_start|>system\n") and g.prompt_text.endswith("assistant\n")
        assert list(g.prompt_token_ids) == tokenizer(g.prompt_text)["input_ids"]
