"""The dialog state gateway replicas share, so that any replica can continue a secured dialog.

Two stores hold it: the envelope's dialog keys (a :class:`~sipsec.stores.envelope.DialogStore`,
seen per local AOR through :class:`~sipsec_gateway.store.ScopedDialogStore`) and the call
records (a :class:`~sipsec_gateway.store.CallStore`): tags, remote target, route set and
local CSeq (RFC 3261 §12.2.1.1) — what another replica needs to send the BYE or answer one.
"""

from __future__ import annotations

import time
from typing import Any

from sipsec.envelope import DialogKey
from sipsec.sip import parse_uri
from sipsec.sip.dialog import Dialog, DialogId, DialogState
from sipsec.sip.headers import parse_name_addr
from sipsec.stores.envelope import DialogStore

from sipsec_gateway.state import Call
from sipsec_gateway.store import CallStore, ScopedDialogStore

__all__ = ["SharedState", "dialog_from_record"]


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
        self._scoped: dict[str, ScopedDialogStore] = {}

    def dialogs(self, aor: str) -> ScopedDialogStore:
        """``aor``'s view of the dialog keys (caller and callee of one gateway do not collide)."""
        scoped = self._scoped.get(aor)
        if scoped is None:
            scoped = self._scoped[aor] = ScopedDialogStore(self.base, aor)
        return scoped

    async def put_key(self, aor: str, key: DialogKey) -> None:
        await self.dialogs(aor).put(key, self.ttl_s, time.time())

    async def key_of(self, record: dict[str, Any]) -> DialogKey | None:
        """The dialog key a call record names (None once it expired)."""
        return await self.dialogs(record["local_aor"]).get(bytes.fromhex(record["key_id"]), time.time())

    async def save(self, call: Call) -> None:
        """Keep what another replica needs to continue this secured dialog (hang up, answer a BYE)."""
        if self.call_store is None or call.dialog is None or not call.secure or call.key is None:
            return
        d = call.dialog
        record = {
            "id": call.id, "direction": call.direction, "local_aor": call.local_aor,
            "peer_aor": call.peer_aor, "call_id": call.call_id, "key_id": call.key.key_id.hex(),
            "local": str(d.local), "remote": str(d.remote), "remote_target": str(d.remote_target),
            "route_set": [str(r) for r in d.route_set], "local_seq": d.local_seq or 0,
            "created": call.created, "setup_ms": None if call.setup_s is None else call.setup_s * 1e3,
        }
        await self.call_store.put(call.id, call.call_id, record, self.ttl_s)

    async def forget(self, call: Call) -> None:
        if self.call_store is not None and call.secure:
            await self.call_store.delete(call.id, call.call_id)

    async def by_call_id(self, sip_call_id: str) -> dict[str, Any] | None:
        return await self.call_store.by_call_id(sip_call_id) if self.call_store is not None else None

    async def delete(self, record: dict[str, Any]) -> None:
        if self.call_store is not None:
            await self.call_store.delete(record["id"], record["call_id"])
