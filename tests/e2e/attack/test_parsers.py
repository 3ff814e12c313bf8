"""The attack instruments' own parsing (no processes): svwar's output and the MD5-first relay."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[3]


def _scan() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_scan", ROOT / "bench" / "scan.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_scan"] = module
    spec.loader.exec_module(module)
    return module


scan = _scan()


def _tag(ext: str) -> str:
    return (ext.encode() + b"\x01" + b"12345").hex()


def test_svwar_output_gives_its_claims_and_each_names_answers() -> None:
    out = "\n".join([
        "('127.0.0.2', 5060)",
        repr(f"SIP/2.0 404 Not Found\r\nFrom: \"1\"<sip:1@a>;tag={_tag('3371')}\r\n\r\n".encode()),
        "('127.0.0.2', 5060)",
        repr(f"SIP/2.0 401 Unauthorized\r\nFrom: \"alice\"<sip:alice@a>;tag={_tag('alice')}\r\n\r\n".encode()),
        repr(f"SIP/2.0 404 Not Found\r\nf: <sip:carol@a>;tag={_tag('carol')}\r\n\r\n".encode()),
        "+-----------+----------------+",
        "| Extension | Authentication |",
        "+===========+================+",
        "| alice     | reqauth        |",
        "+-----------+----------------+",
    ])
    claims, answers = scan.parse_svwar(out)
    assert claims == {"alice": "reqauth"}
    assert answers == {"3371": ["404 Not Found"], "alice": ["401 Unauthorized"], "carol": ["404 Not Found"]}


def test_the_relay_puts_the_md5_challenge_first_and_changes_nothing_else() -> None:
    sha = b'WWW-Authenticate: Digest realm="a", nonce="n1", algorithm=SHA-256, qop="auth"'
    md5 = b'WWW-Authenticate: Digest realm="a", nonce="n2", algorithm=MD5, qop="auth"'
    head = [b"SIP/2.0 401 Unauthorized", b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx", sha, md5,
            b"Content-Length: 0"]
    out = scan.md5_first(b"\r\n".join(head) + b"\r\n\r\n")
    assert out == b"\r\n".join([head[0], head[1], md5, sha, head[4]]) + b"\r\n\r\n"
    only = b"\r\n".join([head[0], sha, head[4]]) + b"\r\n\r\n"
    assert scan.md5_first(only) == only


def _request(branch: str, auth: bool) -> bytes:
    lines = ["REGISTER sip:atlanta.com SIP/2.0", f"Via: SIP/2.0/UDP 127.0.0.161:5060;branch={branch};rport",
             "From: <sip:alice@atlanta.com>;tag=1", "To: <sip:alice@atlanta.com>", f"Call-ID: {branch}",
             "CSeq: 1 REGISTER"]
    if auth:
        lines.append('Authorization: Digest username="alice", realm="atlanta.com", response="x"')
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def test_the_relay_classifies_each_guess_by_its_answer() -> None:
    """Through a real relay on loopback: a target that challenges, accepts, refuses, answers
    late and stays silent; the client sees every answer, the summary counts each guess once."""
    import socket
    import time

    answers = {"b-unauth": (401, 0.0), "b-wrong": (401, 0.0), "b-right": (200, 0.0), "b-403": (403, 0.0),
               "b-503": (503, 0.0), "b-late": (401, 1.2), "b-silent": (None, 0.0)}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as target, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        target.bind(("127.0.0.1", 0))
        target.settimeout(5)
        with scan.CrackRelay("127.0.0.161", "127.0.0.160", target.getsockname()) as relay:
            client.bind(("127.0.0.160", relay.port))
            client.settimeout(5)
            for branch, (status, delay) in answers.items():
                client.sendto(_request(branch, branch != "b-unauth"), ("127.0.0.161", relay.port))
                data, via = target.recvfrom(65535)
                assert f"branch={branch};".encode() in data and via == ("127.0.0.161", relay.port)
                if status is None:
                    continue
                time.sleep(delay)
                target.sendto(f"SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 127.0.0.161:{relay.port};branch={branch}"
                              f"\r\nContent-Length: 0\r\n\r\n".encode(), via)
                assert client.recv(65535).startswith(f"SIP/2.0 {status} ".encode())
            time.sleep(0.2)
            summary = relay.summary()
    assert summary["guesses_sent"] == 6 and summary["unauthenticated_requests"] == 1
    assert summary["unauthenticated_answers"] == {"401": 1}
    assert (summary["challenged"], summary["accepted"]) == (1, 1)
    assert summary["throttled"] == 4
    assert summary["throttled_by"] == {"refused": {"403": 1, "503": 1}, "slow_challenge": 1, "unanswered": 1}
