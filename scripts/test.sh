#!/usr/bin/env bash
# The test command of the README: installs what the tests need, builds the plugin components
# once, then runs every test of both workspaces (the host, and the plugin SDK natively).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# Building stratus-plugin-artifacts compiles every plugin under plugins/ for wasm32-wasip2
# (and the example application natively) exactly once for the whole run.
cargo build --quiet -p stratus-plugin-artifacts
cargo build --quiet --bin stratus
status=0
cargo test --workspace --no-fail-fast 2>&1 || status=$?
cargo test --manifest-path plugins/Cargo.toml --workspace --target-dir target/plugins-native 2>&1 || status=$?
exit "$status"
