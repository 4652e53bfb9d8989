#!/bin/sh
# Builds the polyglot example's two packages in place: copies the greeter (built by
# `cargo build -p stratus-plugin-artifacts` into plugins/app/bin/) into each, then runs
# `stratus plugin build` on web/ (componentize-py) and api/ (componentize-js).
# Usage: examples/polyglot/build.sh   (from anywhere; STRATUS names the binary, default
# `stratus` on PATH; needs componentize-py 0.25.1 and componentize-js 0.23.0, see
# scripts/install-deps.sh)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
greeter="$repo/plugins/app/bin/greeter"
[ -x "$greeter" ] || { echo "$greeter is missing: run cargo build -p stratus-plugin-artifacts" >&2; exit 1; }
for tier in web api; do
    mkdir -p "$here/$tier/bin"
    cp "$greeter" "$here/$tier/bin/greeter"
    "${STRATUS:-stratus}" plugin build "$here/$tier"
done
