#!/usr/bin/env python3
"""Start-up to ready: exec `firmcast serve` (pinned), read its listening line,
poll GET /readyz until 200; print ready_ms, then the idle RSS after SETTLE s.

usage: startup.py CPU SETTLE_SECONDS FIRMCAST CONFIG  -> prints "ready_ms rss_mb"
"""
import http.client
import os
import subprocess
import sys
import time

cpu, settle, binary, config = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
t0 = time.monotonic()
proc = subprocess.Popen(["taskset", "-c", cpu, binary, "serve", "--config", config],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
try:
    line = proc.stdout.readline().decode()
    if not line.startswith("firmcast listening on http://"):
        sys.exit(f"startup.py: unexpected first line {line!r} (exit {proc.poll()})")
    host, port = line.strip().rsplit("/", 1)[-1].rsplit(":", 1)
    while True:
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=5)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None:
            sys.exit("startup.py: firmcast exited")
        if time.monotonic() - t0 > 60:
            sys.exit("startup.py: not ready within 60 s")
        time.sleep(0.001)
    ready_ms = (time.monotonic() - t0) * 1000
    time.sleep(settle)
    # taskset execs firmcast, so the pid is firmcast's.
    rss_kb = next(int(l.split()[1]) for l in open(f"/proc/{proc.pid}/status") if l.startswith("VmRSS:"))
    print(f"{ready_ms:.1f} {rss_kb / 1024:.1f}")
finally:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
