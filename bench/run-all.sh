#!/usr/bin/env bash
# Every benchmark in turn (check + batch, download, footprint, fan-out), passing the
# options through: `bench/run-all.sh --smoke` is what CI runs. Builds once
# (release, or debug with --smoke), then runs each script with --no-build.
# Exit status: non-zero only when a script breaks, never for a missed target.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
profile=(--release)
build=1
for a in "$@"; do
    case "$a" in --smoke) profile=() ;; --no-build) build=0 ;; esac
done
if [ "$build" = 1 ]; then
    echo "== cargo build ${profile[*]} --bin firmcast -p hyper-ref -p firmcast-push-fakes -p fanout-load" >&2
    (cd "$here/.." && cargo build -q "${profile[@]+"${profile[@]}"}" --bin firmcast \
        && cargo build -q "${profile[@]+"${profile[@]}"}" -p hyper-ref \
        && cargo build -q "${profile[@]+"${profile[@]}"}" -p firmcast-push-fakes \
        && cargo build -q "${profile[@]+"${profile[@]}"}" -p fanout-load)
fi
failed=()
for b in check download footprint fanout; do
    echo "==== bench/$b.sh $* --no-build" >&2
    "$here/$b.sh" "$@" --no-build || failed+=("$b")
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "broken bench scripts: ${failed[*]}" >&2
    exit 1
fi
