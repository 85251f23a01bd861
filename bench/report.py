#!/usr/bin/env python3
"""Bench helpers shared by the scripts.

  report.py wrk FILE NAME >> RAW      parse one wrk run into RAW rows
  report.py table RAW [checks...]     medians, ratios and PASS/MISS as a table

RAW rows are `name<TAB>metric<TAB>value`, one per round. Checks:
  --show NAME                        print NAME's medians (a reference)
  --ratio NAME METRIC REF MIN        median(NAME)/median(REF) >= MIN
  --ratio-max NAME METRIC REF MAX    median(NAME)/median(REF) <= MAX
  --max NAME METRIC MAX              median(NAME) <= MAX

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
    elif len(sys.argv) >= 3 and sys.argv[1] == "table":
        table(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)
