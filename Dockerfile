# sipsec: one multi-stage build, one target per service (docs/containers.md says why).
#
#   .venv/bin/python scripts/lock-deps.py --check && scripts/build-wheelhouse.sh
#   docker build --target pkg -t sipsec-pkg:dev .          # also: location proxy gateway worker
#   offline: scripts/make-base-image.sh, then add --build-arg BASE=sipsec-base:bookworm
#
# Dependencies come only from build/wheelhouse (the wheels of requirements/lock.txt, built on
# the host): no network inside the build. They are installed before any source is copied, so a
# source change rebuilds only the small per-service layers. Each target holds the library and
# its own service package, nothing of the other four. Runs as uid 10001, works on a read-only
# root file system (the library's byte code compiled at build time), and checks its own real
# health endpoint.
# The default base is the official image a user would pull; pin it by digest where a registry is
# reachable: --build-arg BASE=python:3.11-slim-bookworm@sha256:<digest>.
ARG BASE=python:3.11-slim-bookworm
# compose's Redis (the last target); offline: --build-arg REDIS_BASE=sipsec-redis:bookworm
ARG REDIS_BASE=redis:7.2-bookworm

# ---------------------------------------------------------------- third-party dependencies
FROM ${BASE} AS deps
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=1
COPY requirements/lock.txt /tmp/lock.txt
COPY build/wheelhouse/ /tmp/wheelhouse/
RUN python3 -m venv /opt/sipsec \
 && /opt/sipsec/bin/pip install --quiet --no-index --find-links /tmp/wheelhouse --require-virtualenv \
        -r /tmp/lock.txt \
 && /opt/sipsec/bin/pip uninstall --quiet --yes pip setuptools \
 && rm -rf /tmp/wheelhouse /tmp/lock.txt

# ---------------------------------------------------------------- what every service shares
FROM ${BASE} AS runtime
ENV PATH=/opt/sipsec/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/opt/sipsec/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=deps /opt/sipsec /opt/sipsec
COPY pyproject.toml deploy/docker/probe.py /tmp/build/
# the user; sipsec's metadata (its version for sipsec_build_info); the console scripts (each
# imports only its own package, which only its own target holds; guarded like pip's, since the
# crypto-worker's spawned processes import the main script again); the directories the volumes
# inherit (owned by the services' user)
RUN groupadd --system --gid 10001 sipsec \
 && useradd --system --uid 10001 --gid sipsec --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin sipsec \
 && mkdir -p /opt/sipsec/app \
 && mv /tmp/build/probe.py /opt/sipsec/app/sipsec_probe.py \
 && python3 -c "import tomllib, pathlib; v = tomllib.load(open('/tmp/build/pyproject.toml', 'rb'))['project']['version']; d = pathlib.Path('/opt/sipsec/app/sipsec-%s.dist-info' % v); d.mkdir(); (d / 'METADATA').write_text('Metadata-Version: 2.1\nName: sipsec\nVersion: %s\n' % v)" \
 && rm -rf /tmp/build \
 && printf '#!/opt/sipsec/bin/python\nimport sys\nfrom sipsec_probe import main\nsys.exit(main(sys.argv[1:]))\n' \
        > /opt/sipsec/bin/sipsec-probe \
 && for s in pkg location worker proxy gateway; do \
      printf '#!/opt/sipsec/bin/python\nimport sys\nfrom sipsec_%s.__main__ import main\nif __name__ == "__main__":\n    sys.exit(main())\n' "$s" \
        > "/opt/sipsec/bin/sipsec-$s"; \
    done \
 && chmod 0755 /opt/sipsec/bin/sipsec-* \
 && install -d -o 10001 -g 10001 -m 0755 /var/lib/sipsec-federation \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/sipsec-pkg
# the library last of the shared layers: it changes most often
COPY libs/sipsec /opt/sipsec/app/sipsec
RUN python3 -m compileall -q /opt/sipsec/app
ARG REVISION=unknown
ENV SIPSEC_BUILD_REVISION=${REVISION}
USER 10001:10001
STOPSIGNAL SIGTERM

# ---------------------------------------------------------------- one target per service
# (few instructions each: the classic builder runs every stage before the requested target)
FROM runtime AS pkg
COPY services/pkg/sipsec_pkg /opt/sipsec/app/sipsec_pkg
ENV SIPSEC_PKG_LISTEN=0.0.0.0:50051 SIPSEC_PKG_DATA_DIR=/var/lib/sipsec-pkg SIPSEC_PKG_METRICS_PORT=9464
EXPOSE 50051 9464
HEALTHCHECK --interval=10s --timeout=10s --start-period=30s CMD ["sipsec-probe", "grpc", "127.0.0.1:50051"]
ENTRYPOINT ["sipsec-pkg"]
CMD ["serve"]

FROM runtime AS location
COPY services/location/sipsec_location /opt/sipsec/app/sipsec_location
ENV SIPSEC_LOCATION_LISTEN=0.0.0.0:50052 SIPSEC_LOCATION_METRICS_PORT=9462
EXPOSE 50052 9462
HEALTHCHECK --interval=10s --timeout=10s --start-period=30s CMD ["sipsec-probe", "grpc", "127.0.0.1:50052"]
ENTRYPOINT ["sipsec-location"]
CMD ["serve"]

FROM runtime AS worker
COPY services/crypto-worker/sipsec_worker /opt/sipsec/app/sipsec_worker
ENV SIPSEC_WORKER_LISTEN=0.0.0.0:50053 SIPSEC_WORKER_METRICS_PORT=9465
EXPOSE 50053 9465
HEALTHCHECK --interval=10s --timeout=10s --start-period=30s CMD ["sipsec-probe", "grpc", "127.0.0.1:50053"]
ENTRYPOINT ["sipsec-worker"]
CMD ["serve"]

FROM runtime AS proxy
COPY services/proxy/sipsec_proxy /opt/sipsec/app/sipsec_proxy
ENV SIPSEC_PROXY_LISTEN=0.0.0.0:5060 SIPSEC_PROXY_METRICS_PORT=9463
EXPOSE 5060/udp 5060/tcp 5061/tcp 9463
# /readyz on the metrics port: ready when the location service and the PKG answer
HEALTHCHECK --interval=10s --timeout=10s --start-period=30s CMD ["sipsec-probe", "http", "http://127.0.0.1:9463/readyz"]
ENTRYPOINT ["sipsec-proxy"]
CMD ["serve"]

FROM runtime AS gateway
COPY services/ua-gateway/sipsec_gateway /opt/sipsec/app/sipsec_gateway
ENV SIPSEC_GATEWAY_SIP_LISTEN=0.0.0.0:5070 SIPSEC_GATEWAY_HTTP_LISTEN=0.0.0.0:8080
EXPOSE 5070/udp 5070/tcp 5080/udp 8080 9466
# /readyz on the control API: ready when it serves SIP (not draining), its store and a PKG node
# answer, and the users it keeps are restored (/livez: the process only)
HEALTHCHECK --interval=10s --timeout=10s --start-period=30s CMD ["sipsec-probe", "http", "http://127.0.0.1:8080/readyz"]
ENTRYPOINT ["sipsec-gateway"]
CMD ["serve"]

# ---------------------------------------------------------------- Redis for compose
# The Redis server image (official, or Debian's redis-server offline) running as 10001 with a
# /data the named volume inherits; compose writes the ACL file there and starts it (AOF on).
FROM ${REDIS_BASE} AS redis
USER root
RUN (getent group 10001 >/dev/null || groupadd --system --gid 10001 sipsec) \
 && (getent passwd 10001 >/dev/null || useradd --system --uid 10001 --gid 10001 \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin sipsec) \
 && install -d -o 10001 -g 10001 -m 0700 /data
WORKDIR /data
USER 10001:10001
EXPOSE 6379
# up, and refusing anonymous clients
HEALTHCHECK --interval=5s --timeout=3s CMD ["sh", "-c", "redis-cli ping 2>&1 | grep -q NOAUTH"]
ENTRYPOINT []
CMD ["redis-server", "--protected-mode", "yes"]
