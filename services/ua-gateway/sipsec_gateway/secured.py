"""The secured I/O path of the gateway: one place that opens and one that seals (RFC 5652 envelope).

Every secured message a gateway receives — a request, a response, an ACK — goes through
:meth:`SecuredIO.open`, which opens it with the local user's keys, counts a rejection under
its envelope reason (``sipsec_gateway_envelope_rejections_total``), times the operation
(``sipsec_gateway_crypto_seconds``) and copies the outer route set into the inner message;
every secured message it sends goes through :meth:`SecuredIO.seal`. The transaction layer
only ever sees the outer messages.

A proxy adds Record-Route to the *outer* request and the outer response copies it
(RFC 3261 §16.6 item 4, §12.1): it replaces whatever Record-Route the sender wrote in the
inner message, so the inner dialog learns the route set the proxies built, each hop once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sipsec.engine import CryptoEngine
from sipsec.envelope import (
    DEFAULT_WINDOW_S,
    DialogKey,
    EnvelopeError,
    RejectedEnvelope,
    SigningPolicy,
    open_message,
    seal_async,
)
from sipsec.sip import Request, Response
from sipsec.stores.envelope import ReplayCache

from sipsec_gateway.metrics import GatewayMetrics
from sipsec_gateway.shared import SharedState

__all__ = ["Opening", "Refused", "Sealing", "SecuredIO", "take_outer_route"]

log = logging.getLogger("sipsec.gateway.secured")

_REASON_PHRASE = {400: "Bad Request", 403: "Forbidden", 493: "Undecipherable", 500: "Server Internal Error"}


def take_outer_route(outer: Request | Response, inner: Request | Response) -> None:
    """Replace the inner message's Record-Route with the outer one's (see the module docstring)."""
    inner.headers.remove("Record-Route")
    for rr in outer.headers.get_all_raw("Record-Route"):
        inner.headers.add("Record-Route", rr)


@dataclass(frozen=True)
class Opening:
    """A received secured message, opened: the inner message, its verified signer, whether it
    carried the KEM (a dialog's first request), the dialog key, the operation and its time."""

    message: Request | Response
    signer: str | None
    first: bool
    dialog: DialogKey
    op: str
    seconds: float


@dataclass(frozen=True)
class Sealing:
    """A sealed message to send, the dialog key it used (new when ``first``), the operation and its time."""

    message: Request | Response
    dialog: DialogKey
    op: str
    seconds: float


class Refused(Exception):
    """A secured message could not be opened (already counted and logged).

    ``status`` / ``phrase`` answer a request with it (400, 403, 493, 500); ``reason`` is the
    envelope's rejection reason (a bounded metric label); ``warning``, for a binding
    rejection, the warn-text naming the field class (``RejectedEnvelope.warning``)."""

    def __init__(self, status: int, phrase: str, reason: str, warning: str | None = None) -> None:
        super().__init__(f"{status} {phrase} ({reason})")
        self.status = status
        self.phrase = phrase
        self.reason = reason
        self.warning = warning


class SecuredIO:
    """Open and seal for one side of the gateway (see the module docstring)."""

    def __init__(self, metrics: GatewayMetrics, shared: SharedState, replay: ReplayCache, *,
                 signing: SigningPolicy, dialog_ttl_s: float, engine: CryptoEngine) -> None:
        self.metrics = metrics
        self.shared = shared
        self.replay = replay
        self.signing = signing
        self.dialog_ttl_s = dialog_ttl_s
        self.engine = engine

    async def open(self, outer: Request | Response, keyring: Any, local_aor: str, *,
                   retransmission_ok: bool = False, window_s: float = DEFAULT_WINDOW_S) -> Opening:
        """Open ``outer`` for ``local_aor``; raises :class:`Refused` (counted) on any failure.

        ``retransmission_ok``: a repeated nonce is an expected retransmission (an ACK resent
        for each 2xx retransmission, RFC 3261 §13.2.2.4), refused but not counted.
        ``window_s``: how far its signing time may be from our clock (wider only to end a
        session whose 2xx was refused as stale, never to accept one).
        """
        t0 = time.perf_counter()
        try:
            opened = await open_message(outer, keyring, self.shared.dialogs(local_aor), self.replay,
                                        policy=self.signing, dialog_ttl_s=self.dialog_ttl_s,
                                        engine=self.engine, window_s=window_s)
        except RejectedEnvelope as exc:
            if not (retransmission_ok and exc.reason == "replay"):
                self.metrics.rejections.labels(exc.reason).inc()
                log.info("rejected a secured %s: %s (%d)%s", _what(outer), exc.reason, exc.status,
                         f" [{exc.warning}]" if exc.warning else "")
            phrase = exc.reason_phrase if exc.reason == "stale" else _REASON_PHRASE.get(exc.status, "Bad Request")
            raise Refused(exc.status, phrase, exc.reason, exc.warning) from None
        except EnvelopeError as exc:
            self.metrics.rejections.labels("error").inc()
            log.warning("could not open a secured %s: %s", _what(outer), exc)
            raise Refused(500, _REASON_PHRASE[500], "error") from None
        inner = opened.message
        take_outer_route(outer, inner)
        elapsed = time.perf_counter() - t0
        op = "open_kem" if opened.first else "open_kek"
        self.metrics.child(self.metrics.crypto_seconds, op).observe(elapsed)
        signer = opened.signer.aor if opened.signer else None
        return Opening(inner, signer, opened.first, opened.dialog, op, elapsed)

    async def seal(self, inner: Request | Response, keyring: Any, to: str | DialogKey, *,
                   in_reply_to: Request | None = None) -> Sealing:
        """Seal ``inner`` to ``to``: an AOR (a dialog's first request: KEM) or the dialog key."""
        t0 = time.perf_counter()
        if isinstance(to, str):
            sealed = await seal_async(inner, keyring, to, self.signing, engine=self.engine)
            op = "seal_kem"
        else:
            sealed = await seal_async(inner, keyring, to, self.signing, engine=self.engine,
                                      in_reply_to=in_reply_to)
            op = "seal_kek"
        elapsed = time.perf_counter() - t0
        self.metrics.child(self.metrics.crypto_seconds, op).observe(elapsed)
        return Sealing(sealed.message, sealed.dialog, op, elapsed)


def _what(message: Request | Response) -> str:
    return message.method if isinstance(message, Request) else str(message.status)
