"""Signed REGISTER: a real PKG gives the proxy its domain parameters; the AOR's SIG key registers, not a password."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from types import MappingProxyType

import pytest
from sipsec.envelope import Keyring, sign_register
from sipsec.ibc import Purpose
from sipsec.pkgclient import PinMismatch, PkgClient
from sipsec.sip import Request, Response, parse_message
from sipsec_pkg.material import DomainInit, init_domain
from sipsec_pkg.node import PkgNode
from sipsec_pkg.passwords import ScryptParams
from sipsec_proxy import ProxyConfig, ProxyServer, SignedRegisterVerifier, create_proxy_server

PASSWORD = "correct horse battery staple"
ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@atlanta.com"


@pytest.fixture(scope="module")
def atlanta() -> DomainInit:
    return init_domain("atlanta.com")


@pytest.fixture
async def pkg(atlanta: DomainInit) -> AsyncIterator[PkgNode]:
    node = PkgNode.in_memory(atlanta.material(), listen="127.0.0.1:0", scrypt=ScryptParams(n=16, r=1, p=1))
    await node.start()
    for aor in (ALICE, BOB):
        await node.add_user(aor, PASSWORD)
    yield node
    await node.stop(grace=0)


def _config(pkg: PkgNode, atlanta: DomainInit, **kw: object) -> ProxyConfig:
    base: dict[str, object] = dict(
        domains="atlanta.com", listen="127.0.0.1:0", metrics_port=-1, rate_limit=0, drain_seconds=0,
        users="carol:carol-secret", pkg_target=f"127.0.0.1:{pkg.port}", pkg_plaintext=1,
        pkg_fingerprint=atlanta.signed.fingerprint)
    base.update(kw)
    return ProxyConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
async def proxy(pkg: PkgNode, atlanta: DomainInit) -> AsyncIterator[ProxyServer]:
    server = create_proxy_server(_config(pkg, atlanta))
    await server.start()
    yield server
    await server.stop(0)


@pytest.fixture
def sock() -> AsyncIterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    yield s
    s.close()


async def _sig_keyring(pkg: PkgNode, aor: str) -> Keyring:
    async with PkgClient(f"127.0.0.1:{pkg.port}", plaintext=True) as client:
        params = (await client.get_system_params()).params
        await client.login(aor, PASSWORD)
        key = await client.get_private_key(params, Purpose.SIG)
    return Keyring.create(aor, sig_keys=[key], enc_keys=[], domains=[params])


def _register(sock: socket.socket, aor: str, call_id: str) -> Request:
    port = sock.getsockname()[1]
    text = (f"REGISTER sip:atlanta.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call_id}\r\n"
            f"Max-Forwards: 70\r\nFrom: <{aor}>;tag=t{port}\r\nTo: <{aor}>\r\nCall-ID: {call_id}\r\n"
            f"CSeq: 1 REGISTER\r\nContact: <sip:u@127.0.0.1:{port}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n")
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


async def _final(sock: socket.socket, message: Request, to: tuple[str, int]) -> Response:
    sock.sendto(message.to_bytes(), to)
    loop = asyncio.get_running_loop()
    while True:
        msg = parse_message(await asyncio.wait_for(loop.sock_recv(sock, 70000), 3.0))
        if isinstance(msg, Response) and msg.status >= 200:
            return msg


async def test_verifier_is_built_from_the_pkg(proxy: ProxyServer, atlanta: DomainInit) -> None:
    assert isinstance(proxy.verifier, SignedRegisterVerifier)
    assert set(proxy.verifier.trusted) == {"atlanta.com"}
    assert proxy.verifier.trusted["atlanta.com"].to_bytes() == atlanta.params.to_bytes()


async def test_register_signed_by_the_aor_is_accepted_without_digest(
        proxy: ProxyServer, pkg: PkgNode, sock: socket.socket) -> None:
    keys = await _sig_keyring(pkg, ALICE)
    resp = await _final(sock, sign_register(_register(sock, ALICE, "s1"), keys), proxy.udp_address)
    assert resp.status == 200 and not resp.headers.get("WWW-Authenticate")
    assert len(await proxy.locator.lookup(ALICE)) == 1
    assert isinstance(proxy.verifier, SignedRegisterVerifier) and proxy.verifier.verified == 1


async def test_register_signed_by_another_user_is_403(
        proxy: ProxyServer, pkg: PkgNode, sock: socket.socket) -> None:
    bob = await _sig_keyring(pkg, BOB)
    # bob's key claiming alice's AOR: a keyring sign_register trusts, built around its check
    forged = Keyring(ALICE, bob.sig_keys, (), MappingProxyType(dict(bob.domains)))  # type: ignore[arg-type]
    resp = await _final(sock, sign_register(_register(sock, ALICE, "s2"), forged), proxy.udp_address)
    assert resp.status == 403
    assert await proxy.locator.lookup(ALICE) == []


async def test_tampered_signed_register_is_403(proxy: ProxyServer, pkg: PkgNode, sock: socket.socket) -> None:
    keys = await _sig_keyring(pkg, ALICE)
    signed = sign_register(_register(sock, ALICE, "s3"), keys)
    signed.headers.remove("Contact")
    signed.headers.add("Contact", "<sip:attacker@127.0.0.9:5060>")  # outer no longer what was signed
    assert (await _final(sock, signed, proxy.udp_address)).status == 403
    body = bytearray(sign_register(_register(sock, ALICE, "s4"), keys).body)
    corrupt = sign_register(_register(sock, ALICE, "s4"), keys)
    body[-8] ^= 0x01  # a bit of the signature
    corrupt.body = bytes(body)
    assert (await _final(sock, corrupt, proxy.udp_address)).status == 403
    assert await proxy.locator.lookup(ALICE) == []


async def test_unsigned_register_falls_back_to_digest(proxy: ProxyServer, sock: socket.socket) -> None:
    resp = await _final(sock, _register(sock, ALICE, "s5"), proxy.udp_address)
    assert resp.status == 401 and resp.headers.get("WWW-Authenticate")


async def test_wrong_pinned_fingerprint_stops_the_start(pkg: PkgNode, atlanta: DomainInit) -> None:
    other = init_domain("atlanta.com")
    server = create_proxy_server(_config(pkg, atlanta, pkg_fingerprint=other.signed.fingerprint))
    with pytest.raises(PinMismatch):
        await server.start()
    assert server.transports == {}  # nothing bound before the parameters checked


async def test_pkg_of_another_domain_stops_the_start(pkg: PkgNode, atlanta: DomainInit) -> None:
    server = create_proxy_server(_config(pkg, atlanta, domains="biloxi.com"))
    with pytest.raises(ValueError, match="not a domain this proxy serves"):
        await server.start()


def test_config_from_env() -> None:
    cfg = ProxyConfig.from_env({"SIPSEC_PROXY_PKG_TARGET": "pkg:50051", "SIPSEC_PROXY_PKG_PLAINTEXT": "1",
                                "SIPSEC_PROXY_PKG_FINGERPRINT": "ab"})
    assert (cfg.pkg_target, cfg.pkg_plaintext, cfg.pkg_fingerprint, cfg.pkg_ca) == ("pkg:50051", 1, "ab", "")
    with pytest.raises(ValueError):
        ProxyConfig(pkg_target="pkg:50051", pkg_plaintext=1, pkg_ca="/ca.pem")
