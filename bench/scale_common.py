"""What the scale-out benchmarks share: a fresh local stack, closed-loop load, percentiles.

Timings are printed and written as JSON for bench/plots.py, never asserted.
"""

from __future__ import annotations

import asyncio
import json
import platform
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from shardline import stack, transports
from shardline.config import CHAIN_CONFIRMED, StackConfig
from shardline.core.cargo import read_transports, sample_transports_path
from shardline.lookup_client import api_key, base_url, lookup

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Load:
    """The outcome of ``clients`` responders looking up for ``seconds``."""

    clients: int
    seconds: float
    ok: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    per_s: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    mean_ms: float | None = None

    def line(self) -> str:
        return (
            f"{self.clients:>3} clients {self.seconds:4.0f} s: {self.per_s:6.1f} ok/s  "
            f"p50 {fmt(self.p50_ms)} ms  p95 {fmt(self.p95_ms)} ms  outcomes {self.outcomes}"
        )


def fmt(x: float | None) -> str:
    return "   -  " if x is None else f"{x:6.1f}"


def machine() -> dict[str, Any]:
    return {
        "cpus": psutil.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1m": round(psutil.getloadavg()[0], 2),
        "at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def start(
    *,
    orgs: int = 4,
    threshold: int = 2,
    policy: str = CHAIN_CONFIRMED,
    transports_n: int = 24,
    deadline_s: float = 10.0,
    block_time: float | None = None,
    say=print,
) -> StackConfig:
    run_dir = Path(tempfile.mkdtemp(prefix="shardline-bench-"))
    t = time.monotonic()
    cfg = stack.up(
        run_dir,
        orgs=orgs,
        threshold=threshold,
        policy=policy,
        ports=stack.Ports.free(),
        deadline_s=deadline_s,
        block_time=block_time,
        say=lambda _m: None,
    )
    try:
        sheets = read_transports(sample_transports_path())[:transports_n]
        # the sample transports belong to org1..org4: with fewer orgs, org1 registers them all
        company = None if orgs >= 4 else "org1"
        asyncio.run(transports.register(cfg, sheets, company=company))
        asyncio.run(transports.wait_stored(cfg))
    except BaseException:
        stack.down(run_dir, say=lambda _m: None)
        raise
    say(
        f"  stack up: {orgs} orgs, threshold {threshold}, {policy}, {len(sheets)} transports "
        f"({time.monotonic() - t:.1f} s)"
    )
    return cfg


def transport_ids(n: int) -> list[str]:
    return [s.transport_id for s in read_transports(sample_transports_path())[:n]]


async def closed_loop(
    cfg: StackConfig, ids: list[str], clients: int, seconds: float, warmup_s: float = 1.0
) -> Load:
    """``clients`` responders, each looking up again as soon as the last answer came."""
    key = api_key(cfg)
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    stop_at = 0.0
    counting = False

    async def one(client: httpx.AsyncClient, i: int) -> None:
        n = i
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                out = await lookup(client, ids[n % len(ids)], key, wait_s=30)
                status = str(out.status)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            n += clients
            if counting and time.monotonic() < stop_at:
                outcomes[status] += 1
                if status == "200":
                    latencies.append(1000 * (time.perf_counter() - t0))

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(
        base_url=base_url(cfg), timeout=60, limits=limits, trust_env=False
    ) as client:
        stop_at = time.monotonic() + warmup_s + seconds
        tasks = [asyncio.create_task(one(client, i)) for i in range(clients)]
        await asyncio.sleep(warmup_s)
        counting = True
        t0 = time.monotonic()
        await asyncio.gather(*tasks)
        wall = max(time.monotonic() - t0, 1e-9)
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


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2, default=_plain))
    return path


def _plain(o: Any) -> Any:
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    raise TypeError(type(o))
