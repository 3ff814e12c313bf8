"""The pool-side operations: the per-process parameters cache and the deadline check, run directly."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from sipsec import ibc
from sipsec.config import ConfigError
from sipsec.engine.wire import REASON_DEADLINE, identity_to_proto
from sipsec.ibc import _keys
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2 as pb
from sipsec_worker import ops
from sipsec_worker.pool import _chunks

from tests.integration.worker.conftest import Material


def _verify_request(m: Material) -> bytes:
    return pb.VerifyRequest(domain_params=m.params.to_bytes(), identity=identity_to_proto(m.sig),
                            message=b"m", signature=ibc.sign(m.sig_key, b"m")).SerializeToString()


def test_params_are_parsed_once_per_process(material: Material) -> None:
    ops.set_params_cache(2)
    raw = _verify_request(material)
    assert ops.params_cache_info() == (0, 0, 0)
    results = ops.run_items("verify", [raw] * 5, None)
    assert [r[0] for r in results] == [""] * 5
    hits, misses, size = ops.params_cache_info()
    assert (hits, misses, size) == (4, 1, 1)
    # bounded: a third domain evicts the least recently used one
    for domain in ("biloxi.com", "chicago.com"):
        _, params = ibc.setup(domain)
        ops.run_items("encapsulate", [pb.EncapsulateRequest(
            domain_params=params.to_bytes(),
            identity=identity_to_proto(params.identity(f"sip:x@{domain}", ibc.Purpose.ENC, 1)),
        ).SerializeToString()], None)
    assert ops.params_cache_info()[2] == 2
    ops.set_params_cache(ops.DEFAULT_PARAMS_CACHE)


def test_items_past_their_deadline_are_not_started(material: Material) -> None:
    ops.set_params_cache(4)
    raw = _verify_request(material)
    results = ops.run_items("verify", [raw] * 3, time.monotonic() - 0.001)
    assert [r[0] for r in results] == [REASON_DEADLINE] * 3
    assert ops.params_cache_info()[1] == 0  # nothing was even parsed
    assert ops.run_items("sign", [], None) == []
    assert ops.run_items("frobnicate", [raw], None)[0][0] == "invalid-argument"
    ops.set_params_cache(ops.DEFAULT_PARAMS_CACHE)


def test_batches_split_in_order_over_processes() -> None:
    items = [bytes([i]) for i in range(7)]
    chunks = _chunks(items, 3)
    assert [len(c) for c in chunks] == [3, 2, 2]
    assert [x for c in chunks for x in c] == items


def test_a_key_is_parsed_once_and_keeps_its_signing_tables(material: Material) -> None:
    m = material
    request = pb.SignRequest(identity=identity_to_proto(m.sig), private_key=m.sig_key.to_bytes(),
                             message=b"INVITE").SerializeToString()
    ibc.configure_tables()  # the defaults, afresh: no holder from an earlier test to displace
    signs = _keys._TableHolders.ADMIT_USES  # the signatures after which a key earns its tables
    hits, misses, _ = ops.key_cache_info()
    results = ops.run_items("sign", [request] * signs, None)
    for reason, signature, *_ in results:
        assert reason == ""
        ibc.verify(m.params, m.sig, b"INVITE", signature)
    h, mi, size = ops.key_cache_info()
    assert (h - hits, mi - misses) == (signs - 1, 1) and size >= 1
    cached = ops._keys.get(m.sig, identity_to_proto(m.sig).SerializeToString(), m.sig_key.to_bytes())
    assert cached._tables is not None  # built once it signed often enough, kept for the next ones
    # the same key bytes for another identity is another entry (and signs as that identity)
    other = pb.SignRequest(identity=identity_to_proto(m.enc), private_key=m.sig_key.to_bytes(), message=b"x")
    assert ops.run_items("sign", [other.SerializeToString()], None)[0][0] == "invalid-identity"
    size = ops.key_cache_info()[2]
    # a bad key is answered, never cached
    bad = pb.SignRequest(identity=identity_to_proto(m.sig), private_key=b"\x00" * 48, message=b"x")
    assert ops.run_items("sign", [bad.SerializeToString()], None)[0][0] == "invalid-encoding"
    assert ops.key_cache_info()[2] == size


def test_verifications_are_split_over_processes_only_in_chunks_of_eight() -> None:
    from sipsec_worker.pool import VERIFY_MIN_CHUNK, CryptoPool

    pool = CryptoPool(2, 8)  # no process starts before the first task or warm_up()
    items = [b"x"] * 15
    assert [len(c) for c in pool._admit(items, None, VERIFY_MIN_CHUNK)] == [15]
    assert [len(c) for c in pool._admit([b"x"] * 16, None, VERIFY_MIN_CHUNK)] == [8, 8]
    assert [len(c) for c in pool._admit(items, None)] == [8, 7]  # other kinds: one per process
    assert pool.pids == []


def test_pool_processes_size_their_caches_from_the_settings() -> None:
    from sipsec_worker.config import WorkerConfig
    from sipsec_worker.pool import CryptoPool

    config = WorkerConfig.from_env({"SIPSEC_WORKER_PLAINTEXT": "1", "SIPSEC_WORKER_TABLE_MIB": "1",
                                    "SIPSEC_WORKER_KEY_CACHE": "16", "SIPSEC_WORKER_PARAMS_CACHE": "8"})
    assert (config.table_mib, config.key_cache) == (1.0, 16)
    async def sizes_in_a_pool_process() -> dict[str, object]:
        pool = CryptoPool(1, 0, params_cache=config.params_cache, key_cache=config.key_cache,
                          table_mib=config.table_mib)
        try:
            await asyncio.wait_for(pool.warm_up(), 120)
            assert pool.pids and os.getpid() not in pool.pids
            sizes: dict[str, object] = await asyncio.wait_for(pool.call(ops.cache_sizes), 120)
            return sizes
        finally:
            await pool.close()

    sizes = asyncio.run(sizes_in_a_pool_process())
    # 1 MiB: two identity-point tables (3/8 MiB), one signer (3/8), no room for a recipient's (1/4)
    assert sizes == {"key_cache": 16, "params_cache": 8, "tables": {"g1": 2, "signers": 1, "gt": 0}}
    defaults = WorkerConfig.from_env({"SIPSEC_WORKER_PLAINTEXT": "1"})
    assert (defaults.table_mib, defaults.key_cache) == (ops.DEFAULT_TABLE_MIB, ops.DEFAULT_KEY_CACHE)
    for bad in ({"SIPSEC_WORKER_TABLE_MIB": "-1"}, {"SIPSEC_WORKER_KEY_CACHE": "0"}):
        with pytest.raises(ConfigError):
            WorkerConfig.from_env({"SIPSEC_WORKER_PLAINTEXT": "1", **bad})
