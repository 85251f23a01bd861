#!/usr/bin/env python3
"""Bench helpers shared by the scripts.

  report.py wrk FILE NAME >> RAW      parse one wrk run into RAW rows
  report.py fake LOG [fake options] >> RAW
                                      rates from what the push fakes counted
  report.py table RAW [checks...]     medians, ratios and PASS/MISS as a table

RAW rows are `name<TAB>metric<TAB>value`, one per round. Checks:
  --show NAME                        print NAME's medians (a reference)
  --ratio NAME METRIC REF MIN        median(NAME)/median(REF) >= MIN
  --ratio-max NAME METRIC REF MAX    median(NAME)/median(REF) <= MAX
  --max NAME METRIC MAX              median(NAME) <= MAX

`fake` reads the `stats t=... apns_delivered=N ... fcm_delivered=M` lines
`firmcast-push-fakes --stats-ms` prints into LOG, waits (--timeout seconds,
default 30) until the fakes counted --apns N and --fcm M deliveries (fails
if they count fewer or more), and prints rows:
  --window-apns NAME / --window-fcm NAME   NAME rps = that provider's
      deliveries / the time between the first and the last stats line that
      counted them (connection set-up and the job's planning fall outside)
  --e2e NAME --since T                     NAME rps = all deliveries / (the
      first stats line that counted the last one - T, a unix time)
Each NAME can end in :METRIC (a-z, 0-9, _) to use another metric than rps.
Always exits 0 on a MISS (targets are reported, not enforced); non-zero only
when a check names data that is missing, i.e. the script is broken.
"""
import re
import statistics
import sys
from collections import defaultdict

UNITS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "B": 1}
TIME = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def parse_wrk(path, name):
    text = open(path).read()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    tps = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", text)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    if not (rps and tps and p99):
        sys.exit(f"report.py: cannot parse wrk output {path}:\n{text}")
    errs = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors:.*", text)
    if errs:
        sys.exit(f"report.py: {name}: {errs.group(1)} non-2xx answers; the benchmark is measuring errors\n{text}")
    out = [
        (name, "rps", float(rps.group(1))),
        (name, "p99_ms", float(p99.group(1)) * TIME[p99.group(2)]),
        (name, "MBps", float(tps.group(1)) * UNITS[tps.group(2)] / 1e6),
    ]
    if sock:
        print(f"note: {name}: {sock.group(0)}", file=sys.stderr)
    for row in out:
        print("\t".join(map(str, row)))


LABEL = {"apns": "APNs", "fcm": "FCM"}
STATS = re.compile(
    r"^stats t=([\d.]+) apns_requests=(\d+) apns_delivered=(\d+) "
    r"fcm_requests=(\d+) fcm_delivered=(\d+)"
)


def fake(args):
    import argparse
    import time

    ap = argparse.ArgumentParser(prog="report.py fake")
    ap.add_argument("log")
    ap.add_argument("--apns", type=int, required=True)
    ap.add_argument("--fcm", type=int, required=True)
    ap.add_argument("--window-apns")
    ap.add_argument("--window-fcm")
    ap.add_argument("--e2e")
    ap.add_argument("--since", type=float)
    ap.add_argument("--timeout", type=float, default=30)
    a = ap.parse_args(args)
    want = {"apns": a.apns, "fcm": a.fcm}

    def samples():
        out = []
        for line in open(a.log, errors="replace"):
            m = STATS.match(line)
            if m:
                t, ar, ad, fr, fd = m.groups()
                out.append((float(t), {"apns": int(ad), "fcm": int(fd)}, {"apns": int(ar), "fcm": int(fr)}))
        return out

    deadline = time.monotonic() + a.timeout
    while True:
        rows = samples()
        last = rows[-1] if rows else None
        if last and all(last[1][p] >= want[p] for p in want):
            break
        if time.monotonic() > deadline:
            got = ", ".join(f"{p} {last[1][p] if last else 0}/{want[p]}" for p in want)
            sys.exit(f"report.py fake: the fakes counted {got} deliveries after {a.timeout:g} s ({a.log})")
        time.sleep(0.02)
    for p in want:
        if last[1][p] > want[p]:
            sys.exit(f"report.py fake: the {p} fake counted {last[1][p]} deliveries, expected {want[p]} ({a.log})")

    def out(spec, value):
        name, _, metric = spec.rpartition(":")
        if not re.fullmatch(r"[a-z0-9_]+", metric):  # a colon inside the name
            name, metric = spec, "rps"
        print(f"{name}\t{metric}\t{value}")

    notes = []
    for p, spec in (("apns", a.window_apns), ("fcm", a.window_fcm)):
        if want[p] == 0:
            continue
        first = next(i for i, r in enumerate(rows) if r[1][p] > 0)
        done = next(i for i, r in enumerate(rows) if r[1][p] >= want[p])
        if done == first:
            # Every delivery between two stats lines: measure from the line
            # before (a lower bound; only tiny smoke jobs get here).
            first = max(first - 1, 0)
        span = rows[done][0] - rows[first][0]
        rate = (want[p] - rows[first][1][p]) / span if span > 0 else float("nan")
        notes.append(
            f"{LABEL[p]} {want[p]} delivered ({rows[done][2][p]} requests), "
            f"{rate:,.0f}/s over {span:.3f} s ({done - first} stats lines)"
        )
        if done - first < 10:
            notes.append(f"window of {done - first} stats lines: too short to be a figure")
        if spec:
            out(spec, rate)
    if a.e2e:
        if a.since is None:
            sys.exit("report.py fake: --e2e needs --since")
        done = next(i for i, r in enumerate(rows) if all(r[1][p] >= want[p] for p in want))
        secs = rows[done][0] - a.since
        rate = sum(want.values()) / secs if secs > 0 else float("nan")
        notes.append(f"all {sum(want.values())} counted {secs:.3f} s after notify: {rate:,.0f}/s")
        out(a.e2e, rate)
    print("   fakes counted: " + "; ".join(notes), file=sys.stderr)


def fmt(metric, v):
    if metric.endswith("rps"):
        return f"{v:,.0f} req/s"
    if metric == "instr":
        return f"{v:,.0f} instructions"
    if metric.endswith("cpu_us"):
        return f"{v:.1f} us"
    if metric == "MBps":
        return f"{v:,.0f} MB/s"
    if metric.endswith("_ms"):
        return f"{v:.2f} ms"
    if metric.endswith("_mb"):
        return f"{v:.1f} MB"
    return f"{v:g}"


def table(raw, args):
    data = defaultdict(list)
    for line in open(raw):
        if line.strip():
            name, metric, value = line.rstrip("\n").split("\t")
            data[(name, metric)].append(float(value))

    def med(name, metric):
        vals = data.get((name, metric))
        if not vals:
            sys.exit(f"report.py: no {metric} figures for {name!r} (a run failed?)")
        return statistics.median(vals), len(vals)

    rows = []
    i = 0
    while i < len(args):
        op = args[i]
        if op == "--show":
            name = args[i + 1]
            metrics = sorted((m for (n, m) in data if n == name), key=lambda m: (m != "rps", m))
            if not metrics:
                sys.exit(f"report.py: no figures for {name!r} (a run failed?)")
            # The first metric (rps when there is one) unlabelled, the others named.
            vals = "  ".join(
                fmt(m, med(name, m)[0]) if j == 0 else f"{m} {fmt(m, med(name, m)[0])}"
                for j, m in enumerate(metrics)
            )
            rows.append((name, vals, f"n={med(name, metrics[0])[1]}", "reference", ""))
            i += 2
        elif op == "--ratio":
            name, metric, ref, lo = args[i + 1 : i + 5]
            a, n = med(name, metric)
            b, _ = med(ref, metric)
            r = a / b if b else float("inf")
            rows.append((name, f"{fmt(metric, a)} vs {ref} {fmt(metric, b)}", f"n={n}",
                         f"{r:.2f}x (target >= {float(lo):.2f}x)", "PASS" if r >= float(lo) else "MISS"))
            i += 5
        elif op == "--ratio-max":
            name, metric, ref, hi = args[i + 1 : i + 5]
            a, n = med(name, metric)
            b, _ = med(ref, metric)
            r = a / b if b else float("inf")
            rows.append((name, f"{fmt(metric, a)} vs {ref} {fmt(metric, b)}", f"n={n}",
                         f"{r:.2f}x (target <= {float(hi):.2f}x)", "PASS" if r <= float(hi) else "MISS"))
            i += 5
        elif op == "--max":
            name, metric, hi = args[i + 1 : i + 4]
            a, n = med(name, metric)
            rows.append((name, f"{metric} {fmt(metric, a)}", f"n={n}",
                         f"target <= {fmt(metric, float(hi))}", "PASS" if a <= float(hi) else "MISS"))
            i += 4
        else:
            sys.exit(f"report.py: unknown check {op}")
    head = ("name", "median", "rounds", "ratio / target", "result")
    widths = [max(len(str(r[c])) for r in rows + [head]) for c in range(5)]
    line = lambda r: "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"
    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "wrk":
        parse_wrk(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 3 and sys.argv[1] == "fake":
        fake(sys.argv[2:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "table":
        table(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)
