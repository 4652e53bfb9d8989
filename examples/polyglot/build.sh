#!/bin/sh
# Builds the polyglot example's two packages in place: copies the greeter (built by
# `cargo build -p stratus-plugin-artifacts` into plugins/app/bin/) into each, then builds
# web/plugin.wasm with componentize-py and api/plugin.wasm with componentize-js, with the WIT
# and the SDKs staged in each package's .stratus/ as `stratus plugin build` stages them.
# Usage: examples/polyglot/build.sh   (from anywhere; needs componentize-py 0.25.1 and
# componentize-js 0.23.0, see scripts/install-deps.sh)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
greeter="$repo/plugins/app/bin/greeter"
[ -x "$greeter" ] || { echo "$greeter is missing: run cargo build -p stratus-plugin-artifacts" >&2; exit 1; }

stage() { # package dir, sdk file
    rm -rf "$1/.stratus"
    mkdir -p "$1/.stratus/wit" "$1/bin"
    cp "$repo"/wit/*.wit "$1/.stratus/wit/"
    cp "$2" "$1/.stratus/"
    cp "$greeter" "$1/bin/greeter"
}

stage "$here/web" "$repo/plugins/sdk-python/stratus_plugin.py"
componentize-py -d "$here/web/.stratus/wit" -w service componentize \
    -p "$here/web" -p "$here/web/.stratus" app -o "$here/web/plugin.wasm"
# componentize-py leaves the bytecode of app.py beside it whatever PYTHONDONTWRITEBYTECODE
# says, and everything in a package directory but dotfiles is uploaded.
rm -rf "$here/web/__pycache__"

stage "$here/api" "$repo/plugins/sdk-js/stratus_plugin.js"
# The `*-js` worlds add WASI's filesystem; `-d http fetch-event` keeps wasi:http (which the
# host does not link) out of the component.
cp -r "$repo"/plugins/sdk-js/wit/* "$here/api/.stratus/wit/"
componentize-js "$here/api/plugin.js" --wit "$here/api/.stratus/wit" -n service-js \
    -d http fetch-event -o "$here/api/plugin.wasm"
