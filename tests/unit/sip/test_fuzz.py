"""Time-bounded mutation fuzzing: only RemoteProtocolError escapes, nothing hangs (h11 style).

Seeds: the RFC 4475/5118 vectors in tests/vectors plus, at test time, the pjproject and
Kamailio seed messages in /work/shared/conformance/fuzz-seeds (GPL data: read there, never
copied into this project) and the libFuzzer ``sip.dict`` tokens (Apache-2.0).
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest
from sipsec.sip import (
    RemoteProtocolError,
    Request,
    Response,
    StreamFramer,
    parse_message,
    parse_name_addr_list,
    parse_uri,
)

VECTORS = Path(__file__).resolve().parents[2] / "vectors"
SHARED_SEEDS = Path("/work/shared/conformance/fuzz-seeds")
BUDGET_S = 12.0  # whole-module budget; each case gets its share
MAX_ONE_PARSE_S = 0.5  # anything slower counts as a hang

EXTRA_TOKENS = [
    b"\r\n", b"\r\n ", b"\n", b"\r", b":", b";", b",", b"<", b">", b'"', b"\\", b"%", b"%00",
    b"[", b"]", b"@", b"=", b"?", b" ", b"\t", b"\x00", b"\xff", b"99999999999999999999",
    b"-1", b"Content-Length: 5\r\n", b"l: 0\r\n", b"Via: SIP/2.0/UDP [::1]\r\n",
    b"\r\n\r\n", b"SIP/2.0", b"sip:", b"sips:", b"tel:", b"z9hG4bK", b";branch=", b";tag=",
]


def _seed_files() -> list[Path]:
    files = [p for p in (VECTORS / "rfc4475").glob("*.dat")]
    files += [p for p in (VECTORS / "rfc5118").iterdir() if p.suffix not in (".txt", ".md")]
    if SHARED_SEEDS.is_dir():
        files += [
            p for p in SHARED_SEEDS.rglob("*")
            if p.is_file() and p.name not in ("README.md", "SHA256SUMS.txt", "sip.dict")
        ]
    return sorted(files)


def _dict_tokens() -> list[bytes]:
    path = SHARED_SEEDS / "sip.dict"
    out = list(EXTRA_TOKENS)
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            m = re.fullmatch(r'\s*(?:\w+=)?"(.*)"\s*', line)
            if m:
                raw = m.group(1).encode("latin-1", "replace")
                out.append(raw.decode("unicode_escape").encode("latin-1", "replace"))
    return out


SEEDS = [p.read_bytes() for p in _seed_files()]
TOKENS = _dict_tokens()


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randint(0, len(buf)) if buf else 0
        if op == 0 and buf:  # bit flip
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # random byte
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 2:  # truncation
            del buf[pos:]
        elif op == 3:  # dictionary token insertion
            buf[pos:pos] = rng.choice(TOKENS)
        elif op == 4 and buf:  # delete a range
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == 5 and buf:  # duplicate a chunk
            chunk = buf[pos : pos + rng.randint(1, 64)]
            buf[pos:pos] = chunk
        else:  # splice another seed's tail
            other = rng.choice(SEEDS)
            buf[pos:] = other[rng.randint(0, len(other)) :]
    return bytes(buf)


def _exercise(msg: Request | Response) -> None:
    """Touch the lazy views and re-serialise: still only RemoteProtocolError may come out."""
    for view in ("via", "contact", "route", "record_route", "from_", "to", "call_id", "cseq"):
        try:
            getattr(msg, view)
        except RemoteProtocolError:
            pass
    data = msg.to_bytes()
    again = parse_message(data)  # what we serialise must parse again, with the same meaning
    assert again == msg, data[:200]


def test_seed_corpus_is_present() -> None:
    assert len(SEEDS) >= 62 and len(TOKENS) > len(EXTRA_TOKENS)


@pytest.mark.slow
def test_parse_message_mutations() -> None:
    rng = random.Random(4475)
    deadline = time.monotonic() + BUDGET_S * 0.6
    count = accepted = 0
    while time.monotonic() < deadline:
        data = mutate(rng, rng.choice(SEEDS))
        start = time.monotonic()
        try:
            msg = parse_message(data)
        except RemoteProtocolError as exc:
            assert exc.reason and 400 <= exc.status_hint <= 599
            # "unparseable" is the safety net for internal errors: the fuzzer must never hit it
            assert exc.reason != "unparseable", data[:200]
        else:
            accepted += 1
            _exercise(msg)
        elapsed = time.monotonic() - start
        assert elapsed < MAX_ONE_PARSE_S, (elapsed, data[:200])
        count += 1
    assert count > 500 and accepted > 20, (count, accepted)


@pytest.mark.slow
def test_stream_framer_mutations() -> None:
    rng = random.Random(5118)
    deadline = time.monotonic() + BUDGET_S * 0.25
    count = 0
    while time.monotonic() < deadline:
        stream = b"".join(mutate(rng, rng.choice(SEEDS)) for _ in range(rng.randint(1, 3)))
        framer = StreamFramer()
        start = time.monotonic()
        try:
            pos = 0
            while pos < len(stream):
                step = rng.randint(1, 512)
                for msg in framer.feed(stream[pos : pos + step]):
                    msg.to_bytes()
                pos += step
        except RemoteProtocolError as exc:
            assert exc.reason != "unparseable", stream[:200]
        assert time.monotonic() - start < MAX_ONE_PARSE_S * 4
        count += 1
    assert count > 100


@pytest.mark.slow
def test_uri_and_name_addr_mutations() -> None:
    rng = random.Random(3261)
    texts = []
    for seed in SEEDS:
        texts += re.findall(rb"(?:sips?|tel|[a-z]+):[^\s>]{1,120}", seed)
    assert texts
    deadline = time.monotonic() + BUDGET_S * 0.15
    while time.monotonic() < deadline:
        raw = mutate(rng, rng.choice(texts)).decode("utf-8", "surrogateescape")
        start = time.monotonic()
        for parse in (parse_uri, parse_name_addr_list):
            try:
                parsed = parse(raw)
            except RemoteProtocolError:
                continue
            if parse is parse_uri:
                assert parse_uri(str(parsed)) == parsed
        assert time.monotonic() - start < MAX_ONE_PARSE_S


PATHOLOGICAL = {
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


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_inputs_do_not_backtrack(name: str) -> None:
    """Long inputs built against each grammar regex parse (or fail) in linear time."""
    data = (
        b"OPTIONS sip:a@b.example.com SIP/2.0\r\n" + PATHOLOGICAL[name]
        + b"\r\nContent-Length: 0\r\n\r\n"
    )
    start = time.perf_counter()
    try:
        msg = parse_message(data)
        _exercise(msg)
        msg.headers.get_all("Supported")
    except RemoteProtocolError as exc:
        assert exc.reason != "unparseable"
    assert time.perf_counter() - start < 0.25
