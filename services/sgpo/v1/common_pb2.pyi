from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VerdictStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_STATUS_UNSPECIFIED: _ClassVar[VerdictStatus]
    VERDICT_STATUS_CORRECT: _ClassVar[VerdictStatus]
    VERDICT_STATUS_WRONG: _ClassVar[VerdictStatus]
    VERDICT_STATUS_UNSCORABLE: _ClassVar[VerdictStatus]

class JudgeStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JUDGE_STATUS_UNSPECIFIED: _ClassVar[JudgeStatus]
    JUDGE_STATUS_OK: _ClassVar[JudgeStatus]
    JUDGE_STATUS_FAILED: _ClassVar[JudgeStatus]

class GroupKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GROUP_KIND_UNSPECIFIED: _ClassVar[GroupKind]
    GROUP_KIND_ALL_NEGATIVE: _ClassVar[GroupKind]
    GROUP_KIND_ALL_POSITIVE: _ClassVar[GroupKind]
    GROUP_KIND_MIXED: _ClassVar[GroupKind]
    GROUP_KIND_UNSCORABLE: _ClassVar[GroupKind]
VERDICT_STATUS_UNSPECIFIED: VerdictStatus
VERDICT_STATUS_CORRECT: VerdictStatus
VERDICT_STATUS_WRONG: VerdictStatus
VERDICT_STATUS_UNSCORABLE: VerdictStatus
JUDGE_STATUS_UNSPECIFIED: JudgeStatus
JUDGE_STATUS_OK: JudgeStatus
JUDGE_STATUS_FAILED: JudgeStatus
GROUP_KIND_UNSPECIFIED: GroupKind
GROUP_KIND_ALL_NEGATIVE: GroupKind
GROUP_KIND_ALL_POSITIVE: GroupKind
GROUP_KIND_MIXED: GroupKind
GROUP_KIND_UNSCORABLE: GroupKind

class SamplingParams(_message.Message):
    __slots__ = ("n", "temperature", "top_p", "max_tokens", "stop", "seed")
    N_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    def __init__(self, n: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., max_tokens: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ...) -> None: ...

class Completion(_message.Message):
    __slots__ = ("text", "token_ids", "logprobs", "finish_reason", "policy_version", "token_char_starts")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_CHAR_STARTS_FIELD_NUMBER: _ClassVar[int]
    text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    logprobs: _containers.RepeatedScalarFieldContainer[float]
    finish_reason: str
    policy_version: int
    token_char_starts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, text: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., logprobs: _Optional[_Iterable[float]] = ..., finish_reason: _Optional[str] = ..., policy_version: _Optional[int] = ..., token_char_starts: _Optional[_Iterable[int]] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("status", "extracted", "reason")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXTRACTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    status: VerdictStatus
    extracted: str
    reason: str
    def __init__(self, status: _Optional[_Union[VerdictStatus, str]] = ..., extracted: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class StepJudgement(_message.Message):
    __slots__ = ("status", "steps", "first_error_step", "legacy_rts", "reason", "backend", "step_lengths")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    FIRST_ERROR_STEP_FIELD_NUMBER: _ClassVar[int]
    LEGACY_RTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    STEP_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    status: JudgeStatus
    steps: _containers.RepeatedScalarFieldContainer[str]
    first_error_step: int
    legacy_rts: float
    reason: str
    backend: str
    step_lengths: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, status: _Optional[_Union[JudgeStatus, str]] = ..., steps: _Optional[_Iterable[str]] = ..., first_error_step: _Optional[int] = ..., legacy_rts: _Optional[float] = ..., reason: _Optional[str] = ..., backend: _Optional[str] = ..., step_lengths: _Optional[_Iterable[int]] = ...) -> None: ...

class Group(_message.Message):
    __slots__ = ("group_id", "run_id", "prompt_id", "problem", "prompt_text", "prompt_token_ids", "answer", "reference_solution", "completions", "verdicts", "judgements", "rewards", "advantages", "kind", "colored", "policy_version", "algo", "timings", "created_unix_ms")
    class TimingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEXT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SOLUTION_FIELD_NUMBER: _ClassVar[int]
    COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    JUDGEMENTS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    ADVANTAGES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    COLORED_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALGO_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    run_id: str
    prompt_id: str
    problem: str
    prompt_text: str
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    answer: str
    reference_solution: str
    completions: _containers.RepeatedCompositeFieldContainer[Completion]
    verdicts: _containers.RepeatedCompositeFieldContainer[Verdict]
    judgements: _containers.RepeatedCompositeFieldContainer[StepJudgement]
    rewards: _containers.RepeatedScalarFieldContainer[float]
    advantages: _containers.RepeatedScalarFieldContainer[float]
    kind: GroupKind
    colored: bool
    policy_version: int
    algo: str
    timings: _containers.ScalarMap[str, float]
    created_unix_ms: int
    def __init__(self, group_id: _Optional[str] = ..., run_id: _Optional[str] = ..., prompt_id: _Optional[str] = ..., problem: _Optional[str] = ..., prompt_text: _Optional[str] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., answer: _Optional[str] = ..., reference_solution: _Optional[str] = ..., completions: _Optional[_Iterable[_Union[Completion, _Mapping]]] = ..., verdicts: _Optional[_Iterable[_Union[Verdict, _Mapping]]] = ..., judgements: _Optional[_Iterable[_Union[StepJudgement, _Mapping]]] = ..., rewards: _Optional[_Iterable[float]] = ..., advantages: _Optional[_Iterable[float]] = ..., kind: _Optional[_Union[GroupKind, str]] = ..., colored: _Optional[bool] = ..., policy_version: _Optional[int] = ..., algo: _Optional[str] = ..., timings: _Optional[_Mapping[str, float]] = ..., created_unix_ms: _Optional[int] = ...) -> None: ...
