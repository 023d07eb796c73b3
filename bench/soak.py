"""The soak: lookups at a fixed rate for a set time, and how the stack holds up.

A fresh local stack (4 org nodes, threshold 2) on free ports in a temporary directory. Lookups are
started on a fixed schedule (``--rate`` per second, whatever the answers take) for
``--duration`` seconds. It reports, per window of ``--window`` seconds and overall: lookups
started and answered per second, latency percentiles, errors by kind; and the resident memory of
every process of the stack (servers and workers) sampled every ``--sample`` seconds, with its
growth from the first window to the last. Target (issue 9): 200 lookups/s for 10 minutes with flat
memory and no error. Figures are printed, never asserted.

    .venv/bin/python bench/soak.py --rate 50 --duration 60
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

from shardline import loadgen, stack
from shardline.config import AUDIT_AFTER, CHAIN_CONFIRMED
from shardline.core.cargo import read_transports, sample_transports_path

TRANSPORTS = 24


def sample_stack(
    run_dir: Path, every_s: float, stop: threading.Event, out: list, cpu: list
) -> None:
    """Resident memory (MiB) and CPU seconds used so far (user + system) of every process of
    the stack, its children included, every ``every_s``; this process's own CPU as "bench"."""
    me = psutil.Process()
    while not stop.is_set():
        row: dict[str, float] = {"t": time.time()}
        used: dict[str, float] = {"t": row["t"]}
        for name, info in stack.running(run_dir).items():
            try:
                proc = psutil.Process(info["pid"])
                family = [proc, *proc.children(recursive=True)]
                row[name] = sum(p.memory_info().rss for p in family) / 2**20
                used[name] = sum(sum(p.cpu_times()[:2]) for p in family)
            except psutil.Error:
                continue
        used["bench"] = sum(me.cpu_times()[:2])
        out.append(row)
        cpu.append(used)
        stop.wait(every_s)


def cpu_samples(cpu: list[dict], t0: float) -> list[dict[str, float]]:
    """Per sampling interval: its start in seconds from the load's start, and each process's
    share of one core in it (percent). Fine enough to match a latency spell to a burst."""
    out = []
    for a, b in itertools.pairwise(cpu):
        span = b["t"] - a["t"]
        if span <= 0:
            continue
        row = {"from_s": round(a["t"] - t0, 2)}
        row.update({n: round(100 * (b[n] - a[n]) / span, 1) for n in b if n != "t" and n in a})
        out.append(row)
    return out


def cpu_table(cpu: list[dict], every_s: float) -> dict[str, list[float]]:
    """Per process, the share of one core it used in each ``every_s`` (percent)."""
    names = sorted({k for row in cpu for k in row if k != "t"})
    out: dict[str, list[float]] = {n: [] for n in names}
    marks = [cpu[0]]
    for row in cpu[1:]:
        if row["t"] - marks[-1]["t"] >= every_s:
            marks.append(row)
    for a, b in itertools.pairwise(marks):
        for n in names:
            if n in a and n in b:
                out[n].append(100 * (b[n] - a[n]) / (b["t"] - a["t"]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=50.0, help="lookups started per second")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    p.add_argument("--window", type=float, default=10.0, help="seconds per row of the table")
    p.add_argument("--sample", type=float, default=2.0, help="seconds between memory samples")
    p.add_argument("--deadline", type=float, default=5.0, help="the gateway's deadline, s")
    p.add_argument(
        "--policy",
        choices=(CHAIN_CONFIRMED, AUDIT_AFTER),
        default=AUDIT_AFTER,
        help="the org nodes' policy (the 200/s target is for audit-after)",
    )
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument("--keep", action="store_true", help="keep the run directory")
    args = p.parse_args(argv)

    sheets = read_transports(sample_transports_path())[:TRANSPORTS]
    run_dir = Path(tempfile.mkdtemp(prefix="shardline-soak-"))
    memory: list[dict] = []
    cpu: list[dict] = []
    try:
        cfg = loadgen.start_sample_stack(
            run_dir,
            sheets,
            deadline_s=args.deadline,
            policy=args.policy,
            say=lambda m: print(f"  {m}", flush=True),
        )
        stop = threading.Event()
        sampler = threading.Thread(
            target=sample_stack, args=(run_dir, args.sample, stop, memory, cpu), daemon=True
        )
        sampler.start()
        print(
            f"soak: {args.rate:g} lookups/s for {args.duration:g} s, policy {args.policy}",
            flush=True,
        )
        load = loadgen.Load(
            cfg,
            [s.transport_id for s in sheets],
            {s.transport_id: json.loads(s.canonical_bytes()) for s in sheets},
            rate=args.rate,
            duration_s=args.duration,
            wait_s=args.deadline + 5,
        )
        t0 = time.time()
        load.start()
        load._thread.join()  # runs for --duration, then waits for the last answers
        shots = load.shots
        stop.set()
        sampler.join()
    finally:
        stack.down(run_dir, say=lambda _m: None)
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)

    # ---- the table -------------------------------------------------------------------------
    print()
    print(
        f"{'window s':>10} {'started/s':>9} {'ok/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6} {'gw p50':>8} {'gw p95':>8}"
    )
    windows = []
    w = 0.0
    while w < args.duration:
        inside = [s for s in shots if t0 + w <= s.started < t0 + w + args.window]
        span = min(args.window, args.duration - w)
        ok = [s for s in inside if s.ok]
        lat = [s.latency * 1000 for s in ok]
        gw = [s.gateway_ms for s in ok if s.gateway_ms is not None]
        row = {
            "from_s": w,
            "started_per_s": len(inside) / span,
            "ok_per_s": len(ok) / span,
            "p50_ms": loadgen.percentile(lat, 0.5),
            "p95_ms": loadgen.percentile(lat, 0.95),
            "p99_ms": loadgen.percentile(lat, 0.99),
            "errors": len(inside) - len(ok),
            # accepted -> sheet at the gateway: the rest of a lookup's latency is the HTTP
            # queue (this client's 200 connections) before the gateway took it
            "gateway_p50_ms": loadgen.percentile(gw, 0.5),
            "gateway_p95_ms": loadgen.percentile(gw, 0.95),
        }
        windows.append(row)
        print(
            f"{w:>4.0f}-{w + span:<5.0f} {row['started_per_s']:>9.1f} {row['ok_per_s']:>7.1f} "
            f"{row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['errors']:>6} "
            f"{row['gateway_p50_ms']:>8.1f} {row['gateway_p95_ms']:>8.1f}"
        )
        w += args.window
    ok = [s for s in shots if s.ok]
    lat = [s.latency * 1000 for s in ok]
    errors = Counter(
        (str(s.status) if s.status else s.error.split("(")[0] or "no answer")
        for s in shots
        if not s.ok
    )
    print(
        f"{'all':>10} {len(shots) / args.duration:>9.1f} {len(ok) / args.duration:>7.1f} "
        f"{loadgen.percentile(lat, 0.5):>8.1f} {loadgen.percentile(lat, 0.95):>8.1f} "
        f"{loadgen.percentile(lat, 0.99):>8.1f} {len(shots) - len(ok):>6}"
    )
    if errors:
        print("errors by kind: " + ", ".join(f"{k} x{n}" for k, n in errors.most_common()))
    retried = [s for s in shots if s.retries]
    print(
        f"asked again after a 503 at the gateway's limit: {len(retried)} lookups, "
        f"{sum(s.retries for s in retried)} retries"
    )

    print()
    print("resident memory, MiB (first sample, middle, last; growth last - first)")
    names = sorted({k for row in memory for k in row if k != "t"})
    print(f"{'process':<16} {'first':>8} {'middle':>8} {'last':>8} {'growth':>8}")
    mem_rows = {}
    for name in names:
        series = [row[name] for row in memory if name in row]
        if not series:
            continue
        first, mid, last = series[0], series[len(series) // 2], series[-1]
        mem_rows[name] = {"first": first, "middle": mid, "last": last, "series": series}
        print(f"{name:<16} {first:>8.1f} {mid:>8.1f} {last:>8.1f} {last - first:>+8.1f}")
    print()
    every = 60.0 if args.duration >= 120 else args.window
    cpu_by_process = cpu_table(cpu, every) if cpu else {}
    intervals = max((len(v) for v in cpu_by_process.values()), default=0)
    print(f"CPU, % of one core, per {every:g} s (bench: the load generator and this sampler)")
    print(f"{'process':<16} " + " ".join(f"{i + 1:>5}" for i in range(intervals)))
    for name, series in cpu_by_process.items():
        print(f"{name:<16} " + " ".join(f"{v:>5.0f}" for v in series))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "windows": windows,
                    "errors": dict(errors),
                    "memory_mib": mem_rows,
                    "cpu_percent_per_interval": {"interval_s": every, **cpu_by_process},
                    "cpu_percent_per_sample": cpu_samples(cpu, t0),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
