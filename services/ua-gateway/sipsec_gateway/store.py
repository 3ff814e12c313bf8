"""Call records and logged-in users shared by gateway replicas and restarts (memory or Redis).

Durable (see docs/state.md): the users logged in on the gateway (PKG password, settings, phone
password, registered contact, phone binding — sealed), and the record of each established
call's legs until the call ends; a record of an ended call is deleted at once. With Redis this
is what lets a gateway killed and started again continue its users and its calls.

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

__all__ = ["CallStore", "MemoryCallStore", "RedisCallStore", "ScopedDialogStore"]

log = logging.getLogger("sipsec.gateway.store")

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
    async def put(self, call_id: str, sip_call_id: str, record: dict[str, Any], ttl_s: float) -> None: ...

    async def get(self, call_id: str) -> dict[str, Any] | None: ...

    async def by_call_id(self, sip_call_id: str) -> dict[str, Any] | None: ...

    async def delete(self, call_id: str, sip_call_id: str) -> None: ...

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

    async def put(self, call_id: str, sip_call_id: str, record: dict[str, Any], ttl_s: float) -> None:
        self._records[call_id] = (time.monotonic() + ttl_s, dict(record))
        self._index[sip_call_id] = call_id

    async def get(self, call_id: str) -> dict[str, Any] | None:
        item = self._records.get(call_id)
        if item is None or item[0] < time.monotonic():
            return None
        return dict(item[1])

    async def by_call_id(self, sip_call_id: str) -> dict[str, Any] | None:
        call_id = self._index.get(sip_call_id)
        return None if call_id is None else await self.get(call_id)

    async def delete(self, call_id: str, sip_call_id: str) -> None:
        self._records.pop(call_id, None)
        self._index.pop(sip_call_id, None)

    async def aclose(self) -> None:
        return None


class RedisCallStore:
    """Records in Redis: ``<prefix>call:<id>`` (JSON) and ``<prefix>cid:<Call-ID>`` -> id, both with a TTL.

    With ``sealing_key`` (32 bytes, the gateway's ``SIPSEC_GATEWAY_SEALING_KEY_FILE``) both are
    AES-256-GCM sealed with their key name as associated data, and the index names the inner
    Call-ID only blinded (HMAC under the key): Redis then holds no AOR, tag, route or Call-ID
    in clear, and a record planted or moved by anyone without the key reads as absent.
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

    async def put(self, call_id: str, sip_call_id: str, record: dict[str, Any], ttl_s: float) -> None:
        ms = max(1, int(ttl_s * 1000))
        name, index = self._call_key(call_id), self._cid_key(sip_call_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(name, self._seal(name, json.dumps(record).encode()), px=ms)
            pipe.set(index, self._seal(index, call_id.encode()), px=ms)
            await pipe.execute()

    async def get(self, call_id: str) -> dict[str, Any] | None:
        name = self._call_key(call_id)
        raw = await self.client.get(name)
        if raw is None:
            return None
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

    async def delete(self, call_id: str, sip_call_id: str) -> None:
        await self.client.delete(self._call_key(call_id), self._cid_key(sip_call_id))

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):  # logged by the write; nothing more to do on the way out
            await self.flush()
        await self.client.aclose()
