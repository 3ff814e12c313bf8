"""Verification that fails cheaply: replays and re-sent failures are refused before any pairing,
and no forged copy can burn a genuine message's replay token."""

from __future__ import annotations

import asyncio
import time

import pytest
from sipsec import ibc
from sipsec.engine import InProcessEngine
from sipsec.envelope import Forbidden, Keyring, RejectedEnvelope, open_message, seal
from sipsec.envelope.opening import body_tokens
from sipsec.sip import Request, Response, parse_message
from sipsec.stores.envelope import InMemoryReplayCache

from tests.unit.envelope.rfc3665 import ALICE, BOB, Party, Pki, ack, invite


class CountingEngine(InProcessEngine):
    """The in-process engine, counting the pairing operations it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.decapsulations = 0
        self.verifications = 0

    async def decapsulate(self, key: ibc.PrivateKey, ciphertext: bytes) -> bytes:
        self.decapsulations += 1
        return await super().decapsulate(key, ciphertext)

    async def verify(self, params: ibc.DomainParams, identity: ibc.Identity, message: bytes,
                     signature: bytes) -> None:
        self.verifications += 1
        await super().verify(params, identity, message, signature)


def _forger(pki: Pki) -> Keyring:
    """Alice's name with a key of the forger's own PKG: a valid KEM to Bob, a signature that fails."""
    master, params = ibc.setup("atlanta.example.com")
    period = pki.atlanta.policy.current(pki.now)
    sig = ibc.extract(master, params, params.identity(ALICE, ibc.Purpose.SIG, period))
    return Keyring.create(ALICE, sig_keys=[sig], enc_keys=[], domains=[pki.atlanta, pki.biloxi])


def _copy(message: Request | Response) -> Request | Response:
    return parse_message(message.to_bytes())


async def _refused(outer: Request | Response, bob: Party, engine: CountingEngine, now: float) -> RejectedEnvelope:
    with pytest.raises(RejectedEnvelope) as info:
        await open_message(outer, bob.keys, bob.dialogs, bob.replay, now=now, engine=engine)
    return info.value


async def test_replayed_invite_is_refused_before_the_decapsulation(pki: Pki, alice: Party, bob: Party) -> None:
    engine, now = CountingEngine(), time.time()
    first = seal(invite("cheap-1@a"), alice.keys, BOB, now=now)
    await open_message(_copy(first.message), bob.keys, bob.dialogs, bob.replay, now=now, engine=engine)
    assert (engine.decapsulations, engine.verifications) == (1, 1)
    for _ in range(3):  # a captured INVITE sent again: no pairing at all
        exc = await _refused(_copy(first.message), bob, engine, now + 1)
        assert isinstance(exc, Forbidden) and exc.reason == "replay" and exc.status == 403
    assert (engine.decapsulations, engine.verifications) == (1, 1)


async def test_replayed_dialog_message_is_refused_before_the_signature_check(alice: Party, bob: Party) -> None:
    engine, now = CountingEngine(), time.time()
    first = seal(invite("cheap-2@a"), alice.keys, BOB, now=now)
    await open_message(first.message, bob.keys, bob.dialogs, bob.replay, now=now, engine=engine)
    later = seal(ack("cheap-2@a"), alice.keys, first.dialog, now=now)
    await open_message(_copy(later.message), bob.keys, bob.dialogs, bob.replay, now=now, engine=engine)
    assert engine.verifications == 2
    assert (await _refused(_copy(later.message), bob, engine, now)).reason == "replay"
    assert engine.verifications == 2


async def test_a_forgery_pays_its_pairings_once_then_is_refused_for_free(pki: Pki, bob: Party) -> None:
    engine, now = CountingEngine(), time.time()
    forged = seal(invite("cheap-3@a"), _forger(pki), BOB, now=now).message
    assert (await _refused(_copy(forged), bob, engine, now)).reason == "bad-signature"
    assert (engine.decapsulations, engine.verifications) == (1, 1)
    for _ in range(3):  # the same forged bytes again: refused before the decapsulation
        exc = await _refused(_copy(forged), bob, engine, now + 1)
        assert exc.reason == "failed-before" and exc.status == 403
    assert (engine.decapsulations, engine.verifications) == (1, 1)
    # what was recorded is the failure, never the body as opened
    opened_token, failed_token = body_tokens(bytes(forged.body))
    assert await bob.replay.seen((opened_token,), now) is None
    assert await bob.replay.seen((failed_token,), now) == failed_token


async def test_forged_copies_cannot_burn_the_genuine_message(alice: Party, bob: Party) -> None:
    engine, now = CountingEngine(), time.time()
    genuine = seal(invite("cheap-4@a"), alice.keys, BOB, now=now).message
    assert isinstance(genuine, Request)
    # 1. the same body under altered outer headers (a path attacker racing the genuine one)
    moved = _copy(genuine)
    assert isinstance(moved, Request)
    moved.headers.set("CSeq", "2 INVITE")
    assert (await _refused(moved, bob, engine, now)).reason == "outer-mismatch"
    # 2. a flipped ciphertext byte (a decapsulation paid, the body recorded as failed)
    body = bytearray(genuine.body)
    body[-80] ^= 1  # inside the encrypted content (authAttrs and mac are the last 48 bytes)
    flipped = _copy(genuine)
    flipped.body = bytes(body)
    assert (await _refused(flipped, bob, engine, now)).reason == "decrypt-failed"
    assert (await _refused(_copy(flipped), bob, engine, now)).reason == "failed-before"
    # the genuine INVITE still opens, once
    opened = await open_message(_copy(genuine), bob.keys, bob.dialogs, bob.replay, now=now, engine=engine)
    assert opened.first and opened.signer is not None
    assert (await _refused(_copy(genuine), bob, engine, now)).reason == "replay"


async def test_of_two_concurrent_copies_exactly_one_opens(alice: Party, bob: Party) -> None:
    now = time.time()
    first = seal(invite("cheap-5@a"), alice.keys, BOB, now=now).message
    outcomes = await asyncio.gather(
        *(open_message(_copy(first), bob.keys, bob.dialogs, bob.replay, now=now, engine=InProcessEngine())
          for _ in range(2)),
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(refused) == 1 and isinstance(refused[0], Forbidden) and refused[0].reason == "replay"


async def test_records_expire_with_the_window(alice: Party, bob: Party) -> None:
    now = time.time()
    first = seal(invite("cheap-6@a"), alice.keys, BOB, now=now).message
    await open_message(_copy(first), bob.keys, bob.dialogs, bob.replay, now=now, window_s=300)
    opened_token, _ = body_tokens(bytes(first.body))
    assert await bob.replay.seen((opened_token,), now + 599) == opened_token
    assert await bob.replay.seen((opened_token,), now + 600) is None  # 2 x window, then the signing time is stale
    assert (await _refused(_copy(first), bob, CountingEngine(), now + 600)).reason == "stale"


async def test_in_memory_replay_cache_seen_and_remember_all() -> None:
    cache = InMemoryReplayCache()
    assert await cache.seen((b"a", b"b"), now=0) is None
    assert await cache.remember_all((b"a", b"b"), 10, now=0)
    assert await cache.seen((b"x", b"b"), now=5) == b"b"
    assert not await cache.remember_all((b"c", b"a"), 10, now=5)  # one of them was seen
    assert await cache.seen((b"c",), now=5) == b"c"  # ... and every one is recorded anyway
    assert await cache.seen((b"a",), now=10) is None  # expired
    assert await cache.remember_all((), 10, now=0)
