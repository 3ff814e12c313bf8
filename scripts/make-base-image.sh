#!/usr/bin/env bash
# Builds the offline images from Debian packages, with no registry: a debootstrap of Debian 12
# (bookworm, minbase) with python3, python3-venv and ca-certificates, imported with `docker
# import` as TAG; then, each on its own copy of that root:
#   REDIS_TAG       + Debian's redis-server (compose's Redis)
#   PROMETHEUS_TAG  + Debian's prometheus (and wget, for the health check), laid out like the
#                     official prom/prometheus image: /bin/prometheus (bookworm's merged /usr),
#                     /etc/prometheus, the data directory /prometheus owned by nobody (65534),
#                     USER 65534, ENTRYPOINT /bin/prometheus
#   EXPORTER_TAG    + Debian's prometheus-redis-exporter, laid out like oliver006/redis_exporter:
#                     the binary at /redis_exporter, USER 59000, ENTRYPOINT /redis_exporter
#
#   scripts/make-base-image.sh [--force] [TAG [REDIS_TAG [PROMETHEUS_TAG [EXPORTER_TAG]]]]
#   (defaults: sipsec-base:bookworm, sipsec-redis:bookworm, sipsec-prometheus:bookworm,
#    sipsec-redis-exporter:bookworm)
#
# The Debian mirror is read from this host's apt sources (the one apt already uses), so the
# script works wherever `apt-get install` does. The project's Dockerfile builds FROM the base
# with `--build-arg BASE=sipsec-base:bookworm`; without that argument it builds FROM the official
# python:3.11-slim-bookworm image. docker-compose.yml runs the official Prometheus and exporter
# images unless SIPSEC_PROMETHEUS_IMAGE / SIPSEC_REDIS_EXPORTER_IMAGE name these. An image that
# exists is kept (the service images' build cache hangs on the base's id); --force rebuilds all.
# Needs root (debootstrap, chroot) and debootstrap.
set -euo pipefail

force=0
if [ "${1:-}" = "--force" ]; then force=1; shift; fi
tag="${1:-sipsec-base:bookworm}"
redis_tag="${2:-sipsec-redis:bookworm}"
prometheus_tag="${3:-sipsec-prometheus:bookworm}"
exporter_tag="${4:-sipsec-redis-exporter:bookworm}"
suite=bookworm

missing() { [ "$force" -eq 1 ] || ! docker image inspect "$1" >/dev/null 2>&1; }
if ! missing "$tag" && ! missing "$redis_tag" && ! missing "$prometheus_tag" && ! missing "$exporter_tag"; then
  echo "offline images $tag, $redis_tag, $prometheus_tag, $exporter_tag present (use --force to rebuild)"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap missing: apt-get install debootstrap" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "debootstrap needs root" >&2; exit 1; }

# The first Debian mirror of the host's apt sources that serves $suite (deb822 or one-line).
mirror_from_apt() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v s="$suite" '
      /^URIs:/ {u=$2} /^Suites:/ {for (i=2;i<=NF;i++) if ($i==s) ok=1}
      /^$/ {if (ok && u !~ /security/) {print u; exit} ok=0; u=""}
      END {if (ok && u !~ /security/) print u}' "$f"
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | awk -v s="$suite" '$1=="deb" && $0 !~ /security/ {for (i=2;i<=NF;i++) if ($i==s) {for (j=2;j<=NF;j++) if ($j ~ /^[a-z]+:\/\//) {print $j; exit}}}' || true
}
mirror="${SIPSEC_DEBIAN_MIRROR:-$(mirror_from_apt | head -n1 || true)}"
[ -n "$mirror" ] || { echo "no Debian $suite mirror in the apt sources; set SIPSEC_DEBIAN_MIRROR" >&2; exit 1; }

root="$(mktemp -d /tmp/sipsec-base.XXXXXX)"
trap 'rm -rf "$root" "$root".*' EXIT
echo "debootstrap $suite (minbase) into $root"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$suite" "$root" "$mirror" >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"

# Slim a root: no package lists, caches, docs or locales in the image.
slim() {  # slim DIR
  rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/cache/apt/archives/*.deb \
         "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/info/* "$1"/tmp/* \
         "$1"/var/log/*.log "$1"/var/log/apt/* "$1"/etc/resolv.conf
  find "$1"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} + 2>/dev/null || true
}
import_root() {  # import_root DIR TAG [--change INSTRUCTION]...
  local dir="$1" image="$2"
  shift 2
  tar -C "$dir" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    "$@" - "$image" >/dev/null
  echo "built $image ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
}
# A copy of the base root plus Debian packages (installed from the same mirror, daemons not started).
with_packages() {  # with_packages DIR PACKAGE...
  local dir="$1"
  shift
  cp -a "$root" "$dir"
  cp /etc/resolv.conf "$dir/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' > "$dir/usr/sbin/policy-rc.d"
  chmod 0755 "$dir/usr/sbin/policy-rc.d"
  chroot "$dir" apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive chroot "$dir" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  rm -f "$dir/usr/sbin/policy-rc.d"
}

slim "$root"
if missing "$tag"; then
  import_root "$root" "$tag" --change 'CMD ["/bin/bash"]'
fi

if missing "$redis_tag"; then
  with_packages "$root.redis" redis-server
  slim "$root.redis"
  import_root "$root.redis" "$redis_tag" --change 'CMD ["redis-server"]'
  rm -rf "$root.redis"
fi

if missing "$prometheus_tag"; then
  with_packages "$root.prometheus" prometheus wget
  [ -x "$root.prometheus/bin/prometheus" ] && [ -x "$root.prometheus/bin/promtool" ] \
    || { echo "prometheus: /bin/prometheus missing (no merged /usr?)" >&2; exit 1; }
  install -d -o 65534 -g 65534 -m 0755 "$root.prometheus/prometheus"
  slim "$root.prometheus"
  import_root "$root.prometheus" "$prometheus_tag" \
    --change 'USER 65534:65534' --change 'WORKDIR /prometheus' --change 'EXPOSE 9090' \
    --change 'ENTRYPOINT ["/bin/prometheus"]' \
    --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
  rm -rf "$root.prometheus"
fi

if missing "$exporter_tag"; then
  with_packages "$root.exporter" prometheus-redis-exporter
  ln -s /usr/bin/prometheus-redis-exporter "$root.exporter/redis_exporter"
  slim "$root.exporter"
  import_root "$root.exporter" "$exporter_tag" \
    --change 'USER 59000:59000' --change 'EXPOSE 9121' --change 'ENTRYPOINT ["/redis_exporter"]'
  rm -rf "$root.exporter"
fi
