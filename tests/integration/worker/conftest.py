"""Fixtures of the crypto-worker tests: a domain with keys, and real workers on port 0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest
from sipsec import ibc
from sipsec.rpc import client_channel
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2_grpc as pb_grpc
from sipsec_worker.config import WorkerConfig
from sipsec_worker.server import WorkerServer, create_worker_server

PERIOD = 692


@dataclass(frozen=True)
class Material:
    params: ibc.DomainParams
    other: ibc.DomainParams  # a second domain
    enc: ibc.Identity
    sig: ibc.Identity
    enc_key: ibc.PrivateKey
    sig_key: ibc.PrivateKey


@pytest.fixture(scope="session")
def material() -> Material:
    master, params = ibc.setup("atlanta.com")
    _, other = ibc.setup("biloxi.com")
    enc = params.identity("sip:alice@atlanta.com", ibc.Purpose.ENC, PERIOD)
    sig = params.identity("sip:alice@atlanta.com", ibc.Purpose.SIG, PERIOD)
    return Material(params, other, enc, sig, ibc.extract(master, params, enc), ibc.extract(master, params, sig))


@dataclass
class Worker:
    server: WorkerServer
    port: int
    channel: grpc.aio.Channel
    stub: pb_grpc.CryptoWorkerServiceStub

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def sample(self, name: str, **labels: str) -> float:
        value = self.server.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    async def settled(self, name: str, expected: float, **labels: str) -> float:
        """The sample once it reaches ``expected`` (or after 2 s): an aborted RPC's status can
        reach the client a moment before the server's interceptor counts it."""
        for _ in range(200):
            if self.sample(name, **labels) == expected:
                break
            await asyncio.sleep(0.01)
        return self.sample(name, **labels)


StartWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def start_worker() -> AsyncIterator[StartWorker]:
    """``await start_worker(queue=..., ...)``: a running worker with 2 pool processes."""
    started: list[Worker] = []

    async def start(**overrides: object) -> Worker:
        settings: dict[str, object] = {
            "listen": "127.0.0.1:0", "processes": 2, "queue": 8, "plaintext": True,
            "metrics_host": "127.0.0.1", "metrics_port": -1, "drain_seconds": 1.0,
        }
        settings.update(overrides)
        server, port = create_worker_server(WorkerConfig(**settings))  # type: ignore[arg-type]
        await server.start()
        channel = client_channel(f"127.0.0.1:{port}", plaintext=True)
        worker = Worker(server, port, channel, pb_grpc.CryptoWorkerServiceStub(channel))
        started.append(worker)
        return worker

    yield start
    for w in started:
        await w.channel.close()
        await w.server.stop(0)
