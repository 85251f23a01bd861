#!/usr/bin/env bash
# footprint: start-up to ready (exec to the first 200 from /readyz) and idle
# RSS with 10k releases (2,500 products x 4) in the embedded store; then the
# RSS after a burst of update checks.
#   bench/footprint.sh [--smoke] [--rounds N] [--no-build]
source "$(dirname "$0")/lib.sh" "$@"
results_start "$([ "$SMOKE" = 1 ] || [ "${BENCH_FOOTPRINT_PRODUCTS:-2500}" = 2500 ] || echo "${BENCH_FOOTPRINT_PRODUCTS}p")"

need_common
build --bin firmcast
if [ "$SMOKE" = 1 ]; then PRODUCTS=25; SETTLE=0.2; else PRODUCTS="${BENCH_FOOTPRINT_PRODUCTS:-2500}"; SETTLE=2; fi
RELEASES=4
STARTS=$((ROUNDS < 3 && SMOKE == 0 ? 3 : ROUNDS))

log "catalog: $PRODUCTS products x $RELEASES releases"
firmcast_init "$WORK/fc"
firmcast_start "$WORK/fc"
python3 "$BENCH_DIR/catalog.py" --server "$URL" --token "$TOKEN" --key "$WORK/fc/keys/release-1.pem" \
    --products "$PRODUCTS" --releases "$RELEASES"
stop "$PID"

log "$STARTS start(s)"
for i in $(seq "$STARTS"); do
    python3 "$BENCH_DIR/startup.py" "$SERVER_CPU" "$SETTLE" "$BIN/firmcast" "$WORK/fc/firmcast.toml" >"$WORK/start.txt"
    read -r ready rss <"$WORK/start.txt"
    printf 'firmcast start\tready_ms\t%s\nfirmcast idle\tidle_rss_mb\t%s\n' "$ready" "$rss" >>"$RAW"
    echo "   start $i: ready in $ready ms, idle RSS $rss MB" >&2
done

# RSS once it has served: a short check load, then idle again.
firmcast_start "$WORK/fc"
DUR_SAVE=$DURATION; [ "$SMOKE" = 1 ] || DURATION=4s
wrk_run "check load" 64 "$URL/v1/updates/WH-$(printf %05d $((PRODUCTS / 2)))/1.1.0" >/dev/null
DURATION=$DUR_SAVE
sleep "$SETTLE"   # the measurement is "idle after load", so this wait is the point
printf 'firmcast after load\tidle_rss_mb\t%s\n' "$(rss_mb "$PID")" >>"$RAW"

echo
echo "footprint: $((PRODUCTS * RELEASES)) releases, embedded store, server pinned to cpu $SERVER_CPU, median of $STARTS, $PROFILE build"
report --max "firmcast start" ready_ms 200 \
    --max "firmcast idle" idle_rss_mb 60 \
    --max "firmcast after load" idle_rss_mb 60
