"""sipsec: end-to-end security for SIP signalling with identity-based cryptography.

Layers (docs/architecture.md#layers): ``sip`` (sans-IO SIP), ``ibc`` (identity-based crypto), ``envelope``
(CMS seal/open of SIP messages), ``aio`` (asyncio transports), ``stores``, ``rpc``,
``telemetry``. ``sipsec.sip`` and ``sipsec.ibc`` import no asyncio, grpc, redis or socket code.
"""

__version__ = "0.1.0"
