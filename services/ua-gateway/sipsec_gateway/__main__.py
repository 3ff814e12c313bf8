"""``sipsec-gateway``: run the UA gateway as a process (configuration from environment variables).

``sipsec-gateway serve`` starts the SIP sides and the control API and drains on SIGTERM;
``sipsec-gateway config`` prints every variable with its default and its current value.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Generator, Sequence
from pathlib import Path

import uvicorn
from sipsec import lifecycle
from sipsec.config import ConfigError, split_hostport
from sipsec.engine import EngineMetrics, create_engine
from sipsec.stores.envelope import RedisDialogStore, RedisReplayCache

from sipsec_gateway.api import create_app
from sipsec_gateway.config import ENV, GatewayConfig
from sipsec_gateway.gateway import Gateway
from sipsec_gateway.keys import PkgConnector
from sipsec_gateway.metrics import GatewayMetrics
from sipsec_gateway.store import RedisCallStore

__all__ = ["build_gateway", "main", "serve"]

log = logging.getLogger("sipsec.gateway")


def build_gateway(config: GatewayConfig) -> Gateway:
    """Wire a gateway from ``config``: PKG connector, crypto engine, stores (memory or Redis)."""
    metrics = GatewayMetrics()
    ca = Path(config.pkg_ca).read_bytes() if config.pkg_ca else None
    pkg = PkgConnector(tuple(config.pkg_targets), plaintext=config.pkg_plaintext, root_certificates=ca,
                       pinned_fingerprint=config.pkg_fingerprint or None)
    if config.worker_targets:
        worker_ca = Path(config.workers_ca).read_bytes() if config.workers_ca else None
        engine = create_engine(config.worker_targets, plaintext=config.workers_plaintext,
                               root_certificates=worker_ca, metrics=EngineMetrics(metrics.registry))
    else:
        engine = create_engine(None, batch_window_s=config.verify_window_ms / 1000,
                               busy_cpu=config.verify_busy_cpu)
    stores: dict[str, object] = {}
    if config.store == "redis":
        stores = {
            "dialog_store": RedisDialogStore.from_url(config.redis_url),
            "replay_cache": RedisReplayCache.from_url(config.redis_url),
            "call_store": RedisCallStore.from_url(config.redis_url),
        }
    return Gateway(config, pkg=pkg, engine=engine, metrics=metrics, **stores)  # type: ignore[arg-type]


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: SIGTERM drains the whole gateway (see :func:`serve`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(config: GatewayConfig) -> None:
    """Run until SIGTERM/SIGINT, then drain (end calls, unregister users) and exit."""
    gateway = build_gateway(config)
    await gateway.start()
    host, port = split_hostport(config.http_listen, 8080)
    server = _ApiServer(uvicorn.Config(create_app(gateway), host=host, port=port, log_level="warning",
                                       lifespan="off"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    api = asyncio.create_task(server.serve())
    log.info("control API on http://%s:%d", host, port)
    await stop.wait()
    log.info("draining")
    server.should_exit = True
    await gateway.stop()
    await api
    for closer in ("aclose",):
        for store in (gateway.dialog_store, gateway.replay_cache, gateway.call_store):
            fn = getattr(store, closer, None)
            if fn is not None:
                with contextlib.suppress(Exception):
                    await fn()


def _print_config(config: GatewayConfig) -> None:
    for name, (var, default, text) in ENV.items():
        print(f"{var}={getattr(config, name)!s}  # default {default!r}: {text}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sipsec-gateway", description="sipsec UA gateway")
    parser.add_argument("command", choices=["serve", "config"], nargs="?", default="serve")
    args = parser.parse_args(argv)
    try:
        config = GatewayConfig.from_env()
    except ConfigError as exc:
        print(f"sipsec-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=os.environ.get("SIPSEC_LOG_LEVEL", config.log_level).upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "config":
        _print_config(config)
        return 0
    lifecycle.run(serve(config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
