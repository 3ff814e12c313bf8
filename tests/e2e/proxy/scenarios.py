"""sipp scenario XML for the proxy e2e tests (RFC 3665 flows), written into a test's tmp folder."""

from __future__ import annotations

from pathlib import Path

__all__ = ["register", "uac_call", "uac_cancel", "uac_reject", "uas_answer", "uas_cancel", "write"]

_SDP = """v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000"""

_HEAD = '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'


def _msg(text: str) -> str:
    lines = [ln.strip() for ln in text.strip("\n").splitlines()]
    return "<![CDATA[\n" + "\n".join(lines) + "\n\n]]>"


def _invite(max_forwards: int = 70, branch: str = "[branch]") -> str:
    return _msg(f"""
INVITE sip:[service]@[domain] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch}
Max-Forwards: {max_forwards}
From: "Alice" <sip:[caller]>;tag=[pid]-[call_number]
To: <sip:[service]@[domain]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:alice@[local_ip]:[local_port]>
Subject: RFC 3665 basic call
Content-Type: application/sdp
Content-Length: [len]

{_SDP}""")


def register() -> str:
    """REGISTER, 401 with a digest challenge, REGISTER with [authentication], 200 (RFC 3665 §2.1)."""
    common = """
From: <sip:[service]@[domain]>;tag=[pid]-[call_number]
To: <sip:[service]@[domain]>
Call-ID: [call_id]
Contact: <[contact]>
Expires: 3600"""
    first = _msg(f"""
REGISTER sip:[domain] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
Max-Forwards: 70{common}
CSeq: 1 REGISTER
Content-Length: 0""")
    second = _msg(f"""
REGISTER sip:[domain] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
Max-Forwards: 70{common}
CSeq: 2 REGISTER
[authentication]
Content-Length: 0""")
    return _HEAD + f"""<scenario name="register with digest">
<send retrans="500">{first}</send>
<recv response="401" auth="true"/>
<send retrans="500">{second}</send>
<recv response="200"/>
</scenario>
"""


def uac_call() -> str:
    """The caller of RFC 3665 §3.2 through Record-Routing proxies: INVITE, 180, 200, ACK, BYE, 200."""
    ack = _msg("""
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
Max-Forwards: 70
From: "Alice" <sip:[caller]>;tag=[pid]-[call_number]
To: <sip:[service]@[domain]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Content-Length: 0""")
    bye = _msg("""
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
Max-Forwards: 70
From: "Alice" <sip:[caller]>;tag=[pid]-[call_number]
To: <sip:[service]@[domain]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Content-Length: 0""")
    return _HEAD + f"""<scenario name="uac call">
<send retrans="500">{_invite()}</send>
<recv response="100" optional="true"/>
<recv response="180" optional="true"/>
<recv response="200" rrs="true"/>
<send>{ack}</send>
<send retrans="500">{bye}</send>
<recv response="200"/>
</scenario>
"""


def uac_reject(status: int, max_forwards: int = 70) -> str:
    """An INVITE that the proxy answers with ``status`` (then the ACK of §17.1.1.3)."""
    ack = _msg(f"""
ACK sip:[service]@[domain] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[pid]-[call_number]-inv
Max-Forwards: {max(max_forwards, 1)}
From: "Alice" <sip:[caller]>;tag=[pid]-[call_number]
To: <sip:[service]@[domain]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Content-Length: 0""")
    return _HEAD + f"""<scenario name="uac rejected {status}">
<send retrans="500">{_invite(max_forwards, "z9hG4bK-[pid]-[call_number]-inv")}</send>
<recv response="100" optional="true"/>
<recv response="{status}"/>
<send>{ack}</send>
</scenario>
"""


def uac_cancel() -> str:
    """RFC 3665 §3.8-style: INVITE, 180, CANCEL, 200 (CANCEL), 487 (INVITE), ACK."""
    branch = "z9hG4bK-[pid]-[call_number]-inv"
    cancel = _msg(f"""
CANCEL sip:[service]@[domain] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch}
Max-Forwards: 70
From: "Alice" <sip:[caller]>;tag=[pid]-[call_number]
To: <sip:[service]@[domain]>
Call-ID: [call_id]
CSeq: 1 CANCEL
Content-Length: 0""")
    ack = _msg(f"""
ACK sip:[service]@[domain] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch}
Max-Forwards: 70
From: "Alice" <sip:[caller]>;tag=[pid]-[call_number]
To: <sip:[service]@[domain]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Content-Length: 0""")
    return _HEAD + f"""<scenario name="uac cancel">
<send retrans="500">{_invite(70, branch)}</send>
<recv response="100" optional="true"/>
<recv response="180"/>
<send retrans="500">{cancel}</send>
<recv response="200"/>
<recv response="487"/>
<send>{ack}</send>
</scenario>
"""


def uas_answer() -> str:
    """The callee: 180 and 200 copying Record-Route (§12.1.1), then ACK, BYE, 200."""
    ringing = _msg("""
SIP/2.0 180 Ringing
[last_Via:]
[last_Record-Route:]
[last_From:]
[last_To:];tag=[pid]-[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:bob@[local_ip]:[local_port]>
Content-Length: 0""")
    ok = _msg(f"""
SIP/2.0 200 OK
[last_Via:]
[last_Record-Route:]
[last_From:]
[last_To:];tag=[pid]-[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:bob@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{_SDP}""")
    bye_ok = _msg("""
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0""")
    return _HEAD + f"""<scenario name="uas answer">
<recv request="INVITE"/>
<send>{ringing}</send>
<send retrans="500">{ok}</send>
<recv request="ACK" crlf="true"/>
<recv request="BYE"/>
<send>{bye_ok}</send>
<timewait milliseconds="500"/>
</scenario>
"""


def uas_cancel() -> str:
    """The callee of a cancelled call: 180, then CANCEL -> 200 and 487, then the ACK."""
    ringing = _msg("""
SIP/2.0 180 Ringing
[last_Via:]
[last_Record-Route:]
[last_From:]
[last_To:];tag=[pid]-[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:bob@[local_ip]:[local_port]>
Content-Length: 0""")
    cancel_ok = _msg("""
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]-[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0""")
    terminated = _msg("""
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]-[call_number]
[last_Call-ID:]
CSeq: 1 INVITE
Content-Length: 0""")
    return _HEAD + f"""<scenario name="uas cancel">
<recv request="INVITE"/>
<send>{ringing}</send>
<recv request="CANCEL"/>
<send>{cancel_ok}</send>
<send retrans="500">{terminated}</send>
<recv request="ACK"/>
<timewait milliseconds="200"/>
</scenario>
"""


def write(folder: Path, name: str, xml: str) -> str:
    path = folder / name
    path.write_text(xml, encoding="iso-8859-1")
    return str(path)
