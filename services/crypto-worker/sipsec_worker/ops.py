"""The operations as they run inside a pool process: wire bytes in, plain tuples out.

Functions here are pickled by name into the pool's (spawned) processes; the module keeps
no state but two bounded LRU caches per process: parsed domain parameters, and parsed private
keys. A key kept across requests keeps the fixed-base signing tables ``sipsec.ibc`` gives a
key that signs often (as a key held by the in-process engine does), and is not decompressed
and subgroup-checked again; the cache is keyed by a SHA-256 of the identity and key bytes, so
it holds no key material beyond the parsed keys themselves and dies with the process. The
process's fixed-base tables (identity points, recipients, signing keys) are sized and admitted
by ``sipsec.ibc.configure_tables`` (``init_process``: ``SIPSEC_WORKER_TABLE_MIB``).
"""

from __future__ import annotations

import functools
import hashlib
import signal
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final

from sipsec import ibc
from sipsec.engine.wire import (
    KIND_DECAPSULATE,
    KIND_ENCAPSULATE,
    KIND_SIGN,
    KIND_VERIFY,
    REASON_DEADLINE,
    REASON_INVALID_ARGUMENT,
    REASON_INVALID_CIPHERTEXT,
    REASON_INVALID_IDENTITY,
    REASON_INVALID_SIGNATURE,
    REASON_MALFORMED_CIPHERTEXT,
    REASON_MALFORMED_SIGNATURE,
    identity_from_proto,
    reason_for,
)
from sipsec.ibc import DomainParams, IbcError, Identity, PrivateKey
from sipsec.ibc.hazmat.tables import DEFAULT_TABLE_MIB
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2 as pb

__all__ = [
    "DEFAULT_KEY_CACHE",
    "DEFAULT_PARAMS_CACHE",
    "DEFAULT_TABLE_MIB",
    "VERIFY_BATCH",
    "ItemResult",
    "cache_sizes",
    "init_process",
    "key_cache_info",
    "params_cache_info",
    "run_items",
    "set_key_cache",
    "set_params_cache",
]

#: (reason, out1, out2, message, field): reason "" means success; message and field name
#: the failure (never key material). out1/out2: key+ciphertext, key, signature, or nothing.
ItemResult = tuple[str, bytes, bytes, str, str]

DEFAULT_PARAMS_CACHE: Final = 128
#: Parsed private keys kept per pool process (with their identity about 1 KiB each, ~4 MiB in all; a key that
#: signs often holds signing tables, ~343 KiB, while it is among the keys
#: ``sipsec.ibc.configure_tables`` allows them, and loses them if it leaves this cache).
DEFAULT_KEY_CACHE: Final = 4096
#: Most verifications checked as one ``ibc.verify_batch`` (a forged one makes the batch be halved
#: until it is found: about log2(n) more multi-pairings, not a recheck of each item).
VERIFY_BATCH: Final = 32

_OK: Final[ItemResult] = ("", b"", b"", "", "")
_DEADLINE: Final[ItemResult] = (
    REASON_DEADLINE, b"", b"", "deadline passed before the work started", ""
)

_FIELD_BY_REASON: Final = {
    REASON_INVALID_CIPHERTEXT: "ciphertext",
    REASON_MALFORMED_CIPHERTEXT: "ciphertext",
    REASON_INVALID_SIGNATURE: "signature",
    REASON_MALFORMED_SIGNATURE: "signature",
    REASON_INVALID_IDENTITY: "identity",
}


def _decode_params(data: bytes) -> DomainParams:
    return DomainParams.from_bytes(data)


_parse_params: Callable[[bytes], DomainParams] = functools.lru_cache(DEFAULT_PARAMS_CACHE)(
    _decode_params
)


class _KeyCache:
    """Parsed private keys by a digest of (identity, key bytes), least recently used out first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._keys: OrderedDict[bytes, PrivateKey] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, identity: Identity, wire_identity: bytes, data: bytes) -> PrivateKey:
        """The key ``data`` of ``identity`` (raises InvalidEncoding as ``PrivateKey.from_bytes``)."""
        digest = hashlib.sha256(len(wire_identity).to_bytes(4, "big") + wire_identity + data).digest()
        key = self._keys.get(digest)
        if key is not None:
            self.hits += 1
            self._keys.move_to_end(digest)
            return key
        self.misses += 1
        key = PrivateKey.from_bytes(identity, data)
        self._keys[digest] = key
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return key

    def __len__(self) -> int:
        return len(self._keys)


_keys = _KeyCache(DEFAULT_KEY_CACHE)


def key_cache_info() -> tuple[int, int, int]:
    """(hits, misses, size) of this process's parsed-key cache."""
    return _keys.hits, _keys.misses, len(_keys)


def set_key_cache(size: int) -> None:
    """A fresh, empty parsed-key LRU of ``size`` entries in this process."""
    global _keys
    _keys = _KeyCache(size)


def set_params_cache(size: int) -> None:
    """A fresh, empty parsed-parameters LRU of ``size`` entries in this process."""
    global _parse_params
    _parse_params = functools.lru_cache(max(1, size))(_decode_params)


def init_process(params_cache: int, key_cache: int = DEFAULT_KEY_CACHE,
                 table_mib: float = DEFAULT_TABLE_MIB) -> None:
    """Pool-process initialiser: the params and key LRUs, the fixed-base tables' memory
    (``sipsec.ibc.configure_tables``; 0 = none), and SIGINT ignored (the parent decides when
    the pool stops)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_params_cache(params_cache)
    set_key_cache(key_cache)
    ibc.configure_tables(table_mib)


def cache_sizes() -> dict[str, object]:
    """This process's cache bounds: parsed keys, parsed parameters, and the fixed-base tables
    (per kind, 0 where the policy is ``off``)."""
    tables = {name: int(str(s["capacity"])) if s["policy"] != "off" else 0 for name, s in ibc.table_stats().items()}
    maxsize = _parse_params.cache_info().maxsize  # type: ignore[attr-defined]
    return {"key_cache": _keys.capacity, "params_cache": maxsize, "tables": tables}


def params_cache_info() -> tuple[int, int, int]:
    """(hits, misses, size) of this process's parsed-parameters cache."""
    info = _parse_params.cache_info()  # type: ignore[attr-defined]
    return int(info.hits), int(info.misses), int(info.currsize)


def run_items(kind: str, items: Sequence[bytes], deadline: float | None) -> list[ItemResult]:
    """Runs serialized requests of one kind, in order.

    ``deadline`` is a ``time.monotonic()`` instant (system-wide on the same host): an item
    not started by then is answered ``deadline-exceeded`` without doing the work.
    Verifications run as ``ibc.verify_batch`` batches of up to ``VERIFY_BATCH`` consecutive
    items (a batch starts, or not, as a whole), with the results ``ibc.verify`` gives.
    """
    out: list[ItemResult] = []
    step = VERIFY_BATCH if kind == KIND_VERIFY else 1
    for start in range(0, len(items), step):
        group = items[start : start + step]
        if deadline is not None and time.monotonic() >= deadline:
            out += [_DEADLINE] * len(group)
        elif kind == KIND_VERIFY:
            out += _verify_batch(group)
        else:
            out.append(_run_one(kind, group[0]))
    return out


def _verify_batch(items: Sequence[bytes]) -> list[ItemResult]:
    """VerifyRequests checked together; each answer as ``ibc.verify`` one by one would give."""
    out: list[ItemResult] = [_OK] * len(items)
    parsed: list[int] = []
    batch: list[tuple[DomainParams, Identity, bytes, bytes]] = []
    for index, raw in enumerate(items):
        field = ""
        try:
            ver = pb.VerifyRequest.FromString(raw)
            field = "domain_params"
            params = _parse_params(ver.domain_params)
            field = "identity"
            identity = identity_from_proto(ver.identity, params)
        except IbcError as exc:
            out[index] = _failed(exc, field)
            continue
        except (ValueError, TypeError, OverflowError) as exc:  # as in _run_one
            out[index] = _bad_request(exc, field)
            continue
        parsed.append(index)
        batch.append((params, identity, ver.message, ver.signature))
    for index, error in zip(parsed, ibc.verify_batch(batch), strict=True):
        if error is not None:
            out[index] = _failed(error, "")
    return out


def _failed(exc: IbcError, field: str) -> ItemResult:
    reason = reason_for(exc)
    message = str(exc) or type(exc).__name__  # ibc messages never carry key material
    return (reason, b"", b"", message, field or _FIELD_BY_REASON.get(reason, ""))


def _bad_request(exc: Exception, field: str) -> ItemResult:
    return (REASON_INVALID_ARGUMENT, b"", b"", f"bad request ({type(exc).__name__})", field)


def _run_one(kind: str, raw: bytes) -> ItemResult:
    field = ""
    try:
        if kind == KIND_ENCAPSULATE:
            enc = pb.EncapsulateRequest.FromString(raw)
            field = "domain_params"
            params = _parse_params(enc.domain_params)
            field = "identity"
            identity = identity_from_proto(enc.identity, params)
            field = ""
            key, ciphertext = ibc.encapsulate(params, identity)
            return ("", key, ciphertext, "", "")
        if kind == KIND_DECAPSULATE:
            dec = pb.DecapsulateRequest.FromString(raw)
            field = "identity"
            identity = identity_from_proto(dec.identity)
            field = "private_key"
            private = _keys.get(identity, dec.identity.SerializeToString(), dec.private_key)
            field = ""
            return ("", ibc.decapsulate(private, dec.ciphertext), b"", "", "")
        if kind == KIND_SIGN:
            sig = pb.SignRequest.FromString(raw)
            field = "identity"
            identity = identity_from_proto(sig.identity)
            field = "private_key"
            private = _keys.get(identity, sig.identity.SerializeToString(), sig.private_key)
            field = ""
            return ("", ibc.sign(private, sig.message), b"", "", "")
        return (REASON_INVALID_ARGUMENT, b"", b"", f"unknown operation {kind!r}", "")
    except IbcError as exc:
        return _failed(exc, field)
    except (ValueError, TypeError, OverflowError) as exc:  # defensive: bad input never kills a process
        return _bad_request(exc, field)
