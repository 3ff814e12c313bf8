"""A secured call whose pairing operations run on a real crypto-worker (gRPC on port 0, process pool)."""

from __future__ import annotations

import os
import time

import pytest
from sipsec.engine import EngineMetrics, RemoteEngine
from sipsec.envelope import RejectedEnvelope, SigningPolicy, cms, oids, open_message, seal_async
from sipsec.sip import parse_message
from sipsec_worker.config import WorkerConfig
from sipsec_worker.server import create_worker_server

from tests.unit.envelope.rfc3665 import ALICE, BOB, Party, Pki, ack, invite, ringing


@pytest.mark.slow
async def test_seal_and_open_through_a_crypto_worker() -> None:
    pki = Pki.create()
    alice, bob = Party(pki.keyring(ALICE)), Party(pki.keyring(BOB))
    config = WorkerConfig(listen="127.0.0.1:0", processes=1, queue=8, plaintext=True,
                          metrics_host="127.0.0.1", metrics_port=-1, drain_seconds=1.0)
    server, port = create_worker_server(config)
    await server.start()
    metrics = EngineMetrics()
    engine = RemoteEngine([f"127.0.0.1:{port}"], plaintext=True, allow_fallback=False,
                          timeout_s=10.0, metrics=metrics)
    try:
        now = time.time()
        first = await seal_async(invite(), alice.keys, BOB, engine=engine, now=now)
        await alice.dialogs.put(first.dialog, 3600, now)
        opened = await open_message(parse_message(first.message.to_bytes()), bob.keys,
                                    bob.dialogs, bob.replay, engine=engine, now=now)
        assert opened.first and opened.signer is not None and opened.signer.aor == ALICE
        assert opened.message.to_bytes() == invite().to_bytes()
        reply = await seal_async(ringing(), bob.keys, opened.dialog, engine=engine,
                                 in_reply_to=opened.outer, now=now)
        got = await open_message(parse_message(reply.message.to_bytes()), alice.keys,
                                 alice.dialogs, alice.replay, engine=engine, now=now)
        assert got.signer is not None and got.signer.aor == BOB
        # a signature forged by the dialog-key holder, verified on the worker: 403
        later = await seal_async(ack(), alice.keys, first.dialog, SigningPolicy.EVERY_MESSAGE,
                                 engine=engine, now=now)
        env = cms.parse_auth_enveloped(later.message.body)
        assert isinstance(env.recipient, cms.KekRecipient)
        content_type, plain = cms.open_content(
            env.content_type, cms.decrypt_content(env, cms.kek_unwrap(env.recipient, first.dialog.key)),
            first.dialog.primer)
        assert content_type == oids.ID_SIGNED_DATA
        signed = bytearray(plain)
        signed[-3] ^= 0x01  # inside the signature, the last field of the SignedData
        cek = os.urandom(32)
        forged = later.message.copy()
        forged.body = cms.build_auth_enveloped(
            cms.kek_recipient_info(first.dialog.key_id, first.dialog.key, cek),
            oids.ID_CT_COMPRESSED_DATA,
            cms.build_compressed_data(oids.ID_SIGNED_DATA, bytes(signed), first.dialog.primer), cek)
        with pytest.raises(RejectedEnvelope) as info:
            await open_message(forged, bob.keys, bob.dialogs, bob.replay, engine=engine, now=now)
        assert (info.value.status, info.value.reason) == (403, "bad-signature")
        assert (await open_message(later.message, bob.keys, bob.dialogs, bob.replay,
                                   engine=engine, now=now)).signer is not None

        def calls(op: str, outcome: str) -> float:
            return metrics.registry.get_sample_value(
                "sipsec_engine_remote_calls_total", {"op": op, "outcome": outcome}) or 0.0

        # everything ran on the worker: 3 signatures made, 1 KEM each way, 4 verifications
        assert calls("sign", "ok") == 3 and calls("encapsulate", "ok") == 1
        assert calls("decapsulate", "ok") == 1
        assert calls("verify", "ok") + calls("verify", "rejected") == 4
        assert calls("verify", "rejected") == 1
    finally:
        await engine.close()
        await server.stop(0)
