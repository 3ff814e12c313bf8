"""The dialog state gateway replicas share, so that any replica can continue a secured dialog.

Two stores hold it: the envelope's dialog keys (a :class:`~sipsec.stores.envelope.DialogStore`,
seen per local AOR through :class:`~sipsec_gateway.store.ScopedDialogStore`) and the call
records (a :class:`~sipsec_gateway.store.CallStore`): tags, remote target, route set and
local CSeq (RFC 3261 §12.2.1.1) — what another replica needs to send the BYE or answer one.

A phone leg being set up has a setup record instead (:meth:`SharedState.save_setup`: the
INVITE, the phone's address): what a restarted gateway needs to end it (CANCEL, or a final
error to the phone). Every record this replica writes is in its index (``replica``), which the
gateway reads on start (:meth:`sipsec_gateway.gateway.Gateway.recover_calls`).
"""

from __future__ import annotations

import time
from typing import Any

from sipsec.aio import Peer
from sipsec.envelope import DialogKey
from sipsec.sip import parse_uri
from sipsec.sip.dialog import Dialog, DialogId, DialogState
from sipsec.sip.headers import parse_name_addr
from sipsec.stores.envelope import DialogStore

from sipsec_gateway.state import Call
from sipsec_gateway.store import CallStore, ScopedDialogStore

__all__ = ["SETUP_TTL_S", "SharedState", "dialog_from_record", "peer_of"]

#: How long a setup record is kept at most (a phone leg that rings longer than this is not ended
#: by a restart; Timer C, 3 min, ends any ringing call before).
SETUP_TTL_S = 300.0


def peer_of(record: dict[str, Any]) -> Peer | None:
    """The address a record names for its far end (``peer``), if any."""
    peer = record.get("peer")
    if isinstance(peer, list) and len(peer) == 3:
        return Peer(str(peer[0]), str(peer[1]), int(peer[2]))
    return None


def dialog_from_record(record: dict[str, Any]) -> Dialog:
    """The confirmed dialog a call record describes (the local side's view)."""
    local, remote = parse_name_addr(record["local"]), parse_name_addr(record["remote"])
    return Dialog(
        DialogId(record["call_id"], local.tag or "", remote.tag or ""),
        DialogState.CONFIRMED, local=local, remote=remote,
        remote_target=parse_uri(record["remote_target"]),
        route_set=[parse_name_addr(r) for r in record["route_set"]],
        local_seq=int(record["local_seq"]), remote_seq=None,
    )


class SharedState:
    """Dialog keys and call records of one gateway side (``call_store`` None: keys only)."""

    def __init__(self, dialogs: DialogStore, call_store: CallStore | None, ttl_s: float) -> None:
        self.base = dialogs
        self.call_store = call_store
        self.ttl_s = ttl_s
        self.replica: str | None = None  # the index the records go in (the gateway sets it at start)
        self._scoped: dict[str, ScopedDialogStore] = {}

    def dialogs(self, aor: str) -> ScopedDialogStore:
        """``aor``'s view of the dialog keys (caller and callee of one gateway do not collide)."""
        scoped = self._scoped.get(aor)
        if scoped is None:
            scoped = self._scoped[aor] = ScopedDialogStore(self.base, aor)
        return scoped

    async def put_key(self, aor: str, key: DialogKey, ttl_s: float | None = None) -> None:
        await self.dialogs(aor).put(key, self.ttl_s if ttl_s is None else ttl_s, time.time())

    def ttl_for(self, call: Call) -> float:
        """How long a call's record (and dialog key) is kept: with a session timer on the call (or
        on the leg bridged to it) two intervals and a minute, renewed at every refresh — a call
        nobody refreshes any more is gone soon —, else ``ttl_s``."""
        timed = call.session or (call.bridge.session if call.bridge is not None else None)
        return self.ttl_s if timed is None else min(self.ttl_s, 2.0 * timed.interval + 60.0)

    async def renew(self, call: Call) -> None:
        """A session refresh: the call's record, its key and the bridged leg's record live on."""
        await self.save(call)
        if call.key is not None:
            await self.put_key(call.local_aor, call.key, self.ttl_for(call))
        if call.bridge is not None:
            await self.save(call.bridge, self.ttl_for(call))
        elif call.adopted_bridge is not None and self.call_store is not None:
            record = await self.call_store.get(call.adopted_bridge)
            if record is not None:
                await self.call_store.put(record["id"], record["call_id"], record, self.ttl_for(call))

    async def key_of(self, record: dict[str, Any]) -> DialogKey | None:
        """The dialog key a call record names (None once it expired, or for a phone leg)."""
        if "key_id" not in record:
            return None
        return await self.dialogs(record["local_aor"]).get(bytes.fromhex(record["key_id"]), time.time())

    async def save(self, call: Call, ttl_s: float | None = None) -> None:
        """Keep what another replica (or this one, restarted) needs to continue this dialog: hang
        up, answer a BYE, and end the leg bridged to it (``bridge``: that leg's record id). A
        secured leg names its dialog key; a phone leg (plain side) the phone's address."""
        if self.call_store is None or call.dialog is None:
            return
        if call.secure and call.key is None:
            return
        if not call.secure and call.side != "plain":
            return  # a plain call on the secured side: nothing to seal, no phone to reach
        d = call.dialog
        record: dict[str, Any] = {
            "id": call.id, "side": call.side, "direction": call.direction, "local_aor": call.local_aor,
            "peer_aor": call.peer_aor, "call_id": call.call_id,
            "local": str(d.local), "remote": str(d.remote), "remote_target": str(d.remote_target),
            "route_set": [str(r) for r in d.route_set], "local_seq": d.local_seq or 0,
            "created": call.created, "setup_ms": None if call.setup_s is None else call.setup_s * 1e3,
            "bridge": call.bridge.id if call.bridge is not None else None,
        }
        if call.key is not None:
            record["key_id"] = call.key.key_id.hex()
        if call.dest is not None:
            record["peer"] = [call.dest.transport, call.dest.host, call.dest.port]
        await self.call_store.put(call.id, call.call_id, record, self.ttl_for(call) if ttl_s is None else ttl_s,
                                  self.replica)

    async def save_setup(self, call: Call) -> bool:
        """Keep a phone leg being set up (plain side, its INVITE sent or received, no final
        answer yet): its INVITE and the phone's address, in this replica's index, so that a
        restart ends it (:meth:`sipsec_gateway.calls.Agent.end_setup_record`). True once kept;
        the established record replaces it (same key), the leg's end deletes it."""
        if self.call_store is None or call.side != "plain" or call.invite is None or call.dest is None:
            return False
        record: dict[str, Any] = {
            "id": call.id, "side": call.side, "direction": call.direction, "local_aor": call.local_aor,
            "peer_aor": call.peer_aor, "call_id": call.call_id, "setup": True, "created": call.created,
            "invite": call.invite.to_bytes().decode("latin-1"), "local_tag": call.local_tag,
            "peer": [call.dest.transport, call.dest.host, call.dest.port],
            "bridge": call.bridge.id if call.bridge is not None else None,
        }
        await self.call_store.put(call.id, call.call_id, record, min(self.ttl_s, SETUP_TTL_S), self.replica)
        return True

    async def forget(self, call: Call) -> None:
        if self.call_store is not None and (call.secure or call.side == "plain"):
            await self.call_store.delete(call.id, call.call_id, self.replica)

    async def by_call_id(self, sip_call_id: str) -> dict[str, Any] | None:
        return await self.call_store.by_call_id(sip_call_id) if self.call_store is not None else None

    async def delete(self, record: dict[str, Any]) -> None:
        if self.call_store is not None:
            await self.call_store.delete(record["id"], record["call_id"], self.replica)
