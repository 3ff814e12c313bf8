"""The embedded crypto engine: runs the ``sipsec.ibc`` calls in this process."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TypeVar

from sipsec import ibc
from sipsec.ibc import DomainParams, Identity, PrivateKey

__all__ = ["InProcessEngine"]

T = TypeVar("T")


class InProcessEngine:
    """The default :class:`~sipsec.engine.CryptoEngine`: calls ``sipsec.ibc`` directly.

    By default each operation runs inline on the event loop (a few ms each). With
    ``threaded=True`` (or an ``executor``) they run off the loop, so a slow batch of
    operations does not delay unrelated I/O.
    """

    def __init__(self, *, threaded: bool = False, executor: Executor | None = None) -> None:
        self._own_executor = executor is None and threaded
        self._executor: Executor | None = (
            ThreadPoolExecutor(max_workers=2, thread_name_prefix="sipsec-ibc")
            if self._own_executor else executor
        )

    def __repr__(self) -> str:
        return f"InProcessEngine(threaded={self._executor is not None})"

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._executor is None:
            return fn(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def encapsulate(self, params: DomainParams, identity: Identity) -> tuple[bytes, bytes]:
        return await self._run(ibc.encapsulate, params, identity)

    async def decapsulate(self, key: PrivateKey, ciphertext: bytes) -> bytes:
        return await self._run(ibc.decapsulate, key, ciphertext)

    async def sign(self, key: PrivateKey, message: bytes) -> bytes:
        return await self._run(ibc.sign, key, message)

    async def verify(
        self, params: DomainParams, identity: Identity, message: bytes, signature: bytes
    ) -> None:
        await self._run(ibc.verify, params, identity, message, signature)

    async def close(self) -> None:
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
