"""``sipsec load``: thousands of concurrent secured call setups between random users, measured honestly.

Modules: :mod:`~sipsec_cli.load.target` (what is driven: the embedded topology, ``sipsec up``,
gateways by address), :mod:`~sipsec_cli.load.phone` (lean plain-SIP phones on the project's
sans-IO stack), :mod:`~sipsec_cli.load.profile` (constant, ramp, step, hold),
:mod:`~sipsec_cli.load.generator` (one generator; ``--procs`` runs several processes),
:mod:`~sipsec_cli.load.stats` (HDR histograms, timeline, thresholds),
:mod:`~sipsec_cli.load.report` (JSON, live table, HTML plots), :mod:`~sipsec_cli.load.sipp`
(``--emit-sipp``: the same population as SIPp scenarios and injection files).
See docs/load.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from sipsec_cli.load.profile import KINDS, Profile, ProfileError
from sipsec_cli.load.run import LoadOptions, emit_sipp, run_load
from sipsec_cli.load.stats import ThresholdError, parse_threshold
from sipsec_cli.load.target import LoadError, Target

__all__ = ["LoadOptions", "add_parser", "main", "run_load"]


def add_parser(sub: Any) -> None:
    """Register ``sipsec load`` on the umbrella command's subparsers."""
    p = sub.add_parser(
        "load", help="load-test: concurrent secured calls between random users, with a report",
        description="Drive a two-domain deployment with plain-SIP phones (N users per domain, random "
                    "caller/callee pairs across the domains) per a profile; live progress on stderr; "
                    "a JSON and an HTML report; thresholds set the exit status (0 all met, 1 one failed "
                    "or the run could not start, 2 usage).")
    t = p.add_argument_group("target (default: the embedded topology, started here)")
    t.add_argument("--up", action="store_true", help="start `sipsec up` (Redis, crypto-worker) and drive it")
    t.add_argument("--up-json", metavar="FILE", help="drive a running `sipsec up`: the JSON object its --json printed")
    t.add_argument("--gateway", action="append", default=[], metavar="DOMAIN=PHONE_HOST:PORT,API_URL,TOKEN_FILE[,SOURCE]",
                   help="drive these gateways (repeat per domain); users come from --users-file; SOURCE "
                        "(addresses joined with '+'): where this domain's phones bind, an address the gateway "
                        "reaches them at (default: 127.<100+d>.<g>.<k> loopback addresses)")
    t.add_argument("--workers", type=int, default=0, help="embedded: a crypto-worker pool of this many processes")
    pop = p.add_argument_group("population")
    pop.add_argument("--users", type=int, default=100, help="users per domain, provisioned in bulk (default 100)")
    pop.add_argument("--users-file", default="", help="existing users (aor:password lines) instead of provisioning")
    pop.add_argument("--one-pair", action="store_true", help="every call between the same two users (best case)")
    pop.add_argument("--users-per-address", type=int, default=8,
                     help="phones per loopback source address (gateways limit requests per address; default 8)")
    pr = p.add_argument_group("profile")
    pr.add_argument("--profile", choices=KINDS, default="constant")
    pr.add_argument("--rate", type=float, default=10.0, help="calls/s (hold: how fast calls are started)")
    pr.add_argument("--rate-to", type=float, default=0.0, help="ramp/step: the final rate")
    pr.add_argument("--step", type=float, default=0.0, help="step: calls/s added each --step-s")
    pr.add_argument("--step-s", type=float, default=5.0)
    pr.add_argument("--duration", type=float, default=10.0, help="seconds of offered load (default 10)")
    pr.add_argument("--concurrent", type=int, default=0, help="hold: calls held at once")
    pr.add_argument("--hold", type=float, default=0.0, help="seconds each call is held before BYE (default 0)")
    pr.add_argument("--timeout", type=float, default=32.0, help="seconds for any final response (default 32)")
    pr.add_argument("--max-in-flight", type=int, default=10_000)
    pr.add_argument("--procs", type=int, default=1, help="generator processes (default 1)")
    pr.add_argument("--seed", type=int, default=0)
    out = p.add_argument_group("output")
    out.add_argument("--threshold", action="append", default=[], metavar="EXPR",
                     help="e.g. 'p95<50ms', 'failed<0.5%%', 'achieved>=45/s' (repeatable; sets the exit status)")
    out.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    out.add_argument("--report", metavar="DIR", help="write report.json and report.html here")
    out.add_argument("--no-live", action="store_true", help="no live table on stderr")
    out.add_argument("--emit-sipp", metavar="DIR",
                     help="provision and log in the population on the target, write SIPp scenarios and "
                          "injection CSVs for it into DIR, and exit (no calls; the target must keep running: "
                          "--up-json or --gateway)")


def _profile(args: argparse.Namespace) -> Profile:
    return Profile(args.profile, args.rate, args.duration, args.rate_to, args.step, args.step_s, args.concurrent,
                   args.hold)


def main(args: argparse.Namespace) -> int:
    """Run ``sipsec load`` from parsed arguments; the exit status."""
    try:
        options = LoadOptions(_profile(args), args.users, args.procs,
                              tuple(parse_threshold(t) for t in args.threshold), args.timeout, args.max_in_flight,
                              args.users_per_address, args.seed, not args.no_live and not args.json, args.one_pair,
                              True, args.users_file)
    except (ProfileError, ThresholdError) as exc:
        print(f"sipsec load: {exc}", file=sys.stderr)
        return 2
    if args.users < 1 or args.procs < 1 or args.users_per_address < 1:
        print("sipsec load: --users, --procs and --users-per-address must be at least 1", file=sys.stderr)
        return 2
    if args.emit_sipp and not (args.up_json or args.gateway):
        print("sipsec load: --emit-sipp needs a target that outlives the command (--up-json or --gateway)",
              file=sys.stderr)
        return 2
    if sum(bool(x) for x in (args.up, args.up_json, args.gateway)) > 1:
        print("sipsec load: give one target: --up, --up-json or --gateway", file=sys.stderr)
        return 2
    try:
        summary = asyncio.run(_run(args, options))
    except (LoadError, OSError) as exc:
        print(f"sipsec load: {exc}", file=sys.stderr)
        return 1
    if args.emit_sipp:
        for path in summary["emitted"]:
            print(path)
        return 0
    if args.report:
        from sipsec_cli.load.report import write_html, write_json

        directory = Path(args.report)
        directory.mkdir(parents=True, exist_ok=True)
        write_json(summary, directory / "report.json")
        write_html(summary, directory / "report.html")
    if args.json:
        print(json.dumps(summary))
    else:
        _print_summary(summary)
    return 0 if summary["ok"] else 1


async def _run(args: argparse.Namespace, options: LoadOptions) -> dict[str, Any]:
    from sipsec_cli.load import target as targets

    up_run = None
    target: Target
    if args.up:
        up_run = await asyncio.to_thread(targets.start_up)
        target = targets.from_up(up_run.ready)
    elif args.up_json:
        target = targets.from_up(json.loads(Path(args.up_json).read_text(encoding="utf-8")))
    elif args.gateway:
        if not args.users_file:
            raise LoadError("--gateway needs --users-file (users already in the deployment's PKGs)")
        target = targets.from_addresses(args.gateway)
    else:
        target = await targets.embedded(args.workers)
    try:
        if args.emit_sipp:
            return await emit_sipp(target, options, Path(args.emit_sipp))
        return await run_load(target, options)
    finally:
        if target.close is not None:
            await target.close()
        if up_run is not None:
            await asyncio.to_thread(targets.stop_up, up_run)


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sipsec load: {summary['target']}, {summary['pairs']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("users_per_domain", "offered", "started", "completed", "failed", "offered_cps", "achieved_cps",
                "concurrent_calls_held"):
        table.add_row(key, str(summary[key]))
    for q, v in summary["setup_ms"].items():
        table.add_row(f"setup {q} (ms)", "-" if v is None else f"{v:.1f}")
    for reason, count in summary["failures"].items():
        table.add_row(f"failed: {reason}", str(count))
    for label, kib in summary["rss_kib_per_held_call"].items():
        table.add_row(f"RSS per held call, {label} (KiB)", f"{kib:.1f}")
    for v in summary["thresholds"]:
        table.add_row(f"threshold {v['threshold']}", f"{v['value']} {'ok' if v['ok'] else 'FAILED'}")
    Console(file=sys.stdout, width=120).print(table)
