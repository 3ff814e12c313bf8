"""HTTP Digest authentication for SIP (RFC 3261 §22.4, RFC 2617, RFC 7616, RFC 8760), sans-IO.

Client side: parse a ``WWW-Authenticate`` / ``Proxy-Authenticate`` challenge and build the
``Authorization`` / ``Proxy-Authorization`` credentials (MD5, SHA-256, their ``-sess``
variants, SHA-512-256 where hashlib has it; qop ``auth`` and ``auth-int``).
Server side: :class:`DigestServer` issues stateless HMAC-protected nonces that carry their
own timestamp (time is passed in, never read), verifies credentials in constant time,
answers expired nonces with ``stale=true`` and rejects nonce-count replays.
Failures raise :class:`DigestError` subclasses whose ``reason`` is a fixed label; no
password, HA1, response or nonce is ever put in an exception message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .errors import RemoteProtocolError, SipError

__all__ = [
    "ALGORITHMS",
    "AuthenticationFailed",
    "DigestChallenge",
    "DigestClient",
    "DigestCredentials",
    "DigestError",
    "DigestServer",
    "NonceReplay",
    "StaleNonce",
    "compute_ha1",
    "compute_response",
    "format_auth_params",
    "parse_auth_params",
    "select_challenge",
]


def _hash_fn(name: str) -> Callable[[bytes], str]:
    def h(data: bytes) -> str:
        return hashlib.new(name, data).hexdigest()

    return h


_BASE: dict[str, str] = {"MD5": "md5", "SHA-256": "sha256"}
try:  # RFC 8760 §2.3 also registers SHA-512-256; OpenSSL builds may lack it
    hashlib.new("sha512_256", b"")
    _BASE["SHA-512-256"] = "sha512_256"
except ValueError:  # pragma: no cover - depends on the OpenSSL build
    pass

ALGORITHMS: tuple[str, ...] = tuple(name for base in _BASE for name in (base, base + "-sess"))
"""Supported ``algorithm`` values (case-insensitive on input, canonical spelling here)."""

_CANON = {a.lower(): a for a in ALGORITHMS}


class DigestError(SipError):
    """Digest authentication failed; ``reason`` is a fixed, countable label."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class AuthenticationFailed(DigestError):
    """Wrong credentials, a forged/foreign nonce, a mismatched realm/URI, or bad syntax."""


class StaleNonce(DigestError):
    """The credentials were right but the nonce has expired: re-challenge with stale=true."""


class NonceReplay(AuthenticationFailed):
    """The nonce count was not greater than one already accepted for this nonce."""


def _canonical_algorithm(name: str | None) -> str:
    if name is None:
        return "MD5"  # RFC 2617 §3.2.1: absent means MD5
    alg = _CANON.get(name.lower())
    if alg is None:
        raise AuthenticationFailed("unsupported-algorithm")
    return alg


def _hasher(algorithm: str) -> Callable[[bytes], str]:
    base = algorithm[:-5] if algorithm.endswith("-sess") else algorithm
    return _hash_fn(_BASE[base])


# --- the arithmetic (RFC 2617 §3.2.2, RFC 7616 §3.4) --------------------------------------


def compute_ha1(
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    nonce: str | None = None,
    cnonce: str | None = None,
) -> str:
    """A1 hash: ``H(username:realm:password)``; for ``-sess``, ``H(that:nonce:cnonce)``."""
    alg = _canonical_algorithm(algorithm)
    h = _hasher(alg)
    ha1: str = h(f"{username}:{realm}:{password}".encode())
    if alg.endswith("-sess"):
        ha1 = _session_ha1(alg, ha1, nonce, cnonce)
    return ha1


def _session_ha1(alg: str, ha1: str, nonce: str | None, cnonce: str | None) -> str:
    if nonce is None or cnonce is None:
        raise AuthenticationFailed("sess-needs-cnonce")
    result: str = _hasher(alg)(f"{ha1}:{nonce}:{cnonce}".encode())
    return result


def compute_response(
    algorithm: str,
    ha1: str,
    method: str,
    uri: str,
    nonce: str,
    *,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value: ``KD(HA1, nonce:nc:cnonce:qop:HA2)`` (or RFC 2069 form
    ``KD(HA1, nonce:HA2)`` without qop). ``ha1`` is already the session HA1 for -sess."""
    h = _hasher(_canonical_algorithm(algorithm))
    if qop == "auth-int":
        ha2 = h(f"{method}:{uri}:{h(body)}".encode())
    elif qop in (None, "auth"):
        ha2 = h(f"{method}:{uri}".encode())
    else:
        raise AuthenticationFailed("unsupported-qop")
    if qop is None:
        result: str = h(f"{ha1}:{nonce}:{ha2}".encode())
    else:
        if nc is None or cnonce is None:
            raise AuthenticationFailed("qop-needs-nc-cnonce")
        result = h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())
    return result


# --- header syntax (RFC 3261 §25.1 challenge/credentials, RFC 7235 auth-param) -------------

_TCHARS_RE_SRC = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM_RE = re.compile(
    rf"\s*({_TCHARS_RE_SRC})\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|([^\s,\"]+))\s*(?:,|$)", re.DOTALL
)
_SCHEME_RE = re.compile(rf"\s*({_TCHARS_RE_SRC})(?:\s+|$)")
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_MAX_HEADER = 8192


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``Scheme p1=v1, p2="v 2"`` into the scheme and a dict of lower-cased names.

    Quoted strings are unescaped. Raises RemoteProtocolError (400) on malformed input or
    a repeated parameter.
    """
    if len(value) > _MAX_HEADER:
        raise RemoteProtocolError("auth-header-too-long", 400)
    m = _SCHEME_RE.match(value)
    if m is None:
        raise RemoteProtocolError("bad-auth-header", 400, "no scheme")
    scheme = m.group(1)
    params: dict[str, str] = {}
    pos = m.end()
    end = len(value.rstrip())
    while pos < end:
        pm = _PARAM_RE.match(value, pos)
        if pm is None or pm.end() == pos:
            raise RemoteProtocolError("bad-auth-header", 400, "bad auth-param")
        name = pm.group(1).lower()
        if name in params:
            raise RemoteProtocolError("bad-auth-header", 400, "repeated auth-param")
        quoted = pm.group(2)
        params[name] = _UNESCAPE_RE.sub(r"\1", quoted) if quoted is not None else pm.group(3)
        pos = pm.end()
    return scheme, params


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_auth_params(scheme: str, params: Iterable[tuple[str, str, bool]]) -> str:
    """Serialise ``(name, value, quoted)`` triples as ``Scheme name="value", name=value``."""
    parts = []
    for name, value, quoted in params:
        if not quoted and (not value or re.fullmatch(_TCHARS_RE_SRC, value) is None):
            raise ValueError(f"auth-param {name} is not a token")
        if any(c in value for c in "\r\n"):
            raise ValueError(f"auth-param {name} contains a line break")
        parts.append(f"{name}={_quote(value) if quoted else value}")
    return f"{scheme} " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """A ``WWW-Authenticate`` / ``Proxy-Authenticate`` Digest challenge (RFC 2617 §3.2.1)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ("auth",)
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None

    def to_header(self) -> str:
        """The header value (``Digest realm="...", nonce="...", ...``)."""
        p: list[tuple[str, str, bool]] = [("realm", self.realm, True)]
        if self.domain is not None:
            p.append(("domain", self.domain, True))
        p.append(("nonce", self.nonce, True))
        if self.opaque is not None:
            p.append(("opaque", self.opaque, True))
        if self.stale:
            p.append(("stale", "true", False))
        p.append(("algorithm", self.algorithm, False))
        if self.qop:
            p.append(("qop", ",".join(self.qop), True))
        return format_auth_params("Digest", p)

    @classmethod
    def parse(cls, value: str) -> DigestChallenge:
        """Parse a challenge header value; RemoteProtocolError if it is not Digest/valid."""
        scheme, p = parse_auth_params(value)
        if scheme.lower() != "digest":
            raise RemoteProtocolError("not-digest", 400)
        if "realm" not in p or "nonce" not in p:
            raise RemoteProtocolError("bad-auth-header", 400, "challenge lacks realm/nonce")
        qop = tuple(q.strip() for q in p["qop"].split(",") if q.strip()) if "qop" in p else ()
        return cls(
            realm=p["realm"],
            nonce=p["nonce"],
            algorithm=p.get("algorithm", "MD5"),
            qop=qop,
            opaque=p.get("opaque"),
            stale=p.get("stale", "").lower() == "true",
            domain=p.get("domain"),
        )


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """``Authorization`` / ``Proxy-Authorization`` Digest credentials (RFC 2617 §3.2.2)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    cnonce: str | None = None
    qop: str | None = None
    nc: str | None = None
    opaque: str | None = None

    def __repr__(self) -> str:  # the response is a password-equivalent for this nonce
        return (
            f"DigestCredentials(username={self.username!r}, realm={self.realm!r}, "
            f"algorithm={self.algorithm!r}, qop={self.qop!r}, nc={self.nc!r})"
        )

    def to_header(self) -> str:
        p: list[tuple[str, str, bool]] = [
            ("username", self.username, True),
            ("realm", self.realm, True),
            ("nonce", self.nonce, True),
            ("uri", self.uri, True),
            ("response", self.response, True),
            ("algorithm", self.algorithm, False),
        ]
        if self.cnonce is not None:
            p.append(("cnonce", self.cnonce, True))
        if self.opaque is not None:
            p.append(("opaque", self.opaque, True))
        if self.qop is not None:
            p.append(("qop", self.qop, False))
        if self.nc is not None:
            p.append(("nc", self.nc, False))
        return format_auth_params("Digest", p)

    @classmethod
    def parse(cls, value: str) -> DigestCredentials:
        scheme, p = parse_auth_params(value)
        if scheme.lower() != "digest":
            raise RemoteProtocolError("not-digest", 400)
        try:
            return cls(
                username=p["username"],
                realm=p["realm"],
                nonce=p["nonce"],
                uri=p["uri"],
                response=p["response"],
                algorithm=p.get("algorithm", "MD5"),
                cnonce=p.get("cnonce"),
                qop=p.get("qop"),
                nc=p.get("nc"),
                opaque=p.get("opaque"),
            )
        except KeyError as exc:
            raise RemoteProtocolError("bad-auth-header", 400, f"missing {exc.args[0]}") from None


def select_challenge(values: Iterable[str]) -> DigestChallenge:
    """Pick the strongest supported Digest challenge among header values (RFC 8760 §2.4:
    a client uses the first it supports in the server's order of preference)."""
    for value in values:
        try:
            ch = DigestChallenge.parse(value)
            _canonical_algorithm(ch.algorithm)
        except (RemoteProtocolError, DigestError):
            continue
        return ch
    raise AuthenticationFailed("no-supported-challenge")


# --- client ----------------------------------------------------------------------------------


class DigestClient:
    """Answers challenges for one username/password, counting ``nc`` per nonce."""

    __slots__ = ("_nc", "_password", "username")

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._password = password
        self._nc: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"DigestClient(username={self.username!r})"

    def authorize(
        self,
        challenge: DigestChallenge,
        method: str,
        uri: str,
        *,
        body: bytes = b"",
        cnonce: str | None = None,
    ) -> DigestCredentials:
        """Credentials for ``method uri`` answering ``challenge`` (qop auth preferred)."""
        alg = _canonical_algorithm(challenge.algorithm)
        qop: str | None = None
        if "auth" in challenge.qop:
            qop = "auth"
        elif "auth-int" in challenge.qop:
            qop = "auth-int"
        elif challenge.qop:
            raise AuthenticationFailed("unsupported-qop")
        nc_value: str | None = None
        if qop is not None or alg.endswith("-sess"):
            cnonce = cnonce or secrets.token_hex(16)
        if qop is not None:
            count = self._nc.get(challenge.nonce, 0) + 1
            if len(self._nc) > 64 and challenge.nonce not in self._nc:
                self._nc.clear()
            self._nc[challenge.nonce] = count
            nc_value = f"{count:08x}"
        ha1 = compute_ha1(
            alg, self.username, challenge.realm, self._password, challenge.nonce, cnonce
        )
        response = compute_response(
            alg, ha1, method, uri, challenge.nonce,
            qop=qop, nc=nc_value, cnonce=cnonce, body=body,
        )  # fmt: skip
        return DigestCredentials(
            username=self.username,
            realm=challenge.realm,
            nonce=challenge.nonce,
            uri=uri,
            response=response,
            algorithm=challenge.algorithm,
            cnonce=cnonce,
            qop=qop,
            nc=nc_value,
            opaque=challenge.opaque,
        )


# --- server ----------------------------------------------------------------------------------

_NONCE_STRUCT = struct.Struct(">Q8s")  # timestamp in ms, 8 random bytes
_NONCE_MAC_LEN = 16
_NONCE_RAW_LEN = _NONCE_STRUCT.size + _NONCE_MAC_LEN


class DigestServer:
    """Issues and checks Digest challenges for one realm.

    Nonces are ``base64url(timestamp_ms || random(8) || HMAC-SHA256(secret, ... || realm)[:16])``:
    stateless, unforgeable without ``secret``, and dated so that ``verify`` can tell a stale
    nonce (older than ``nonce_lifetime`` seconds) from a forged one. The highest nonce
    count accepted per nonce is kept (bounded, oldest evicted) to reject replays.
    """

    __slots__ = ("_floor", "_nc_seen", "_secret", "algorithms", "max_tracked",
                 "nonce_lifetime", "qop", "realm")  # fmt: skip

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        qop: tuple[str, ...] = ("auth",),
        nonce_lifetime: float = 300.0,
        max_tracked_nonces: int = 100_000,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        self.realm = realm
        self._secret = secret
        self.algorithms = tuple(_canonical_algorithm(a) for a in algorithms)
        if not self.algorithms:
            raise ValueError("at least one algorithm is needed")
        self.qop = qop
        self.nonce_lifetime = nonce_lifetime
        self.max_tracked = max_tracked_nonces
        self._nc_seen: OrderedDict[str, tuple[int, float]] = OrderedDict()
        # Nonces issued at or before this time and no longer tracked are treated as stale,
        # so evicting a nonce from the table never re-opens it to replay.
        self._floor = float("-inf")

    def __repr__(self) -> str:
        return f"DigestServer(realm={self.realm!r}, algorithms={self.algorithms!r})"

    def _mac(self, head: bytes) -> bytes:
        return hmac.new(self._secret, head + self.realm.encode(), hashlib.sha256).digest()[
            :_NONCE_MAC_LEN
        ]

    def make_nonce(self, now: float) -> str:
        """A fresh nonce dated ``now`` (seconds on the caller's clock, not negative)."""
        if now < 0:
            raise ValueError("now must not be negative")
        head = _NONCE_STRUCT.pack(int(now * 1000), secrets.token_bytes(8))
        return base64.urlsafe_b64encode(head + self._mac(head)).decode().rstrip("=")

    def challenges(self, now: float, *, stale: bool = False) -> list[DigestChallenge]:
        """One challenge per algorithm, preferred first (RFC 8760 §2.4), sharing a nonce."""
        nonce = self.make_nonce(now)
        return [
            DigestChallenge(self.realm, nonce, algorithm=alg, qop=self.qop, stale=stale)
            for alg in self.algorithms
        ]

    def _nonce_time(self, nonce: str) -> float:
        """The nonce's issue time; AuthenticationFailed if it was not issued by us."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            raise AuthenticationFailed("bad-nonce") from None
        if len(raw) != _NONCE_RAW_LEN:
            raise AuthenticationFailed("bad-nonce")
        head, mac = raw[: _NONCE_STRUCT.size], raw[_NONCE_STRUCT.size :]
        if not hmac.compare_digest(mac, self._mac(head)):
            raise AuthenticationFailed("bad-nonce")
        ms, _ = _NONCE_STRUCT.unpack(head)
        return float(ms) / 1000.0

    def verify(
        self,
        credentials: DigestCredentials,
        method: str,
        now: float,
        *,
        password: str | None = None,
        ha1: str | None = None,
        expected_uri: str | None = None,
        body: bytes = b"",
    ) -> None:
        """Check ``credentials`` for a ``method`` request at time ``now``; raise on failure.

        Give the user's ``password``, or ``ha1`` = ``H(username:realm:password)`` for the
        credentials' algorithm (a registrar stores that, not the password). Raises
        AuthenticationFailed (wrong, forged, foreign or malformed), StaleNonce (right
        credentials, expired nonce: answer with ``challenges(now, stale=True)``) or
        NonceReplay (nc not increasing).
        """
        c = credentials
        if (password is None) == (ha1 is None):
            raise ValueError("give exactly one of password or ha1")
        if c.realm != self.realm:
            raise AuthenticationFailed("realm-mismatch")
        alg = _canonical_algorithm(c.algorithm)
        if alg not in self.algorithms:
            raise AuthenticationFailed("unsupported-algorithm")
        if expected_uri is not None and c.uri != expected_uri:
            raise AuthenticationFailed("uri-mismatch")
        if c.qop is None:
            raise AuthenticationFailed("qop-required")
        if c.qop not in self.qop:
            raise AuthenticationFailed("unsupported-qop")
        if c.nc is None or c.cnonce is None or len(c.nc) != 8:
            raise AuthenticationFailed("bad-nc")
        try:
            count = int(c.nc, 16)
        except ValueError:
            raise AuthenticationFailed("bad-nc") from None
        issued = self._nonce_time(c.nonce)
        if password is not None:
            base_ha1 = _hasher(alg)(f"{c.username}:{c.realm}:{password}".encode())
        else:
            assert ha1 is not None
            base_ha1 = ha1.lower()
        session_ha1 = (
            _session_ha1(alg, base_ha1, c.nonce, c.cnonce) if alg.endswith("-sess") else base_ha1
        )
        expected = compute_response(
            alg, session_ha1, method, c.uri, c.nonce,
            qop=c.qop, nc=c.nc, cnonce=c.cnonce, body=body,
        )  # fmt: skip
        if not hmac.compare_digest(expected.encode(), c.response.lower().encode()):
            raise AuthenticationFailed("bad-response")
        age = now - issued
        if age > self.nonce_lifetime:
            raise StaleNonce("stale-nonce")
        if age < -5.0:  # issued in the future: another node's clock, or a forged timestamp
            raise AuthenticationFailed("bad-nonce")
        seen = self._nc_seen.get(c.nonce)
        if seen is None:
            if issued <= self._floor:
                raise StaleNonce("stale-nonce")
        elif count <= seen[0]:
            raise NonceReplay("nonce-replay")
        self._nc_seen[c.nonce] = (count, issued)
        self._nc_seen.move_to_end(c.nonce)
        while len(self._nc_seen) > self.max_tracked:
            _, (_, evicted_issued) = self._nc_seen.popitem(last=False)
            self._floor = max(self._floor, evicted_issued)
