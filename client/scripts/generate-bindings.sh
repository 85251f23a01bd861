#!/usr/bin/env bash
# Generates the Kotlin, Swift and Python bindings of firmcast-client-ffi into
# client/bindings/ from the built library (UniFFI library mode), with the
# workspace's own uniffi-bindgen so library and bindings always match.
#
# usage: client/scripts/generate-bindings.sh [--check] [--no-build]
#   --check     generate into a temp dir and fail if client/bindings differs
#   --no-build  use the debug library and generator already built
set -euo pipefail
cd "$(dirname "$0")/../.."

check=0
build=1
for arg in "$@"; do
  case "$arg" in
    --check) check=1 ;;
    --no-build) build=0 ;;
    *) echo "usage: $0 [--check] [--no-build]" >&2; exit 2 ;;
  esac
done

if [ "$build" = 1 ]; then
  cargo build --locked -q -p firmcast-client-ffi -p uniffi-bindgen
fi
target=$(cargo metadata --locked --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
case "$(uname -s)" in
  Darwin) lib="$target/debug/libfirmcast_client_ffi.dylib" ;;
  *) lib="$target/debug/libfirmcast_client_ffi.so" ;;
esac

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for lang in kotlin swift python; do
  # --no-format: the output must not depend on which formatters a machine has.
  "$target/debug/uniffi-bindgen" generate "$lib" --language "$lang" \
    --out-dir "$out/$lang" --no-format >/dev/null
done

if [ "$check" = 1 ]; then
  if ! diff -r -q "$out" client/bindings >/dev/null 2>&1; then
    diff -r -u client/bindings "$out" | head -n 40 >&2 || true
    echo >&2
    echo "client/bindings is not current with client/ffi: run client/scripts/generate-bindings.sh and commit the result" >&2
    exit 1
  fi
  echo "client/bindings is current"
else
  rm -rf client/bindings/kotlin client/bindings/swift client/bindings/python
  mkdir -p client/bindings
  cp -R "$out/kotlin" "$out/swift" "$out/python" client/bindings/
  echo "wrote client/bindings/{kotlin,swift,python}"
fi
