"""Core records <-> protobuf messages. The only place that knows both shapes."""

from __future__ import annotations

from fractions import Fraction
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
        step_lengths=j.step_lengths,
        reason=j.reason,
        backend=j.backend,
    )


def judgement_from_pb(m: pb.StepJudgement) -> StepJudgement | None:
    if m.status == pb.JUDGE_STATUS_UNSPECIFIED:
        return None
    if m.status not in _JUDGE_FROM_PB:
        raise ValueError(f"judgement status {m.status} is not ok/failed")
    lengths = tuple(m.step_lengths)
    if not lengths and m.status == pb.JUDGE_STATUS_OK and m.steps:
        lengths = lengths_for_legacy_rts(m.legacy_rts, len(m.steps), m.first_error_step)
    return StepJudgement(
        status=_JUDGE_FROM_PB[m.status],
        steps=tuple(m.steps),
        first_error_step=m.first_error_step,
        step_lengths=lengths,
        reason=m.reason,
        backend=m.backend,
    )


def lengths_for_legacy_rts(rts: float, n_steps: int, first_error_step: int) -> tuple[int, ...]:
    """Step lengths whose rts (sgpo.core.compute_rts) is exactly `rts`, for judgements recorded with an rts but
    no step lengths. rts was a ratio of integers below 10**7 (tokens or characters), so it is recovered exactly.
    Measured in steps (rts_unit = "steps") only the step count and first error matter, which are kept."""
    prefix = n_steps - 1 if first_error_step == -1 else first_error_step
    if not 0 <= prefix < n_steps:
        raise ValueError(f"first_error_step {first_error_step} is out of range for {n_steps} steps")
    ratio = Fraction(min(max(rts, 0.0), 1.0)).limit_denominator(10**7)
    head, total = ratio.numerator, ratio.denominator
    if prefix == 0:
        return (1,) * n_steps  # nothing precedes the first error: rts 0 whatever the lengths
    lengths = [0] * n_steps
    lengths[0], lengths[prefix] = head, total - head
    return tuple(lengths)


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
