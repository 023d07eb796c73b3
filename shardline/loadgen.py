"""Steady lookups at a fixed rate, and what the bus says about them afterwards.

Used by the fault tests (tests/faults), the fault table (bench/faults.py) and the soak
(bench/soak.py): each lookup is a real responder's request through the gateway's HTTP API;
``served_twice`` reads the LOOKUPS stream as the operator to count, per lookup, the results the
combiner published and the shares each org published on a chain event, and adds the shares the
org nodes sent straight back to the gateway's intents, which a tap (the operator, subscribed to
the gateway's reply subjects while the load runs) counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from shardline import gateways
from shardline.config import CHAIN_CONFIRMED, StackConfig
from shardline.core.cargo import CargoSheet
from shardline.lookup_client import Gateways, api_key, lookup_light


def start_sample_stack(
    run_dir,
    sheets: Sequence[CargoSheet],
    *,
    deadline_s: float,
    policy: str = CHAIN_CONFIRMED,
    say=lambda _m: None,
    gateway_count: int = 1,
    database_url: str | None = None,
) -> StackConfig:
    """A local stack of 4 org nodes at threshold 2 (and ``gateway_count`` gateways) on free
    ports, ``sheets`` registered and every share stored; the stack is taken down again if that
    fails. ``database_url``: the orgs' databases, a ``{org}`` template (default: SQLite files)."""
    from shardline import stack, transports

    cfg = stack.up(
        run_dir,
        orgs=4,
        threshold=2,
        policy=policy,
        ports=stack.Ports.free(),
        deadline_s=deadline_s,
        say=say,
        gateway_count=gateway_count,
        database_url=database_url,
    )
    try:
        asyncio.run(transports.register(cfg, list(sheets)))
        left = asyncio.run(transports.wait_stored(cfg))
        if any(v != 0 for v in left.values()):
            raise RuntimeError(f"shares not stored by every org node: {left}")
    except BaseException:
        stack.down(run_dir, say=lambda _m: None)
        raise
    return cfg


@dataclass
class Shot:
    transport_id: str
    started: float  # time.time()
    finished: float = 0.0
    status: int = 0
    # asked again: 503s at the gateway's limit (after Retry-After), and gateways found down
    retries: int = 0
    failovers: int = 0  # of the retries: gateways found down, the lookup asked of the next
    gateway: str = ""  # the base URL that answered
    guid: str = ""
    ok: bool = False
    error: str = ""
    gateway_ms: float | None = None  # accepted -> sheet, as the gateway timed it

    @property
    def latency(self) -> float:
        return self.finished - self.started


@dataclass
class Load:
    """Lookups started at ``rate`` per second until stopped (or ``duration_s`` passed)."""

    cfg: StackConfig
    transport_ids: Sequence[str]
    expected: dict[str, dict]  # transport id -> the sheet as JSON
    rate: float = 5.0
    duration_s: float | None = None
    wait_s: float = 30.0
    # the gateways' base URLs, tried in turn when one is down (None: every gateway of the stack)
    gateway_urls: Sequence[str] | None = None
    shots: list[Shot] = field(default_factory=list)
    # (guid, org) -> shares sent back to the gateway's intents, as the tap saw them
    replies: Counter = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    async def _tap(self):
        import nats

        from shardline.bus import subjects

        # every gateway's reply subject: lookup.reply.<user>.<inbox>.<guid>
        prefix = subjects.LOOKUP_REPLY.split(".{")[0] + "." + self.cfg.gateway.id

        async def seen(msg) -> None:
            if msg.reply:  # a stream's delivery to a consumer (it asks for an ack), not a reply
                return
            with contextlib.suppress(Exception):
                env = json.loads(msg.data)
                if env.get("type") == "lookup.share":
                    self.replies[(env["body"]["guid"], env["sender"])] += 1

        async def reconnecting(_exc: Exception) -> None:
            """A bus restart is one of the faults under test: the tap reconnects by itself,
            and its errors meanwhile are not the stack's (nats-py would print each one)."""

        nc = await nats.connect(self.cfg.nats_url, error_cb=reconnecting)
        await nc.subscribe(f"{prefix}.>", cb=seen)
        await nc.flush()
        return nc

    async def _one(
        self, session: aiohttp.ClientSession, base: Gateways, key: str, tid: str
    ) -> None:
        """One responder's lookup: ``POST`` with ``Prefer: wait`` (as ``lookup_client.lookup``),
        and, as a phone would, again after ``Retry-After`` when the gateway is at its limit, and
        at once of the next gateway when the one asked is down."""
        shot = Shot(tid, time.time())
        self.shots.append(shot)
        try:
            out, shot.retries = await lookup_light(
                session, base, tid, key, wait_s=self.wait_s, retry_busy_s=self.wait_s
            )
            status, body = out.status, out.body
            shot.failovers, shot.gateway = out.failovers, out.gateway
            shot.status = status
            shot.guid = body.get("guid", "")
            shot.ok = status == 200 and body.get("sheet") == self.expected.get(tid)
            shot.gateway_ms = body.get("elapsed_ms")
            if not shot.ok:
                shot.error = json.dumps(body)[:300]
        except Exception as exc:  # a lookup that failed is counted, never hidden
            shot.error = repr(exc)
        shot.finished = time.time()

    async def run(self) -> None:
        tap = await self._tap()
        try:
            await self._run()
        finally:
            await asyncio.sleep(0.5)  # the last replies reach the tap
            await tap.close()

    async def _run(self) -> None:
        key = api_key(self.cfg)
        # one preference for the whole load: the gateway that last answered is asked first
        base = Gateways(self.gateway_urls or gateways.urls(self.cfg))
        # aiohttp: the generator shares the machine with the stack, and costs it a fraction of
        # what httpx would per request
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200),
            timeout=aiohttp.ClientTimeout(total=self.wait_s + 30),
        ) as session:
            tasks: set[asyncio.Task] = set()
            t0 = time.monotonic()
            n = 0
            while not self._stop.is_set():
                if self.duration_s is not None and time.monotonic() - t0 >= self.duration_s:
                    break
                tid = self.transport_ids[n % len(self.transport_ids)]
                task = asyncio.create_task(self._one(session, base, key, tid))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
                # a fixed schedule: a slow lookup does not delay the next one
                await asyncio.sleep(max(0.0, t0 + n / self.rate - time.monotonic()))
            if tasks:
                await asyncio.wait(tasks)

    def start(self) -> Load:
        self._thread = threading.Thread(target=lambda: asyncio.run(self.run()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Shot]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.shots


@dataclass
class Twice:
    results: dict[str, int]  # guid -> results published, where more than one
    shares: dict[tuple[str, str], int]  # (guid, org) -> shares published, where more than one


async def served_twice(cfg: StackConfig, guids: set[str], replies: Counter | None = None) -> Twice:
    """Count the results and shares on the bus for these lookups (as the operator); ``replies``:
    the shares a ``Load``'s tap saw sent back to the gateway's intents."""
    import nats

    nc = await nats.connect(cfg.nats_url)
    js = nc.jetstream()
    results: Counter[str] = Counter()
    shares: Counter[tuple[str, str]] = Counter()
    for subject in ("lookup.result.*", "lookup.share.*"):
        sub = await js.subscribe(subject, ordered_consumer=True)
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except Exception:
                break
            guid = msg.subject.rsplit(".", 1)[1]
            if guid not in guids:
                continue
            if subject.startswith("lookup.result"):
                results[guid] += 1
            else:
                shares[(guid, json.loads(msg.data)["sender"])] += 1
        await sub.unsubscribe()
    await nc.close()
    for (guid, org), n in (replies or {}).items():
        if guid in guids:
            shares[(guid, org)] += n
    return Twice(
        {g: n for g, n in results.items() if n > 1}, {k: n for k, n in shares.items() if n > 1}
    )


def lost(shots: list[Shot]) -> list[Shot]:
    return [s for s in shots if not s.ok]


def recovery_s(shots: list[Shot], fault_at: float, slow_s: float) -> float:
    """Seconds from the fault until lookups ran as before: the last finish of a lookup in flight
    at the fault or started after it that failed or took longer than ``slow_s`` (0: none)."""
    slow = [
        s.finished - fault_at
        for s in shots
        if s.finished >= fault_at and (not s.ok or s.latency > slow_s)
    ]
    return max([0.0, *slow])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
