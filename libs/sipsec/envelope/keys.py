"""A user agent's keyring: its identity keys and the public parameters of the domains it trusts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sipsec.envelope.errors import EnvelopeUsageError
from sipsec.ibc import Aor, DomainParams, PrivateKey, Purpose, canonical_aor

__all__ = ["Keyring"]


@dataclass(frozen=True, eq=False)
class Keyring:
    """What one AOR needs to seal and open: its SIG key(s), its ENC keys, trusted domain params.

    ``sig_keys`` and ``enc_keys`` may hold several periods (the current and the previous
    one, typically); sealing signs with the key of the current period, opening accepts a
    message encrypted to any period held here. ``domains`` maps a domain name to its
    :class:`DomainParams` (the own domain and every federated peer); signers and
    recipients from other domains are unknown. ``repr`` shows no key material.
    """

    aor: Aor
    sig_keys: tuple[PrivateKey, ...]
    enc_keys: tuple[PrivateKey, ...]
    domains: Mapping[str, DomainParams] = field(repr=False)

    @classmethod
    def create(
        cls,
        aor: str,
        *,
        sig_keys: Iterable[PrivateKey],
        enc_keys: Iterable[PrivateKey],
        domains: Iterable[DomainParams],
    ) -> Keyring:
        """Validate and build: every key must belong to ``aor`` and have the right purpose."""
        canonical = canonical_aor(aor)
        sig, enc = tuple(sig_keys), tuple(enc_keys)
        for key, purpose in [(k, Purpose.SIG) for k in sig] + [(k, Purpose.ENC) for k in enc]:
            if not isinstance(key, PrivateKey):
                raise EnvelopeUsageError("keys must be sipsec.ibc.PrivateKey")
            if key.identity.aor != canonical or key.identity.purpose is not purpose:
                raise EnvelopeUsageError("a key does not belong to this AOR and purpose")
        table = {p.domain: p for p in domains}
        own = canonical.split("@", 1)[-1]
        if own not in table:
            raise EnvelopeUsageError("the keyring needs its own domain's parameters")
        return cls(canonical, sig, enc, MappingProxyType(table))

    @property
    def domain(self) -> str:
        return self.aor.split("@", 1)[-1]

    def params(self, domain: str) -> DomainParams | None:
        """The trusted parameters of ``domain``, or None when it is not federated with us."""
        return self.domains.get(domain)

    def signing_key(self, now: float) -> PrivateKey:
        """The SIG key of the current period of the own domain (misuse error if none is held)."""
        period = self.domains[self.domain].policy.current(now)
        for key in self.sig_keys:
            if key.identity.period == period:
                return key
        raise EnvelopeUsageError("no signature key for the current period")

    def enc_key(self, aor: str, period: int, period_length: int) -> PrivateKey | None:
        """The ENC key for exactly this identity, if held."""
        for key in self.enc_keys:
            ident = key.identity
            if ident.aor == aor and ident.period == period and ident.period_length_s == period_length:
                return key
        return None
