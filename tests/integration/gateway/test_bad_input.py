"""Bad network input to the gateway's SIP sides: clear SIP errors, counted by reason, never a crash."""

from __future__ import annotations

import asyncio

from tests.integration.gateway.harness import TwoDomains, call, login


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)


def _invite(target: tuple[str, int], port: int, n: int, *, content_type: str, body: bytes) -> bytes:
    head = (
        f"INVITE sip:bob@biloxi.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.3:{port};branch=z9hG4bKbad{n}\r\n"
        f"Max-Forwards: 70\r\nTo: <sip:bob@biloxi.com>\r\n"
        f"From: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=t{n}\r\n"
        f"Call-ID: bad-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:x@127.0.0.3:{port}>\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _final(client: _Client) -> int:
    while True:
        data = await asyncio.wait_for(client.received.get(), 5)
        status = int(data.split(b" ", 2)[1])
        if status >= 200:
            return status


async def test_garbage_and_forged_envelopes_are_answered_and_counted() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        gw = net.biloxi.gateway
        loop = asyncio.get_running_loop()
        transport, client = await loop.create_datagram_endpoint(_Client, local_addr=("127.0.0.3", 0))
        try:
            port = transport.get_extra_info("sockname")[1]
            target = gw.sip_address
            transport.sendto(b"\x00\xffnot sip at all\r\n\r\n", target)
            transport.sendto(b"INVITE sip:bob@biloxi.com SIP/2.0\r\nVia: nonsense\r\n\r\n", target)
            smime = "application/pkcs7-mime; smime-type=authEnveloped-data; name=smime.p7m"
            transport.sendto(_invite(target, port, 1, content_type=smime, body=b"\x30\x03\x02\x01\x00"), target)
            assert await _final(client) == 400
            transport.sendto(_invite(target, port, 2, content_type=smime, body=bytes(range(256)) * 3), target)
            assert await _final(client) == 400
            transport.sendto(_invite(target, port, 3, content_type="application/sdp", body=b"v=0\r\n"), target)
            assert await _final(client) == 404  # bob is secure-only: answered as an unknown user
        finally:
            transport.close()
        assert gw.metrics.sample("sipsec_gateway_envelope_rejections_total", reason="malformed-cms") == 2
        assert gw.metrics.sample("sipsec_gateway_envelope_rejections_total", reason="policy") == 1
        placed = await call(net.atlanta, "sip:alice@atlanta.com", "sip:bob@biloxi.com")
        assert placed["state"] == "established"
