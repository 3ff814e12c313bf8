from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Purpose(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PURPOSE_UNSPECIFIED: _ClassVar[Purpose]
    PURPOSE_ENC: _ClassVar[Purpose]
    PURPOSE_SIG: _ClassVar[Purpose]

class ItemStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITEM_STATUS_UNSPECIFIED: _ClassVar[ItemStatus]
    ITEM_STATUS_OK: _ClassVar[ItemStatus]
    ITEM_STATUS_INVALID_CIPHERTEXT: _ClassVar[ItemStatus]
    ITEM_STATUS_INVALID_SIGNATURE: _ClassVar[ItemStatus]
    ITEM_STATUS_INVALID_ARGUMENT: _ClassVar[ItemStatus]
PURPOSE_UNSPECIFIED: Purpose
PURPOSE_ENC: Purpose
PURPOSE_SIG: Purpose
ITEM_STATUS_UNSPECIFIED: ItemStatus
ITEM_STATUS_OK: ItemStatus
ITEM_STATUS_INVALID_CIPHERTEXT: ItemStatus
ITEM_STATUS_INVALID_SIGNATURE: ItemStatus
ITEM_STATUS_INVALID_ARGUMENT: ItemStatus

class Identity(_message.Message):
    __slots__ = ("aor", "purpose", "period", "period_length_s")
    AOR_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    PERIOD_LENGTH_S_FIELD_NUMBER: _ClassVar[int]
    aor: str
    purpose: Purpose
    period: int
    period_length_s: int
    def __init__(self, aor: _Optional[str] = ..., purpose: _Optional[_Union[Purpose, str]] = ..., period: _Optional[int] = ..., period_length_s: _Optional[int] = ...) -> None: ...

class EncapsulateRequest(_message.Message):
    __slots__ = ("domain_params", "identity")
    DOMAIN_PARAMS_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    domain_params: bytes
    identity: Identity
    def __init__(self, domain_params: _Optional[bytes] = ..., identity: _Optional[_Union[Identity, _Mapping]] = ...) -> None: ...

class EncapsulateResponse(_message.Message):
    __slots__ = ("key", "ciphertext")
    KEY_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    ciphertext: bytes
    def __init__(self, key: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class DecapsulateRequest(_message.Message):
    __slots__ = ("identity", "private_key", "ciphertext")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_KEY_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    private_key: bytes
    ciphertext: bytes
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ..., private_key: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class DecapsulateResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    def __init__(self, key: _Optional[bytes] = ...) -> None: ...

class SignRequest(_message.Message):
    __slots__ = ("identity", "private_key", "message")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_KEY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    private_key: bytes
    message: bytes
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ..., private_key: _Optional[bytes] = ..., message: _Optional[bytes] = ...) -> None: ...

class SignResponse(_message.Message):
    __slots__ = ("signature",)
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    signature: bytes
    def __init__(self, signature: _Optional[bytes] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("domain_params", "identity", "message", "signature")
    DOMAIN_PARAMS_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    domain_params: bytes
    identity: Identity
    message: bytes
    signature: bytes
    def __init__(self, domain_params: _Optional[bytes] = ..., identity: _Optional[_Union[Identity, _Mapping]] = ..., message: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("valid",)
    VALID_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    def __init__(self, valid: _Optional[bool] = ...) -> None: ...

class BatchEncapsulateRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[EncapsulateRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[EncapsulateRequest, _Mapping]]] = ...) -> None: ...

class BatchEncapsulateResult(_message.Message):
    __slots__ = ("status", "result", "error", "reason")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    status: ItemStatus
    result: EncapsulateResponse
    error: str
    reason: str
    def __init__(self, status: _Optional[_Union[ItemStatus, str]] = ..., result: _Optional[_Union[EncapsulateResponse, _Mapping]] = ..., error: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class BatchEncapsulateResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchEncapsulateResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchEncapsulateResult, _Mapping]]] = ...) -> None: ...

class BatchDecapsulateRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[DecapsulateRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[DecapsulateRequest, _Mapping]]] = ...) -> None: ...

class BatchDecapsulateResult(_message.Message):
    __slots__ = ("status", "result", "error", "reason")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    status: ItemStatus
    result: DecapsulateResponse
    error: str
    reason: str
    def __init__(self, status: _Optional[_Union[ItemStatus, str]] = ..., result: _Optional[_Union[DecapsulateResponse, _Mapping]] = ..., error: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class BatchDecapsulateResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchDecapsulateResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchDecapsulateResult, _Mapping]]] = ...) -> None: ...

class BatchSignRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[SignRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[SignRequest, _Mapping]]] = ...) -> None: ...

class BatchSignResult(_message.Message):
    __slots__ = ("status", "result", "error", "reason")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    status: ItemStatus
    result: SignResponse
    error: str
    reason: str
    def __init__(self, status: _Optional[_Union[ItemStatus, str]] = ..., result: _Optional[_Union[SignResponse, _Mapping]] = ..., error: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class BatchSignResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchSignResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchSignResult, _Mapping]]] = ...) -> None: ...

class BatchVerifyRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[VerifyRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[VerifyRequest, _Mapping]]] = ...) -> None: ...

class BatchVerifyResult(_message.Message):
    __slots__ = ("status", "error", "reason")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    status: ItemStatus
    error: str
    reason: str
    def __init__(self, status: _Optional[_Union[ItemStatus, str]] = ..., error: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class BatchVerifyResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchVerifyResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchVerifyResult, _Mapping]]] = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("id", "timeout_s", "encapsulate", "decapsulate", "sign", "verify")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    ENCAPSULATE_FIELD_NUMBER: _ClassVar[int]
    DECAPSULATE_FIELD_NUMBER: _ClassVar[int]
    SIGN_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    id: int
    timeout_s: float
    encapsulate: BatchEncapsulateRequest
    decapsulate: BatchDecapsulateRequest
    sign: BatchSignRequest
    verify: BatchVerifyRequest
    def __init__(self, id: _Optional[int] = ..., timeout_s: _Optional[float] = ..., encapsulate: _Optional[_Union[BatchEncapsulateRequest, _Mapping]] = ..., decapsulate: _Optional[_Union[BatchDecapsulateRequest, _Mapping]] = ..., sign: _Optional[_Union[BatchSignRequest, _Mapping]] = ..., verify: _Optional[_Union[BatchVerifyRequest, _Mapping]] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("id", "code", "reason", "message", "queue_depth", "encapsulate", "decapsulate", "sign", "verify")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    ENCAPSULATE_FIELD_NUMBER: _ClassVar[int]
    DECAPSULATE_FIELD_NUMBER: _ClassVar[int]
    SIGN_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    id: int
    code: int
    reason: str
    message: str
    queue_depth: int
    encapsulate: BatchEncapsulateResponse
    decapsulate: BatchDecapsulateResponse
    sign: BatchSignResponse
    verify: BatchVerifyResponse
    def __init__(self, id: _Optional[int] = ..., code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., queue_depth: _Optional[int] = ..., encapsulate: _Optional[_Union[BatchEncapsulateResponse, _Mapping]] = ..., decapsulate: _Optional[_Union[BatchDecapsulateResponse, _Mapping]] = ..., sign: _Optional[_Union[BatchSignResponse, _Mapping]] = ..., verify: _Optional[_Union[BatchVerifyResponse, _Mapping]] = ...) -> None: ...
