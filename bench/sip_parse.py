"""Benchmark: parse + serialise a realistic SIP call mix on one core (bar: 20,000/s).

The mix is the seven messages of a basic call (RFC 3665 §3.1 shape); every call of the run
has its own Call-ID, tags and branches (``--calls`` distinct calls, cycled), as real traffic
does, so the parser's header caches only help where real traffic repeats itself (the same
To/From URIs, Contact, Max-Forwards ...), not by seeing the very same message again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from sipsec.sip import parse_message

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.101\r\n"
    b"t=0 0\r\n"
    b"m=audio 49172 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=sendrecv\r\n"
)

_VIA2 = (
    "Via: SIP/2.0/UDP proxy.atlanta.example.com:5060;branch=z9hG4bK2d4790.1;received=192.0.2.5\r\n"
    "Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport=5060;"
    "received=192.0.2.101\r\n"
)
_COMMON = (
    'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
)


def _msg(start: str, headers: str, body: bytes = b"") -> bytes:
    return (
        f"{start}\r\n{headers}Content-Length: {len(body)}\r\n\r\n".encode() + body
    )


MIX: list[bytes] = [
    _msg(
        "INVITE sip:bob@biloxi.example.com SIP/2.0",
        "Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
        "Max-Forwards: 70\r\n"
        "To: Bob <sip:bob@biloxi.example.com>\r\n" + _COMMON + "CSeq: 314159 INVITE\r\n"
        "Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
        "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE\r\n"
        "Supported: replaces, timer\r\n"
        "User-Agent: sipsec-bench/1.0\r\n"
        "Content-Type: application/sdp\r\n",
        SDP,
    ),
    _msg(
        "SIP/2.0 100 Trying",
        _VIA2 + "To: Bob <sip:bob@biloxi.example.com>\r\n" + _COMMON + "CSeq: 314159 INVITE\r\n",
    ),
    _msg(
        "SIP/2.0 180 Ringing",
        _VIA2 + "To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n" + _COMMON
        + "CSeq: 314159 INVITE\r\nContact: <sip:bob@192.0.2.4>\r\n",
    ),
    _msg(
        "SIP/2.0 200 OK",
        _VIA2 + "To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n" + _COMMON
        + "CSeq: 314159 INVITE\r\nContact: <sip:bob@192.0.2.4>\r\n"
        "Record-Route: <sip:proxy.atlanta.example.com;lr>\r\n"
        "Content-Type: application/sdp\r\n",
        SDP.replace(b"alice", b"bob").replace(b"192.0.2.101", b"192.0.2.4"),
    ),
    _msg(
        "ACK sip:bob@192.0.2.4 SIP/2.0",
        "Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bKnashds9\r\n"
        "Max-Forwards: 70\r\nRoute: <sip:proxy.atlanta.example.com;lr>\r\n"
        "To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n" + _COMMON + "CSeq: 314159 ACK\r\n",
    ),
    _msg(
        "BYE sip:alice@pc33.atlanta.example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKnashds10\r\n"
        "Max-Forwards: 70\r\nRoute: <sip:proxy.atlanta.example.com;lr>\r\n"
        "From: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
        "To: \"Alice\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\nCSeq: 231 BYE\r\n",
    ),
    _msg(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKnashds10;received=192.0.2.4\r\n"
        "From: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
        "To: \"Alice\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\nCSeq: 231 BYE\r\n",
    ),
]


#: The bar for parse + serialise on one core, messages per CPU-second.
BAR = 20_000

#: The per-call values of MIX, replaced by fresh ones in each call of the run.
_PER_CALL = (b"a84b4c76e66710", b"1928301774", b"a6c85cf", b"776asdhds", b"2d4790.1", b"nashds9", b"nashds10")


def calls(n: int) -> list[bytes]:
    """The messages of ``n`` calls of MIX, each call with its own Call-ID, tags and branches."""
    out = []
    for i in range(n):
        for data in MIX:
            for j, value in enumerate(_PER_CALL):
                data = data.replace(value, b"%s%dx%d" % (value[:4], i, j))
            out.append(data)
    return out


def run(seconds: float, n_calls: int = 2000) -> tuple[float, float]:
    """Parse + serialise ``n_calls`` distinct calls of the mix, cycled, for about ``seconds``.

    Returns (messages per CPU-second of this process, messages per wall-clock second): on a
    shared machine the first is the one-core figure, the second also counts time spent
    waiting for the CPU.
    """
    messages = calls(n_calls)
    for data in messages[: len(MIX)]:  # sanity: every message round-trips
        if parse_message(data).to_bytes() != data:
            raise SystemExit("round trip failed")
    count = 0
    cpu0 = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for data in messages:
            parse_message(data).to_bytes()
            count += 1
            if count % 500 == 0 and time.perf_counter() >= deadline:
                break
        else:
            continue
        break
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    return count / cpu, count / wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--calls", type=int, default=2000, help="distinct calls of the mix, cycled (default 2000)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--check", action="store_true",
                    help=f"exit 1 when the CPU-time rate is under the bar ({BAR:,} messages/s)")
    args = ap.parse_args(argv)
    rate, wall_rate = run(args.seconds, args.calls)
    if args.json:
        print(json.dumps({
            "messages_per_s": round(rate),
            "wall_messages_per_s": round(wall_rate),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "mix": len(MIX),
            "distinct_calls": args.calls,
            "bar": BAR,
            "meets_bar": rate >= BAR,
        }))
    else:
        print(f"{rate:,.0f} messages/s per CPU-second ({wall_rate:,.0f}/s wall clock), "
              f"parse + serialise on one core (bar {BAR:,})")
    return 1 if args.check and rate < BAR else 0


if __name__ == "__main__":
    sys.exit(main())
