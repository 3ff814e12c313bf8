"""``sipsec-location serve``: run the location service until SIGTERM/SIGINT, then drain.

The command shape every service shares (:mod:`sipsec.cli`): ``sipsec-location serve [flags]``,
settings from ``SIPSEC_LOCATION_*`` variables (flags override); exit 0, 2 usage, 1 error.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sipsec.cli import serve_main, serve_until_signalled

from sipsec_location.config import LocationConfig
from sipsec_location.server import create_location_server

__all__ = ["main"]

DESCRIPTION = "sipsec location service: AOR -> contact bindings over gRPC (RFC 3261 §10)."


async def _serve(config: LocationConfig) -> None:
    server, port = create_location_server(config)

    async def start() -> str:
        await server.start()
        return f"sipsec-location listening on port {port}"

    await serve_until_signalled(start, server.stop, logger="sipsec.location")


def main(argv: Sequence[str] | None = None) -> int:
    return serve_main("sipsec-location", DESCRIPTION, LocationConfig, _serve, argv)


if __name__ == "__main__":
    sys.exit(main())
