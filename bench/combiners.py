"""Two combiners against one, when the combiner is the bottleneck.

Combiners share one durable JetStream consumer (``combiner`` on LOOKUPS), so a second process
takes half of the shares, and they meet in the gateway's Redis (the first t good shares win,
``done`` is set once). On a stack as it ships the combiner is far from the bottleneck (it is a
few hundred microseconds per share), so this benchmark MAKES it one: ``gateway.
combiner_share_cost_s`` puts a blocking pause into every share a combiner handles, standing in
for CPU work; the pause blocks that combiner's event loop, as CPU work would. A pause uses no CPU,
so two combiners on this 2-core machine show what the queue group does, not what two cores do.

    .venv/bin/python bench/combiners.py --cost-ms 30 --clients 8 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_common import closed_loop, save, start, transport_ids

from shardline import stack
from shardline.bus.connect import connect


def consumer_counts(cfg) -> dict[str, int]:
    """Deliveries of the combiners' shared consumer: a share handled after its ack wait is
    delivered again, and costs its pause again."""

    async def go():
        nc = await connect(cfg.nats_url, "bench")
        try:
            info = await nc.jetstream().consumer_info("LOOKUPS", "combiner")
            return {"delivered": info.delivered.consumer_seq}
        finally:
            await nc.close()

    return asyncio.run(go())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cost-ms", type=float, default=30.0, help="pause per share (ms)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=15.0)
    args = ap.parse_args()

    print(f"combiners: a {args.cost_ms:g} ms blocking pause per share (benchmark only)")
    cfg = start(transports_n=24)
    try:
        cfg.gateway.combiner_share_cost_s = args.cost_ms / 1000
        cfg.save()
        stack.stop(cfg.run_dir, "combiner")
        stack.start_workers(cfg, ["combiner"])
        ids = transport_ids(24)
        c0 = consumer_counts(cfg)
        one = asyncio.run(closed_loop(cfg, ids, args.clients, args.seconds))
        c1 = consumer_counts(cfg)
        per1 = (c1["delivered"] - c0["delivered"]) / max(one.ok, 1)
        print(f"  1 combiner : {one.line()}  deliveries per lookup {per1:.1f}")
        proc = stack.start_process(cfg.run_dir, "combiner-2", stack.worker_argv(cfg, "combiner"))
        stack.wait_ready(cfg, ["combiner"], {"combiner": proc})
        time.sleep(3)  # both answer on one status subject: give the second time to pull
        c2 = consumer_counts(cfg)
        two = asyncio.run(closed_loop(cfg, ids, args.clients, args.seconds))
        c3 = consumer_counts(cfg)
        per2 = (c3["delivered"] - c2["delivered"]) / max(two.ok, 1)
        print(f"  2 combiners: {two.line()}  deliveries per lookup {per2:.1f}")
        ratio = two.per_s / one.per_s if one.per_s else float("nan")
        shares = 4  # chain-confirmed: every org node serves, and each share costs the pause
        ceiling = 1000 / (args.cost_ms * shares)
        print(
            f"  throughput x{ratio:.2f} with two (target 2.0); one combiner's ceiling at "
            f"{shares} shares per lookup: {ceiling:.1f}/s"
        )
        save(
            "combiners",
            {
                "cost_ms": args.cost_ms,
                "clients": args.clients,
                "one": one,
                "two": two,
                "ratio": ratio,
                "ceiling": ceiling,
                "deliveries_per_lookup": [per1, per2],
            },
        )
    finally:
        stack.down(cfg.run_dir, say=lambda _m: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
