"""Where a lookup's CPU goes: py-spy samples every process of a local stack under load.

Starts a fresh stack (one policy), registers sample transports, drives ``--concurrency`` clients
for ``--duration`` seconds, and meanwhile records each worker process with py-spy. Prints, per
process, its CPU seconds and the functions with the most samples, self and inclusive, so that an
optimisation starts from a measurement. Needs py-spy (``pip install py-spy``).

    .venv/bin/python bench/profile_lookup.py --policy audit-after --duration 15
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from shardline import stack, transports
from shardline.config import AUDIT_AFTER, CHAIN_CONFIRMED
from shardline.core.cargo import read_transports, sample_transports_path
from shardline.lookup_client import api_key, base_url, lookup


def collapse(path: Path, top: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    self_count: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack_s, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        frames = [f for f in stack_s.split(";") if f]
        if not frames:
            continue
        total += count
        self_count[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    return self_count.most_common(top), incl.most_common(top * 2), total


async def drive(cfg, ids: list[str], concurrency: int, duration: float) -> tuple[int, int]:
    key = api_key(cfg)
    ok = bad = 0
    async with httpx.AsyncClient(base_url=base_url(cfg), timeout=30) as client:
        stop_at = time.perf_counter() + duration

        async def one(i: int) -> None:
            nonlocal ok, bad
            rng = random.Random(i)
            while time.perf_counter() < stop_at:
                out = await lookup(client, rng.choice(ids), key)
                if out.ok:
                    ok += 1
                else:
                    bad += 1

        await asyncio.gather(*(one(i) for i in range(concurrency)))
    return ok, bad


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", choices=(CHAIN_CONFIRMED, AUDIT_AFTER), default=AUDIT_AFTER)
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--only", action="append", help="profile only these process names")
    p.add_argument("--native", action="store_true", help="sample C frames too (py-spy --native)")
    args = p.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    run_dir = Path(tempfile.mkdtemp(prefix="shardline-profile-"))
    try:
        cfg = stack.up(
            run_dir,
            orgs=4,
            threshold=2,
            policy=args.policy,
            ports=stack.Ports.free(),
            say=lambda m: print("  " + m, flush=True),
        )
        sheets = [
            s
            for s in read_transports(sample_transports_path())
            if s.company in {o.id for o in cfg.orgs}
        ][:60]
        asyncio.run(transports.register(cfg, sheets))
        asyncio.run(transports.wait_stored(cfg))
        ids = [s.transport_id for s in sheets]
        asyncio.run(drive(cfg, ids, 4, 2.0))  # warm up
        procs = {n: i["pid"] for n, i in stack.running(run_dir).items()}
        if args.only:
            procs = {n: pid for n, pid in procs.items() if n in args.only}
        spies = {}
        for name, pid in procs.items():
            out = run_dir / f"profile-{name}.txt"
            spies[name] = (
                out,
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--rate",
                        "250",
                        # C frames need the process paused while it is sampled
                        *(["--native"] if args.native else ["--nonblocking", "--gil"]),
                        "--format",
                        "raw",
                        "--duration",
                        str(int(args.duration)),
                        "-o",
                        str(out),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                ),
            )
        cpu0 = {n: psutil.Process(pid).cpu_times()[:2] for n, pid in procs.items()}
        ok, bad = asyncio.run(drive(cfg, ids, args.concurrency, args.duration))
        cpu1 = {n: psutil.Process(pid).cpu_times()[:2] for n, pid in procs.items()}
        for _out, proc in spies.values():
            proc.wait(timeout=60)
        print(f"\n{ok} OK lookups, {bad} not, in {args.duration:g} s: {ok / args.duration:.1f}/s")
        for name, (out, _proc) in spies.items():
            user, system = (cpu1[name][i] - cpu0[name][i] for i in (0, 1))
            cpu = user + system
            print(
                f"\n=== {name}: {cpu:.2f} CPU s ({system:.2f} in the kernel), "
                f"{1000 * cpu / max(ok, 1):.2f} ms per OK lookup"
            )
            if not out.exists():
                print("  (no samples)")
                continue
            self_top, incl_top, total = collapse(out, args.top)
            print(f"  self ({total} samples):")
            for f, n in self_top:
                print(f"    {100 * n / total:5.1f}%  {f}")
            print("  inclusive:")
            for f, n in incl_top:
                print(f"    {100 * n / total:5.1f}%  {f}")
    finally:
        stack.down(run_dir, say=lambda _m: None)
        print(f"\nrun directory: {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
