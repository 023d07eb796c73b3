"""One picture of the stack, for `shardline monitor` and the gateway's `/ops` page.

- workers: every worker's answer to ``$SRV.STATS`` (the NATS service API): up, messages handled,
  errors, retries, dead letters, average time; a worker the configuration expects that does not
  answer within the wait is down;
- processes: the local stack's processes (pid files), when the stack was started here;
- streams: JetStream streams and each durable consumer's pending, redelivered, ack pending and
  ack floor;
- dead letters: counts per original subject with the latest reason;
- chain: the head, and each org's intake position and lag in blocks (from its metrics port);
- redis: memory in use; lookups: the gateway's ``shardline_lookups_total`` by outcome.

Every part is read with a short timeout and says ``error`` instead of failing the whole picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import httpx
from nats.aio.client import Client

from shardline.config import StackConfig
from shardline.ops import dlq, metrics

ORG_WORKER_KINDS = ("intake", "share-node", "psi-node")
# How long a worker has to answer $SRV.STATS before it counts as down: the wait ends as soon as
# every expected worker answered, so it is paid only when one is missing (or on a loaded host).
SERVICE_WAIT_S = 1.5
SCRAPE_TIMEOUT_S = 2.0
OPTIONAL_WORKERS = (
    ("records_registry", "records-proxy"),
    ("list_agreements", "list-node"),
    ("market", "analytics-server"),
)


def expected_workers(cfg: StackConfig) -> list[str]:
    """The bus workers this configuration runs, as ``<kind>.<instance>``."""
    kinds = list(ORG_WORKER_KINDS)
    deployed = cfg.deployment or {}
    # the workers an org node adds when the deployment has their contract (runtime.py)
    for contract, kind in OPTIONAL_WORKERS:
        if deployed.get(contract):
            kinds.append(kind)
    names = [f"{k}.{o.id}" for o in cfg.orgs for k in kinds]
    return [*names, "combiner.main"]


async def service_stats(nc: Client, wait_s: float = SERVICE_WAIT_S, want: int = 0) -> list[dict]:
    """Every ``$SRV.STATS`` reply that arrives within ``wait_s`` (or until ``want`` arrived)."""
    inbox = nc.new_inbox()
    replies: list[dict] = []
    enough = asyncio.Event()

    async def cb(msg) -> None:
        with contextlib.suppress(ValueError):
            replies.append(json.loads(msg.data))
        if want and len(replies) >= want:
            enough.set()

    sub = await nc.subscribe(inbox, cb=cb)
    try:
        await nc.publish("$SRV.STATS", b"", reply=inbox)
        with contextlib.suppress(TimeoutError):  # timeout, not wait_for: a cancel gets through
            async with asyncio.timeout(wait_s):
                await enough.wait()
    finally:
        await sub.unsubscribe()
    return replies


def worker_rows(cfg: StackConfig, replies: list[dict]) -> list[dict]:
    seen: dict[str, dict] = {}
    for r in replies:
        name = str(r.get("name", ""))
        if not name.startswith("shardline-"):
            continue
        instance = (r.get("metadata") or {}).get("instance", "")
        kind = name.removeprefix("shardline-")
        data: dict = {}
        for ep in r.get("endpoints") or []:
            if isinstance(ep.get("data"), dict):
                data = ep["data"]
        handled = sum(int(data.get(k, 0)) for k in ("ok", "retry", "dead_letter", "error"))
        seen[f"{kind}.{instance}"] = {
            "name": f"{kind}.{instance}",
            "kind": kind,
            "instance": instance,
            "up": True,
            "started": r.get("started"),
            "handled": handled,
            "ok": int(data.get("ok", 0)),
            "errors": int(data.get("error", 0)) + int(data.get("dead_letter", 0)),
            "retries": int(data.get("retry", 0)),
            "dead_letters": int(data.get("dead_letter", 0)),
            "average_ms": data.get("average_ms", 0.0),
        }
    rows = []
    for name in expected_workers(cfg):
        kind, _, instance = name.partition(".")
        rows.append(
            seen.pop(name, None) or {"name": name, "kind": kind, "instance": instance, "up": False}
        )
    rows.extend(seen[n] for n in sorted(seen))  # answering, but not in this configuration
    return rows


async def streams(nc: Client) -> list[dict]:
    js = nc.jetstream(timeout=2)
    out = []
    for s in await js.streams_info():
        consumers = []
        for c in await js.consumers_info(s.config.name):
            consumers.append(
                {
                    "name": c.name,
                    "pending": c.num_pending,
                    "ack_pending": c.num_ack_pending,
                    "redelivered": c.num_redelivered,
                    "ack_floor": c.ack_floor.stream_seq if c.ack_floor else 0,
                    "delivered": c.delivered.stream_seq if c.delivered else 0,
                }
            )
        out.append(
            {
                "name": s.config.name,
                "subjects": s.config.subjects,
                "messages": s.state.messages,
                "bytes": s.state.bytes,
                "first_seq": s.state.first_seq,
                "last_seq": s.state.last_seq,
                "consumers": sorted(consumers, key=lambda c: c["name"]),
            }
        )
    return sorted(out, key=lambda s: s["name"])


async def dead_letters(nc: Client, latest: int = 20) -> dict:
    js = nc.jetstream(timeout=2)
    per_subject = await dlq.counts(js)
    recent = await dlq.listing(js, limit=latest)
    last_reason: dict[str, dict] = {}
    for d in recent:
        last_reason[d.subject] = {"reason": d.reason, "worker": d.worker, "at": d.at, "seq": d.seq}
    return {
        "total": sum(per_subject.values()),
        "subjects": [
            {"subject": s, "count": n, **last_reason.get(s, {})} for s, n in per_subject.items()
        ],
        "latest": [d.to_dict() for d in reversed(recent)],
    }


async def chain(cfg: StackConfig, scraped: dict[str, dict | None]) -> dict:
    async with httpx.AsyncClient(timeout=1.0) as client:
        resp = await client.post(
            cfg.chain_rpc, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"}
        )
        head = int(resp.json()["result"], 16)
    intake = []
    for o in cfg.orgs:
        samples = scraped.get(f"node-{o.id}")
        block = samples.get("shardline_chain_intake_block") if samples else None
        intake.append(
            {
                "org": o.id,
                "up": samples is not None,
                "block": int(block) if block is not None else None,
                "lag_blocks": max(0, head - int(block)) if block is not None else None,
            }
        )
    return {"head": head, "intake": intake}


async def redis_memory(cfg: StackConfig, redis=None) -> dict:
    from redis.asyncio import Redis

    client = redis or Redis.from_url(cfg.redis_url, socket_timeout=1.0)
    try:
        info = await client.info("memory")
    finally:
        if redis is None:
            await client.aclose()
    return {
        "used_memory": info.get("used_memory"),
        "used_memory_human": info.get("used_memory_human"),
        "used_memory_peak_human": info.get("used_memory_peak_human"),
        "maxmemory": info.get("maxmemory"),
    }


async def scrape_all(cfg: StackConfig) -> dict[str, dict | None]:
    urls = metrics.endpoints(cfg)

    async def one(url: str) -> dict | None:
        try:
            return await asyncio.to_thread(metrics.scrape, url, SCRAPE_TIMEOUT_S)
        except Exception:
            return None

    values = await asyncio.gather(*(one(u) for u in urls.values()))
    return dict(zip(urls, values, strict=True))


def lookups(samples: dict | None) -> dict[str, int] | None:
    if samples is None:
        return None
    prefix = 'shardline_lookups_total{outcome="'
    return {
        k.removeprefix(prefix).removesuffix('"}'): int(v)
        for k, v in sorted(samples.items())
        if k.startswith(prefix)
    }


def processes(cfg: StackConfig) -> list[dict] | None:
    from shardline import stack

    if not stack.pid_dir(cfg.run_dir).exists():
        return None
    rows = [
        {"name": r["name"], "pid": r["pid"], "running": r["running"]}
        for r in stack.status(cfg.run_dir)
    ]
    started = {r["name"] for r in rows}  # a stopped worker has no pid file: still expected
    rows += [
        {"name": n, "pid": None, "running": False}
        for n in stack.worker_names(cfg)
        if n not in started
    ]
    return rows


async def _part(coro) -> Any:
    try:
        return await coro
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


async def collect(cfg: StackConfig, nc: Client | None = None, redis=None) -> dict[str, Any]:
    """The whole picture. ``nc``/``redis``: connections to reuse (the gateway's), else opened."""
    from shardline.bus.connect import connect

    own = nc is None
    if own:
        nc = await connect(cfg.nats_url, "monitor", patient=False)
    try:
        expected = len(expected_workers(cfg))
        replies, scraped = await asyncio.gather(
            _part(service_stats(nc, want=expected)), scrape_all(cfg)
        )
        endpoints = metrics.endpoints(cfg)
        snapshot = {
            "at": time.time(),
            "workers": worker_rows(cfg, replies) if isinstance(replies, list) else replies,
            "processes": processes(cfg),
            "metrics": [
                {"process": n, "url": u, "up": scraped.get(n) is not None}
                for n, u in endpoints.items()
            ],
            "lookups": lookups(scraped.get("gateway")),
        }
        (
            snapshot["streams"],
            snapshot["dead_letters"],
            snapshot["chain"],
            snapshot["redis"],
        ) = await asyncio.gather(
            _part(streams(nc)),
            _part(dead_letters(nc)),
            _part(chain(cfg, scraped)),
            _part(redis_memory(cfg, redis)),
        )
        workers = snapshot["workers"]
        if isinstance(workers, list):
            snapshot["healthy"] = all(w["up"] for w in workers)
        else:
            snapshot["healthy"] = False
        return snapshot
    finally:
        if own:
            await nc.close()
