"""The outer message: build it from the inner one (RFC 3323 anonymised From) and check that a received one agrees with its inner.

What the outer message carries, and why:

* start line — method and Request-URI (routing) or status and reason;
* Via, Max-Forwards, Route — copied from the inner request (proxies act on them; they
  are *not* bound, proxies change them); for a response, Via and Record-Route are copied
  from the outer request it answers (``in_reply_to``), as RFC 3261 §8.2.6.2 / §12.1.1 want;
* From and To — the *caller's* URI (the party that sent the dialog's first request) is
  always written ``<sip:anonymous@anonymous.invalid>`` (the anonymous URI of RFC 3323
  §4.1.1.3, by which RFC 5079 servers recognise an anonymous request; the ``"Anonymous"``
  display name RFC 3261 §8.1.1.3 recommends beside it is left out: it says nothing the URI
  does not, and its 12 bytes in every message keep the secured call flow under 2.2 times
  the plain one), in From of its requests and in To of the callee's requests and their responses; the
  callee's URI (already in the first request's Request-URI) is written as the bare inner
  URI, no display name. Tags are replaced by the outer tags standing for the inner ones;
* Call-ID — the dialog's outer Call-ID (an HMAC of the inner one under the dialog key);
* CSeq — as inner; Contact — the inner Contact URIs only (no display names, no parameters);
* Content-Type / Content-Disposition of the S/MIME body. Nothing else (no User-Agent,
  Server, Subject, SDP or any inner-only header).

Header names use RFC 3261 §7.3.3 compact forms where one exists (``v f t i m c l``): the
outer message is written by sipsec for machines, every RFC 3261 element must accept
compact forms, and they save ~45 bytes a message — which keeps more secured messages
under the 1300-byte UDP limit of RFC 3261 §18.1.1.

Bound (a receiver rejects a mismatch with 403 ``outer-mismatch``, and names the field class
— ``message-kind``, ``method``, ``request-uri``, ``status``, ``cseq``, ``call-id``, ``from``,
``from-tag``, ``to``, ``to-tag``, ``contact`` — in :attr:`RejectedEnvelope.field`, which the
gateway sends back in a ``Warning: 399`` header, RFC 3261 §20.43): method / status,
Request-URI, From and To URIs, both tags, Call-ID, CSeq, Contact URIs.

Not bound, per RFC 3261 §23.4.1.1 (the header fields intermediaries legitimately change,
§16.6): Via, Route, Record-Route, Max-Forwards (they are copied, not compared), and URI
parameters that an intermediary *adds* to a Contact URI other than the routing ones of
§19.1.1 (``transport``, ``maddr``, ``user``, ``method``, ``ttl``, ``lr``) — a NAT helper's
``;alias=`` (Kamailio ``add_contact_alias``) is one. The receiver routes by the inner
(signed) Contact alone, so such a parameter redirects nothing; a changed user, host, port or
scheme, a removed parameter or an added routing parameter is still refused (``contact``).
"""

from __future__ import annotations

from collections.abc import Sequence

from sipsec.envelope.dialog import DialogKey
from sipsec.envelope.errors import EnvelopeUsageError, Forbidden, MalformedEnvelope
from sipsec.envelope.policy import CONTENT_DISPOSITION, CONTENT_TYPE
from sipsec.ibc import IbcError, canonical_aor
from sipsec.sip import NameAddr, Request, Response, SipError, SipURI

__all__ = ["ANONYMOUS_URI", "build_outer", "check_binding"]

ANONYMOUS_URI = "sip:anonymous@anonymous.invalid"


def _outer_party(na: NameAddr, dialog: DialogKey) -> tuple[str, str | None]:
    """(outer URI, outer tag) standing for the inner From/To ``na``."""
    text = str(na.uri)
    try:
        aor: str | None = str(canonical_aor(text))
    except IbcError:
        aor = None
    uri = ANONYMOUS_URI if aor == dialog.caller_aor else text
    tag = na.tag
    return uri, None if tag is None else dialog.outer_tag(tag)


def _render_party(na: NameAddr, dialog: DialogKey) -> str:
    uri, tag = _outer_party(na, dialog)
    return f"<{uri}>" + (f";tag={tag}" if tag is not None else "")


def build_outer(
    inner: Request | Response,
    dialog: DialogKey,
    body: bytes,
    in_reply_to: Request | None = None,
    route: Sequence[str] | None = None,
) -> Request | Response:
    """The outer message of ``inner`` with the S/MIME ``body`` (see the module docstring)."""
    inner_from = inner.from_
    if inner_from.tag is None:
        raise EnvelopeUsageError("the message has no From tag")
    headers: list[tuple[str, str]] = []
    if isinstance(inner, Request):
        headers += [("v", v) for v in inner.headers.get_all_raw("Via")]
        headers.append(("Max-Forwards", str(inner.max_forwards if inner.max_forwards is not None else 70)))
        routes = list(route) if route is not None else inner.headers.get_all_raw("Route")
        headers += [("Route", r) for r in routes]
    else:
        if in_reply_to is None:
            raise EnvelopeUsageError("a response needs the outer request it answers (in_reply_to)")
        headers += [("v", v) for v in in_reply_to.headers.get_all_raw("Via")]
        headers += [("Record-Route", r) for r in in_reply_to.headers.get_all_raw("Record-Route")]
    headers.append(("t", _render_party(inner.to, dialog)))
    headers.append(("f", _render_party(inner_from, dialog)))
    headers.append(("i", dialog.outer_call_id()))
    cseq = inner.cseq
    headers.append(("CSeq", f"{cseq.seq} {cseq.method}"))
    contacts = inner.contact
    if contacts:
        headers.append(("m", ", ".join(f"<{c.uri}>" for c in contacts)))
    headers.append(("c", CONTENT_TYPE))
    headers.append(("Content-Disposition", CONTENT_DISPOSITION))
    headers.append(("l", "0"))  # recomputed by to_bytes()
    if isinstance(inner, Request):
        return Request(inner.method, str(inner.uri), headers, body)
    return Response(inner.status, inner.reason, headers, body)


#: Contact URI parameters that steer where a request goes (RFC 3261 §19.1.1): an intermediary
#: may not add them, the others (a NAT helper's ``alias``, ``ob`` ...) it may.
_ROUTING_PARAMS = frozenset({"transport", "maddr", "user", "method", "ttl", "lr"})


def _same_contact(outer: object, inner: object) -> bool:
    """True when the outer Contact URI is the inner one, or the inner one with non-routing URI
    parameters added by an intermediary (see the module docstring)."""
    if str(outer) == str(inner):
        return True
    if not (isinstance(outer, SipURI) and isinstance(inner, SipURI)):
        return False
    if (outer.scheme, outer.user, outer.password, outer.host.lower(), outer.port, outer.headers) != \
            (inner.scheme, inner.user, inner.password, inner.host.lower(), inner.port, inner.headers):
        return False
    for name, value in inner.params.items():
        if name not in outer.params or outer.params[name] != value:
            return False
    return not any(name in _ROUTING_PARAMS for name in outer.params.keys() - inner.params.keys())


def _mismatch(field: str, detail: str) -> Forbidden:
    return Forbidden("outer-mismatch", detail, field=field)


def check_binding(outer: Request | Response, inner: Request | Response, dialog: DialogKey) -> None:
    """Raise ``Forbidden('outer-mismatch')`` naming the field class unless every bound outer
    field agrees with ``inner`` (RFC 3261 §23.4.1.1; see the module docstring)."""
    try:
        if isinstance(outer, Request) != isinstance(inner, Request):
            raise _mismatch("message-kind", "request/response")
        if isinstance(outer, Request) and isinstance(inner, Request):
            if outer.method != inner.method:
                raise _mismatch("method", "method")
            if str(outer.uri) != str(inner.uri):
                raise _mismatch("request-uri", "Request-URI")
        elif isinstance(outer, Response) and isinstance(inner, Response):
            if outer.status != inner.status:
                raise _mismatch("status", "status")
        if outer.cseq != inner.cseq:
            raise _mismatch("cseq", "CSeq")
        if outer.call_id != dialog.outer_call_id():
            raise _mismatch("call-id", "Call-ID")
        inner_from = inner.from_
        if inner_from.tag is None:
            raise _mismatch("from-tag", "From tag")
        for name, o, i in (("from", outer.from_, inner_from), ("to", outer.to, inner.to)):
            uri, tag = _outer_party(i, dialog)
            if str(o.uri) != uri:
                raise _mismatch(name, name + " URI")
            if o.tag != tag:
                raise _mismatch(name + "-tag", name + " tag")
        outer_contacts, inner_contacts = outer.contact, inner.contact
        if len(outer_contacts) != len(inner_contacts) or not all(
                _same_contact(o.uri, i.uri) for o, i in zip(outer_contacts, inner_contacts, strict=True)):
            raise _mismatch("contact", "Contact")
    except SipError:
        raise MalformedEnvelope("malformed-outer", "unparsable routing header") from None
