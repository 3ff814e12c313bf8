"""The Redis dialog store and replay cache against a real redis-server, and a whole secured call over them."""

from __future__ import annotations

import os
import time

import pytest
from sipsec.envelope import DialogKey, RejectedEnvelope, SigningPolicy, open_message
from sipsec.sip import parse_message
from sipsec.stores.envelope import DialogStore, RedisDialogStore, RedisReplayCache, ReplayCache

from tests.unit.envelope.rfc3665 import ALICE, BOB, Party, Pki, run_basic_call


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


async def test_redis_dialog_store(redis_url: str) -> None:
    store = RedisDialogStore.from_url(redis_url)
    try:
        assert isinstance(store, DialogStore)
        d = DialogKey(os.urandom(32), os.urandom(8), "c@x", "sip:a@x.example", "sip:b@y.example", False, 1.5)
        assert await store.get(d.key_id, now=0) is None
        await store.put(d, 30, now=0)
        assert await store.get(d.key_id, now=0) == d
        await store.delete(d.key_id)
        assert await store.get(d.key_id, now=0) is None
        # the dialog dictionary (the first request's content) travels with the record
        primed = DialogKey(os.urandom(32), os.urandom(8), "p@x", "sip:a@x.example", "sip:b@y.example", True,
                           2.5, os.urandom(1500))
        await store.put(primed, 30, now=0)
        got = await store.get(primed.key_id, now=0)
        assert got == primed and got is not None and got.primer == primed.primer
        await store.put(d, 0.05, now=0)  # a server-side TTL
        time.sleep(0.2)
        assert await store.get(d.key_id, now=0) is None
    finally:
        await store.aclose()


async def test_redis_replay_cache_is_shared_by_replicas(redis_url: str) -> None:
    one, two = RedisReplayCache.from_url(redis_url), RedisReplayCache.from_url(redis_url)
    try:
        assert isinstance(one, ReplayCache)
        assert await one.remember(b"nonce-1", 30, now=0)
        assert not await two.remember(b"nonce-1", 30, now=0)  # another replica sees it
        assert await two.remember(b"nonce-2", 0.05, now=0)
        time.sleep(0.2)
        assert await one.remember(b"nonce-2", 30, now=0)  # expired, new again
    finally:
        await one.aclose()
        await two.aclose()


@pytest.mark.parametrize("policy", list(SigningPolicy), ids=lambda p: p.value)
async def test_secured_call_with_redis_state(redis_url: str, pki: Pki, policy: SigningPolicy) -> None:
    sealing_keys = {"a:": os.urandom(32), "b:": os.urandom(32)}  # records sealed at rest

    def party(aor: str, prefix: str) -> Party:
        return Party(pki.keyring(aor),
                     RedisDialogStore.from_url(redis_url, prefix, sealing_key=sealing_keys[prefix]),
                     RedisReplayCache.from_url(redis_url, prefix))

    alice, bob, replica = party(ALICE, "a:"), party(BOB, "b:"), party(BOB, "b:")
    try:
        run = await run_basic_call(alice, bob, policy)
        for step in run.steps:
            assert step.opened.message.to_bytes() == step.inner.to_bytes()
        # a second gateway replica of Bob (same Redis) refuses the replayed BYE answer and
        # opens a fresh message of the dialog with the key the first replica stored
        ok_bye = run.steps[-1].sealed.message
        with pytest.raises(RejectedEnvelope) as info:
            await open_message(parse_message(ok_bye.to_bytes()), replica.keys, replica.dialogs,
                               replica.replay, policy=policy)
        assert (info.value.status, info.value.reason) == (403, "replay")
        stored = await replica.dialogs.get(run.steps[0].sealed.dialog.key_id, now=time.time())
        assert stored is not None and stored.local_aor == BOB and stored.peer_aor == ALICE
    finally:
        for p in (alice, bob, replica):
            await p.dialogs.aclose()  # type: ignore[attr-defined]
            await p.replay.aclose()  # type: ignore[attr-defined]


async def test_redis_dialog_store_seals_records_at_rest(redis_url: str) -> None:
    import redis.asyncio as aioredis

    sealing_key = os.urandom(32)
    store = RedisDialogStore.from_url(redis_url, "s:", sealing_key=sealing_key)
    other = RedisDialogStore.from_url(redis_url, "s:", sealing_key=os.urandom(32))
    raw = aioredis.Redis.from_url(redis_url)
    try:
        d = DialogKey(os.urandom(32), os.urandom(8), "c@x", "sip:a@x.example", "sip:b@y.example", True)
        await store.put(d, 30, now=0)
        stored = await raw.get(f"s:dlg:{d.key_id.hex()}")
        assert stored is not None
        assert d.key not in stored and b"sip:a@x.example" not in stored and b"c@x" not in stored
        assert await store.get(d.key_id, now=0) == d
        assert await other.get(d.key_id, now=0) is None  # another sealing key cannot read it
        # a record copied under another key id does not open there
        e = DialogKey(os.urandom(32), os.urandom(8), "c2@x", "sip:a@x.example", "sip:b@y.example", True)
        await raw.set(f"s:dlg:{e.key_id.hex()}", stored)
        assert await store.get(e.key_id, now=0) is None
        with pytest.raises(ValueError):
            RedisDialogStore.from_url(redis_url, sealing_key=b"short")
    finally:
        await store.aclose()
        await other.aclose()
        await raw.aclose()
