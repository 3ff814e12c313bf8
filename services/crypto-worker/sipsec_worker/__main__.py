"""``sipsec-worker serve``: run the crypto-worker until SIGTERM/SIGINT, then drain.

The command shape every service shares (:mod:`sipsec.cli`): ``sipsec-worker serve [flags]``,
settings from ``SIPSEC_WORKER_*`` variables (flags override); exit 0, 2 usage, 1 error.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sipsec.cli import serve_main, serve_until_signalled

from sipsec_worker.config import WorkerConfig
from sipsec_worker.server import create_worker_server

__all__ = ["main"]

DESCRIPTION = "sipsec crypto-worker: stateless IBE/IBS operations over gRPC, on a process pool."


async def _serve(config: WorkerConfig) -> None:
    server, port = create_worker_server(config)

    async def start() -> str:
        await server.start()
        return f"sipsec-worker listening on port {port} metrics {server.metrics_port}"

    await serve_until_signalled(start, server.stop, logger="sipsec.worker")


def main(argv: Sequence[str] | None = None) -> int:
    return serve_main("sipsec-worker", DESCRIPTION, WorkerConfig, _serve, argv)


if __name__ == "__main__":
    sys.exit(main())
