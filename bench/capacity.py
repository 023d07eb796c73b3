"""Where a lookup's cost goes, and how it moves as orgs, requests and registered transports grow.

For each org count it starts a fresh local stack (chain-confirmed, threshold 2) and measures:
- CPU milliseconds per lookup of every process (gateway, combiner, each org node, nats-server,
  anvil, redis-server), from the processes' CPU times around a closed-loop run: the per-step cost;
- throughput and latency as the number of concurrent clients grows (requests);
on the 4-org stack, lookup latency with the 24 transports of the start and again after all 264
sample transports are registered (records). Everything shares this machine's cores, so the
process with the most CPU per lookup is where the bottleneck sits. Timings are printed and saved
to bench/results/capacity.json for bench/plots.py; nothing is asserted.

    .venv/bin/python bench/capacity.py --orgs 2 4 8 --clients 1 4 16 --seconds 6
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil
from scale_common import closed_loop, save, start, transport_ids

from shardline import stack, transports
from shardline.core.cargo import read_transports, sample_transports_path


def component(name: str) -> str:
    return "org-node" if name.startswith("node-") else name


def cpu_by_process(run_dir: Path) -> dict[str, float]:
    out = {}
    for name, info in stack.running(run_dir).items():
        try:
            t = psutil.Process(info["pid"]).cpu_times()
            out[name] = t.user + t.system
        except psutil.Error:
            pass
    return out


def cpu_ms_per_lookup(before: dict, after: dict, ok: int) -> dict[str, float]:
    per: dict[str, float] = {}
    for name, t in after.items():
        per[component(name)] = per.get(component(name), 0.0) + 1000 * (t - before.get(name, t))
    return {k: round(v / max(ok, 1), 3) for k, v in sorted(per.items()) if v > 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orgs", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--records", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    ids = transport_ids(24)
    out: dict = {"orgs": {}, "records": {}}
    for n in args.orgs:
        print(f"{n} org nodes")
        cfg = start(orgs=n, transports_n=24)
        try:
            runs = []
            for c in args.clients:
                before = cpu_by_process(cfg.run_dir)
                load = asyncio.run(closed_loop(cfg, ids, c, args.seconds))
                cpu = cpu_ms_per_lookup(before, cpu_by_process(cfg.run_dir), load.ok)
                runs.append({"load": load, "cpu_ms_per_lookup": cpu})
                top = max(cpu, key=cpu.get) if cpu else "-"
                print(f"  {load.line()}\n      CPU ms/lookup {cpu}  (most: {top})")
            out["orgs"][str(n)] = runs
            if args.records and n == 4:
                c = max(args.clients)
                small = asyncio.run(closed_loop(cfg, ids, c, args.seconds))
                t = time.monotonic()
                sheets = read_transports(sample_transports_path())
                asyncio.run(transports.register(cfg, sheets))
                asyncio.run(transports.wait_stored(cfg))
                took = time.monotonic() - t
                every = [s.transport_id for s in sheets]
                large = asyncio.run(closed_loop(cfg, every, c, args.seconds))
                out["records"] = {
                    "24": small,
                    str(len(sheets)): large,
                    "register_s": took,
                }
                print(f"  24 transports : {small.line()}")
                print(
                    f"  {len(sheets)} transports: {large.line()}  "
                    f"(registering {len(sheets) - 24} more took {took:.1f} s)"
                )
        finally:
            stack.down(cfg.run_dir, say=lambda _m: None)
    save("capacity", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
