"""The crypto-worker wire vocabulary shared by the worker and the remote engine.

A failed operation travels as a gRPC status plus a *reason* (trailing metadata
``sipsec-reason`` on single RPCs, the ``reason`` field of a batch item). Each reason names
one ``sipsec.ibc`` error class, so the remote engine raises exactly what the in-process
engine would: ``invalid-ciphertext`` -> :class:`~sipsec.ibc.InvalidCiphertext`, and so on.
"""

from __future__ import annotations

from typing import Final

import grpc

from sipsec.ibc import (
    Aor,
    DomainParams,
    IbcError,
    Identity,
    InvalidCiphertext,
    InvalidEncoding,
    InvalidIdentity,
    InvalidSignature,
    MalformedCiphertext,
    MalformedSignature,
    PeriodNotAllowed,
    Purpose,
)
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2 as pb

__all__ = [
    "CRYPTO_REASONS",
    "KIND_DECAPSULATE",
    "KIND_ENCAPSULATE",
    "KIND_SIGN",
    "KIND_VERIFY",
    "KINDS",
    "QUEUE_DEPTH_KEY",
    "REASON_BATCH_TOO_LARGE",
    "REASON_DEADLINE",
    "REASON_DRAINING",
    "REASON_IBC_ERROR",
    "REASON_INVALID_ARGUMENT",
    "REASON_INVALID_CIPHERTEXT",
    "REASON_INVALID_ENCODING",
    "REASON_INVALID_IDENTITY",
    "REASON_INVALID_SIGNATURE",
    "REASON_MALFORMED_CIPHERTEXT",
    "REASON_MALFORMED_SIGNATURE",
    "REASON_POOL_BROKEN",
    "REASON_QUEUE_FULL",
    "error_for_reason",
    "identity_from_proto",
    "identity_to_proto",
    "item_status",
    "reason_for",
    "status_code",
]

KIND_ENCAPSULATE: Final = "encapsulate"
KIND_DECAPSULATE: Final = "decapsulate"
KIND_SIGN: Final = "sign"
KIND_VERIFY: Final = "verify"
KINDS: Final = (KIND_ENCAPSULATE, KIND_DECAPSULATE, KIND_SIGN, KIND_VERIFY)
#: (Each kind is also the name of its batch in the Stream messages' ``batch`` / ``result`` oneofs.)

#: Trailing metadata of a worker's successful answer: its pool tasks waiting for a process.
QUEUE_DEPTH_KEY: Final = "sipsec-queue-depth"

# Per-operation reasons (gRPC INVALID_ARGUMENT / batch item status).
REASON_INVALID_CIPHERTEXT: Final = "invalid-ciphertext"
REASON_MALFORMED_CIPHERTEXT: Final = "malformed-ciphertext"
REASON_INVALID_SIGNATURE: Final = "invalid-signature"
REASON_MALFORMED_SIGNATURE: Final = "malformed-signature"
REASON_INVALID_ENCODING: Final = "invalid-encoding"
REASON_INVALID_IDENTITY: Final = "invalid-identity"
REASON_INVALID_ARGUMENT: Final = "invalid-argument"
REASON_IBC_ERROR: Final = "ibc-error"
# Whole-request reasons.
REASON_BATCH_TOO_LARGE: Final = "batch-too-large"  # INVALID_ARGUMENT
REASON_QUEUE_FULL: Final = "queue-full"  # RESOURCE_EXHAUSTED
REASON_DEADLINE: Final = "deadline-exceeded"  # DEADLINE_EXCEEDED
REASON_DRAINING: Final = "draining"  # UNAVAILABLE
REASON_POOL_BROKEN: Final = "pool-broken"  # UNAVAILABLE (a pool process died; pool restarted)

# Most specific class first: MalformedCiphertext is both InvalidCiphertext and InvalidEncoding.
_BY_CLASS: Final[tuple[tuple[type[IbcError], str], ...]] = (
    (MalformedCiphertext, REASON_MALFORMED_CIPHERTEXT),
    (MalformedSignature, REASON_MALFORMED_SIGNATURE),
    (InvalidCiphertext, REASON_INVALID_CIPHERTEXT),
    (InvalidSignature, REASON_INVALID_SIGNATURE),
    (InvalidIdentity, REASON_INVALID_IDENTITY),
    (PeriodNotAllowed, REASON_INVALID_IDENTITY),
    (InvalidEncoding, REASON_INVALID_ENCODING),
)
_BY_REASON: Final[dict[str, type[IbcError]]] = {
    REASON_MALFORMED_CIPHERTEXT: MalformedCiphertext,
    REASON_MALFORMED_SIGNATURE: MalformedSignature,
    REASON_INVALID_CIPHERTEXT: InvalidCiphertext,
    REASON_INVALID_SIGNATURE: InvalidSignature,
    REASON_INVALID_IDENTITY: InvalidIdentity,
    REASON_INVALID_ENCODING: InvalidEncoding,
}

#: Every reason an operation (not the transport) can fail with.
CRYPTO_REASONS: Final = frozenset(
    {*_BY_REASON, REASON_INVALID_ARGUMENT, REASON_IBC_ERROR}
)

_PURPOSE_TO_PB: Final = {Purpose.ENC: pb.PURPOSE_ENC, Purpose.SIG: pb.PURPOSE_SIG}
_PURPOSE_FROM_PB: Final = {v: k for k, v in _PURPOSE_TO_PB.items()}


def reason_for(exc: BaseException) -> str:
    """The wire reason of an ``sipsec.ibc`` error (``ibc-error`` for any other IbcError)."""
    for cls, reason in _BY_CLASS:
        if isinstance(exc, cls):
            return reason
    return REASON_IBC_ERROR if isinstance(exc, IbcError) else REASON_INVALID_ARGUMENT


def error_for_reason(reason: str, message: str) -> IbcError:
    """The ``sipsec.ibc`` exception a reason stands for (``IbcError`` when unknown)."""
    return _BY_REASON.get(reason, IbcError)(message)


def item_status(reason: str) -> pb.ItemStatus:
    """The batch ItemStatus of a reason ("" is OK)."""
    if not reason:
        return pb.ITEM_STATUS_OK
    if reason in (REASON_INVALID_CIPHERTEXT, REASON_MALFORMED_CIPHERTEXT):
        return pb.ITEM_STATUS_INVALID_CIPHERTEXT
    if reason in (REASON_INVALID_SIGNATURE, REASON_MALFORMED_SIGNATURE):
        return pb.ITEM_STATUS_INVALID_SIGNATURE
    return pb.ITEM_STATUS_INVALID_ARGUMENT


def identity_to_proto(identity: Identity) -> pb.Identity:
    """The wire form of an identity (period length always set)."""
    return pb.Identity(
        aor=identity.aor,
        purpose=_PURPOSE_TO_PB[identity.purpose],
        period=identity.period,
        period_length_s=identity.period_length_s,
    )


def identity_from_proto(msg: pb.Identity, params: DomainParams | None = None) -> Identity:
    """Rebuilds an Identity; a zero period length is taken from ``params``.

    Raises InvalidIdentity for an unknown purpose, a non-canonical AOR, a bad period, or a
    missing period length without parameters.
    """
    purpose = _PURPOSE_FROM_PB.get(msg.purpose)
    if purpose is None:
        raise InvalidIdentity("identity purpose is unspecified")
    length = msg.period_length_s
    if length == 0:
        if params is None:
            raise InvalidIdentity("identity period_length_s is required here")
        length = params.policy.length_s
    return Identity(Aor(msg.aor), purpose, int(msg.period), int(length))


_STATUS_CODES: Final = {code.value[0]: code for code in grpc.StatusCode}


def status_code(value: int) -> grpc.StatusCode:
    """The gRPC status code of a Stream answer's numeric ``code`` (UNKNOWN for a number gRPC has not)."""
    return _STATUS_CODES.get(value, grpc.StatusCode.UNKNOWN)
