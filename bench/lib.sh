# Shared by the bench scripts: `source "$(dirname "$0")/lib.sh" "$@"`.
# Options every script takes:
#   --smoke        1 round of 1 s, small data, debug build: proves the script works
#   --rounds N     rounds per side (default 3; each side runs in turn per round)
#   --duration D   wrk duration per run (default 8s)
#   --no-build     use the binaries already in target/
# Env: BENCH_KEEP=1 keeps the temp dir; BENCH_SERVER_CPU / BENCH_LOAD_CPU pick cores.
# Raw output: unless --smoke, everything a script prints (stdout and stderr),
# with the command line, git revision, date, nproc and load average at start
# and end, is kept in bench/results/YYYY-MM-DD-HHMM-<script>[-<variant>].txt
# (see results_start). BENCH_RESULTS_DIR=DIR keeps it in DIR instead, also
# with --smoke (as <name>-smoke.txt; bench/results.py ignores those unless
# asked); BENCH_VARIANT=NAME adds -NAME to the file name (a build or setting
# that is not the default: say which).
set -euo pipefail
CMDLINE="bench/$(basename "$0") $*"

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
SMOKE=0
ROUNDS=3
DURATION=8s
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --rounds) ROUNDS="$2"; shift ;;
        --duration) DURATION="$2"; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,/^$/p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$SMOKE" = 1 ]; then ROUNDS=1; DURATION=1s; PROFILE=debug; else PROFILE=release; fi
SERVER_CPU="${BENCH_SERVER_CPU:-0}"
LOAD_CPU="${BENCH_LOAD_CPU:-1}"
# Where cargo builds: CARGO_TARGET_DIR when set (relative to the repository), else target/.
case "${CARGO_TARGET_DIR:-}" in
    "") BIN="$ROOT/target/$PROFILE" ;;
    /*) BIN="$CARGO_TARGET_DIR/$PROFILE" ;;
    *) BIN="$ROOT/$CARGO_TARGET_DIR/$PROFILE" ;;
esac

log() { echo "== $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

# --- cleanup: every process we start is killed, the temp dir removed --------
WORK="$(mktemp -d /tmp/firmcast-bench.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$?
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
    results_end "$rc"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- raw output --------------------------------------------------------------
# results_start [VARIANT]: from here on, everything the script prints (stdout
# and stderr, both to stdout) is also appended to a new raw file in
# bench/results/ (BENCH_RESULTS_DIR), opened with a header and closed by
# cleanup with the load average and exit status. Not with --smoke, unless
# BENCH_RESULTS_DIR is set. Call it first thing, right after sourcing lib.sh.
RESULTS_FILE=""
RESULTS_TEE=""
results_start() {
    local variant="${1:-}" dir name stamp rev dirty
    if [ -n "${BENCH_VARIANT:-}" ]; then variant="${variant:+$variant-}$BENCH_VARIANT"; fi
    if [ -n "${BENCH_RESULTS_DIR:-}" ]; then
        dir="$BENCH_RESULTS_DIR"
        [ "$SMOKE" = 0 ] || variant="${variant:+$variant-}smoke"
    elif [ "$SMOKE" = 1 ]; then
        return 0 # smoke runs prove the scripts work; their figures are not kept
    else
        dir="$BENCH_DIR/results"
    fi
    [ -z "$variant" ] || [[ "$variant" =~ ^[A-Za-z0-9][A-Za-z0-9.-]*$ ]] \
        || die "BENCH_VARIANT / variant '$variant': letters, digits, '.' and '-' only"
    mkdir -p "$dir"
    stamp="$(date +%Y-%m-%d-%H%M)"
    name="$(basename "$0" .sh)${variant:+-$variant}"
    RESULTS_FILE="$dir/$stamp-$name.txt"
    local n=2
    while [ -e "$RESULTS_FILE" ]; do RESULTS_FILE="$dir/$stamp-$name.$n.txt"; n=$((n + 1)); done
    rev="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    # Uncommitted changes anywhere but bench/results/ (the binaries may carry them).
    dirty="$(cd "$ROOT" && git status --porcelain --untracked-files=no -- . ':(exclude)bench/results' 2>/dev/null \
        | awk '{p[NR] = $NF} END {if (NR) {printf "%d paths:", NR; for (i = 1; i <= NR && i <= 12; i++) printf " %s", p[i]; if (NR > 12) printf " ..."}}')"
    [ -z "$dirty" ] || rev="$rev+dirty (uncommitted, $dirty)"
    exec 3>&1 4>&2
    # tee ignores Ctrl-C and TERM: it must outlive the script's cleanup to
    # write the trailer, and it ends by itself when the script closes the pipe.
    exec > >(trap '' INT TERM; exec tee -a "$RESULTS_FILE") 2>&1
    RESULTS_TEE=$!
    echo "# command: $CMDLINE"
    echo "# script: $(basename "$0" .sh)"
    echo "# variant: ${variant:-default}"
    echo "# mode: $([ "$SMOKE" = 1 ] && echo smoke || echo full), $PROFILE build"
    echo "# git: $rev"
    echo "# date: $(date '+%Y-%m-%d %H:%M:%S %z')"
    echo "# nproc: $(nproc)"
    echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# env: $(env | grep -E '^(BENCH_|RUST_LOG=|MIMALLOC_)' | grep -v '^BENCH_RESULTS_DIR=' | sort | tr '\n' ' ')"
    echo "# raw output kept in ${RESULTS_FILE#"$ROOT/"}"
}
results_end() { # results_end RC: the trailer, then waits for tee to write it
    [ -n "$RESULTS_FILE" ] || return 0
    echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# date at end: $(date '+%Y-%m-%d %H:%M:%S %z')"
    echo "# exit status: $1"
    exec 1>&3 2>&4 3>&- 4>&-
    # tee ends when the last writer closes the pipe; a stray child holding it
    # must not hang the script.
    local i
    for i in $(seq 50); do kill -0 "$RESULTS_TEE" 2>/dev/null || break; sleep 0.1; done
    echo "raw output: ${RESULTS_FILE#"$ROOT/"}" >&2
}

# stop PID: ends one process we started and forgets it.
stop() {
    local pid="$1" keep=() p
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

# --- tools -------------------------------------------------------------------
APT_UPDATED=0
need() { # need COMMAND DEBIAN-PACKAGE
    command -v "$1" >/dev/null 2>&1 && return
    command -v apt-get >/dev/null 2>&1 || die "$1 is missing; install the Debian package $2"
    if [ "$APT_UPDATED" = 0 ]; then log "apt-get update"; apt-get update -qq; APT_UPDATED=1; fi
    log "installing $2"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need_common() {
    need wrk wrk
    need taskset util-linux
    need curl curl
    need python3 python3
    python3 -c 'import cryptography' 2>/dev/null || python3 -m pip install -q cryptography
}

build() { # build CARGO-ARGS...: skipped with --no-build
    [ "$BUILD" = 1 ] || return 0
    local flag=()
    [ "$PROFILE" = release ] && flag=(--release)
    log "cargo build ${flag[*]} $*"
    (cd "$ROOT" && cargo build -q "${flag[@]}" "$@")
}

# build_before REV: `firmcast` as of git revision REV (a reference "before a
# change"), built once into target/bench-before/REV from a temporary
# worktree; sets BEFORE_BIN. Skipped (BEFORE_BIN empty) with --smoke.
build_before() {
    local rev="$1" sha dir
    BEFORE_BIN=""
    [ "$SMOKE" = 1 ] && return 0
    sha="$(cd "$ROOT" && git rev-parse --short=12 "$rev^{commit}")" || die "no revision $rev"
    dir="$ROOT/target/bench-before/$sha"
    if [ ! -x "$dir/release/firmcast" ]; then
        log "building firmcast as of $rev ($sha) for the before/after comparison (once)"
        rm -rf "$WORK/before-src"
        (cd "$ROOT" && git worktree add --detach -q "$WORK/before-src" "$sha")
        (cd "$WORK/before-src" && CARGO_TARGET_DIR="$dir" cargo build -q --release --bin firmcast)
        (cd "$ROOT" && git worktree remove --force "$WORK/before-src")
    fi
    BEFORE_BIN="$dir/release/firmcast"
    log "before binary ($rev): $(binary_id "$BEFORE_BIN")"
}

# --- processes -----------------------------------------------------------------
# start NAME CMD...: runs CMD in the background, output in $WORK/NAME.log; sets PID.
start() {
    local name="$1"; shift
    : >"$WORK/$name.log"  # emptied here: the background redirect may come late
    "$@" >>"$WORK/$name.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
}

# wait_for_line PID FILE REGEX [SECONDS]: polls until FILE has a line matching
# REGEX (printed); fails if the process dies or time runs out.
wait_for_line() {
    local pid="$1" file="$2" re="$3" secs="${4:-60}" line
    local deadline=$((SECONDS + secs))
    while :; do
        line="$(grep -m1 -E "$re" "$file" 2>/dev/null || true)"
        [ -n "$line" ] && { echo "$line"; return 0; }
        kill -0 "$pid" 2>/dev/null || { cat "$file" >&2; die "process $pid exited before: $re"; }
        [ "$SECONDS" -lt "$deadline" ] || { cat "$file" >&2; die "timed out waiting for: $re"; }
        sleep 0.02
    done
}

# wait_http URL [SECONDS]: polls until URL answers 2xx.
wait_http() {
    local url="$1" secs="${2:-30}"
    local deadline=$((SECONDS + secs))
    until curl -fsS -o /dev/null "$url" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || die "timed out waiting for $url"
        sleep 0.02
    done
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

rss_mb() { awk '/^VmRSS:/ {printf "%.1f\n", $2/1024}' "/proc/$1/status"; }

# --- firmcast ------------------------------------------------------------------
# binary_id FILE: path, modification time and sha256 prefix, so a raw file
# says which build ran (target/ is shared and rebuilt).
binary_id() {
    echo "$1, modified $(date -r "$1" '+%Y-%m-%d %H:%M:%S'), sha256 $(sha256sum "$1" | cut -c1-16)"
}

# firmcast_init DIR: keys, an admin token (TOKEN) and DIR/firmcast.toml.
firmcast_init() {
    local dir="$1"
    mkdir -p "$dir"
    log "firmcast binary: $(binary_id "$BIN/firmcast")"
    "$BIN/firmcast" keys init --dir "$dir/keys" >/dev/null 2>&1
    local out
    out="$("$BIN/firmcast" admin token --name bench --role admin)"
    TOKEN="$(sed -n 's/^token: //p' <<<"$out")"
    [ -n "$TOKEN" ] || die "no token in: $out"
    cat >"$dir/firmcast.toml" <<TOML
[server]
listen = "127.0.0.1:0"
data_dir = "$dir/data"

# The load comes from one address: keep the per-client limiter in the path
# (its cost is part of every answer) but high enough never to answer 429.
[limits]
per_ip_rps = 1000000000.0
per_ip_burst = 1000000000
max_in_flight_per_client = 60000

[signing]
keyset = "$dir/keys/keyset.json"
root_public_key = "$dir/keys/root.pub.pem"
timestamp_key = "$dir/keys/timestamp.pem"

$(sed -n '/^\[\[admin.tokens\]\]/,$p' <<<"$out")
TOML
}

# firmcast_start DIR [NAME]: starts `firmcast serve` pinned to SERVER_CPU;
# sets PID and URL once it is listening and ready.
firmcast_start() {
    local dir="$1" name="${2:-firmcast}"
    start "$name" env RUST_LOG="${RUST_LOG:-warn}" taskset -c "$SERVER_CPU" \
        "$BIN/firmcast" serve --config "$dir/firmcast.toml"
    local line
    line="$(wait_for_line "$PID" "$WORK/$name.log" '^firmcast listening on http://' 120)"
    URL="${line#firmcast listening on }"
    wait_http "$URL/readyz"
}

# nginx_start WWW-DIR [EXTRA-HTTP-CONFIG]: nginx in the foreground under our
# own prefix, one worker pinned to SERVER_CPU, configured as a production
# static server is (sendfile, tcp_nopush, open_file_cache); sets PID and
# NGINX_URL.
nginx_start() {
    local www="$1" extra="${2:-}" prefix="$WORK/nginx" port
    port="$(free_port)"
    mkdir -p "$prefix/logs" "$prefix/tmp"
    cat >"$prefix/nginx.conf" <<NGINX
daemon off;
master_process on;
worker_processes 1;
user root;
pid $prefix/nginx.pid;
error_log $prefix/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/json;
    keepalive_requests 10000000;
    keepalive_timeout 60s;
    client_body_temp_path $prefix/tmp/body;
    proxy_temp_path $prefix/tmp/proxy;
    fastcgi_temp_path $prefix/tmp/fastcgi;
    uwsgi_temp_path $prefix/tmp/uwsgi;
    scgi_temp_path $prefix/tmp/scgi;
    tcp_nodelay on;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=10000 inactive=60s;
    open_file_cache_valid 60s;
    open_file_cache_min_uses 1;
    open_file_cache_errors on;
    $extra
    server {
        listen 127.0.0.1:$port;
        root $www;
    }
}
NGINX
    log "$(nginx -v 2>&1), sendfile on, tcp_nopush on, open_file_cache max=10000"
    start nginx taskset -c "$SERVER_CPU" nginx -p "$prefix" -c "$prefix/nginx.conf"
    NGINX_URL="http://127.0.0.1:$port"
    local deadline=$((SECONDS + 20))
    until curl -sS -o /dev/null "$NGINX_URL/" 2>/dev/null; do
        kill -0 "$PID" 2>/dev/null || { cat "$WORK/nginx.log" "$prefix/logs/error.log" >&2; die "nginx exited"; }
        [ "$SECONDS" -lt "$deadline" ] || die "nginx did not come up"
        sleep 0.02
    done
}

# --- load ----------------------------------------------------------------------
RAW="$WORK/raw.tsv"
: >"$RAW"
# wrk_run NAME CONNECTIONS URL [WRK-ARGS...]: one wrk run on LOAD_CPU; appends
# rps, p99_ms and MBps rows for NAME to RAW.
wrk_run() {
    local name="$1" conns="$2" url="$3"; shift 3
    local out="$WORK/wrk.$name.$RANDOM.txt"
    taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"$DURATION" --latency "$@" "$url" >"$out"
    python3 "$BENCH_DIR/report.py" wrk "$out" "$name" >>"$RAW"
    awk -F'\t' -v n="$name" '$1==n {v[$2]=$3} END {printf "   %-22s %10.0f req/s  p99 %.2f ms  %.0f MB/s\n", n, v["rps"], v["p99_ms"], v["MBps"]}' "$RAW" >&2
}

report() { python3 "$BENCH_DIR/report.py" table "$RAW" "$@"; }
