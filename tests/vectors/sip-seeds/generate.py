"""Write this project's own SIP fuzz seeds (``*.sip``) and ``SHA256SUMS.txt``.

Written for sipsec from RFC 3261's examples (§24, atlanta.com / biloxi.com) and the
header rules of RFC 3261 §7, §8, §20, RFC 3581 (rport), RFC 3428 (MESSAGE) and
RFC 3515 (REFER): ordinary requests and responses, the forms a parser must tolerate
(compact names, folded lines, LF-only line ends, odd spacing), and broken ones (bad Via,
bad URI, a missing end of headers, a short Content-Length). The fuzzer mutates them;
none is copied from another project's corpus.

    python tests/vectors/sip-seeds/generate.py   # rewrites the files next to it
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

SDP = (
    "v=0\r\no=alice 2890844526 2890844526 IN IP4 pc33.atlanta.com\r\ns=-\r\n"
    "c=IN IP4 192.0.2.101\r\nt=0 0\r\nm=audio 49172 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def _msg(start: str, headers: list[str], body: str = "", *, length: int | None = None, eol: str = "\r\n",
         end: bool = True) -> bytes:
    lines = [start, *headers]
    if length is not None or body or end:
        lines.append(f"Content-Length: {len(body.encode()) if length is None else length}")
    text = eol.join(lines) + eol + (eol if end else "") + body
    return text.encode("utf-8")


VIA = "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds"
DIALOG = [
    "Max-Forwards: 70",
    "To: Bob <sip:bob@biloxi.com>",
    "From: Alice <sip:alice@atlanta.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.atlanta.com",
]

SEEDS: dict[str, bytes] = {
    "invite.sip": _msg("INVITE sip:bob@biloxi.com SIP/2.0", [
        VIA, *DIALOG, "CSeq: 314159 INVITE", "Contact: <sip:alice@pc33.atlanta.com>",
        "Content-Type: application/sdp"], SDP),
    "invite-compact.sip": _msg("INVITE sip:bob@biloxi.com SIP/2.0", [
        "v: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8", "t: <sip:bob@biloxi.com>",
        "f: <sip:alice@atlanta.com>;tag=88sja8x", "i: 12345601@pc33.atlanta.com", "CSeq: 1 INVITE",
        "m: <sip:alice@192.0.2.101:5060;transport=udp>", "c: application/sdp", "k: 100rel",
        "Max-Forwards: 70"], SDP),
    "invite-folded.sip": _msg("INVITE sip:bob@biloxi.com SIP/2.0", [
        VIA, "Max-Forwards: 70", "To: Bob\r\n <sip:bob@biloxi.com>", "From: Alice <sip:alice@atlanta.com>\r\n\t;tag=9fxced76sl",
        "Call-ID: 3848276298220188511@atlanta.com", "CSeq: 2 INVITE",
        "Subject: a header folded\r\n over two lines", "Contact: <sip:alice@pc33.atlanta.com>"]),
    "invite-lf.sip": _msg("INVITE sip:bob@biloxi.com SIP/2.0", [
        VIA, *DIALOG, "CSeq: 3 INVITE", "Contact: <sip:alice@pc33.atlanta.com>",
        "Content-Type: application/sdp"], SDP.replace("\r\n", "\n"), eol="\n"),
    "invite-ipv4-route.sip": _msg("INVITE sip:bob@192.0.2.4:5060;transport=udp SIP/2.0", [
        "Via: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK74bf9;rport",
        "Route: <sip:ss1.atlanta.com;lr>, <sip:ss2.biloxi.com;lr>",
        "Record-Route: <sip:ss1.atlanta.com;lr>", *DIALOG, "CSeq: 4 INVITE",
        "Contact: \"Alice\" <sip:alice@192.0.2.101>;expires=3600;q=0.7", "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS",
        "Supported: replaces, timer", "Session-Expires: 1800;refresher=uac"]),
    "invite-bad-branch.sip": _msg("INVITE sip:bob@biloxi.com SIP/2.0", [
        "Via: SIP/2.0/UDP pc33.atlanta.com;branch=", *DIALOG, "CSeq: 5 INVITE"]),
    "invite-cseq-mismatch.sip": _msg("INVITE sip:bob@biloxi.com SIP/2.0", [
        VIA, *DIALOG, "CSeq: 6 BYE"]),
    "invite-no-callid.sip": _msg("INVITE sip:bob@biloxi.com SIP/2.0", [
        VIA, "Max-Forwards: 70", "To: <sip:bob@biloxi.com>", "From: <sip:alice@atlanta.com>;tag=1", "CSeq: 7 INVITE"]),
    "invite-two-callids.sip": _msg("INVITE sip:bob@biloxi.com SIP/2.0", [
        VIA, *DIALOG, "Call-ID: another@pc33.atlanta.com", "CSeq: 8 INVITE"]),
    "ack.sip": _msg("ACK sip:bob@192.0.2.4 SIP/2.0", [
        "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds9", "Max-Forwards: 70",
        "To: Bob <sip:bob@biloxi.com>;tag=a6c85cf", *DIALOG[2:], "CSeq: 314159 ACK"]),
    "bye.sip": _msg("BYE sip:alice@pc33.atlanta.com SIP/2.0", [
        "Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds10", "Max-Forwards: 70",
        "From: Bob <sip:bob@biloxi.com>;tag=a6c85cf", "To: Alice <sip:alice@atlanta.com>;tag=1928301774",
        "Call-ID: a84b4c76e66710@pc33.atlanta.com", "CSeq: 231 BYE"]),
    "cancel.sip": _msg("CANCEL sip:bob@biloxi.com SIP/2.0", [
        VIA, "Max-Forwards: 70", "To: Bob <sip:bob@biloxi.com>", "From: Alice <sip:alice@atlanta.com>;tag=1928301774",
        "Call-ID: a84b4c76e66710@pc33.atlanta.com", "CSeq: 314159 CANCEL"]),
    "register.sip": _msg("REGISTER sip:registrar.biloxi.com SIP/2.0", [
        "Via: SIP/2.0/UDP bobspc.biloxi.com:5060;branch=z9hG4bKnashds7", "Max-Forwards: 70",
        "To: Bob <sip:bob@biloxi.com>", "From: Bob <sip:bob@biloxi.com>;tag=456248",
        "Call-ID: 843817637684230@998sdasdh09", "CSeq: 1826 REGISTER",
        "Contact: <sip:bob@192.0.2.4>", "Expires: 7200"]),
    "register-star.sip": _msg("REGISTER sip:registrar.biloxi.com SIP/2.0", [
        "Via: SIP/2.0/UDP bobspc.biloxi.com:5060;branch=z9hG4bKnashds11", "Max-Forwards: 70",
        "To: <sip:bob@biloxi.com>", "From: <sip:bob@biloxi.com>;tag=456249",
        "Call-ID: 843817637684231@998sdasdh09", "CSeq: 1827 REGISTER", "Contact: *", "Expires: 0"]),
    "register-digest.sip": _msg("REGISTER sip:biloxi.com SIP/2.0", [
        "Via: SIP/2.0/UDP bobspc.biloxi.com:5060;branch=z9hG4bKnashds12", "Max-Forwards: 70",
        "To: <sip:bob@biloxi.com>", "From: <sip:bob@biloxi.com>;tag=456250",
        "Call-ID: 843817637684232@998sdasdh09", "CSeq: 1828 REGISTER", "Contact: <sip:bob@192.0.2.4>",
        'Authorization: Digest username="bob", realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",'
        ' uri="sip:biloxi.com", response="245f23415f11432b3434341c022", algorithm=MD5']),
    "register-short-nonce.sip": _msg("REGISTER sip:biloxi.com SIP/2.0", [
        "Via: SIP/2.0/UDP bobspc.biloxi.com:5060;branch=z9hG4bKnashds13", "Max-Forwards: 70",
        "To: <sip:bob@biloxi.com>", "From: <sip:bob@biloxi.com>;tag=456251",
        "Call-ID: 843817637684233@998sdasdh09", "CSeq: 1829 REGISTER",
        'Authorization: Digest username="bob", realm="biloxi.com", nonce="", uri="sip:biloxi.com", response=""']),
    "options.sip": _msg("OPTIONS sip:carol@chicago.com SIP/2.0", [
        "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKhjhs8ass877", "Max-Forwards: 70",
        "To: <sip:carol@chicago.com>", "From: Alice <sip:alice@atlanta.com>;tag=1928301775",
        "Call-ID: a84b4c76e66711", "CSeq: 63104 OPTIONS", "Contact: <sip:alice@pc33.atlanta.com>",
        "Accept: application/sdp"]),
    "message.sip": _msg("MESSAGE sip:user2@domain.com SIP/2.0", [
        "Via: SIP/2.0/TCP user1pc.domain.com;branch=z9hG4bK776sgdkse", "Max-Forwards: 70",
        "From: sip:user1@domain.com;tag=49583", "To: sip:user2@domain.com",
        "Call-ID: asd88asd77a@1.2.3.4", "CSeq: 1 MESSAGE", "Content-Type: text/plain"],
        "Watson, come here."),
    "refer.sip": _msg("REFER sip:b@atlanta.example.com SIP/2.0", [
        "Via: SIP/2.0/UDP agenta.atlanta.example.com;branch=z9hG4bK2293940223", "Max-Forwards: 70",
        "To: <sip:b@atlanta.example.com>", "From: <sip:a@atlanta.example.com>;tag=193402342",
        "Call-ID: 898234234@agenta.atlanta.example.com", "CSeq: 93809823 REFER",
        "Refer-To: <sip:c@atlanta.example.com?Replaces=12345%40192.0.2.1%3Bfrom-tag%3D1>",
        "Contact: sip:a@atlanta.example.com"]),
    "rport.sip": _msg("OPTIONS sip:bob@biloxi.com SIP/2.0", [
        "Via: SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bKrport1",
        "Via: SIP/2.0/UDP 10.0.0.2:5070;received=192.0.2.7;rport=5071;branch=z9hG4bKrport2",
        "Max-Forwards: 69", "To: <sip:bob@biloxi.com>", "From: <sip:alice@atlanta.com>;tag=r1",
        "Call-ID: rport-1@10.0.0.1", "CSeq: 1 OPTIONS"]),
    "tel-uri.sip": _msg("INVITE tel:+1-201-555-0123;phone-context=example.com SIP/2.0", [
        VIA, "Max-Forwards: 70", "To: <tel:+1-201-555-0123>", "From: <sip:alice@atlanta.com;user=phone>;tag=t1",
        "Call-ID: tel-1@pc33.atlanta.com", "CSeq: 1 INVITE"]),
    "ipv6.sip": _msg("INVITE sip:bob@[2001:db8::10]:5070;transport=tcp SIP/2.0", [
        "Via: SIP/2.0/TCP [2001:db8::9:1]:5060;branch=z9hG4bKv6a;received=[2001:db8::9:255]",
        "Max-Forwards: 70", "To: <sip:bob@[2001:db8::10]>", "From: <sip:alice@[2001:db8::9:1]>;tag=v6",
        "Call-ID: v6-1@[2001:db8::9:1]", "CSeq: 1 INVITE", "Contact: <sip:alice@[2001:db8::9:1]>"]),
    "bad-uri.sip": _msg("INVITE sip:bob@bil oxi.com;;=;transport= SIP/2.0", [
        VIA, "Max-Forwards: 70", "To: <sip:@>", "From: <sip:alice@atlanta.com:99999>;tag=b1",
        "Call-ID: bad-uri@pc33.atlanta.com", "CSeq: 1 INVITE", "Contact: <sips:alice@[::1;lr>"]),
    "bad-via-version.sip": _msg("OPTIONS sip:bob@biloxi.com SIP/2.0", [
        "Via: SIP/3.0/UDP pc33.atlanta.com;branch=z9hG4bKbv1", *DIALOG, "CSeq: 1 OPTIONS"]),
    "bad-via-host.sip": _msg("OPTIONS sip:bob@biloxi.com SIP/2.0", [
        "Via: SIP/2.0/UDP ;branch=z9hG4bKbv2", *DIALOG, "CSeq: 2 OPTIONS"]),
    "bad-via-only.sip": b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/\r\n\r\n",
    "request-line-only.sip": b"INVITE sip:bob@biloxi.com SIP/2.0\r\n\r\n",
    "no-end-of-headers.sip": _msg("SIP/2.0 200 OK", [
        VIA, "To: Bob <sip:bob@biloxi.com>;tag=a6c85cf", *DIALOG[2:], "CSeq: 314159 INVITE"], end=False),
    "short-body.sip": _msg("MESSAGE sip:bob@biloxi.com SIP/2.0", [
        VIA, *DIALOG, "CSeq: 9 MESSAGE", "Content-Type: text/plain"], "only part of it", length=40),
    "long-headers.sip": _msg("INVITE sip:bob@biloxi.com SIP/2.0", [
        *(f"Via: SIP/2.0/UDP proxy{i}.example.com;branch=z9hG4bKlong{i}" for i in range(12)),
        *DIALOG, "CSeq: 10 INVITE", "Contact: <sip:alice@pc33.atlanta.com>",
        "X-Padding: " + "a" * 900, "Subject: " + "long subject " * 40]),
    "response-100.sip": _msg("SIP/2.0 100 Trying", [
        VIA + ";received=192.0.2.101", "To: Bob <sip:bob@biloxi.com>", *DIALOG[2:], "CSeq: 314159 INVITE"]),
    "response-180.sip": _msg("SIP/2.0 180 Ringing", [
        VIA, "To: Bob <sip:bob@biloxi.com>;tag=a6c85cf", *DIALOG[2:], "CSeq: 314159 INVITE",
        "Contact: <sip:bob@192.0.2.4>", "Record-Route: <sip:ss2.biloxi.com;lr>, <sip:ss1.atlanta.com;lr>"]),
    "response-200-sdp.sip": _msg("SIP/2.0 200 OK", [
        VIA, "To: Bob <sip:bob@biloxi.com>;tag=a6c85cf", *DIALOG[2:], "CSeq: 314159 INVITE",
        "Contact: <sip:bob@192.0.2.4>", "Content-Type: application/sdp"], SDP.replace("alice", "bob")),
    "response-401.sip": _msg("SIP/2.0 401 Unauthorized", [
        "Via: SIP/2.0/UDP bobspc.biloxi.com:5060;branch=z9hG4bKnashds7;received=192.0.2.4",
        "To: Bob <sip:bob@biloxi.com>;tag=2493k59kd", "From: Bob <sip:bob@biloxi.com>;tag=456248",
        "Call-ID: 843817637684230@998sdasdh09", "CSeq: 1826 REGISTER",
        'WWW-Authenticate: Digest realm="biloxi.com", qop="auth", nonce="ea9c8e88df84f1cec4341ae6cbe5a359",'
        ' opaque="", stale=FALSE, algorithm=SHA-256']),
    "response-no-reason.sip": b"SIP/2.0 486 \r\nVia: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnr\r\n"
                              b"To: <sip:bob@biloxi.com>;tag=x\r\nFrom: <sip:alice@atlanta.com>;tag=y\r\n"
                              b"Call-ID: nr@pc33\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    "response-short.sip": b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
}


def main() -> None:
    for old in HERE.glob("*.sip"):
        old.unlink()
    for name, data in SEEDS.items():
        (HERE / name).write_bytes(data)
    sums = [f"{hashlib.sha256(path.read_bytes()).hexdigest()}  ./{path.name}"
            for path in sorted([*HERE.glob("*.sip"), HERE / "sip.dict"])]  # the dictionary is copied, not generated
    (HERE / "SHA256SUMS.txt").write_text("\n".join(sums) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
