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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sipsec import cli, lifecycle
from sipsec.cli import (
    Command,
    config_from_args,
    configure_from,
    serve_command,
    serve_until_signalled,
)

from sipsec_pkg.config import PkgConfig
from sipsec_pkg.material import MaterialError

__all__ = ["build_parser", "main"]

log = logging.getLogger("sipsec.pkg")

_ENV_HELP = ("Configuration comes from SIPSEC_PKG_* environment variables (see services/pkg/README.md); "
             "flags override them.")
DESCRIPTION = "Private Key Generator of one sipsec provider domain. " + _ENV_HELP


def _global_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=argparse.SUPPRESS,
                        help="domain key material directory (SIPSEC_PKG_DATA_DIR)")


def _init_arguments(init: argparse.ArgumentParser) -> None:
    init.add_argument("--domain", default=argparse.SUPPRESS,
                      help="the provider domain, e.g. atlanta.com (SIPSEC_PKG_DOMAIN)")
    init.add_argument("--threshold", type=int, default=1, help="shares needed to extract a key (default 1)")
    init.add_argument("--nodes", type=int, default=1, help="number of PKG nodes / shares (default 1)")
    init.add_argument("--period-length-s", type=int, default=30 * 86400, help="key period length (default 30 days)")
    init.add_argument("--force", action="store_true", help="overwrite an existing domain")


def _user_arguments(user: argparse.ArgumentParser) -> None:
    user.add_argument("--store", choices=["memory", "redis"], default=argparse.SUPPRESS,
                      help="state store (SIPSEC_PKG_STORE); memory uses <data-dir>/users.json")
    user.add_argument("--redis-url", default=argparse.SUPPRESS, help="Redis URL (SIPSEC_REDIS_URL)")


def _add_arguments(add: argparse.ArgumentParser) -> None:
    add.add_argument("aor", help="the user's AOR, e.g. sip:alice@atlanta.com")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", default="-",
                        help="lines 'aor:password' (the AOR ends at the first ':' after its '@'; "
                             "'#' comments and blank lines skipped); '-' or none: stdin")


def _aor_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("aor")


def _commands() -> list[Command]:
    def with_config(run: Callable[[argparse.Namespace, PkgConfig], int]) -> Callable[[argparse.Namespace], int]:
        def command(args: argparse.Namespace) -> int:
            config = config_from_args(PkgConfig, args)
            _logging(config)
            return run(args, config)
        return command

    def user(args: argparse.Namespace, config: PkgConfig) -> int:
        return lifecycle.run(_user(args, config))

    user_run = with_config(user)
    return [
        serve_command(PkgConfig, _run_serve, help="serve KeyGeneratorService over gRPC",
                      description="Serve the PKG. " + _ENV_HELP),
        Command("init", "create a domain: master secret (or shares), signed parameters", with_config(_init),
                _init_arguments, "Create a domain in the data directory, sealed under the KEK "
                                 "(SIPSEC_PKG_KEK or SIPSEC_PKG_KEK_FILE). Prints the federation fingerprint."),
        Command("user", "provision users (add, remove, list)", None, _user_arguments,
                "Manage PKG users. " + _ENV_HELP, commands=(
                    Command("add", "add a user or set a new password", user_run, _add_arguments,
                            "Add a user; the password is read from stdin with --password-stdin, else prompted for."),
                    Command("remove", "remove a user", user_run, _aor_argument,
                            "Remove a user; its sessions stop working."),
                    Command("list", "list users", user_run, None, "List the users' AORs."),
                    Command("import", "add many users at once (aor:password lines)", user_run, _import_arguments,
                            "Add or update users in bulk from a file or stdin, one 'aor:password' line each; "
                            "every line is checked before any user is written. Prints the count."),
                )),
        Command("gen-kek", "print a new random key-encryption key (base64)", _gen_kek, None,
                "Print a new 32-byte KEK, base64, for SIPSEC_PKG_KEK or a Kubernetes Secret."),
        Command("fingerprint", "print the domain's federation key fingerprint", with_config(_fingerprint), None,
                "Print the sha256 fingerprint peers pin in SIPSEC_PKG_PEERS."),
    ]


def build_parser() -> argparse.ArgumentParser:
    """The ``sipsec-pkg`` parser (the shape every service shares, :mod:`sipsec.cli`)."""
    return cli.build_parser("sipsec-pkg", DESCRIPTION, _commands(), _global_arguments)


def _logging(config: PkgConfig) -> None:
    configure_from(config, "pkg", config.domain)


def _run_serve(config: PkgConfig) -> int:
    _logging(config)
    return lifecycle.run(_serve(config))


def _gen_kek(args: argparse.Namespace) -> int:
    from sipsec_pkg.material import generate_kek

    print(generate_kek())
    return 0


def _fingerprint(args: argparse.Namespace, config: PkgConfig) -> int:
    from sipsec_pkg.material import load_signed_params

    print(load_signed_params(config.data_dir).fingerprint)
    return 0


async def _serve(config: PkgConfig) -> int:
    from sipsec_pkg.node import PkgNode

    node = PkgNode(config)
    configure_from(config, "pkg", node.domain)

    async def start() -> str:
        await node.start()
        return (f"sipsec-pkg: {node.domain} node {node.material.node_index} listening on port {node.port}"
                + (f", metrics on port {node.metrics_port}" if node.metrics_port else ""))

    async def drain() -> None:
        log.info("draining for up to %.1f s", config.drain_seconds)
        await node.stop()

    await serve_until_signalled(start, drain, logger="sipsec.pkg", out=sys.stderr)
    return 0


def _init(args: argparse.Namespace, config: PkgConfig) -> int:
    from sipsec.ibc import PeriodPolicy

    from sipsec_pkg.material import init_domain, load_kek, write_domain

    domain = config.domain.strip().lower()
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
    from sipsec.ibc import IbcError, canonical_aor
    from sipsec.stores.pkg import MemoryPkgStore, RedisPkgStore, UserRecord

    from sipsec_pkg.clock import system_clock
    from sipsec_pkg.material import load_signed_params
    from sipsec_pkg.node import load_users_file, users_file
    from sipsec_pkg.passwords import hash_password
    from sipsec_pkg.service import new_epoch

    domain = load_signed_params(config.data_dir).domain
    path = users_file(config.data_dir)
    store: MemoryPkgStore | RedisPkgStore
    if config.store == "memory":
        store = MemoryPkgStore(users=load_users_file(path))
    else:
        store = RedisPkgStore(config.redis_url, domain, password_file=config.redis_password_file,
                              ca_file=config.redis_ca)
    try:
        if args._command.name == "list":
            for aor in await store.list_users():
                print(aor)
            return 0
        if args._command.name == "import":
            await _import_users(args.file, domain, store, config)
            await _save_memory_store(store, path)
            return 0
        try:
            aor = str(canonical_aor(args.aor))
        except IbcError:
            raise SystemExit(f"sipsec-pkg user: {args.aor!r} is not a SIP AOR") from None
        if aor.rsplit("@", 1)[-1] != domain:
            raise SystemExit(f"sipsec-pkg user: {aor} is not in this PKG's domain {domain}")
        if args._command.name == "add":
            password = _read_password(args)
            if not password:
                raise SystemExit("sipsec-pkg user add: empty password")
            encoded = await asyncio.to_thread(hash_password, password, config.scrypt)
            await store.put_user(UserRecord(aor, encoded, system_clock(), new_epoch()))  # ends old sessions
            print(f"added {aor}", file=sys.stderr)
        elif not await store.delete_user(aor):
            raise SystemExit(f"sipsec-pkg user remove: no user {aor}")
        else:
            print(f"removed {aor}", file=sys.stderr)
        await _save_memory_store(store, path)
        return 0
    finally:
        await store.close()


async def _save_memory_store(store: Any, path: Path) -> None:
    """Write a memory store's users back to its file (0600, atomically); a Redis store needs nothing."""
    from dataclasses import asdict

    from sipsec.stores.pkg import MemoryPkgStore

    if not isinstance(store, MemoryPkgStore):
        return
    users = [asdict(u) for aor_ in await store.list_users() if (u := await store.get_user(aor_))]
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"users": users}, fh, indent=1)
    os.replace(tmp, path)


def parse_user_lines(text: str, domain: str) -> list[tuple[str, str]]:
    """``(canonical AOR, password)`` pairs from ``aor:password`` lines (the AOR ends at the first
    ``:`` after its ``@``); raises SystemExit naming the first bad line (no AOR of ``domain``,
    empty password, a duplicate)."""
    from sipsec.ibc import IbcError, canonical_aor

    pairs: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        at = line.find("@")
        colon = line.find(":", at) if at >= 0 else -1
        if colon < 0:
            raise SystemExit(f"sipsec-pkg user import: line {number}: expected 'aor:password'")
        name = line[:colon].strip()
        try:
            aor = str(canonical_aor(name if ":" in name[:at] else "sip:" + name))
        except IbcError:
            raise SystemExit(f"sipsec-pkg user import: line {number}: not a SIP AOR") from None
        password = line[colon + 1:]
        if aor.rsplit("@", 1)[-1] != domain:
            raise SystemExit(f"sipsec-pkg user import: line {number}: {aor} is not in this PKG's domain {domain}")
        if not password:
            raise SystemExit(f"sipsec-pkg user import: line {number}: empty password")
        if aor in pairs:
            raise SystemExit(f"sipsec-pkg user import: line {number}: {aor} appears twice")
        pairs[aor] = password
    return list(pairs.items())


async def _import_users(source: str, domain: str, store: Any, config: PkgConfig) -> None:
    """Hash every password (scrypt on a thread pool as wide as the machine) and write the users."""
    from concurrent.futures import ThreadPoolExecutor

    from sipsec.stores.pkg import UserRecord

    from sipsec_pkg.clock import system_clock
    from sipsec_pkg.passwords import hash_password
    from sipsec_pkg.service import new_epoch

    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    pairs = parse_user_lines(text, domain)
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        hashes = await asyncio.gather(*(loop.run_in_executor(pool, hash_password, pw, config.scrypt)
                                        for _, pw in pairs))
    for (aor, _), encoded in zip(pairs, hashes, strict=True):
        await store.put_user(UserRecord(aor, encoded, system_clock(), new_epoch()))  # ends old sessions
    print(f"imported {len(pairs)} users", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """``sipsec-pkg COMMAND [flags]``: 0 done, 2 usage, 1 configuration or runtime error (one line)."""
    return cli.service_main("sipsec-pkg", DESCRIPTION, _commands(), argv, arguments=_global_arguments,
                            errors=(MaterialError, OSError))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
