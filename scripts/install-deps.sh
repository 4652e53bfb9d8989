#!/usr/bin/env bash
# Installs what Stratus's tests and examples use for real: the wasm32-wasip2 target, the
# Debian packages of the software the example deployments run, and (when called without
# arguments) the pinned tools `stratus plugin build` uses for Python and JavaScript plugins.
# Safe to run again.
set -euo pipefail

# The versions `stratus plugin build` is tested with; its error messages name the same ones.
componentize_py_version=0.25.1
componentize_js_version=0.23.0
# moto's server mode stands in for S3 (and EC2) in the cloud files and cloud driver tests.
moto_version=5.2.1

rustup target add wasm32-wasip2 >/dev/null

# Arguments name the packages to ensure; by default every one the tests use.
all_tools=0
if (($# > 0)); then
  packages=("$@")
else
  all_tools=1
  # openssh-server and openssh-client: the SSH provider's tests run a real sshd per lab host.
  packages=(mariadb-server mariadb-client haproxy puppet ansible-core chromium chromium-driver
    openssh-server openssh-client)
  # componentize-py and componentize-js are installed through pip and npm.
  command -v python3 >/dev/null || packages+=(python3 python3-pip)
  command -v npm >/dev/null || packages+=(nodejs npm)
fi

install_debian_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  # Stratus starts these programs itself; keep the packages' own services from starting.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    created_policy=1
  fi
  apt-get update -qq
  local status=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
  [ "$created_policy" = 1 ] && rm -f "$policy"
  return "$status"
}

# Python plugins are componentized by componentize-py (PyPI), JavaScript plugins by
# componentize-js (npm); each is installed only when the pinned version is not already there.
install_plugin_build_tools() {
  if [ "$(componentize-py --version 2>/dev/null)" != "componentize-py $componentize_py_version" ]; then
    python3 -m pip install --quiet "componentize-py==$componentize_py_version"
  fi
  if [ "$(componentize-js --version 2>/dev/null)" != "$componentize_js_version" ]; then
    npm install --global --silent "@bytecodealliance/componentize-js@$componentize_js_version"
  fi
}

# moto_server (PyPI) is the tests' stand-in for S3 and EC2, installed like the tools above.
install_test_stand_ins() {
  if ! python3 -m pip show moto 2>/dev/null | grep -qx "Version: $moto_version" ||
    ! command -v moto_server >/dev/null; then
    python3 -m pip install --quiet "moto[server]==$moto_version"
  fi
}

install_debian_packages "${packages[@]}"
if ((all_tools)); then
  install_plugin_build_tools
  install_test_stand_ins
fi
