#!/usr/bin/env python3
"""The tables of a scripts/pod-startup.sh results directory.

Reads <results>/rep<k>/<backend>.json (podstart's output, one file per
backend and repetition), prints markdown tables on stdout (the median of
each figure over the repetitions; STE against each other backend) and
writes the medians to <results>/summary.csv.

Usage: scripts/pod-startup-summary.py <results dir>
"""

import csv
import glob
import json
import os
import statistics
import sys

# (heading, how to get the figure from one run's summary, format)
FIGURES = [
    ("create Pods/s", lambda s: s["create_throughput_pods_per_s"], "%.1f"),
    ("create p50 ms", lambda s: s["create_latency_ms"]["p50"], "%.1f"),
    ("create p99 ms", lambda s: s["create_latency_ms"]["p99"], "%.1f"),
    ("scheduled p50 ms", lambda s: s["create_to_scheduled_ms"]["p50"], "%.0f"),
    ("Running p50 ms", lambda s: s["create_to_running_ms"]["p50"], "%.0f"),
    ("Running p90 ms", lambda s: s["create_to_running_ms"]["p90"], "%.0f"),
    ("Running p99 ms", lambda s: s["create_to_running_ms"]["p99"], "%.0f"),
    ("machine busy %", lambda s: 100 * s["cpu"]["machine_busy_fraction"], "%.0f"),
]
# The figures a ratio STE / baseline is shown for (not the machine's load).
RATIOS = FIGURES[:-1]


def load(results):
    """{backend: {run: [summary per repetition]}}, backends in first-seen order."""
    files = sorted(glob.glob(os.path.join(results, "rep*", "*.json")))
    files += sorted(glob.glob(os.path.join(results, "*.json")))
    data = {}
    for path in files:
        with open(path) as f:
            doc = json.load(f)
        runs = data.setdefault(doc["backend"], {})
        for s in doc["runs"]:
            runs.setdefault(s["run"], []).append(s)
    order = sorted(data, key=lambda b: (b != "ste", b))
    return {b: data[b] for b in order}


def median(reps, get):
    return statistics.median(get(s) for s in reps)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    results = sys.argv[1]
    data = load(results)
    if not data:
        sys.exit("no <backend>.json under %s" % results)
    runs = []
    for b in data:
        runs += [r for r in data[b] if r not in runs]
    reps = max(len(v) for b in data for v in data[b].values())
    baselines = [b for b in data if b != "ste"]

    head = ["run", "Pods in", "reps", "Running"] + [h for h, _, _ in FIGURES]
    rows = []
    print("Median over %d repetition(s); startup = create sent -> watch saw Running (client clock)\n" % reps)
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in runs:
        for b in data:
            if r not in data[b]:
                continue
            rs = data[b][r]
            running = "%d/%d" % (min(s["running"] for s in rs), rs[0]["pods"])
            row = [r, b, str(len(rs)), running] + [fmt % median(rs, get) for _, get, fmt in FIGURES]
            rows.append(row)
            print("| " + " | ".join(row) + " |")
        if "ste" not in data or r not in data["ste"]:
            continue
        for base in baselines:
            if r not in data[base]:
                continue
            cells = []
            for _, get, _ in RATIOS:
                a, z = median(data["ste"][r], get), median(data[base][r], get)
                cells.append("%.2fx" % (a / z) if z else "-")
            print("| " + " | ".join([r, "**STE / %s**" % base, "", ""] + cells + [""]) + " |")

    with open(os.path.join(results, "summary.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        w.writerows(rows)

    names = sorted({n for b in data for r in data[b] for s in data[b][r] for n in s["cpu"].get("cpu_seconds", {})})
    print("\nCPU seconds per run, median (from the run's start to all Pods Running):\n")
    print("| run | Pods in | " + " | ".join(names) + " |")
    print("|" + "---|" * (len(names) + 2))
    for r in runs:
        for b in data:
            if r not in data[b]:
                continue
            cells = []
            for n in names:
                vals = [s["cpu"]["cpu_seconds"][n] for s in data[b][r] if n in s["cpu"].get("cpu_seconds", {})]
                cells.append("%.2f" % statistics.median(vals) if vals else "-")
            print("| %s | %s | " % (r, b) + " | ".join(cells) + " |")

    if reps > 1:
        print("\nEach repetition: Running p50 / p99 ms\n")
        print("| run | Pods in | " + " | ".join("rep %d" % (k + 1) for k in range(reps)) + " |")
        print("|" + "---|" * (reps + 2))
        for r in runs:
            for b in data:
                if r in data[b]:
                    cells = ["%.0f / %.0f" % (s["create_to_running_ms"]["p50"], s["create_to_running_ms"]["p99"])
                             for s in data[b][r]]
                    print("| %s | %s | " % (r, b) + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
