"""The PKG-backed signed-REGISTER verifier: a registration proves the AOR's signature key, not a password."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from sipsec import ibc
from sipsec.envelope import RejectedEnvelope, verify_register
from sipsec.pkgclient import PkgClient
from sipsec.sip import Request
from sipsec.stores.envelope import InMemoryReplayCache, ReplayCache

from sipsec_proxy.config import ProxyConfig
from sipsec_proxy.registrar import RegisterRejected

__all__ = ["SignedRegisterVerifier", "fetch_domain_params", "verifier_from_config"]

log = logging.getLogger("sipsec.proxy.signed_register")


def _is_signed(request: Request) -> bool:
    value = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    return value == "application/pkcs7-mime"


class SignedRegisterVerifier:
    """The registrar's :class:`~sipsec_proxy.RegisterVerifier` for identity-signed REGISTERs (RFC 5652).

    ``trusted`` maps a domain to its public parameters. ``verify`` returns False for a REGISTER
    without an S/MIME body (the registrar's digest then applies) and raises
    :class:`~sipsec_proxy.RegisterRejected` (403) for a signature that does not verify, a replay,
    or a signer other than the registered AOR.
    """

    def __init__(self, trusted: Mapping[str, ibc.DomainParams], *, replay: ReplayCache | None = None) -> None:
        self.trusted = dict(trusted)
        self.replay: ReplayCache = replay if replay is not None else InMemoryReplayCache()
        self.verified = 0

    async def verify(self, request: Request, aor: str) -> bool:
        if not _is_signed(request):
            return False
        try:
            result = await verify_register(request, self.trusted, self.replay)
        except RejectedEnvelope as exc:
            raise RegisterRejected(exc.reason) from None
        if result.aor != aor:
            raise RegisterRejected("signer-mismatch")
        self.verified += 1
        return True

    @classmethod
    async def from_pkg(
        cls,
        target: str,
        *,
        plaintext: bool = False,
        root_certificates: bytes | None = None,
        pinned_fingerprint: str | None = None,
        timeout_s: float = 5.0,
    ) -> SignedRegisterVerifier:
        """A verifier trusting the parameters the PKG at ``target`` signs (GetSystemParams)."""
        params = await fetch_domain_params(target, plaintext=plaintext, root_certificates=root_certificates,
                                           pinned_fingerprint=pinned_fingerprint, timeout_s=timeout_s)
        return cls({params.domain: params})


async def fetch_domain_params(
    target: str,
    *,
    plaintext: bool = False,
    root_certificates: bytes | None = None,
    pinned_fingerprint: str | None = None,
    timeout_s: float = 5.0,
) -> ibc.DomainParams:
    """The PKG's own domain parameters; the Ed25519 signature (and the pin, when given) checked."""
    async with PkgClient(target, plaintext=plaintext, root_certificates=root_certificates,
                         timeout_s=timeout_s) as client:
        system = await client.get_system_params(pinned_fingerprint=pinned_fingerprint or None)
    return system.params


async def verifier_from_config(config: ProxyConfig) -> SignedRegisterVerifier | None:
    """The verifier ``config.pkg_target`` names (None when unset); the PKG's domain must be served here."""
    if not config.pkg_target:
        return None
    ca = Path(config.pkg_ca).read_bytes() if config.pkg_ca else None
    verifier = await SignedRegisterVerifier.from_pkg(
        config.pkg_target, plaintext=bool(config.pkg_plaintext), root_certificates=ca,
        pinned_fingerprint=config.pkg_fingerprint or None,
    )
    domains = set(verifier.trusted)
    if not domains <= config.domain_set:
        raise ValueError(f"the PKG at {config.pkg_target} is for {sorted(domains)}, "
                         f"not a domain this proxy serves ({sorted(config.domain_set)})")
    log.info("signed REGISTER verified with the parameters of %s from %s", sorted(domains), config.pkg_target)
    return verifier
