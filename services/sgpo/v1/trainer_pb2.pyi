from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PauseRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResumeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckpointNowRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TrainerStatus(_message.Message):
    __slots__ = ("step", "policy_version", "paused", "queue_lag", "last_checkpoint", "groups_consumed", "queue_backlog", "pending_groups")
    STEP_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LAG_FIELD_NUMBER: _ClassVar[int]
    LAST_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    GROUPS_CONSUMED_FIELD_NUMBER: _ClassVar[int]
    QUEUE_BACKLOG_FIELD_NUMBER: _ClassVar[int]
    PENDING_GROUPS_FIELD_NUMBER: _ClassVar[int]
    step: int
    policy_version: int
    paused: bool
    queue_lag: int
    last_checkpoint: str
    groups_consumed: int
    queue_backlog: int
    pending_groups: int
    def __init__(self, step: _Optional[int] = ..., policy_version: _Optional[int] = ..., paused: _Optional[bool] = ..., queue_lag: _Optional[int] = ..., last_checkpoint: _Optional[str] = ..., groups_consumed: _Optional[int] = ..., queue_backlog: _Optional[int] = ..., pending_groups: _Optional[int] = ...) -> None: ...

class CheckpointNowResponse(_message.Message):
    __slots__ = ("path", "step")
    PATH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    path: str
    step: int
    def __init__(self, path: _Optional[str] = ..., step: _Optional[int] = ...) -> None: ...
