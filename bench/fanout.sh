#!/usr/bin/env bash
# fan-out: 1M push subscriptions (half APNs, half FCM) seeded through the
# public subscribe API, then `POST .../notify` -> job done against the push
# fakes (`firmcast-push-fakes`: APNs over HTTP/2 + TLS with ES256 provider
# tokens, FCM v1 with OAuth) in their own process: notifications/s end to
# end and firmcast's peak RSS, also for a 100k-token job to show the RSS is
# flat; vs h2load sending the same APNs requests (POST /3/device/<token>,
# same headers, a valid provider token) straight to the same fake with the
# same connection/stream count. firmcast (or h2load in its place) on one
# core, the fakes on the other.
#   bench/fanout.sh [--smoke] [--rounds N] [--no-build]
# Env: BENCH_FANOUT_TOKENS (default 1000000), BENCH_FANOUT_SMALL (100000),
# BENCH_FANOUT_WORKERS / BENCH_FANOUT_IN_FLIGHT ([push] workers / in_flight),
# BENCH_FANOUT_CONNECTIONS ([push.apns|fcm] connections), BENCH_FANOUT_PERF=1
# (`perf record -g` of firmcast during each job; with BENCH_KEEP=1 to read it;
# BENCH_PERF_CALLGRAPH replaces -g, e.g. "--call-graph dwarf,8192"),
# BENCH_FANOUT_SEEDED=DIR (the kept work dir of an earlier BENCH_KEEP=1 run
# with the same token counts: its keys and stores are copied, not re-seeded;
# seeding 1M takes ~6 minutes and is not measured).
source "$(dirname "$0")/lib.sh" "$@"

need_common
need h2load nghttp2-client
build --bin firmcast
build -p firmcast-push-fakes
build -p fanout-load
if [ "$SMOKE" = 1 ]; then
    BIG=2000 SMALL=200
else
    BIG="${BENCH_FANOUT_TOKENS:-1000000}" SMALL="${BENCH_FANOUT_SMALL:-100000}"
fi
[ $((BIG % 2)) = 0 ] && [ $((SMALL % 2)) = 0 ] && [ "$SMALL" -le "$BIG" ] \
    || die "token counts must be even and SMALL <= BIG"
WORKERS="${BENCH_FANOUT_WORKERS:-4}"
IN_FLIGHT="${BENCH_FANOUT_IN_FLIGHT:-512}"
# What firmcast can have in flight to APNs: `[push.apns] connections` HTTP/2
# connections (2 by default) carrying at most in_flight streams in all.
# h2load gets the same: CONNS connections, STREAMS streams on each.
CONNS="${BENCH_FANOUT_CONNECTIONS:-2}"
STREAMS=$(((IN_FLIGHT + CONNS - 1) / CONNS))
# Run copies: target/ is shared, and a concurrent `cargo build` must not
# swap a binary between the rounds of one run.
mkdir -p "$WORK/bin"
cp "$BIN/firmcast" "$BIN/firmcast-push-fakes" "$BIN/fanout-load" "$WORK/bin/"
BIN="$WORK/bin"
LOAD="$BIN/fanout-load"
REV="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(cd "$ROOT" && git status --porcelain -- src push-fakes Cargo.toml 2>/dev/null)" ]; then REV="$REV+dirty"; fi

label() { # 1000000 -> 1M, 100000 -> 100k, 2000 -> 2k
    local n="$1"
    if [ $((n % 1000000)) = 0 ]; then echo "$((n / 1000000))M"
    elif [ $((n % 1000)) = 0 ]; then echo "$((n / 1000))k"
    else echo "$n"; fi
}
BIG_NAME="firmcast $(label "$BIG")"
SMALL_NAME="firmcast $(label "$SMALL")"
H2_NAME="h2load APNs fake"
BIG_P=Fan-00000   # every token
SMALL_P=Fan-00001 # the first SMALL tokens

# cpu_ticks PID: user + system clock ticks so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK="$(getconf CLK_TCK)"

# --- firmcast config: the bench base, [push] per run ---------------------------
firmcast_init "$WORK/fc"
cp "$WORK/fc/firmcast.toml" "$WORK/fc/base.toml"
push_config() { # push_config [FAKES-CONFIG-BLOCK]: writes firmcast.toml
    {
        cat "$WORK/fc/base.toml"
        printf '\n[push]\nworkers = %s\nin_flight = %s\n\n' "$WORKERS" "$IN_FLIGHT"
        [ -z "${1:-}" ] || cat "$1"
    } >"$WORK/fc/firmcast.toml"
}

# The fakes keep every delivery in memory, so each measured run gets fresh
# ones (new CA, keys, service account) on the same ports; firmcast is
# started after them, with their credentials.
APNS_PORT="$(free_port)"
FCM_PORT="$(free_port)"
# Every start gets its own log: `start` truncates the log in the background,
# so a reused name could let wait_for_line read the previous run's line.
RUN=0
fakes_start() { # sets FAKES_PID; the [push.apns]/[push.fcm] block in $WORK/fakes.toml
    RUN=$((RUN + 1))
    rm -rf "$WORK/fakes"
    start "fakes.$RUN" taskset -c "$LOAD_CPU" "$BIN/firmcast-push-fakes" \
        --apns-port "$APNS_PORT" --fcm-port "$FCM_PORT" --dir "$WORK/fakes"
    FAKES_PID=$PID
    wait_for_line "$FAKES_PID" "$WORK/fakes.$RUN.log" '^service_account_file = ' 120 >/dev/null
    sed -n '/^\[push.apns\]/,$p' "$WORK/fakes.$RUN.log" \
        | sed "s/^enabled = true\$/enabled = true\nconnections = $CONNS/" >"$WORK/fakes.toml"
}

# --- seed: one release per product, then the subscriptions ----------------------
SEEDED="${BENCH_FANOUT_SEEDED:-}"
if [ -n "$SEEDED" ]; then
    [ "$(cat "$SEEDED/fc/seeded" 2>/dev/null)" = "$BIG $SMALL" ] \
        || die "$SEEDED was not seeded with $BIG/$SMALL tokens (its fc/seeded says: $(cat "$SEEDED/fc/seeded" 2>/dev/null || echo nothing)); run without BENCH_FANOUT_SEEDED"
    log "reusing the stores seeded in $SEEDED"
    rm -rf "$WORK/fc/keys" "$WORK/fc/data"
    cp -r "$SEEDED/fc/keys" "$SEEDED/fc/data" "$WORK/fc/"
    cp "$SEEDED/fc/seeded" "$WORK/fc/"
else
    log "seeding $BIG subscriptions ($((BIG / 2)) APNs + $((BIG / 2)) FCM; the first $SMALL also to $SMALL_P)"
    push_config
    firmcast_start "$WORK/fc" firmcast.seed
    python3 "$BENCH_DIR/catalog.py" --server "$URL" --token "$TOKEN" --key "$WORK/fc/keys/release-1.pem" \
        --products 2 --releases 1 --prefix Fan- --threads 1
    seed_started=$SECONDS
    taskset -c "$LOAD_CPU" "$LOAD" seed --url "$URL" --products "$BIG_P,$SMALL_P" --from 0 --to $((SMALL / 2))
    taskset -c "$LOAD_CPU" "$LOAD" seed --url "$URL" --products "$BIG_P" --from $((SMALL / 2)) --to $((BIG / 2))
    log "seeded in $((SECONDS - seed_started)) s (not measured)"
    stop "$PID"
    echo "$BIG $SMALL" >"$WORK/fc/seeded"
fi

# --- one fan-out job: fresh fakes, fresh firmcast, notify -> done -----------------
fanout_run() { # fanout_run NAME PRODUCT COUNT: appends NAME's rows to RAW
    local name="$1" product="$2" count="$3" out="$WORK/notify.$RANDOM.tsv" fc_t0 fk_t0 t0 secs
    fakes_start
    push_config "$WORK/fakes.toml"
    firmcast_start "$WORK/fc" "firmcast.$RUN"
    local perf_pid=""
    if [ "${BENCH_FANOUT_PERF:-0}" = 1 ]; then
        need perf linux-perf
        perf record -q -F 499 ${BENCH_PERF_CALLGRAPH:--g} -p "$PID" -o "$WORK/perf.$RUN.data" 2>/dev/null &
        perf_pid=$!
    fi
    fc_t0="$(cpu_ticks "$PID")" fk_t0="$(cpu_ticks "$FAKES_PID")" t0="$(date +%s.%N)"
    taskset -c "$LOAD_CPU" "$LOAD" notify --url "$URL" --token "$TOKEN" --product "$product" \
        --version 1.0.0 --pid "$PID" --name "$name" >"$out"
    secs="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')"
    # CPU time per notification: what a core's worth of each side costs,
    # readable even when other processes share the cores.
    awk -v a="$fc_t0" -v b="$(cpu_ticks "$PID")" -v c="$fk_t0" -v d="$(cpu_ticks "$FAKES_PID")" \
        -v s="$secs" -v t="$TICK" -v n="$count" -v name="$name" '
        BEGIN {
            printf "   CPU during the job: firmcast %.0f%% of a core (%.1f us/notification), fakes %.0f%% (%.1f us)\n",
                (b-a)/t/s*100, (b-a)/t/n*1e6, (d-c)/t/s*100, (d-c)/t/n*1e6 > "/dev/stderr"
            printf "%s: firmcast CPU us/notif\tcpu_us\t%.1f\n%s: fakes CPU us/notif\tcpu_us\t%.1f\n", name, (b-a)/t/n*1e6, name, (d-c)/t/n*1e6
        }' >>"$RAW"
    cat "$out" >>"$RAW"
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid"; wait "$perf_pid" || true
        log "profile of $name: perf report -i $WORK/perf.$RUN.data (with BENCH_KEEP=1)"
    fi
    stop "$PID"
    stop "$FAKES_PID"
    LAST_OUT="$out"
}

# --- h2load: the same APNs requests straight to a fresh fake ----------------------
H2N=$((BIG / 2))
awk -v n="$H2N" -v port="$APNS_PORT" \
    'BEGIN {for (i = 0; i < n; i++) printf "https://127.0.0.1:%d/3/device/%064x\n", port, i}' >"$WORK/h2load.uris"
printf '{"aps":{"alert":{"title":"%s 1.0.0","body":"%s 1.0.0: improves call quality and battery life."}},"critical":"false","product":"%s","version":"1.0.0"}' \
    "$BIG_P" "$BIG_P" "$BIG_P" >"$WORK/apns.json"
h2load_run() {
    local out="$WORK/h2load.$RANDOM.txt" jwt key_id team_id topic fk_t0 t0 secs
    fakes_start
    key_id="$(sed -n 's/^key_id = "\(.*\)"$/\1/p' "$WORK/fakes.toml")"
    team_id="$(sed -n 's/^team_id = "\(.*\)"$/\1/p' "$WORK/fakes.toml")"
    topic="$(sed -n 's/^topic = "\(.*\)"$/\1/p' "$WORK/fakes.toml")"
    jwt="$("$LOAD" jwt --key "$WORK/fakes/apns.p8" --key-id "$key_id" --team-id "$team_id")"
    fk_t0="$(cpu_ticks "$FAKES_PID")" t0="$(date +%s.%N)"
    taskset -c "$SERVER_CPU" h2load -n "$H2N" -c "$CONNS" -m "$STREAMS" -t 1 -i "$WORK/h2load.uris" \
        -d "$WORK/apns.json" \
        -H "authorization: bearer $jwt" \
        -H "apns-topic: $topic" \
        -H "apns-push-type: alert" \
        -H "apns-expiration: $(($(date +%s) + 259200))" \
        -H "apns-priority: 5" \
        -H "apns-collapse-id: fw.$BIG_P" \
        -H "content-type: application/json" >"$out" 2>&1 || { cat "$out" >&2; die "h2load failed"; }
    secs="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')"
    local rps ok twoxx
    rps="$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$out")"
    ok="$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "$out")"
    twoxx="$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' "$out")"
    if [ -z "$rps" ] || [ "$ok" != "$H2N" ] || [ "$twoxx" != "$H2N" ]; then
        cat "$out" >&2
        die "h2load: not every request answered 2xx (the fake refused the requests?)"
    fi
    awk -v c="$fk_t0" -v d="$(cpu_ticks "$FAKES_PID")" -v s="$secs" -v t="$TICK" -v r="$rps" -v n="$H2N" -v name="$H2_NAME" '
        BEGIN {
            printf "   h2load: %d requests, %.0f req/s; fakes CPU %.0f%% of a core (%.1f us/request)\n",
                n, r, (d-c)/t/s*100, (d-c)/t/n*1e6 > "/dev/stderr"
            printf "%s\trps\t%s\n%s: fake CPU us/req\tcpu_us\t%.1f\n", name, r, name, (d-c)/t/n*1e6
        }' >>"$RAW"
    stop "$FAKES_PID"
}

log "$ROUNDS round(s): $SMALL_NAME, $BIG_NAME, h2load -c$CONNS -m$STREAMS (push.workers = $WORKERS, push.in_flight = $IN_FLIGHT, connections = $CONNS)"
for round in $(seq "$ROUNDS"); do
    log "round $round"
    fanout_run "$SMALL_NAME" "$SMALL_P" "$SMALL"
    small_hwm="$(awk -F'\t' '$2 == "peak_rss_mb" {print $3}' "$LAST_OUT")"
    fanout_run "$BIG_NAME" "$BIG_P" "$BIG"
    big_hwm="$(awk -F'\t' '$2 == "peak_rss_mb" {print $3}' "$LAST_OUT")"
    printf 'peak RSS %s / %s\tratio\t%s\n' "$(label "$BIG")" "$(label "$SMALL")" \
        "$(awk -v a="$big_hwm" -v b="$small_hwm" 'BEGIN {print a / b}')" >>"$RAW"
    h2load_run
    printf '50k/s target\trps\t50000\n' >>"$RAW"
done

echo
echo "fan-out: $BIG subscriptions (half APNs, half FCM) vs $SMALL; push.workers = $WORKERS, push.in_flight = $IN_FLIGHT, connections = $CONNS; h2load -c$CONNS -m$STREAMS -n$H2N to the APNs fake; firmcast/h2load on cpu $SERVER_CPU, fakes on cpu $LOAD_CPU; median of $ROUNDS, $PROFILE build of $REV"
echo "(rps = notifications/s, firmcast's from the notify call to the job's end, planning included; MB = peak RSS; cpu_us = CPU time per notification)"
report --show "$H2_NAME" \
    --show "$H2_NAME: fake CPU us/req" \
    --show "$BIG_NAME: firmcast CPU us/notif" \
    --show "$BIG_NAME: fakes CPU us/notif" \
    --show "$BIG_NAME notify->202" \
    --show "$BIG_NAME APNs half" \
    --show "$BIG_NAME FCM half" \
    --show "$SMALL_NAME" \
    --show "$BIG_NAME" \
    --ratio "$BIG_NAME" rps "50k/s target" 1.0 \
    --ratio "$BIG_NAME" rps "$H2_NAME" 0.5 \
    --ratio "$BIG_NAME APNs half" rps "$H2_NAME" 0.5 \
    --max "$BIG_NAME" peak_rss_mb 300 \
    --max "peak RSS $(label "$BIG") / $(label "$SMALL")" ratio 1.2
