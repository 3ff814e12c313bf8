#!/usr/bin/env bash
# Builds the five service images and compose's Redis from the one Dockerfile (a target each):
#   scripts/build-images.sh [--offline]
# --offline first makes the debootstrap base images (scripts/make-base-image.sh; kept when
# present) and builds FROM them; otherwise FROM the Dockerfile's defaults (the official images).
# Tags: ${SIPSEC_IMAGE_PREFIX:-sipsec-}<service>:${SIPSEC_IMAGE_TAG:-dev}, as docker-compose.yml
# names them. Checks the lock file is current and fills the wheelhouse first.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${SIPSEC_IMAGE_PREFIX:-sipsec-}"
tag="${SIPSEC_IMAGE_TAG:-dev}"
args=()
if [ "${1:-}" = "--offline" ]; then
  scripts/make-base-image.sh
  args+=(--build-arg "BASE=sipsec-base:bookworm" --build-arg "REDIS_BASE=sipsec-redis:bookworm")
fi
.venv/bin/python scripts/lock-deps.py --check
scripts/build-wheelhouse.sh
rev="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# redis last: the classic builder runs every stage before the target
for target in pkg location worker proxy gateway redis; do
  start=$SECONDS
  # the classic builder (Docker 20.10 has no BuildKit plugin here); its output only on failure
  if ! DOCKER_BUILDKIT=0 docker build "${args[@]}" --build-arg "REVISION=$rev" \
       --target "$target" --tag "$prefix$target:$tag" . >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    exit 1
  fi
  echo "built $prefix$target:$tag ($((SECONDS - start)) s)"
done
