#!/usr/bin/env bash
# Builds the offline base images: a debootstrap of Debian 12 (bookworm, minbase) with python3,
# python3-venv and ca-certificates, imported with `docker import` as TAG; then the same root
# plus Debian's redis-server, imported as REDIS_TAG (compose's Redis where nothing can be pulled).
#
#   scripts/make-base-image.sh [--force] [TAG [REDIS_TAG]]
#   (defaults: sipsec-base:bookworm and sipsec-redis:bookworm)
#
# The Debian mirror is read from this host's apt sources (the one apt already uses), so the
# script works wherever `apt-get install` does, with no registry. The project's Dockerfile
# builds FROM it with `--build-arg BASE=sipsec-base:bookworm`; without that argument it builds
# FROM the official python:3.11-slim-bookworm image. Needs root (debootstrap) and debootstrap.
set -euo pipefail

force=0
if [ "${1:-}" = "--force" ]; then force=1; shift; fi
tag="${1:-sipsec-base:bookworm}"
redis_tag="${2:-sipsec-redis:bookworm}"
suite=bookworm

if [ "$force" -eq 0 ] && docker image inspect "$tag" >/dev/null 2>&1 \
   && docker image inspect "$redis_tag" >/dev/null 2>&1; then
  echo "base images $tag, $redis_tag present (use --force to rebuild)"
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
trap 'rm -rf "$root"' EXIT
echo "debootstrap $suite (minbase) into $root"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$suite" "$root" "$mirror" >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"

# Slim it: no package lists, caches, docs or locales in the image.
slim() {
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
         "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/tmp/* \
         "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/etc/resolv.conf
  find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} + 2>/dev/null || true
}
import_root() {  # import_root TAG CMD-JSON
  tar -C "$root" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "CMD $2" \
    - "$1" >/dev/null
  echo "built $1 ($(docker image inspect -f '{{.Size}}' "$1") bytes)"
}
slim
# an existing base keeps its image id (the service images' build cache hangs on it)
if [ "$force" -eq 1 ] || ! docker image inspect "$tag" >/dev/null 2>&1; then
  import_root "$tag" '["/bin/bash"]'
fi

# The Redis image: the same root plus redis-server from the same mirror (daemons not started).
cp /etc/resolv.conf "$root/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
chroot "$root" apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive chroot "$root" \
  apt-get install -y -qq --no-install-recommends redis-server >/dev/null
rm -f "$root/usr/sbin/policy-rc.d"
slim
import_root "$redis_tag" '["redis-server"]'
