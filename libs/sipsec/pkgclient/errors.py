"""Errors raised by the PKG client library; messages never contain tokens, passwords or keys."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

__all__ = ["BadNode", "PkgClientError", "PkgRpcError", "ThresholdKeyError"]


class PkgClientError(Exception):
    """Base class of the client library's errors."""


class PkgRpcError(PkgClientError):
    """A PKG answered with a gRPC error status; ``details`` are its ``sipsec-*`` trailers."""

    def __init__(self, code: grpc.StatusCode, message: str, details: dict[str, str]) -> None:
        self.code = code
        self.details = details
        super().__init__(f"{code.name}: {message}")

    @property
    def reason(self) -> str:
        return self.details.get("reason", "")

    @classmethod
    def from_rpc(cls, exc: grpc.aio.AioRpcError) -> PkgRpcError:
        details: dict[str, str] = {}
        for key, value in exc.trailing_metadata() or ():
            if key.startswith("sipsec-") and isinstance(value, str):
                details[key[len("sipsec-"):].replace("-", "_")] = value
        return cls(exc.code(), exc.details() or "", details)


@dataclass(frozen=True)
class BadNode:
    """A threshold node that returned an invalid partial key, named by the connection it was asked
    through (``target``); ``index`` is only the node index its answer claimed.

    ``reason``: ``bad_partial`` (failed its pairing check) or ``index_mismatch`` (claimed another
    index than the one this connection serves).
    """

    index: int
    target: str
    reason: str = "bad_partial"


class ThresholdKeyError(PkgClientError):
    """Fewer than ``threshold`` valid partial keys; names the lying and the unreachable nodes."""

    def __init__(self, threshold: int, valid: int, bad_nodes: list[BadNode], down: dict[str, str]) -> None:
        self.threshold = threshold
        self.valid = valid
        self.bad_nodes = bad_nodes
        self.down = down
        bad = ", ".join(f"{b.target} (claimed node {b.index}, {b.reason})" for b in bad_nodes) or "none"
        super().__init__(
            f"{valid} valid partial keys, {threshold} needed; bad shares from: {bad}; "
            f"unreachable: {', '.join(sorted(down)) or 'none'}"
        )
