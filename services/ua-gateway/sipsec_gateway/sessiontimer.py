"""Session timers (RFC 4028) of the secured leg, and of a phone leg whose phone supports them
(``Supported: timer`` in its INVITE, or in its REGISTER for the calls to it): the negotiation,
no I/O and no clock.

The UAC offers ``Session-Expires: <interval>;refresher=uac`` with ``Supported: timer`` and its
``Min-SE``; the UAS answers 422 to an interval below its Min-SE (§9), may lower the interval
toward its own (never below the Min-SE), and names the refresher in its 2xx (§9: the UAC's
choice, else ``uac`` when the UAC supports timers, else ``uas``). The refresher sends a refresh
(UPDATE, RFC 3311) at half the interval (§10); the other side ends the session with BYE when no
refresh came ``min(32, interval/3)`` seconds before the interval ran out (§10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sipsec.sip import Request, Response

__all__ = ["MIN_SE_FLOOR", "SessionTimer", "answer", "expiry_after", "from_response", "offer_headers", "parse",
           "supports_timer"]

#: The smallest Min-SE RFC 4028 §4 allows on the wire (a test may configure less).
MIN_SE_FLOOR: Final = 90


@dataclass(frozen=True)
class SessionTimer:
    """A negotiated session timer: the interval (seconds) and whether this side refreshes."""

    interval: int
    refresher: str  # "uac" or "uas"

    def we_refresh(self, we_are_uac: bool) -> bool:
        return (self.refresher == "uac") == we_are_uac

    def header(self) -> str:
        return f"{self.interval};refresher={self.refresher}"


def parse(value: str | None) -> tuple[int, str | None] | None:
    """``Session-Expires`` (``delta-seconds *(;param)``, §4): the interval and the refresher
    parameter; None when absent or malformed (a malformed one is ignored, not trusted)."""
    if not value:
        return None
    head, *params = [p.strip() for p in value.split(";")]
    if not head.isdigit() or int(head) <= 0:
        return None
    refresher = None
    for param in params:
        name, _, val = param.partition("=")
        if name.strip().lower() == "refresher" and val.strip().lower() in ("uac", "uas"):
            refresher = val.strip().lower()
    return int(head), refresher


def offer_headers(interval: int, min_se: int) -> list[tuple[str, str]]:
    """The UAC's offer in an initial INVITE (§7.1)."""
    return [("Supported", "timer"), ("Session-Expires", f"{interval};refresher=uac"), ("Min-SE", str(min_se))]


def supports_timer(request: Request) -> bool:
    """Whether ``request`` says ``Supported: timer`` (RFC 4028 §7.1)."""
    return any("timer" in [t.strip().lower() for t in v.split(",")] for v in request.headers.get_all("Supported"))


def answer(invite: Request, interval: int, min_se: int) -> SessionTimer | int | None:
    """The UAS's decision on an initial INVITE (§9): the timer to run, 422 when the offered
    interval is below ``min_se``, or None (timers off here: ``interval`` 0)."""
    if interval <= 0:
        return None
    offered = parse(invite.headers.get("Session-Expires"))
    supports = supports_timer(invite)
    if offered is None:
        return SessionTimer(interval, "uac" if supports else "uas")
    value, refresher = offered
    if value < min_se:
        return 422
    chosen = max(min(value, interval), min_se)
    return SessionTimer(chosen, refresher or ("uac" if supports else "uas"))


def from_response(response: Response) -> SessionTimer | None:
    """The timer a UAC's 2xx set (§7.2); None when the UAS runs none."""
    parsed = parse(response.headers.get("Session-Expires"))
    if parsed is None:
        return None
    value, refresher = parsed
    return SessionTimer(value, refresher or "uac")


def expiry_after(interval: int) -> float:
    """When the side that does not refresh ends the session, seconds after the last refresh (§10)."""
    return interval - min(32.0, interval / 3)
