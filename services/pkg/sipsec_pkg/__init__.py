"""The PKG service of one sipsec provider domain (thesis §3.5.1): sessions, keys, federation, threshold."""

from sipsec_pkg.audit import AuditLog
from sipsec_pkg.clock import Clock, ManualClock, system_clock
from sipsec_pkg.config import ConfigError, Peer, PkgConfig, parse_peers
from sipsec_pkg.federation import Federation, GrpcPeerFetcher, PeerFetcher, PeerUnreachable
from sipsec_pkg.grpc_api import SERVICE_NAME, KeyGeneratorServicer
from sipsec_pkg.material import (
    DomainInit,
    DomainMaterial,
    MaterialError,
    generate_kek,
    init_domain,
    load_kek,
    load_material,
    write_domain,
)
from sipsec_pkg.metrics import PkgMetrics
from sipsec_pkg.node import PkgNode, create_pkg_server
from sipsec_pkg.passwords import ScryptParams
from sipsec_pkg.service import PkgService, ServiceSettings

__all__ = [
    "SERVICE_NAME",
    "AuditLog",
    "Clock",
    "ConfigError",
    "DomainInit",
    "DomainMaterial",
    "Federation",
    "GrpcPeerFetcher",
    "KeyGeneratorServicer",
    "ManualClock",
    "MaterialError",
    "Peer",
    "PeerFetcher",
    "PeerUnreachable",
    "PkgConfig",
    "PkgMetrics",
    "PkgNode",
    "PkgService",
    "ScryptParams",
    "ServiceSettings",
    "create_pkg_server",
    "generate_kek",
    "init_domain",
    "load_kek",
    "load_material",
    "parse_peers",
    "system_clock",
    "write_domain",
]
