"""Two gateway processes against one, when the gateway is the bottleneck.

Lookups are combined in the gateway now: it sends the intent, opens each org's share and
rebuilds the sheet in its own process, so the worker to scale out is the gateway. A second
gateway process serves its own responders (a chain account's nonces belong to one process), on
its own port, with the same gateway key and the same Redis, bus and chain; clients are split
between the two. The stack is audit-after (org nodes serve on the intent), the fast path, so the
gateway's CPU is the first limit a single process meets.

On this 2-core machine every other process (org nodes, nats-server, anvil, redis and the load
generator itself) competes for the same two cores, so a second gateway can only add what the
cores have left. The benchmark therefore prints, for one and for two gateways, the CPU
milliseconds per lookup of every process and its share of a core: the ceiling of one gateway is
1000 / its CPU ms per lookup, the machine's is 1000 x cores / the sum over all processes.

The fallback path is measured too (``--paths combiner``): shares served on the chain event go
through the LOOKUPS stream to the durable ``combiner`` consumer, which any number of combiner
processes share. With the combiners stopped, chain-confirmed lookups leave a backlog of shares on
that consumer; then one combiner (and, for a second backlog, two) drains it while nothing else
runs, so the combiners are the bottleneck by construction. Shares per second over the drain, and
the CPU per share of the combiners, nats-server and redis-server, are printed.

    .venv/bin/python bench/combiners.py --clients 16 --seconds 12
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import secrets
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import psutil
from eth_account import Account
from scale_common import Load, save, start, transport_ids

from shardline import servers, stack
from shardline.bus.connect import connect
from shardline.config import AUDIT_AFTER, CHAIN_CONFIRMED, Responder, StackConfig
from shardline.core.keys import ParticipantKeys
from shardline.lookup_client import api_key, base_url, lookup


# ---- a second gateway process -----------------------------------------------------------
async def _grant(cfg: StackConfig, address: str) -> None:
    from shardline.contracts import registry
    from shardline.contracts.client import Chain
    from shardline.contracts.deploy import Deployment

    admin = Account.from_key(stack.ANVIL_ADMIN_KEY)
    async with await Chain.connect(cfg.chain_rpc) as chain:
        await chain.w3.provider.make_request("anvil_setBalance", [address, hex(10**21)])
        await registry.grant_role(
            chain, admin, Deployment.from_dict(cfg.deployment or {}), "RESPONDER", address
        )


def second_gateway(cfg: StackConfig) -> tuple[str, str]:
    """Start gateway-2 on a port of its own for a new responder with the RESPONDER role;
    returns its base URL and the responder's API key."""
    name = "responder-2"
    keys = ParticipantKeys.generate(name)
    key_file = cfg.run_dir / "keys" / f"{name}.json"
    keys.save(key_file)
    asyncio.run(_grant(cfg, Account.from_key(keys.chain_key).address))
    key = secrets.token_urlsafe(24)
    gw2 = cfg.model_copy(deep=True)
    gw2.gateway.port = servers.free_port()
    gw2.gateway.responders = [
        Responder(
            name=name, api_key_sha256=hashlib.sha256(key.encode()).hexdigest(), key_file=key_file
        )
    ]
    path = cfg.run_dir / "stack-gateway-2.json"
    path.write_text(gw2.model_dump_json(indent=2))
    path.chmod(0o600)
    argv = [sys.executable, "-m", "shardline", "worker", "gateway", "--config", str(path)]
    stack.start_process(cfg.run_dir, "gateway-2", argv)
    stack.wait_ready(gw2, ["gateway"], {})
    return base_url(gw2), key


# ---- load over several gateways, and CPU by process -------------------------------------
async def closed_loop(
    targets: list[tuple[str, str]], ids: list[str], clients: int, seconds: float
) -> Load:
    """``clients`` responders split over ``targets`` (base URL, API key), each looking up
    again as soon as its last answer came; one second of warm-up is not counted."""
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    counting = False
    stop_at = time.monotonic() + 1.0 + seconds

    async def one(client: httpx.AsyncClient, key: str, i: int) -> None:
        n = i
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                status = str((await lookup(client, ids[n % len(ids)], key, wait_s=30)).status)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            n += clients
            if counting and time.monotonic() < stop_at:
                outcomes[status] += 1
                if status == "200":
                    latencies.append(1000 * (time.perf_counter() - t0))

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    sessions = [
        httpx.AsyncClient(base_url=b, timeout=60, limits=limits, trust_env=False)
        for b, _ in targets
    ]
    try:
        tasks = [
            asyncio.create_task(one(sessions[i % len(targets)], targets[i % len(targets)][1], i))
            for i in range(clients)
        ]
        await asyncio.sleep(1.0)
        counting = True
        t0 = time.monotonic()
        await asyncio.gather(*tasks)
        wall = max(time.monotonic() - t0, 1e-9)
    finally:
        for s in sessions:
            await s.aclose()
    lat = sorted(latencies)
    return Load(
        clients,
        seconds,
        ok=len(lat),
        outcomes=dict(outcomes),
        per_s=len(lat) / wall,
        p50_ms=statistics.median(lat) if lat else None,
        p95_ms=lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else None,
        mean_ms=statistics.fmean(lat) if lat else None,
    )


def cpu_seconds(run_dir: Path) -> dict[str, float]:
    """CPU seconds so far of every process of the stack, and of this load generator."""
    out = {}
    for name, info in stack.running(run_dir).items():
        try:
            t = psutil.Process(info["pid"]).cpu_times()
            out[name] = t.user + t.system
        except psutil.Error:
            pass
    t = psutil.Process().cpu_times()
    out["this benchmark"] = t.user + t.system  # the load generator (and the drain's watcher)
    return out


def group(name: str) -> str:
    return "org nodes" if name.startswith("node-") else name


def measure(cfg: StackConfig, targets, ids, clients: int, seconds: float) -> dict:
    before, t0 = cpu_seconds(cfg.run_dir), time.monotonic()
    load = asyncio.run(closed_loop(targets, ids, clients, seconds))
    after, wall = cpu_seconds(cfg.run_dir), time.monotonic() - t0
    used: dict[str, float] = {}
    for name, t in after.items():
        used[group(name)] = used.get(group(name), 0.0) + t - before.get(name, t)
    per_lookup = {k: 1000 * v / max(load.ok, 1) for k, v in used.items() if v > 0}
    core_share = {k: v / wall for k, v in used.items() if v > 0}
    return {"load": load, "cpu_ms_per_lookup": per_lookup, "cores": core_share}


def show(label: str, r: dict, cores: int) -> None:
    print(f"  {label}: {r['load'].line()}")
    per, share = r["cpu_ms_per_lookup"], r["cores"]
    total = sum(per.values())
    for k in sorted(per, key=per.get, reverse=True):
        print(f"      {k:<16} {per[k]:6.2f} ms CPU per lookup  {share[k]:5.2f} of a core")
    print(
        f"      {'all':<16} {total:6.2f} ms CPU per lookup  {sum(share.values()):5.2f} cores "
        f"of {cores}: machine ceiling {1000 * cores / total:.0f}/s"
    )


# ---- the fallback: durable combiners draining a backlog ---------------------------------
async def _consumer_backlog(nc) -> int:
    """Shares on the combiners' consumer not yet handled (undelivered plus unacknowledged)."""
    info = await nc.jetstream().consumer_info("LOOKUPS", "combiner")
    return info.num_pending + info.num_ack_pending


async def _watch_drain(cfg: StackConfig, limit_s: float = 300) -> tuple[int, int, float]:
    """The backlog when called, what is left at the end, and the seconds it took to drain."""
    nc = await connect(cfg.nats_url, "bench")
    try:
        t0 = time.monotonic()
        first = now = await _consumer_backlog(nc)
        while now > 0 and time.monotonic() - t0 < limit_s:
            await asyncio.sleep(0.1)
            now = await _consumer_backlog(nc)
        return first, now, time.monotonic() - t0
    finally:
        await nc.close()


def drain(cfg: StackConfig, ids: list[str], combiners: int, lookups_s: float) -> dict:
    """Leave a backlog with the combiners stopped, start ``combiners`` of them, time the drain."""
    names = ["combiner"] + [f"combiner-{i}" for i in range(2, combiners + 1)]
    for name in stack.running(cfg.run_dir):
        if name.startswith("combiner"):
            stack.stop(cfg.run_dir, name)
    left = asyncio.run(closed_loop([(base_url(cfg), api_key(cfg))], ids, 8, lookups_s))
    procs = {
        n: stack.start_process(cfg.run_dir, n, stack.worker_argv(cfg, "combiner")) for n in names
    }
    stack.wait_ready(cfg, ["combiner"], {"combiner": procs["combiner"]})
    before = cpu_seconds(cfg.run_dir)
    start_backlog, now, wall = asyncio.run(_watch_drain(cfg))
    after = cpu_seconds(cfg.run_dir)
    handled = start_backlog - now
    used: dict[str, float] = {}
    for name, t in after.items():
        g = "combiners" if name.startswith("combiner") else group(name)
        used[g] = used.get(g, 0.0) + t - before.get(name, t)
    return {
        "combiners": combiners,
        "lookups": left.ok,
        "handled": handled,
        "seconds": wall,
        "shares_per_s": handled / wall,
        "cpu_ms_per_share": {k: 1000 * v / max(handled, 1) for k, v in used.items() if v > 0.01},
        "cores": {k: v / wall for k, v in used.items() if v > 0.01},
    }


def show_drain(r: dict) -> None:
    print(
        f"  {r['combiners']} combiner(s): {r['handled']} shares of {r['lookups']} lookups drained "
        f"in {r['seconds']:.2f} s: {r['shares_per_s']:.0f} shares/s"
    )
    per, share = r["cpu_ms_per_share"], r["cores"]
    for k in sorted(per, key=per.get, reverse=True):
        print(f"      {k:<16} {per[k]:6.2f} ms CPU per share  {share[k]:5.2f} of a core")
    print(
        f"      {'all':<16} {sum(per.values()):6.2f} ms CPU per share  {sum(share.values()):5.2f} cores"
    )


def best_ratio(own_ms: float, all_one_ms: float, all_two_ms: float, cores: int) -> float:
    """The most a second worker could add here: each run is held to the lower of its workers'
    own ceiling (a core each) and the machine's (every process's CPU per unit of work)."""
    one = min(1000 / own_ms, 1000 * cores / all_one_ms)
    two = min(2000 / own_ms, 1000 * cores / all_two_ms)
    return two / one


def fallback(seconds: float, cores: int) -> dict:
    print("fallback: chain-confirmed, 4 orgs, threshold 2; backlogs left by 8 clients")
    cfg = start(policy=CHAIN_CONFIRMED, transports_n=24)
    try:
        ids = transport_ids(24)
        one = drain(cfg, ids, 1, seconds)
        show_drain(one)
        two = drain(cfg, ids, 2, seconds)
        show_drain(two)
        ratio = two["shares_per_s"] / one["shares_per_s"]
        own = one["cpu_ms_per_share"]["combiners"]
        best = best_ratio(
            own, sum(one["cpu_ms_per_share"].values()), sum(two["cpu_ms_per_share"].values()), cores
        )
        print(
            f"  fallback: x{ratio:.2f} shares/s with two combiners on one durable consumer; one "
            f"combiner's own ceiling {1000 / own:.0f} shares/s ({own:.2f} ms CPU per share), at "
            f"most x{best:.2f} on {cores} idle cores with every process's CPU counted"
        )
        return {"one": one, "two": two, "ratio": ratio, "best_ratio": best}
    finally:
        stack.down(cfg.run_dir, say=lambda _m: None)


def gateways(clients: int, seconds: float, cores: int) -> dict:
    print(f"gateways: audit-after, 4 orgs, threshold 2, {clients} clients")
    cfg = start(policy=AUDIT_AFTER, transports_n=24)
    try:
        stack.stop(cfg.run_dir, "combiner")  # the fallback; idle when every lookup is answered
        ids = transport_ids(24)
        one_target = [(base_url(cfg), api_key(cfg))]
        one = measure(cfg, one_target, ids, clients, seconds)
        show("1 gateway ", one, cores)
        two_targets = [*one_target, second_gateway(cfg)]
        two = measure(cfg, two_targets, ids, clients, seconds)
        show("2 gateways", two, cores)
        ratio = two["load"].per_s / one["load"].per_s if one["load"].per_s else float("nan")
        gw1 = one["cpu_ms_per_lookup"]["gateway"]
        best = best_ratio(
            gw1,
            sum(one["cpu_ms_per_lookup"].values()),
            sum(two["cpu_ms_per_lookup"].values()),
            cores,
        )
        print(
            f"  throughput x{ratio:.2f} with two gateways; one gateway's own ceiling "
            f"{1000 / gw1:.0f}/s ({gw1:.2f} ms CPU per lookup), at most x{best:.2f} on {cores} "
            "idle cores with every process's CPU counted"
        )
        return {"one": one, "two": two, "ratio": ratio, "best_ratio": best}
    finally:
        stack.down(cfg.run_dir, say=lambda _m: None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument(
        "--paths", nargs="+", choices=["gateway", "combiner"], default=["gateway", "combiner"]
    )
    ap.add_argument(
        "--backlog-seconds", type=float, default=8.0, help="lookups that leave the backlog (s)"
    )
    args = ap.parse_args()
    cores = psutil.cpu_count() or 1
    print(f"{cores} cores, load average {psutil.getloadavg()[0]:.2f} at the start")
    out: dict = {"clients": args.clients, "cores": cores}
    if "gateway" in args.paths:
        out["gateways"] = gateways(args.clients, args.seconds, cores)
    if "combiner" in args.paths:
        out["fallback"] = fallback(args.backlog_seconds, cores)
    print(f"  load average {psutil.getloadavg()[0]:.2f} at the end")
    save("combiners", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
