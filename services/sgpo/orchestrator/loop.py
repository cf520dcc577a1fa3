"""The orchestrator's loop: prompts -> Generate -> Verify -> (Judge) -> scored Group -> sink.

Chunks of prompts are processed by a bounded pool; a chunk whose generation or verification fails for good
is dropped whole and counted (no partial group is ever enqueued); a judge failure leaves the group
uncolored and counted. A later Judge attempt re-sends only the responses not judged ok, and the share of
failed judgements feeds the judge alarm (`sgpo.orchestrator.alarm`), which can stop the run. Before each chunk the loop waits for the sink's backpressure and staleness bounds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Protocol, cast

from sgpo.common.convert import completion_from_pb, judgement_from_pb, verdict_from_pb
from sgpo.common.prompts import build_prompter
from sgpo.core import Group, StepJudgement, get_algorithm
from sgpo.orchestrator.alarm import JudgeHealth, write_status
from sgpo.orchestrator.clients import Clients, ServiceCallError, call_with_retry
from sgpo.orchestrator.config import OrchestratorConfig, RetryConfig
from sgpo.orchestrator.dataset import Prompt, iterate_epochs, load_prompts
from sgpo.orchestrator.metrics import OrchestratorMetrics
from sgpo.orchestrator.offline import read_groups
from sgpo.orchestrator.rollout import ScoredGroup, build_group, score
from sgpo.v1 import common_pb2, generator_pb2, judge_pb2, verifier_pb2

log = logging.getLogger(__name__)


class GroupSink(Protocol):
    def put(self, group: Group) -> None: ...


class Pacer(Protocol):
    """Whether groups up to the `groups_ahead`-th may be produced now (backpressure and staleness)."""

    poll_s: float

    def ready(self, groups_ahead: int) -> bool: ...

    def min_version(self, groups_ahead: int) -> int:
        """The oldest policy version a generator replica may produce these groups with."""
        ...


class NoPacing:
    poll_s = 0.0

    def ready(self, groups_ahead: int) -> bool:
        return True

    def min_version(self, groups_ahead: int) -> int:
        return 0


@dataclass
class RunStats:
    enqueued: int = 0
    sampled: int = 0
    """Completions sampled (or read from a replay file) so far, kept or dropped: the run's sampling budget."""
    by_kind: dict[str, int] = field(default_factory=dict)
    failed_groups: int = 0
    stopped_reason: str = ""
    """Why the loop stopped early (the judge alarm with on_alarm = "stop"); empty otherwise."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, kind: str, n: int = 1) -> None:
        with self.lock:
            self.by_kind[kind] = self.by_kind.get(kind, 0) + n


def chunked(it: Iterator[tuple[int, Prompt]], n: int) -> Iterator[list[tuple[int, Prompt]]]:
    while chunk := list(islice(it, n)):
        yield chunk


class Orchestrator:
    def __init__(
        self,
        cfg: OrchestratorConfig,
        sink: GroupSink,
        *,
        clients: Clients | None = None,
        pacer: Pacer | None = None,
        metrics: OrchestratorMetrics | None = None,
        stats_path: Path | None = None,
        judge_all_wrong: bool = False,
        current_version: Callable[[], int] = lambda: 0,
    ) -> None:
        self.cfg, self.sink = cfg, sink
        self.clients = clients
        self.pacer = pacer or NoPacing()
        self.metrics = metrics or OrchestratorMetrics()
        self.stats = RunStats()
        self.stop = threading.Event()
        self.judge_all_wrong = judge_all_wrong
        self.current_version = current_version
        self.algorithm = get_algorithm(cfg.algo)
        self.prompter = build_prompter(cfg.prompt)
        stats_path = stats_path or cfg.stats_path
        self._stats_file = stats_path.open("a", encoding="utf-8") if stats_path else None
        self._stats_lock = threading.Lock()
        self._sampled_by_chunk: dict[int, int] = {}
        self.judge_health = JudgeHealth(cfg.judge_alarm)

    # -- one chunk ---------------------------------------------------------------------------------------
    def _call(
        self, service: str, fn: Callable[..., object], request: object, timeout_s: float, retry: RetryConfig
    ) -> object:
        t0 = time.perf_counter()
        try:
            return call_with_retry(
                service,
                fn,
                request,
                timeout_s=timeout_s,
                retry=retry,
                stop=self.stop,
                on_retry=lambda s: self.metrics.retries.labels(s).inc(),
            )
        finally:
            self.metrics.latency.labels(service).observe(time.perf_counter() - t0)

    def _judge_fn(
        self, prompt: Prompt, completions_text: list[str], char_starts: list[list[int]]
    ) -> Callable[[list[int]], list[StepJudgement | None]]:
        assert self.clients is not None
        cfg, clients = self.cfg, self.clients

        def ask(indices: list[int]) -> list[StepJudgement] | str:
            """One Judge call: a judgement per index, or why the call failed."""
            request = judge_pb2.JudgeRequest(
                problem=prompt.problem,
                reference_solution=prompt.solution,
                items=[
                    judge_pb2.JudgeItem(response=completions_text[i], token_char_starts=char_starts[i])
                    for i in indices
                ],
            )
            try:
                resp = cast(
                    judge_pb2.JudgeResponse,
                    self._call(
                        "judge",
                        clients.judge.Judge,
                        request,
                        cfg.judge_deadline_s(len(indices)),
                        cfg.retry.model_copy(update={"attempts": 1}),
                    ),
                )
            except ServiceCallError as e:
                return str(e)
            if len(resp.judgements) != len(indices):
                return f"judge returned {len(resp.judgements)} judgements for {len(indices)} items"
            return [judgement_from_pb(j) for j in resp.judgements]

        def judge(indices: list[int]) -> list[StepJudgement | None]:
            # Partial progress: each later call re-sends only what is not judged ok yet.
            out: dict[int, StepJudgement] = {}
            pending, why = list(indices), ""
            for attempt in range(cfg.judge_attempts):
                if attempt:
                    self.metrics.retries.labels("judge").inc()
                    if self.stop.wait(cfg.retry.backoff_s):
                        break
                answer = ask(pending)
                if isinstance(answer, str):
                    why = answer
                    continue
                out.update(zip(pending, answer, strict=True))
                pending = [i for i in pending if out[i].status != "ok"]
                if not pending:
                    break
            if why and pending:
                log.warning(
                    "judge failed for %d of %d responses; the group stays uncolored",
                    len(pending),
                    len(indices),
                    extra={"error": why},
                )
            for i in pending:
                if i not in out:
                    out[i] = StepJudgement(status="failed", reason=f"judge call failed: {why}", backend="")
            self._judge_outcomes(sum(out[i].status != "ok" for i in indices), len(indices))
            return [out[i] for i in indices]

        return judge

    def _judge_outcomes(self, failed: int, asked: int) -> None:
        """Feed the alarm; say loudly when it turns on or off; stop the run if so configured."""
        m, alarm_cfg = self.metrics, self.cfg.judge_alarm
        m.judgements.labels("failed").inc(failed)
        m.judgements.labels("ok").inc(asked - failed)
        state = self.judge_health.record(failed, asked - failed)
        m.judge_failed_ratio.set(state.failed_share)
        m.judge_alarm.set(int(state.alarm))
        if state.changed and state.alarm:
            log.error(
                "JUDGE ALARM: %.0f%% of the last %d judgements failed (threshold %.0f%%): all-negative groups "
                "stay uncolored and SGPO trains as GRPO; see the judge's log and sgpo_judge_llm_* metrics",
                100 * state.failed_share,
                state.judged,
                100 * alarm_cfg.max_failed_share,
            )
            if alarm_cfg.on_alarm == "stop" and not self.stats.stopped_reason:
                self.stats.stopped_reason = (
                    f"judge alarm: {100 * state.failed_share:.0f}% of the last {state.judged} judgements "
                    f"failed (judge_alarm.max_failed_share = {alarm_cfg.max_failed_share}, on_alarm = stop)"
                )
                self.stop.set()
        elif state.changed:
            log.warning("judge alarm off: %.0f%% failed over the window", 100 * state.failed_share)
        self._write_status()

    def _write_status(self) -> None:
        if self.cfg.status_path is None:
            return
        h = self.judge_health
        with self._stats_lock:
            write_status(
                self.cfg.status_path,
                {
                    "judge_failed_share": round(h.failed_share, 4),
                    "judge_alarm": h.alarm,
                    "judged": h.judged_total,
                    "judge_failed": h.failed_total,
                    "stopped_reason": self.stats.stopped_reason,
                },
            )

    def process_chunk(
        self, chunk: list[tuple[int, Prompt]], chunk_index: int = 0, min_version: int = 0
    ) -> list[ScoredGroup]:
        """Generate (on a replica holding policy version >= `min_version`), verify, judge and score one chunk
        of prompts; the groups to enqueue."""
        assert self.clients is not None
        cfg = self.cfg
        prompts = [p for _, p in chunk]
        texts = [self.prompter.render(p.problem) for p in prompts]
        s = cfg.sampling
        sampling = common_pb2.SamplingParams(
            n=cfg.algo.group_size,
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
            stop=self.prompter.with_stop(s.stop),
            seed=cfg.seed * 1_000_003 + chunk_index,  # reproducible per chunk, different across chunks
        )
        try:
            t0 = time.perf_counter()
            gen = cast(
                generator_pb2.GenerateResponse,
                self._call(
                    "generator",
                    partial(self.clients.generators.generate, min_version=min_version, stop=self.stop),
                    generator_pb2.GenerateRequest(prompts=texts, sampling=sampling),
                    cfg.generate_timeout_s,
                    cfg.retry,
                ),
            )
            t_gen = time.perf_counter() - t0
            self._sampled_by_chunk[chunk_index] = sum(len(r.completions) for r in gen.results)
            if len(gen.results) != len(prompts):
                raise ServiceCallError(
                    "generator", None, f"{len(gen.results)} results for {len(prompts)} prompts", 1
                )
            items = [
                verifier_pb2.VerifyItem(gold=p.answer, pred=c.text)
                for p, r in zip(prompts, gen.results, strict=True)
                for c in r.completions
            ]
            t0 = time.perf_counter()
            ver = cast(
                verifier_pb2.VerifyResponse,
                self._call(
                    "verifier",
                    self.clients.verifier.Verify,
                    verifier_pb2.VerifyRequest(items=items),
                    cfg.verify_timeout_s,
                    cfg.retry,
                ),
            )
            t_ver = time.perf_counter() - t0
            if len(ver.verdicts) != len(items):
                raise ServiceCallError(
                    "verifier", None, f"{len(ver.verdicts)} verdicts for {len(items)} items", 1
                )
        except ServiceCallError as e:
            log.error("dropping a chunk of %d prompts: %s", len(prompts), e)
            self.metrics.groups.labels("failed").inc(len(prompts))
            self.stats.count("failed", len(prompts))
            return []
        groups: list[ScoredGroup] = []
        offset = 0
        for prompt, text, result in zip(prompts, texts, gen.results, strict=True):
            n = len(result.completions)
            if n < 2:
                log.error("generator returned %d completions for a prompt; need >= 2", n)
                self.metrics.groups.labels("failed").inc()
                continue
            completions = [completion_from_pb(c) for c in result.completions]
            verdicts = [verdict_from_pb(v) for v in ver.verdicts[offset : offset + n]]
            offset += n
            self.metrics.tokens.inc(sum(len(c.token_ids) for c in completions))
            judge = self._judge_fn(
                prompt, [c.text for c in completions], [list(c.token_char_starts) for c in completions]
            )
            scored = build_group(
                prompt,
                text,
                result.prompt_token_ids,
                completions,
                verdicts,
                judge,
                self.algorithm,
                run_id=cfg.run_id,
                # Each group's share of its chunk's calls, so timings summed over groups are wall-clock seconds.
                timings={"generate": t_gen / len(prompts), "verify": t_ver / len(prompts)},
                judge_all_wrong=self.judge_all_wrong,
            )
            if not scored.score.keep:
                self._count_dropped(scored)
                continue
            groups.append(scored)
        return groups

    def _count_dropped(self, scored: ScoredGroup) -> None:
        if scored.score.uncolorable:  # dropped anyway; an enqueued one is counted in _emit
            self.metrics.groups.labels("uncolorable").inc()
            self.stats.count("uncolorable")
        self.metrics.groups.labels(scored.score.drop_reason).inc()
        self.stats.count(scored.score.drop_reason)

    def _emit(self, scored: ScoredGroup) -> None:
        group = scored.group
        self.sink.put(group)
        m = self.metrics
        if scored.score.uncolorable:
            m.groups.labels("uncolorable").inc()
            self.stats.count("uncolorable")
        m.groups.labels(group.kind).inc()
        self.stats.count(group.kind)
        if group.colored:
            m.groups.labels("colored").inc()
            self.stats.count("colored")
        correct = sum(v.status == "correct" for v in group.verdicts)
        truncated = sum(c.finish_reason == "length" for c in group.completions)
        m.truncated.inc(truncated)
        m.reward.observe(sum(group.rewards) / len(group.rewards))
        m.accuracy.observe(correct / len(group.verdicts))
        m.policy_lag.set(max(0, self.current_version() - group.policy_version))
        self.stats.enqueued += 1
        if self._stats_file is not None:
            row = {
                "t": time.time(),
                "group_id": group.group_id,
                "kind": group.kind,
                "colored": group.colored,
                "accuracy": correct / len(group.verdicts),
                "reward_mean": sum(group.rewards) / len(group.rewards),
                "policy_version": group.policy_version,
                "tokens": sum(len(c.token_ids) for c in group.completions),
                "sampled": self.stats.sampled,
                "uncolorable": scored.score.uncolorable,
                "judge_failed": sum(j is not None and j.status == "failed" for j in group.judgements),
                "truncated": truncated,
                "completions": len(group.completions),
                "judge_alarm": self.judge_health.alarm,
                **{f"{k}_s": v for k, v in group.timings.items()},
            }
            with self._stats_lock:
                self._stats_file.write(json.dumps(row) + "\n")
                self._stats_file.flush()

    def _limit_reached(self) -> bool:
        return self.cfg.max_groups > 0 and self.stats.enqueued >= self.cfg.max_groups

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self) -> RunStats:
        try:
            return self._replay() if self.cfg.replay is not None else self._online()
        finally:
            if self._stats_file is not None:
                self._stats_file.close()

    def _online(self) -> RunStats:
        cfg = self.cfg
        assert cfg.dataset is not None
        stream = iterate_epochs(load_prompts(cfg.dataset), cfg.epochs, cfg.shuffle, cfg.seed)
        inflight: dict[Future[list[ScoredGroup]], int] = {}
        chunk_of: dict[Future[list[ScoredGroup]], int] = {}

        def drain(block: bool) -> None:
            done, _ = (
                wait(list(inflight), return_when=FIRST_COMPLETED)
                if block
                else ([f for f in inflight if f.done()], None)
            )
            for f in done:
                inflight.pop(f)
                groups = f.result()
                # A chunk's whole sampling cost counts before its first group, dropped groups included.
                self.stats.sampled += self._sampled_by_chunk.pop(chunk_of.pop(f), 0)
                for scored in groups:
                    if not self._limit_reached():
                        self._emit(scored)

        with ThreadPoolExecutor(max_workers=cfg.max_concurrency, thread_name_prefix="rollout") as pool:
            for chunk_index, chunk in enumerate(chunked(stream, cfg.prompts_per_request)):
                if self.stop.is_set() or self._limit_reached():
                    break
                while len(inflight) >= cfg.max_concurrency:
                    drain(block=True)
                # In-flight prompts count as groups until their chunk is drained, so drain while waiting:
                # with dynamic sampling most of them are dropped, and the trainer may need the few kept ones
                # before the staleness bound lets anything new start (a deadlock before this drain).
                self.metrics.paused.set(1)
                while not self.stop.is_set():
                    drain(block=False)
                    if self.pacer.ready(self.stats.enqueued + sum(inflight.values()) + len(chunk)):
                        break
                    self.stop.wait(self.pacer.poll_s)
                self.metrics.paused.set(0)
                if self.stop.is_set():
                    break
                ahead = self.stats.enqueued + sum(inflight.values()) + len(chunk)
                future = pool.submit(self.process_chunk, chunk, chunk_index, self.pacer.min_version(ahead))
                inflight[future], chunk_of[future] = len(chunk), chunk_index
            while inflight:  # finish what is in flight: whole groups only
                drain(block=True)
        calls = {r.target: r.calls for r in self.clients.generators.replicas} if self.clients else {}
        log.info(
            "orchestrator finished",
            extra={"enqueued": self.stats.enqueued, "by_kind": self.stats.by_kind, "generate_calls": calls},
        )
        return self.stats

    def _replay(self) -> RunStats:
        cfg = self.cfg
        assert cfg.replay is not None
        epoch = 0
        while cfg.epochs == 0 or epoch < cfg.epochs:
            for recorded in read_groups(cfg.replay):
                if self.stop.is_set() or self._limit_reached():
                    return self.stats
                while not self.stop.is_set() and not self.pacer.ready(self.stats.enqueued + 1):
                    self.stop.wait(self.pacer.poll_s)
                self.stats.sampled += len(recorded.completions)
                scored = score(recorded, self.algorithm)
                if not scored.score.keep:
                    self._count_dropped(scored)
                    continue
                # A new id per epoch: the queue dedupes by id, and each epoch is a new use of the sample.
                group = replace(scored.group, group_id=f"{recorded.group_id}-e{epoch}", run_id=cfg.run_id)
                self._emit(replace(scored, group=group))
            epoch += 1
        return self.stats
