"""Datagram and stream framing (RFC 3261 §18.3, §7.5; RFC 5626 keep-alives)."""

from __future__ import annotations

import pytest
from sipsec.sip import (
    Limits,
    LocalProtocolError,
    RemoteProtocolError,
    Request,
    Response,
    StreamFramer,
    is_keepalive,
    parse_datagram,
)


def message(n: int, body: bytes = b"") -> bytes:
    return (
        f"MESSAGE sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP a.example.com;branch=z9hG4bK{n}\r\n"
        f"From: <sip:alice@example.com>;tag=a{n}\r\nTo: <sip:bob@example.com>\r\n"
        f"Call-ID: c{n}\r\nCSeq: {n} MESSAGE\r\nMax-Forwards: 70\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


STREAM = message(1, b"hello") + b"\r\n\r\n" + message(2) + message(3, b"x" * 300)


def cseqs(msgs: list[Request | Response]) -> list[int]:
    return [m.cseq.seq for m in msgs]


def test_several_messages_in_one_read() -> None:
    msgs = StreamFramer().feed(STREAM)
    assert cseqs(msgs) == [1, 2, 3]
    assert [m.body for m in msgs] == [b"hello", b"", b"x" * 300]
    assert b"".join(m.to_bytes() for m in msgs) == STREAM.replace(b"hello\r\n\r\n", b"hello")


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1000])
def test_any_chunking_gives_the_same_messages(size: int) -> None:
    framer = StreamFramer()
    out: list[Request | Response] = []
    for i in range(0, len(STREAM), size):
        out.extend(framer.feed(STREAM[i : i + size]))
    assert cseqs(out) == [1, 2, 3]
    assert out[2].body == b"x" * 300
    assert framer.buffered == 0


def test_partial_body_waits() -> None:
    framer = StreamFramer()
    data = message(7, b"0123456789")
    assert framer.feed(data[:-4]) == []
    assert framer.buffered == len(data) - 4
    (m,) = framer.feed(data[-4:])
    assert m.body == b"0123456789" and m.to_bytes() == data


def test_keepalives_are_ignored() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [] and framer.feed(b"\r\n") == []
    assert cseqs(framer.feed(b"\r\n" + message(4))) == [4]
    assert is_keepalive(b"\r\n\r\n") and is_keepalive(b"\r\n") and not is_keepalive(message(1))


def test_stream_requires_content_length() -> None:
    framer = StreamFramer()
    with pytest.raises(RemoteProtocolError) as info:
        framer.feed(message(1).replace(b"Content-Length: 0\r\n", b""))
    assert (info.value.reason, info.value.status_hint) == ("missing-content-length", 400)
    # the stream is broken for good
    with pytest.raises(RemoteProtocolError):
        framer.feed(message(2))
    assert framer.error is not None


def test_good_messages_before_an_error_are_delivered() -> None:
    framer = StreamFramer()
    msgs = framer.feed(message(1) + b"GARBAGE\r\n\r\n")
    assert cseqs(msgs) == [1]
    with pytest.raises(RemoteProtocolError) as info:
        framer.feed(b"")
    assert info.value.reason == "bad-request-line"


@pytest.mark.parametrize(
    ("limits", "data", "reason"),
    [
        (Limits(max_message_bytes=200), message(1, b"y" * 300), "message-too-large"),
        (Limits(max_message_bytes=100), b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"z" * 200,
         "message-too-large"),
        (Limits(max_line=50), b"OPTIONS sip:a@b SIP/2.0" + b"z" * 100, "line-too-long"),
        (Limits(max_headers=3), message(1), "too-many-headers"),
        (Limits(max_line=60), message(1).replace(b"Call-ID: c1", b"Call-ID: " + b"c" * 80),
         "line-too-long"),
    ],
)
def test_stream_limits(limits: Limits, data: bytes, reason: str) -> None:
    framer = StreamFramer(limits)
    with pytest.raises(RemoteProtocolError) as info:
        for i in range(0, len(data), 16):
            framer.feed(data[i : i + 16])
    assert (info.value.reason, info.value.status_hint) == (reason, 513)


def test_huge_content_length_is_refused_before_buffering() -> None:
    framer = StreamFramer()
    with pytest.raises(RemoteProtocolError) as info:
        framer.feed(message(1).replace(b"Content-Length: 0", b"Content-Length: 99999999"))
    assert info.value.reason == "message-too-large"


def test_datagram() -> None:
    m = parse_datagram(message(9, b"abc") + b"\r\n")
    assert m.body == b"abc" and m.defects == ["trailing-bytes"]
    with pytest.raises(RemoteProtocolError):
        parse_datagram(message(9, b"abc")[:-1])
    with pytest.raises(RemoteProtocolError) as info:
        parse_datagram(b"x" * 70000)
    assert info.value.status_hint == 513
    with pytest.raises(LocalProtocolError):
        StreamFramer().feed("text")  # type: ignore[arg-type]
