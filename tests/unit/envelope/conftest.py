"""Fixtures of the envelope unit tests: two domains (atlanta, biloxi) with keys for alice, bob and carol."""

from __future__ import annotations

import pytest

from tests.unit.envelope.rfc3665 import ALICE, BOB, Party, Pki

CAROL = "sip:carol@biloxi.example.com"


@pytest.fixture(scope="session")
def pki() -> Pki:
    return Pki.create()


@pytest.fixture
def alice(pki: Pki) -> Party:
    return Party(pki.keyring(ALICE))


@pytest.fixture
def bob(pki: Pki) -> Party:
    return Party(pki.keyring(BOB))


@pytest.fixture
def carol(pki: Pki) -> Party:
    return Party(pki.keyring(CAROL))
