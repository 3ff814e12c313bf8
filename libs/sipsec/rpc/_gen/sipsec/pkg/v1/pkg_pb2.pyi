from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyPurpose(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_PURPOSE_UNSPECIFIED: _ClassVar[KeyPurpose]
    KEY_PURPOSE_ENC: _ClassVar[KeyPurpose]
    KEY_PURPOSE_SIG: _ClassVar[KeyPurpose]

class KeyPeriod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_PERIOD_UNSPECIFIED: _ClassVar[KeyPeriod]
    KEY_PERIOD_CURRENT: _ClassVar[KeyPeriod]
    KEY_PERIOD_NEXT: _ClassVar[KeyPeriod]
KEY_PURPOSE_UNSPECIFIED: KeyPurpose
KEY_PURPOSE_ENC: KeyPurpose
KEY_PURPOSE_SIG: KeyPurpose
KEY_PERIOD_UNSPECIFIED: KeyPeriod
KEY_PERIOD_CURRENT: KeyPeriod
KEY_PERIOD_NEXT: KeyPeriod

class SignedDomainParams(_message.Message):
    __slots__ = ("domain", "params", "signature", "signer_public_key", "version")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SIGNER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    domain: str
    params: bytes
    signature: bytes
    signer_public_key: bytes
    version: int
    def __init__(self, domain: _Optional[str] = ..., params: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., signer_public_key: _Optional[bytes] = ..., version: _Optional[int] = ...) -> None: ...

class LoginRequest(_message.Message):
    __slots__ = ("aor", "password", "client_address")
    AOR_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    aor: str
    password: str
    client_address: str
    def __init__(self, aor: _Optional[str] = ..., password: _Optional[str] = ..., client_address: _Optional[str] = ...) -> None: ...

class LoginResponse(_message.Message):
    __slots__ = ("session_token", "aor", "idle_timeout_s", "max_lifetime_s")
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    AOR_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    MAX_LIFETIME_S_FIELD_NUMBER: _ClassVar[int]
    session_token: str
    aor: str
    idle_timeout_s: int
    max_lifetime_s: int
    def __init__(self, session_token: _Optional[str] = ..., aor: _Optional[str] = ..., idle_timeout_s: _Optional[int] = ..., max_lifetime_s: _Optional[int] = ...) -> None: ...

class LogoutRequest(_message.Message):
    __slots__ = ("session_token",)
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    session_token: str
    def __init__(self, session_token: _Optional[str] = ...) -> None: ...

class LogoutResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSystemParamsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSystemParamsResponse(_message.Message):
    __slots__ = ("params", "node_index")
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    NODE_INDEX_FIELD_NUMBER: _ClassVar[int]
    params: SignedDomainParams
    node_index: int
    def __init__(self, params: _Optional[_Union[SignedDomainParams, _Mapping]] = ..., node_index: _Optional[int] = ...) -> None: ...

class GetDomainParamsRequest(_message.Message):
    __slots__ = ("domain",)
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    domain: str
    def __init__(self, domain: _Optional[str] = ...) -> None: ...

class GetDomainParamsResponse(_message.Message):
    __slots__ = ("params", "from_cache", "valid_until")
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    FROM_CACHE_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    params: SignedDomainParams
    from_cache: bool
    valid_until: float
    def __init__(self, params: _Optional[_Union[SignedDomainParams, _Mapping]] = ..., from_cache: _Optional[bool] = ..., valid_until: _Optional[float] = ...) -> None: ...

class GetPrivateKeyRequest(_message.Message):
    __slots__ = ("session_token", "purpose", "period_selector", "period", "aor")
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    AOR_FIELD_NUMBER: _ClassVar[int]
    session_token: str
    purpose: KeyPurpose
    period_selector: KeyPeriod
    period: int
    aor: str
    def __init__(self, session_token: _Optional[str] = ..., purpose: _Optional[_Union[KeyPurpose, str]] = ..., period_selector: _Optional[_Union[KeyPeriod, str]] = ..., period: _Optional[int] = ..., aor: _Optional[str] = ...) -> None: ...

class PartialKey(_message.Message):
    __slots__ = ("node_index", "value")
    NODE_INDEX_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    node_index: int
    value: bytes
    def __init__(self, node_index: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...

class GetPrivateKeyResponse(_message.Message):
    __slots__ = ("aor", "purpose", "period", "period_length_s", "not_before", "not_after", "threshold", "params_version", "private_key", "partial_key")
    AOR_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    PERIOD_LENGTH_S_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PARAMS_VERSION_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_KEY_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_KEY_FIELD_NUMBER: _ClassVar[int]
    aor: str
    purpose: KeyPurpose
    period: int
    period_length_s: int
    not_before: float
    not_after: float
    threshold: int
    params_version: int
    private_key: bytes
    partial_key: PartialKey
    def __init__(self, aor: _Optional[str] = ..., purpose: _Optional[_Union[KeyPurpose, str]] = ..., period: _Optional[int] = ..., period_length_s: _Optional[int] = ..., not_before: _Optional[float] = ..., not_after: _Optional[float] = ..., threshold: _Optional[int] = ..., params_version: _Optional[int] = ..., private_key: _Optional[bytes] = ..., partial_key: _Optional[_Union[PartialKey, _Mapping]] = ...) -> None: ...
