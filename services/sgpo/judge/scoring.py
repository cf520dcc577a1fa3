"""Group scoring for trainers outside SGPO (TRL, verl, OpenRLHF; docs/integrations.md), on the judge's HTTP API:

- `POST /v1/score_groups`: groups of completions with their problem, gold answer and optional reference
  solution in; per completion the reward, the verdict, and (for the wrong answers the [algo] color_scope
  selects) the first wrong step and rts out.
- `POST /v1/openrlhf/reward`: OpenRLHF's remote reward-model protocol (`--remote_rm_url`): {"query",
  "prompts", "labels"} in, {"rewards", "scores", "extra_logs"} out. OpenRLHF posts each sample on its own, so
  samples wait here, grouped by (prompt, label), until `n_samples_per_prompt` of them have arrived.

Why here, and not a separate front: the judge already owns the HTTP face (API keys, body limit, one error body,
request metrics: `_GuardedRoute` in sgpo.judge.api guards these routes too) and judges in-process; only the
verdicts come over gRPC from the verifier service (`[judge.scoring] verifier`), through the generated stubs
in sgpo.v1, as the orchestrator calls it. Services never import each other.

Every reward comes from `sgpo.core` (`Sgpo.score`: 0/1 from the verdicts, colored rewards from the
judgements); a judge failure leaves its group at plain 0/1 rewards and says so (`uncolorable`, `judge_error`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import grpc
from fastapi import APIRouter, Query, Request
from fastapi.routing import APIRoute
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from sgpo.common import auth
from sgpo.common.convert import verdict_from_pb
from sgpo.common.server import GRPC_OPTIONS, ResourceExhaustedError, ServiceError, UnavailableError
from sgpo.core import AlgoConfig, InvalidInputError, StepJudgement, Verdict, classify_group, judgement_rts
from sgpo.core.algos import Sgpo
from sgpo.judge.config import ScoringConfig
from sgpo.judge.metrics import LATENCY_BUCKETS
from sgpo.judge.state import JudgeState
from sgpo.judge.types import JudgeItem
from sgpo.v1 import verifier_pb2, verifier_pb2_grpc

log = logging.getLogger(__name__)

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


# ------------------------------------------------------------------------------------------------ wire models


class CompletionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="The completion (the response only, without the prompt).")
    token_char_starts: list[int] | None = Field(
        None,
        description="Character offset in `text` where each token starts; rts in tokens (without: characters).",
    )


class GroupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    problem: str = Field(description="The problem the completions answer (shown to the judge).")
    answer: str = Field(description="The gold answer the verifier compares each completion's answer with.")
    reference_solution: str = Field("", description="A reference step-by-step solution, when there is one.")
    completions: list[CompletionIn | str] = Field(
        description="The group: at least 2 completions of the same prompt; a bare string is {'text': ...}."
    )


class ScoreGroupsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    groups: list[GroupIn] = Field(description="Groups to score; each is scored on its own.")


class CompletionScore(BaseModel):
    reward: float = Field(
        description="1 correct, 0 wrong or unscorable, or the colored reward in (0, r_max) of a colored wrong answer."
    )
    verdict: Literal["correct", "wrong", "unscorable"]
    extracted: str = Field(description="The answer the verifier read from the completion.")
    verdict_reason: str
    colored: bool = Field(description="The reward is a colored one.")
    judge_status: Literal["ok", "failed"] | None = Field(
        None, description="None: not judged (correct, unscorable, or not selected by color_scope)."
    )
    first_error_step: int | None = Field(None, description="0-based first wrong step; -1: none located.")
    n_steps: int | None = None
    rts: float | None = Field(None, description="Share of the completion before its first error, in [0, 1].")
    judge_reason: str = ""


class GroupScoreOut(BaseModel):
    kind: Literal["all_negative", "all_positive", "mixed", "unscorable"]
    colored: bool = Field(description="At least one completion got a colored reward.")
    uncolorable: bool = Field(
        description="Coloring was needed but a judgement failed: the group kept plain 0/1 rewards."
    )
    judge_error: str | None = Field(None, description="Why the group is uncolorable.")
    rewards: list[float] = Field(description="The completions' rewards, in request order.")
    completions: list[CompletionScore]


class ScoreSummary(BaseModel):
    groups: int
    completions: int
    all_negative: int = Field(description="Groups with no correct answer.")
    colored: int = Field(description="Groups with at least one colored reward.")
    uncolorable: int = Field(description="Groups left at 0/1 because a judgement failed.")
    colored_completions: int


class ScoreGroupsOut(BaseModel):
    groups: list[GroupScoreOut] = Field(description="One per request group, in request order.")
    summary: ScoreSummary


class OpenRlhfIn(BaseModel):
    """OpenRLHF's remote reward-model request (openrlhf/utils/agent.py, `_fetch_rewards_via_http`). Unknown keys
    are ignored: the protocol is OpenRLHF's, and a newer client may send more."""

    model_config = ConfigDict(extra="ignore")

    query: list[str] = Field(description="Prompt + response, decoded (OpenRLHF sends one per request).")
    prompts: list[str] = Field(description="The prompt of each query; the response is the query after it.")
    labels: list[str] = Field(description="The gold answer of each query.")


class OpenRlhfOut(BaseModel):
    rewards: list[float] = Field(description="Used for advantages: 0/1, or colored for all-negative groups.")
    scores: list[float] = Field(description="The verifier's 0/1 (OpenRLHF's dynamic filtering reads these).")
    extra_logs: dict[str, list[float]] = Field(
        description="sgpo_correct, sgpo_colored, sgpo_uncolorable, sgpo_all_negative, sgpo_rts (-1: not judged), "
        "sgpo_group_size (the samples scored together)."
    )


# ------------------------------------------------------------------------------------------------ metrics


class ScoringMetrics:
    """Counters of the scoring paths, on the judge's own registry (its /metrics shows them)."""

    def __init__(self, deps: JudgeState) -> None:
        r = deps.metrics.registry
        self.groups = Counter(
            "sgpo_judge_scored_groups_total",
            "Groups scored by /v1/score_groups and the OpenRLHF path, by kind and outcome (colored | uncolorable | plain).",
            ["kind", "outcome"],
            registry=r,
        )
        self.completions = Counter(
            "sgpo_judge_scored_completions_total",
            "Completions scored, by verdict.",
            ["verdict"],
            registry=r,
        )
        self.verify_latency = Histogram(
            "sgpo_judge_verify_call_seconds",
            "Time of one Verify call to the verifier service (retries included).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.openrlhf_groups = Counter(
            "sgpo_judge_openrlhf_groups_total",
            "OpenRLHF groups scored: full (n_samples_per_prompt arrived) or partial (group_wait_s ran out).",
            ["completion"],
            registry=r,
        )
        self.openrlhf_waiting = Gauge(
            "sgpo_judge_openrlhf_waiting_samples",
            "OpenRLHF samples waiting for the rest of their group.",
            registry=r,
        )


# ------------------------------------------------------------------------------------------------ logic


@dataclass(frozen=True, slots=True)
class ScoreGroup:
    """One group to score, transport-agnostic."""

    problem: str
    answer: str
    completions: tuple[JudgeItem, ...]
    reference_solution: str = ""


class GroupScorer:
    """Verifies through the verifier service, judges in-process, scores with sgpo.core (`Sgpo.score`)."""

    def __init__(self, deps: JudgeState, metrics: ScoringMetrics) -> None:
        self.deps, self.metrics = deps, metrics
        self.cfg: ScoringConfig = deps.cfg.scoring
        self.algo: AlgoConfig = deps.cfg.algo
        self.sgpo = Sgpo(self.algo)
        self._stub: verifier_pb2_grpc.VerifierServiceStub | None = None
        self._channel: grpc.Channel | None = None
        self._pool = ThreadPoolExecutor(self.cfg.judge_concurrency, thread_name_prefix="score-judge")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._channel is not None:
            self._channel.close()

    def _verifier(self) -> verifier_pb2_grpc.VerifierServiceStub:
        if not self.cfg.verifier:
            raise UnavailableError(
                "group scoring needs the verifier service: set [judge.scoring] verifier = 'host:port' "
                "(or SGPO_JUDGE__SCORING__VERIFIER) and restart the judge"
            )
        if self._stub is None:
            self._channel = auth.channel(self.cfg.verifier, options=GRPC_OPTIONS)
            self._stub = verifier_pb2_grpc.VerifierServiceStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    def verify(self, groups: Sequence[ScoreGroup]) -> list[Verdict]:
        """One Verify call for every completion of every group, retried while the verifier is unavailable."""
        items = [
            verifier_pb2.VerifyItem(gold=g.answer, pred=c.response) for g in groups for c in g.completions
        ]
        stub, start = self._verifier(), time.perf_counter()
        try:
            for attempt in range(1, self.cfg.verify_attempts + 1):
                try:
                    resp = stub.Verify(
                        verifier_pb2.VerifyRequest(items=items), timeout=self.cfg.verify_timeout_s
                    )
                    break
                except grpc.RpcError as e:
                    code, details = e.code(), e.details()
                    if code == grpc.StatusCode.INVALID_ARGUMENT:
                        raise InvalidInputError(
                            "groups", f"the verifier refused the request: {details}"
                        ) from None
                    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise ResourceExhaustedError(f"the verifier refused the request: {details}") from None
                    if code not in _RETRYABLE or attempt == self.cfg.verify_attempts:
                        raise UnavailableError(
                            f"the verifier at {self.cfg.verifier} failed after {attempt} attempt(s): "
                            f"{code.name}: {details}"
                        ) from None
                    time.sleep(0.2 * 2 ** (attempt - 1))
        finally:
            self.metrics.verify_latency.observe(time.perf_counter() - start)
        if len(resp.verdicts) != len(items):
            raise UnavailableError(
                f"the verifier answered {len(resp.verdicts)} verdicts for {len(items)} items"
            )
        return [verdict_from_pb(v) for v in resp.verdicts]

    def _judge(self, group: ScoreGroup, wanted: list[bool]) -> tuple[list[StepJudgement | None], str | None]:
        """The judgements of the wanted completions (None elsewhere), or why there are none."""
        asked = [k for k, w in enumerate(wanted) if w]
        try:
            out = self.deps.require().judge(
                group.problem, group.reference_solution, [group.completions[k] for k in asked]
            )
        except (ServiceError, InvalidInputError, RuntimeError) as e:
            log.warning("judging a group failed; it keeps 0/1 rewards", extra={"error": str(e)})
            return [None] * len(wanted), f"the judge refused the group: {e}"
        judged: list[StepJudgement | None] = [None] * len(wanted)
        for k, j in zip(asked, out, strict=True):
            judged[k] = j
        failed = [f"completion {k}: {j.reason}" for k, j in zip(asked, out, strict=True) if j.status != "ok"]
        return judged, ("judgement failed for " + "; ".join(failed)) if failed else None

    def score(self, groups: Sequence[ScoreGroup]) -> list[GroupScoreOut]:
        """Verify all, judge the groups that need it (concurrently), score each with sgpo.core."""
        for i, g in enumerate(groups):
            if not g.completions:
                raise InvalidInputError(
                    f"groups.{i}.completions",
                    "needs the completions of one prompt (2 or more to be colored); got none",
                )
        total = sum(len(g.completions) for g in groups)
        if total > self.deps.cfg.max_items:
            raise ResourceExhaustedError(
                f"{total} completions in one request; at most max_items = {self.deps.cfg.max_items} "
                "are accepted (send fewer groups per request)"
            )
        if groups:
            self.deps.require()  # 503 while the backend loads, before the verifier is asked anything
        verdicts = self.verify(groups) if groups else []
        per_group, at = [], 0
        for g in groups:
            per_group.append(verdicts[at : at + len(g.completions)])
            at += len(g.completions)
        wanted = [
            self.sgpo.judge_mask([v.status for v in vs]) if len(vs) > 1 else [False] for vs in per_group
        ]
        futures = {
            i: self._pool.submit(self._judge, g, w)
            for i, (g, w) in enumerate(zip(groups, wanted, strict=True))
            if any(w)
        }
        out = []
        for i, vs in enumerate(per_group):
            if len(vs) == 1:
                out.append(self._single(vs[0]))
                continue
            unjudged: tuple[list[StepJudgement | None], str | None] = ([None] * len(vs), None)
            judged, error = futures[i].result() if i in futures else unjudged
            out.append(self._result(vs, judged, error))
        return out

    def _result(
        self, verdicts: list[Verdict], judged: list[StepJudgement | None], error: str | None
    ) -> GroupScoreOut:
        s = self.sgpo.score([v.status for v in verdicts], judged)
        outcome = "colored" if s.colored else "uncolorable" if s.uncolorable else "plain"
        self.metrics.groups.labels(s.kind, outcome).inc()
        completions = []
        for v, j, r in zip(verdicts, judged, s.rewards, strict=True):
            self.metrics.completions.labels(v.status).inc()
            ok = j is not None and j.status == "ok"
            completions.append(
                CompletionScore(
                    reward=r,
                    verdict=v.status,
                    extracted=v.extracted,
                    verdict_reason=v.reason,
                    colored=s.colored and ok and v.status == "wrong",
                    judge_status=None if j is None else j.status,
                    first_error_step=None if j is None else j.first_error_step,
                    n_steps=None if j is None else len(j.steps),
                    rts=judgement_rts(j, self.algo.rts_unit) if j is not None and ok else None,
                    judge_reason="" if j is None else j.reason,
                )
            )
        return GroupScoreOut(
            kind=s.kind,
            colored=s.colored,
            uncolorable=s.uncolorable,
            judge_error=(error or "a judgement is missing") if s.uncolorable else None,
            rewards=list(s.rewards),
            completions=completions,
        )

    def _single(self, v: Verdict) -> GroupScoreOut:
        """A lone completion (a validation pass with n = 1): its verdict's 0/1 reward; no group (core's kind:
        unscorable, fewer than 2 scorable answers), no coloring."""
        kind = classify_group([v.status])
        self.metrics.groups.labels(kind, "single").inc()
        self.metrics.completions.labels(v.status).inc()
        reward = 1.0 if v.status == "correct" else 0.0
        return GroupScoreOut(
            kind=kind,
            colored=False,
            uncolorable=False,
            judge_error=None,
            rewards=[reward],
            completions=[
                CompletionScore(
                    reward=reward,
                    verdict=v.status,
                    extracted=v.extracted,
                    verdict_reason=v.reason,
                    colored=False,
                    judge_status=None,
                    first_error_step=None,
                    rts=None,
                )
            ],
        )


def summarize(groups: Sequence[GroupScoreOut]) -> ScoreSummary:
    return ScoreSummary(
        groups=len(groups),
        completions=sum(len(g.completions) for g in groups),
        all_negative=sum(g.kind == "all_negative" for g in groups),
        colored=sum(g.colored for g in groups),
        uncolorable=sum(g.uncolorable for g in groups),
        colored_completions=sum(c.colored for g in groups for c in g.completions),
    )


# ------------------------------------------------------------------------------------------------ OpenRLHF


def response_of(query: str, prompt: str) -> str:
    """The response part of OpenRLHF's `query` (prompt + response decoded together)."""
    return query[len(prompt) :] if prompt and query.startswith(prompt) else query


@dataclass
class _Pending:
    """Samples of one (prompt, label) waiting for their group; each request's future gets its scores."""

    n: int
    samples: list[tuple[str, asyncio.Future[tuple[CompletionScore, GroupScoreOut]]]] = field(
        default_factory=list
    )
    timer: asyncio.TimerHandle | None = None


class OpenRlhfGrouper:
    """Collects OpenRLHF's one-sample requests into groups of `n_samples_per_prompt` per (prompt, label).

    Runs on the server's event loop only (no locks); scoring runs in a worker thread. A group that is not complete
    within `group_wait_s` of its first sample is scored with the samples that arrived.
    """

    def __init__(self, scorer: GroupScorer, metrics: ScoringMetrics) -> None:
        self.scorer, self.metrics = scorer, metrics
        self.pending: dict[tuple[str, str, int], _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # held until done (the loop keeps only weak references)

    async def score(self, body: OpenRlhfIn, n: int) -> OpenRlhfOut:
        k = len(body.query)
        if len(body.prompts) != k or len(body.labels) != k:
            raise InvalidInputError(
                "prompts",
                f"query, prompts and labels need one entry each; got {k}, {len(body.prompts)}, {len(body.labels)}",
            )
        if k > self.scorer.deps.cfg.max_items:
            raise ResourceExhaustedError(
                f"{k} queries in one request; at most max_items = {self.scorer.deps.cfg.max_items}"
            )
        self.scorer.deps.require()
        loop = asyncio.get_running_loop()
        futures = []
        for query, prompt, label in zip(body.query, body.prompts, body.labels, strict=True):
            fut: asyncio.Future[tuple[CompletionScore, GroupScoreOut]] = loop.create_future()
            futures.append(fut)
            self._add((prompt, label, n), response_of(query, prompt), fut)
        results = await asyncio.gather(*futures)
        extra: dict[str, list[float]] = {
            name: []
            for name in (
                "sgpo_correct",
                "sgpo_colored",
                "sgpo_uncolorable",
                "sgpo_all_negative",
                "sgpo_rts",
                "sgpo_group_size",
            )
        }
        for c, g in results:
            extra["sgpo_correct"].append(float(c.verdict == "correct"))
            extra["sgpo_colored"].append(float(c.colored))
            extra["sgpo_uncolorable"].append(float(g.uncolorable))
            extra["sgpo_all_negative"].append(float(g.kind == "all_negative"))
            extra["sgpo_rts"].append(-1.0 if c.rts is None else c.rts)
            extra["sgpo_group_size"].append(float(len(g.completions)))
        return OpenRlhfOut(
            rewards=[c.reward for c, _ in results],
            scores=[float(c.verdict == "correct") for c, _ in results],
            extra_logs=extra,
        )

    def _add(self, key: tuple[str, str, int], response: str, fut: asyncio.Future[Any]) -> None:
        p = self.pending.get(key)
        if p is None:
            p = self.pending[key] = _Pending(key[2])
            p.timer = asyncio.get_running_loop().call_later(self.scorer.cfg.group_wait_s, self._flush, key, p)
        p.samples.append((response, fut))
        self.metrics.openrlhf_waiting.inc()
        if len(p.samples) >= p.n:
            self._flush(key, p)

    def _flush(self, key: tuple[str, str, int], p: _Pending) -> None:
        if self.pending.get(key) is not p:
            return
        del self.pending[key]
        if p.timer is not None:
            p.timer.cancel()
        self.metrics.openrlhf_waiting.dec(len(p.samples))
        full = len(p.samples) >= p.n
        self.metrics.openrlhf_groups.labels("full" if full else "partial").inc()
        if not full:
            log.warning(
                "openrlhf group incomplete after group_wait_s; scoring the samples that arrived",
                extra={"arrived": len(p.samples), "n_samples_per_prompt": p.n},
            )
        task = asyncio.get_running_loop().create_task(self._score(key, p))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _score(self, key: tuple[str, str, int], p: _Pending) -> None:
        prompt, label, _ = key
        group = ScoreGroup(prompt, label, tuple(JudgeItem(r) for r, _ in p.samples))
        try:
            (result,) = await run_in_threadpool(self.scorer.score, [group])
            verdicts = [c.verdict for c in result.completions]
            if (
                len(p.samples) < p.n
                and not result.colored
                and "wrong" in verdicts
                and "correct" not in verdicts
            ):
                missing = "a group of 1 cannot be colored" if len(p.samples) == 1 else result.judge_error
                result = result.model_copy(
                    update={
                        "uncolorable": True,
                        "judge_error": f"only {len(p.samples)} of {p.n} samples arrived within group_wait_s; {missing}",
                    }
                )
        except Exception as e:  # every waiting request gets the error (the handler maps it)
            for _, fut in p.samples:
                if not fut.done():
                    fut.set_exception(e)
            return
        for (_, fut), c in zip(p.samples, result.completions, strict=True):
            if not fut.done():
                fut.set_result((c, result))


def _query_key_route(route_class: type[APIRoute]) -> type[APIRoute]:
    """`route_class` that also takes the API key from `?api_key=` (OpenRLHF's client sends no headers)."""

    class QueryKeyRoute(route_class):  # type: ignore[valid-type, misc]
        def get_route_handler(self) -> Any:
            handler = super().get_route_handler()

            async def with_query_key(request: Request) -> Any:
                key = request.query_params.get("api_key")
                if key and "x-api-key" not in request.headers:
                    request.scope["headers"] = [*request.scope["headers"], (b"x-api-key", key.encode())]
                    request = Request(request.scope, request.receive)
                return await handler(request)

            return with_query_key

    return QueryKeyRoute


# ------------------------------------------------------------------------------------------------ routes


def build_scoring_router(deps: JudgeState, route_class: type[APIRoute]) -> APIRouter:
    """The scoring routes, guarded by the judge API's `route_class` (key, body size, metrics); included by
    `sgpo.judge.api.build_app` under /v1."""
    from sgpo.judge.api import _ERRORS

    metrics = ScoringMetrics(deps)
    scorer = GroupScorer(deps, metrics)
    grouper = OpenRlhfGrouper(scorer, metrics)
    router = APIRouter(route_class=route_class)
    errors = {
        **_ERRORS,
        503: {"description": "The backend is loading, or the verifier is not configured or unreachable."},
    }

    @router.post("/score_groups", response_model=ScoreGroupsOut, responses=errors)
    def score_groups(body: ScoreGroupsIn) -> ScoreGroupsOut:
        """Rewards of groups of completions: 0/1 by the verifier service, colored (sgpo.core) for the wrong
        answers of all-negative groups ([algo] color_scope), with verdicts, first errors and rts."""
        groups = [
            ScoreGroup(
                g.problem,
                g.answer,
                tuple(
                    JudgeItem(c)
                    if isinstance(c, str)
                    else JudgeItem(c.text, (), tuple(c.token_char_starts or ()))
                    for c in g.completions
                ),
                g.reference_solution,
            )
            for g in body.groups
        ]
        scored = scorer.score(groups)
        return ScoreGroupsOut(groups=scored, summary=summarize(scored))

    openrlhf = APIRouter(route_class=_query_key_route(route_class))

    @openrlhf.post("/openrlhf/reward", response_model=OpenRlhfOut, responses=errors)
    async def openrlhf_reward(
        body: OpenRlhfIn,
        n_samples_per_prompt: int | None = Query(
            None,
            ge=1,
            le=4096,
            description="Samples per group; default [judge.scoring] n_samples_per_prompt.",
        ),
        api_key: str | None = Query(None, description="The API key, for clients that cannot send headers."),
    ) -> OpenRlhfOut:
        """OpenRLHF's remote reward model (`--remote_rm_url http://judge:PORT/v1/openrlhf/reward?api_key=KEY`):
        the request is answered once its prompt's group is complete (or after group_wait_s)."""
        del api_key  # checked by the route's guard
        return await grouper.score(body, n_samples_per_prompt or scorer.cfg.n_samples_per_prompt)

    router.include_router(openrlhf)
    return router
