"""SIP over TLS on the gateway↔proxy and proxy↔proxy legs (RFC 3261 §26.2, §26.3.1).

The in-process topology with ``tls_dir`` makes a per-run CA and a certificate per proxy and
gateway (0600 keys); a secured call then crosses both legs over TLS only: a relay between
atlanta's gateway and proxy sees TLS records and never cleartext SIP, and no SIP message is
received over UDP or TCP anywhere in the process. A proxy whose next hop presents a
certificate from another CA refuses the connection (nothing is sent to it), and so does a
gateway whose CA did not issue its proxy's certificate.
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sipsec.aio.transport import InboundQueue, Peer, StreamTransport, server_tls_context
from sipsec.sip import parse_message
from sipsec_cli.topology import TopologyError, TwoDomainTopology
from sipsec_cli.up.tls import make_pki
from sipsec_gateway.calls import CallState

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"


def _received(transport: str) -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "sipsec_sip_messages_received_total" and sample.labels.get("transport") == transport:
                total += sample.value
    return total


def _dropped(transport: str, reason: str) -> float:
    value = REGISTRY.get_sample_value("sipsec_sip_messages_dropped_total",
                                      {"transport": transport, "reason": reason})
    return value or 0.0


class Relay:
    """A TCP relay on loopback that records the bytes crossing it in both directions."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.upstream = bytearray()  # client -> server
        self.downstream = bytearray()
        self.server: asyncio.Server | None = None
        self.address: tuple[str, int] = ("", 0)

    async def start(self, host: str) -> None:
        self.server = await asyncio.start_server(self._handle, host, 0)
        self.address = self.server.sockets[0].getsockname()[:2]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, seen: bytearray) -> None:
            try:
                while data := await src.read(65536):
                    seen += data
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, self.upstream), pump(up_reader, writer, self.downstream))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def topo(tmp_path: Path) -> AsyncIterator[TwoDomainTopology]:
    async with TwoDomainTopology(trace_calls=0, tap=False, tls_dir=tmp_path / "tls") as topology:
        yield topology


async def test_secured_call_crosses_both_legs_over_tls_only(topo: TwoDomainTopology, tmp_path: Path) -> None:
    assert topo.pki is not None
    for party in topo.pki.parties.values():  # private keys readable by the owner only
        assert stat.S_IMODE(party.key.stat().st_mode) == 0o600
    for name, stack in topo.domains.items():
        assert stack.gateway.config.transport == "tls" and "TLS" in stack.proxy.transports, name
        assert stack.gateway.secure is not None
        assert stack.gateway.secure.endpoint.transport("TLS") is not None
    # atlanta's gateway reaches its proxy through a recording relay (the certificate still
    # names 127.0.0.2, the relay's host, so verification passes as for the proxy itself)
    atlanta = topo.atlanta.gateway
    relay = Relay((atlanta.proxy.host, atlanta.proxy.port))
    await relay.start(atlanta.proxy.host)
    try:
        via_relay = Peer("TLS", *relay.address)
        atlanta.proxy = via_relay
        assert atlanta.secure is not None
        atlanta.secure.outbound = via_relay
        before = {t: _received(t) for t in ("UDP", "TCP", "TLS")}
        await topo.login(ALICE)
        await topo.login(BOB, auto_answer=True)
        call = await topo.gateway_for(ALICE).place_call(ALICE, BOB, secure=True, timeout=10.0)
        assert call.state is CallState.ESTABLISHED and call.secure
        assert await topo.gateway_for(ALICE).hangup(call.id) == 200
        after = {t: _received(t) for t in ("UDP", "TCP", "TLS")}
    finally:
        await relay.close()
    # no SIP message arrived over UDP or TCP anywhere: REGISTERs, INVITE, ACK, BYE and the
    # responses on gateway->proxy, proxy->proxy and proxy->gateway all went over TLS
    assert after["UDP"] == before["UDP"] and after["TCP"] == before["TCP"]
    assert after["TLS"] - before["TLS"] >= 20
    # at the socket level the gateway->proxy leg carried TLS records, never cleartext SIP
    assert len(relay.upstream) > 2000 and len(relay.downstream) > 2000
    assert relay.upstream[0] == 0x16 and relay.downstream[0] == 0x16  # TLS handshake records
    for captured in (bytes(relay.upstream), bytes(relay.downstream)):
        assert b"SIP/2.0" not in captured and b"REGISTER" not in captured and b"atlanta.com" not in captured


async def test_proxy_refuses_a_next_hop_with_a_certificate_from_another_ca(topo: TwoDomainTopology,
                                                                           tmp_path: Path) -> None:
    """The atlanta proxy's TLS transport (verifying against the run's CA) is asked to send to a
    listener whose certificate, valid for its address, comes from another CA: the handshake
    fails, nothing reaches that listener, and the message is dropped as ``connect_failed``."""
    rogue_pki = make_pki(tmp_path / "rogue", {"rogue": ["127.0.0.3"]}, ca_name="another CA")
    queue = InboundQueue(16)
    rogue = await StreamTransport.listen(queue, "127.0.0.3", 0, server_ssl=server_tls_context(
        str(rogue_pki["rogue"].cert), str(rogue_pki["rogue"].key)))
    try:
        tls = topo.atlanta.proxy.transports["TLS"]
        request = parse_message(
            b"OPTIONS sip:biloxi.com SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.2:5061;branch=z9hG4bK-rogue\r\n"
            b"Max-Forwards: 70\r\nFrom: <sip:probe@atlanta.com>;tag=1\r\nTo: <sip:biloxi.com>\r\n"
            b"Call-ID: rogue-probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
        dropped = _dropped("TLS", "connect_failed")
        tls.send(request, Peer("TLS", *rogue.local_address))
        for _ in range(100):
            if _dropped("TLS", "connect_failed") > dropped:
                break
            await asyncio.sleep(0.05)
        assert _dropped("TLS", "connect_failed") == dropped + 1
        assert queue.qsize() == 0  # the rogue listener received no SIP message
    finally:
        await rogue.close()


async def test_gateway_refuses_a_proxy_whose_certificate_is_not_from_its_ca(tmp_path: Path) -> None:
    """The gateways trust another CA than the one that issued the proxies' certificates: the
    handshake fails, no REGISTER reaches a proxy, and the login fails with a clear error."""
    other = make_pki(tmp_path / "other", {}, ca_name="another CA")
    async with TwoDomainTopology(trace_calls=0, tap=False, tls_dir=tmp_path / "tls", call_timeout_s=3.0,
                                 gateway_overrides={"tls_ca": str(other.ca)}) as topology:
        received, dropped = _received("TLS"), _dropped("TLS", "connect_failed")
        with pytest.raises(TopologyError):
            await topology.login(ALICE)
        assert _received("TLS") == received  # nothing was accepted by any TLS listener
        assert _dropped("TLS", "connect_failed") > dropped
