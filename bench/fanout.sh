#!/usr/bin/env bash
# fan-out: push notifications through firmcast to the push fakes
# (`firmcast-push-fakes`, their own process: APNs over HTTP/2 + TLS with ES256
# provider tokens, FCM v1 with OAuth over prior-knowledge h2c), every rate
# counted by the fakes (their `--stats-ms` lines), in three kinds of job:
#   - mixed: 1M subscriptions (half APNs, half FCM), seeded through the
#     public subscribe API, `POST .../notify` -> the fakes counted them all:
#     notifications/s end to end and firmcast's peak RSS, also for 100k to
#     show the RSS is flat. The absolute target (>= 50k/s) and the RSS.
#   - APNs only (the 500k APNs subscriptions) vs h2load sending the same
#     APNs requests (POST /3/device/<token>, same headers, a valid provider
#     token) over TLS straight to the APNs fake.
#   - FCM only (the 500k FCM subscriptions) vs h2load sending the same v1
#     `messages:send` requests (same body shape, a valid OAuth bearer) over
#     prior-knowledge h2c straight to the FCM fake.
# The per-provider rates, firmcast's and h2load's alike, are the fake's:
# deliveries over the time from the first to the last one it counted. h2load
# gets firmcast's connections and streams. firmcast (or h2load in its place)
# on one core, the fakes on the other.
#   bench/fanout.sh [--smoke] [--rounds N] [--no-build]
# Env: BENCH_FANOUT_TOKENS (default 1000000), BENCH_FANOUT_SMALL (100000),
# BENCH_FANOUT_WORKERS / BENCH_FANOUT_IN_FLIGHT ([push] workers / in_flight),
# BENCH_FANOUT_CONNECTIONS ([push.apns|fcm] connections), BENCH_FANOUT_PERF=1
# (`perf record -g` of firmcast during each job; with BENCH_KEEP=1 to read it;
# BENCH_PERF_CALLGRAPH replaces -g, e.g. "--call-graph dwarf,8192"),
# BENCH_FANOUT_SEEDED=DIR (the kept work dir of an earlier BENCH_KEEP=1 run
# with the same token counts: its keys and stores are copied, not re-seeded;
# seeding 1M takes ~6 minutes and is not measured). Any of these but
# BENCH_FANOUT_SEEDED names the raw file's variant (e.g. fanout-200k-20k).
source "$(dirname "$0")/lib.sh" "$@"

label() { # 1000000 -> 1M, 100000 -> 100k, 2000 -> 2k
    local n="$1"
    if [ $((n % 1000000)) = 0 ]; then echo "$((n / 1000000))M"
    elif [ $((n % 1000)) = 0 ]; then echo "$((n / 1000))k"
    else echo "$n"; fi
}
if [ "$SMOKE" = 1 ]; then
    BIG=2000 SMALL=200
else
    BIG="${BENCH_FANOUT_TOKENS:-1000000}" SMALL="${BENCH_FANOUT_SMALL:-100000}"
fi
WORKERS="${BENCH_FANOUT_WORKERS:-4}"
IN_FLIGHT="${BENCH_FANOUT_IN_FLIGHT:-512}"
# What firmcast can have in flight to a provider: `[push.apns|fcm]
# connections` HTTP/2 connections (2 by default) carrying at most in_flight
# streams in all. h2load gets the same: CONNS connections, STREAMS streams on each.
CONNS="${BENCH_FANOUT_CONNECTIONS:-2}"
variant=()
[ "$SMOKE" = 1 ] || [ "$BIG/$SMALL" = 1000000/100000 ] || variant+=("$(label "$BIG")-$(label "$SMALL")")
[ "$WORKERS" = 4 ] || variant+=("w$WORKERS")
[ "$IN_FLIGHT" = 512 ] || variant+=("if$IN_FLIGHT")
[ "$CONNS" = 2 ] || variant+=("c$CONNS")
[ "${BENCH_FANOUT_PERF:-0}" = 0 ] || variant+=(perf)
results_start "$(IFS=-; echo "${variant[*]}")"

need_common
need h2load nghttp2-client
build --bin firmcast
build -p firmcast-push-fakes
build -p fanout-load
[ $((BIG % 2)) = 0 ] && [ $((SMALL % 2)) = 0 ] && [ "$SMALL" -le "$BIG" ] \
    || die "token counts must be even and SMALL <= BIG"
HALF=$((BIG / 2))
STREAMS=$(((IN_FLIGHT + CONNS - 1) / CONNS))
STATS_MS=10
# Run copies: target/ is shared, and a concurrent `cargo build` must not
# swap a binary between the rounds of one run.
mkdir -p "$WORK/bin"
cp "$BIN/firmcast" "$BIN/firmcast-push-fakes" "$BIN/fanout-load" "$WORK/bin/"
log "firmcast-push-fakes binary: $(binary_id "$BIN/firmcast-push-fakes")"
BIN="$WORK/bin"
LOAD="$BIN/fanout-load"
REV="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(cd "$ROOT" && git status --porcelain -- src push-fakes Cargo.toml 2>/dev/null)" ]; then REV="$REV+dirty"; fi

BIG_NAME="firmcast $(label "$BIG")"
SMALL_NAME="firmcast $(label "$SMALL")"
APNS_NAME="firmcast APNs $(label "$HALF")"
FCM_NAME="firmcast FCM $(label "$HALF")"
H2A_NAME="h2load APNs $(label "$HALF")"
H2F_NAME="h2load FCM $(label "$HALF")"
BIG_P=Fan-00000   # every token, APNs and FCM
SMALL_P=Fan-00001 # the first SMALL tokens (SMALL/2 of each provider)
APNS_P=Fan-00002  # every APNs token
FCM_P=Fan-00003   # every FCM token

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
# started after them, with their credentials. They print what they counted
# every STATS_MS when it changed (`stats t=... apns_delivered=...`).
APNS_PORT="$(free_port)"
FCM_PORT="$(free_port)"
# Every start gets its own log: `start` truncates the log in the background,
# so a reused name could let wait_for_line read the previous run's line.
RUN=0
fakes_start() { # sets FAKES_PID and FAKES_LOG; the [push.apns]/[push.fcm] block in $WORK/fakes.toml
    RUN=$((RUN + 1))
    rm -rf "$WORK/fakes"
    FAKES_LOG="$WORK/fakes.$RUN.log"
    start "fakes.$RUN" taskset -c "$LOAD_CPU" "$BIN/firmcast-push-fakes" \
        --apns-port "$APNS_PORT" --fcm-port "$FCM_PORT" --dir "$WORK/fakes" --stats-ms "$STATS_MS"
    FAKES_PID=$PID
    wait_for_line "$FAKES_PID" "$FAKES_LOG" '^service_account_file = ' 120 >/dev/null
    # Unpaced (max_per_second = 0): this measures firmcast, not a quota.
    sed -n '/^\[push.apns\]/,/^service_account_file = /p' "$FAKES_LOG" \
        | sed "s/^enabled = true\$/enabled = true\nconnections = $CONNS\nmax_per_second = 0/" >"$WORK/fakes.toml"
}

# --- seed: one release per product, then the subscriptions ----------------------
SEED_LAYOUT="$BIG $SMALL per-provider products"
SEEDED="${BENCH_FANOUT_SEEDED:-}"
if [ -n "$SEEDED" ]; then
    [ "$(cat "$SEEDED/fc/seeded" 2>/dev/null)" = "$SEED_LAYOUT" ] \
        || die "$SEEDED was not seeded as this script seeds ($SEED_LAYOUT; its fc/seeded says: $(cat "$SEEDED/fc/seeded" 2>/dev/null || echo nothing)); run without BENCH_FANOUT_SEEDED"
    log "reusing the stores seeded in $SEEDED"
    rm -rf "$WORK/fc/keys" "$WORK/fc/data"
    cp -r "$SEEDED/fc/keys" "$SEEDED/fc/data" "$WORK/fc/"
    cp "$SEEDED/fc/seeded" "$WORK/fc/"
else
    log "seeding $BIG subscriptions ($HALF APNs to $BIG_P and $APNS_P, $HALF FCM to $BIG_P and $FCM_P; the first $SMALL also to $SMALL_P)"
    push_config
    firmcast_start "$WORK/fc" firmcast.seed
    python3 "$BENCH_DIR/catalog.py" --server "$URL" --token "$TOKEN" --key "$WORK/fc/keys/release-1.pem" \
        --products 4 --releases 1 --prefix Fan- --threads 1
    seed_started=$SECONDS
    taskset -c "$LOAD_CPU" "$LOAD" seed --url "$URL" --products "$BIG_P" --from 0 --to $((SMALL / 2)) \
        --apns-products "$BIG_P,$SMALL_P,$APNS_P" --fcm-products "$BIG_P,$SMALL_P,$FCM_P"
    taskset -c "$LOAD_CPU" "$LOAD" seed --url "$URL" --products "$BIG_P" --from $((SMALL / 2)) --to "$HALF" \
        --apns-products "$BIG_P,$APNS_P" --fcm-products "$BIG_P,$FCM_P"
    log "seeded in $((SECONDS - seed_started)) s (not measured)"
    stop "$PID"
    echo "$SEED_LAYOUT" >"$WORK/fc/seeded"
fi

# cpu_rows NAME COUNT FC_PID FC_T0 FAKES_T0 T0: RAW rows cpu_us (the process
# under test) and fake_cpu_us (the fakes) per notification, since T0 (date
# +%s.%N) and the ticks read then; a line on stderr.
cpu_rows() {
    local name="$1" count="$2" pid="$3" p_t0="$4" fk_t0="$5" t0="$6" secs
    secs="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')"
    awk -v a="$p_t0" -v b="$(cpu_ticks "$pid")" -v c="$fk_t0" -v d="$(cpu_ticks "$FAKES_PID")" \
        -v s="$secs" -v t="$TICK" -v n="$count" -v name="$name" '
        BEGIN {
            printf "   CPU during %s: %.0f%% of a core (%.1f us/notification), fakes %.0f%% (%.1f us)\n",
                name, (b-a)/t/s*100, (b-a)/t/n*1e6, (d-c)/t/s*100, (d-c)/t/n*1e6 > "/dev/stderr"
            printf "%s\tcpu_us\t%.2f\n%s\tfake_cpu_us\t%.2f\n", name, (b-a)/t/n*1e6, name, (d-c)/t/n*1e6
        }' >>"$RAW"
}

# --- one fan-out job: fresh fakes, fresh firmcast, notify -> done -----------------
fanout_run() { # fanout_run NAME PRODUCT APNS-COUNT FCM-COUNT: appends NAME's rows to RAW
    local name="$1" product="$2" apns="$3" fcm="$4" out="$WORK/notify.$RANDOM.tsv" fc_t0 fk_t0 t0 sent_at
    fakes_start
    push_config "$WORK/fakes.toml"
    firmcast_start "$WORK/fc" "firmcast.$RUN"
    local perf_pid=""
    if [ "${BENCH_FANOUT_PERF:-0}" = 1 ]; then
        need perf linux-perf
        perf record -q -F 499 ${BENCH_PERF_CALLGRAPH:--g} -p "$PID" -o "$WORK/perf.$RUN.data" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    fc_t0="$(cpu_ticks "$PID")" fk_t0="$(cpu_ticks "$FAKES_PID")" t0="$(date +%s.%N)"
    taskset -c "$LOAD_CPU" "$LOAD" notify --url "$URL" --token "$TOKEN" --product "$product" \
        --version 1.0.0 --pid "$PID" --name "$name" >"$out"
    # CPU time per notification: what a core's worth of each side costs,
    # readable even when other processes share the cores.
    cpu_rows "$name" $((apns + fcm)) "$PID" "$fc_t0" "$fk_t0" "$t0"
    sent_at="$(awk -F'\t' '$1 == "notify sent at" {print $3}' "$out")"
    grep -v '^notify sent at' "$out" >>"$RAW"
    # The rates: what the fakes counted. A mixed job: all of them from the
    # notify call to the last one counted (and each provider's window, for
    # reading); a one-provider job: the fake's window, as for h2load.
    local fake_args=(--apns "$apns" --fcm "$fcm" --since "$sent_at")
    if [ "$apns" -gt 0 ] && [ "$fcm" -gt 0 ]; then
        fake_args+=(--e2e "$name" --window-apns "$name: APNs at the fake" --window-fcm "$name: FCM at the fake")
    elif [ "$apns" -gt 0 ]; then
        fake_args+=(--e2e "$name:e2e_rps" --window-apns "$name")
    else
        fake_args+=(--e2e "$name:e2e_rps" --window-fcm "$name")
    fi
    python3 "$BENCH_DIR/report.py" fake "$FAKES_LOG" "${fake_args[@]}" >>"$RAW"
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid"; wait "$perf_pid" || true
        log "profile of $name: perf report -i $WORK/perf.$RUN.data (with BENCH_KEEP=1)"
    fi
    stop "$PID"
    stop "$FAKES_PID"
    LAST_OUT="$out"
}

# --- h2load: the same requests straight to a fresh fake ---------------------------
awk -v n="$HALF" -v port="$APNS_PORT" \
    'BEGIN {for (i = 0; i < n; i++) printf "https://127.0.0.1:%d/3/device/%064x\n", port, i}' >"$WORK/h2load.uris"
# firmcast's APNs payload and FCM v1 body for a release of APNS_P / FCM_P
# (keys in serde_json's order, as firmcast serializes them). h2load sends one
# body for every request, so its FCM requests all name the first token.
printf '{"aps":{"alert":{"title":"%s 1.0.0","body":"%s 1.0.0: improves call quality and battery life."}},"critical":"false","product":"%s","version":"1.0.0"}' \
    "$APNS_P" "$APNS_P" "$APNS_P" >"$WORK/apns.json"
fcm_body() {
    local p="$FCM_P"
    printf '{"message":{"token":"%s","android":{"collapse_key":"fw.%s","notification":{"tag":"fw.%s"},"priority":"NORMAL","ttl":"259200s"},"apns":{"headers":{"apns-collapse-id":"fw.%s","apns-expiration":"%s","apns-priority":"5","apns-push-type":"alert"}},"data":{"critical":"false","product":"%s","version":"1.0.0"},"notification":{"body":"%s 1.0.0: improves call quality and battery life.","title":"%s 1.0.0"}}}' \
        "$("$LOAD" fcm-device-token 0)" "$p" "$p" "$p" "$(($(date +%s) + 259200))" "$p" "$p" "$p"
}
h2load_run() { # h2load_run apns|fcm
    local provider="$1" out="$WORK/h2load.$RANDOM.txt" name args fk_t0 t0
    fakes_start
    if [ "$provider" = apns ]; then
        local jwt key_id team_id topic
        name="$H2A_NAME"
        key_id="$(sed -n 's/^key_id = "\(.*\)"$/\1/p' "$WORK/fakes.toml")"
        team_id="$(sed -n 's/^team_id = "\(.*\)"$/\1/p' "$WORK/fakes.toml")"
        topic="$(sed -n 's/^topic = "\(.*\)"$/\1/p' "$WORK/fakes.toml")"
        jwt="$("$LOAD" jwt --key "$WORK/fakes/apns.p8" --key-id "$key_id" --team-id "$team_id")"
        args=(-i "$WORK/h2load.uris" -d "$WORK/apns.json"
            -H "authorization: bearer $jwt"
            -H "apns-topic: $topic"
            -H "apns-push-type: alert"
            -H "apns-expiration: $(($(date +%s) + 259200))"
            -H "apns-priority: 5"
            -H "apns-collapse-id: fw.$APNS_P"
            -H "content-type: application/json")
    else
        local bearer project
        name="$H2F_NAME"
        bearer="$("$LOAD" fcm-token --account "$WORK/fakes/fcm.json")"
        project="$(sed -n 's/^ *"project_id": *"\([^"]*\)".*/\1/p' "$WORK/fakes/fcm.json")"
        fcm_body >"$WORK/fcm.json"
        args=(--no-tls-proto=h2c -d "$WORK/fcm.json"
            -H "authorization: Bearer $bearer"
            -H "content-type: application/json"
            "http://127.0.0.1:$FCM_PORT/v1/projects/$project/messages:send")
    fi
    fk_t0="$(cpu_ticks "$FAKES_PID")" t0="$(date +%s.%N)"
    taskset -c "$SERVER_CPU" h2load -n "$HALF" -c "$CONNS" -m "$STREAMS" -t 1 "${args[@]}" >"$out" 2>&1 \
        || { cat "$out" >&2; die "h2load failed"; }
    local rps ok twoxx
    rps="$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$out")"
    ok="$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "$out")"
    twoxx="$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' "$out")"
    if [ -z "$rps" ] || [ "$ok" != "$HALF" ] || [ "$twoxx" != "$HALF" ]; then
        cat "$out" >&2
        die "h2load: not every request answered 2xx (the fake refused the requests?)"
    fi
    awk -v c="$fk_t0" -v d="$(cpu_ticks "$FAKES_PID")" -v s="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')" \
        -v t="$TICK" -v r="$rps" -v n="$HALF" -v name="$name" '
        BEGIN {
            printf "   %s: %d requests, %.0f req/s by h2load; fakes CPU %.0f%% of a core (%.1f us/request)\n",
                name, n, r, (d-c)/t/s*100, (d-c)/t/n*1e6 > "/dev/stderr"
            printf "%s\th2load_rps\t%s\n%s\tfake_cpu_us\t%.2f\n", name, r, name, (d-c)/t/n*1e6
        }' >>"$RAW"
    if [ "$provider" = apns ]; then
        python3 "$BENCH_DIR/report.py" fake "$FAKES_LOG" --apns "$HALF" --fcm 0 --window-apns "$name" >>"$RAW"
    else
        python3 "$BENCH_DIR/report.py" fake "$FAKES_LOG" --apns 0 --fcm "$HALF" --window-fcm "$name" >>"$RAW"
    fi
    stop "$FAKES_PID"
}

log "$ROUNDS round(s): $SMALL_NAME and $BIG_NAME (mixed), $APNS_NAME vs $H2A_NAME, $FCM_NAME vs $H2F_NAME; h2load -c$CONNS -m$STREAMS (push.workers = $WORKERS, push.in_flight = $IN_FLIGHT, connections = $CONNS)"
for round in $(seq "$ROUNDS"); do
    log "round $round"
    fanout_run "$SMALL_NAME" "$SMALL_P" $((SMALL / 2)) $((SMALL / 2))
    small_hwm="$(awk -F'\t' '$2 == "peak_rss_mb" {print $3}' "$LAST_OUT")"
    fanout_run "$BIG_NAME" "$BIG_P" "$HALF" "$HALF"
    big_hwm="$(awk -F'\t' '$2 == "peak_rss_mb" {print $3}' "$LAST_OUT")"
    printf 'peak RSS %s / %s\tratio\t%s\n' "$(label "$BIG")" "$(label "$SMALL")" \
        "$(awk -v a="$big_hwm" -v b="$small_hwm" 'BEGIN {print a / b}')" >>"$RAW"
    fanout_run "$APNS_NAME" "$APNS_P" "$HALF" 0
    h2load_run apns
    fanout_run "$FCM_NAME" "$FCM_P" 0 "$HALF"
    h2load_run fcm
    printf '50k/s target\trps\t50000\n' >>"$RAW"
done

echo
echo "fan-out: mixed jobs of $BIG and $SMALL subscriptions (half APNs, half FCM); one-provider jobs of $HALF APNs and $HALF FCM subscriptions vs h2load -c$CONNS -m$STREAMS -n$HALF (APNs over TLS, FCM over prior-knowledge h2c); push.workers = $WORKERS, push.in_flight = $IN_FLIGHT, connections = $CONNS; firmcast/h2load on cpu $SERVER_CPU, fakes on cpu $LOAD_CPU; median of $ROUNDS, $PROFILE build of $REV"
echo "(req/s = notifications the fakes counted per second: the mixed jobs from the notify call to the last one counted; one-provider jobs and h2load from the first to the last one the fake counted, sampled every $STATS_MS ms; e2e_rps: from the notify call; job_rps: firmcast's own count to the job's end; h2load_rps: h2load's own; peak_rss_mb: VmHWM of a firmcast started for the job; cpu_us / fake_cpu_us: CPU time per notification of firmcast / of the fakes)"
report --show "$H2A_NAME" \
    --show "$APNS_NAME" \
    --show "$H2F_NAME" \
    --show "$FCM_NAME" \
    --show "$BIG_NAME" \
    --show "$BIG_NAME: APNs at the fake" \
    --show "$BIG_NAME: FCM at the fake" \
    --show "$BIG_NAME notify->202" \
    --show "$SMALL_NAME" \
    --ratio "$BIG_NAME" rps "50k/s target" 1.0 \
    --ratio "$APNS_NAME" rps "$H2A_NAME" 0.5 \
    --ratio "$FCM_NAME" rps "$H2F_NAME" 0.5 \
    --max "$BIG_NAME" peak_rss_mb 300 \
    --max "peak RSS $(label "$BIG") / $(label "$SMALL")" ratio 1.2
