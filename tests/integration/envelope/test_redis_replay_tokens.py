"""The Redis replay cache's look-before-record (``seen``) and one-round-trip ``remember_all``, on a real
redis-server, and a replayed / re-sent forged INVITE refused through it before any pairing."""

from __future__ import annotations

import time

import pytest
from sipsec import ibc
from sipsec.envelope import Forbidden, Keyring, open_message, seal
from sipsec.sip import parse_message
from sipsec.stores.envelope import InMemoryDialogStore, RedisReplayCache, ReplayCache

from tests.unit.envelope.rfc3665 import ALICE, BOB, Pki, invite


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


async def test_redis_seen_and_remember_all(redis_url: str) -> None:
    one, two = RedisReplayCache.from_url(redis_url, "h8-tokens:"), RedisReplayCache.from_url(redis_url, "h8-tokens:")
    try:
        assert isinstance(one, ReplayCache)
        assert await one.seen((b"t1", b"t2"), now=0) is None
        assert await one.remember_all((b"t1", b"t2"), 30, now=0)
        assert await two.seen((b"x", b"t2"), now=0) == b"t2"  # another replica sees it
        assert not await two.remember_all((b"t3", b"t1"), 30, now=0)  # t1 was seen
        assert await one.seen((b"t3",), now=0) == b"t3"
        assert await one.remember_all((b"short",), 0.05, now=0)
        time.sleep(0.2)
        assert await one.seen((b"short",), now=0) is None  # server-side TTL
        assert await one.seen((), now=0) is None and await one.remember_all((), 30, now=0)
    finally:
        await one.aclose()
        await two.aclose()


async def test_replays_and_resent_forgeries_through_redis(redis_url: str, pki: Pki) -> None:
    cache = RedisReplayCache.from_url(redis_url, "h8-open:")
    bob, dialogs, now = pki.keyring(BOB), InMemoryDialogStore(), time.time()
    try:
        genuine = seal(invite("redis-h8@a"), pki.keyring(ALICE), BOB, now=now).message
        await open_message(parse_message(genuine.to_bytes()), bob, dialogs, cache, now=now)
        with pytest.raises(Forbidden) as info:
            await open_message(parse_message(genuine.to_bytes()), bob, dialogs, cache, now=now)
        assert info.value.reason == "replay"
        master, params = ibc.setup("atlanta.example.com")
        sig = ibc.extract(master, params, params.identity(ALICE, ibc.Purpose.SIG, pki.atlanta.policy.current(now)))
        forger = Keyring.create(ALICE, sig_keys=[sig], enc_keys=[], domains=[pki.atlanta, pki.biloxi])
        forged = seal(invite("redis-h8-f@a"), forger, BOB, now=now).message
        for reason in ("bad-signature", "failed-before", "failed-before"):
            with pytest.raises(Forbidden) as info:
                await open_message(parse_message(forged.to_bytes()), bob, dialogs, cache, now=now)
            assert info.value.reason == reason
    finally:
        await cache.aclose()
