"""Core records <-> protobuf messages. The only place that knows both shapes."""

from __future__ import annotations

from typing import cast

from sgpo.core.types import (
    Algo,
    Completion,
    FinishReason,
    Group,
    GroupKind,
    JudgeStatus,
    StepJudgement,
    Verdict,
    VerdictStatus,
)
from sgpo.v1 import common_pb2 as pb

_VERDICT_TO_PB: dict[VerdictStatus, int] = {
    "correct": pb.VERDICT_STATUS_CORRECT,
    "wrong": pb.VERDICT_STATUS_WRONG,
    "unscorable": pb.VERDICT_STATUS_UNSCORABLE,
}
_VERDICT_FROM_PB = {v: k for k, v in _VERDICT_TO_PB.items()}
_KIND_TO_PB: dict[GroupKind, int] = {
    "all_negative": pb.GROUP_KIND_ALL_NEGATIVE,
    "all_positive": pb.GROUP_KIND_ALL_POSITIVE,
    "mixed": pb.GROUP_KIND_MIXED,
    "unscorable": pb.GROUP_KIND_UNSCORABLE,
}
_KIND_FROM_PB = {v: k for k, v in _KIND_TO_PB.items()}
_JUDGE_TO_PB: dict[JudgeStatus, int] = {"ok": pb.JUDGE_STATUS_OK, "failed": pb.JUDGE_STATUS_FAILED}
_JUDGE_FROM_PB = {v: k for k, v in _JUDGE_TO_PB.items()}


def completion_to_pb(c: Completion) -> pb.Completion:
    return pb.Completion(
        text=c.text,
        token_ids=c.token_ids,
        logprobs=c.logprobs,
        finish_reason=c.finish_reason,
        policy_version=c.policy_version,
        token_char_starts=c.token_char_starts,
    )


def completion_from_pb(m: pb.Completion) -> Completion:
    return Completion(
        text=m.text,
        token_ids=tuple(m.token_ids),
        logprobs=tuple(m.logprobs),
        finish_reason=cast(FinishReason, m.finish_reason or "stop"),
        policy_version=m.policy_version,
        token_char_starts=tuple(m.token_char_starts),
    )


def verdict_to_pb(v: Verdict) -> pb.Verdict:
    return pb.Verdict(status=_VERDICT_TO_PB[v.status], extracted=v.extracted, reason=v.reason)


def verdict_from_pb(m: pb.Verdict) -> Verdict:
    if m.status not in _VERDICT_FROM_PB:
        raise ValueError(f"verdict status {m.status} is not correct/wrong/unscorable")
    return Verdict(_VERDICT_FROM_PB[m.status], m.extracted, m.reason)


def judgement_to_pb(j: StepJudgement | None) -> pb.StepJudgement:
    if j is None:
        return pb.StepJudgement()
    return pb.StepJudgement(
        status=_JUDGE_TO_PB[j.status],
        steps=j.steps,
        first_error_step=j.first_error_step,
        rts=j.rts,
        reward=j.reward,
        reason=j.reason,
        backend=j.backend,
    )


def judgement_from_pb(m: pb.StepJudgement) -> StepJudgement | None:
    if m.status == pb.JUDGE_STATUS_UNSPECIFIED:
        return None
    return StepJudgement(
        status=_JUDGE_FROM_PB[m.status],
        steps=tuple(m.steps),
        first_error_step=m.first_error_step,
        rts=m.rts,
        reward=m.reward,
        reason=m.reason,
        backend=m.backend,
    )


def group_to_pb(g: Group) -> pb.Group:
    return pb.Group(
        group_id=g.group_id,
        run_id=g.run_id,
        prompt_id=g.prompt_id,
        problem=g.problem,
        prompt_text=g.prompt_text,
        prompt_token_ids=g.prompt_token_ids,
        answer=g.answer,
        reference_solution=g.reference_solution,
        completions=[completion_to_pb(c) for c in g.completions],
        verdicts=[verdict_to_pb(v) for v in g.verdicts],
        judgements=[judgement_to_pb(j) for j in g.judgements],
        rewards=g.rewards,
        advantages=g.advantages,
        kind=_KIND_TO_PB[g.kind],
        colored=g.colored,
        policy_version=g.policy_version,
        algo=g.algo,
        timings=g.timings,
        created_unix_ms=g.created_unix_ms,
    )


def group_from_pb(m: pb.Group) -> Group:
    if m.kind not in _KIND_FROM_PB:
        raise ValueError(f"group {m.group_id!r} has no kind")
    return Group(
        group_id=m.group_id,
        run_id=m.run_id,
        prompt_id=m.prompt_id,
        problem=m.problem,
        prompt_text=m.prompt_text,
        prompt_token_ids=tuple(m.prompt_token_ids),
        answer=m.answer,
        reference_solution=m.reference_solution,
        completions=tuple(completion_from_pb(c) for c in m.completions),
        verdicts=tuple(verdict_from_pb(v) for v in m.verdicts),
        judgements=tuple(judgement_from_pb(j) for j in m.judgements),
        rewards=tuple(m.rewards),
        advantages=tuple(m.advantages),
        kind=_KIND_FROM_PB[m.kind],
        colored=m.colored,
        policy_version=m.policy_version,
        algo=cast(Algo, m.algo or "sgpo"),
        timings=dict(m.timings),
        created_unix_ms=m.created_unix_ms,
    )


def group_to_bytes(g: Group) -> bytes:
    return bytes(group_to_pb(g).SerializeToString())


def group_from_bytes(data: bytes) -> Group:
    m = pb.Group()
    m.ParseFromString(data)
    return group_from_pb(m)
