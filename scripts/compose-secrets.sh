#!/usr/bin/env bash
# Writes every secret docker-compose.yml mounts, as files (never environment variables):
#   scripts/compose-secrets.sh [DIR]        DIR defaults to $SIPSEC_COMPOSE_SECRETS or deploy/compose/secrets
# Per domain (atlanta, biloxi): the PKG's KEK, the first user's PKG password, one Redis password per
# Redis user (the services', the exporter's and the read-only `inspect` user's; the exporter's also
# as the JSON map {address: password} its --redis.password-file reads), the gateway's sealing key,
# the gateway control API's token (the client's copy, <domain>_gateway_api_token, stays on this
# host; the gateway gets only its SHA-256 digest), and the SIP-over-TLS CA and certificates
# (scripts/make_dev_certs.py); Grafana's admin password (profile grafana). Files that exist are kept (a KEK
# that changed would make the sealed PKG material unreadable); --force is not offered on purpose:
# delete DIR to start again. Files are 0440, group 10001 (the services' gid), readable by nobody else.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-${SIPSEC_COMPOSE_SECRETS:-deploy/compose/secrets}}"
mkdir -p "$dir"
chmod 0750 "$dir"
umask 077

put() {  # put NAME: writes stdin to DIR/NAME unless it exists
  local f="$dir/$1"
  if [ -s "$f" ]; then cat >/dev/null; return 0; fi
  cat > "$f.tmp"
  [ -s "$f.tmp" ] || { echo "compose-secrets: empty value for $1" >&2; rm -f "$f.tmp"; exit 1; }
  mv "$f.tmp" "$f"
}
hex32() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }

declare -A first_user=([atlanta]=alice [biloxi]=bob)
for d in atlanta biloxi; do
  head -c 32 /dev/urandom | base64 | put "${d}_pkg_kek"
  hex32 | put "${d}_${first_user[$d]}_password"
  for u in pkg location gateway exporter inspect; do hex32 | put "${d}_redis_${u}_password"; done
  printf '{"redis://redis-%s:6379": "%s"}\n' "$d" "$(tr -d '\n' < "$dir/${d}_redis_exporter_password")" \
    | put "${d}_redis_exporter_passwords.json"
  hex32 | put "${d}_gateway_sealing_key"
  hex32 | put "${d}_gateway_api_token"
  printf '%s calls,users,read compose\n' \
    "$(tr -d '\n' < "$dir/${d}_gateway_api_token" | sha256sum | cut -d' ' -f1)" | put "${d}_gateway_api_tokens"
done
hex32 | put grafana_admin_password
if [ ! -s "$dir/ca.pem" ]; then
  tls="$(mktemp -d)"
  .venv/bin/python scripts/make_dev_certs.py "$tls/certs" >/dev/null
  cp "$tls"/certs/* "$dir"/
  rm -rf "$tls"
fi

# readable by the services' group only (they run as 10001:10001; Redis too)
if [ "$(id -u)" -eq 0 ]; then
  chgrp -R 10001 "$dir"
  chmod 0750 "$dir"
  find "$dir" -type f ! -name .gitignore -exec chmod 0440 {} +
elif command -v setfacl >/dev/null; then
  find "$dir" -type f ! -name .gitignore -exec setfacl -m u:10001:r {} +
  setfacl -m u:10001:rx "$dir"
else
  echo "compose-secrets: not root and no setfacl: give uid 10001 read access to $dir yourself" >&2
  exit 1
fi
echo "secrets in $dir"
