#!/usr/bin/env bash
# The test command of the README: installs what the tests need, builds the plugin components
# once, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# Building stratus-plugin-artifacts compiles every plugin under plugins/ for wasm32-wasip2.
cargo build --quiet -p stratus-plugin-artifacts
cargo build --quiet --bin stratus
cargo test --workspace --no-fail-fast 2>&1
