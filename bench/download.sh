#!/usr/bin/env bash
# download: a 50 MB artifact from the local blob store
# (`GET /v1/artifacts/{p}/{v}`) vs nginx sendfile of the very same file, full
# (wrk -c4) and ranged (1 MiB `Range` requests, wrk -c16).
#   bench/download.sh [--smoke] [--rounds N] [--duration 8s] [--no-build]
source "$(dirname "$0")/lib.sh" "$@"
results_start

need_common
need nginx nginx
build --bin firmcast
if [ "$SMOKE" = 1 ]; then MB=5; else MB=50; fi

python3 -c "import os,sys; sys.stdout.buffer.write(os.urandom($MB*1024*1024))" >"$WORK/fw.bin"
firmcast_init "$WORK/fc"
firmcast_start "$WORK/fc"
FC_URL=$URL
python3 "$BENCH_DIR/catalog.py" --server "$FC_URL" --token "$TOKEN" --key "$WORK/fc/keys/release-1.pem" \
    --products 1 --releases 1 --prefix DL- --artifact "$WORK/fw.bin"
ART="/v1/artifacts/DL-00000/1.0.0"

# nginx serves the blob store's own file (a hard link: same inode, same page cache).
SHA="$(sha256sum "$WORK/fw.bin" | cut -d' ' -f1)"
BLOB="$(find "$WORK/fc/data" -type f -name "*$SHA*" -print | head -1)"
[ -n "$BLOB" ] || die "no blob file under $WORK/fc/data"
cmp -s "$BLOB" "$WORK/fw.bin" || die "$BLOB is not the artifact"
mkdir -p "$WORK/www"
ln "$BLOB" "$WORK/www/fw.bin"
nginx_start "$WORK/www"

[ "$(curl -fsS "$FC_URL$ART" | sha256sum | cut -d' ' -f1)" = "$SHA" ] || die "firmcast download differs"
[ "$(curl -fsS "$NGINX_URL/fw.bin" | sha256sum | cut -d' ' -f1)" = "$SHA" ] || die "nginx download differs"
START=$((MB * 1024 * 1024 / 3))
RANGE="bytes=$START-$((START + 1048575))"
for u in "$FC_URL$ART" "$NGINX_URL/fw.bin"; do
    code="$(curl -sS -o /dev/null -w '%{http_code} %{size_download}' -H "Range: $RANGE" "$u")"
    [ "$code" = "206 1048576" ] || die "$u with Range answered $code"
done

log "$ROUNDS round(s), wrk -d$DURATION, each side in turn"
for round in $(seq "$ROUNDS"); do
    log "round $round"
    wrk_run "firmcast full" 4 "$FC_URL$ART"
    wrk_run "nginx full" 4 "$NGINX_URL/fw.bin"
    wrk_run "firmcast range" 16 "$FC_URL$ART" -H "Range: $RANGE"
    wrk_run "nginx range" 16 "$NGINX_URL/fw.bin" -H "Range: $RANGE"
done

echo
echo "download: $MB MB artifact, full (wrk -t1 -c4) and 1 MiB ranges (-c16), -d$DURATION, median of $ROUNDS, $PROFILE build"
report --ratio "firmcast full" MBps "nginx full" 1.0 \
    --ratio "firmcast range" MBps "nginx range" 1.0
