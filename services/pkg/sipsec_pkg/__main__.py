"""``sipsec-pkg``: initialise a domain, manage users, and serve the PKG (config from the environment)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import os
import sys
from collections.abc import Sequence

from sipsec import lifecycle
from sipsec.lifecycle import stop_on_signals

from sipsec_pkg.config import ConfigError, PkgConfig, parse_peers
from sipsec_pkg.material import MaterialError

__all__ = ["build_parser", "main"]

log = logging.getLogger("sipsec.pkg")

_ENV_HELP = "Configuration comes from SIPSEC_PKG_* environment variables (see services/pkg/README.md); flags override them."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sipsec-pkg",
        description="Private Key Generator of one sipsec provider domain. " + _ENV_HELP,
    )
    parser.add_argument("--data-dir", help="domain key material directory (SIPSEC_PKG_DATA_DIR)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve KeyGeneratorService over gRPC", description="Serve the PKG. " + _ENV_HELP)
    serve.add_argument("--listen", help="gRPC address host:port (SIPSEC_PKG_LISTEN)")
    serve.add_argument("--node", type=int, help="threshold share index 1..n; 0 = whole master secret (SIPSEC_PKG_NODE)")
    serve.add_argument("--store", choices=["memory", "redis"], help="state store (SIPSEC_PKG_STORE)")
    serve.add_argument("--redis-url", help="Redis URL (SIPSEC_REDIS_URL)")
    serve.add_argument("--plaintext", action="store_true", default=None, help="no TLS, local use only (SIPSEC_PKG_PLAINTEXT)")
    serve.add_argument("--tls-cert", help="server certificate chain PEM (SIPSEC_PKG_TLS_CERT)")
    serve.add_argument("--tls-key", help="server private key PEM (SIPSEC_PKG_TLS_KEY)")
    serve.add_argument("--tls-client-ca", help="require client certificates from this CA (SIPSEC_PKG_TLS_CLIENT_CA)")
    serve.add_argument("--idle-timeout-s", type=float, help="session idle timeout (SIPSEC_PKG_IDLE_TIMEOUT_S)")
    serve.add_argument("--peers", help="federation peers domain,endpoint,fingerprint;... (SIPSEC_PKG_PEERS)")
    serve.add_argument("--audit-log", help="audit JSON-lines file, '-' for stdout (SIPSEC_PKG_AUDIT_LOG)")
    serve.add_argument("--metrics-port", type=int, help="Prometheus port, -1 to disable (SIPSEC_PKG_METRICS_PORT)")

    init = sub.add_parser("init", help="create a domain: master secret (or shares), signed parameters",
                          description="Create a domain in the data directory, sealed under the KEK "
                                      "(SIPSEC_PKG_KEK or SIPSEC_PKG_KEK_FILE). Prints the federation fingerprint.")
    init.add_argument("--domain", help="the provider domain, e.g. atlanta.com (SIPSEC_PKG_DOMAIN)")
    init.add_argument("--threshold", type=int, default=1, help="shares needed to extract a key (default 1)")
    init.add_argument("--nodes", type=int, default=1, help="number of PKG nodes / shares (default 1)")
    init.add_argument("--period-length-s", type=int, default=30 * 86400, help="key period length (default 30 days)")
    init.add_argument("--force", action="store_true", help="overwrite an existing domain")

    user = sub.add_parser("user", help="provision users (add, remove, list)", description="Manage PKG users. " + _ENV_HELP)
    user.add_argument("--store", choices=["memory", "redis"], help="state store (SIPSEC_PKG_STORE); memory uses <data-dir>/users.json")
    user.add_argument("--redis-url", help="Redis URL (SIPSEC_REDIS_URL)")
    user.set_defaults(user_help=user.print_help)
    usub = user.add_subparsers(dest="user_command", metavar="ACTION")
    add = usub.add_parser("add", help="add a user or set a new password", description="Add a user; the password is read "
                          "from stdin with --password-stdin, else prompted for.")
    add.add_argument("aor", help="the user's AOR, e.g. sip:alice@atlanta.com")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    rm = usub.add_parser("remove", help="remove a user", description="Remove a user; its sessions stop working.")
    rm.add_argument("aor")
    usub.add_parser("list", help="list users", description="List the users' AORs.")

    sub.add_parser("gen-kek", help="print a new random key-encryption key (base64)",
                   description="Print a new 32-byte KEK, base64, for SIPSEC_PKG_KEK or a Kubernetes Secret.")
    sub.add_parser("fingerprint", help="print the domain's federation key fingerprint",
                   description="Print the sha256 fingerprint peers pin in SIPSEC_PKG_PEERS.")
    return parser


def _config(args: argparse.Namespace) -> PkgConfig:
    overrides = {
        "data_dir": args.data_dir,
        "listen": getattr(args, "listen", None),
        "node": getattr(args, "node", None),
        "store": getattr(args, "store", None),
        "redis_url": getattr(args, "redis_url", None),
        "plaintext": getattr(args, "plaintext", None),
        "tls_cert": getattr(args, "tls_cert", None),
        "tls_key": getattr(args, "tls_key", None),
        "tls_client_ca": getattr(args, "tls_client_ca", None),
        "idle_timeout_s": getattr(args, "idle_timeout_s", None),
        "audit_log": getattr(args, "audit_log", None),
    }
    if getattr(args, "peers", None) is not None:
        overrides["peers"] = parse_peers(args.peers)
    metrics_port = getattr(args, "metrics_port", None)
    config = PkgConfig.from_env().with_overrides(**overrides)
    if metrics_port is not None:
        from dataclasses import replace

        config = replace(config, metrics_port=None if metrics_port < 0 else metrics_port)
    return config


async def _serve(config: PkgConfig) -> int:
    from sipsec_pkg.node import PkgNode

    node = PkgNode(config)
    stop = stop_on_signals()
    await node.start()
    print(f"sipsec-pkg: {node.domain} node {node.material.node_index} listening on port {node.port}"
          + (f", metrics on port {node.metrics_port}" if node.metrics_port else ""), file=sys.stderr, flush=True)
    await stop.wait()
    log.info("stopping: draining for up to %.1f s", config.shutdown_grace_s)
    await node.stop()
    return 0


def _init(args: argparse.Namespace, config: PkgConfig) -> int:
    from sipsec.ibc import PeriodPolicy

    from sipsec_pkg.material import init_domain, load_kek, write_domain

    domain = (args.domain or config.domain).strip().lower()
    if not domain:
        raise SystemExit("sipsec-pkg init: --domain (or SIPSEC_PKG_DOMAIN) is required")
    kek = load_kek(config.kek, config.kek_file)
    init = init_domain(domain, threshold=args.threshold, nodes=args.nodes,
                       policy=PeriodPolicy(length_s=args.period_length_s))
    written = write_domain(init, config.data_dir, kek, force=args.force)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    print(json.dumps({"domain": domain, "threshold": args.threshold, "nodes": args.nodes,
                      "fingerprint": init.signed.fingerprint}))
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise SystemExit("sipsec-pkg user add: passwords differ")
    return first


async def _user(args: argparse.Namespace, config: PkgConfig) -> int:
    from dataclasses import asdict

    from sipsec.ibc import IbcError, canonical_aor
    from sipsec.stores.pkg import MemoryPkgStore, RedisPkgStore, UserRecord

    from sipsec_pkg.clock import system_clock
    from sipsec_pkg.material import load_signed_params
    from sipsec_pkg.node import load_users_file, users_file
    from sipsec_pkg.passwords import hash_password

    domain = load_signed_params(config.data_dir).domain
    path = users_file(config.data_dir)
    store: MemoryPkgStore | RedisPkgStore
    if config.store == "memory":
        store = MemoryPkgStore(users=load_users_file(path))
    else:
        store = RedisPkgStore(config.redis_url, domain)
    try:
        if args.user_command == "list":
            for aor in await store.list_users():
                print(aor)
            return 0
        try:
            aor = str(canonical_aor(args.aor))
        except IbcError:
            raise SystemExit(f"sipsec-pkg user: {args.aor!r} is not a SIP AOR") from None
        if aor.rsplit("@", 1)[-1] != domain:
            raise SystemExit(f"sipsec-pkg user: {aor} is not in this PKG's domain {domain}")
        if args.user_command == "add":
            password = _read_password(args)
            if not password:
                raise SystemExit("sipsec-pkg user add: empty password")
            encoded = await asyncio.to_thread(hash_password, password, config.scrypt)
            await store.put_user(UserRecord(aor, encoded, system_clock()))
            print(f"added {aor}", file=sys.stderr)
        elif not await store.delete_user(aor):
            raise SystemExit(f"sipsec-pkg user remove: no user {aor}")
        else:
            print(f"removed {aor}", file=sys.stderr)
        if isinstance(store, MemoryPkgStore):
            users = [asdict(u) for aor_ in await store.list_users() if (u := await store.get_user(aor_))]
            tmp = path.with_name(path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({"users": users}, fh, indent=1)
            os.replace(tmp, path)
        return 0
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "gen-kek":
        from sipsec_pkg.material import generate_kek

        print(generate_kek())
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "user" and args.user_command is None:
        args.user_help()
        return 2
    try:
        config = _config(args)
        logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if args.command == "serve":
            return lifecycle.run(_serve(config))
        if args.command == "init":
            return _init(args, config)
        if args.command == "user":
            return lifecycle.run(_user(args, config))
        if args.command == "fingerprint":
            from sipsec_pkg.material import load_signed_params

            print(load_signed_params(config.data_dir).fingerprint)
            return 0
    except (ConfigError, MaterialError, OSError) as exc:
        print(f"sipsec-pkg: {exc}", file=sys.stderr)
        return 1
    parser.print_help()
    return 2


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
