"""Benchmark: the SIP grammar in linear time on pathological inputs (no regex backtracking).

Long inputs shaped against each grammar regex (Via labels and params, display names,
quotes, URI labels, lists, tel separators, Call-ID, a Request-URI without ``@``) are
parsed, their lazy views read, and each is timed against a limit far above a linear
parse (a few milliseconds): a backtracking regex takes seconds. The test suite checks the
same inputs for their outcome without a clock (``tests/unit/sip/test_fuzz.py``).

``python bench/sip_redos.py [--json]``: exit status 1 when an input is over its limit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from sipsec.sip import RemoteProtocolError, parse_message, parse_uri

#: name -> one header line (or a broken start line) built to make a backtracking regex blow up
PATHOLOGICAL: dict[str, bytes] = {
    "via-labels": b"Via: SIP/2.0/UDP " + b"a." * 3000 + b"1",
    "via-label-dashes": b"Via: SIP/2.0/UDP " + b"a-" * 3000 + b"!",
    "via-params": b"Via: SIP/2.0/UDP h" + b";a" * 3000 + b"=",
    "display-tokens": b"From: " + b"a " * 3000 + b"!",
    "unterminated-quote": b'From: "' + b'\\"' * 3000,
    "uri-labels": b"To: <sip:" + b"a." * 3000 + b"1>",
    "contact-list": b"Contact: " + b"<sip:a@b>," * 600 + b"!",
    "name-addr-params": b"To: <sip:a@b>" + b";a=b" * 1500 + b"!",
    "tel-separators": b"To: <tel:+" + b"1-" * 3000 + b"x>",
    "commas": b"Supported: " + b"," * 6000,
    "call-id": b"Call-ID: " + b"a@" * 3000,
    "ruri-user": b"X: 1\r\nOPTIONS sip:" + b"a;" * 3000,
}
#: a SIP URI whose userinfo alternative must not backtrack quadratically
LONG_URI = "sip:" + "a;" * 4000 + "b\x00"
MESSAGE_LIMIT_S = 0.25
URI_LIMIT_S = 0.5


def message(name: str) -> bytes:
    """The whole message carrying ``PATHOLOGICAL[name]``."""
    return (
        b"OPTIONS sip:a@b.example.com SIP/2.0\r\n" + PATHOLOGICAL[name]
        + b"\r\nContent-Length: 0\r\n\r\n"
    )


def outcome(data: bytes) -> str:
    """Parse ``data`` and read its lazy views: "ok" or the RemoteProtocolError reason."""
    try:
        msg = parse_message(data)
        for view in ("via", "contact", "route", "record_route", "from_", "to", "call_id", "cseq"):
            try:
                getattr(msg, view)
            except RemoteProtocolError:
                pass
        msg.headers.get_all("Supported")
        msg.to_bytes()
    except RemoteProtocolError as exc:
        return exc.reason
    return "ok"


def uri_outcome(text: str) -> str:
    try:
        parse_uri(text)
    except RemoteProtocolError as exc:
        return exc.reason
    return "ok"


def run() -> dict[str, float]:
    """Seconds per input (the slowest of three runs each)."""
    times: dict[str, float] = {}
    for name in sorted(PATHOLOGICAL):
        data = message(name)
        worst = 0.0
        for _ in range(3):
            start = time.perf_counter()
            outcome(data)
            worst = max(worst, time.perf_counter() - start)
        times[name] = worst
    start = time.perf_counter()
    uri_outcome(LONG_URI)
    times["long-uri-without-at"] = time.perf_counter() - start
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    times = run()
    over = sorted(
        name for name, t in times.items()
        if t >= (URI_LIMIT_S if name == "long-uri-without-at" else MESSAGE_LIMIT_S)
    )
    if args.json:
        print(json.dumps({"seconds": {k: round(v, 5) for k, v in times.items()},
                          "message_limit_s": MESSAGE_LIMIT_S, "uri_limit_s": URI_LIMIT_S,
                          "over_limit": over}))
    else:
        for name, t in times.items():
            print(f"{name:24} {t * 1000:8.2f} ms")
        print("over the limit: " + (", ".join(over) if over else "none"))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
