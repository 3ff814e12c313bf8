"""RFC 3261 §19.1.4 equivalence end to end: a REGISTER keys its binding the way an INVITE looks
it up, through the real proxy/registrar, the real location service over gRPC and real Redis.

``sip:%61lice@atlanta.com`` and ``sip:alice@atlanta.com`` are the same URI (an escaped
unreserved character is the character); ``sip:Alice@atlanta.com`` is another user.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sipsec.rpc import client_channel
from sipsec.rpc._gen.sipsec.location.v1 import location_pb2 as pb
from sipsec.rpc._gen.sipsec.location.v1 import location_pb2_grpc as pb_grpc
from sipsec.sip import Request, Response
from sipsec.sip.digest import DigestChallenge, DigestClient
from sipsec.stores.location import RedisLocationStore
from sipsec_location.config import LocationConfig
from sipsec_location.server import LocationServer, create_location_server
from sipsec_proxy.config import ProxyConfig
from sipsec_proxy.server import ProxyServer, create_proxy_server

from tests.integration.proxy.test_proxy_core import Peer, request


@dataclass
class Topology:
    proxy: ProxyServer
    location: LocationServer | None  # None: the proxy keeps bindings in Redis itself
    redis_url: str


@pytest.fixture(params=["location-service", "redis"])
async def topology(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Topology]:
    location: LocationServer | None = None
    if request.param == "location-service":
        location, port = create_location_server(
            LocationConfig(listen="127.0.0.1:0", store="redis", redis_url=redis_url, metrics_port=-1,
                           drain_seconds=0.1),
        )
        await location.start()
        where = f"127.0.0.1:{port}"
    else:
        where = "redis"
    proxy = create_proxy_server(ProxyConfig(  # type: ignore[call-arg]
        domains="atlanta.com", listen="127.0.0.1:0", metrics_port=-1, auth="none", rate_limit=0,
        drain_seconds=0, location=where, redis_url=redis_url, location_cache_ms=0.0))
    await proxy.start()
    try:
        yield Topology(proxy, location, redis_url)
    finally:
        await proxy.stop(0)
        if location is not None:
            await location.stop(0)


async def _register(topo: Topology, callee: Peer, to: str) -> Response:
    callee.send(request("REGISTER", "sip:atlanta.com", callee, to=to, frm=to, call_id=f"reg-{callee.port}",
                        extra=f"Contact: <sip:alice@127.0.0.1:{callee.port}>\r\nExpires: 600\r\n"),
                topo.proxy.udp_address)
    return await callee.final()


async def _invite(topo: Topology, caller: Peer, callee: Peer, ruri: str) -> Request | Response:
    """Sends an INVITE for ``ruri``: the request the callee receives, or the caller's final answer."""
    caller.send(request("INVITE", ruri, caller, to=ruri, call_id=f"inv-{caller.seq}"), topo.proxy.udp_address)
    reached = asyncio.ensure_future(callee.recv(3.0))
    answered = asyncio.ensure_future(caller.final(3.0))
    done, _ = await asyncio.wait({reached, answered}, return_when=asyncio.FIRST_COMPLETED)
    if reached in done:
        answered.cancel()
        msg = reached.result()
        assert isinstance(msg, Request)
        lines = "".join(f"{n}: {v}\r\n" for n, v in msg.headers.items() if n in ("Via", "From", "Call-ID", "CSeq"))
        callee.send(f"SIP/2.0 486 Busy Here\r\n{lines}To: {msg.headers.get('To')};tag=u1\r\n"
                    "Content-Length: 0\r\n\r\n", topo.proxy.udp_address)
        ack = await callee.recv()
        assert isinstance(ack, Request) and ack.method == "ACK"
        assert (await caller.final()).status == 486
        return msg
    reached.cancel()
    return answered.result()


@pytest.fixture
async def peers() -> AsyncIterator[tuple[Peer, Peer]]:
    caller, callee = Peer(), Peer()
    try:
        yield caller, callee
    finally:
        caller.close()
        callee.close()


async def test_escaped_register_is_found_by_plain_invite(topology: Topology, peers: tuple[Peer, Peer]) -> None:
    caller, callee = peers
    ok = await _register(topology, callee, "sip:%61lice@atlanta.com")
    assert ok.status == 200
    # an INVITE for the unescaped form reaches the bound contact
    reached = await _invite(topology, caller, callee, "sip:alice@atlanta.com")
    assert isinstance(reached, Request) and reached.method == "INVITE"
    assert str(reached.uri) == f"sip:alice@127.0.0.1:{callee.port}"
    # and so does one that escapes another unreserved character, with a differently cased host
    reached = await _invite(topology, caller, callee, "sip:al%69ce@AtLanTa.CoM")
    assert isinstance(reached, Request) and str(reached.uri) == f"sip:alice@127.0.0.1:{callee.port}"
    # the user part is case-sensitive (RFC 3261 §19.1.4): Alice is nobody here
    other = await _invite(topology, caller, callee, "sip:Alice@atlanta.com")
    assert isinstance(other, Response) and other.status == 404

    # the binding is stored under the one canonical AOR, whichever way it is asked for
    if topology.location is not None:
        channel = client_channel(f"127.0.0.1:{topology.location.port}", plaintext=True)
        try:
            stub = pb_grpc.LocationServiceStub(channel)
            for aor in ("sip:alice@atlanta.com", "sip:%61lice@atlanta.com", "sip:%61lic%65@ATLANTA.com"):
                found = await stub.Lookup(pb.LookupRequest(aor=aor), timeout=5)
                assert [(b.aor, b.contact) for b in found.bindings] == [
                    ("sip:alice@atlanta.com", f"sip:alice@127.0.0.1:{callee.port}")]
        finally:
            await channel.close()
    store = RedisLocationStore(topology.redis_url)
    try:
        for aor in ("sip:alice@atlanta.com",):
            assert [b.contact for b in await store.lookup(aor)] == [f"sip:alice@127.0.0.1:{callee.port}"]
    finally:
        await store.close()


async def test_plain_register_is_found_by_escaped_invite(topology: Topology, peers: tuple[Peer, Peer]) -> None:
    caller, callee = peers
    assert (await _register(topology, callee, "sip:alice@atlanta.com")).status == 200
    reached = await _invite(topology, caller, callee, "sip:%61%6c%69%63%65@atlanta.com")
    assert isinstance(reached, Request) and str(reached.uri) == f"sip:alice@127.0.0.1:{callee.port}"


async def test_digest_user_matches_an_escaped_to(peers: tuple[Peer, Peer]) -> None:
    """The registrar compares the digest username with the To user in canonical form: the owner
    of ``alice`` may register ``sip:%61lice@atlanta.com`` (the same AOR), and nobody else may."""
    _, callee = peers
    proxy = create_proxy_server(ProxyConfig(  # type: ignore[call-arg]
        domains="atlanta.com", listen="127.0.0.1:0", metrics_port=-1, rate_limit=0, drain_seconds=0,
        users="alice:alice-secret,bob:bob-secret", location="memory"))
    await proxy.start()
    try:
        for user, password, status in (("bob", "bob-secret", 403), ("alice", "alice-secret", 200)):
            to = "sip:%61lice@ATLANTA.com"
            extra = f"Contact: <sip:alice@127.0.0.1:{callee.port}>\r\nExpires: 600\r\n"
            callee.send(request("REGISTER", "sip:atlanta.com", callee, to=to, frm=to, extra=extra,
                                call_id=f"reg-{user}", cseq=1), proxy.udp_address)
            challenge = await callee.final()
            assert challenge.status == 401
            ch = DigestChallenge.parse(challenge.headers.get_all("WWW-Authenticate")[0])
            creds = DigestClient(user, password).authorize(ch, "REGISTER", "sip:atlanta.com")
            callee.send(request("REGISTER", "sip:atlanta.com", callee, to=to, frm=to, call_id=f"reg-{user}",
                                cseq=2, extra=f"{extra}Authorization: {creds.to_header()}\r\n"),
                        proxy.udp_address)
            assert (await callee.final()).status == status
        contacts = await proxy.locator.lookup("sip:alice@atlanta.com")
        assert [c.uri for c in contacts] == [f"sip:alice@127.0.0.1:{callee.port}"]
    finally:
        await proxy.stop(0)
