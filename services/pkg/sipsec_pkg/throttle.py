"""Login throttling that slows guessing without locking anybody out (sans-IO: no store, no clock).

NIST SP 800-63B §5.2.2 asks verifiers to limit failed attempts without handing attackers a way
to deny service. Hard lockouts (N failures lock the account, or the address) do exactly that:
whoever knows an AOR can lock its owner out, and one address (a UA gateway) carries the logins
of all its users. Instead:

- **per (account, client address)**: after ``free_failures`` consecutive failures the next
  attempt for that account *from that address* waits ``base_s · 2^(n − free − 1)`` seconds (capped
  at ``max_s``); refused attempts are not checked at all. The right password from another
  address is not affected; a success clears the count.
- **per client address**: once an address's failures (all accounts) exceed ``budget`` within the
  window, its attempts for accounts that have *not* logged in from it before wait an exponential
  delay from its last failure (capped at ``address_max_s``). Accounts that did log in from the
  address keep only their own per-(account, address) back-off, so a gateway under attack still
  logs its users in.

The functions below compute the delays and name the store keys; :class:`sipsec_pkg.service.PkgService`
drives them against a store and a clock. The delay is the shared exponential back-off of
:func:`sipsec.throttle.backoff_delay`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sipsec.throttle import backoff_delay

__all__ = ["BackoffPolicy", "ThrottleScope", "address_key", "known_key", "pair_key"]


class ThrottleScope(Enum):
    """What a refused attempt was throttled by (the value is the bounded metric label)."""

    ACCOUNT_CLIENT = "account_client"
    CLIENT_ADDRESS = "client_address"


@dataclass(frozen=True)
class BackoffPolicy:
    """Exponential back-off parameters (see the module docstring)."""

    free_failures: int = 3
    base_s: float = 1.0
    max_s: float = 900.0
    address_budget: int = 20
    address_max_s: float = 60.0

    def __post_init__(self) -> None:
        if self.free_failures < 0 or self.address_budget < 0:
            raise ValueError("free failures and the address budget must be >= 0")
        if self.base_s <= 0 or self.max_s < self.base_s or self.address_max_s < self.base_s:
            raise ValueError("back-off delays must be positive, maxima at least the base")

    def pair_delay(self, failures: int) -> float:
        """Seconds the next attempt (account, address) waits after ``failures`` consecutive failures."""
        return backoff_delay(failures, self.free_failures, self.base_s, self.max_s)

    def address_delay(self, failures: int) -> float:
        """Seconds an address's next attempt for a new account waits after ``failures`` in the window."""
        return backoff_delay(failures, self.address_budget, self.base_s, self.address_max_s)


def pair_key(aor: str, address: str) -> str:
    """Store key of the (account, client address) failure count and back-off time."""
    return f"pair:{aor}|{address}"


def known_key(aor: str, address: str) -> str:
    """Store key marking that ``aor`` logged in successfully from ``address``."""
    return f"known:{aor}|{address}"


def address_key(address: str) -> str:
    """Store key of a client address's failure count and back-off time."""
    return f"address:{address}"
