"""stem-sqlite's benchmark: stem-sqlite, Huey's SQLite storage and raw sqlite3, one run.

    ./dev bench                      # N=10000, 3 repetitions, about 3 minutes on 2 cores
    ./dev bench --quick              # N=2000, 1 repetition, depth 20,000 (a smoke run)
    ./dev bench --json out.json      # also write the results (bench/compare.py diffs two)

Every measurement runs in a fresh process on fresh files. Figures are medians with
[min-max] over repetitions; ratios compare medians measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# (label, system, workload, n-or-None, extra); n None = the run's N.
PLAN: list[tuple[str, str, str, str, str]] = [
    ("limit.enqueue", "raw", "enqueue", "N", ""),
    ("limit.bulk", "raw", "bulk", "N", ""),
    ("limit.claim_ack", "raw", "drain", "N", ""),
    ("w1.stem", "stem", "enqueue", "N", ""),
    ("w1.huey", "huey", "enqueue", "N", ""),
    ("w1b.stem", "stem", "bulk", "N", ""),
    ("w1b.stem.distinct", "stem", "bulk", "N", "distinct"),
    ("w2.stem.c1", "stem", "drain", "N", "1"),
    ("w2.stem.default", "stem", "drain", "N", ""),
    ("w2.stem.c1.pm64", "stem", "drain", "N", "1:64"),
    ("w2.stem.default.pm64", "stem", "drain", "N", ":64"),
    ("w2.huey.c1", "huey", "drain", "N", "1"),
    ("w2.huey.default", "huey", "drain", "N", ""),
    ("w3.stem", "stem", "latency", "N", ""),
    ("w3.stem.3q", "stem", "latency", "N", "3q"),
    ("w3.huey", "huey", "latency", "N", ""),
    ("w4.raw.empty", "raw", "depth", "0", ""),
    ("w4.raw.pending", "raw", "depth", "DEPTH", ""),
    ("w4.raw.delayed", "raw", "depth", "DEPTH", "delayed"),
    ("w4.stem.empty", "stem", "depth", "0", ""),
    ("w4.stem.pending", "stem", "depth", "DEPTH", ""),
    ("w4.stem.delayed", "stem", "depth", "DEPTH", "delayed"),
    ("w4.huey.empty", "huey", "depth", "0", ""),
    ("w4.huey.pending", "huey", "depth", "DEPTH", ""),
    ("w4.huey.delayed", "huey", "depth", "DEPTH", "delayed"),
    ("w5.stem", "stem", "idle", "0", ""),
]

TARGETS = [
    # (name, description, value function, comparison, threshold)
    ("W1 vs raw per-job insert", lambda r: r["w1.stem"] / r["limit.enqueue"], ">=", 0.5),
    ("W1 vs Huey", lambda r: r["w1.stem"] / r["w1.huey"], ">=", 5.0),
    ("W1b vs raw batched insert", lambda r: r["w1b.stem"] / r["limit.bulk"], ">=", 0.5),
    ("W2 c=1 vs Huey c=1", lambda r: r["w2.stem.c1"] / r["w2.huey.c1"], ">=", 10.0),
    (
        "W2 default vs Huey default",
        lambda r: r["w2.stem.default"] / r["w2.huey.default"],
        ">=",
        10.0,
    ),
    (
        "W2 c=1 --prefetch-multiplier 64 vs Huey c=1",
        lambda r: r["w2.stem.c1.pm64"] / r["w2.huey.c1"],
        ">=",
        10.0,
    ),
    (
        "W2 default --prefetch-multiplier 64 vs Huey default",
        lambda r: r["w2.stem.default.pm64"] / r["w2.huey.default"],
        ">=",
        10.0,
    ),
    ("W3 p50 ms", lambda r: r["w3.stem.p50"], "<=", 5.0),
    ("W3 p99 ms", lambda r: r["w3.stem.p99"], "<=", 20.0),
    ("W3 p50 ms, worker on 3 queues", lambda r: r["w3.stem.3q.p50"], "<=", 5.0),
    ("W3 p99 ms, worker on 3 queues", lambda r: r["w3.stem.3q.p99"], "<=", 20.0),
    ("W4 pending deep/empty", lambda r: r["w4.stem.pending"] / r["w4.stem.empty"], "<=", 1.3),
    ("W4 delayed deep/empty", lambda r: r["w4.stem.delayed"] / r["w4.stem.empty"], "<=", 1.3),
    ("W5 idle CPU % of a core", lambda r: r["w5.stem.cpu_percent"], "<=", 2.0),
    ("W5 resident MB", lambda r: r["w5.stem.rss_mb"], "<=", 60.0),
]


def measure(system: str, workload: str, n: int, extra: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="stem-bench-") as folder:
        done = subprocess.run(
            [sys.executable, str(HERE / "child.py"), system, workload, str(n), folder, extra],
            capture_output=True,
            text=True,
            timeout=900,
        )
    if done.returncode != 0:
        raise RuntimeError(f"{system} {workload} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def summarise(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def fmt(stats: dict[str, float], unit: str = "") -> str:
    def one(x: float) -> str:
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}"

    return f"{one(stats['median'])}{unit} [{one(stats['min'])}-{one(stats['max'])}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--depth", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="N=2000, 1 rep, depth 20,000")
    parser.add_argument("--only", help="comma-separated label prefixes (e.g. w1,limit)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.quick:
        args.n, args.reps, args.depth = 2000, 1, 20_000
    sizes = {"N": args.n, "DEPTH": args.depth, "0": 0}
    started = time.time()
    results: dict[str, dict[str, dict[str, float]]] = {}
    for label, system, workload, size, extra in PLAN:
        if args.only and not any(label.startswith(p) for p in args.only.split(",")):
            continue
        reps = 1 if workload == "idle" else args.reps
        samples: dict[str, list[float]] = {}
        for _ in range(reps):
            for key, value in measure(system, workload, sizes[size], extra).items():
                if value is not None:
                    samples.setdefault(key, []).append(float(value))
        results[label] = {key: summarise(values) for key, values in samples.items()}
        shown = ", ".join(f"{k} {fmt(v)}" for k, v in results[label].items())
        print(f"  {label:22} {shown}", file=sys.stderr, flush=True)

    flat = {}
    for label, metrics in results.items():
        for key, stats in metrics.items():
            flat[label if key in ("rate", "us") else f"{label}.{key}"] = stats["median"]
    print(report(results, flat, args, time.time() - started))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "n": args.n,
                    "reps": args.reps,
                    "depth": args.depth,
                    "when": time.time(),
                    "results": results,
                    "medians": flat,
                    "ratios": {
                        name: value(flat) for name, value, _, _ in TARGETS if _has(value, flat)
                    },
                },
                indent=2,
            )
        )
    return 0


def _has(value: Any, flat: dict[str, float]) -> bool:
    try:
        value(flat)
    except (KeyError, ZeroDivisionError):
        return False
    return True


def report(results: dict[str, Any], flat: dict[str, float], args: Any, wall: float) -> str:
    lines = [
        f"stem-sqlite benchmark: N={args.n}, {args.reps} repetition(s), depth {args.depth:,}; "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs; {wall:.0f} s",
        "",
        "| measurement | median [min-max] | x raw limit | x Huey |",
        "|---|---|---|---|",
    ]
    peers = {
        "w1.stem": ("limit.enqueue", "w1.huey"),
        "w1.huey": ("limit.enqueue", None),
        "w1b.stem": ("limit.bulk", None),
        "w1b.stem.distinct": ("limit.bulk", None),
        "w2.stem.c1": ("limit.claim_ack", "w2.huey.c1"),
        "w2.stem.default": ("limit.claim_ack", "w2.huey.default"),
        "w2.stem.c1.pm64": ("limit.claim_ack", "w2.huey.c1"),
        "w2.stem.default.pm64": ("limit.claim_ack", "w2.huey.default"),
        "w2.huey.c1": ("limit.claim_ack", None),
        "w2.huey.default": ("limit.claim_ack", None),
    }
    units = {
        "rate": " /s",
        "us": " us/cycle",
        "p50": " ms",
        "p95": " ms",
        "p99": " ms",
        "cpu_percent": " %",
        "rss_mb": " MB",
    }
    for label, metrics in results.items():
        for key, stats in metrics.items():
            name = label if key in ("rate", "us") else f"{label}.{key}"
            limit, huey = peers.get(label, (None, None))
            x_limit = f"{stats['median'] / flat[limit]:.2f}" if limit in flat else ""
            x_huey = f"{stats['median'] / flat[huey]:.2f}" if huey in flat else ""
            if label.startswith("w4.") and not label.endswith(".empty"):
                empty = flat.get(label.rsplit(".", 1)[0] + ".empty")
                x_limit = f"deep/empty {stats['median'] / empty:.2f}" if empty else ""
            lines.append(f"| {name} | {fmt(stats, units.get(key, ''))} | {x_limit} | {x_huey} |")
    lines += ["", "| target | value | goal | met |", "|---|---|---|---|"]
    for name, value, op, goal in TARGETS:
        if not _has(value, flat):
            continue
        got = value(flat)
        met = got >= goal if op == ">=" else got <= goal
        lines.append(f"| {name} | {got:.2f} | {op} {goal} | {'yes' if met else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
