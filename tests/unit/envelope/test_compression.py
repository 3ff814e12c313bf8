"""Content compression: round trips, the decompression bound, tampering, dictionary ids, and the policy switch."""

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
    assert stream[1] & 0x20 and int.from_bytes(stream[2:6], "big") == compression.DICT_ID_V1  # FDICT, DICTID
    assert compression.decompress(stream) == message
    primer = b"first request of the dialog " + message
    primed = compression.compress(message, primer)
    assert len(primed) < len(stream) // 3
    assert compression.decompress(primed, primer=primer) == message
    der = cms.build_compressed_data(oids.ID_SIGNED_DATA, message, primer)
    assert cms.parse_compressed_data(der, primer=primer) == (oids.ID_SIGNED_DATA, message)


def test_dictionary_id_mismatch_is_rejected() -> None:
    message = cms.mime_wrap(ack().to_bytes())
    with pytest.raises(MalformedEnvelope) as info:
        compression.decompress(compression.compress(message, b"primer A"), primer=b"primer B")
    assert (info.value.status, info.value.reason) == (400, "malformed-cms")
    # a plain zlib stream (no preset dictionary) and one with a foreign dictionary
    for foreign in (zlib.compress(message), _zlib_with(message, b"another dictionary")):
        with pytest.raises(MalformedEnvelope):
            compression.decompress(foreign)
    # the dialog variant needs the dialog's primer; the static one must not claim one
    der = cms.build_compressed_data(oids.ID_DATA, message, b"primer")
    with pytest.raises(MalformedEnvelope) as info:
        cms.parse_compressed_data(der)
    assert info.value.reason == "unsupported-algorithm"


def _zlib_with(data: bytes, zdict: bytes) -> bytes:
    co = zlib.compressobj(zdict=zdict)
    return co.compress(data) + co.flush()


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
    for index in (at + 8, at + len(stream) // 2, len(der) - 2):  # deflate data, Adler-32 trailer
        bad = der[:index] + bytes([der[index] ^ 0x04]) + der[index + 1 :]
        with pytest.raises(MalformedEnvelope):
            cms.parse_compressed_data(bad)
    for bad in (der[:-1], der + b"\x00", der[: at + len(stream) - 5]):
        with pytest.raises(MalformedEnvelope):
            cms.parse_compressed_data(bad)
    # an unknown compression algorithm (plain id-alg-zlibCompress is not what we write)
    plain_zlib = der.replace(cms.der.oid(oids.ID_SIPSEC_ALG_ZLIB_SIPDICT_V1),
                             cms.der.oid("1.2.840.113549.1.9.16.3.8") + b"\x00" * 11)
    with pytest.raises(MalformedEnvelope):
        cms.parse_compressed_data(plain_zlib)


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
