#!/usr/bin/env bash
# Installs the Debian packages that the tests and the demo need, only when one is missing.
#   scripts/install-system-deps.sh          redis-server, sipp (sip-tester), openssl, sipvicious, prometheus, kamailio, chromium
#   scripts/install-system-deps.sh --bench  the same (kamailio is also bench/proxy_cps.py's comparison)
#   (with a Docker engine present also debootstrap and tcpdump, for make compose-test)
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# svwar/svcrack: bench/scan.py and tests/e2e/attack (the attacker's view of the SIP edge)
command -v svwar >/dev/null 2>&1 || need+=(sipvicious)
# promtool and a real Prometheus server: deploy/prometheus rule tests, tests/e2e/observability
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# kamailio (its nathelper module ships in the kamailio package): tests/e2e/kamailio, bench/proxy_cps.py
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || need+=(kamailio)
# headless Chromium: tests/e2e/load renders `sipsec load`'s HTML report and checks it shows data
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if ! command -v kubectl >/dev/null 2>&1; then
  # tests/unit/deploy renders k8s/ with `kubectl kustomize` (no cluster needed). Debian ships
  # no kubectl; it is installed only where an apt source offers it (as on the CI image).
  if apt-cache policy kubectl 2>/dev/null | grep -q "Candidate: [0-9]"; then need+=(kubectl)
  else echo "note: kubectl not found and no apt source offers it; tests/unit/deploy/test_k8s.py needs it" >&2; fi
fi
# the container stage (make compose-test), where a Docker engine is installed: debootstrap for
# the offline base image (scripts/make-base-image.sh), tcpdump for the federation capture
if command -v docker >/dev/null 2>&1; then
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
  command -v tcpdump >/dev/null 2>&1 || [ -x /usr/bin/tcpdump ] || [ -x /usr/sbin/tcpdump ] || need+=(tcpdump)
fi
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${need[*]}"
if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
