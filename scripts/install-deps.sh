#!/usr/bin/env bash
# Installs what Stratus's tests and examples use for real: the wasm32-wasip2 target and the
# Debian packages of the software the example deployments run. Safe to run again.
set -euo pipefail

rustup target add wasm32-wasip2 >/dev/null

# Arguments name the packages to ensure; by default every one the tests use.
if (($# > 0)); then
  packages=("$@")
else
  packages=(mariadb-server mariadb-client haproxy puppet ansible-core chromium chromium-driver)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "missing packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
# Stratus starts these programs itself; keep the packages' own services from starting.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
