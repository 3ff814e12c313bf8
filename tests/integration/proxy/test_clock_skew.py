"""A REGISTER signed by a skewed clock says so: ``403 Clock Skew`` with a ``Warning: 399`` that
names the clocks, not the misleading ``403 Invalid Signature`` a forged signature gets.

Real PKG (gRPC on port 0) and proxy; the REGISTER is signed +400 s ahead (a gateway whose clock
runs ahead), past the 300 s signing-time window.
"""

from __future__ import annotations

import socket
import time

from sipsec.envelope import RejectedEnvelope, sign_register
from sipsec.envelope.errors import CLOCK_SKEW_PHRASE, Forbidden
from sipsec_pkg.node import PkgNode
from sipsec_proxy import ProxyServer

from tests.integration.proxy.test_signed_register import (  # noqa: F401 (fixtures)
    ALICE,
    _final,
    _register,
    _sig_keyring,
    atlanta,
    pkg,
    proxy,
    sock,
)


async def test_register_signed_400_s_ahead_is_403_clock_skew(proxy: ProxyServer, pkg: PkgNode,  # noqa: F811
                                                             sock: socket.socket) -> None:  # noqa: F811
    keys = await _sig_keyring(pkg, ALICE)
    skewed = sign_register(_register(sock, ALICE, "skew1"), keys, now=time.time() + 400)
    resp = await _final(sock, skewed, proxy.udp_address)
    assert (resp.status, resp.reason) == (403, CLOCK_SKEW_PHRASE)
    warning = resp.headers.get("Warning") or ""
    assert warning.startswith("399 ") and "clock skew" in warning, warning
    assert await proxy.locator.lookup(ALICE) == []
    # the same key with the right time registers: nothing was wrong but the clock
    ok = await _final(sock, sign_register(_register(sock, ALICE, "skew2"), keys), proxy.udp_address)
    assert ok.status == 200


async def test_a_bad_signature_is_still_invalid_signature(proxy: ProxyServer, pkg: PkgNode,  # noqa: F811
                                                          sock: socket.socket) -> None:  # noqa: F811
    keys = await _sig_keyring(pkg, ALICE)
    corrupt = sign_register(_register(sock, ALICE, "skew3"), keys)
    body = bytearray(corrupt.body)
    body[-8] ^= 0x01
    corrupt.body = bytes(body)
    resp = await _final(sock, corrupt, proxy.udp_address)
    assert (resp.status, resp.reason) == (403, "Invalid Signature")
    assert resp.headers.get("Warning") is None


def test_a_stale_rejection_names_clock_skew_and_others_do_not() -> None:
    stale: RejectedEnvelope = Forbidden("stale", "signing time outside the window")
    assert (stale.status, stale.reason_phrase) == (403, "Clock Skew")
    assert stale.warning is not None and "clock skew" in stale.warning
    other = Forbidden("bad-signature")
    assert (other.reason_phrase, other.warning) == ("Forbidden", None)
