#!/usr/bin/env bash
# Every benchmark in turn (check + batch, download, footprint, fan-out, console), passing the
# options through: `bench/run-all.sh --smoke` is what CI runs. Builds once
# (release, or debug with --smoke), then runs each script with --no-build.
# Each script keeps its own raw output in bench/results/ (not with --smoke);
# this one keeps the whole session's as YYYY-MM-DD-HHMM-run-all.txt. Then
# `bench/results.py` rebuilds RESULTS.md's table from the scripts' files.
#   bench/run-all.sh [--smoke] [--rounds N] [--duration 8s] [--no-build]
# Exit status: non-zero only when a script breaks, never for a missed target.
source "$(dirname "$0")/lib.sh" "$@"
results_start

build --bin firmcast
build -p hyper-ref
build -p firmcast-push-fakes
build -p fanout-load
build -p console-seed
failed=()
for b in check download footprint fanout console; do
    log "bench/$b.sh $* --no-build"
    "$BENCH_DIR/$b.sh" "$@" --no-build || failed+=("$b")
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "broken bench scripts: ${failed[*]}" >&2
    exit 1
fi
