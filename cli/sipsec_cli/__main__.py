"""The umbrella ``sipsec`` command: ``sipsec demo`` is the main job."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sipsec",
        description="End-to-end security for SIP signalling with identity-based cryptography.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="the secured two-domain call on embedded defaults (plus the crypto walk-through)")
    demo.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    demo.add_argument("--repeat", type=int, default=20, help="timed repetitions per operation (default 20)")
    up = sub.add_parser(
        "up", help="run the two-domain topology as local processes with Redis",
        description="Run the two-domain topology as local processes, a redis-server per domain. "
                    "A child that dies (a service or a Redis) is restarted with back-off (0.5 s doubling "
                    "to 10 s, reset after 30 s up) and logged on stderr; the others keep running. Each "
                    "Redis keeps an append-only file (appendfsync everysec) in the state directory: a "
                    "Redis restart loses at most about the last second of writes.")
    up.add_argument("--calls", type=int, default=0, metavar="N",
                    help="place N secured calls alice→bob through the gateways, print results, exit")
    up.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    up.add_argument("--redis", metavar="URL", default=None,
                    help="use this Redis (one database per domain, counting up from the URL's) "
                         "instead of starting one redis-server per domain (default: $SIPSEC_REDIS_URL)")
    up.add_argument("--state-dir", default=None,
                    help="keep key material, Redis data and logs here; started again on it, up reuses them and "
                         "the users its gateways had logged in are logged in again (default: a temporary "
                         "directory, removed on exit)")
    up.add_argument("--worker-processes", type=int, default=1, help="crypto-worker pool processes (default 1)")
    up.add_argument("--start-timeout", type=float, default=60.0, help="seconds for every service to be healthy")
    up.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL on stop")
    up.add_argument("--only", action="append", default=[], metavar="SERVICE",
                    help="start only these services (repeatable: worker, pkg, location, proxy, gateway)")
    from sipsec_cli.load import add_parser as add_load_parser

    add_load_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from sipsec_cli.demo import run_demo

        return run_demo(json_output=args.json, repeat=args.repeat)
    if args.command == "up":
        import os

        from sipsec_cli.up import UpOptions, run_up

        return run_up(UpOptions(
            calls=args.calls, json_output=args.json,
            redis_url=args.redis or os.environ.get("SIPSEC_REDIS_URL") or None,
            state_dir=args.state_dir, worker_processes=args.worker_processes,
            start_timeout_s=args.start_timeout, grace_s=args.grace, only=tuple(args.only),
        ))
    if args.command == "load":
        from sipsec_cli.load import main as load_main

        return load_main(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
