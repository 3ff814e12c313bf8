"""The images' health probe: the service's real health endpoint, exit 0 when healthy.

    sipsec-probe grpc 127.0.0.1:50051        gRPC health protocol (grpc.health.v1), SERVING
    sipsec-probe http http://127.0.0.1:8080/healthz   HTTP 200

Used by the Dockerfile's HEALTHCHECK and the compose healthchecks; prints one line on failure.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

TIMEOUT_S = 2.0


def grpc_serving(target: str) -> bool:
    """True when ``target`` answers the gRPC health check with SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S)
        except grpc.RpcError as exc:
            print(f"grpc health {target}: {exc.code().name}", file=sys.stderr)
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def http_ok(url: str) -> bool:
    """True when ``url`` (a loopback http URL) answers 200."""
    if not url.startswith("http://127.0.0.1:"):
        print("probe: only http://127.0.0.1:PORT/... URLs", file=sys.stderr)
        return False
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:  # noqa: S310 (loopback)
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"http {url}: {exc}", file=sys.stderr)
        return False


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("grpc", "http"):
        print("usage: sipsec-probe grpc HOST:PORT | http URL", file=sys.stderr)
        return 2
    ok = grpc_serving(argv[1]) if argv[0] == "grpc" else http_ok(argv[1])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
