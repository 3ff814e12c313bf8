"""Content compression: round trips, raw DEFLATE framing, the decompression bound, tampering, foreign
dictionaries and retired algorithms, and the policy switch."""

from __future__ import annotations

import zlib

import pytest
from sipsec.envelope import (
    Compression,
    DialogKey,
    MalformedEnvelope,
    SigningPolicy,
    cms,
    compression,
    oids,
    open_message,
    seal,
)
from sipsec.sip import parse_message

from tests.unit.envelope.rfc3665 import BOB, Party, ack, invite


def test_dictionary_is_pinned_and_generic() -> None:
    # the dictionary is wire format: editing it must come with a new OID
    assert compression.DICT_ID_V1 == zlib.adler32(compression.DICTIONARY_V1)
    assert compression.DICT_ID_V1 == 0xD734B396
    assert 1024 <= len(compression.DICTIONARY_V1) <= 32 * 1024
    for specific in (b"atlanta", b"biloxi", b"example.com", b"alice", b"bob@"):
        assert specific not in compression.DICTIONARY_V1


def test_round_trip_with_and_without_a_dialog_primer() -> None:
    message = cms.mime_wrap(invite().to_bytes())
    stream = compression.compress(message)
    assert len(stream) < len(message) // 2
    # raw DEFLATE (RFC 1951): an independent raw inflater with the dictionary reads it whole...
    inflater = zlib.decompressobj(wbits=-15, zdict=compression.DICTIONARY_V1)
    assert inflater.decompress(stream) == message and inflater.eof and not inflater.unused_data
    # ...and it is the zlib (RFC 1950) encoding without its 2-byte header, DICTID and Adler-32 trailer
    co = zlib.compressobj(level=9, wbits=15, memLevel=9, zdict=compression.DICTIONARY_V1)
    framed = co.compress(message) + co.flush()
    assert int.from_bytes(framed[2:6], "big") == compression.DICT_ID_V1
    assert framed[6:-4] == stream and len(framed) == len(stream) + 10
    assert compression.decompress(stream) == message
    primer = b"first request of the dialog " + message
    primed = compression.compress(message, primer)
    assert len(primed) < len(stream) // 3
    assert compression.decompress(primed, primer=primer) == message
    der = cms.build_compressed_data(oids.ID_SIGNED_DATA, message, primer)
    assert cms.parse_compressed_data(der, primer=primer) == (oids.ID_SIGNED_DATA, message)


def _never_the_content(stream: bytes, content: bytes, primer: bytes = b"") -> None:
    """Raw DEFLATE names no dictionary: decompressing with the wrong one must fail or give other bytes
    (which then fail the strict SignedData/MIME parse or the signature: test_tamper.py)."""
    try:
        out = compression.decompress(stream, primer=primer)
    except MalformedEnvelope as exc:
        assert (exc.status, exc.reason) == (400, "malformed-cms")
    else:
        assert out != content


def test_foreign_dictionaries_and_framings_never_yield_the_content() -> None:
    message = cms.mime_wrap(ack().to_bytes())
    primer = cms.mime_wrap(invite().to_bytes())  # what a dialog's first request shares with its ACK
    stream = compression.compress(message, primer)
    assert compression.decompress(stream, primer=primer) == message
    # a dictionary shifted by a byte either way, or none: the back-references miss
    for wrong in (primer + b"x", b"x" + primer, primer[:-1], b""):
        _never_the_content(stream, message, wrong)
    # a zlib (RFC 1950) stream — the retired v1 framing — with and without the dictionary,
    # and a raw stream made with a foreign dictionary
    co = zlib.compressobj(level=9, zdict=compression.DICTIONARY_V1)
    foreign_raw = zlib.compressobj(level=9, wbits=-15, zdict=message)
    for foreign in (zlib.compress(message), co.compress(message) + co.flush(),
                    foreign_raw.compress(message) + foreign_raw.flush()):
        _never_the_content(foreign, message)
    # the dialog variant needs the dialog's primer; the static one must not claim one
    der = cms.build_compressed_data(oids.ID_DATA, message, b"primer")
    with pytest.raises(MalformedEnvelope) as info:
        cms.parse_compressed_data(der)
    assert info.value.reason == "unsupported-algorithm"


def test_decompression_bomb_is_bounded() -> None:
    bomb = compression.compress(b"A" * (2 * compression.MAX_DECOMPRESSED_BYTES))
    assert len(bomb) < 1000
    with pytest.raises(MalformedEnvelope) as info:
        compression.decompress(bomb)
    assert (info.value.status, info.value.reason) == (400, "malformed-cms")
    der = cms.build_compressed_data(oids.ID_DATA, b"x" * 5000)
    with pytest.raises(MalformedEnvelope):
        cms.parse_compressed_data(der, limit=4999)
    assert cms.parse_compressed_data(der, limit=5000)[1] == b"x" * 5000


def test_tampered_compressed_data_is_rejected() -> None:
    message = cms.mime_wrap(invite().to_bytes())
    der = cms.build_compressed_data(oids.ID_DATA, message)
    stream = compression.compress(message)
    at = der.index(stream)
    # no checksum in raw DEFLATE (GCM and the signature check integrity): a flipped bit fails
    # to inflate or inflates to other bytes, never to the content (test_tamper.py: then 403)
    for index in (at + 2, at + len(stream) // 2, len(der) - 2):
        bad = der[:index] + bytes([der[index] ^ 0x04]) + der[index + 1 :]
        try:
            assert cms.parse_compressed_data(bad)[1] != message
        except MalformedEnvelope as exc:
            assert exc.reason == "malformed-cms"
    for bad in (der[:-1], der + b"\x00", der[: at + len(stream) - 5]):
        with pytest.raises(MalformedEnvelope):
            cms.parse_compressed_data(bad)
    # trailing bytes after the final block, and a stream cut before it (the DER re-framed)
    for bad_stream in (stream + b"\x00", stream[:-3]):
        with pytest.raises(MalformedEnvelope, match="trailing|truncated"):
            cms.parse_compressed_data(cms._compressed_data(oids.ID_SIPSEC_ALG_DEFLATE_SIPDICT_V2,
                                                           oids.ID_DATA, bad_stream))
    # an unknown compression algorithm (plain id-alg-zlibCompress is not what we write)
    plain_zlib = der.replace(cms.der.oid(oids.ID_SIPSEC_ALG_DEFLATE_SIPDICT_V2),
                             cms.der.oid("1.2.840.113549.1.9.16.3.8") + b"\x00" * 11)
    with pytest.raises(MalformedEnvelope):
        cms.parse_compressed_data(plain_zlib)


def test_retired_zlib_algorithms_are_not_read() -> None:
    """v1 (zlib framing, RFC 1950) is no longer written or read: every v1 sender also wrote the
    16-byte GCM tags that the envelope refuses, so no v1 body could reach the decompressor."""
    message = cms.mime_wrap(ack().to_bytes())
    co = zlib.compressobj(level=9, zdict=compression.DICTIONARY_V1)
    v1_stream = co.compress(message) + co.flush()
    for algorithm in (oids.ID_SIPSEC_ALG_ZLIB_SIPDICT_V1, oids.ID_SIPSEC_ALG_ZLIB_SIPDICT_DIALOG_V1):
        der = cms._compressed_data(algorithm, oids.ID_DATA, v1_stream)
        for primer in (b"", b"primer"):
            with pytest.raises(MalformedEnvelope) as info:
                cms.parse_compressed_data(der, primer=primer)
            assert (info.value.status, info.value.reason) == (400, "unsupported-algorithm")
    # what is written names the v2 algorithms
    assert cms.der.oid(oids.ID_SIPSEC_ALG_DEFLATE_SIPDICT_V2) in cms.build_compressed_data(oids.ID_DATA, message)
    assert cms.der.oid(oids.ID_SIPSEC_ALG_DEFLATE_SIPDICT_DIALOG_V2) in cms.build_compressed_data(
        oids.ID_DATA, message, b"primer")


async def test_policy_switch_and_receivers_open_both(alice: Party, bob: Party) -> None:
    compressed = seal(invite(), alice.keys, BOB)
    plain = seal(invite("other@atlanta.example.com"), alice.keys, BOB, compression=Compression.NONE)
    assert len(compressed.message.body) < len(plain.message.body) - 200
    assert cms.parse_auth_enveloped(compressed.message.body).content_type == oids.ID_CT_COMPRESSED_DATA
    assert cms.parse_auth_enveloped(plain.message.body).content_type == oids.ID_SIGNED_DATA
    for sealed in (compressed, plain):
        opened = await open_message(parse_message(sealed.message.to_bytes()), bob.keys, bob.dialogs, bob.replay)
        assert opened.first and opened.message.to_bytes().startswith(b"INVITE ")
        # both ends derived the same dialog dictionary from the first request
        assert opened.dialog.primer == sealed.dialog.primer and sealed.dialog.primer
    # later messages use the dialog dictionary and open on the other side
    later = seal(ack(), alice.keys, compressed.dialog, SigningPolicy.DIALOG_ESTABLISHING)
    opened = await open_message(parse_message(later.message.to_bytes()), bob.keys, bob.dialogs, bob.replay,
                                policy=SigningPolicy.DIALOG_ESTABLISHING)
    assert opened.message.to_bytes() == ack().to_bytes()


def test_dialog_record_keeps_the_primer() -> None:
    d = DialogKey(bytes(32), bytes(8), "c@x", "sip:a@x.example", "sip:b@y.example", True, 1.0, b"\x30primer")
    assert DialogKey.from_bytes(d.to_bytes()) == d
    assert b"primer" not in repr(d).encode()
    old = DialogKey(bytes(32), bytes(8), "c@x", "sip:a@x.example", "sip:b@y.example", True, 1.0)
    assert b'"f"' not in old.to_bytes() and DialogKey.from_bytes(old.to_bytes()).primer == b""
