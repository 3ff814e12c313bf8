"""``sipsec-location``: run the location service until SIGTERM/SIGINT, then drain."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from sipsec import lifecycle
from sipsec.lifecycle import stop_on_signals

from sipsec_location.config import parse_args
from sipsec_location.server import create_location_server

__all__ = ["main"]


async def _serve(argv: Sequence[str] | None) -> None:
    config = parse_args(argv)
    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    server, port = create_location_server(config)
    await server.start()
    print(f"sipsec-location listening on port {port}", flush=True)
    stop = stop_on_signals()
    await stop.wait()
    logging.getLogger("sipsec.location").info("draining")
    await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    lifecycle.run(_serve(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
