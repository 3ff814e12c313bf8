"""Policies of the envelope: which messages are signed, capability headers, and whether a plain retry is allowed.

All pure functions of their arguments (no I/O, no clock).
"""

from __future__ import annotations

import enum
from functools import lru_cache

from sipsec.sip import Message, Request, Response, make_response

__all__ = [
    "ACCEPT_VALUE",
    "CONTENT_DISPOSITION",
    "CONTENT_TYPE",
    "OPTION_TAG",
    "SECURED_MEDIA_TYPE",
    "SIGNED_CONTENT_TYPE",
    "Compression",
    "Fallback",
    "SecurityPolicy",
    "SigningPolicy",
    "advertise",
    "capability_headers",
    "fallback_after",
    "is_dialog_establishing",
    "is_secured",
    "needs_signature",
    "peer_accepts_secured",
    "rejection_response",
    "unsupported_media_response",
]

#: The option tag a sipsec UA lists in ``Supported`` (RFC 3261 §19.2 option tags).
OPTION_TAG = "sipsec"
SECURED_MEDIA_TYPE = "application/pkcs7-mime"
#: An AuthEnvelopedData body (smime-type ``authEnveloped-data``, RFC 8551 §3.2.2) as RFC 3261 §23 carries S/MIME.
CONTENT_TYPE = "application/pkcs7-mime; smime-type=authEnveloped-data"
SIGNED_CONTENT_TYPE = "application/pkcs7-mime; smime-type=signed-data; name=smime.p7m"
CONTENT_DISPOSITION = "attachment; handling=required"
ACCEPT_VALUE = "application/pkcs7-mime, application/sdp"


class SigningPolicy(enum.Enum):
    """Which sealed messages carry a Cha–Cheon signature (docs/architecture.md#the-envelope)."""

    #: Every message is signed: per-message origin authentication and non-repudiation.
    EVERY_MESSAGE = "every-message"
    #: Only messages that establish the dialog (the first request, and 101–299 responses to
    #: INVITE) are signed; later messages are authenticated by the dialog key alone.
    DIALOG_ESTABLISHING = "dialog-establishing"


class Compression(enum.Enum):
    """Whether the sealed content is compressed (RFC 3274 CompressedData) before encryption.

    ``SIP_DICTIONARY`` (default): raw DEFLATE (RFC 1951) with sipsec's static SIP/SDP/CMS dictionary v1
    (:mod:`sipsec.envelope.compression`) around the SignedData (or the unsigned entity);
    about half the bytes of a secured call. The length of a compressed message depends on
    its content; see the envelope README ("Compression and its side channel") for why that
    is acceptable here. ``NONE``: the content is encrypted as is. Receivers open both.
    """

    SIP_DICTIONARY = "deflate-sipdict-v2"
    NONE = "none"


class SecurityPolicy(enum.Enum):
    """A caller's stance when the peer cannot open secured bodies."""

    SECURE_ONLY = "secure-only"  # never send plain
    PREFER_SECURE = "prefer-secure"  # send secured; retry plain once when the callee cannot open
    PLAIN = "plain"  # never secure


class Fallback(enum.Enum):
    """What to do after a final response to a secured request."""

    NONE = "none"  # the response is not a capability failure: handle it normally
    RETRY_PLAIN = "retry-plain"  # resend the request unsecured (new transaction)
    FAIL = "fail"  # the callee cannot open and policy forbids plain: fail the call


def is_dialog_establishing(message: Message) -> bool:
    """True for a request outside a dialog (no To tag) and a 101–299 response to INVITE."""
    if isinstance(message, Request):
        return message.to.tag is None
    assert isinstance(message, Response)
    return message.cseq.method == "INVITE" and 101 <= message.status <= 299


def needs_signature(policy: SigningPolicy, message: Message) -> bool:
    """Whether ``policy`` requires ``message`` to be signed (the sender and the receiver both use it)."""
    return policy is SigningPolicy.EVERY_MESSAGE or is_dialog_establishing(message)


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def is_secured(message: Message) -> bool:
    """True when the body is an ``application/pkcs7-mime`` authEnveloped-data (what ``open`` accepts)."""
    value = message.headers.get("Content-Type")
    if value is None:
        return False
    if len(value) <= 256:  # every message is asked (by the gateway, then by open): remembered per value
        return _secured_content_type_memo(value)
    return _secured_content_type(value)


@lru_cache(maxsize=64)
def _secured_content_type_memo(value: str) -> bool:
    return _secured_content_type(value)


def _secured_content_type(value: str) -> bool:
    if _media_type(value) != SECURED_MEDIA_TYPE:
        return False
    params = {
        k.strip().lower(): v.strip().strip('"').lower()
        for k, _, v in (p.partition("=") for p in value.split(";")[1:])
    }
    return params.get("smime-type") == "authenveloped-data"


def capability_headers() -> list[tuple[str, str]]:
    """The headers by which a UA says it opens secured bodies: ``Accept`` and ``Supported``."""
    return [("Accept", ACCEPT_VALUE), ("Supported", OPTION_TAG)]


def advertise(message: Message) -> None:
    """Add the capability headers to ``message`` in place, merging with existing lists."""
    accepts = [a.strip() for a in message.headers.get_all("Accept")]
    for media in ("application/pkcs7-mime", "application/sdp"):
        if media not in (_media_type(a) for a in accepts):
            accepts.append(media)
    message.headers.set("Accept", ", ".join(accepts))
    supported = [s.strip() for s in message.headers.get_all("Supported")]
    if OPTION_TAG not in (s.lower() for s in supported):
        supported.append(OPTION_TAG)
    message.headers.set("Supported", ", ".join(s for s in supported if s))


def peer_accepts_secured(message: Message) -> bool:
    """True when ``message`` (e.g. an OPTIONS answer or a REGISTER) advertises sipsec capability."""
    accepts = {_media_type(a) for a in message.headers.get_all("Accept")}
    supported = {s.strip().lower() for s in message.headers.get_all("Supported")}
    return SECURED_MEDIA_TYPE in accepts and OPTION_TAG in supported


def fallback_after(policy: SecurityPolicy, status: int, *, already_retried: bool = False) -> Fallback:
    """Decide after a final response ``status`` to a *secured* request.

    415 Unsupported Media Type and 493 Undecipherable mean the callee cannot open the body
    (RFC 3261 §21.4.13, §21.4.28), and 420 Bad Extension that it rejects the option tag.
    ``PREFER_SECURE`` retries once in plain; ``SECURE_ONLY`` fails; anything else is
    handled normally. A ``PLAIN`` caller never sent a secured request: misuse.
    """
    if policy is SecurityPolicy.PLAIN:
        raise ValueError("a plain-policy caller does not send secured requests")
    if status not in (415, 420, 493):
        return Fallback.NONE
    if policy is SecurityPolicy.PREFER_SECURE and not already_retried:
        return Fallback.RETRY_PLAIN
    return Fallback.FAIL


def rejection_response(request: Request, status: int, phrase: str, to_tag: str | None = None) -> Response:
    """The answer to a secured request that was rejected (``RejectedEnvelope.status``/``.phrase``).

    It answers the *outer* request (its Via, From, To, Call-ID, CSeq are copied, RFC 3261
    §8.2.6.2) and carries no detail of why — the reason label is for the metric and the log,
    not for the network. A 493 lists what this UA accepts (``Accept``), so the caller's
    policy can decide on a plain retry (:func:`fallback_after`).
    """
    response = make_response(request, status, phrase, to_tag)
    if status in (415, 493):
        response.headers.add("Accept", ACCEPT_VALUE)
    return response


def unsupported_media_response(request: Request, to_tag: str | None = None) -> Response:
    """415 from a UA that does not open secured bodies (RFC 3261 §21.4.13: with Accept)."""
    response = make_response(request, 415, "Unsupported Media Type", to_tag)
    response.headers.add("Accept", "application/sdp")
    return response
