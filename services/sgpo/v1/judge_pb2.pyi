from sgpo.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JudgeItem(_message.Message):
    __slots__ = ("response", "steps", "token_char_starts")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_CHAR_STARTS_FIELD_NUMBER: _ClassVar[int]
    response: str
    steps: _containers.RepeatedScalarFieldContainer[str]
    token_char_starts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, response: _Optional[str] = ..., steps: _Optional[_Iterable[str]] = ..., token_char_starts: _Optional[_Iterable[int]] = ...) -> None: ...

class JudgeRequest(_message.Message):
    __slots__ = ("problem", "reference_solution", "items")
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SOLUTION_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    problem: str
    reference_solution: str
    items: _containers.RepeatedCompositeFieldContainer[JudgeItem]
    def __init__(self, problem: _Optional[str] = ..., reference_solution: _Optional[str] = ..., items: _Optional[_Iterable[_Union[JudgeItem, _Mapping]]] = ...) -> None: ...

class JudgeResponse(_message.Message):
    __slots__ = ("judgements",)
    JUDGEMENTS_FIELD_NUMBER: _ClassVar[int]
    judgements: _containers.RepeatedCompositeFieldContainer[_common_pb2.StepJudgement]
    def __init__(self, judgements: _Optional[_Iterable[_Union[_common_pb2.StepJudgement, _Mapping]]] = ...) -> None: ...
