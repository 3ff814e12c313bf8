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

Every client shares one shape (:class:`RedisPoolConfig`, ``SIPSEC_REDIS_*``): a bounded
``BlockingConnectionPool`` that makes a command wait for a free connection (up to
``pool_timeout_s``) instead of failing at once, and socket timeouts on every command. A store
operation that cannot reach Redis, or waits past those bounds, raises :class:`StoreUnavailable`
(callers answer it as overload: SIP 503 with ``Retry-After``, gRPC ``UNAVAILABLE``);
:func:`store_operation` times each operation into ``sipsec_store_operation_seconds`` and counts
failures in ``sipsec_store_errors_total``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar
from urllib.parse import unquote, urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.registry import Collector

from sipsec.config import ConfigError, load, setting

__all__ = [
    "REDIS_USERS",
    "STORE_ERROR_KINDS",
    "RecordSealer",
    "RedisPoolConfig",
    "RedisUser",
    "StoreMetrics",
    "StoreUnavailable",
    "acl_file",
    "acl_line",
    "generate_password",
    "open_redis",
    "read_secret_file",
    "read_sealing_key",
    "redis_error_kind",
    "redis_username",
    "StoreMetricsCollector",
    "store_metrics",
    "store_operation",
]

P = ParamSpec("P")
R = TypeVar("R")

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


@dataclass(frozen=True)
class RedisPoolConfig:
    """How every Redis client of a process connects (shared by all services, read by :func:`open_redis`).

    Sized for a few hundred concurrent store operations per process: Redis answers each in
    well under a millisecond, so 32 connections serve far more than the SIP rates one process
    reaches, and a burst beyond them waits in the pool (``pool_timeout_s``) rather than failing.
    """

    max_connections: int = setting("SIPSEC_REDIS_MAX_CONNECTIONS", 32,
                                   "most connections one Redis client (store) of a process opens; "
                                   "further commands wait for a free one")
    pool_timeout_s: float = setting("SIPSEC_REDIS_POOL_TIMEOUT_S", 1.0,
                                    "how long a command waits for a free connection before the store "
                                    "answers unavailable (503), seconds")
    socket_timeout_s: float = setting("SIPSEC_REDIS_SOCKET_TIMEOUT_S", 2.0,
                                      "longest wait for Redis to answer one command, seconds")
    connect_timeout_s: float = setting("SIPSEC_REDIS_CONNECT_TIMEOUT_S", 2.0,
                                       "longest wait to open a connection to Redis, seconds")

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ConfigError("SIPSEC_REDIS_MAX_CONNECTIONS must be at least 1")
        for name in ("pool_timeout_s", "socket_timeout_s", "connect_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"SIPSEC_REDIS_{name.upper()} must be positive")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> RedisPoolConfig:
        """The defaults, then ``environ`` (default ``os.environ``), then ``overrides``."""
        return load(cls, environ, **overrides)


def open_redis(url: str, *, password_file: str = "", ca_file: str = "", what: str = "Redis",
               pool: RedisPoolConfig | None = None, **kwargs: Any) -> Any:
    """A ``redis.asyncio.Redis`` for ``url``, authenticated with the password in ``password_file``.

    The URL names the ACL user (``redis://gateway@host:6379/0``); a password written in the
    URL is refused (it would show in the environment and in logs). ``rediss://`` is TLS with
    certificate and host name verification, against ``ca_file`` when given (else the system's
    roots). The client owns a ``BlockingConnectionPool`` sized by ``pool`` (default
    :meth:`RedisPoolConfig.from_env`); ``kwargs`` go to the connections and override it.
    Raises ConfigError naming ``what`` for an unusable setting.
    """
    import redis.asyncio as aioredis  # late: the in-memory embedded defaults need no redis

    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{what}: the URL scheme must be redis, rediss or unix")
    if parts.password is not None:
        raise ConfigError(f"{what}: do not put the password in the URL; give it in a password file")
    sizing = RedisPoolConfig.from_env() if pool is None else pool
    options: dict[str, Any] = {
        "socket_timeout": sizing.socket_timeout_s, "socket_connect_timeout": sizing.connect_timeout_s,
        **kwargs,
    }
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
    connections = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=sizing.max_connections, timeout=sizing.pool_timeout_s, **options)
    return aioredis.Redis.from_pool(connections)


class StoreUnavailable(Exception):
    """A store operation could not be done now: Redis unreachable, too slow, or every pooled
    connection busy past the pool timeout. Overload, not a fault of the request: answer 503
    with ``Retry-After`` (``retry_after_s``), gRPC ``UNAVAILABLE``."""

    retry_after_s: int = 1

    def __init__(self, message: str, kind: str = "unavailable") -> None:
        super().__init__(message)
        self.kind = kind


#: ``kind`` label values of ``sipsec_store_errors_total``.
STORE_ERROR_KINDS: Final = frozenset({
    "pool_timeout",  # every pooled connection stayed busy for SIPSEC_REDIS_POOL_TIMEOUT_S
    "timeout",  # Redis did not answer within SIPSEC_REDIS_SOCKET_TIMEOUT_S
    "connection",  # refused, reset, or closed
    "response",  # Redis answered with an error (ACL, OOM, wrong type): re-raised as it is, a fault
})


class StoreMetrics:
    """``sipsec_store_operation_seconds{store,op}`` and ``sipsec_store_errors_total{store,op,kind}``.

    ``store`` names the store (``replay``, ``dialog``, ``pkg``, ``location``...), ``op`` its
    operation (a method name); ``kind`` is one of :data:`STORE_ERROR_KINDS`.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        self.seconds = Histogram(
            "sipsec_store_operation_seconds",
            "Time of one store operation against Redis (one round trip, or one pipeline), any outcome.",
            ["store", "op"], registry=self.registry,
            buckets=(0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.errors = Counter(
            "sipsec_store_errors_total",
            "Store operations that failed, by store, operation and kind of failure.",
            ["store", "op", "kind"], registry=self.registry,
        )


_METRICS: StoreMetrics | None = None


def store_metrics() -> StoreMetrics:
    """The process's store metrics, in the default ``prometheus_client`` registry (which the
    gateway's and proxy's ``/metrics`` serve)."""
    global _METRICS
    if _METRICS is None:
        _METRICS = StoreMetrics(REGISTRY)
    return _METRICS


class StoreMetricsCollector(Collector):
    """The process's store metrics, for a service that serves a registry of its own
    (``registry.register(StoreMetricsCollector())``)."""

    def collect(self):  # type: ignore[no-untyped-def]
        metrics = store_metrics()
        yield from metrics.seconds.collect()
        yield from metrics.errors.collect()


def redis_error_kind(exc: BaseException) -> str | None:
    """The :data:`STORE_ERROR_KINDS` of a Redis client failure, None for anything else."""
    import redis.exceptions as rexc

    if isinstance(exc, rexc.ConnectionError) and "No connection available" in str(exc):
        return "pool_timeout"
    if isinstance(exc, (rexc.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, (rexc.ConnectionError, ConnectionError, OSError)):
        return "connection"
    if isinstance(exc, rexc.ResponseError):
        return "response"
    return None


def store_operation(
    store: str, op: str,
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Decorates an async store method: times it into ``sipsec_store_operation_seconds`` and
    turns a Redis connection, timeout or pool failure into :class:`StoreUnavailable`; these
    and Redis error replies are counted by kind. Other exceptions pass through untouched."""

    def wrap(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            metrics = store_metrics()
            start = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            except StoreUnavailable as exc:
                metrics.errors.labels(store, op, exc.kind).inc()
                raise
            except Exception as exc:
                kind = redis_error_kind(exc)
                if kind is None:
                    raise
                metrics.errors.labels(store, op, kind).inc()
                if kind == "response":
                    raise
                raise StoreUnavailable(f"{store} store: {op} failed ({kind})", kind) from exc
            finally:
                metrics.seconds.labels(store, op).observe(time.perf_counter() - start)

        return run

    return wrap


class RecordSealer:
    """AES-256-GCM over a record, with its Redis key name as associated data.

    ``seal(name, record)`` is ``nonce(12) || ciphertext || tag(16)``; ``unseal`` raises
    ValueError for anything not sealed under this key for this very name. ``blind`` turns an
    identifying value (an inner Call-ID) into a key-name component that reveals nothing
    without the key: HMAC-SHA256 under a key derived from the sealing key (RFC 2104).
    """

    __slots__ = ("_aead", "_names")

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the sealing key must be 32 bytes")
        # cryptography's AESGCM (OpenSSL): ~2 µs to seal and open a 1.5 KB record, against
        # ~100 µs with pycryptodome's GCM (bench/defences.py); the same bytes either way
        self._aead = AESGCM(key)
        self._names = hmac.digest(key, b"sipsec-v1 redis key names", "sha256")

    def __repr__(self) -> str:
        return "RecordSealer(<key>)"

    def seal(self, name: str, record: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, record, name.encode())

    def blind(self, label: str, value: str) -> str:
        """32 hex digits standing for ``value`` in a key name (same value, same digits)."""
        return hmac.digest(self._names, label.encode() + b"\x00" + value.encode(), "sha256")[:16].hex()

    def unseal(self, name: str, data: bytes) -> bytes:
        if len(data) < 28:
            raise ValueError("short sealed record")
        try:
            return self._aead.decrypt(data[:12], data[12:], name.encode())
        except InvalidTag:
            raise ValueError("MAC check failed") from None
