"""The sipsec UA gateway: secure SIP user agents (identity-based envelope) and a B2BUA for plain phones."""

from sipsec_gateway.api import create_app
from sipsec_gateway.calls import Agent, Call, CallFailed, CallState, TraceEntry
from sipsec_gateway.config import ENV, ConfigError, GatewayConfig
from sipsec_gateway.gateway import Gateway, GatewayError, PhoneBinding, UserSettings
from sipsec_gateway.keys import ParamsDirectory, PkgConnector, UserKeys
from sipsec_gateway.metrics import GatewayMetrics
from sipsec_gateway.store import CallStore, MemoryCallStore, RedisCallStore
from sipsec_gateway.trace import WireTap, render, wire_view

__all__ = [
    "ENV",
    "Agent",
    "Call",
    "CallFailed",
    "CallState",
    "CallStore",
    "ConfigError",
    "Gateway",
    "GatewayConfig",
    "GatewayError",
    "GatewayMetrics",
    "MemoryCallStore",
    "ParamsDirectory",
    "PhoneBinding",
    "PkgConnector",
    "RedisCallStore",
    "TraceEntry",
    "UserKeys",
    "UserSettings",
    "WireTap",
    "create_app",
    "render",
    "wire_view",
]
