"""Lookups on a chain with a block time (anvil --block-time 1), as on a consortium chain.

A chain-confirmed org node serves only once the lookup's transaction is in a block, so a lookup
waits for the next block (up to one block time, half of one on average) plus the pipeline. An
audit-after node serves on the gateway's signed intent at once, and the audit matches its share
to the chain once the block comes. Lookups are started at random moments (a pause of 0 to 1.5
blocks between them), as responders' requests arrive, not in step with the blocks.

    .venv/bin/python bench/block_time.py --lookups 20
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from scale_common import fmt, save, start, transport_ids

from shardline import audit, stack
from shardline.config import AUDIT_AFTER, CHAIN_CONFIRMED
from shardline.lookup_client import api_key, base_url, lookup


async def sequential(cfg, ids: list[str], n: int, block_s: float) -> dict:
    key = api_key(cfg)
    ms, statuses, guids = [], {}, []
    async with httpx.AsyncClient(base_url=base_url(cfg), timeout=30, trust_env=False) as c:
        for i in range(n):
            await asyncio.sleep(random.uniform(0, 1.5 * block_s))
            t0 = time.perf_counter()
            out = await lookup(c, ids[i % len(ids)], key, wait_s=20)
            statuses[out.status] = statuses.get(out.status, 0) + 1
            if out.status == 200:
                ms.append(1000 * (time.perf_counter() - t0))
                guids.append(out.body["guid"])
    ms.sort()
    return {
        "n": n,
        "statuses": statuses,
        "p50_ms": statistics.median(ms) if ms else None,
        "p95_ms": ms[min(len(ms) - 1, int(0.95 * len(ms)))] if ms else None,
        "max_ms": ms[-1] if ms else None,
        "min_ms": ms[0] if ms else None,
        "guids": guids,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lookups", type=int, default=20)
    ap.add_argument("--block-time", type=float, default=1.0)
    args = ap.parse_args()
    block_ms = 1000 * args.block_time
    out = {"block_ms": block_ms}
    for policy in (CHAIN_CONFIRMED, AUDIT_AFTER):
        print(f"{policy}: anvil mines a block every {args.block_time:g} s")
        cfg = start(
            policy=policy,
            transports_n=8,
            deadline_s=3 * args.block_time + 2,
            block_time=args.block_time,
        )
        try:
            r = asyncio.run(sequential(cfg, transport_ids(8), args.lookups, args.block_time))
            time.sleep(2 * args.block_time)  # the last requests reach their blocks
            report = asyncio.run(audit.run(cfg, grace_s=0))
            mine = [row for row in report.rows if row.guid in set(r["guids"])]
            r["audit"] = {
                s: sum(1 for row in mine if row.status == s)
                for s in ("matched", "pending", "not_on_chain", "mismatch")
            }
            r["served_on"] = {
                t: sum(1 for row in mine if row.trigger == t) for t in ("chain", "intent")
            }
            del r["guids"]
            out[policy] = r
            print(
                f"  {r['n']} lookups {r['statuses']}: p50 {fmt(r['p50_ms'])} ms  p95 "
                f"{fmt(r['p95_ms'])} ms  min {fmt(r['min_ms'])}  max {fmt(r['max_ms'])}  "
                f"(p50 = {r['p50_ms'] / block_ms:.2f} blocks)"
            )
            print(f"  shares served on {r['served_on']}; audit afterwards: {r['audit']}")
        finally:
            stack.down(cfg.run_dir, say=lambda _m: None)
    save("block_time", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
