"""The crypto-engine interface: where the pairing operations of a service actually run."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sipsec.ibc import DomainParams, Identity, PrivateKey

__all__ = ["CryptoEngine"]


@runtime_checkable
class CryptoEngine(Protocol):
    """Async versions of the four ``sipsec.ibc`` operations, wherever they run.

    Implementations raise the same ``sipsec.ibc`` errors as the library itself
    (``InvalidCiphertext``, ``InvalidSignature``, ``InvalidIdentity``, ``InvalidEncoding``...),
    so callers never care whether the work ran in-process or on a crypto-worker.
    """

    async def encapsulate(self, params: DomainParams, identity: Identity) -> tuple[bytes, bytes]:
        """A fresh 256-bit key and its ciphertext to ``identity`` (see ``sipsec.ibc.encapsulate``)."""
        ...

    async def decapsulate(self, key: PrivateKey, ciphertext: bytes) -> bytes:
        """The key inside ``ciphertext``; raises ``InvalidCiphertext``."""
        ...

    async def sign(self, key: PrivateKey, message: bytes) -> bytes:
        """A Cha–Cheon signature on ``message``."""
        ...

    async def verify(
        self, params: DomainParams, identity: Identity, message: bytes, signature: bytes
    ) -> None:
        """Return None if the signature is valid; raises ``InvalidSignature``."""
        ...

    async def close(self) -> None:
        """Release channels, threads and processes the engine holds."""
        ...
