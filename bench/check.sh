#!/usr/bin/env bash
# check + batch: `GET /v1/updates/{p}/{v}` against a realistic catalog (500
# products x 4 releases, partial rollouts) vs nginx serving the identical
# response bytes as a static file and vs a bare hyper server (bench/hyper-ref)
# answering the same bytes; then `POST /v1/updates` with 3 items vs the single
# check. Server on one core, wrk -t1 -c64 on the other.
# Also: the check as most apps send it, with yesterday's `last_day` (counted
# as active), against the same check served by firmcast as of
# BENCH_BEFORE_REV (default 8512d3b, before rollout intelligence), built
# once; and `POST /v1/reports` (an install report) against the check.
#   bench/check.sh [--smoke] [--rounds N] [--duration 8s] [--no-build]
# BENCH_CALLGRIND=1: instructions per request (callgrind) instead of wrk rounds.
source "$(dirname "$0")/lib.sh" "$@"
results_start "$([ "${BENCH_CALLGRIND:-0}" = 0 ] || echo callgrind)"

need_common
need nginx nginx
build --bin firmcast
build -p hyper-ref
build_before "${BENCH_BEFORE_REV:-8512d3b}"
CONNS=64
if [ "$SMOKE" = 1 ]; then PRODUCTS=10; else PRODUCTS=500; fi
RELEASES=4

log "catalog: $PRODUCTS products x $RELEASES releases"
firmcast_init "$WORK/fc"
firmcast_start "$WORK/fc"
FC_PID=$PID FC_URL=$URL
python3 "$BENCH_DIR/catalog.py" --server "$FC_URL" --token "$TOKEN" --key "$WORK/fc/keys/release-1.pem" \
    --products "$PRODUCTS" --releases "$RELEASES"

# A device on 1.1.0 of a product in the middle of the catalog: offered 1.2.0,
# or 1.3.0 (25% rollout, from >=1.1.0) depending on the client's bucket.
P="WH-$(printf %05d $((PRODUCTS / 2)))"
CHECK_PATH="/v1/updates/$P/1.1.0"
curl -fsS -D "$WORK/check.headers" -o "$WORK/check.body" "$FC_URL$CHECK_PATH"
grep -q '"update":{' "$WORK/check.body" || grep -q '"update": *{' "$WORK/check.body" \
    || die "the check answer has no offer: $(head -c 300 "$WORK/check.body")"
log "check answer: $(wc -c <"$WORK/check.body") bytes"
# Same response headers for the hyper reference (not date/length/type).
HDR_ARGS=()
while IFS= read -r h; do
    h="${h%$'\r'}"
    case "${h,,}" in etag:*|cache-control:*|vary:*) HDR_ARGS+=(--header "$h") ;; esac
done <"$WORK/check.headers"

mkdir -p "$WORK/www$(dirname "$CHECK_PATH")"
cp "$WORK/check.body" "$WORK/www$CHECK_PATH"
nginx_start "$WORK/www"
NG_PID=$PID
cmp -s <(curl -fsS "$NGINX_URL$CHECK_PATH") "$WORK/check.body" || die "nginx does not serve the same bytes"

log "hyper-ref binary: $(binary_id "$BIN/hyper-ref")"
start hyper-ref taskset -c "$SERVER_CPU" "$BIN/hyper-ref" "$WORK/check.body" "${HDR_ARGS[@]}"
HY_PID=$PID
HY_URL="$(wait_for_line "$HY_PID" "$WORK/hyper-ref.log" '^hyper-ref listening on ' 30)"
HY_URL="${HY_URL#hyper-ref listening on }"
cmp -s <(curl -fsS "$HY_URL$CHECK_PATH") "$WORK/check.body" || die "hyper-ref does not serve the same bytes"

# The check as most apps send it: yesterday's day echoed (counted active).
LAST_DAY_PATH="$CHECK_PATH?last_day=$(( $(date +%s) / 86400 - 1 ))"
grep -q '"day":' <(curl -fsS "$FC_URL$LAST_DAY_PATH") || die "no day in the check answer"
# An install report of the release the check offers.
cat >"$WORK/report.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"product":"$P","from":"1.1.0","to":"1.2.0","outcome":"installed"}'
LUA
code="$(curl -sS -o "$WORK/report.body" -w '%{http_code}' -H 'Content-Type: application/json' \
    --data "$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$WORK/report.lua")" "$FC_URL/v1/reports")"
[ "$code" = 202 ] || die "the report answered $code: $(head -c 300 "$WORK/report.body")"

# The same catalog on the binary from before rollout intelligence.
BF_URL=""
if [ -n "$BEFORE_BIN" ]; then
    firmcast_init "$WORK/before"
    start firmcast.before env RUST_LOG=warn taskset -c "$SERVER_CPU" \
        "$BEFORE_BIN" serve --config "$WORK/before/firmcast.toml"
    BF_PID=$PID
    BF_URL="$(wait_for_line "$BF_PID" "$WORK/firmcast.before.log" '^firmcast listening on http://' 120)"
    BF_URL="${BF_URL#firmcast listening on }"
    wait_http "$BF_URL/readyz"
    python3 "$BENCH_DIR/catalog.py" --server "$BF_URL" --token "$TOKEN" --key "$WORK/before/keys/release-1.pem" \
        --products "$PRODUCTS" --releases "$RELEASES"
    curl -fsS "$BF_URL$CHECK_PATH" | grep -q '"update":' || die "the before binary offers nothing"
fi

# Batch: the app and two paired devices.
Q="WH-$(printf %05d $((PRODUCTS / 3)))"
R="WH-$(printf %05d $((PRODUCTS - 1)))"
cat >"$WORK/batch.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"items":[{"product":"$P","version":"1.1.0"},{"product":"$Q","version":"1.0.0","channel":"stable"},{"product":"$R","version":"1.2.0"}]}'
LUA
code="$(curl -sS -o "$WORK/batch.body" -w '%{http_code}' -H 'Content-Type: application/json' \
    --data "$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$WORK/batch.lua")" "$FC_URL/v1/updates")"
[ "$code" = 200 ] || die "batch answered $code: $(head -c 300 "$WORK/batch.body")"

if [ "${BENCH_CALLGRIND:-0}" = 1 ]; then
    # Instructions per request under callgrind instead of wrk rounds: the
    # same count whatever else runs on the machine (kernel time not included).
    need valgrind valgrind
    cg_count() { # cg_count NAME PID OUT URL [WRK-ARGS...]: an instructions/request row in RAW
        local name="$1" pid="$2" out="$3" url="$4"; shift 4
        taskset -c "$LOAD_CPU" wrk -t1 -c8 -d2s "$@" "$url" >/dev/null
        callgrind_control -z "$pid" >/dev/null 2>&1
        taskset -c "$LOAD_CPU" wrk -t1 -c8 -d5s "$@" "$url" >"$WORK/cg.wrk"
        callgrind_control -d "$pid" >/dev/null 2>&1
        local dump n ir
        dump="$(ls -t "$out".* | head -1)"
        n="$(awk '/requests in/ {print $1}' "$WORK/cg.wrk")"
        ir="$(awk '/^summary:/ {print $2}' "$dump")"
        printf '   %-20s %8d instructions/request (%s requests; %s)\n' "$name" $((ir / n)) "$n" "$dump" >&2
        printf '%s\tinstr\t%s\n' "$name" $((ir / n)) >>"$RAW"
    }
    cg_start() { # cg_start NAME OUT CMD...: the command under callgrind; sets PID and CG_URL
        local name="$1" out="$2"; shift 2
        start "$name" env RUST_LOG=warn taskset -c "$SERVER_CPU" \
            valgrind --tool=callgrind --callgrind-out-file="$out" "$@"
        CG_URL="$(wait_for_line "$PID" "$WORK/$name.log" 'listening on http://' 120)"
        CG_URL="http://${CG_URL##*http://}"
    }
    stop "$FC_PID"
    stop "$HY_PID"
    cg_start cg.firmcast "$WORK/cg.firmcast.out" "$BIN/firmcast" serve --config "$WORK/fc/firmcast.toml"
    cg_count "firmcast check" "$PID" "$WORK/cg.firmcast.out" "$CG_URL$CHECK_PATH"
    cg_count "firmcast check last_day" "$PID" "$WORK/cg.firmcast.out" "$CG_URL$LAST_DAY_PATH"
    cg_count "firmcast batch(3)" "$PID" "$WORK/cg.firmcast.out" "$CG_URL/v1/updates" -s "$WORK/batch.lua"
    cg_count "firmcast report" "$PID" "$WORK/cg.firmcast.out" "$CG_URL/v1/reports" -s "$WORK/report.lua"
    stop "$PID"
    BEFORE_ROWS=()
    if [ -n "$BF_URL" ]; then
        stop "$BF_PID"
        cg_start cg.before "$WORK/cg.before.out" "$BEFORE_BIN" serve --config "$WORK/before/firmcast.toml"
        cg_count "before check" "$PID" "$WORK/cg.before.out" "$CG_URL$CHECK_PATH"
        stop "$PID"
        BEFORE_ROWS=(--ratio-max "firmcast check last_day" instr "before check" 1.03)
    fi
    cg_start cg.hyper-ref "$WORK/cg.hyper-ref.out" "$BIN/hyper-ref" "$WORK/check.body" "${HDR_ARGS[@]}"
    cg_count "hyper-ref" "$PID" "$WORK/cg.hyper-ref.out" "$CG_URL$CHECK_PATH"
    echo
    echo "check + batch, instructions per request under callgrind (wrk -t1 -c8 -d5s after 2 s of warm-up; kernel time not counted): $PRODUCTS products x $RELEASES releases, $(wc -c <"$WORK/check.body")-byte answer, $PROFILE build"
    report --show "hyper-ref" --show "firmcast batch(3)" --show "firmcast report" \
        --ratio-max "firmcast check" instr "hyper-ref" 1.3 "${BEFORE_ROWS[@]}"
    exit 0
fi

log "$ROUNDS round(s) of wrk -t1 -c$CONNS -d$DURATION, each side in turn"
for round in $(seq "$ROUNDS"); do
    log "round $round"
    wrk_run "firmcast check" "$CONNS" "$FC_URL$CHECK_PATH"
    wrk_run "nginx static" "$CONNS" "$NGINX_URL$CHECK_PATH"
    wrk_run "hyper-ref" "$CONNS" "$HY_URL$CHECK_PATH"
    wrk_run "firmcast batch(3)" "$CONNS" "$FC_URL/v1/updates" -s "$WORK/batch.lua"
    wrk_run "firmcast check last_day" "$CONNS" "$FC_URL$LAST_DAY_PATH"
    [ -z "$BF_URL" ] || wrk_run "before check" "$CONNS" "$BF_URL$CHECK_PATH"
    wrk_run "firmcast report" "$CONNS" "$FC_URL/v1/reports" -s "$WORK/report.lua"
done
BEFORE_ROWS=()
[ -z "$BF_URL" ] || BEFORE_ROWS=(--ratio "firmcast check last_day" rps "before check" 0.97)
echo "firmcast idle RSS after load: $(rss_mb "$FC_PID") MB" >&2

echo
echo "check + batch: $PRODUCTS products x $RELEASES releases, $(wc -c <"$WORK/check.body")-byte answer, wrk -t1 -c$CONNS -d$DURATION, median of $ROUNDS, $PROFILE build"
report --show "nginx static" --show "hyper-ref" \
    --ratio "firmcast check" rps "nginx static" 1.3 \
    --ratio "firmcast check" rps "hyper-ref" 0.95 \
    --max "firmcast check" p99_ms 1.5 \
    --ratio "firmcast batch(3)" rps "firmcast check" 0.8 \
    --show "firmcast report" "${BEFORE_ROWS[@]}"
