"""The orchestrator's loop: prompts -> Generate -> Verify -> (Judge) -> scored Group -> sink.

Chunks of prompts are processed by a bounded pool; a chunk whose generation or verification fails for good
is dropped whole and counted (no partial group is ever enqueued); a judge failure leaves the group
uncolored and counted. A later Judge attempt re-sends only the responses not judged ok, and the share of
failed judgements feeds the judge alarm (`sgpo.orchestrator.alarm`), which can stop the run. Before each chunk the loop waits for the sink's backpressure and staleness bounds.

Surviving Redis (docs/design.md §5). Every prompt the run samples has a **slot**: its sequence number
`seq = epoch * rows + position in that epoch's (seeded) order`, and its group the deterministic id
`{run}-e{epoch}-p{row}-a{attempt}`. Chunks are emitted in slot order, so one number, `next_seq`, says where
to resume: every slot below it was sampled and its group queued (or dropped). With a durable sink (the
Redis queue) the loop also keeps the **outstanding** groups, queued and not yet acknowledged by every
trainer, and after each chunk (1) re-samples, under the same ids, the outstanding groups the queue no
longer knows (Redis came back empty or behind), (2) forgets those now acknowledged, (3) writes the
progress to `state_path` (atomically) and to Redis. A Redis outage is retried with backoff, logged once,
and flips `queue_ok` (health NOT_SERVING) until it answers again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

from sgpo.common.convert import completion_from_pb, judgement_from_pb, verdict_from_pb
from sgpo.common.prompts import build_prompter
from sgpo.core import Group, StepJudgement, get_algorithm
from sgpo.core.errors import InvalidInputError
from sgpo.orchestrator.alarm import JudgeHealth, write_status
from sgpo.orchestrator.clients import Clients, ServiceCallError, call_with_retry
from sgpo.orchestrator.config import OrchestratorConfig, RetryConfig
from sgpo.orchestrator.dataset import Prompt, load_prompts
from sgpo.orchestrator.metrics import OrchestratorMetrics
from sgpo.orchestrator.offline import read_groups
from sgpo.orchestrator.rollout import ScoredGroup, build_group, score
from sgpo.v1 import common_pb2, generator_pb2, judge_pb2, verifier_pb2

log = logging.getLogger(__name__)


class GroupSink(Protocol):
    def put(self, group: Group) -> object: ...


@runtime_checkable
class DurableSink(Protocol):
    """A sink that can say what it holds (the Redis queue): the loop then resumes and re-queues lost groups."""

    errors: tuple[type[BaseException], ...]
    """What an outage raises (retried with backoff until it ends)."""

    def put(self, group: Group) -> str | None:
        """Queue `group`; the stream entry that holds it (a bound for an earlier duplicate), None if refused."""
        ...

    def missing(self, group_ids: Sequence[str]) -> list[str]:
        """The ids the sink does not hold (never queued, or lost)."""
        ...

    def acked_frontier(self) -> tuple[int, int]:
        """Every entry id below this (ms, seq) has been acknowledged by every consumer."""
        ...

    def load_progress(self) -> dict[str, Any] | None: ...

    def save_progress(self, progress: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class Slot:
    """One prompt of the run's sequence: `seq` = epoch * rows + position in the epoch's order."""

    seq: int
    epoch: int
    row: int
    """The prompt's row in the dataset."""
    prompt: Prompt
    attempt: int = 0

    def group_id(self, run_id: str) -> str:
        return slot_group_id(run_id, self.epoch, self.row, self.attempt)


def slot_group_id(run_id: str, epoch: int, row: int, attempt: int = 0) -> str:
    """The deterministic id of a slot's group: the same after any restart, so both dedupes (the queue's by
    id, the trainer's by checkpointed id) recognise a re-sampled slot. `attempt` stays 0 for a re-sample
    after a crash or a Redis loss (it replaces the group, it must never be trained besides it); it is there
    for a deliberate second group of the same prompt in the same epoch."""
    return f"{run_id}-e{epoch}-p{row}-a{attempt}"


def epoch_order(rows: int, shuffle: bool, seed: int, epoch: int) -> list[int]:
    """Rows in the order epoch `epoch` visits them (the same permutation as `dataset.iterate_epochs`)."""
    order = list(range(rows))
    if shuffle:
        random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def iterate_slots(
    prompts: list[Prompt], epochs: int, shuffle: bool, seed: int, start: int = 0
) -> Iterator[Slot]:
    """The run's slots from sequence number `start` (epochs = 0: forever)."""
    rows = len(prompts)
    seq = start
    while epochs == 0 or seq < epochs * rows:
        epoch, pos = divmod(seq, rows)
        order = epoch_order(rows, shuffle, seed, epoch)
        for p in range(pos, rows):
            yield Slot(epoch * rows + p, epoch, order[p], prompts[order[p]])
        seq = (epoch + 1) * rows


def slot_at(prompts: list[Prompt], shuffle: bool, seed: int, seq: int, attempt: int = 0) -> Slot:
    rows = len(prompts)
    epoch, pos = divmod(seq, rows)
    row = epoch_order(rows, shuffle, seed, epoch)[pos]
    return Slot(seq, epoch, row, prompts[row], attempt)


def _entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class Progress:
    """The durable position of an online run (see the module docstring): what a restart resumes from."""

    fingerprint: dict[str, Any]
    next_seq: int = 0
    enqueued: int = 0
    sampled: int = 0
    outstanding: dict[str, list[Any]] = field(default_factory=dict)
    """group id -> [seq, attempt, entry id or None (being re-sampled)]: queued, not yet acknowledged."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            "fingerprint": self.fingerprint,
            "next_seq": self.next_seq,
            "enqueued": self.enqueued,
            "sampled": self.sampled,
            "outstanding": self.outstanding,
            "saved_unix": time.time(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Progress:
        return cls(
            fingerprint=dict(d["fingerprint"]),
            next_seq=int(d["next_seq"]),
            enqueued=int(d["enqueued"]),
            sampled=int(d.get("sampled", 0)),
            outstanding={str(k): list(v) for k, v in d.get("outstanding", {}).items()},
        )


def dataset_fingerprint(prompts: list[Prompt], cfg: OrchestratorConfig) -> dict[str, Any]:
    """What a saved position is only valid for: the rows (ids and problems), their order, the run."""
    h = hashlib.sha256()
    for p in prompts:
        h.update(p.prompt_id.encode() + b"\0" + p.problem.encode() + b"\0")
    return {
        "run_id": cfg.run_id,
        "rows": len(prompts),
        "digest": h.hexdigest()[:32],
        "shuffle": cfg.shuffle,
        "seed": cfg.seed,
        "prompts_per_request": cfg.prompts_per_request,
    }


def read_progress_file(path: Path) -> dict[str, Any] | None:
    try:
        return cast(dict[str, Any], json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InvalidInputError("state_path", f"{path} is not a readable progress file: {e}") from None


def write_progress_file(path: Path, progress: dict[str, Any]) -> None:
    """Atomically: a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(progress, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


SYNC_WHILE_WAITING_S = 2.0
"""How often the loop checks its outstanding groups while it waits on backpressure or staleness."""


class _Stopped(Exception):
    """The loop was stopped while the queue was unreachable."""


T = TypeVar("T")


@dataclass
class _Chunk:
    slots: list[Slot]
    redo: bool
    """Re-sampling slots whose queued groups were lost (already counted as enqueued)."""


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


def chunked(it: Iterator[T], n: int) -> Iterator[list[T]]:
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
        self.durable: DurableSink | None = sink if isinstance(sink, DurableSink) else None
        self.outage_errors: tuple[type[BaseException], ...] = self.durable.errors if self.durable else ()
        self.queue_ok = threading.Event()
        """Clear while the queue does not answer (the service's health is NOT_SERVING then)."""
        self.queue_ok.set()
        self._outage_since: float | None = None
        self.progress: Progress | None = None
        self._redoing: set[str] = set()  # group ids being re-sampled right now
        self._redo: deque[Slot] = deque()
        self._last_sync = 0.0
        self.requeued = 0
        """Groups re-sampled because the queue lost them (Redis restarted empty or behind)."""

    # -- the queue, through outages ----------------------------------------------------------------------
    def queue_call(self, what: str, fn: Callable[[], T]) -> T:
        """`fn()`, retried with backoff (0.2 s doubling to 5 s) while the queue is unreachable; one warning
        when an outage starts and one when it ends. Raises _Stopped if the loop is stopped meanwhile."""
        delay = 0.2
        while True:
            try:
                out = fn()
            except self.outage_errors as e:
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    self.queue_ok.clear()
                    log.warning(
                        "queue unreachable (%s); retrying with backoff until it answers",
                        what,
                        extra={"error": f"{type(e).__name__}: {e}"},
                    )
                self.metrics.retries.labels("queue").inc()
                if self.stop.wait(delay):
                    raise _Stopped from None
                delay = min(delay * 2, 5.0)
                continue
            if self._outage_since is not None:
                log.warning(
                    "queue reachable again",
                    extra={"outage_s": round(time.monotonic() - self._outage_since, 1)},
                )
                self._outage_since = None
                self.queue_ok.set()
            return out

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
        self, chunk: Sequence[Slot], chunk_index: int = 0, min_version: int = 0
    ) -> list[ScoredGroup]:
        """Generate (on a replica holding policy version >= `min_version`), verify, judge and score one chunk
        of slots; the groups to enqueue, each under its slot's id."""
        assert self.clients is not None
        cfg = self.cfg
        prompts = [slot.prompt for slot in chunk]
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
        for slot, prompt, text, result in zip(chunk, prompts, texts, gen.results, strict=True):
            n = len(result.completions)
            verdicts = [verdict_from_pb(v) for v in ver.verdicts[offset : offset + n]]
            offset += n
            if n < 2:
                log.error("generator returned %d completions for a prompt; need >= 2", n)
                self.metrics.groups.labels("failed").inc()
                continue
            completions = [completion_from_pb(c) for c in result.completions]
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
            scored = replace(scored, group=replace(scored.group, group_id=slot.group_id(cfg.run_id)))
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

    def _emit(self, scored: ScoredGroup, slot: Slot | None = None, redo: bool = False) -> None:
        """Queue one group. With a durable sink: through outages, and kept outstanding until acknowledged.
        A group the queue already holds (this slot was queued before a restart) is counted, not logged twice;
        a re-sampled lost group (`redo`) was counted when it was first queued."""
        group = scored.group
        if self.durable is None:
            self.sink.put(group)
            status, entry = "queued", None
        else:
            durable = self.durable
            result = cast(Any, self.queue_call("put", lambda: durable.put(group)))
            status, entry = str(result.status), result.entry_id
            if self.progress is not None and slot is not None and entry is not None:
                self.progress.outstanding[group.group_id] = [slot.seq, slot.attempt, entry]
        if redo and entry is None:  # refused (dead-lettered) this time: the lost group is not coming
            self._forget(group.group_id, uncount=True)
            return
        if redo:
            self.requeued += 1
            self._write_row(scored, requeued=True)
            return
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
        if self.durable is None:
            version = self.current_version()
        else:
            version = self.queue_call("read policy version", self.current_version)
        m.policy_lag.set(max(0, version - group.policy_version))
        self.stats.enqueued += 1
        if status != "duplicate":  # a duplicate's row was written when it was first queued
            self._write_row(scored)

    def _write_row(self, scored: ScoredGroup, requeued: bool = False) -> None:
        group = scored.group
        correct = sum(v.status == "correct" for v in group.verdicts)
        truncated = sum(c.finish_reason == "length" for c in group.completions)
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
                "requeued": requeued,
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
            if self.cfg.replay is None:
                return self._online()
            try:
                return self._replay()
            except _Stopped:  # stopped during an outage; a restart replays, its ids deduped by the queue
                return self.stats
        finally:
            if self._stats_file is not None:
                self._stats_file.close()

    def _online(self) -> RunStats:
        cfg = self.cfg
        assert cfg.dataset is not None
        prompts = load_prompts(cfg.dataset)
        progress = self._resume(prompts)
        self.stats.enqueued, self.stats.sampled = progress.enqueued, progress.sampled
        fresh = chunked(
            iterate_slots(prompts, cfg.epochs, cfg.shuffle, cfg.seed, progress.next_seq),
            cfg.prompts_per_request,
        )
        pending: deque[tuple[Future[list[ScoredGroup]], _Chunk, int]] = deque()  # emitted in this order
        try:
            self._sync_outstanding(prompts)
            with ThreadPoolExecutor(max_workers=cfg.max_concurrency, thread_name_prefix="rollout") as pool:
                try:
                    self._pipeline(pool, pending, fresh, prompts)
                finally:
                    while pending:  # finish what is in flight: whole groups only
                        self._drain(pending, prompts, block=True)
        except _Stopped:
            log.warning(
                "stopped while the queue was unreachable; the next start resumes from the saved position"
            )
        calls = {r.target: r.calls for r in self.clients.generators.replicas} if self.clients else {}
        log.info(
            "orchestrator finished",
            extra={
                "enqueued": self.stats.enqueued,
                "by_kind": self.stats.by_kind,
                "generate_calls": calls,
                "requeued": self.requeued,
                "next_seq": progress.next_seq,
            },
        )
        return self.stats

    def _pipeline(
        self,
        pool: ThreadPoolExecutor,
        pending: deque[tuple[Future[list[ScoredGroup]], _Chunk, int]],
        fresh: Iterator[list[Slot]],
        prompts: list[Prompt],
    ) -> None:
        cfg = self.cfg
        exhausted = False
        while not self.stop.is_set():
            if self._redo:
                slots = [self._redo.popleft() for _ in range(min(len(self._redo), cfg.prompts_per_request))]
                chunk = _Chunk(slots, redo=True)
            elif exhausted or self._limit_reached():
                if not pending:
                    return
                self._drain(pending, prompts, block=True)  # it may find lost groups to re-sample
                continue
            else:
                slots = next(fresh, [])
                if not slots:
                    exhausted = True
                    continue
                chunk = _Chunk(slots, redo=False)
            while len(pending) >= cfg.max_concurrency:
                self._drain(pending, prompts, block=True)
            # In-flight prompts count as groups until their chunk is drained, so drain while waiting:
            # with dynamic sampling most of them are dropped, and the trainer may need the few kept ones
            # before the staleness bound lets anything new start (a deadlock before this drain).
            new = 0 if chunk.redo else len(chunk.slots)
            self.metrics.paused.set(1)
            while not self.stop.is_set():
                self._drain(pending, prompts, block=False)
                ahead = self.stats.enqueued + self._inflight(pending) + new
                if self.queue_call("pacing", lambda a=ahead: self.pacer.ready(a)):  # type: ignore[misc]
                    break
                if time.monotonic() - self._last_sync > SYNC_WHILE_WAITING_S:
                    # the trainer acknowledges while we wait: fewer outstanding, fewer re-samples if Redis
                    # comes back empty
                    self._sync_outstanding(prompts)
                self.stop.wait(self.pacer.poll_s)
            self.metrics.paused.set(0)
            if self.stop.is_set():
                if chunk.redo:
                    self._redo.extendleft(reversed(chunk.slots))
                return
            ahead = self.stats.enqueued + self._inflight(pending) + new
            first = chunk.slots[0].seq
            # reproducible per chunk, different across chunks; a re-sample draws new completions
            index = (1 << 40) + first if chunk.redo else first // cfg.prompts_per_request
            future = pool.submit(self.process_chunk, chunk.slots, index, self.pacer.min_version(ahead))
            pending.append((future, chunk, index))

    @staticmethod
    def _inflight(pending: deque[tuple[Future[list[ScoredGroup]], _Chunk, int]]) -> int:
        return sum(len(c.slots) for _, c, _ in pending if not c.redo)

    def _drain(
        self,
        pending: deque[tuple[Future[list[ScoredGroup]], _Chunk, int]],
        prompts: list[Prompt],
        block: bool,
    ) -> None:
        """Emit finished chunks in submission order (the oldest first: so `next_seq` is one number)."""
        if block and pending:
            wait_futures([pending[0][0]])
        drained = False
        while pending and pending[0][0].done():
            future, chunk, index = pending.popleft()
            groups = {g.group.group_id: g for g in future.result()}
            # A chunk's whole sampling cost counts before its first group, dropped groups included.
            self.stats.sampled += self._sampled_by_chunk.pop(index, 0)
            for slot in chunk.slots:
                gid = slot.group_id(self.cfg.run_id)
                scored = groups.get(gid)
                if chunk.redo:
                    self._redoing.discard(gid)
                    if scored is None:  # the re-sample was dropped: the lost group is not coming
                        self._forget(gid, uncount=True)
                        continue
                    self._emit(scored, slot, redo=True)
                elif scored is not None and not self._limit_reached():
                    self._emit(scored, slot)
            if not chunk.redo and self.progress is not None:
                self.progress.next_seq = chunk.slots[-1].seq + 1
            drained = True
        if drained:
            self._sync_outstanding(prompts)

    def _forget(self, gid: str, uncount: bool = False) -> None:
        if self.progress is not None:
            self.progress.outstanding.pop(gid, None)
        if uncount:
            self.stats.enqueued = max(self.stats.enqueued - 1, 0)

    # -- durable position --------------------------------------------------------------------------------
    def _resume(self, prompts: list[Prompt]) -> Progress:
        """The saved position (the local state file's or Redis's, whichever is further), or slot 0."""
        cfg = self.cfg
        fingerprint = dataset_fingerprint(prompts, cfg)
        fresh = Progress(fingerprint)
        if self.durable is None and cfg.state_path is None:
            return fresh  # nothing to resume from, nothing to save (sgpo record, tests)
        saved: list[tuple[str, dict[str, Any]]] = []
        if cfg.state_path is not None:
            local = read_progress_file(cfg.state_path)
            if local is not None:
                saved.append((str(cfg.state_path), local))
        if self.durable is not None:
            durable = self.durable
            remote = self.queue_call("load progress", durable.load_progress)
            if remote is not None:
                saved.append(("redis", remote))
        best: Progress | None = None
        for where, d in saved:
            try:
                progress = Progress.from_dict(d)
            except (KeyError, TypeError, ValueError) as e:
                raise InvalidInputError("state_path", f"the progress in {where} is unreadable: {e}") from None
            if progress.fingerprint != fingerprint:
                raise InvalidInputError(
                    "dataset",
                    f"the saved position in {where} belongs to another dataset or order ({progress.fingerprint}, "
                    f"now {fingerprint}): resuming would skip or repeat prompts. Use a new run_id, or delete "
                    "the state file and the run's Redis keys to start over",
                )
            if best is None or progress.next_seq > best.next_seq:
                best = progress
        self.progress = best or fresh
        if best is not None:
            log.warning(
                "resuming the dataset at slot %d (epoch %d)",
                best.next_seq,
                best.next_seq // len(prompts),
                extra={"enqueued": best.enqueued, "outstanding": len(best.outstanding)},
            )
        return self.progress

    def _sync_outstanding(self, prompts: list[Prompt]) -> None:
        """(1) Re-sample outstanding groups the queue lost; (2) forget acknowledged ones; (3) save.

        (1) before (2), with no put between: a Redis that came back empty would otherwise show new
        entries acknowledged past the lost ones' ids, and they would be forgotten instead of re-sampled."""
        progress, cfg = self.progress, self.cfg
        self._last_sync = time.monotonic()
        if progress is None:
            return
        if self.durable is not None:
            durable = self.durable
            check = [g for g, v in progress.outstanding.items() if v[2] is not None]
            lost = self.queue_call("check queued groups", lambda: durable.missing(check)) if check else []
            for gid in lost:
                seq, attempt, _ = progress.outstanding[gid]
                progress.outstanding[gid][2] = None
                if gid not in self._redoing:
                    self._redoing.add(gid)
                    self._redo.append(slot_at(prompts, cfg.shuffle, cfg.seed, int(seq), int(attempt)))
            for gid, v in progress.outstanding.items():  # saved as being re-sampled by a stopped loop
                if v[2] is None and gid not in self._redoing:
                    self._redoing.add(gid)
                    self._redo.append(slot_at(prompts, cfg.shuffle, cfg.seed, int(v[0]), int(v[1])))
            if lost:
                log.warning(
                    "the queue lost %d queued groups (Redis restarted empty or behind): re-sampling them "
                    "under the same ids",
                    len(lost),
                )
            frontier = self.queue_call("read acknowledgements", durable.acked_frontier)
            for gid in [g for g, v in progress.outstanding.items() if v[2] is not None]:
                if _entry_key(progress.outstanding[gid][2]) < frontier:
                    del progress.outstanding[gid]
        progress.enqueued, progress.sampled = self.stats.enqueued, self.stats.sampled
        data = progress.to_dict()
        if cfg.state_path is not None:
            write_progress_file(cfg.state_path, data)
        if self.durable is not None:
            durable = self.durable
            self.queue_call("save progress", lambda: durable.save_progress(data))

    def _replay(self) -> RunStats:
        cfg = self.cfg
        assert cfg.replay is not None
        epoch = 0
        while cfg.epochs == 0 or epoch < cfg.epochs:
            for recorded in read_groups(cfg.replay):
                if self.stop.is_set() or self._limit_reached():
                    return self.stats
                while not self.stop.is_set() and not self.queue_call(
                    "pacing", lambda: self.pacer.ready(self.stats.enqueued + 1)
                ):
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
