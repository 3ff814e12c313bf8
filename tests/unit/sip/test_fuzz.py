"""Mutation fuzzing: only RemoteProtocolError escapes, nothing hangs (h11 style).

No clock is read here: a hang is caught by each test's timeout, and the linear-time
check of the pathological inputs is timed by ``bench/sip_redos.py`` (same corpus).

Seeds, all in this repository (``tests/vectors``, provenance in each folder's README): the
RFC 4475/5118 torture messages, this project's own seed messages (``sip-seeds/``, written
from RFC 3261's examples by ``sip-seeds/generate.py``) and the libFuzzer ``sip.dict`` tokens
(Apache-2.0). Each case draws a fixed number of inputs from a fixed random seed, so every
machine fuzzes with the same inputs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
import re
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
SEEDS_DIR = VECTORS / "sip-seeds"
#: inputs per case (a few seconds on one core); fixed, so every run fuzzes with the same inputs
PARSE_INPUTS, STREAM_INPUTS, URI_INPUTS = 100_000, 30_000, 60_000
HANG_GUARD_S = 120  # per fuzz test: a parse that hangs fails the test instead of the run

EXTRA_TOKENS = [
    b"\r\n", b"\r\n ", b"\n", b"\r", b":", b";", b",", b"<", b">", b'"', b"\\", b"%", b"%00",
    b"[", b"]", b"@", b"=", b"?", b" ", b"\t", b"\x00", b"\xff", b"99999999999999999999",
    b"-1", b"Content-Length: 5\r\n", b"l: 0\r\n", b"Via: SIP/2.0/UDP [::1]\r\n",
    b"\r\n\r\n", b"SIP/2.0", b"sip:", b"sips:", b"tel:", b"z9hG4bK", b";branch=", b";tag=",
]


def _seed_files() -> list[Path]:
    files = [p for p in (VECTORS / "rfc4475").glob("*.dat")]
    files += [p for p in (VECTORS / "rfc5118").iterdir() if p.suffix not in (".txt", ".md")]
    files += SEEDS_DIR.glob("*.sip")
    return sorted(files)


def _dict_tokens() -> list[bytes]:
    out = list(EXTRA_TOKENS)
    for line in (SEEDS_DIR / "sip.dict").read_text(encoding="utf-8").splitlines():
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
    sums = dict(line.split("  ./")[::-1] for line in (SEEDS_DIR / "SHA256SUMS.txt").read_text().splitlines())
    assert set(sums) == {p.name for p in SEEDS_DIR.glob("*.sip")} | {"sip.dict"}
    for name, digest in sums.items():
        assert hashlib.sha256((SEEDS_DIR / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.slow
@pytest.mark.timeout(HANG_GUARD_S)
def test_parse_message_mutations() -> None:
    rng = random.Random(4475)
    count = accepted = 0
    for _ in range(PARSE_INPUTS):
        data = mutate(rng, rng.choice(SEEDS))
        try:
            msg = parse_message(data)
        except RemoteProtocolError as exc:
            assert exc.reason and 400 <= exc.status_hint <= 599
            # "unparseable" is the safety net for internal errors: the fuzzer must never hit it
            assert exc.reason != "unparseable", data[:200]
        else:
            accepted += 1
            _exercise(msg)
        count += 1
    assert count > 500 and accepted > 20, (count, accepted)


@pytest.mark.slow
@pytest.mark.timeout(HANG_GUARD_S)
def test_stream_framer_mutations() -> None:
    rng = random.Random(5118)
    count = 0
    for _ in range(STREAM_INPUTS):
        stream = b"".join(mutate(rng, rng.choice(SEEDS)) for _ in range(rng.randint(1, 3)))
        framer = StreamFramer()
        try:
            pos = 0
            while pos < len(stream):
                step = rng.randint(1, 512)
                for msg in framer.feed(stream[pos : pos + step]):
                    msg.to_bytes()
                pos += step
        except RemoteProtocolError as exc:
            assert exc.reason != "unparseable", stream[:200]
        count += 1
    assert count > 100


@pytest.mark.slow
@pytest.mark.timeout(HANG_GUARD_S)
def test_uri_and_name_addr_mutations() -> None:
    rng = random.Random(3261)
    texts = []
    for seed in SEEDS:
        texts += re.findall(rb"(?:sips?|tel|[a-z]+):[^\s>]{1,120}", seed)
    assert texts
    for _ in range(URI_INPUTS):
        raw = mutate(rng, rng.choice(texts)).decode("utf-8", "surrogateescape")
        for parse in (parse_uri, parse_name_addr_list):
            try:
                parsed = parse(raw)
            except RemoteProtocolError:
                continue
            if parse is parse_uri:
                assert parse_uri(str(parsed)) == parsed


def _redos_bench():  # type: ignore[no-untyped-def]
    path = Path(__file__).resolve().parents[3] / "bench" / "sip_redos.py"
    spec = importlib.util.spec_from_file_location("sip_redos_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REDOS = _redos_bench()
PATHOLOGICAL: dict[str, bytes] = REDOS.PATHOLOGICAL


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_inputs_parse_or_fail_with_a_reason(name: str) -> None:
    """Long inputs built against each grammar regex parse or fail by name (their time:
    ``bench/sip_redos.py``; a backtracking regex trips this test's timeout)."""
    data = REDOS.message(name)
    assert PATHOLOGICAL[name] in data
    assert REDOS.outcome(data) != "unparseable"
    try:
        msg = parse_message(data)
        _exercise(msg)
        msg.headers.get_all("Supported")
    except RemoteProtocolError as exc:
        assert exc.reason != "unparseable"
