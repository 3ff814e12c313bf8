"""SIP, SIPS, tel and other absolute URIs (RFC 3261 §19.1, §25.1; RFC 3966; RFC 5118)."""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field

from . import _abnf
from .errors import LocalProtocolError, RemoteProtocolError

__all__ = ["AbsoluteURI", "SipURI", "TelURI", "URI", "is_ip_literal", "parse_uri"]


@functools.lru_cache(maxsize=1024)
def is_ip_literal(host: str) -> bool:
    """Whether ``host`` is an IP address (an IPv6 one with or without brackets), not a name.

    Cached: transports, proxies and gateways ask it of every message they route, about the
    few addresses a node talks to."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _check_ipv6_reference(host: str) -> None:
    """Reject an IPv6reference that RFC 4291 does not admit (RFC 5118 §4.10)."""
    try:
        ipaddress.IPv6Address(host[1:-1])
    except ValueError:
        raise RemoteProtocolError("bad-ipv6-reference", 400, host[:64]) from None


@dataclass
class SipURI:
    """A ``sip:`` or ``sips:`` URI.

    Components are kept as written (escapes are not decoded; an IPv6 reference keeps its
    brackets) so that ``str()`` gives back an equivalent URI; parameter names are
    lower-cased, as they compare case-insensitively (RFC 3261 §19.1.4).
    """

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts.append(":")
                parts.append(self.password)
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts.append(f":{self.port}")
        for name, value in self.params.items():
            parts.append(f";{name}" if value is None else f";{name}={value}")
        if self.headers:
            parts.append("?")
            parts.append("&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(parts)

    @property
    def aor(self) -> str:
        """Canonical address-of-record: ``scheme:user@host`` (scheme and host lower-cased)."""
        host = self.host.lower().rstrip(".")
        if self.user is None:
            return f"{self.scheme.lower()}:{host}"
        return f"{self.scheme.lower()}:{self.user}@{host}"

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, if any."""
        return self.params.get("transport")

    @property
    def lr(self) -> bool:
        """Whether the loose-routing ``lr`` parameter is present (RFC 3261 §19.1.1)."""
        return "lr" in self.params


@dataclass
class TelURI:
    """A ``tel:`` URI (RFC 3966); ``number`` keeps its visual separators."""

    number: str
    params: dict[str, str | None] = field(default_factory=dict)
    scheme: str = "tel"

    def __str__(self) -> str:
        tail = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"{self.scheme}:{self.number}{tail}"

    @property
    def aor(self) -> str:
        """The URI without parameters, scheme lower-cased."""
        return f"tel:{self.number}"


@dataclass
class AbsoluteURI:
    """Any other absolute URI (``http:``, ``isbn:``, ``urn:``...): kept opaque."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"

    @property
    def aor(self) -> str:
        """The URI itself, scheme lower-cased."""
        return f"{self.scheme.lower()}:{self.rest}"


URI = SipURI | TelURI | AbsoluteURI


def _parse_uri_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    if not text:
        return params
    match = _abnf.URI_PARAM_RE.fullmatch
    for item in text[1:].split(";"):
        m = match(item)
        if m is None:
            raise RemoteProtocolError("bad-uri-param", 400, item[:64])
        params[m.group(1).lower()] = m.group(2)
    return params


def _parse_sip_uri(text: str) -> SipURI:
    m = _abnf.SIP_URI_RE.fullmatch(text)
    if m is None:
        raise RemoteProtocolError("bad-sip-uri", 400, text[:64])
    scheme, user, password, host, port, params, headers = m.groups()
    if host[0] == "[":
        _check_ipv6_reference(host)
    port_i: int | None = None
    if port is not None:
        port_i = int(port)
        if port_i > 65535:
            raise RemoteProtocolError("bad-port", 400, port)
    hdrs: dict[str, str] = {}
    if headers is not None:
        match = _abnf.URI_HEADER_RE.fullmatch
        for item in headers.split("&"):
            hm = match(item)
            if hm is None:
                raise RemoteProtocolError("bad-uri-header", 400, item[:64])
            hdrs[hm.group(1)] = hm.group(2)
    return SipURI(
        scheme.lower(), user, password, host, port_i, _parse_uri_params(params), hdrs
    )


def parse_uri(text: str) -> SipURI | TelURI | AbsoluteURI:
    """Parse a URI; raise :class:`RemoteProtocolError` (400) when it is not valid."""
    if not isinstance(text, str):
        raise LocalProtocolError("parse_uri expects str")
    colon = text.find(":")
    if colon < 0:
        raise RemoteProtocolError("bad-uri", 400, text[:64])
    scheme = text[:colon].lower()
    if scheme == "sip" or scheme == "sips":
        return _parse_sip_uri(text)
    if scheme == "tel":
        m = _abnf.TEL_URI_RE.fullmatch(text)
        if m is None or _abnf.TEL_DIGIT_RE.search(m.group("number")) is None:
            raise RemoteProtocolError("bad-tel-uri", 400, text[:64])
        return TelURI(m.group("number"), _parse_uri_params(m.group("params")), "tel")
    m2 = _abnf.ABSOLUTE_URI_RE.fullmatch(text)
    if m2 is None:
        raise RemoteProtocolError("bad-uri", 400, text[:64])
    return AbsoluteURI(m2.group("scheme"), m2.group("rest"))
