"""The in-process engine runs sipsec.ibc itself, inline or on a thread, with the same errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sipsec import ibc
from sipsec.engine import CryptoEngine, InProcessEngine, RemoteEngine, create_engine

AOR = "sip:alice@atlanta.com"


@pytest.fixture(scope="module")
def domain() -> tuple[ibc.MasterSecret, ibc.DomainParams]:
    return ibc.setup("atlanta.com")


@pytest.fixture(params=[False, True], ids=["inline", "threaded"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[InProcessEngine]:
    e = InProcessEngine(threaded=request.param)
    yield e
    await e.close()


async def test_kem_round_trip_and_tampering(engine: InProcessEngine, domain: tuple[ibc.MasterSecret, ibc.DomainParams]) -> None:
    master, params = domain
    identity = params.identity(AOR, ibc.Purpose.ENC, 692)
    key = ibc.extract(master, params, identity)
    cek, ciphertext = await engine.encapsulate(params, identity)
    assert len(cek) == 32
    assert await engine.decapsulate(key, ciphertext) == cek
    assert ibc.decapsulate(key, ciphertext) == cek  # interoperates with the library directly
    tampered = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    with pytest.raises(ibc.InvalidCiphertext):
        await engine.decapsulate(key, tampered)
    with pytest.raises(ibc.MalformedCiphertext):
        await engine.decapsulate(key, ciphertext[:10])


async def test_signatures_and_tampering(engine: InProcessEngine, domain: tuple[ibc.MasterSecret, ibc.DomainParams]) -> None:
    master, params = domain
    identity = params.identity(AOR, ibc.Purpose.SIG, 692)
    key = ibc.extract(master, params, identity)
    signature = await engine.sign(key, b"INVITE sip:bob@biloxi.com SIP/2.0")
    await engine.verify(params, identity, b"INVITE sip:bob@biloxi.com SIP/2.0", signature)
    ibc.verify(params, identity, b"INVITE sip:bob@biloxi.com SIP/2.0", signature)
    with pytest.raises(ibc.InvalidSignature):
        await engine.verify(params, identity, b"INVITE sip:eve@biloxi.com SIP/2.0", signature)
    with pytest.raises(ibc.InvalidIdentity):  # an ENC identity cannot sign
        await engine.encapsulate(params, identity)


def test_create_engine_picks_by_targets() -> None:
    assert isinstance(create_engine(None), InProcessEngine)
    assert isinstance(create_engine(" , "), InProcessEngine)
    remote = create_engine("127.0.0.1:1, 127.0.0.1:2", plaintext=True)
    assert isinstance(remote, RemoteEngine)
    assert remote.targets == ["127.0.0.1:1", "127.0.0.1:2"]
    assert isinstance(remote, CryptoEngine) and isinstance(InProcessEngine(), CryptoEngine)
    with pytest.raises(ValueError):
        RemoteEngine(["127.0.0.1:1"], balance="random")  # type: ignore[arg-type]
