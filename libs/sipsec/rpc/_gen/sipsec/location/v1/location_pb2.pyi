from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UnbindScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNBIND_SCOPE_UNSPECIFIED: _ClassVar[UnbindScope]
    UNBIND_SCOPE_ONE: _ClassVar[UnbindScope]
    UNBIND_SCOPE_ALL: _ClassVar[UnbindScope]
UNBIND_SCOPE_UNSPECIFIED: UnbindScope
UNBIND_SCOPE_ONE: UnbindScope
UNBIND_SCOPE_ALL: UnbindScope

class Binding(_message.Message):
    __slots__ = ("aor", "contact", "q_milli", "expires_seconds", "instance_id", "reg_id", "call_id", "cseq", "received", "expires_at_unix_ms")
    AOR_FIELD_NUMBER: _ClassVar[int]
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    Q_MILLI_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    REG_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    CSEQ_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    aor: str
    contact: str
    q_milli: int
    expires_seconds: int
    instance_id: str
    reg_id: int
    call_id: str
    cseq: int
    received: str
    expires_at_unix_ms: int
    def __init__(self, aor: _Optional[str] = ..., contact: _Optional[str] = ..., q_milli: _Optional[int] = ..., expires_seconds: _Optional[int] = ..., instance_id: _Optional[str] = ..., reg_id: _Optional[int] = ..., call_id: _Optional[str] = ..., cseq: _Optional[int] = ..., received: _Optional[str] = ..., expires_at_unix_ms: _Optional[int] = ...) -> None: ...

class BindRequest(_message.Message):
    __slots__ = ("aor", "contact", "expires_seconds", "q_milli", "instance_id", "reg_id", "call_id", "cseq", "received")
    AOR_FIELD_NUMBER: _ClassVar[int]
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_SECONDS_FIELD_NUMBER: _ClassVar[int]
    Q_MILLI_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    REG_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    CSEQ_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    aor: str
    contact: str
    expires_seconds: int
    q_milli: int
    instance_id: str
    reg_id: int
    call_id: str
    cseq: int
    received: str
    def __init__(self, aor: _Optional[str] = ..., contact: _Optional[str] = ..., expires_seconds: _Optional[int] = ..., q_milli: _Optional[int] = ..., instance_id: _Optional[str] = ..., reg_id: _Optional[int] = ..., call_id: _Optional[str] = ..., cseq: _Optional[int] = ..., received: _Optional[str] = ...) -> None: ...

class BindResponse(_message.Message):
    __slots__ = ("bindings",)
    BINDINGS_FIELD_NUMBER: _ClassVar[int]
    bindings: _containers.RepeatedCompositeFieldContainer[Binding]
    def __init__(self, bindings: _Optional[_Iterable[_Union[Binding, _Mapping]]] = ...) -> None: ...

class UnbindRequest(_message.Message):
    __slots__ = ("aor", "scope", "contact", "instance_id", "reg_id", "call_id", "cseq")
    AOR_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    REG_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    CSEQ_FIELD_NUMBER: _ClassVar[int]
    aor: str
    scope: UnbindScope
    contact: str
    instance_id: str
    reg_id: int
    call_id: str
    cseq: int
    def __init__(self, aor: _Optional[str] = ..., scope: _Optional[_Union[UnbindScope, str]] = ..., contact: _Optional[str] = ..., instance_id: _Optional[str] = ..., reg_id: _Optional[int] = ..., call_id: _Optional[str] = ..., cseq: _Optional[int] = ...) -> None: ...

class UnbindResponse(_message.Message):
    __slots__ = ("removed", "bindings")
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    BINDINGS_FIELD_NUMBER: _ClassVar[int]
    removed: int
    bindings: _containers.RepeatedCompositeFieldContainer[Binding]
    def __init__(self, removed: _Optional[int] = ..., bindings: _Optional[_Iterable[_Union[Binding, _Mapping]]] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("aor",)
    AOR_FIELD_NUMBER: _ClassVar[int]
    aor: str
    def __init__(self, aor: _Optional[str] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("bindings",)
    BINDINGS_FIELD_NUMBER: _ClassVar[int]
    bindings: _containers.RepeatedCompositeFieldContainer[Binding]
    def __init__(self, bindings: _Optional[_Iterable[_Union[Binding, _Mapping]]] = ...) -> None: ...
