"""The gateway's per-message memos: scoped dialog views and bound metric children give what fresh lookups give."""

from __future__ import annotations

import dataclasses
import hashlib

from sipsec.envelope import DialogKey
from sipsec.envelope.dialog import derive_dialog_key
from sipsec.stores.envelope import InMemoryDialogStore
from sipsec_gateway.metrics import GatewayMetrics
from sipsec_gateway.store import ScopedDialogStore


def _dialog(secret: bytes, call_id: str = "c1@x", local: str = "sip:alice@atlanta.com",
            peer: str = "sip:bob@biloxi.com") -> DialogKey:
    key, key_id = derive_dialog_key(secret)
    return DialogKey(key, key_id, call_id, local, peer, True, 1.0, b"primer")


def _scoped_id(aor: str, key_id: bytes) -> bytes:
    return hashlib.sha256(b"sipsec-gateway dialog\x00" + aor.encode() + b"\x00" + key_id).digest()[:8]


async def test_scoped_views_are_fresh_lookups_memoised() -> None:
    base = InMemoryDialogStore()
    alice = ScopedDialogStore(base, "sip:alice@atlanta.com")
    bob = ScopedDialogStore(base, "sip:bob@atlanta.com")
    d = _dialog(b"a" * 32)
    await alice.put(d, 60, 0.0)
    await bob.put(d.reversed(), 60, 0.0)
    # stored under the scoped ids, handed back under the original one
    assert (await base.get(_scoped_id("sip:alice@atlanta.com", d.key_id), 1.0)) == dataclasses.replace(
        d, key_id=_scoped_id("sip:alice@atlanta.com", d.key_id))
    for _ in range(3):  # every message of the dialog: the same answer
        assert await alice.get(d.key_id, 1.0) == d
        assert await bob.get(d.key_id, 1.0) == d.reversed()
    assert (await alice.get(d.key_id, 1.0)).local_aor == "sip:alice@atlanta.com"
    assert (await bob.get(d.key_id, 1.0)).local_aor == "sip:bob@biloxi.com"


async def test_scoped_memo_follows_the_base_store() -> None:
    base = InMemoryDialogStore()
    scoped = ScopedDialogStore(base, "sip:alice@atlanta.com")
    d = _dialog(b"b" * 32)
    await scoped.put(d, 10, 0.0)
    assert await scoped.get(d.key_id, 1.0) == d
    # the base record replaced behind the view's back (another replica wrote it): the new one is seen
    other = dataclasses.replace(d, call_id="c2@x", key_id=_scoped_id("sip:alice@atlanta.com", d.key_id))
    await base.put(other, 10, 0.0)
    assert (await scoped.get(d.key_id, 1.0)) == dataclasses.replace(other, key_id=d.key_id)
    assert (await scoped.get(d.key_id, 1.0)).call_id == "c2@x"
    # put again through the view
    await scoped.put(d, 10, 0.0)
    assert (await scoped.get(d.key_id, 1.0)).call_id == "c1@x"
    # expiry and deletion are the base store's
    assert await scoped.get(d.key_id, 11.0) is None
    await scoped.put(d, 10, 20.0)
    assert await scoped.get(d.key_id, 21.0) == d
    await scoped.delete(d.key_id)
    assert await scoped.get(d.key_id, 21.0) is None
    assert await scoped.get(b"unknown!", 21.0) is None


async def test_scoped_memo_is_bounded_and_stays_correct_past_the_bound(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import sipsec_gateway.store as store

    monkeypatch.setattr(store, "_MAX_MEMO", 4)
    base = InMemoryDialogStore()
    scoped = ScopedDialogStore(base, "sip:alice@atlanta.com")
    dialogs = [_dialog(bytes([i]) * 32, call_id=f"c{i}@x") for i in range(10)]
    for d in dialogs:
        await scoped.put(d, 60, 0.0)
    for _ in range(2):
        for d in dialogs:
            assert await scoped.get(d.key_id, 1.0) == d
    assert len(scoped._views) <= 4 and len(scoped._ids) <= 4


def test_metric_children_are_the_labelled_series() -> None:
    metrics = GatewayMetrics()
    assert metrics.sample("sipsec_gateway_wire_bytes_total", direction="sent") == 0.0
    before = metrics.exposition()
    assert b'direction="sent"' not in before  # created lazily, as labels() does
    metrics.child(metrics.wire_bytes, "sent").inc(100)
    metrics.child(metrics.wire_bytes, "sent").inc(20)
    metrics.wire_bytes.labels("sent").inc(3)
    assert metrics.sample("sipsec_gateway_wire_bytes_total", direction="sent") == 123.0
    assert metrics.child(metrics.wire_bytes, "sent") is metrics.wire_bytes.labels("sent")
    metrics.child(metrics.crypto_seconds, "seal_kek").observe(0.002)
    assert metrics.sample("sipsec_gateway_crypto_seconds_count", op="seal_kek") == 1.0
    other = GatewayMetrics()  # a second gateway in the process: its own series
    other.child(other.wire_bytes, "sent").inc(1)
    assert other.sample("sipsec_gateway_wire_bytes_total", direction="sent") == 1.0
    assert metrics.sample("sipsec_gateway_wire_bytes_total", direction="sent") == 123.0
