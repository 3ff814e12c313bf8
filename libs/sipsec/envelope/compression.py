"""Content compression of the envelope: raw DEFLATE (RFC 1951) with a static SIP/SDP/CMS preset dictionary, bounded on output.

Why a private algorithm and not ``id-alg-zlibCompress``
-------------------------------------------------------
RFC 3274 names plain zlib (``id-alg-zlibCompress``, RFC 1950 framing, no preset
dictionary: RFC 1950 §2.3 allows a preset dictionary only where the enclosing format
specifies one, and RFC 3274 specifies none). The preset dictionary is therefore part of
*our* algorithm, named by a private OID (:mod:`sipsec.envelope.oids`), which also says how
the stream is framed:

* ``id-sipsec-alg-deflate-sipdict-v2`` — a raw DEFLATE stream (RFC 1951: no zlib header,
  DICTID or Adler-32 trailer) compressed with the preset dictionary :data:`DICTIONARY_V1`;
* ``id-sipsec-alg-deflate-sipdict-dialog-v2`` — the same, the dictionary extended by the
  dialog's first request (:func:`dictionary`).

Why raw DEFLATE: the zlib framing of the retired v1 algorithms (``…-zlib-sipdict-v1``,
``…-zlib-sipdict-dialog-v1``) spent 10 bytes a message on things nothing needs here — the
DICTID repeats what the OID already says, and the Adler-32 checks integrity that AES-GCM
(RFC 5084) and the signature already guarantee (the decompressor only ever runs on
GCM-authenticated content). Wire formats are never edited: the new framing got new OIDs
(``…-v2``), and the dictionary, unchanged, stays :data:`DICTIONARY_V1`. v1 bodies are not
read any more: every sender of them also wrote 16-byte GCM tags, which the envelope now
refuses (:mod:`sipsec.envelope.cms`), so a v1 reader could never run.

The dictionary (the idea of SigComp's static SIP/SDP dictionary, RFC 3485, written anew)
holds generic tokens only — SDP lines, reason phrases, header names and common values,
methods, and the DER skeleton of the SignedData sipsec writes (its OIDs and fixed framing),
least frequent first (DEFLATE reaches the end of the dictionary with the shortest distances).
It contains no host, user or product name. It is wire format: it is never edited; a new
dictionary gets a new OID. :data:`DICT_ID_V1` (its Adler-32, the RFC 1950 DICTID v1 wrote)
pins its bytes in a test.

Decompression is bounded (:data:`MAX_DECOMPRESSED_BYTES`): a body that would inflate past
the bound, is truncated, carries trailing bytes or is not valid DEFLATE raises
:class:`~sipsec.envelope.errors.MalformedEnvelope` (400 ``malformed-cms``). A stream
compressed with another dictionary is not recognised by the decompressor itself (raw
DEFLATE names none); it inflates to other bytes or fails, and those bytes then fail the
strict parse of the SignedData or MIME entity (400 ``malformed-cms``) or the signature.
"""

from __future__ import annotations

import zlib

from sipsec.envelope import _der as der
from sipsec.envelope import oids
from sipsec.envelope.errors import MalformedEnvelope

__all__ = [
    "DICTIONARY_V1",
    "DICT_ID_V1",
    "MAX_DECOMPRESSED_BYTES",
    "MAX_PRIMER_BYTES",
    "compress",
    "decompress",
    "dictionary",
]

#: Upper bound of a decompressed content: a SIP message over UDP is at most 65,535 bytes
#: (RFC 3261 §18.1.1 / the UDP datagram), and a SignedData adds well under 1 KiB to it.
MAX_DECOMPRESSED_BYTES = 64 * 1024 + 1024
#: How much of a dialog's first request extends its dictionary (and is kept in the dialog
#: record): a typical INVITE's SignedData is 1–2 KiB, a large WebRTC offer ~6 KiB.
MAX_PRIMER_BYTES = 8 * 1024

_SDP = (
    b"v=0\r\no=- 0 0 IN IP4 \r\ns=-\r\nc=IN IP4 \r\nc=IN IP6 \r\nb=AS:64\r\nb=TIAS:\r\nt=0 0\r\n"
    b"m=video 0 RTP/AVP 96 97\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 profile-level-id=42e01f;"
    b"packetization-mode=1\r\na=rtpmap:97 VP8/90000\r\na=rtcp-fb:* nack pli\r\n"
    b"m=audio 0 RTP/SAVP 0 8 9 18 101\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"
    b"a=rtpmap:9 G722/8000\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\n"
    b"a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
    b"a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\na=maxptime:150\r\na=rtcp:\r\na=rtcp-mux\r\na=ice-ufrag:\r\na=ice-pwd:\r\n"
    b"a=candidate:\r\na=setup:actpass\r\na=fingerprint:sha-256 \r\na=inactive\r\n"
    b"a=recvonly\r\na=sendonly\r\na=sendrecv\r\n"
    b"o=user 0 0 IN IP4 \r\ns=-\r\nc=IN IP4 \r\nt=0 0\r\nm=audio  RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)

_PHRASES = (
    b"SIP/2.0 603 Decline\r\nSIP/2.0 600 Busy Everywhere\r\nSIP/2.0 504 Server Time-out\r\n"
    b"SIP/2.0 503 Service Unavailable\r\nSIP/2.0 501 Not Implemented\r\n"
    b"SIP/2.0 500 Server Internal Error\r\nSIP/2.0 493 Undecipherable\r\n"
    b"SIP/2.0 491 Request Pending\r\nSIP/2.0 489 Bad Event\r\nSIP/2.0 488 Not Acceptable Here\r\n"
    b"SIP/2.0 484 Address Incomplete\r\nSIP/2.0 483 Too Many Hops\r\n"
    b"SIP/2.0 482 Loop Detected\r\nSIP/2.0 481 Call/Transaction Does Not Exist\r\n"
    b"SIP/2.0 480 Temporarily Unavailable\r\nSIP/2.0 423 Interval Too Brief\r\n"
    b"SIP/2.0 422 Session Interval Too Small\r\nSIP/2.0 421 Extension Required\r\n"
    b"SIP/2.0 420 Bad Extension\r\nSIP/2.0 415 Unsupported Media Type\r\n"
    b"SIP/2.0 408 Request Timeout\r\nSIP/2.0 407 Proxy Authentication Required\r\n"
    b"SIP/2.0 405 Method Not Allowed\r\nSIP/2.0 404 Not Found\r\nSIP/2.0 403 Forbidden\r\n"
    b"SIP/2.0 401 Unauthorized\r\nSIP/2.0 400 Bad Request\r\nSIP/2.0 302 Moved Temporarily\r\n"
    b"SIP/2.0 202 Accepted\r\nSIP/2.0 183 Session Progress\r\nSIP/2.0 181 Call Is Being Forwarded\r\n"
    b"SIP/2.0 486 Busy Here\r\nSIP/2.0 487 Request Terminated\r\n"
)

_METHODS = (
    b"PUBLISH sip:UPDATE sip:PRACK sip:INFO sip:MESSAGE sip:REFER sip:NOTIFY sip:SUBSCRIBE sip:"
    b"OPTIONS sip:REGISTER sip:CANCEL sip:BYE sip:ACK sip:"
)

_HEADERS = (
    b"\r\nWWW-Authenticate: Digest realm=\"\", nonce=\"\", opaque=\"\", algorithm=SHA-256, qop=\"auth\""
    b"\r\nProxy-Authenticate: Digest realm=\"\r\nAuthorization: Digest username=\""
    b"\r\nProxy-Authorization: Digest username=\"\", uri=\"sip:\", response=\"\", cnonce=\"\", nc=00000001"
    b"\r\nAuthentication-Info: \r\nAccept-Encoding: \r\nAccept-Language: en\r\nAlert-Info: "
    b"\r\nCall-Info: \r\nError-Info: \r\nIn-Reply-To: \r\nOrganization: \r\nPriority: urgent"
    b"\r\nReply-To: \r\nRetry-After: \r\nTimestamp: \r\nUnsupported: \r\nWarning: 399 "
    b"\r\nMIME-Version: 1.0\r\nContent-Encoding: \r\nContent-Language: "
    b"\r\nContent-Disposition: session\r\nEvent: presence\r\nEvent: refer\r\nEvent: dialog"
    b"\r\nSubscription-State: active;expires=\r\nSubscription-State: terminated;reason="
    b"\r\nRefer-To: <sip:\r\nReferred-By: <sip:\r\nReplaces: \r\nRSeq: \r\nRAck: "
    b"\r\nPath: <sip:\r\nService-Route: <sip:\r\nP-Asserted-Identity: <sip:"
    b"\r\nP-Preferred-Identity: <sip:\r\nPrivacy: id\r\nReason: SIP;cause=200;text=\""
    b"\r\nSession-Expires: 1800;refresher=uac\r\nMin-SE: 90\r\nMin-Expires: 60"
    b"\r\nRequire: 100rel\r\nProxy-Require: \r\nAllow-Events: presence, dialog, refer, talk, hold"
    b"\r\nAccept: application/sdp, application/pkcs7-mime\r\nSupported: path, gruu, outbound, sipsec"
    b"\r\nRecord-Route: <sip:\r\nRoute: <sip:;lr>\r\nExpires: 3600\r\nDate: "
    b"\r\nOrganization: \r\nSubject: \r\nUser-Agent: \r\nServer: "
    b"\r\nAllow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, UPDATE, PRACK"
    b"\r\nSupported: replaces, timer, 100rel\r\nContent-Type: application/sdp"
    b"\r\nVia: SIP/2.0/UDP :5060;rport;received=\r\nVia: SIP/2.0/TLS :5061;branch=z9hG4bK"
    b"\r\nContact: <sip:;transport=udp>;expires=\r\nContact: <sip:;transport=tls>;+sip.instance=\"<urn:uuid:"
    b"\r\nSIP/2.0 200 OK\r\nSIP/2.0 180 Ringing\r\nSIP/2.0 100 Trying"
    b"\r\nVia: SIP/2.0/TCP :5060;branch=z9hG4bK\r\nMax-Forwards: 70\r\nFrom: <sip:>;tag="
    b"\r\nTo: <sip:>;tag=\r\nCall-ID: @\r\nCSeq: 1 INVITE\r\nCSeq: 1 ACK\r\nCSeq: 1 BYE"
    b"\r\nContact: <sip:;transport=tcp>\r\nContent-Length: 0\r\n\r\n"
    b"INVITE sip: SIP/2.0\r\nContent-Type: message/sip\r\n\r\n"
)


def _signed_data_skeleton() -> bytes:
    """The fixed bytes of the SignedData sipsec writes, in order, with variable fields left out."""
    sha256 = der.seq(der.oid(oids.ID_SHA256))
    return b"".join([
        b"\x30\x82\x02\x02\x01\x03\x31" + bytes([len(sha256)]) + sha256,
        b"\x30\x82\x06\x09" + der.oid(oids.ID_DATA)[2:] + b"\xa0\x82\x04\x82",
        b"\x31\x82\x30\x82\x02\x01\x03\x80",  # signerInfos, version 3, sid [0]
        b"\x30\x0csip:",  # the signer's SipsecIdentity: AOR, period, the 30-day period length
        b"\x02\x02" + der.integer(30 * 86400) + sha256 + b"\xa0\x81",
        der.seq(der.oid(oids.ID_CONTENT_TYPE), der.set_of(der.oid(oids.ID_DATA))),
        der.oid(oids.ID_MESSAGE_DIGEST) + b"\x31\x22\x04\x20",
        der.oid(oids.ID_SIGNING_TIME) + b"\x31\x0f\x17\x0d",
        der.oid(oids.ID_SIPSEC_AA_NONCE) + b"\x31\x0e\x04\x0c",
        der.seq(der.oid(oids.ID_SIPSEC_SIG_CC_BLS12381)) + b"\x04\x60",
    ])


#: The preset dictionary of ``id-sipsec-alg-deflate-sipdict-v2`` (wire format: never edit).
DICTIONARY_V1: bytes = _SDP + _PHRASES + _METHODS + _HEADERS + _signed_data_skeleton()
#: Its Adler-32 (the RFC 1950 DICTID of the retired zlib framing): pins the dictionary's bytes.
DICT_ID_V1: int = zlib.adler32(DICTIONARY_V1)


def dictionary(primer: bytes = b"") -> bytes:
    """The preset dictionary: :data:`DICTIONARY_V1`, extended by a dialog's ``primer`` when given.

    zlib uses the last 32 KiB of a dictionary, so the primer (the dialog's first request)
    comes last: a later message of the dialog refers back to it at short distances.
    """
    return DICTIONARY_V1 + primer


#: Raw DEFLATE (RFC 1951): negative window bits make zlib write and read no RFC 1950 framing.
_RAW_DEFLATE_WBITS = -15


def compress(data: bytes, primer: bytes = b"") -> bytes:
    """A raw DEFLATE stream (RFC 1951) of ``data``, compressed with the preset :func:`dictionary`."""
    co = zlib.compressobj(level=9, method=zlib.DEFLATED, wbits=_RAW_DEFLATE_WBITS, memLevel=9,
                          strategy=zlib.Z_DEFAULT_STRATEGY, zdict=dictionary(primer))
    return co.compress(data) + co.flush()


def decompress(stream: bytes, limit: int = MAX_DECOMPRESSED_BYTES, primer: bytes = b"") -> bytes:
    """Inverse of :func:`compress`, refusing anything but one complete stream of at most ``limit`` bytes.

    The dictionary is the one ``primer`` selects (the caller knows it from the algorithm
    OID; the stream does not name it).
    """
    if not stream:
        raise MalformedEnvelope("malformed-cms", "empty compressed content")
    inflater = zlib.decompressobj(wbits=_RAW_DEFLATE_WBITS, zdict=dictionary(primer))
    try:
        out = inflater.decompress(stream, limit + 1)
    except zlib.error:
        raise MalformedEnvelope("malformed-cms", "corrupt compressed content") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise MalformedEnvelope("malformed-cms", "compressed content exceeds the size bound")
    if not inflater.eof or inflater.unused_data:
        raise MalformedEnvelope("malformed-cms", "truncated or trailing compressed content")
    return out
