"""``sipsec load``'s phones against real gateways: the ACK of an authorized INVITE's 2xx."""

from __future__ import annotations

from sipsec.sip import Event, ResponseReceived
from sipsec_cli.load.phone import PhoneHost
from sipsec_gateway.state import CallState

from tests.integration.gateway.harness import TwoDomains, login, wait_for


async def test_a_load_phone_acks_the_2xx_of_the_invite_it_authorized() -> None:
    """The phone answers the 407 with a new INVITE (CSeq 2); its ACK for the 2xx must carry that
    CSeq (RFC 3261 §13.2.2.4). An ACK with the first INVITE's CSeq matches nothing: the gateway
    kept retransmitting its 200 OK to every load phone until the call ended (and, once a run's
    phones were gone, drew ICMP port-unreachable errors)."""
    async with TwoDomains() as net:
        alice = await login(net.atlanta, "alice")
        bob = await login(net.biloxi, "bob")
        phones = []
        for domain, user, doc in ((net.atlanta, "alice", alice), (net.biloxi, "bob", bob)):
            gateway = domain.gateway
            assert gateway.plain is not None
            host, port = gateway.plain.address
            phone = PhoneHost(host, (host, port), domain.name)
            await phone.start()
            net.push(phone.close)
            phone.add_user(user, doc["phone_password"])
            assert await phone.register(user) == 200
            phones.append(phone)

        oks: list[ResponseReceived] = []  # every 200 OK to an INVITE that reaches alice's phone
        handler = phones[0].endpoint.handler
        assert handler is not None

        def counting(event: Event) -> None:
            if isinstance(event, ResponseReceived) and event.response.status == 200 \
                    and event.response.cseq.method == "INVITE":
                oks.append(event)
            handler(event)

        phones[0].endpoint.handler = counting
        # held 2 s: an unmatched ACK leaves the 2xx retransmitted at 0.5 s and 1.5 s (T1 doubling)
        outcome = await phones[0].call("alice", "bob@biloxi.com", hold_s=2.0, timeout=10)
        assert outcome.failure == "" and outcome.setup_s is not None, outcome

        plain = net.atlanta.gateway.plain
        assert plain is not None
        # alice's phone's INVITE that got through (its first one was challenged: 407)
        legs = [c for c in plain.calls.values() if c.direction == "incoming" and c.state in (CallState.ESTABLISHED,
                                                                                              CallState.ENDED)]
        assert len(legs) == 1, list(plain.calls.values())
        await wait_for(lambda: legs[0].acked, timeout=2.0)
        assert len(oks) == 1, oks  # the gateway's 200 OK came once: the phone's ACK stopped it
