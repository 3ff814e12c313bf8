"""Robustness: mutated bodies and arbitrary bytes only ever raise a RejectedEnvelope (never crash)."""

from __future__ import annotations

import asyncio
import os
import time

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sipsec.envelope import (
    MalformedEnvelope,
    RejectedEnvelope,
    SigningPolicy,
    cms,
    oids,
    open_message,
    seal,
)
from sipsec.sip import parse_message

from tests.unit.envelope.rfc3665 import ALICE, BOB, Party, Pki, ack, invite

_PKI = Pki.create()
_ALICE = Party(_PKI.keyring(ALICE))
_BOB = Party(_PKI.keyring(BOB))
_FIRST = seal(invite(), _ALICE.keys, BOB, SigningPolicy.EVERY_MESSAGE)
asyncio.run(_BOB.dialogs.put(_FIRST.dialog.reversed(), 3600, time.time()))
_LATER = seal(ack(), _ALICE.keys, _FIRST.dialog)
_COMPRESSED = cms.decrypt_content(
    cms.parse_auth_enveloped(_LATER.message.body),
    cms.kek_unwrap(cms.parse_auth_enveloped(_LATER.message.body).recipient,  # type: ignore[arg-type]
                   _FIRST.dialog.key),
)
_SIGNED = cms.parse_compressed_data(_COMPRESSED, primer=_FIRST.dialog.primer)[1]

mutations = st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
                     min_size=1, max_size=4)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, xor in edits:
        out[pos % len(out)] ^= xor
    return bytes(out)


def _open(body: bytes, template) -> None:
    outer = template.copy()
    outer.body = body
    party = Party(_BOB.keys, _BOB.dialogs)  # a fresh replay cache: every attempt is "new"
    asyncio.run(open_message(parse_message(outer.to_bytes()), party.keys, party.dialogs,
                             party.replay, now=time.time()))


@FUZZ
@given(edits=mutations)
def test_mutated_first_request_body_is_rejected_cleanly(edits: list[tuple[int, int]]) -> None:
    body = _mutate(_FIRST.message.body, edits)
    assume(body != _FIRST.message.body)  # two edits may cancel out
    try:
        _open(body, _FIRST.message)
    except RejectedEnvelope as exc:
        assert exc.status in (400, 403, 493)
    else:
        raise AssertionError("a mutated body opened")


@FUZZ
@given(edits=mutations)
def test_mutated_signed_data_inside_a_valid_encryption_is_rejected_cleanly(edits: list[tuple[int, int]]) -> None:
    # what only a dialog-key holder can send: valid GCM around a damaged SignedData
    content = _mutate(_SIGNED, edits)
    assume(content != _SIGNED)
    cek = os.urandom(32)
    body = cms.build_auth_enveloped(
        cms.kek_recipient_info(_FIRST.dialog.key_id, _FIRST.dialog.key, cek), oids.ID_SIGNED_DATA, content, cek)
    try:
        _open(body, _LATER.message)
    except RejectedEnvelope as exc:
        assert exc.status in (400, 403)
    else:
        raise AssertionError("a mutated SignedData opened")


@FUZZ
@given(edits=mutations)
def test_mutated_compressed_data_inside_a_valid_encryption_is_rejected_cleanly(edits: list[tuple[int, int]]) -> None:
    # a damaged CompressedData (framing or DEFLATE stream) under a valid dialog-key encryption
    content = _mutate(_COMPRESSED, edits)
    assume(content != _COMPRESSED)
    cek = os.urandom(32)
    body = cms.build_auth_enveloped(
        cms.kek_recipient_info(_FIRST.dialog.key_id, _FIRST.dialog.key, cek), oids.ID_CT_COMPRESSED_DATA,
        content, cek)
    try:
        _open(body, _LATER.message)
    except RejectedEnvelope as exc:
        assert exc.status in (400, 403)
    else:
        # Only one kind of mutation may open: one that leaves the inflated content exactly as
        # it was, i.e. the unused padding bits after deflate's final block (inflaters ignore
        # them). The signature inside still covers the content, so nothing else can change.
        primer = _FIRST.dialog.primer
        assert cms.parse_compressed_data(content, primer=primer) == cms.parse_compressed_data(
            _COMPRESSED, primer=primer), "a mutated CompressedData opened to different content"


@FUZZ
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_never_crash_the_parsers(data: bytes) -> None:
    for parse in (cms.parse_auth_enveloped, cms.parse_signed_data, cms.parse_signed_content_info,
                  cms.parse_compressed_data):
        try:
            parse(data)
        except MalformedEnvelope:
            pass
