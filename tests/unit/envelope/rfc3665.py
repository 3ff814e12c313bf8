"""The RFC 3665 §3.1 basic call flow (with the 100 Trying of §3.2 and a session end) and a drive of it through the envelope.

Messages follow RFC 3665's examples (atlanta.example.com / biloxi.example.com), with the
User-Agent/Server, Allow and Supported headers real phones send. Used by the unit and
integration tests and by ``bench/envelope.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sipsec import ibc
from sipsec.envelope import Compression, Keyring, Opened, Sealed, SigningPolicy, open_message, seal
from sipsec.sip import Request, Response, parse_message
from sipsec.stores.envelope import (
    DialogStore,
    InMemoryDialogStore,
    InMemoryReplayCache,
    ReplayCache,
)

ALICE = "sip:alice@atlanta.example.com"
BOB = "sip:bob@biloxi.example.com"
CALL_ID = "3848276298220188511@atlanta.example.com"
ALICE_TAG = "9fxced76sl"
BOB_TAG = "8321234356"

_SDP_ALICE = (
    "v=0\r\n"
    "o=alice 2890844526 2890844526 IN IP4 client.atlanta.example.com\r\n"
    "s=-\r\n"
    "c=IN IP4 192.0.2.101\r\n"
    "t=0 0\r\n"
    "m=audio 49172 RTP/AVP 0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
)
_SDP_BOB = (
    "v=0\r\n"
    "o=bob 2890844527 2890844527 IN IP4 client.biloxi.example.com\r\n"
    "s=-\r\n"
    "c=IN IP4 192.0.2.201\r\n"
    "t=0 0\r\n"
    "m=audio 3456 RTP/AVP 0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
)

_VIA_A = "Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9"
_VIA_B = "Via: SIP/2.0/TCP client.biloxi.example.com:5060;branch=z9hG4bKnashds7"
_FROM_A = f"From: Alice <{ALICE}>;tag={ALICE_TAG}"
_TO_B = f"To: Bob <{BOB}>"
_TO_B_TAG = f"To: Bob <{BOB}>;tag={BOB_TAG}"
_CONTACT_A = "Contact: <sip:alice@client.atlanta.example.com;transport=tcp>"
_CONTACT_B = "Contact: <sip:bob@client.biloxi.example.com;transport=tcp>"
_ALLOW = "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE"


def _msg(*lines: str, body: str = "") -> Request | Response:
    text = "\r\n".join(lines) + f"\r\nContent-Length: {len(body.encode())}\r\n\r\n" + body
    return parse_message(text.encode())


def invite(call_id: str = CALL_ID) -> Request:
    m = _msg(
        f"INVITE {BOB} SIP/2.0", _VIA_A, "Max-Forwards: 70", _FROM_A, _TO_B,
        f"Call-ID: {call_id}", "CSeq: 1 INVITE", _CONTACT_A,
        "User-Agent: AtlantaPhone/2.1 (SoftPhone)", _ALLOW, "Supported: replaces, timer",
        "Subject: Lunch?", "Content-Type: application/sdp", body=_SDP_ALICE,
    )
    assert isinstance(m, Request)
    return m


def _bob_response(status: str, call_id: str, *, to_tag: bool, contact: bool, sdp: bool,
                  cseq: str = "1 INVITE") -> Response:
    lines = [f"SIP/2.0 {status}", _VIA_A, _FROM_A, _TO_B_TAG if to_tag else _TO_B,
             f"Call-ID: {call_id}", f"CSeq: {cseq}"]
    if contact:
        lines.append(_CONTACT_B)
    lines.append("Server: BiloxiPhone/5.0")
    if sdp:
        lines += [_ALLOW, "Supported: replaces", "Content-Type: application/sdp"]
    m = _msg(*lines, body=_SDP_BOB if sdp else "")
    assert isinstance(m, Response)
    return m


def trying(call_id: str = CALL_ID) -> Response:
    return _bob_response("100 Trying", call_id, to_tag=False, contact=False, sdp=False)


def ringing(call_id: str = CALL_ID) -> Response:
    return _bob_response("180 Ringing", call_id, to_tag=True, contact=True, sdp=False)


def ok_invite(call_id: str = CALL_ID) -> Response:
    return _bob_response("200 OK", call_id, to_tag=True, contact=True, sdp=True)


def ack(call_id: str = CALL_ID) -> Request:
    m = _msg(
        "ACK sip:bob@client.biloxi.example.com;transport=tcp SIP/2.0",
        "Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bd5",
        "Max-Forwards: 70", _FROM_A, _TO_B_TAG, f"Call-ID: {call_id}", "CSeq: 1 ACK",
    )
    assert isinstance(m, Request)
    return m


def bye(call_id: str = CALL_ID) -> Request:
    m = _msg(
        "BYE sip:alice@client.atlanta.example.com;transport=tcp SIP/2.0", _VIA_B,
        "Max-Forwards: 70", f"From: Bob <{BOB}>;tag={BOB_TAG}",
        f"To: Alice <{ALICE}>;tag={ALICE_TAG}", f"Call-ID: {call_id}", "CSeq: 231 BYE",
        "User-Agent: BiloxiPhone/5.0",
    )
    assert isinstance(m, Request)
    return m


def ok_bye(call_id: str = CALL_ID) -> Response:
    m = _msg(
        "SIP/2.0 200 OK", _VIA_B, f"From: Bob <{BOB}>;tag={BOB_TAG}",
        f"To: Alice <{ALICE}>;tag={ALICE_TAG}", f"Call-ID: {call_id}", "CSeq: 231 BYE",
        "Server: AtlantaPhone/2.1 (SoftPhone)",
    )
    assert isinstance(m, Response)
    return m


def cancel(call_id: str = CALL_ID) -> Request:
    m = _msg(
        f"CANCEL {BOB} SIP/2.0", _VIA_A, "Max-Forwards: 70", _FROM_A, _TO_B,
        f"Call-ID: {call_id}", "CSeq: 1 CANCEL", "User-Agent: AtlantaPhone/2.1 (SoftPhone)",
    )
    assert isinstance(m, Request)
    return m


def ok_cancel(call_id: str = CALL_ID) -> Response:
    return _bob_response("200 OK", call_id, to_tag=True, contact=False, sdp=False,
                         cseq="1 CANCEL")


def request_terminated(call_id: str = CALL_ID) -> Response:
    return _bob_response("487 Request Terminated", call_id, to_tag=True, contact=False, sdp=False)


# --- parties ------------------------------------------------------------------------------


@dataclass
class Pki:
    """Two domains and their users' keys for the current and previous period."""

    atlanta_master: ibc.MasterSecret
    atlanta: ibc.DomainParams
    biloxi_master: ibc.MasterSecret
    biloxi: ibc.DomainParams
    now: float

    @classmethod
    def create(cls, now: float | None = None) -> Pki:
        t = time.time() if now is None else now
        am, ap = ibc.setup("atlanta.example.com")
        bm, bp = ibc.setup("biloxi.example.com")
        return cls(am, ap, bm, bp, t)

    def params_of(self, aor: str) -> tuple[ibc.MasterSecret, ibc.DomainParams]:
        if aor.endswith("@atlanta.example.com"):
            return self.atlanta_master, self.atlanta
        return self.biloxi_master, self.biloxi

    def keyring(self, aor: str, *, periods: tuple[int, ...] | None = None) -> Keyring:
        master, params = self.params_of(aor)
        current = params.policy.current(self.now)
        wanted = periods if periods is not None else (current, current - 1)
        sig = [ibc.extract(master, params, params.identity(aor, ibc.Purpose.SIG, p)) for p in wanted]
        enc = [ibc.extract(master, params, params.identity(aor, ibc.Purpose.ENC, p)) for p in wanted]
        return Keyring.create(aor, sig_keys=sig, enc_keys=enc, domains=[self.atlanta, self.biloxi])


@dataclass
class Party:
    keys: Keyring
    dialogs: DialogStore = field(default_factory=InMemoryDialogStore)
    replay: ReplayCache = field(default_factory=InMemoryReplayCache)


@dataclass
class Step:
    """One message of a flow: who sent it, the inner original, the outer sealed, the opened one."""

    name: str
    inner: Request | Response
    sealed: Sealed
    opened: Opened


@dataclass
class CallRun:
    steps: list[Step]

    @property
    def plain_bytes(self) -> int:
        return sum(len(s.inner.to_bytes()) for s in self.steps)

    @property
    def secured_bytes(self) -> int:
        return sum(len(s.sealed.message.to_bytes()) for s in self.steps)


async def _deliver(receiver: Party, outer: Request | Response, policy: SigningPolicy,
                   now: float) -> Opened:
    wire = parse_message(outer.to_bytes())  # what the network carries, re-parsed
    return await open_message(wire, receiver.keys, receiver.dialogs, receiver.replay,
                              policy=policy, now=now)


async def run_basic_call(
    alice: Party,
    bob: Party,
    policy: SigningPolicy,
    *,
    now: float | None = None,
    call_id: str = CALL_ID,
    on_step: Callable[[Step], None] | None = None,
    compression: Compression = Compression.SIP_DICTIONARY,
) -> CallRun:
    """INVITE, 100, 180, 200, ACK, BYE (from Bob), 200 — each sealed, sent, opened and compared."""
    t = time.time() if now is None else now
    steps: list[Step] = []

    def record(name: str, inner: Request | Response, sealed: Sealed, opened: Opened) -> None:
        step = Step(name, inner, sealed, opened)
        steps.append(step)
        if on_step is not None:
            on_step(step)

    inv = invite(call_id)
    s_inv = seal(inv, alice.keys, BOB, policy, now=t, compression=compression)
    await alice.dialogs.put(s_inv.dialog, 3600, t)
    o_inv = await _deliver(bob, s_inv.message, policy, t)
    assert isinstance(o_inv.outer, Request)
    record("INVITE", inv, s_inv, o_inv)
    bob_dialog = o_inv.dialog
    for name, resp in (("100", trying(call_id)), ("180", ringing(call_id)), ("200", ok_invite(call_id))):
        s = seal(resp, bob.keys, bob_dialog, policy, in_reply_to=o_inv.outer, now=t, compression=compression)
        record(name, resp, s, await _deliver(alice, s.message, policy, t))
    a = ack(call_id)
    s_ack = seal(a, alice.keys, s_inv.dialog, policy, now=t, compression=compression)
    record("ACK", a, s_ack, await _deliver(bob, s_ack.message, policy, t))
    b = bye(call_id)
    s_bye = seal(b, bob.keys, bob_dialog, policy, now=t, compression=compression)
    o_bye = await _deliver(alice, s_bye.message, policy, t)
    assert isinstance(o_bye.outer, Request)
    record("BYE", b, s_bye, o_bye)
    ok = ok_bye(call_id)
    s_ok = seal(ok, alice.keys, o_bye.dialog, policy, in_reply_to=o_bye.outer, now=t, compression=compression)
    record("200-BYE", ok, s_ok, await _deliver(bob, s_ok.message, policy, t))
    return CallRun(steps)


async def run_cancelled_call(
    alice: Party, bob: Party, policy: SigningPolicy, *, now: float | None = None,
    call_id: str = CALL_ID,
) -> CallRun:
    """INVITE, 180, CANCEL, 200 (CANCEL), 487, ACK — each sealed and opened."""
    t = time.time() if now is None else now
    steps: list[Step] = []
    inv = invite(call_id)
    s_inv = seal(inv, alice.keys, BOB, policy, now=t)
    await alice.dialogs.put(s_inv.dialog, 3600, t)
    o_inv = await _deliver(bob, s_inv.message, policy, t)
    assert isinstance(o_inv.outer, Request)
    steps.append(Step("INVITE", inv, s_inv, o_inv))
    r = ringing(call_id)
    s_r = seal(r, bob.keys, o_inv.dialog, policy, in_reply_to=o_inv.outer, now=t)
    steps.append(Step("180", r, s_r, await _deliver(alice, s_r.message, policy, t)))
    c = cancel(call_id)
    s_c = seal(c, alice.keys, s_inv.dialog, policy, now=t)
    o_c = await _deliver(bob, s_c.message, policy, t)
    assert isinstance(o_c.outer, Request)
    steps.append(Step("CANCEL", c, s_c, o_c))
    okc = ok_cancel(call_id)
    s_okc = seal(okc, bob.keys, o_inv.dialog, policy, in_reply_to=o_c.outer, now=t)
    steps.append(Step("200-CANCEL", okc, s_okc, await _deliver(alice, s_okc.message, policy, t)))
    term = request_terminated(call_id)
    s_t = seal(term, bob.keys, o_inv.dialog, policy, in_reply_to=o_inv.outer, now=t)
    steps.append(Step("487", term, s_t, await _deliver(alice, s_t.message, policy, t)))
    a = _msg(
        f"ACK {BOB} SIP/2.0", _VIA_A, "Max-Forwards: 70", _FROM_A, _TO_B_TAG,
        f"Call-ID: {call_id}", "CSeq: 1 ACK",
    )
    assert isinstance(a, Request)
    s_a = seal(a, alice.keys, s_inv.dialog, policy, now=t)
    steps.append(Step("ACK-487", a, s_a, await _deliver(bob, s_a.message, policy, t)))
    return CallRun(steps)
