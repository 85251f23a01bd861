#!/usr/bin/env bash
# console: server time of every console page with 1,000 releases (10
# products x 100, published through the admin API by catalog.py) and 400
# days of adoption counts plus install reports for every release (written
# by bench/console-seed straight into the stopped server's stats store, as
# its flushes would). Each page is fetched ROUNDS x 10 times with a signed-in
# session; the server's own request log (debug level) gives the time from
# the request head to the answer, which is what is compared with the target.
#   bench/console.sh [--smoke] [--rounds N] [--no-build]
# Target: every page < 100 ms of server time (median; the max is printed).
source "$(dirname "$0")/lib.sh" "$@"
results_start

need_common
build --bin firmcast
build -p console-seed
if [ "$SMOKE" = 1 ]; then PRODUCTS=2; RELEASES=5; DAYS=30; REPEAT=3; else PRODUCTS=10; RELEASES=100; DAYS=400; REPEAT=$((ROUNDS * 10)); fi

log "catalog: $PRODUCTS products x $RELEASES releases; $DAYS days of stats"
firmcast_init "$WORK/fc"
printf '\n[console]\ninsecure_cookies = true\n' >>"$WORK/fc/firmcast.toml"
firmcast_start "$WORK/fc" seed-server
python3 "$BENCH_DIR/catalog.py" --server "$URL" --token "$TOKEN" --key "$WORK/fc/keys/release-1.pem" \
    --products "$PRODUCTS" --releases "$RELEASES"
stop "$PID"
"$BIN/console-seed" --config "$WORK/fc/firmcast.toml" --days "$DAYS" >&2

# firmcast::edge, not just its log module: the edge reads the clock only
# when its own debug level is on.
RUST_LOG="warn,firmcast::edge=debug" firmcast_start "$WORK/fc"
SERVER_LOG="$WORK/firmcast.log"
COOKIE="$(curl -sS -o /dev/null -D - --data-urlencode "token=$TOKEN" "$URL/console/login" \
    | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: \(firmcast_session=[0-9a-f]*\);.*/\1/p')"
[ -n "$COOKIE" ] || die "no session cookie from /console/login"

P="WH-$(printf %05d $((PRODUCTS / 2)))"
V="1.$((RELEASES - 1)).0"
PAGES=(
    "products:/console/products"
    "product:/console/products/$P"
    "release:/console/releases/$P/$V"
    "status:/console/releases/$P/$V/status"
    "publish:/console/publish"
    "jobs:/console/jobs"
    "audit:/console/audit"
    "audit-filtered:/console/audit?action=release.patch"
    "keys:/console/keys"
)
: >"$WORK/curl.tsv"
for entry in "${PAGES[@]}"; do
    name="${entry%%:*}" path="${entry#*:}"
    code="$(curl -sS -o "$WORK/page.html" -w '%{http_code}' -H "Cookie: $COOKIE" "$URL$path")"
    [ "$code" = 200 ] || die "$path answered $code: $(head -c 300 "$WORK/page.html")"
    for _ in $(seq "$REPEAT"); do
        curl -sS -o /dev/null -w "$name\tcurl_ms\t%{time_starttransfer}\n" -H "Cookie: $COOKIE" "$URL$path" >>"$WORK/curl.tsv"
    done
done
log "page sizes: products $(curl -sS -H "Cookie: $COOKIE" "$URL/console/products" | wc -c) bytes, release $(curl -sS -H "Cookie: $COOKIE" "$URL/console/releases/$P/$V" | wc -c) bytes"
sleep 0.2 # the last log lines
# Server time per request, from the request log: path -> micros.
python3 - "$SERVER_LOG" "$RAW" "$WORK/curl.tsv" "${PAGES[@]}" <<'PY'
import re, sys
log, raw, curl, pages = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
by_path = {}
for name_path in pages:
    name, path = name_path.split(":", 1)
    by_path[path] = name
line_re = re.compile(r'path="?([^"\s]+)"? .*status=200 .*micros=(\d+)')
ansi = re.compile(r'\x1b\[[0-9;]*m')
rows = []
for line in open(log):
    m = line_re.search(ansi.sub('', line))
    if m and m.group(1) in by_path:
        rows.append((by_path[m.group(1)], int(m.group(2)) / 1000.0))
# The request log drops the query: the filtered audit shows as /console/audit
# too, so both count under "audit" (the slower one decides the target).
with open(raw, "a") as out:
    for name, ms in rows:
        out.write(f"console:{name}\tserver_ms\t{ms}\n")
    for line in open(curl):
        name, metric, secs = line.rstrip("\n").split("\t")
        out.write(f"console:{name}\t{metric}\t{float(secs) * 1000.0}\n")
for name in sorted({n for n, _ in rows}):
    vals = sorted(ms for n, ms in rows if n == name)
    print(f"   {name:<16} server median {vals[len(vals)//2]:7.2f} ms  max {vals[-1]:7.2f} ms  (n={len(vals)})", file=sys.stderr)
PY
CHECKS=()
for entry in "${PAGES[@]}"; do
    name="${entry%%:*}"
    [ "$name" = audit-filtered ] && continue # counted under audit (same path in the log)
    CHECKS+=(--max "console:$name" server_ms 100)
done
report "${CHECKS[@]}"
