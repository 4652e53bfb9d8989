#!/usr/bin/env bash
# The test command of the README: installs what the tests need, builds the plugin components
# once, then runs every test of both workspaces (the host, and the plugin SDK natively).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# One cargo run builds everything side by side: every plugin under plugins/ for wasm32-wasip2
# and the example application (stratus-plugin-artifacts's build script, once for the whole
# run), the binary, and the test executables; the integration tests are one executable.
# Twice as many test threads as cores: most integration tests wait on processes, a control
# plane or a timer, and 2 threads left the cores idle (BENCHMARKS.md, "Build and test time").
# Tests that measure CPU keep compiling tests off the cores meanwhile (tests/common/cores.rs).
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-$((2 * $(nproc)))}"
status=0
cargo test --workspace --no-fail-fast 2>&1 || status=$?
cargo test --manifest-path plugins/Cargo.toml --workspace --target-dir target/plugins-native 2>&1 || status=$?
exit "$status"
