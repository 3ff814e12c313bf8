"""A gateway SIGKILLed while calls are being set up ends their phone legs once it is started again.

biloxi.com's gateway runs as a real process (``sipsec-gateway serve``, Redis store sealed with a
key file, :class:`tests.integration.gateway.test_restart.GatewayProcess`); bob's plain phone is
the test-driver UA. The gateway keeps a setup record of every phone leg it sets up, in its
replica's index of calls (:meth:`sipsec_gateway.store.RedisCallStore.replica_calls`), and on
start ends every leg it finds there that is not established on both sides:

- a call still ringing on the phone when the gateway died gets a CANCEL (the phone answers 487);
- a call the phone answered while the gateway was down (its 200 never ACKed) is ACKed and ended
  with BYE when the 200's retransmission reaches the restarted gateway;
- a phone leg established while its secured leg never was (the gateway died between the two
  answers) gets a BYE.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import sipsec.aio.transport
from sipsec.aio import SipEndpoint
from sipsec.sip import RequestReceived, ResponseReceived
from sipsec.sip.message import Request, Response, generate_call_id, generate_tag, make_response
from sipsec.sip.transaction import ServerTransaction
from sipsec_gateway.store import RedisCallStore

from tests.integration.gateway.harness import PASSWORD, TwoDomains, call, login, wait_for
from tests.integration.gateway.test_restart import (
    BOB,
    PHONE_PASSWORD,
    GatewayProcess,
    _bob_phone,
    biloxi_process,  # noqa: F401 - the fixture
)
from tests.sipua import CallState as PhoneState

ALICE = "sip:alice@atlanta.com"


async def _client(gateway: GatewayProcess) -> Any:
    for _ in range(100):  # the token file appears once the process has started
        if (gateway.workdir / "state" / "api-token").exists():
            return gateway.client()
        await asyncio.sleep(0.1)
    raise AssertionError(gateway.log())


async def test_calls_in_setup_are_ended_on_the_phone_after_a_sigkill(
        biloxi_process: tuple[TwoDomains, GatewayProcess], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    net, gateway = biloxi_process
    client = await _client(gateway)
    net.push(client.aclose)
    await gateway.until_ready(client, users=0)
    logged = await client.post("/v1/users", json={"aor": BOB, "password": PASSWORD,
                                                  "phone_password": PHONE_PASSWORD})
    assert logged.status_code == 201, logged.text
    await login(net.atlanta, "alice")
    with monkeypatch.context() as patch:
        # a phone that takes no ICMP errors (as most do): the port unreachable its 200 draws while
        # the gateway is down would otherwise fail every transaction with it, the ringing call's too
        patch.setattr(sipsec.aio.transport, "_ask_icmp_errors", lambda sock, family: None)
        phone, endpoint = await _bob_phone(net, gateway)
    net.push(endpoint.close)
    phone.auto_answer = False  # calls ring on the phone until the test answers them

    placed = [await call(net.atlanta, ALICE, BOB, wait=False) for _ in range(2)]
    ringing = [await asyncio.wait_for(phone.incoming.get(), 10) for _ in placed]
    assert all(c.state is PhoneState.CALLING for c in ringing)
    gateway.kill()  # SIGKILL: no CANCEL, nothing written on the way out

    rings_on, answered = ringing
    phone.answer(answered)  # its 200 goes to a dead port, and is sent again until ACKed
    gateway.start()
    await gateway.until_ready(client, users=1)

    # the one still ringing gets a CANCEL (487); the one answered meanwhile is ACKed, then gets a BYE
    await wait_for(lambda: rings_on.state is PhoneState.TERMINATED, 15)
    assert rings_on.final_status == 487, rings_on.statuses
    await wait_for(lambda: answered.state is PhoneState.TERMINATED, 15)
    assert answered.established.is_set(), answered.statuses  # ACKed before its BYE (RFC 3261 §15)
    assert not [c for c in phone.calls.values() if c.state is not PhoneState.TERMINATED]
    assert "2 phone leg(s) in set-up" in gateway.log()

    # the setup records are gone from the replica's index; a new call still reaches bob
    phone.auto_answer = True
    third = await call(net.atlanta, ALICE, BOB)
    assert third["state"] == "established", third
    hung = await net.atlanta.client.delete(f"/v1/calls/{third['id']}")
    assert hung.status_code == 200 and hung.json()["sip_status"] == 200, hung.text
    assert gateway.stop() == 0, gateway.log()


class _RawPhone:
    """A phone that records the requests it gets (answering each 200: a dialog it is in) and the
    responses it gets outside any transaction of its own."""

    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint
        self.requests: list[Request] = []
        self.responses: list[Response] = []
        endpoint.handler = self._handle

    def _handle(self, event: object) -> None:
        if isinstance(event, RequestReceived) and isinstance(event.transaction, ServerTransaction):
            self.requests.append(event.request)
            self.endpoint.send_response(event.transaction, make_response(event.request, 200))
        elif isinstance(event, ResponseReceived):
            self.responses.append(event.response)


async def test_a_phone_leg_whose_secured_leg_never_got_established_gets_a_bye(
        redis_url: str, tmp_path: Path) -> None:
    """The restart fell between the phone's answer (its leg's record written) and the secured
    answer (never sent): the record names a bridged leg that has none. The restarted gateway
    ends the phone leg with BYE and deletes the record; a call established on both legs is kept;
    a phone whose own INVITE was not answered yet gets 503 + Retry-After."""
    async with TwoDomains() as net:
        gateway = GatewayProcess(net, redis_url, tmp_path)
        endpoint = SipEndpoint()
        await endpoint.listen_udp(net.biloxi.host, 0)
        endpoint.start()
        net.push(endpoint.close)
        raw_phone = _RawPhone(endpoint)
        host, port = endpoint.transport("UDP").local_address
        store = RedisCallStore.from_url(redis_url, sealing_key=bytes.fromhex("11" * 32))
        replica = f"biloxi.com|{gateway.sip[0]}:{gateway.sip[1]}"

        def phone_leg(call_id: str, bridge: str, sip_call_id: str) -> dict[str, Any]:
            return {"id": call_id, "side": "plain", "direction": "outgoing", "local_aor": ALICE,
                    "peer_aor": BOB, "call_id": sip_call_id, "local": f"<{ALICE}>;tag={generate_tag()}",
                    "remote": f"<{BOB}>;tag={generate_tag()}", "remote_target": f"sip:bob@{host}:{port}",
                    "route_set": [], "local_seq": 1, "created": time.time(), "setup_ms": 5.0,
                    "bridge": bridge, "peer": ["UDP", host, port]}

        half, whole = generate_call_id(), generate_call_id()
        try:
            await store.put("a" * 16, half, phone_leg("a" * 16, "b" * 16, half), 600, replica)
            # a phone leg whose bridged (secured) leg is established too: its record is there
            await store.put("c" * 16, whole, phone_leg("c" * 16, "d" * 16, whole), 600, replica)
            secured = {**phone_leg("d" * 16, "c" * 16, generate_call_id()), "side": "secure",
                       "direction": "incoming"}
            await store.put("d" * 16, secured["call_id"], secured, 600, replica)
            # the phone called out; the gateway died before any final answer to it
            calling = generate_call_id()
            invite = (f"INVITE sip:alice@atlanta.com SIP/2.0\r\n"
                      f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{generate_tag()};rport\r\n"
                      f"From: <{BOB}>;tag={generate_tag()}\r\nTo: <sip:alice@atlanta.com>\r\n"
                      f"Call-ID: {calling}\r\nCSeq: 2 INVITE\r\nContact: <sip:bob@{host}:{port}>\r\n"
                      "Content-Length: 0\r\n\r\n")
            await store.put("e" * 16, calling, {
                "id": "e" * 16, "side": "plain", "direction": "incoming", "local_aor": BOB,
                "peer_aor": ALICE, "call_id": calling, "setup": True, "created": time.time(),
                "invite": invite, "local_tag": "gw-tag", "peer": ["UDP", host, port], "bridge": None,
            }, 300, replica)

            gateway.start()
            try:
                await wait_for(lambda: any(r.method == "BYE" for r in raw_phone.requests), 20)
                await asyncio.sleep(1.0)  # nothing else follows
                assert [(r.method, r.call_id) for r in raw_phone.requests] == [("BYE", half)]
                bye = raw_phone.requests[0]
                assert str(bye.uri) == f"sip:bob@{host}:{port}"  # the phone's Contact, from the record
                fresh = RedisCallStore.from_url(redis_url, sealing_key=bytes.fromhex("11" * 32))
                try:
                    left = {r["id"] for r in await fresh.replica_calls(replica)}
                finally:
                    await fresh.aclose()
                assert left == {"c" * 16, "d" * 16}, left  # the half one deleted, the whole one kept
                refused = [r for r in raw_phone.responses if r.call_id == calling]
                assert [(r.status, r.to_tag, r.headers.get("Retry-After")) for r in refused] == [(503, "gw-tag", "5")]
            finally:
                assert gateway.stop() == 0, gateway.log()
        finally:
            await store.aclose()
