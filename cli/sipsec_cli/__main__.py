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
    demo = sub.add_parser("demo", help="run the walk-through on embedded defaults")
    demo.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    demo.add_argument("--repeat", type=int, default=20, help="timed repetitions per operation (default 20)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from sipsec_cli.demo import run_demo

        return run_demo(json_output=args.json, repeat=args.repeat)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
