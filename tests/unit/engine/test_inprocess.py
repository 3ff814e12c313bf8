"""The in-process engine runs sipsec.ibc itself, inline or on a thread, with the same errors.

The batching window's tests run on a virtual clock (:class:`VirtualTimeLoop`): deterministic,
whatever the machine's load.
"""

from __future__ import annotations

import asyncio
import gc
import selectors
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest
from sipsec import ibc
from sipsec.engine import (
    DEFAULT_BATCH_WINDOW_S,
    DEFAULT_BUSY_CPU,
    CryptoEngine,
    InProcessEngine,
    RemoteEngine,
    create_engine,
)

AOR = "sip:alice@atlanta.com"


@pytest.fixture(scope="module")
def domain() -> tuple[ibc.MasterSecret, ibc.DomainParams]:
    return ibc.setup("atlanta.com")


@pytest.fixture(
    params=[(False, True), (True, True), (False, False), (True, False)],
    ids=["inline", "threaded", "inline-unbatched", "threaded-unbatched"],
)
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[InProcessEngine]:
    threaded, batch_verify = request.param
    e = InProcessEngine(threaded=threaded, batch_verify=batch_verify)
    yield e
    await e.close()


@pytest.fixture(params=[False, True], ids=["inline", "threaded"])
async def batching(request: pytest.FixtureRequest) -> AsyncIterator[InProcessEngine]:
    e = InProcessEngine(threaded=request.param)
    yield e
    await e.close()


def _signed(
    domain: tuple[ibc.MasterSecret, ibc.DomainParams], n: int
) -> list[tuple[ibc.DomainParams, ibc.Identity, bytes, bytes]]:
    master, params = domain
    identity = params.identity(AOR, ibc.Purpose.SIG, 692)
    key = ibc.extract(master, params, identity)
    messages = [b"INVITE %d" % i for i in range(n)]
    return [(params, identity, m, ibc.sign(key, m)) for m in messages]


async def test_kem_round_trip_and_tampering(engine: InProcessEngine, domain: tuple[ibc.MasterSecret, ibc.DomainParams]) -> None:
    master, params = domain
    identity = params.identity(AOR, ibc.Purpose.ENC, 692)
    key = ibc.extract(master, params, identity)
    cek, ciphertext = await engine.encapsulate(params, identity)
    assert len(cek) == 32
    assert await engine.decapsulate(key, ciphertext) == cek
    assert ibc.decapsulate(key, ciphertext) == cek  # interoperates with the library directly
    tampered = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    with pytest.raises(ibc.InvalidCiphertext):
        await engine.decapsulate(key, tampered)
    with pytest.raises(ibc.MalformedCiphertext):
        await engine.decapsulate(key, ciphertext[:10])


async def test_signatures_and_tampering(engine: InProcessEngine, domain: tuple[ibc.MasterSecret, ibc.DomainParams]) -> None:
    master, params = domain
    identity = params.identity(AOR, ibc.Purpose.SIG, 692)
    key = ibc.extract(master, params, identity)
    signature = await engine.sign(key, b"INVITE sip:bob@biloxi.com SIP/2.0")
    await engine.verify(params, identity, b"INVITE sip:bob@biloxi.com SIP/2.0", signature)
    ibc.verify(params, identity, b"INVITE sip:bob@biloxi.com SIP/2.0", signature)
    with pytest.raises(ibc.InvalidSignature):
        await engine.verify(params, identity, b"INVITE sip:eve@biloxi.com SIP/2.0", signature)
    with pytest.raises(ibc.InvalidIdentity):  # an ENC identity cannot sign
        await engine.encapsulate(params, identity)


def test_create_engine_picks_by_targets() -> None:
    assert isinstance(create_engine(None), InProcessEngine)
    assert isinstance(create_engine(" , "), InProcessEngine)
    remote = create_engine("127.0.0.1:1, 127.0.0.1:2", plaintext=True)
    assert isinstance(remote, RemoteEngine)
    assert remote.targets == ["127.0.0.1:1", "127.0.0.1:2"]
    assert isinstance(remote, CryptoEngine) and isinstance(InProcessEngine(), CryptoEngine)
    with pytest.raises(ValueError):
        RemoteEngine(["127.0.0.1:1"], balance="random")  # type: ignore[arg-type]


async def test_concurrent_verifies_are_batched(batching: InProcessEngine, domain: tuple[ibc.MasterSecret, ibc.DomainParams]) -> None:
    items = _signed(domain, 10)
    params, identity, message, signature = items[3]
    items[3] = (params, identity, message + b" (forged)", signature)
    results = await asyncio.gather(*(batching.verify(*item) for item in items), return_exceptions=True)
    assert [type(r) for r in results] == [type(None)] * 3 + [ibc.InvalidSignature] + [type(None)] * 6
    assert str(results[3]) == "signature verification failed"
    stats = batching.verify_batches
    assert (stats.count, stats.items, stats.largest) == (1, 10, 10)  # all joined one batch


async def test_batches_are_capped_and_keep_errors(domain: tuple[ibc.MasterSecret, ibc.DomainParams]) -> None:
    engine = InProcessEngine(max_batch=4)
    items = _signed(domain, 9)
    params, identity, message, signature = items[0]
    enc = params.identity(AOR, ibc.Purpose.ENC, 692)
    items += [(params, identity, message, signature[:-1]), (params, enc, message, signature)]
    bad_argument = (object(), identity, message, signature)  # a caller's bug, not a bad signature
    results = await asyncio.gather(
        *(engine.verify(*item) for item in items),
        engine.verify(*bad_argument),  # type: ignore[arg-type]
        return_exceptions=True,
    )
    assert results[:9] == [None] * 9
    assert [type(r) for r in results[9:]] == [ibc.MalformedSignature, ibc.InvalidIdentity, AttributeError]
    stats = engine.verify_batches
    assert (stats.count, stats.items, stats.largest) == (3, 12, 4)
    with pytest.raises(ValueError):
        InProcessEngine(max_batch=0)


async def test_a_cancelled_waiter_does_not_disturb_the_others(batching: InProcessEngine, domain: tuple[ibc.MasterSecret, ibc.DomainParams]) -> None:
    items = _signed(domain, 6)
    first = [asyncio.create_task(batching.verify(*item)) for item in items[:3]]
    await asyncio.sleep(0)  # queued; the batch starts on the next iteration
    first[1].cancel()
    await asyncio.sleep(0)  # the batch runs (inline) or is running (threaded)
    second = [asyncio.create_task(batching.verify(*item)) for item in items[3:]]
    await asyncio.sleep(0)
    second[0].cancel()
    results = await asyncio.gather(*first, *second, return_exceptions=True)
    assert [type(r) for r in results] == [
        type(None), asyncio.CancelledError, type(None), asyncio.CancelledError, type(None), type(None)
    ]
    assert batching.verify_batches.items == 4  # the cancelled waiters were skipped
    await batching.verify(*items[0])  # and the lane keeps working


async def test_unbatched_engine_verifies_one_by_one(domain: tuple[ibc.MasterSecret, ibc.DomainParams]) -> None:
    engine = InProcessEngine(batch_verify=False)
    await asyncio.gather(*(engine.verify(*item) for item in _signed(domain, 3)))
    assert engine.verify_batches.count == 0
    assert "batch_verify=False" in repr(engine)


def test_one_engine_serves_several_event_loops(domain: tuple[ibc.MasterSecret, ibc.DomainParams]) -> None:
    engine = InProcessEngine()
    items = _signed(domain, 3)

    async def verify_all() -> None:
        await asyncio.gather(*(engine.verify(*item) for item in items))

    for _ in range(3):
        asyncio.run(verify_all())
    assert engine.verify_batches.count == 3
    gc.collect()
    assert not engine._lanes  # an idle lane keeps no closed loop alive


class _VirtualSelector(selectors.BaseSelector):
    """The real selector, except that waiting for the next timer moves virtual time instead."""

    def __init__(self) -> None:
        self._real = selectors.DefaultSelector()
        self.now = 1000.0

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = self._real.select(0)
        if events or timeout == 0:
            return events
        if timeout is None:  # no timer: only real I/O (a verify thread finishing) can wake the loop
            return self._real.select(None)
        self.now += timeout  # nothing to do until the next timer: it is due at once
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock: time passes only while the loop waits for a timer.

    Sleeps and the engine's batch windows take no wall-clock time, and the time a
    verification spends on the CPU counts as none, so what the tests below measure with
    ``loop.time()`` is what the engine decided, the same on any machine however loaded.
    """

    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


def _on_virtual_time(test: Callable[[VirtualTimeLoop], Awaitable[None]]) -> None:
    loop = VirtualTimeLoop()
    try:
        loop.run_until_complete(test(loop))
    finally:
        loop.close()


@pytest.mark.parametrize("threaded", [False, True], ids=["inline", "threaded"])
def test_under_load_verifies_wait_for_a_batch_but_a_lone_one_does_not(
    threaded: bool, domain: tuple[ibc.MasterSecret, ibc.DomainParams]
) -> None:
    window = 0.05
    items = _signed(domain, 25)
    forged = (*items[24][:3], items[0][3])  # a valid signature on another message

    async def run(loop: VirtualTimeLoop) -> None:
        engine = InProcessEngine(threaded=threaded, batch_window_s=window, busy_cpu=0)  # on the arrival rate alone
        try:
            t0 = loop.time()
            await engine.verify(*items[0])  # idle lane: runs at once
            assert loop.time() - t0 < window and engine.verify_batches.count == 1
            # a stream of verifies 5 ms apart (faster than the window): they wait and batch up
            tasks = []
            for item in [*items[1:24], forged]:
                tasks.append(asyncio.ensure_future(engine.verify(*item)))
                await asyncio.sleep(0.005)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(r is None for r in results[:-1]) and isinstance(results[-1], ibc.InvalidSignature)
            stats = engine.verify_batches
            assert stats.items == 25 and stats.largest >= 3 and stats.count <= 20
            # after a pause the lane is idle again and a lone verify does not wait
            await asyncio.sleep(1.2)
            t0 = loop.time()
            await engine.verify(*items[5])
            assert loop.time() - t0 < window
        finally:
            await engine.close()

    _on_virtual_time(run)


@pytest.mark.parametrize("busy", [True, False], ids=["cpu-busy", "cpu-idle"])
def test_verifies_wait_for_a_batch_only_while_the_process_is_busy(
    busy: bool, domain: tuple[ibc.MasterSecret, ibc.DomainParams]
) -> None:
    """The same fast stream of verifies: with the process's CPU clock running as fast as the
    wall clock (a busy process) they wait and batch up; with it standing still (an idle
    process) none waits for the window, whatever the arrival rate."""
    window = 0.05
    items = _signed(domain, 60)

    async def run(loop: VirtualTimeLoop) -> None:
        cpu_clock = loop.time if busy else (lambda: 0.0)
        engine = InProcessEngine(batch_window_s=window, busy_cpu=0.7, cpu_clock=cpu_clock)
        waits: list[float] = []

        async def timed(item: tuple[ibc.DomainParams, ibc.Identity, bytes, bytes]) -> None:
            t0 = loop.time()
            await engine.verify(*item)
            waits.append(loop.time() - t0)

        try:
            tasks = []
            for item in items:  # 5 ms apart, faster than the window, for ~300 ms (the CPU average needs ~200)
                tasks.append(asyncio.ensure_future(timed(item)))
                await asyncio.sleep(0.005)
            await asyncio.gather(*tasks)
            stats = engine.verify_batches
            assert stats.items == 60
            if busy:
                assert stats.largest >= 3 and max(waits) >= window * 0.9
            else:
                assert stats.largest <= 2 and max(waits) < window * 0.9
        finally:
            await engine.close()

    _on_virtual_time(run)


def test_verifies_that_come_one_after_another_stop_waiting(
    domain: tuple[ibc.MasterSecret, ibc.DomainParams],
) -> None:
    """A busy process, verifies close together, but each only after the last is done (one
    call at a time): a wait never gathers company, so after two the lane stops waiting,
    probing only every 17th time, and then for a quarter window."""
    window = 0.03
    items = _signed(domain, 8)

    async def run(loop: VirtualTimeLoop) -> None:
        engine = InProcessEngine(batch_window_s=window, busy_cpu=0.7, cpu_clock=loop.time)
        waited = probed = 0
        try:
            for i in range(100):
                t0 = loop.time()
                await engine.verify(*items[i % 8])
                took = loop.time() - t0
                waited += took >= window * 0.9
                probed += window * 0.2 <= took < window * 0.9
                await asyncio.sleep(0.004)  # the next message of the chain
            stats = engine.verify_batches
            assert stats.items == 100 and stats.largest == 1
            # the CPU average needs ~200 ms (about 35 verifies here) to call the process busy;
            # then two full waits, and short probes: of the ~60 verifies that could have waited
            assert 1 <= waited <= 3 and 1 <= probed <= 5
            assert engine._lanes[loop].wait_yield < 0.5
        finally:
            await engine.close()

    _on_virtual_time(run)


def test_a_full_batch_does_not_wait_for_the_window(domain: tuple[ibc.MasterSecret, ibc.DomainParams]) -> None:
    items = _signed(domain, 9)

    async def run(loop: VirtualTimeLoop) -> None:
        engine = InProcessEngine(batch_window_s=0.5, max_batch=4, busy_cpu=0)
        try:
            for item in items[:5]:  # make the lane believe it is busy
                await engine.verify(*item)
            t0 = loop.time()
            await asyncio.gather(*(engine.verify(*item) for item in items[5:9]))
            assert loop.time() - t0 < 0.5  # the 4th verify filled the batch: no 0.5 s wait
        finally:
            await engine.close()

    _on_virtual_time(run)


def test_batch_window_is_validated() -> None:
    with pytest.raises(ValueError, match="batch_window_s"):
        InProcessEngine(batch_window_s=-0.001)
    with pytest.raises(ValueError, match="busy_cpu"):
        InProcessEngine(busy_cpu=1.5)
    assert InProcessEngine().busy_cpu == DEFAULT_BUSY_CPU
    assert create_engine(None, busy_cpu=0.25).busy_cpu == 0.25  # type: ignore[attr-defined]
    assert InProcessEngine().batch_window_s == DEFAULT_BATCH_WINDOW_S
    assert create_engine(None, batch_window_s=0).batch_window_s == 0  # type: ignore[attr-defined]
