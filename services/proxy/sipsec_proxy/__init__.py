"""The sipsec SIP proxy and registrar (RFC 3261 §16 transaction-stateful proxy, §10 registrar)."""

from sipsec_proxy.config import ProxyConfig
from sipsec_proxy.locator import GrpcLocator, Locator, StoreLocator
from sipsec_proxy.registrar import RegisterRejected, RegisterVerifier
from sipsec_proxy.server import ProxyServer, create_proxy_server
from sipsec_proxy.signed_register import SignedRegisterVerifier

__all__ = ["GrpcLocator", "Locator", "ProxyConfig", "ProxyServer", "RegisterRejected",
           "RegisterVerifier", "SignedRegisterVerifier", "StoreLocator", "create_proxy_server"]
