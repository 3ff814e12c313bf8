"""Async clients of ``sipsec.pkg.v1.KeyGeneratorService``: one PKG, or t-of-n threshold PKG nodes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import grpc

from sipsec.ibc import (
    BadShare,
    DomainParams,
    Identity,
    PartialKey,
    PrivateKey,
    Purpose,
    combine,
    decapsulate,
    encapsulate,
    sign,
    verify,
    verify_partial,
)
from sipsec.pkgclient.errors import BadNode, PkgClientError, PkgRpcError, ThresholdKeyError
from sipsec.pkgclient.metrics import PkgClientMetrics
from sipsec.pkgclient.signed import SignedParams, verify_signed_params
from sipsec.rpc import client_channel
from sipsec.rpc._gen.sipsec.pkg.v1 import pkg_pb2, pkg_pb2_grpc

__all__ = [
    "KeyResponse",
    "PkgClient",
    "Session",
    "SystemParams",
    "ThresholdKey",
    "ThresholdPkgClient",
    "purpose_from_proto",
    "purpose_to_proto",
    "signed_from_proto",
]

log = logging.getLogger("sipsec.pkgclient")

_PURPOSES: dict[Purpose, pkg_pb2.KeyPurpose] = {
    Purpose.ENC: pkg_pb2.KEY_PURPOSE_ENC,
    Purpose.SIG: pkg_pb2.KEY_PURPOSE_SIG,
}


def purpose_to_proto(purpose: Purpose) -> pkg_pb2.KeyPurpose:
    return _PURPOSES[purpose]


def purpose_from_proto(value: int) -> Purpose:
    for purpose, wire in _PURPOSES.items():
        if wire == value:
            return purpose
    raise ValueError("purpose must be enc or sig")


def signed_from_proto(msg: pkg_pb2.SignedDomainParams) -> SignedParams:
    return SignedParams(
        domain=msg.domain,
        params=msg.params,
        signature=msg.signature,
        signer_public_key=msg.signer_public_key,
        version=msg.version,
    )


@dataclass(frozen=True)
class Session:
    """A login session; the token is a bearer secret and never printed.

    ``max_lifetime_s``: the PKG ends the session this long after login whatever the activity (0:
    not stated).
    """

    aor: str
    token: str = field(repr=False)
    idle_timeout_s: int
    max_lifetime_s: int = 0


@dataclass(frozen=True)
class SystemParams:
    """A PKG's verified parameters, the signed form (to pass on), and its threshold node index."""

    params: DomainParams
    signed: SignedParams
    node_index: int


@dataclass(frozen=True)
class KeyResponse:
    """What GetPrivateKey returned, decoded but not yet turned into a key."""

    aor: str
    purpose: Purpose
    period: int
    not_before: float
    not_after: float
    private_key: bytes | None = field(repr=False)
    partial: PartialKey | None = field(repr=False)


def _check_key(params: DomainParams, key: PrivateKey) -> None:
    """Proves ``key`` belongs to its identity under ``params``; raises on a wrong key."""
    ident = key.identity
    if ident.purpose is Purpose.SIG:
        verify(params, ident, b"sipsec key check", sign(key, b"sipsec key check"))
    else:
        cek, ct = encapsulate(params, ident)
        if decapsulate(key, ct) != cek:
            raise PkgClientError("the PKG returned a private key that does not fit the identity")


class PkgClient:
    """One PKG endpoint: login, logout, parameters, private keys.

    TLS unless ``plaintext=True``; ``root_certificates`` is the CA of the PKG's certificate,
    ``client_cert`` a (key, chain) pair when the PKG asks for client certificates. ``name`` is how
    the node is named in metrics and errors (default: ``target``); ``node_index`` the threshold
    share index this connection serves, when configured (else learnt from its first valid partial).
    """

    def __init__(
        self,
        target: str,
        *,
        root_certificates: bytes | None = None,
        client_cert: tuple[bytes, bytes] | None = None,
        plaintext: bool = False,
        server_name: str | None = None,
        timeout_s: float = 5.0,
        name: str | None = None,
        node_index: int | None = None,
    ) -> None:
        self.target = target
        self.name = name or target
        self.node_index = node_index
        self.timeout_s = timeout_s
        self._channel = client_channel(
            target,
            root_certificates=root_certificates,
            client_cert=client_cert,
            plaintext=plaintext,
            server_name=server_name,
        )
        self._stub = pkg_pb2_grpc.KeyGeneratorServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self.session: Session | None = None

    async def __aenter__(self) -> PkgClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: Callable[..., object], request: object) -> object:
        try:
            return await method(request, timeout=self.timeout_s)  # type: ignore[misc]
        except grpc.aio.AioRpcError as exc:
            raise PkgRpcError.from_rpc(exc) from None

    async def login(self, aor: str, password: str, *, client_address: str = "") -> Session:
        """Logs in; ``client_address`` is the end user's IP address when this client forwards a
        user's login (a UA gateway): the PKG throttles by it if it trusts this client as a forwarder."""
        request = pkg_pb2.LoginRequest(aor=aor, password=password, client_address=client_address)
        resp = await self._call(self._stub.Login, request)
        assert isinstance(resp, pkg_pb2.LoginResponse)
        self.session = Session(aor=resp.aor, token=resp.session_token, idle_timeout_s=resp.idle_timeout_s,
                               max_lifetime_s=resp.max_lifetime_s)
        return self.session

    async def logout(self) -> None:
        if self.session is None:
            return
        token, self.session = self.session.token, None
        await self._call(self._stub.Logout, pkg_pb2.LogoutRequest(session_token=token))

    async def get_system_params(self, *, pinned_fingerprint: str | None = None) -> SystemParams:
        """The PKG's own parameters, signature checked (and pin, when given)."""
        resp = await self._call(self._stub.GetSystemParams, pkg_pb2.GetSystemParamsRequest())
        assert isinstance(resp, pkg_pb2.GetSystemParamsResponse)
        signed = signed_from_proto(resp.params)
        params = verify_signed_params(
            signed, expected_domain=signed.domain, pinned_fingerprint=pinned_fingerprint
        )
        return SystemParams(params=params, signed=signed, node_index=resp.node_index)

    async def get_domain_params(self, domain: str, *, pinned_fingerprint: str | None = None) -> DomainParams:
        """A (peer) domain's parameters through this PKG's federation cache, signature checked."""
        resp = await self._call(self._stub.GetDomainParams, pkg_pb2.GetDomainParamsRequest(domain=domain))
        assert isinstance(resp, pkg_pb2.GetDomainParamsResponse)
        return verify_signed_params(
            signed_from_proto(resp.params), expected_domain=domain.lower(), pinned_fingerprint=pinned_fingerprint
        )

    async def fetch_key(
        self, purpose: Purpose, *, period: int | None = None, next_period: bool = False
    ) -> KeyResponse:
        """Raw GetPrivateKey for the session's AOR (full key or a threshold partial)."""
        if self.session is None:
            raise PkgClientError("log in before asking for keys")
        request = pkg_pb2.GetPrivateKeyRequest(
            session_token=self.session.token,
            purpose=purpose_to_proto(purpose),
            period_selector=pkg_pb2.KEY_PERIOD_NEXT if next_period else pkg_pb2.KEY_PERIOD_CURRENT,
        )
        if period is not None:
            request.period = period
        resp = await self._call(self._stub.GetPrivateKey, request)
        assert isinstance(resp, pkg_pb2.GetPrivateKeyResponse)
        which = resp.WhichOneof("key")
        partial = None
        if which == "partial_key":
            partial = PartialKey(index=resp.partial_key.node_index, value=resp.partial_key.value)
        return KeyResponse(
            aor=resp.aor,
            purpose=purpose_from_proto(resp.purpose),
            period=resp.period,
            not_before=resp.not_before,
            not_after=resp.not_after,
            private_key=resp.private_key if which == "private_key" else None,
            partial=partial,
        )

    async def get_private_key(
        self,
        params: DomainParams,
        purpose: Purpose,
        *,
        period: int | None = None,
        next_period: bool = False,
        check: bool = True,
    ) -> PrivateKey:
        """The session's private key from a 1-of-1 PKG; ``check`` proves it fits the identity."""
        resp = await self.fetch_key(purpose, period=period, next_period=next_period)
        if resp.private_key is None:
            raise PkgClientError("this PKG is a threshold node; use ThresholdPkgClient")
        if self.session is None or resp.aor != self.session.aor:
            raise PkgClientError("the PKG returned a key for another AOR")
        identity = params.identity(resp.aor, resp.purpose, resp.period)
        key = PrivateKey.from_bytes(identity, resp.private_key)
        if check:
            _check_key(params, key)
        return key


@dataclass(frozen=True)
class ThresholdKey:
    """A combined private key and which nodes were used, lied, or could not be reached."""

    key: PrivateKey
    used_nodes: tuple[int, ...]
    bad_nodes: tuple[BadNode, ...]
    down: dict[str, str]


class ThresholdPkgClient:
    """t-of-n threshold PKG: asks every node, verifies each partial by pairing, combines t.

    A node is named by the connection it was asked through, never by the index its answer
    claims: a partial that fails its pairing check, or claims another index than the one the
    connection serves (configured as ``PkgClient.node_index``, else pinned at the connection's
    first valid partial), is invalid, named in ``ThresholdKey.bad_nodes`` (or the raised
    ``ThresholdKeyError``) by its connection's target and counted in
    ``sipsec_pkgclient_bad_threshold_shares_total`` under the connection's configured name, so
    the label set is the configured nodes only. Each node's answer time (the round trip and the
    pairing check of its partial) goes in ``sipsec_pkgclient_threshold_node_duration_seconds``
    under the same name, by result (ok, invalid, error).
    """

    def __init__(
        self,
        clients: Sequence[PkgClient],
        *,
        metrics: PkgClientMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not clients:
            raise ValueError("at least one PKG node is needed")
        self.clients = list(clients)
        self.metrics = metrics
        self.clock = clock

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)

    async def login(self, aor: str, password: str, *, client_address: str = "") -> dict[str, str]:
        """Logs in on every node; returns ``{target: error}`` for the nodes that refused or were down."""
        results = await asyncio.gather(
            *(c.login(aor, password, client_address=client_address) for c in self.clients), return_exceptions=True
        )
        failed: dict[str, str] = {}
        for client, result in zip(self.clients, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, PkgClientError):
                    raise result
                failed[client.target] = str(result)
        if len(failed) == len(self.clients):
            raise PkgClientError("login failed on every PKG node: " + "; ".join(failed.values()))
        return failed

    async def logout(self) -> None:
        await asyncio.gather(*(c.logout() for c in self.clients), return_exceptions=True)

    async def get_system_params(self, *, pinned_fingerprint: str | None = None) -> DomainParams:
        """The domain's parameters from the first node that answers with verifiable ones."""
        errors: list[str] = []
        for client in self.clients:
            try:
                return (await client.get_system_params(pinned_fingerprint=pinned_fingerprint)).params
            except Exception as exc:  # noqa: BLE001 - try the next node, report all
                errors.append(f"{client.target}: {exc}")
        raise PkgClientError("no PKG node returned valid parameters: " + "; ".join(errors))

    def _blame(self, bad: list[BadNode], client: PkgClient, claimed: int, reason: str) -> None:
        bad.append(BadNode(index=claimed, target=client.target, reason=reason))
        log.warning("threshold PKG node %s returned an invalid partial key (%s)", client.name, reason)
        if self.metrics:
            self.metrics.bad_shares.labels(client.name).inc()

    def _observe_node(self, client: PkgClient, result: str, seconds: float) -> None:
        """One node's answer in ``sipsec_pkgclient_threshold_node_duration_seconds`` (labelled by the
        connection's configured name, never by what the answer claims)."""
        if self.metrics:
            self.metrics.node_latency.labels(client.name, result).observe(seconds)

    def _node_down(self, client: PkgClient, error: BaseException, down: dict[str, str]) -> None:
        """Note a node that could not answer (re-raising anything but a PKG client error)."""
        if not isinstance(error, PkgClientError):
            raise error
        down[client.target] = str(error)
        if self.metrics and isinstance(error, PkgRpcError):
            self.metrics.node_errors.labels(error.code.name).inc()

    def _checked_partial(
        self, client: PkgClient, result: KeyResponse, params: DomainParams, identity: Identity,
        asked: tuple[str, int], down: dict[str, str], bad: list[BadNode],
    ) -> PartialKey | None:
        """``client``'s answer if it is a valid partial key for ``asked`` (AOR, period): one
        for this identity, from the node index this connection serves, verifying against the
        node's public share. Otherwise None, the node noted as down or blamed (a bad share)."""
        partial = result.partial
        if partial is None or (result.aor, result.period) != asked:
            down[client.target] = "not a threshold partial key for this identity"
            return None
        expected = client.node_index
        if expected is not None and partial.index != expected:
            self._blame(bad, client, partial.index, "index_mismatch")
            return None
        try:
            verify_partial(params, identity, partial)
        except BadShare:
            self._blame(bad, client, partial.index, "bad_partial")
            return None
        if expected is None:
            client.node_index = partial.index  # this connection serves this share from now on
        return partial

    async def get_private_key(
        self, params: DomainParams, purpose: Purpose, *, period: int | None = None, next_period: bool = False
    ) -> ThresholdKey:
        """Fetches partials from all nodes, verifies each and combines ``params.threshold`` of them."""
        if period is None:
            now = self.clock()
            period = params.policy.next(now) if next_period else params.policy.current(now)
        sessions = [c for c in self.clients if c.session is not None]
        if not sessions:
            raise PkgClientError("log in before asking for keys")
        aor = sessions[0].session.aor if sessions[0].session else ""
        identity = params.identity(aor, purpose, period)
        took = [0.0] * len(sessions)  # each node's round trip, seconds

        async def timed(i: int, client: PkgClient) -> KeyResponse:
            start = time.perf_counter()
            try:
                return await client.fetch_key(purpose, period=period)
            finally:
                took[i] = time.perf_counter() - start

        results = await asyncio.gather(*(timed(i, c) for i, c in enumerate(sessions)), return_exceptions=True)
        down: dict[str, str] = {c.target: "not logged in" for c in self.clients if c.session is None}
        valid: dict[int, PartialKey] = {}
        bad: list[BadNode] = []
        for i, (client, result) in enumerate(zip(sessions, results, strict=True)):
            if isinstance(result, BaseException):
                self._observe_node(client, "error", took[i])
                self._node_down(client, result, down)
                continue
            start, blamed = time.perf_counter(), len(bad)
            partial = self._checked_partial(client, result, params, identity, (aor, period), down, bad)
            outcome = "ok" if partial is not None else "invalid" if len(bad) > blamed else "error"
            self._observe_node(client, outcome, took[i] + time.perf_counter() - start)
            if partial is not None:
                valid.setdefault(partial.index, partial)
        if len(valid) < params.threshold:
            if self.metrics:
                self.metrics.keys.labels("threshold", "failed").inc()
            raise ThresholdKeyError(params.threshold, len(valid), bad, down)
        chosen = sorted(valid)[: params.threshold]
        key = combine(params, identity, [valid[i] for i in chosen])
        if self.metrics:
            self.metrics.keys.labels("threshold", "ok").inc()
        return ThresholdKey(key=key, used_nodes=tuple(chosen), bad_nodes=tuple(bad), down=down)
