"""gRPC adapter: ``sipsec.pkg.v1.KeyGeneratorService`` on top of ``PkgService``.

Domain errors become status codes with a ``sipsec-reason`` trailer (plus any other details);
malformed requests, passed deadlines and anything unexpected (logged, answered INTERNAL with a
request id only) are the shared server interceptor's (:mod:`sipsec.rpc.interceptor`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Mapping
from typing import NoReturn

import grpc
from sipsec.ibc import Purpose
from sipsec.pkgclient import SignedParams
from sipsec.rpc import abort_with_details
from sipsec.rpc._gen.sipsec.pkg.v1 import pkg_pb2, pkg_pb2_grpc

from sipsec_pkg.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PkgError,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from sipsec_pkg.service import PkgService

__all__ = ["SERVICE_NAME", "KeyGeneratorServicer", "certificate_names", "client_source", "peer_source"]


SERVICE_NAME = pkg_pb2.DESCRIPTOR.services_by_name["KeyGeneratorService"].full_name

_CODES: dict[type[PkgError], grpc.StatusCode] = {
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    NotFound: grpc.StatusCode.NOT_FOUND,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}
_PURPOSES = {pkg_pb2.KEY_PURPOSE_ENC: Purpose.ENC, pkg_pb2.KEY_PURPOSE_SIG: Purpose.SIG}
_WIRE_PURPOSE = {v: k for k, v in _PURPOSES.items()}


def peer_source(peer: str) -> str:
    """The source address of a gRPC peer string (``ipv4:1.2.3.4:5`` → ``1.2.3.4``), for throttling."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer or "unknown"


def certificate_names(auth_context: Mapping[str, Iterable[bytes]]) -> frozenset[str]:
    """The names of the peer's client certificate, lower case: subject CN and SAN DNS names.

    ``auth_context`` is ``ServicerContext.auth_context()``; it holds certificate properties only
    for a TLS peer whose certificate the server verified (this server requires and verifies
    client certificates whenever it has a client CA, RFC 8446 §4.4.2). Names that are not text
    are skipped.
    """
    if b"ssl" not in list(auth_context.get("transport_security_type", ())):
        return frozenset()
    dns = auth_context.get("peer_dns")
    raw = [*auth_context.get("x509_common_name", ()),
           *(dns if dns is not None else auth_context.get("x509_subject_alternative_name", ()))]
    names: set[str] = set()
    for value in raw:
        try:
            names.add(value.decode("ascii").strip().lower())
        except (UnicodeDecodeError, AttributeError):
            continue
    names.discard("")
    return frozenset(names)


def client_source(peer: str, forwarded: str, trusted_forwarders: Collection[str], *,
                  trusted_by_certificate: bool = False) -> str:
    """The address a login is throttled by: the end user's address named by a trusted forwarder
    (a UA gateway: its source address is in ``trusted_forwarders``, or ``trusted_by_certificate``
    says its verified client certificate bears a trusted name), else the connection's own source
    address. Raises InvalidArgument when a trusted forwarder names something that is not an IP
    address."""
    if not forwarded or not (trusted_by_certificate or peer in trusted_forwarders):
        return peer
    if len(forwarded) > 64:
        raise InvalidArgument("bad_client_address", "client_address is not an IP address")
    try:
        return str(ipaddress.ip_address(forwarded))
    except ValueError:
        raise InvalidArgument("bad_client_address", "client_address is not an IP address") from None


def _signed_proto(s: SignedParams) -> pkg_pb2.SignedDomainParams:
    return pkg_pb2.SignedDomainParams(
        domain=s.domain, params=s.params, signature=s.signature,
        signer_public_key=s.signer_public_key, version=s.version,
    )


async def _fail(context: grpc.aio.ServicerContext, exc: PkgError) -> NoReturn:
    code = _CODES.get(type(exc), grpc.StatusCode.INTERNAL)
    await abort_with_details(context, code, str(exc), reason=exc.reason, **exc.details)


class KeyGeneratorServicer(pkg_pb2_grpc.KeyGeneratorServiceServicer):
    """Thin translation between protobuf messages and ``PkgService`` calls."""

    def __init__(self, service: PkgService, *, trusted_forwarders: Iterable[str] = (),
                 trusted_forwarder_names: Iterable[str] = ()) -> None:
        self.service = service
        self.trusted_forwarders = frozenset(trusted_forwarders)
        self.trusted_forwarder_names = frozenset(n.lower() for n in trusted_forwarder_names)

    def _trusted_by_certificate(self, context: grpc.aio.ServicerContext) -> bool:
        if not self.trusted_forwarder_names:
            return False
        return not self.trusted_forwarder_names.isdisjoint(certificate_names(context.auth_context()))

    async def Login(self, request: pkg_pb2.LoginRequest, context: grpc.aio.ServicerContext) -> pkg_pb2.LoginResponse:
        try:
            source = client_source(
                peer_source(context.peer()), request.client_address, self.trusted_forwarders,
                trusted_by_certificate=bool(request.client_address) and self._trusted_by_certificate(context),
            )
            result = await self.service.login(request.aor, request.password, source)
        except PkgError as exc:
            await _fail(context, exc)
        return pkg_pb2.LoginResponse(
            session_token=result.token, aor=result.aor, idle_timeout_s=int(result.idle_timeout_s),
            max_lifetime_s=int(result.max_lifetime_s),
        )

    async def Logout(self, request: pkg_pb2.LogoutRequest, context: grpc.aio.ServicerContext) -> pkg_pb2.LogoutResponse:
        try:
            await self.service.logout(request.session_token)
        except PkgError as exc:
            await _fail(context, exc)
        return pkg_pb2.LogoutResponse()

    async def GetSystemParams(
        self, request: pkg_pb2.GetSystemParamsRequest, context: grpc.aio.ServicerContext
    ) -> pkg_pb2.GetSystemParamsResponse:
        return pkg_pb2.GetSystemParamsResponse(
            params=_signed_proto(self.service.system_params()),
            node_index=self.service.material.node_index,
        )

    async def GetDomainParams(
        self, request: pkg_pb2.GetDomainParamsRequest, context: grpc.aio.ServicerContext
    ) -> pkg_pb2.GetDomainParamsResponse:
        try:
            result = await self.service.domain_params(request.domain)
        except PkgError as exc:
            await _fail(context, exc)
        return pkg_pb2.GetDomainParamsResponse(
            params=_signed_proto(result.signed), from_cache=result.from_cache, valid_until=result.valid_until
        )

    async def GetPrivateKey(
        self, request: pkg_pb2.GetPrivateKeyRequest, context: grpc.aio.ServicerContext
    ) -> pkg_pb2.GetPrivateKeyResponse:
        try:
            if request.purpose not in (pkg_pb2.KEY_PURPOSE_UNSPECIFIED, *_PURPOSES):
                raise InvalidArgument("bad_purpose", "unknown purpose")
            if request.period_selector not in (
                pkg_pb2.KEY_PERIOD_UNSPECIFIED, pkg_pb2.KEY_PERIOD_CURRENT, pkg_pb2.KEY_PERIOD_NEXT
            ):
                raise InvalidArgument("bad_period", "unknown period selector")
            issued = await self.service.get_key(
                request.session_token,
                _PURPOSES.get(request.purpose),
                period=request.period if request.HasField("period") else None,
                next_period=request.period_selector == pkg_pb2.KEY_PERIOD_NEXT,
                aor=request.aor,
                peer=context.peer(),
            )
        except PkgError as exc:
            await _fail(context, exc)
        response = pkg_pb2.GetPrivateKeyResponse(
            aor=issued.aor, purpose=_WIRE_PURPOSE[issued.purpose], period=issued.period,
            period_length_s=issued.period_length_s, not_before=issued.not_before,
            not_after=issued.not_after, threshold=issued.threshold, params_version=issued.params_version,
        )
        if issued.node_index:
            response.partial_key.CopyFrom(pkg_pb2.PartialKey(node_index=issued.node_index, value=issued.value))
        else:
            response.private_key = issued.value
        return response
