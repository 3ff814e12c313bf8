"""Identities of suite v1: canonical SIP AORs (RFC 3261 §19.1.4), purposes and key periods."""

from __future__ import annotations

import enum
import functools
import ipaddress
import math
import re
from dataclasses import dataclass
from typing import NewType

from sipsec.ibc._errors import InvalidIdentity, PeriodNotAllowed
from sipsec.ibc.hazmat.hashing import lp
from sipsec.ibc.hazmat.suite import SUITE_ID
from sipsec.sip.errors import SipError
from sipsec.sip.uri import SipURI, parse_uri
from sipsec.sip.uri import canonical_aor as sip_canonical_aor

__all__ = [
    "Aor",
    "Identity",
    "PeriodPolicy",
    "Purpose",
    "canonical_aor",
    "canonical_domain",
]

Aor = NewType("Aor", str)

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_DISPLAY_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~ \t]*$")
_MAX_USER = 256
_MAX_HOST = 253
_MAX_PERIOD = (1 << 63) - 1


def canonical_domain(host: str) -> str:
    """Lower-case, validate and canonicalise a host (hostname, IPv4 or [IPv6])."""
    if host.startswith("["):
        if not host.endswith("]"):
            raise InvalidIdentity("bad IPv6 reference")
        try:
            addr = ipaddress.IPv6Address(host[1:-1])
        except ValueError as exc:
            raise InvalidIdentity("bad IPv6 reference") from exc
        return f"[{addr.compressed}]"
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if not host or len(host) > _MAX_HOST:
        raise InvalidIdentity("bad host length")
    if not all(_LABEL.match(label) for label in host.split(".")):
        raise InvalidIdentity("bad host name")
    return host


def _skip_quoted(text: str) -> int:
    """Index just past the quoted-string that opens ``text`` (RFC 3261 §25.1, with quoted-pair)."""
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i + 1
        i += 1
    raise InvalidIdentity("unterminated quoted display name")


def _extract_uri(text: str) -> str:
    """The addr-spec of a name-addr (``[display-name] <addr-spec> [;params]``) or addr-spec."""
    text = text.strip()
    display_end = _skip_quoted(text) if text.startswith('"') else 0
    start = text.find("<", display_end)
    if start < 0:
        if display_end or ">" in text:
            raise InvalidIdentity("unbalanced angle brackets")
        return text
    if not display_end and not _DISPLAY_TOKEN.match(text[:start]):
        raise InvalidIdentity("bad display name")
    if display_end and text[display_end:start].strip():
        raise InvalidIdentity("junk after the display name")
    end = text.find(">", start)
    if end < 0:
        raise InvalidIdentity("unbalanced angle brackets")
    rest = text[end + 1 :].strip()
    if rest and not rest.startswith(";"):
        raise InvalidIdentity("junk after the URI")
    return text[start + 1 : end].strip()


def canonical_aor(uri: str) -> Aor:
    """The canonical address-of-record of a SIP or SIPS URI, name-addr or addr-spec.

    ``"A" <SIP:Alice@Atlanta.COM:5060;transport=udp>`` -> ``sip:Alice@atlanta.com``. The
    normalisation is :func:`sipsec.sip.canonical_aor`'s (RFC 3261 §19.1.4: scheme and host
    lower-cased, user kept case-sensitive with escapes normalised; password, port, parameters
    and headers dropped), so an identity names exactly the AOR that the registrar binds and
    the proxy looks up. Stricter here: the display name is dropped, the scheme must be ``sip``
    or ``sips``, a user part (at most 256 characters) is required and the host must be a DNS
    name of LDH labels or an IP address. Raises InvalidIdentity for anything else.
    """
    if not isinstance(uri, str) or len(uri) > 2048:
        raise InvalidIdentity("not a SIP URI")
    return _canonical_aor(uri)


@functools.lru_cache(maxsize=4096)
def _canonical_aor(uri: str) -> Aor:
    # cached: a gateway canonicalises the same few AORs for every message it seals or opens
    addr = _extract_uri(uri)
    scheme, sep, _ = addr.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips"):
        raise InvalidIdentity("not a SIP or SIPS URI")
    try:
        parsed = parse_uri(addr)
    except SipError:
        raise InvalidIdentity("not a valid SIP or SIPS URI") from None
    if not isinstance(parsed, SipURI) or parsed.user is None:
        raise InvalidIdentity("an AOR needs a user part")
    if len(parsed.user) > _MAX_USER:
        raise InvalidIdentity("empty or overlong user part")
    canonical_domain(parsed.host)  # stricter host rules than the URI grammar's
    try:
        return Aor(sip_canonical_aor(parsed))
    except SipError:
        raise InvalidIdentity("bad escape in the user part") from None


class Purpose(enum.Enum):
    """What an identity key is for; each purpose has its own hash-to-curve DST."""

    ENC = "enc"
    SIG = "sig"


@dataclass(frozen=True)
class PeriodPolicy:
    """Key periods: period k covers [k * length_s, (k + 1) * length_s) in unix seconds."""

    length_s: int = 30 * 86400
    max_ahead: int = 1  # current and next period may be issued

    def __post_init__(self) -> None:
        if not isinstance(self.length_s, int) or not 1 <= self.length_s <= _MAX_PERIOD:
            raise ValueError("period length must be a positive number of seconds")
        if not isinstance(self.max_ahead, int) or not 0 <= self.max_ahead <= 0xFFFF:
            raise ValueError("max_ahead must be in 0..65535")

    def period_at(self, t: float) -> int:
        """The period containing unix time ``t``."""
        if not math.isfinite(t) or t < 0:
            raise ValueError("time must be a finite, non-negative unix time")
        return int(t // self.length_s)

    def current(self, now: float) -> int:
        """The period in force at ``now``."""
        return self.period_at(now)

    def next(self, now: float) -> int:
        """The period after the current one."""
        return self.period_at(now) + 1

    def bounds(self, period: int) -> tuple[float, float]:
        """[start, end) of ``period`` in unix seconds."""
        return (float(period * self.length_s), float((period + 1) * self.length_s))

    def check_issuable(self, period: int, now: float) -> None:
        """Raise PeriodNotAllowed unless ``period`` is the current one or up to max_ahead later."""
        current = self.current(now)
        if period < current:
            raise PeriodNotAllowed(f"period {period} is in the past (current is {current})")
        if period > current + self.max_ahead:
            raise PeriodNotAllowed(
                f"period {period} is too far ahead (current {current}, max ahead {self.max_ahead})"
            )


@dataclass(frozen=True)
class Identity:
    """An identity of suite v1: canonical AOR, purpose, key period (and the period length)."""

    aor: Aor
    purpose: Purpose
    period: int
    period_length_s: int

    def __post_init__(self) -> None:
        if not isinstance(self.purpose, Purpose):
            raise InvalidIdentity("purpose must be Purpose.ENC or Purpose.SIG")
        if canonical_aor(self.aor) != self.aor:
            raise InvalidIdentity("AOR is not in canonical form (use canonical_aor)")
        if not isinstance(self.period, int) or not 0 <= self.period <= _MAX_PERIOD:
            raise InvalidIdentity("period out of range")
        if (
            not isinstance(self.period_length_s, int)
            or not 1 <= self.period_length_s <= _MAX_PERIOD
        ):
            raise InvalidIdentity("period length out of range")

    @property
    def domain(self) -> str:
        """The host part of the AOR: the domain whose PKG issues this identity's key."""
        return self.aor.rpartition("@")[2]

    def to_bytes(self) -> bytes:
        """``lp(suite-id, purpose, AOR, domain, period-length (u64), period (u64))``.

        ``lp`` prefixes each field with its length as a 2-byte big-endian integer.
        """
        return lp(
            SUITE_ID,
            self.purpose.value.encode("ascii"),
            self.aor.encode("utf-8"),
            self.domain.encode("utf-8"),
            self.period_length_s.to_bytes(8, "big"),
            self.period.to_bytes(8, "big"),
        )

    @classmethod
    def for_aor(cls, uri: str, purpose: Purpose, period: int, policy: PeriodPolicy) -> Identity:
        """The identity of ``uri`` (canonicalised) for ``purpose`` in ``period`` under ``policy``."""
        return cls(canonical_aor(uri), purpose, period, policy.length_s)
