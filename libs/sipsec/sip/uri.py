"""SIP, SIPS, tel and other absolute URIs (RFC 3261 §19.1, §25.1; RFC 3966; RFC 5118)."""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field

from . import _abnf
from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "AbsoluteURI",
    "SipURI",
    "TelURI",
    "URI",
    "canonical_aor",
    "canonical_host",
    "canonical_user",
    "is_ip_literal",
    "parse_uri",
]

# RFC 3261 §25.1 unreserved = alphanum / mark: an escape of one of these is the character itself.
_UNRESERVED = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()"
)
_HEX = frozenset("0123456789abcdefABCDEF")


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
        """The canonical address-of-record, :func:`canonical_aor` of this URI."""
        return canonical_aor(self)

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


def canonical_user(user: str) -> str:
    """The user (or password) part with escapes normalised (RFC 3261 §19.1.4).

    An escaped unreserved character is decoded (``%61lice`` is ``alice``); any other escape
    stays escaped with upper-case hex digits (``a%2fb`` is ``a%2Fb``, never ``a/b``: an
    escaped reserved character is not the same as the character itself). Case is kept: the
    user part compares case-sensitively. A ``%`` without two hex digits raises
    :class:`RemoteProtocolError` (the URI grammar admits none)."""
    if "%" not in user:
        return user
    out: list[str] = []
    i, n = 0, len(user)
    while i < n:
        ch = user[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        hexpart = user[i + 1 : i + 3]
        if len(hexpart) != 2 or not _HEX.issuperset(hexpart):
            raise RemoteProtocolError("bad-escape", 400, user[:64])
        decoded = chr(int(hexpart, 16))
        out.append(decoded if decoded in _UNRESERVED else "%" + hexpart.upper())
        i += 3
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def canonical_host(host: str) -> str:
    """The host lower-cased without a trailing dot; an IPv6 reference in its RFC 5952 form
    (``[2001:DB8::0:1]`` is ``[2001:db8::1]``, RFC 5118 §4.5). Cached: a node meets few hosts."""
    if host.startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            raise RemoteProtocolError("bad-ipv6-reference", 400, host[:64]) from None
    host = host.lower()
    return host[:-1] if host.endswith(".") else host


def canonical_aor(uri: str | URI) -> str:
    """The canonical address-of-record of a URI: the one key under which bindings, keys and
    identities of an address are found (RFC 3261 §10.3 step 5, §19.1.4).

    For a ``sip:``/``sips:`` URI this is ``scheme:user@host`` (``scheme:host`` without a user):

    * the scheme is lower-cased and kept: a SIPS URI is never equivalent to a SIP URI;
    * the user part keeps its case; escaped unreserved characters are decoded and other
      escapes upper-cased (:func:`canonical_user`), so ``sip:%61lice@atlanta.com`` and
      ``sip:alice@atlanta.com`` have the same AOR while ``a%2fb`` and ``a/b`` do not;
    * the host is lower-cased, loses a trailing dot, and an IPv6 reference is compressed;
    * password, port, URI parameters (``user=phone`` and ``transport`` included) and headers
      are dropped: they select how to reach an address, not whose it is. Two URIs that differ
      only there are not equivalent as request targets (§19.1.4) but name the same AOR.

    A ``tel:`` URI gives ``tel:number`` (parameters dropped); any other URI itself, its scheme
    lower-cased. A string is parsed first (surrounding whitespace ignored); an invalid one
    raises :class:`RemoteProtocolError` (400). The identity layer (``sipsec.ibc``) and the
    location store wrap this with their own stricter checks.
    """
    parsed = parse_uri(uri.strip()) if isinstance(uri, str) else uri
    if not isinstance(parsed, SipURI):
        return parsed.aor
    host = canonical_host(parsed.host)
    if parsed.user is None:
        return f"{parsed.scheme.lower()}:{host}"
    return f"{parsed.scheme.lower()}:{canonical_user(parsed.user)}@{host}"


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
