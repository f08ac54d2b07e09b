#!/usr/bin/env bash
# Installs the Debian packages Warren's local stack needs, if any are missing:
# Postgres, RabbitMQ, Redis, HAProxy and foreman (the Procfile runner).
set -euo pipefail

need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in postgresql rabbitmq-server redis-server haproxy ruby-foreman; do
  have "$pkg" || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0

command -v apt-get >/dev/null || { echo "install: missing ${need[*]} and apt-get is not available; install them by hand" >&2; exit 1; }
sudo=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install: missing ${need[*]}; run as root or install sudo" >&2; exit 1; }
  sudo=(sudo)
fi
echo "install: installing ${need[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q >/dev/null
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
# Debian starts packaged services where an init system runs; Warren runs its own copies.
for svc in postgresql rabbitmq-server redis-server haproxy; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    echo "install: note: the system's $svc service is running; Warren starts its own on other ports only if you change them (see README)" >&2
  fi
done
echo "install: done" >&2
