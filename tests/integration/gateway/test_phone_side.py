"""The phone side secure by default: a password for every phone, throttled guessing, no squatting,
answers that do not tell which users exist, and a per-source rate of unauthenticated requests.

The phones are the test-driver UA (:mod:`tests.sipua`) on their own loopback addresses: the
attacker on 127.0.0.5 / 127.0.0.6, the real user on the domain's address.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from sipsec.aio import Peer, SipEndpoint
from sipsec.sip import Response, parse_message
from sipsec.sip.digest import DigestClient

from tests.integration.gateway.harness import Domain, TwoDomains, login
from tests.sipua import UserAgent

ALICE = "sip:alice@atlanta.com"


async def _ua(net: TwoDomains, host: str, user: str) -> UserAgent:
    endpoint = SipEndpoint()
    await endpoint.listen_udp(host, 0)
    endpoint.start()
    net.push(endpoint.close)
    return UserAgent(endpoint, user=user)


def _gw(domain: Domain) -> tuple[str, Peer]:
    host, port = domain.gateway.plain_address or ("", 0)
    return f"sip:{host}:{port}", Peer("UDP", host, port)


def _checked(domain: Domain) -> float:
    m = domain.gateway.metrics
    return (m.sample("sipsec_gateway_phone_auth_total", outcome="ok")
            + m.sample("sipsec_gateway_phone_auth_total", outcome="wrong"))


def _shape(resp: Response) -> tuple[Any, ...]:
    """What a scanner can compare between two answers: status, reason, header names, and the
    challenge with its nonce and opaque replaced by their lengths."""
    names = tuple(sorted({n.lower() for n, _ in resp.headers.items()}))
    challenge = ""
    for header in ("WWW-Authenticate", "Proxy-Authenticate"):
        for value in resp.headers.get_all_raw(header):
            parts = []
            for item in value.split(","):
                key, _, val = item.strip().partition("=")
                parts.append(f"{key}={len(val)}" if key.endswith(("nonce", "opaque")) else item.strip())
            challenge += ";".join(parts) + "|"
    return resp.status, resp.reason, names, challenge, len(resp.body)


async def test_login_generates_a_phone_password_shown_once() -> None:
    async with TwoDomains() as net:
        doc = await login(net.atlanta, "alice")
        password = doc["phone_password"]
        assert isinstance(password, str) and len(password) >= 16 and doc["phone_auth"] is True
        again = await login(net.atlanta, "alice")  # the same user again: not shown a second time
        assert "phone_password" not in again and again["phone_auth"] is True
        listed = (await net.atlanta.client.get("/v1/users")).json()["users"]
        assert all("phone_password" not in u for u in listed)
        given = await login(net.atlanta, "bob", phone_password="chosen by bob")
        assert "phone_password" not in given  # a password the caller chose is not echoed
        assert net.atlanta.gateway.settings["sip:bob@atlanta.com"].phone_password == "chosen by bob"


NO_RATE = {"atlanta.com": {"phone_rate": 0.0}}  # the guessing limits alone (the rate has its own test)


async def test_fifty_guesses_are_throttled_and_the_real_user_still_registers() -> None:
    async with TwoDomains(gateway_overrides=NO_RATE) as net:
        password = (await login(net.atlanta, "alice"))["phone_password"]
        registrar, gw = _gw(net.atlanta)
        attacker = await _ua(net, "127.0.0.5", "alice")
        answers: list[int] = []
        for i in range(50):
            resp = await attacker.register(registrar, ALICE, peer=gw, credentials=DigestClient("alice", f"guess{i}"))
            answers.append(resp.status)
        checked = _checked(net.atlanta)
        # 3 free wrong answers, then a back-off of 1 s, 2 s, 4 s ... during which nothing is checked
        assert checked <= 6, (checked, answers)
        assert answers.count(403) >= 44 and set(answers) <= {401, 403}
        # even the right password is refused, unchecked, from the guessing source while it is backed off
        right_from_attacker = await attacker.register(registrar, ALICE, peer=gw,
                                                      credentials=DigestClient("alice", password))
        assert right_from_attacker.status == 403 and _checked(net.atlanta) == checked
        assert ALICE not in net.atlanta.gateway.phones
        # the real user, from its own address, is not locked out
        phone = await _ua(net, "127.0.0.2", "alice")
        ok = await phone.register(registrar, ALICE, peer=gw, credentials=DigestClient("alice", password))
        assert ok.status == 200 and net.atlanta.gateway.phones[ALICE].peer.host == "127.0.0.2"
        m = net.atlanta.gateway.metrics
        assert m.sample("sipsec_gateway_phone_auth_total", outcome="throttled") >= 45
        assert m.sample("sipsec_gateway_phone_auth_total", outcome="ok") == 1


async def test_a_scan_over_many_names_from_one_source_exhausts_its_budget() -> None:
    overrides = {"atlanta.com": {"phone_source_failures": 5, "phone_rate": 0.0}}
    async with TwoDomains(gateway_overrides=overrides) as net:
        password = (await login(net.atlanta, "alice"))["phone_password"]
        registrar, gw = _gw(net.atlanta)
        scanner = await _ua(net, "127.0.0.6", "x")
        statuses = []
        for i in range(12):  # one guess per name: the per-name back-off alone would never start
            name = f"user{i}"
            resp = await scanner.register(registrar, f"sip:{name}@atlanta.com", peer=gw,
                                          credentials=DigestClient(name, "123456"))
            statuses.append(resp.status)
        assert statuses[:5] == [401] * 5 and statuses[5:] == [403] * 7, statuses
        assert _checked(net.atlanta) == 5
        phone = await _ua(net, "127.0.0.2", "alice")
        ok = await phone.register(registrar, ALICE, peer=gw, credentials=DigestClient("alice", password))
        assert ok.status == 200


async def test_a_register_scan_without_credentials_binds_nothing() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        await login(net.atlanta, "bob")
        registrar, gw = _gw(net.atlanta)
        scanner = await _ua(net, "127.0.0.5", "x")
        for name in ("alice", "bob", "carol", "nobody", "admin", "100"):
            resp = await scanner.register(registrar, f"sip:{name}@atlanta.com", peer=gw)
            assert resp.status == 401, (name, resp)
            unbind = await scanner.request("REGISTER", registrar, peer=gw, to=f"sip:{name}@atlanta.com",
                                           from_aor=f"sip:{name}@atlanta.com", headers=[("Expires", "0")])
            assert unbind.status == 401
        assert net.atlanta.gateway.phones == {}
        assert net.atlanta.gateway.metrics.sample("sipsec_gateway_registrations_total",
                                                  side="phone", outcome="ok") == 0


async def test_known_and_unknown_users_get_the_same_answers() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")  # logged in, with a phone password
        # carol exists at the PKG but is not logged in here; nobody exists nowhere
        registrar, gw = _gw(net.atlanta)
        scanner = await _ua(net, "127.0.0.5", "x")
        shapes: dict[str, list[tuple[Any, ...]]] = {}
        for name in ("alice", "carol", "nobody"):
            aor = f"sip:{name}@atlanta.com"
            got = shapes.setdefault(name, [])
            got.append(_shape(await scanner.register(registrar, aor, peer=gw)))
            # a wrong password is answered like no password: a fresh challenge
            got.append(_shape(await scanner.register(registrar, aor, peer=gw,
                                                     credentials=DigestClient(name, "wrong"))))
            for method in ("OPTIONS", "SUBSCRIBE", "MESSAGE"):
                got.append(_shape(await scanner.request(method, f"sip:{name}@atlanta.com", peer=gw,
                                                        from_aor=aor)))
            invite = await _invite_status(scanner, aor, gw)
            got.append(invite)
        assert shapes["alice"] == shapes["carol"] == shapes["nobody"], shapes
        assert shapes["alice"][0][0] == 401 and shapes["alice"][-1] == 407


async def _invite_status(ua: UserAgent, aor: str, gw: Peer) -> int:
    """The final status a phone claiming ``aor`` gets for an INVITE without credentials."""
    from tests.sipua import CallFailed

    ua.user = aor.split(":", 1)[1].split("@", 1)[0]
    try:
        await ua.call("sip:bob@biloxi.com", peer=gw, timeout=5)
    except CallFailed as exc:
        return exc.status
    return 200


async def test_unauthenticated_requests_are_rate_limited_per_source() -> None:
    overrides = {"atlanta.com": {"phone_rate": 5.0, "phone_burst": 10.0}}
    async with TwoDomains(gateway_overrides=overrides) as net:
        registrar, gw = _gw(net.atlanta)
        flooder = await _ua(net, "127.0.0.5", "x")
        statuses = [(await flooder.request("OPTIONS", registrar, peer=gw)).status for _ in range(30)]
        assert statuses.count(503) >= 15 and statuses[:10] == [200] * 10, statuses
        other = await _ua(net, "127.0.0.6", "y")
        assert (await other.request("OPTIONS", registrar, peer=gw)).status == 200
        assert net.atlanta.gateway.metrics.sample("sipsec_gateway_phone_requests_limited_total") >= 15
        assert net.atlanta.gateway.guard.entries <= 3 * net.atlanta.gateway.guard.settings.max_entries


async def test_an_invite_flood_past_the_rate_draws_one_503_each_and_keeps_no_transaction() -> None:
    overrides = {"atlanta.com": {"phone_rate": 1.0, "phone_burst": 5.0}}
    async with TwoDomains(gateway_overrides=overrides) as net:
        host, port = net.atlanta.gateway.plain_address or ("", 0)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.5", 0))
        sock.setblocking(False)
        net.push(_close, sock)
        me = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        for i in range(25):
            invite = (f"INVITE sip:bob@biloxi.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.5:{me};branch=z9hG4bKflood{i}\r\n"
                      f"Max-Forwards: 70\r\nFrom: <sip:alice@atlanta.com>;tag=f{i}\r\nTo: <sip:bob@biloxi.com>\r\n"
                      f"Call-ID: flood{i}@127.0.0.5\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
            await loop.sock_sendto(sock, invite.encode(), (host, port))
        answers: dict[str, list[int]] = {}
        deadline = loop.time() + 1.5  # past the first retransmission of any final response (T1 = 0.5 s)
        while (left := deadline - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), left)
            except TimeoutError:
                break
            msg = parse_message(data)
            assert isinstance(msg, Response)
            answers.setdefault(msg.call_id, []).append(msg.status)
        limited = [s for s in answers.values() if 503 in s]
        assert len(limited) >= 19, answers  # 5 admitted (the burst; ~1 token refilled meanwhile)
        # one final answer each (after the core's 100 Trying), never retransmitted
        assert all(s.count(503) == 1 and set(s) <= {100, 503} for s in limited), answers
        plain = net.atlanta.gateway.plain
        assert plain is not None
        assert len(plain.endpoint.core.server_transactions) <= 25 - len(limited)


async def _close(sock: socket.socket) -> None:
    sock.close()


async def test_a_digest_challenge_is_not_a_failed_call_setup() -> None:
    """Every call from a phone starts with a 407: counted ``challenged``, never ``failed`` (the
    setup-success SLO counts ``failed``; a challenge counted there made every phone call half a
    failure). A wrong password is still refused with a fresh challenge, also ``challenged``."""
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        _, gw = _gw(net.atlanta)
        phone = await _ua(net, "127.0.0.5", "alice")
        m = net.atlanta.gateway.metrics

        def setups(outcome: str) -> float:
            return m.sample("sipsec_gateway_call_setups_total", outcome=outcome, secure="false")

        before = {o: setups(o) for o in ("challenged", "failed")}
        assert await _invite_status(phone, ALICE, gw) == 407
        assert await _invite_status(phone, ALICE, gw) == 407
        assert setups("challenged") - before["challenged"] == 2
        assert setups("failed") - before["failed"] == 0
