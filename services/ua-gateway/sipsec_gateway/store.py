"""Call records and logged-in users shared by gateway replicas and restarts (memory or Redis).

Durable (see docs/state.md): the users logged in on the gateway (PKG password, settings, phone
password, registered contact, phone binding — sealed), and the record of each established
call's legs until the call ends; a record of an ended call is deleted at once. With Redis this
is what lets a gateway killed and started again continue its users and its calls.

A phone leg being set up (the INVITE out to the phone, or the phone's INVITE, with no final
answer yet) has a *setup record* under the same key, holding that INVITE: a restarted gateway
ends such a leg (CANCEL, or a final error to the phone) rather than leave it up on the phone.
:meth:`CallStore.get` and :meth:`CallStore.by_call_id` never return a setup record (there is
no dialog to continue yet).

Each replica keeps an index of the records it wrote (:meth:`CallStore.replica_calls`): the
call ids, in :data:`INDEX_BUCKETS` buckets per replica, each bucket written in the same
round trip as the record that changes it (added with a call's first record, removed with its
deletion). On start the gateway reads its own index to find every call it had in progress
(records are otherwise found by call id or Call-ID only: a leg nobody asks about again would
be found by nobody).

A record holds the SIP dialog state a replica needs to end the call or answer its BYE
(tags, remote target, route set, local CSeq, the dialog key's id); the dialog key itself
lives in the envelope's :class:`~sipsec.stores.envelope.DialogStore`. Records are JSON,
indexed by the API call id and by the inner Call-ID, with a TTL; in Redis both are sealed
(AES-256-GCM, the key name as associated data) whenever the gateway runs with Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

import redis.asyncio as aioredis
from sipsec.envelope import DialogKey
from sipsec.stores.access import RecordSealer
from sipsec.stores.envelope import DialogStore

__all__ = ["INDEX_BUCKETS", "CallStore", "MemoryCallStore", "RedisCallStore", "ScopedDialogStore"]

log = logging.getLogger("sipsec.gateway.store")

#: Buckets of a replica's call index: a call id lives in one (by a hash of the id), so a write
#: carries ~1/64 of the calls in progress, and a start reads them all with one MGET.
INDEX_BUCKETS = 64
#: How long a bucket of the call index lives after its last write (the longest a record lives:
#: the default ``SIPSEC_GATEWAY_DIALOG_TTL_S``); ids of records gone meanwhile are dropped on read.
INDEX_TTL_S = 43200.0


def _bucket(call_id: str) -> int:
    return hashlib.sha256(call_id.encode()).digest()[0] % INDEX_BUCKETS


def _is_setup(doc: dict[str, Any]) -> bool:
    return bool(doc.get("setup"))

class ScopedDialogStore:
    """One local AOR's view of a shared :class:`DialogStore`.

    Both ends of a dialog derive the same key id; when caller and callee are users of the
    same gateway (or share one Redis), their two views of the dialog must not overwrite each
    other, so each is stored under ``SHA-256("sipsec-gateway dialog" 0 AOR 0 key id)[:8]`` and
    handed back under the original id.
    """

    def __init__(self, base: DialogStore, aor: str) -> None:
        self.base = base
        self.aor = aor
        # Memos of the per-message work (a dialog's messages all look up the same key id):
        # the scoped id of a key id, and the view handed back for the record the base store
        # returned — reused only while the base returns that very (immutable) object.
        self._ids: dict[bytes, bytes] = {}
        self._views: OrderedDict[bytes, tuple[DialogKey, DialogKey]] = OrderedDict()

    def _id(self, key_id: bytes) -> bytes:
        scoped = self._ids.get(key_id)
        if scoped is None:
            scoped = hashlib.sha256(b"sipsec-gateway dialog\x00" + self.aor.encode() + b"\x00" + key_id).digest()[:8]
            if len(self._ids) >= _MAX_MEMO:
                self._ids.clear()
            self._ids[key_id] = scoped
        return scoped

    def _remember(self, key_id: bytes, stored: DialogKey, view: DialogKey) -> None:
        self._views[key_id] = (stored, view)
        self._views.move_to_end(key_id)
        while len(self._views) > _MAX_MEMO:
            self._views.popitem(last=False)

    async def put(self, dialog: DialogKey, ttl_s: float, now: float) -> None:
        stored = dataclasses.replace(dialog, key_id=self._id(dialog.key_id))
        self._views.pop(dialog.key_id, None)
        await self.base.put(stored, ttl_s, now)
        self._remember(dialog.key_id, stored, dialog)  # the view of ``stored`` is ``dialog`` itself

    async def get(self, key_id: bytes, now: float) -> DialogKey | None:
        dialog = await self.base.get(self._id(key_id), now)
        if dialog is None:
            return None
        memo = self._views.get(key_id)
        if memo is not None and memo[0] is dialog:
            return memo[1]
        view = dataclasses.replace(dialog, key_id=key_id)
        self._remember(key_id, dialog, view)
        return view

    async def delete(self, key_id: bytes) -> None:
        self._views.pop(key_id, None)
        await self.base.delete(self._id(key_id))


#: How many dialogs' memos a :class:`ScopedDialogStore` keeps (the calls in progress, typically).
_MAX_MEMO = 4096


class CallStore(Protocol):
    async def put(self, call_id: str, sip_call_id: str, record: dict[str, Any], ttl_s: float,
                  replica: str | None = None) -> None: ...

    async def get(self, call_id: str) -> dict[str, Any] | None: ...

    async def by_call_id(self, sip_call_id: str) -> dict[str, Any] | None: ...

    async def delete(self, call_id: str, sip_call_id: str, replica: str | None = None) -> None: ...

    async def replica_calls(self, replica: str) -> list[dict[str, Any]]: ...

    async def put_user(self, replica: str, aor: str, doc: dict[str, Any]) -> None: ...

    async def delete_user(self, replica: str, aor: str) -> None: ...

    async def users(self, replica: str) -> list[dict[str, Any]]: ...

    async def ping(self) -> None: ...

    @property
    def keeps_secrets(self) -> bool: ...

    async def aclose(self) -> None: ...


class MemoryCallStore:
    """Process-local records (the embedded default; one replica)."""

    def __init__(self) -> None:
        self._records: dict[str, tuple[float, dict[str, Any]]] = {}
        self._index: dict[str, str] = {}
        self._users: dict[tuple[str, str], dict[str, Any]] = {}
        self._replicas: dict[str, set[str]] = {}  # replica -> ids of its records

    @property
    def keeps_secrets(self) -> bool:
        return True  # process memory: nothing leaves the process

    async def ping(self) -> None:
        return None

    async def put_user(self, replica: str, aor: str, doc: dict[str, Any]) -> None:
        self._users[replica, aor] = dict(doc)

    async def delete_user(self, replica: str, aor: str) -> None:
        self._users.pop((replica, aor), None)

    async def users(self, replica: str) -> list[dict[str, Any]]:
        return [dict(d) for (r, _), d in self._users.items() if r == replica]

    async def put(self, call_id: str, sip_call_id: str, record: dict[str, Any], ttl_s: float,
                  replica: str | None = None) -> None:
        self._records[call_id] = (time.monotonic() + ttl_s, dict(record))
        if not _is_setup(record):
            self._index[sip_call_id] = call_id
        if replica is not None:
            self._replicas.setdefault(replica, set()).add(call_id)

    def _raw(self, call_id: str) -> dict[str, Any] | None:
        item = self._records.get(call_id)
        if item is None or item[0] < time.monotonic():
            return None
        return dict(item[1])

    async def get(self, call_id: str) -> dict[str, Any] | None:
        doc = self._raw(call_id)
        return None if doc is None or _is_setup(doc) else doc

    async def replica_calls(self, replica: str) -> list[dict[str, Any]]:
        ids = self._replicas.get(replica, set())
        docs = {i: self._raw(i) for i in ids}
        ids.difference_update(i for i, d in docs.items() if d is None)
        return [d for d in docs.values() if d is not None]

    async def by_call_id(self, sip_call_id: str) -> dict[str, Any] | None:
        call_id = self._index.get(sip_call_id)
        return None if call_id is None else await self.get(call_id)

    async def delete(self, call_id: str, sip_call_id: str, replica: str | None = None) -> None:
        self._records.pop(call_id, None)
        self._index.pop(sip_call_id, None)
        if replica is not None:
            self._replicas.get(replica, set()).discard(call_id)

    async def aclose(self) -> None:
        return None


class RedisCallStore:
    """Records in Redis: ``<prefix>call:<id>`` (JSON) and ``<prefix>cid:<Call-ID>`` -> id, both with a TTL;
    each replica's index of its records in ``<prefix>live:<replica>:<bucket>`` (a JSON list of
    call ids per bucket, :data:`INDEX_BUCKETS` of them), written with GET/SET/MGET only (the
    gateway's ACL user has no set, hash or scan commands).

    With ``sealing_key`` (32 bytes, the gateway's ``SIPSEC_GATEWAY_SEALING_KEY_FILE``) all are
    AES-256-GCM sealed with their key name as associated data, and the keys name the inner
    Call-ID and the replica only blinded (HMAC under the key): Redis then holds no AOR, tag,
    route or Call-ID in clear, and a record planted or moved by anyone without the key reads as absent.

    Only its own replica writes an index, so this process's copy of each bucket is the truth:
    it is read once (the first change, or :meth:`replica_calls` at start) and then written
    whole, in the MULTI of the record that changes it, one write per bucket at a time (so an
    older copy never lands after a newer one).
    """

    def __init__(self, client: aioredis.Redis, prefix: str = "sipsec:gateway:",
                 sealing_key: bytes | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self._sealer = None if sealing_key is None else RecordSealer(sealing_key)
        self._users: dict[str, dict[str, dict[str, Any]]] = {}  # replica -> AOR -> kept user
        # group commit of the kept users: changes made, and the changes a landed write holds
        self._changed: dict[str, int] = {}
        self._written: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._index: dict[tuple[str, int], set[str]] = {}  # (replica, bucket) -> call ids, once read
        self._index_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self.index_ttl_s = INDEX_TTL_S

    @property
    def sealed(self) -> bool:
        return self._sealer is not None

    @property
    def keeps_secrets(self) -> bool:
        """Whether users' secrets may be kept here: only sealed (never in clear in Redis)."""
        return self._sealer is not None

    async def ping(self) -> None:
        await self.client.ping()

    def _users_key(self, replica: str) -> str:
        """One key per replica (named by its secured-side address): a replica restores its own users only."""
        name = replica if self._sealer is None else self._sealer.blind("replica", replica)
        return f"{self.prefix}users:{name}"

    async def _loaded(self, replica: str) -> dict[str, dict[str, Any]]:
        users = self._users.get(replica)
        if users is None:
            key = self._users_key(replica)
            raw = await self.client.get(key)
            data = self._unseal(key, raw) if raw is not None else None
            try:
                doc = json.loads(data) if data is not None else {}
            except ValueError:
                doc = {}
            loaded = {aor: d for aor, d in (doc.items() if isinstance(doc, dict) else ())
                      if isinstance(d, dict) and d.get("aor") == aor}
            # another caller may have loaded (and changed) the table while this GET was out:
            # keep that one, or a login during the start-up restore would be lost
            users = self._users.setdefault(replica, loaded)
        return users

    async def put_user(self, replica: str, aor: str, doc: dict[str, Any]) -> None:
        """Keep a logged-in user: one sealed JSON object per replica, written with GET/SET only
        (the gateway's ACL user has no hash or scan commands). Returns once a write holding
        this change is in Redis (a login acknowledged is a login a SIGKILL keeps); changes made
        while a write is out go together in the next one (group commit). Raises when the write
        fails; the change stays pending and goes out with the next write."""
        (await self._loaded(replica))[aor] = dict(doc)
        await self._commit(replica)

    async def delete_user(self, replica: str, aor: str) -> None:
        if (await self._loaded(replica)).pop(aor, None) is not None:
            await self._commit(replica)

    async def users(self, replica: str) -> list[dict[str, Any]]:
        """Every user kept for ``replica``; entries that do not unseal or name another AOR are skipped."""
        if self._changed.get(replica, 0) == self._written.get(replica, 0):  # nothing pending here
            self._users.pop(replica, None)  # read what the store holds now
        return [dict(d) for d in (await self._loaded(replica)).values()]

    async def _commit(self, replica: str) -> None:
        """Group commit: wait for a SET that starts after this change (one SET serves every
        change made while the previous one was out)."""
        change = self._changed[replica] = self._changed.get(replica, 0) + 1
        lock = self._locks.setdefault(replica, asyncio.Lock())
        async with lock:
            if self._written.get(replica, 0) >= change:
                return  # a write that started after this change has landed
            covers = self._changed[replica]
            await self._write_users(replica)
            self._written[replica] = max(self._written.get(replica, 0), covers)

    async def _write_users(self, replica: str) -> None:
        key = self._users_key(replica)
        try:
            await self.client.set(key, self._seal(key, json.dumps(self._users.get(replica, {})).encode()))
        except Exception as exc:  # noqa: BLE001 - the caller says what is lost; the next write carries it
            log.warning("cannot keep the logged-in users in Redis: %s", type(exc).__name__)
            raise

    async def flush(self) -> None:
        """Write the changes to the kept users that a failed write left pending."""
        for replica in list(self._users):
            if self._changed.get(replica, 0) > self._written.get(replica, 0):
                await self._commit(replica)

    @classmethod
    def from_url(cls, url: str, prefix: str = "sipsec:gateway:",
                 sealing_key: bytes | None = None) -> RedisCallStore:
        return cls(aioredis.Redis.from_url(url), prefix, sealing_key)

    def _call_key(self, call_id: str) -> str:
        return f"{self.prefix}call:{call_id}"

    def _cid_key(self, sip_call_id: str) -> str:
        if self._sealer is None:
            return f"{self.prefix}cid:{sip_call_id}"
        return f"{self.prefix}cid:{self._sealer.blind('call-id', sip_call_id)}"

    def _seal(self, name: str, value: bytes) -> bytes:
        return value if self._sealer is None else self._sealer.seal(name, value)

    def _unseal(self, name: str, raw: object) -> bytes | None:
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        if self._sealer is None:
            return data
        try:
            return self._sealer.unseal(name, data)
        except ValueError:  # planted, altered, moved, or sealed under another key: absent
            return None

    def _index_key(self, replica: str, bucket: int) -> str:
        name = replica if self._sealer is None else self._sealer.blind("replica", replica)
        return f"{self.prefix}live:{name}:{bucket}"

    def _index_value(self, key: str, ids: set[str]) -> bytes:
        return self._seal(key, json.dumps(sorted(ids)).encode())

    def _index_ids(self, key: str, raw: object) -> set[str]:
        data = self._unseal(key, raw) if raw is not None else None
        try:
            ids = json.loads(data) if data is not None else []
        except ValueError:
            ids = []
        return {i for i in ids if isinstance(i, str)} if isinstance(ids, list) else set()

    async def _bucket_ids(self, replica: str, bucket: int) -> set[str]:
        """This process's copy of one bucket of ``replica``'s index (read from Redis the first time)."""
        ids = self._index.get((replica, bucket))
        if ids is None:
            key = self._index_key(replica, bucket)
            loaded = self._index_ids(key, await self.client.get(key))
            ids = self._index.setdefault((replica, bucket), loaded)
        return ids

    async def put(self, call_id: str, sip_call_id: str, record: dict[str, Any], ttl_s: float,
                  replica: str | None = None) -> None:
        """Write ``record`` (a setup record: no Call-ID index); with ``replica``, the record is in
        that replica's index (its bucket written in the same MULTI when the id is new there)."""
        ms = max(1, int(ttl_s * 1000))
        name, index = self._call_key(call_id), self._cid_key(sip_call_id)
        if replica is None:
            await self._put(call_id, name, index, record, ms, None)
            return
        bucket = _bucket(call_id)
        async with self._index_locks.setdefault((replica, bucket), asyncio.Lock()):
            ids = await self._bucket_ids(replica, bucket)
            if call_id in ids:
                await self._put(call_id, name, index, record, ms, None)
                return
            ids.add(call_id)
            await self._put(call_id, name, index, record, ms, (self._index_key(replica, bucket), ids))

    async def _put(self, call_id: str, name: str, index: str, record: dict[str, Any], ms: int,
                   bucket: tuple[str, set[str]] | None) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(name, self._seal(name, json.dumps(record).encode()), px=ms)
            if not _is_setup(record):
                pipe.set(index, self._seal(index, call_id.encode()), px=ms)
            if bucket is not None:
                pipe.set(bucket[0], self._index_value(bucket[0], bucket[1]), px=int(self.index_ttl_s * 1000))
            await pipe.execute()

    async def get(self, call_id: str) -> dict[str, Any] | None:
        """The record of an established leg (None for a setup record, or none at all)."""
        doc = self._record(call_id, await self.client.get(self._call_key(call_id)))
        return None if doc is None or _is_setup(doc) else doc

    def _record(self, call_id: str, raw: object) -> dict[str, Any] | None:
        if raw is None:
            return None
        name = self._call_key(call_id)
        data = self._unseal(name, raw)
        if data is None:
            return None
        try:
            doc = json.loads(data)
        except ValueError:
            return None
        if not isinstance(doc, dict) or (self._sealer is not None and doc.get("id") != call_id):
            return None
        return doc

    async def by_call_id(self, sip_call_id: str) -> dict[str, Any] | None:
        index = self._cid_key(sip_call_id)
        raw = await self.client.get(index)
        if raw is None:
            return None
        data = self._unseal(index, raw)
        if data is None:
            return None
        try:
            call_id = data.decode()
        except UnicodeDecodeError:
            return None
        doc = await self.get(call_id)
        if doc is None or (self._sealer is not None and doc.get("call_id") != sip_call_id):
            return None
        return doc

    async def delete(self, call_id: str, sip_call_id: str, replica: str | None = None) -> None:
        """Delete a record and its Call-ID index; with ``replica``, also from that replica's index."""
        keys = (self._call_key(call_id), self._cid_key(sip_call_id))
        if replica is None:
            await self.client.delete(*keys)
            return
        bucket = _bucket(call_id)
        async with self._index_locks.setdefault((replica, bucket), asyncio.Lock()):
            ids = await self._bucket_ids(replica, bucket)
            if call_id not in ids:
                await self.client.delete(*keys)
                return
            ids.discard(call_id)
            key = self._index_key(replica, bucket)
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(*keys)
                pipe.set(key, self._index_value(key, ids), px=int(self.index_ttl_s * 1000))
                await pipe.execute()

    async def replica_calls(self, replica: str) -> list[dict[str, Any]]:
        """Every record (established or setup) in ``replica``'s index: what it had in progress.
        Two round trips at start (the buckets, then the records, in MGETs); ids whose record is
        gone (expired, or deleted by another replica) are dropped from the index's copy here."""
        keys = [self._index_key(replica, b) for b in range(INDEX_BUCKETS)]
        for b, raw in enumerate(await self.client.mget(keys)):
            self._index.setdefault((replica, b), self._index_ids(keys[b], raw))
        ids = sorted(set().union(*(self._index[replica, b] for b in range(INDEX_BUCKETS))))
        docs: list[dict[str, Any]] = []
        for start in range(0, len(ids), 1000):
            chunk = ids[start:start + 1000]
            for call_id, raw in zip(chunk, await self.client.mget([self._call_key(i) for i in chunk]), strict=True):
                doc = self._record(call_id, raw)
                if doc is None:
                    self._index[replica, _bucket(call_id)].discard(call_id)
                else:
                    docs.append(doc)
        return docs

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):  # logged by the write; nothing more to do on the way out
            await self.flush()
        await self.client.aclose()
