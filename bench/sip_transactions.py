"""Benchmark of the sans-IO SIP transaction layer (sipsec.sip.transaction / sipsec.sip.core).

``python bench/sip_transactions.py`` prints transactions (or calls) per CPU-second (process time,
so other load on the machine does not skew it);
``--json`` prints one JSON object. Three figures:

- ``client_txn_per_s``: a non-INVITE client transaction's life (send, 200, Timer K) on UDP,
  messages pre-parsed (the transaction layer alone, plus serialising the request once);
- ``server_txn_per_s``: an endpoint core receiving a parsed OPTIONS, the TU answering 200,
  Timer J ending the transaction (includes serialising the response);
- ``calls_per_s``: a whole RFC 3665 §3.1 call (INVITE/100/180/200/ACK/BYE/200) between two
  cores in memory, every message serialised and parsed.
"""

from __future__ import annotations

import argparse
import json
import time

from sipsec.sip.core import SipCore
from sipsec.sip.dialog import Dialog, make_dialog_response
from sipsec.sip.events import RequestReceived, ResponseReceived
from sipsec.sip.message import Request, Response, make_response
from sipsec.sip.parser import parse_message
from sipsec.sip.transaction import ClientTransaction


def _request(i: int, method: str) -> Request:
    msg = parse_message(
        (
            f"{method} sip:bob@biloxi.example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK{i:010d}\r\n"
            "Max-Forwards: 70\r\nTo: Bob <sip:bob@biloxi.example.com>\r\n"
            "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
            f"Call-ID: {i}-a84b4c76e66710@pc33.atlanta.example.com\r\nCSeq: 1 {method}\r\n"
            "Contact: <sip:alice@pc33.atlanta.example.com>\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(msg, Request)
    return msg


def bench_client(n: int) -> float:
    reqs = [_request(i, "OPTIONS") for i in range(n)]
    resps = [make_response(r, 200, to_tag="t") for r in reqs]
    t0 = time.process_time()
    for req, resp in zip(reqs, resps, strict=True):
        tx = ClientTransaction(req, False, 0.0)
        tx.datagrams_to_send()
        tx.receive_response(resp, 0.01)
        tx.handle_timer(10.0)
        while tx.next_event() is not None:
            pass
    return n / (time.process_time() - t0)


def bench_server(n: int) -> float:
    reqs = [_request(i, "OPTIONS") for i in range(n)]
    core = SipCore()
    t0 = time.process_time()
    for i, req in enumerate(reqs):
        now = i * 1e-4
        core.receive_message(req, "peer", now)
        ev = core.next_event()
        assert isinstance(ev, RequestReceived) and ev.transaction is not None
        core.send_response(ev.transaction, make_response(req, 200, to_tag="t"), now)
        core.datagrams_to_send()
    core.handle_timer(1e6)
    while core.next_event() is not None:
        pass
    elapsed = time.process_time() - t0
    assert len(core) == 0
    return n / elapsed


def bench_calls(n: int) -> float:
    alice, bob = SipCore(), SipCore()
    via = "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK"
    t0 = time.process_time()
    for i in range(n):
        now = i * 1e-3
        invite = _request(i, "INVITE")
        alice.send_request(invite, "bob", now)
        dialog: Dialog | None = None
        done = False
        while not done:
            done = True
            for data, _ in alice.datagrams_to_send():
                bob.receive_datagram(data, "alice", now)
                done = False
            while (ev := bob.next_event()) is not None:
                if isinstance(ev, RequestReceived) and ev.transaction is not None:
                    req = ev.request
                    if req.method == "INVITE":
                        ringing = make_dialog_response(req, 180, to_tag="b", contact=None)
                        bob.send_response(ev.transaction, ringing, now)
                        ok = make_dialog_response(req, 200, to_tag="b", contact="<sip:bob@h>")
                        bob.send_response(ev.transaction, ok, now)
                    elif req.method == "BYE":
                        bob.send_response(ev.transaction, make_response(req, 200), now)
            for data, _ in bob.datagrams_to_send():
                alice.receive_datagram(data, "bob", now)
                done = False
            while (ev := alice.next_event()) is not None:
                if isinstance(ev, ResponseReceived):
                    resp: Response = ev.response
                    if resp.cseq.method == "INVITE" and resp.status == 200:
                        dialog = Dialog.from_uac_response(invite, resp)
                        alice.send_request(dialog.create_ack(f"{via}a{i}"), "bob", now)
                        alice.send_request(dialog.create_request("BYE", f"{via}b{i}"), "bob", now)
                        done = False
    alice.handle_timer(1e6)
    bob.handle_timer(1e6)
    elapsed = time.process_time() - t0
    assert len(alice) == 0 and len(bob) == 0
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("-n", type=int, default=5000)
    args = parser.parse_args()
    figures = {
        "client_txn_per_s": round(bench_client(args.n)),
        "server_txn_per_s": round(bench_server(args.n)),
        "calls_per_s": round(bench_calls(max(args.n // 5, 1))),
    }
    if args.json:
        print(json.dumps(figures))
        return
    for name, value in figures.items():
        print(f"{name:20s} {value:>10,d}")


if __name__ == "__main__":
    main()
