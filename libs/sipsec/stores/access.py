"""Redis as a trusted store: one ACL user per service, passwords from files, TLS, sealed records.

Every service that uses Redis connects as its own ACL user (Redis 6+ ACLs, ``AUTH <user>
<password>``) allowed only the key patterns and commands its store issues; the ``default``
user is switched off, so a client without a password can run nothing (``NOAUTH``).
:data:`REDIS_USERS` is the one definition of those users; :func:`acl_file` renders it as a
Redis ``aclfile`` (passwords only as SHA-256 digests, ``#<hex>``), and ``sipsec up``, the
compose file and the Kubernetes Secret use it.

:func:`open_redis` builds the client: the URL names the user (``redis://pkg@host:6379/0``,
``rediss://`` for TLS), the password comes from a file (never the URL, the command line or a
log line), and a ``rediss://`` connection verifies the server against a CA file when given.

:class:`RecordSealer` is the AEAD every secret-bearing record goes through: AES-256-GCM
(NIST SP 800-38D) with a fresh 96-bit nonce per write and the record's Redis key name as
associated data, so a record copied to another key, altered, or written by anyone without
the key reads as absent.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from Crypto.Cipher import AES

from sipsec.config import ConfigError

__all__ = [
    "REDIS_USERS",
    "RecordSealer",
    "RedisUser",
    "acl_file",
    "acl_line",
    "generate_password",
    "open_redis",
    "read_secret_file",
    "read_sealing_key",
    "redis_username",
]

#: Commands every service user may run: authenticate, ping, select its database, transactions.
_COMMON = ("auth", "hello", "ping", "select", "multi", "exec", "discard")


@dataclass(frozen=True)
class RedisUser:
    """One service's Redis ACL user: the key patterns it may touch and the commands it may run."""

    name: str
    keys: tuple[str, ...]
    commands: tuple[str, ...]
    purpose: str

    def rules(self) -> str:
        """The ACL rules after ``user <name> on <password>`` (RFC-less: Redis ``ACL SETUSER`` syntax)."""
        keys = " ".join(f"~{k}" for k in self.keys)
        cmds = " ".join(f"+{c}" for c in (*_COMMON, *self.commands))
        return f"resetkeys {keys} resetchannels -@all {cmds}"


_LOCATION_COMMANDS = (
    # the three Lua scripts (EVALSHA, and SCRIPT LOAD / EVAL when the script cache is cold),
    # and the commands they run, which Redis checks against the caller's ACL too
    "evalsha", "eval", "script|load", "script|exists",
    "get", "set", "exists", "del", "smembers", "sadd", "srem", "pttl", "pexpire",
    "zadd", "zrem", "zremrangebyscore", "zcard",
)

#: The service users, by name: what each store in :mod:`sipsec.stores` and the gateway issues.
REDIS_USERS: Mapping[str, RedisUser] = {
    u.name: u for u in (
        RedisUser("pkg", ("sipsec:pkg:*",), (
            "get", "set", "del", "hset", "hget", "hdel", "hkeys", "smembers", "sadd",
            "zadd", "zrem", "zremrangebyscore", "zcard", "incrby", "pexpire",
        ), "PKG nodes: users, sessions, throttling, federation cache"),
        RedisUser("location", ("sipsec:loc:*",), _LOCATION_COMMANDS,
                  "location service: registrar bindings"),
        RedisUser("proxy", ("sipsec:loc:*",), _LOCATION_COMMANDS,
                  "proxy with location=redis: the same bindings, written by its REGISTERs"),
        RedisUser("gateway", ("sipsec:envelope:*", "sipsec:gateway:*"), (
            "get", "set", "del", "mget",
        ), "UA gateway: sealed dialog keys and call records, replay tokens"),
    )
}


def acl_line(user: RedisUser, password: str) -> str:
    """``user <name> on #<sha256> <rules>``: the password only as its digest."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    return f"user {user.name} on #{digest} {user.rules()}"


def acl_file(passwords: Mapping[str, str], *, extra: Mapping[str, str] | None = None) -> str:
    """A Redis ``aclfile``: ``default`` off, then one line per service user in ``passwords``.

    ``extra`` maps further user names to full rule strings (e.g. an operator user); raises
    ValueError for a password that is empty or a service without a user.
    """
    lines = ["user default off resetkeys resetchannels -@all"]
    for name, password in passwords.items():
        if name not in REDIS_USERS:
            raise ValueError(f"no Redis user for service {name!r}")
        if len(password) < 16:
            raise ValueError(f"the Redis password of {name!r} is shorter than 16 characters")
        lines.append(acl_line(REDIS_USERS[name], password))
    for name, rules in (extra or {}).items():
        lines.append(f"user {name} {rules}")
    return "\n".join(lines) + "\n"


def generate_password() -> str:
    """A fresh random password: 32 bytes, hex."""
    return os.urandom(32).hex()


def read_secret_file(path: str | os.PathLike[str], what: str) -> bytes:
    """The contents of a secret file (one trailing newline dropped); raises ConfigError (a ValueError) naming
    ``what`` when it is missing or empty."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {p}: {exc.strerror}") from None
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise ConfigError(f"{what}: {p} is empty")
    return data


def read_sealing_key(path: str | os.PathLike[str], what: str) -> bytes:
    """A 32-byte AES-256 key from a file: 32 raw bytes or 64 hex digits."""
    data = read_secret_file(path, what)
    if len(data) == 32:
        return data
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{what}: {path} must hold a 32-byte key (32 raw bytes or 64 hex digits)")
    return key


def redis_username(url: str) -> str:
    """The user a Redis URL names (``redis://pkg@host``), or ``""`` for none."""
    return unquote(urlsplit(url).username or "")


def open_redis(url: str, *, password_file: str = "", ca_file: str = "", what: str = "Redis",
               **kwargs: Any) -> Any:
    """A ``redis.asyncio.Redis`` for ``url``, authenticated with the password in ``password_file``.

    The URL names the ACL user (``redis://gateway@host:6379/0``); a password written in the
    URL is refused (it would show in the environment and in logs). ``rediss://`` is TLS with
    certificate and host name verification, against ``ca_file`` when given (else the system's
    roots). Raises ConfigError naming ``what`` for an unusable setting.
    """
    import redis.asyncio as aioredis  # late: the in-memory embedded defaults need no redis

    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{what}: the URL scheme must be redis, rediss or unix")
    if parts.password is not None:
        raise ConfigError(f"{what}: do not put the password in the URL; give it in a password file")
    options: dict[str, Any] = dict(kwargs)
    if password_file:
        options["password"] = read_secret_file(password_file, what).decode("utf-8", "strict")
        if not parts.username:
            raise ConfigError(f"{what}: a password file needs a user in the URL (redis://<user>@host)")
    if ca_file:
        if parts.scheme != "rediss":
            raise ConfigError(f"{what}: a CA file needs a rediss:// URL")
        options["ssl_ca_certs"] = ca_file
    if parts.scheme == "rediss":
        options.setdefault("ssl_cert_reqs", "required")
        options.setdefault("ssl_check_hostname", True)
    return aioredis.Redis.from_url(url, **options)


class RecordSealer:
    """AES-256-GCM over a record, with its Redis key name as associated data.

    ``seal(name, record)`` is ``nonce(12) || ciphertext || tag(16)``; ``unseal`` raises
    ValueError for anything not sealed under this key for this very name. ``blind`` turns an
    identifying value (an inner Call-ID) into a key-name component that reveals nothing
    without the key: HMAC-SHA256 under a key derived from the sealing key (RFC 2104).
    """

    __slots__ = ("_key", "_names")

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the sealing key must be 32 bytes")
        self._key = key
        self._names = hmac.digest(key, b"sipsec-v1 redis key names", "sha256")

    def __repr__(self) -> str:
        return "RecordSealer(<key>)"

    def seal(self, name: str, record: bytes) -> bytes:
        nonce = os.urandom(12)
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=nonce, mac_len=16)
        cipher.update(name.encode())
        body, tag = cipher.encrypt_and_digest(record)
        return nonce + body + tag

    def blind(self, label: str, value: str) -> str:
        """32 hex digits standing for ``value`` in a key name (same value, same digits)."""
        return hmac.digest(self._names, label.encode() + b"\x00" + value.encode(), "sha256")[:16].hex()

    def unseal(self, name: str, data: bytes) -> bytes:
        if len(data) < 28:
            raise ValueError("short sealed record")
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=data[:12], mac_len=16)
        cipher.update(name.encode())
        return bytes(cipher.decrypt_and_verify(data[12:-16], data[-16:]))
