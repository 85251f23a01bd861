#!/usr/bin/env bash
# What CI runs for the client library beyond `cargo nextest run --workspace`
# (which runs its Rust tests): the checked-in bindings are current, and the
# Python bindings pass their end-to-end tests against a live firmcast server.
# Needs python3 with pip; installs pytest, requests and cryptography if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONDONTWRITEBYTECODE=1

python3 -c 'import pytest, requests, cryptography' 2>/dev/null \
  || python3 -m pip install -q pytest requests cryptography

# The workspace's test build (what `cargo nextest run --workspace` built
# already, same features), plus the firmcast binary, the cdylib and the
# generator: nothing is compiled twice with other features.
cargo build --locked -q --workspace --all-targets

echo "== client: bindings are current"
client/scripts/generate-bindings.sh --check --no-build

echo "== client: Python bindings against a live server"
target=$(cargo metadata --locked --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
FIRMCAST_BIN="$target/debug/firmcast" \
FIRMCAST_FFI_LIB="$target/debug/libfirmcast_client_ffi.so" \
  python3 -m pytest -q -p no:cacheprovider client/python/tests
