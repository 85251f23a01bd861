#!/usr/bin/env bash
# Builds the client cdylib as apps ship it (profile `ffi`: size-optimized,
# LTO, stripped) and prints its size; also the plain release build, stripped.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=$(cargo metadata --locked --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
cargo build --locked -q --profile ffi -p firmcast-client-ffi
cargo build --locked -q --release -p firmcast-client-ffi
stripped=$(mktemp)
trap 'rm -f "$stripped"' EXIT
strip -o "$stripped" "$target/release/libfirmcast_client_ffi.so"
printf 'profile ffi (opt-level s, lto, stripped): %s bytes\n' "$(stat -c %s "$target/ffi/libfirmcast_client_ffi.so")"
printf 'profile release, stripped:               %s bytes\n' "$(stat -c %s "$stripped")"
