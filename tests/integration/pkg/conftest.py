"""Fixtures for the PKG integration tests: domains, real gRPC PKG nodes on port 0, clients."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sipsec.pkgclient import PkgClient
from sipsec.stores.pkg import PkgStore, RedisPkgStore
from sipsec_pkg.audit import AuditLog
from sipsec_pkg.clock import ManualClock
from sipsec_pkg.material import DomainInit, DomainMaterial, init_domain
from sipsec_pkg.node import PkgNode
from sipsec_pkg.passwords import ScryptParams

FAST_SCRYPT = ScryptParams(n=16, r=1, p=1)
PASSWORD = "correct horse battery staple"

NodeFactory = Callable[..., Awaitable[PkgNode]]


@pytest.fixture(scope="session")
def atlanta() -> DomainInit:
    return init_domain("atlanta.com")


@pytest.fixture(scope="session")
def biloxi() -> DomainInit:
    return init_domain("biloxi.com")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(time.time())


@pytest.fixture(params=["memory", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_node(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[NodeFactory]:
    """Starts PKG nodes (plaintext, loopback, port 0, fast scrypt); stops them all at teardown."""
    nodes: list[PkgNode] = []
    stores: list[PkgStore] = []
    audits: list[AuditLog] = []
    session_keys: dict[str, bytes] = {}  # one per domain, as nodes sharing a KEK derive it

    async def factory(
        material: DomainMaterial, *, store: str = "memory", audit_path: str | None = None, **overrides: Any
    ) -> PkgNode:
        settings: dict[str, Any] = {"scrypt": FAST_SCRYPT}
        settings.update(overrides)
        shared: PkgStore | None = None
        if store == "redis":
            shared = RedisPkgStore(request.getfixturevalue("redis_url"), material.params.domain, clock)
            stores.append(shared)
        audit = AuditLog(audit_path) if audit_path is not None else None
        if audit is not None:
            audits.append(audit)
        settings.setdefault(
            "session_key", session_keys.setdefault(material.params.domain, secrets.token_bytes(32))
        )
        node = PkgNode.in_memory(material, clock=clock, store=shared, audit=audit, **settings)
        await node.start()
        nodes.append(node)
        return node

    yield factory
    for node in nodes:
        await node.stop(grace=0)
    for st in stores:
        await st.close()
    for a in audits:
        a.close()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., PkgClient]]:
    """Plaintext PkgClient factory for nodes; channels closed at teardown."""
    clients: list[PkgClient] = []

    def factory(node: PkgNode | int, **kwargs: Any) -> PkgClient:
        port = node if isinstance(node, int) else node.port
        kwargs.setdefault("plaintext", True)
        client = PkgClient(f"127.0.0.1:{port}", **kwargs)
        clients.append(client)
        return client

    yield factory
    for c in clients:
        await c.close()
