"""The wire view of a call: outer messages as the network (and the proxies) see them, inner as opened.

``wire_view(call, taps)`` turns the trace a gateway keeps per call into a JSON-able document for
the demo and the control API; :class:`WireTap` records what any :class:`InboundQueue`
(e.g. a proxy's) receives, to show the messages as the proxies themselves saw them.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sipsec.aio import Inbound, InboundQueue
from sipsec.sip import SipError

from sipsec_gateway.calls import Call

__all__ = ["WireTap", "render", "wire_view"]


def render(data: bytes) -> str:
    """A SIP message for reading: the head as text, a binary (CMS) body as a one-line summary."""
    head, sep, body = data.partition(b"\r\n\r\n")
    text = head.decode("utf-8", "replace")
    if not sep or not body:
        return text + "\r\n\r\n"
    try:
        decoded = body.decode("utf-8")
        printable = all(ch.isprintable() or ch in "\r\n\t" for ch in decoded)
    except UnicodeDecodeError:
        printable = False
    if printable:
        return f"{text}\r\n\r\n{decoded}"
    return f"{text}\r\n\r\n[{len(body)} bytes of binary CMS (DER)]"


def wire_view(call: Call, taps: Sequence[WireTap] = ()) -> dict[str, Any]:
    """The call's summary and its messages: outer (as sent/received) and inner (opened, with signer).

    With ``taps`` (one per proxy), ``proxies`` lists, per tap, the outer messages of this call
    exactly as that proxy received them (selected by the call's outer Call-ID).
    """
    messages = []
    for entry in call.trace or []:
        messages.append({
            "direction": entry.direction,
            "at": entry.at,
            "secured": entry.secured,
            "outer": render(entry.outer),
            "outer_bytes": len(entry.outer),
            "outer_b64": base64.b64encode(entry.outer).decode("ascii"),
            "inner": render(entry.inner) if entry.inner is not None else None,
            "signer": entry.signer,
        })
    proxies = [
        {"proxy": i, "messages": [render(data) for cid, data in tap.records if cid == call.outer_call_id]}
        for i, tap in enumerate(taps)
    ]
    return {"call": call.summary(), "traced": call.trace is not None, "messages": messages, "proxies": proxies}


@dataclass
class WireTap:
    """Records every message an :class:`InboundQueue` accepts (wraps its ``offer``); ``detach()`` undoes it."""

    queue: InboundQueue
    seen: list[bytes] = field(default_factory=list)
    records: list[tuple[str | None, bytes]] = field(default_factory=list)  # (outer Call-ID, bytes)

    def __post_init__(self) -> None:
        self._offer = self.queue.offer

        def offer(item: Inbound) -> bool:
            data = item.message.to_bytes()
            try:
                call_id: str | None = str(item.message.call_id)
            except SipError:
                call_id = None
            self.seen.append(data)
            self.records.append((call_id, data))
            return bool(self._offer(item))

        self.queue.offer = offer  # type: ignore[method-assign]  # a tap wraps the bound method

    def detach(self) -> None:
        self.queue.offer = self._offer  # type: ignore[method-assign]

    def clear(self) -> None:
        self.seen.clear()
        self.records.clear()

    def text(self) -> bytes:
        return b"\n".join(self.seen)
