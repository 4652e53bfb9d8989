#!/usr/bin/env bash
# The main job of the README: build Stratus and its plugins, then launch the example
# deployment on the built-in local provider and leave it RUNNING.
set -euo pipefail
cd "$(dirname "$0")/.."
example=${1:-examples/three-tier/deployment.toml}
scripts/install-deps.sh mariadb-server mariadb-client haproxy
# One cargo run: the plugins' nested build (stratus-plugin-artifacts's build script) runs side
# by side with the host's crates instead of before them. Only the plugin packages the example
# names are built (the tests build them all). stratus-feature-union has no code: it asks for the
# features the test build turns on, so that scripts/test.sh afterwards compiles no shared crate
# a second time.
STRATUS_GUEST_PACKAGES=$(grep -o '"\.\./\.\./plugins/[^"]*"' "$example" | sed 's#"../../plugins/##; s#"$##' | sort -u | tr '\n' ' ' || true) \
  cargo build --quiet -p stratus-plugin-artifacts -p stratus -p stratus-feature-union
# As root, programs run as an unprivileged user who must reach the servers' directories: the
# default state directory for root, /var/lib/stratus, is reachable wherever the clone lives.
if [ "$(id -u)" != 0 ]; then
  export STRATUS_STATE_DIR=${STRATUS_STATE_DIR:-$PWD/.stratus}
fi
STRATUS_STATE_DIR=${STRATUS_STATE_DIR:-/var/lib/stratus}
target/debug/stratus launch "$example"
name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$example" | head -n1)
cat <<MSG

State directory: $STRATUS_STATE_DIR
  target/debug/stratus status            # every tier, server and service
  target/debug/stratus events            # what happened, step by step
  target/debug/stratus logs              # component and agent logs
  target/debug/stratus terminate $name   # stop it all

Another example: scripts/launch-example.sh examples/hello/deployment.toml
MSG
