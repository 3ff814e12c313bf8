"""``sipsec-gateway``: run the UA gateway as a process (configuration from environment variables).

``sipsec-gateway serve`` starts the SIP sides and the control API and drains on SIGTERM (new
INVITEs 503 + Retry-After, calls in progress go on for up to ``SIPSEC_GATEWAY_CALL_GRACE_S``, then BYE /
CANCEL; a second SIGTERM ends them at once);
``sipsec-gateway config`` prints every variable with its default and its current value. The
command shape every service shares (:mod:`sipsec.cli`): flags override the variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Generator, Sequence
from pathlib import Path

import uvicorn
from sipsec import ibc, lifecycle
from sipsec.cli import configure_from, serve_command, service_main
from sipsec.config import ConfigError, describe, split_hostport
from sipsec.engine import EngineMetrics, create_engine
from sipsec.stores.access import open_redis, read_sealing_key, redis_username
from sipsec.stores.envelope import RedisDialogStore, RedisReplayCache

from sipsec_gateway.api import TokenFileError, create_app, load_tokens
from sipsec_gateway.config import GatewayConfig
from sipsec_gateway.gateway import Gateway
from sipsec_gateway.keys import PkgConnector
from sipsec_gateway.metrics import GatewayMetrics
from sipsec_gateway.store import RedisCallStore

__all__ = ["build_gateway", "check_redis", "main", "pkg_client_cert", "redis_stores", "serve"]

log = logging.getLogger("sipsec.gateway")


def build_gateway(config: GatewayConfig) -> Gateway:
    """Wire a gateway from ``config``: PKG connector, crypto engine, stores (memory or Redis)."""
    metrics = GatewayMetrics()
    ibc.configure_tables(config.table_mib)  # the in-process engine's, and the pool fallback's
    ca = Path(config.pkg_ca).read_bytes() if config.pkg_ca else None
    pkg = PkgConnector(tuple(config.pkg_targets), plaintext=config.pkg_plaintext, root_certificates=ca,
                       pinned_fingerprint=config.pkg_fingerprint or None, client_cert=pkg_client_cert(config))
    if config.worker_targets:
        worker_ca = Path(config.workers_ca).read_bytes() if config.workers_ca else None
        engine = create_engine(config.worker_targets, plaintext=config.workers_plaintext,
                               root_certificates=worker_ca, metrics=EngineMetrics(metrics.registry),
                               stream=config.workers_stream, local_sign=config.workers_local_sign)
    else:
        engine = create_engine(None, batch_window_s=config.verify_window_ms / 1000,
                               busy_cpu=config.verify_busy_cpu)
    stores: dict[str, object] = {}
    if config.store == "redis":
        stores = redis_stores(config)
    return Gateway(config, pkg=pkg, engine=engine, metrics=metrics, **stores)  # type: ignore[arg-type]


def pkg_client_cert(config: GatewayConfig) -> tuple[bytes, bytes] | None:
    """The (key, chain) PEM pair the gateway presents to the PKG, or None; ConfigError if unreadable."""
    if not config.pkg_client_cert:
        return None
    try:
        return Path(config.pkg_client_key).read_bytes(), Path(config.pkg_client_cert).read_bytes()
    except OSError as exc:
        raise ConfigError(f"SIPSEC_GATEWAY_PKG_CLIENT_CERT/_KEY: cannot read {exc.filename}: {exc.strerror}") from None


def redis_stores(config: GatewayConfig) -> dict[str, object]:
    """The Redis stores: one client as the gateway's ACL user, records sealed under the key file.

    Raises ConfigError naming the setting when the password, CA or sealing key is unusable.
    """
    sealing_key: bytes | None = None
    if config.sealing_key_file:
        try:
            sealing_key = read_sealing_key(config.sealing_key_file, "SIPSEC_GATEWAY_SEALING_KEY_FILE")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    else:  # only reachable with insecure_plain_store (GatewayConfig refuses it otherwise)
        log.warning("INSECURE: SIPSEC_GATEWAY_INSECURE_PLAIN_STORE is on: dialog keys, first INVITEs and "
                    "call records are stored in Redis in clear, and records planted there are trusted; "
                    "development only")
    if not redis_username(config.redis_url):
        log.warning("SIPSEC_REDIS_URL names no Redis user: connecting as Redis's default user")
    try:
        client = open_redis(config.redis_url, password_file=config.redis_password_file,
                            ca_file=config.redis_ca, what="SIPSEC_GATEWAY_REDIS_PASSWORD_FILE / SIPSEC_REDIS_URL")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return {
        "dialog_store": RedisDialogStore(client, sealing_key=sealing_key),
        "replay_cache": RedisReplayCache(client),
        "call_store": RedisCallStore(client, sealing_key=sealing_key),
    }


async def check_redis(stores: dict[str, object]) -> None:
    """Fail fast, with one clear line, when Redis refuses the gateway's user or cannot be reached."""
    import redis.exceptions

    client = getattr(stores.get("call_store"), "client", None)
    if client is None:
        return
    try:
        await client.ping()
    except (redis.exceptions.AuthenticationError, redis.exceptions.NoPermissionError) as exc:
        await client.aclose()
        raise ConfigError(f"Redis refused the gateway's user (SIPSEC_REDIS_URL, SIPSEC_GATEWAY_REDIS_PASSWORD_FILE): "
                          f"{exc}") from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        await client.aclose()
        raise ConfigError(f"Redis at SIPSEC_REDIS_URL is unreachable: {type(exc).__name__}: {exc}") from None


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: SIGTERM drains the whole gateway (see :func:`serve`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(config: GatewayConfig) -> None:
    """Run until SIGTERM/SIGINT, then drain (end calls, unregister users) and exit."""
    try:
        tokens = load_tokens(config.api_tokens, config.state_dir)
    except TokenFileError as exc:
        raise ConfigError(f"SIPSEC_GATEWAY_API_TOKENS / SIPSEC_GATEWAY_STATE_DIR: {exc}") from None
    gateway = build_gateway(config)
    if config.store == "redis":
        await check_redis({"call_store": gateway.call_store})
    await gateway.start()
    metrics_server = (gateway.metrics.serve(config.metrics_port, config.metrics_host)
                      if config.metrics_port >= 0 else None)
    host, port = split_hostport(config.http_listen, 8080)
    server = _ApiServer(uvicorn.Config(create_app(gateway, tokens), host=host, port=port, log_level="warning",
                                       lifespan="off"))
    stop, hurry = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(*_: object) -> None:  # the first asks for a drain, a second for the end now
        loop.call_soon_threadsafe(hurry.set if stop.is_set() else stop.set)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    api = asyncio.create_task(server.serve())
    log.info("control API on http://%s:%d (%d API tokens accepted), metrics on %s", host, port, len(tokens),
             f"http://{config.metrics_host}:{metrics_server.server_port}/metrics" if metrics_server else "-")
    await stop.wait()
    left = await gateway.drain(config.call_grace_s, hurry)  # the API stays up meanwhile: /readyz is red
    log.info("drained: ending %d call(s) still in progress", left)
    server.should_exit = True
    await gateway.stop()
    await api
    if metrics_server is not None:
        metrics_server.shutdown()
    for store in (gateway.dialog_store, gateway.replay_cache, gateway.call_store):
        fn = getattr(store, "aclose", None)
        if fn is not None:
            with contextlib.suppress(Exception):
                await fn()


def _print_config(config: GatewayConfig) -> None:
    print("\n".join(describe(config)))  # secrets masked


DESCRIPTION = "sipsec UA gateway: secured SIP user agents and the B2BUA for plain phones of one domain."


def _logging(config: GatewayConfig) -> None:
    configure_from(config, "gateway", config.domain)


def _serve(config: GatewayConfig) -> int:
    _logging(config)
    for warning in config.check_trust():  # ConfigError (exit 1) when a pin is missing
        log.warning("%s", warning)
    lifecycle.run(serve(config))
    return 0


def _config(config: GatewayConfig) -> int:
    _print_config(config)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``sipsec-gateway serve|config [flags]`` (:mod:`sipsec.cli`): 0 done, 2 usage, 1 error."""
    return service_main("sipsec-gateway", DESCRIPTION, [
        serve_command(GatewayConfig, _serve, description=DESCRIPTION + " Runs until SIGTERM/SIGINT, then drains."),
        serve_command(GatewayConfig, _config, description="Print every setting: its variable, current value "
                      "(secrets masked), default and help.", help="print the settings in effect", name="config"),
    ], argv, errors=(OSError,))


if __name__ == "__main__":
    raise SystemExit(main())
