"""The process's fixed-base tables as one thing to size, switch and read: ``configure_tables``
and ``table_stats`` (the policy itself: :mod:`sipsec.ibc.hazmat.tables`)."""

from __future__ import annotations

from sipsec.ibc import _keys
from sipsec.ibc.hazmat import backend as bk
from sipsec.ibc.hazmat import tables

__all__ = ["configure_tables", "table_stats"]


def configure_tables(memory_mib: float = tables.DEFAULT_TABLE_MIB, policy: str = tables.FREQUENCY) -> dict[str, int]:
    """Size this process's tables from a memory budget and choose their admission policy.

    ``memory_mib`` is split 3/8 identity-point tables (~171 KiB each), 3/8 signing keys'
    tables (~343 KiB), 1/4 recipients' e(Q_ID, P_pub) tables (~588 KiB); a share too small
    for one table turns that kind off. ``policy``: ``"frequency"`` (default), ``"second-use"``
    (the first policy, for comparison) or ``"off"``. Every table built so far is dropped.
    Returns the capacities: ``{"g1": ..., "signers": ..., "gt": ...}``.
    """
    if memory_mib < 0:
        raise ValueError("memory_mib must not be negative")
    if policy not in tables.POLICIES:
        raise ValueError(f"unknown table policy {policy!r}")
    g1_bytes, signer_bytes, gt_bytes = tables.budgets(memory_mib)
    sizes = {"g1": tables.capacity_for(g1_bytes, tables.G1_TABLE_BYTES),
             "signers": tables.capacity_for(signer_bytes, tables.SIGNER_TABLE_BYTES),
             "gt": tables.capacity_for(gt_bytes, tables.GT_TABLE_BYTES)}
    for cache, size in ((bk.PUBLIC_G1_TABLES, sizes["g1"]), (bk.PUBLIC_GT_TABLES, sizes["gt"])):
        cache.configure(max(1, size), policy if size else tables.OFF)
    _keys._HOLDERS.configure(max(1, sizes["signers"]), policy if sizes["signers"] else tables.OFF)
    return sizes


def table_stats(reset: bool = False) -> dict[str, dict[str, object]]:
    """Per kind of table (``g1``, ``signers``, ``gt``): hits, misses, builds, evictions, refused
    admissions, hit ratio, tables held and capacity; ``reset`` zeroes the counts after reading."""
    out: dict[str, dict[str, object]] = {}
    for name, stats, held, capacity, policy in (
        ("g1", bk.PUBLIC_G1_TABLES.stats, len(bk.PUBLIC_G1_TABLES), bk.PUBLIC_G1_TABLES.capacity,
         bk.PUBLIC_G1_TABLES.policy),
        ("signers", _keys._HOLDERS.stats, len(_keys._HOLDERS), _keys._HOLDERS.capacity, _keys._HOLDERS.policy),
        ("gt", bk.PUBLIC_GT_TABLES.stats, len(bk.PUBLIC_GT_TABLES), bk.PUBLIC_GT_TABLES.capacity,
         bk.PUBLIC_GT_TABLES.policy),
    ):
        out[name] = {**stats.as_dict(), "held": held, "capacity": capacity, "policy": policy}
        if reset:
            stats.reset()
    return out
