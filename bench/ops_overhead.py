"""What metrics and tracing cost: the same lookups with them on and off, in the same run.

One local stack (audit-after by default: the fastest path, where a fixed cost weighs most) with
sample transports registered. Then, in alternating rounds (on, off, off, on, ...), every worker
is restarted with ``telemetry`` on or off in the stack configuration and measured with the
lookup benchmark's own code (``bench/lookup.py``): sequential lookups (p50, p95) and a short
burst of concurrent clients (OK lookups per second). Off means: no Prometheus counters or
histograms in the workers, no metrics port, no ``traceparent`` headers and no trace binding in
the workers (the gateway's one counter per lookup stays). The report is on / off per figure; the
target is within 10%. Timings are reported, never asserted.

    .venv/bin/python bench/ops_overhead.py --rounds 2 --samples 150 --concurrency 16 --duration 8
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from shardline import stack, transports
from shardline.config import AUDIT_AFTER, CHAIN_CONFIRMED, StackConfig
from shardline.core.cargo import read_transports, sample_transports_path
from shardline.lookup_client import api_key, lookup

_spec = importlib.util.spec_from_file_location(
    "bench_lookup", Path(__file__).with_name("lookup.py")
)
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_lookup"] = bench
_spec.loader.exec_module(bench)

TARGET = 1.10  # on / off, for latency; off / on for throughput


def restart_workers(cfg: StackConfig, telemetry: bool) -> None:
    cfg.telemetry = telemetry
    cfg.save()
    names = stack.worker_names(cfg)
    for name in names:
        stack.stop(cfg.run_dir, name)
    stack.start_workers(cfg, names)


async def burst(cfg: StackConfig, key: str, ids: list[str], clients: int, seconds: float) -> float:
    """OK lookups per second from ``clients`` concurrent clients for ``seconds``."""
    ok = 0
    stop_at = time.perf_counter() + seconds

    async def client(seed: int) -> None:
        nonlocal ok
        rng = random.Random(seed)
        async with bench.http_client(cfg, 1) as c:
            while time.perf_counter() < stop_at:
                out = await lookup(c, rng.choice(ids), key)
                ok += out.ok

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return ok / (time.perf_counter() - t0)


async def measure(cfg: StackConfig, ids: list[str], args: argparse.Namespace, seed: int) -> dict:
    key = api_key(cfg)
    rng = random.Random(seed)
    async with bench.http_client(cfg, 4) as client:
        for _ in range(args.warmup):
            await lookup(client, rng.choice(ids), key)
        seq = await bench.sequential(client, key, ids, args.samples, rng)
    rate = await burst(cfg, key, ids, args.concurrency, args.duration)
    return {"p50": seq.lookups.p50, "p95": seq.lookups.p95, "ok": seq.lookups.n, "rate": rate}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", choices=(CHAIN_CONFIRMED, AUDIT_AFTER), default=AUDIT_AFTER)
    p.add_argument("--rounds", type=int, default=2, help="pairs of (on, off) runs")
    p.add_argument("--samples", type=int, default=150, help="sequential lookups per run")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=16, help="clients in the burst")
    p.add_argument("--duration", type=float, default=8.0, help="seconds of the burst")
    p.add_argument("--transports", type=int, default=30)
    args = p.parse_args(argv)

    run_dir = Path(tempfile.mkdtemp(prefix="shardline-bench-ops-"))
    results: dict[bool, list[dict]] = {True: [], False: []}
    try:
        cfg = stack.up(
            run_dir, policy=args.policy, ports=stack.Ports.free(), say=lambda m: print(f"  {m}")
        )
        sheets = [
            s
            for s in read_transports(sample_transports_path())
            if s.company in {o.id for o in cfg.orgs}
        ]
        sheets = sheets[: args.transports]
        asyncio.run(transports.register(cfg, sheets))
        asyncio.run(transports.wait_stored(cfg))
        ids = [s.transport_id for s in sheets]
        for r in range(args.rounds):
            # ABBA: the order flips each round, so that drift on a shared machine evens out
            for on in (True, False) if r % 2 == 0 else (False, True):
                restart_workers(cfg, on)
                got = uvloop.run(measure(cfg, ids, args, seed=r))
                results[on].append(got)
                print(
                    f"round {r + 1} telemetry {'on ' if on else 'off'}: p50 {got['p50']} ms, "
                    f"p95 {got['p95']} ms, {got['rate']:.1f} OK lookups/s",
                    flush=True,
                )
    finally:
        stack.down(run_dir, say=lambda _m: None)
        shutil.rmtree(run_dir, ignore_errors=True)

    def mean(on: bool, k: str) -> float:
        xs = [x[k] for x in results[on] if x[k] is not None]
        return sum(xs) / len(xs)

    print(
        f"\nmetrics and tracing on vs off ({args.policy}, {args.rounds} rounds each, mean of rounds)"
    )
    print(f"{'figure':<26}{'on':>10}{'off':>10}{'ratio':>9}  target")
    for k, label, worse in (
        ("p50", "sequential p50 (ms)", "on/off"),
        ("p95", "sequential p95 (ms)", "on/off"),
        ("rate", "burst OK lookups/s", "off/on"),
    ):
        on, off = mean(True, k), mean(False, k)
        ratio = on / off if worse == "on/off" else off / on
        verdict = "met" if ratio <= TARGET else "NOT met"
        print(f"{label:<26}{on:>10.2f}{off:>10.2f}{ratio:>9.3f}  {worse} <= {TARGET} {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
