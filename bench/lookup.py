"""Emergency lookup: latency and throughput, as ratios against baselines measured in the same run.

For each org policy (chain-confirmed, audit-after) it starts a fresh local stack on free ports in a
temporary directory, registers a few sample transports, and measures:

- baselines: a bare anvil transaction round trip (0 wei from the dev admin to itself, signed and
  sent by plain JSON-RPC as ``Chain.send_call`` does, the receipt polled for at once with
  ``Chain.mined``), a transport read (``registry.get_transport``, which the gateway does once per
  transport while its log subscription is live), a bare NATS request/reply against an echo
  responder, and the gateway's ``GET /healthz`` (HTTP and FastAPI doing no work);
- sequential lookups (one ``POST /lookups`` with ``Prefer: wait``, as ``lookup_client.lookup``
  sends it), one after another;
- where the time goes: a few lookups followed over SSE, with the gateway's ``at_ms`` per event;
- sustained throughput: ``--concurrency`` clients for ``--duration`` seconds, with errors by status,
  lost lookups (202 but no 200 result) and the CPU seconds each process of the stack used.

The load generator shares the machine with the stack, so its own CPU is taken from what the stack
could use: the timed requests go through aiohttp, which costs a fraction of httpx per request (the
SSE phase keeps httpx). Machines are noisy, so the targets are ratios against the baselines of the same run. Timings are
reported, never asserted: the exit code is 0 unless something crashed.

    .venv/bin/python bench/lookup.py --duration 10 --concurrency 32 --samples 200 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import nats
import psutil
import uvloop
from eth_account import Account

from shardline import stack, transports
from shardline.config import AUDIT_AFTER, CHAIN_CONFIRMED, StackConfig
from shardline.contracts import registry
from shardline.contracts.artifacts import event_topic
from shardline.contracts.client import Chain
from shardline.contracts.deploy import Deployment
from shardline.contracts.txsign import sign_eip1559
from shardline.core.cargo import read_transports, sample_transports_path
from shardline.core.ids import transport_key
from shardline.core.keys import ParticipantKeys
from shardline.lookup_client import LookupOutcome, api_key, base_url, lookup, lookup_light

POLICIES = (CHAIN_CONFIRMED, AUDIT_AFTER)
CHAIN_RATIO_TARGET = 1.5  # chain-confirmed lookup p50 / bare anvil tx p50
NATS_RATIO_TARGET = 10.0  # audit-after lookup p50 / bare NATS request p50
RATE_TARGET = 200.0  # audit-after OK lookups per second, none lost
NATS_PAYLOAD_BYTES = 256
TRANSFER_GAS = 21_000


# ---- statistics -----------------------------------------------------------------------------
@dataclass
class Stats:
    """Milliseconds: nearest-rank percentiles of one series."""

    n: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    mean: float | None = None
    min: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, ms: list[float]) -> Stats:
        if not ms:
            return cls()
        xs = sorted(ms)

        def pct(p: float) -> float:
            return round(xs[max(0, math.ceil(p / 100 * len(xs)) - 1)], 3)

        return cls(
            n=len(xs),
            p50=pct(50),
            p95=pct(95),
            p99=pct(99),
            mean=round(sum(xs) / len(xs), 3),
            min=round(xs[0], 3),
            max=round(xs[-1], 3),
        )


def median(xs: list[float]) -> float | None:
    return Stats.of(xs).p50


def ms_since(t0: float) -> float:
    return 1000 * (time.perf_counter() - t0)


# ---- baselines --------------------------------------------------------------------------------
@dataclass
class Baselines:
    chain_tx: Stats
    chain_tx_sign_p50: float | None  # signing alone, part of chain_tx
    eth_call: Stats
    nats_request: Stats
    http_healthz: Stats  # the gateway's GET /healthz: HTTP + FastAPI, no work


async def chain_tx_round_trips(
    rpc_url: str, chain_id: int, n: int, warmup: int = 5
) -> tuple[Stats, Stats]:
    """A 0-wei transfer from the dev admin to itself: sign, eth_sendRawTransaction, receipt.

    The fastest way this code base has to do it, and the way the gateway sends its Gatekeeper
    transaction (``Chain.send_call``: fixed gas, cached fees, a locally counted nonce, plain
    JSON-RPC), with the receipt polled for from the moment the node took the transaction
    (``Chain.mined``). Signing alone is timed too. It changes nothing but the admin's nonce.
    """
    admin = Account.from_key(stack.ANVIL_ADMIN_KEY)
    async with await Chain.connect(rpc_url, expected_chain_id=chain_id) as chain:
        max_fee, priority = await chain._current_fees()
        total, signing = [], []
        for i in range(warmup + n):
            t0 = time.perf_counter()
            tx_hash = await chain.send_call(admin, admin.address, b"", gas=TRANSFER_GAS)
            await chain.mined(tx_hash)
            elapsed = ms_since(t0)
            t1 = time.perf_counter()
            sign_eip1559(
                admin.key,
                {
                    "to": admin.address,
                    "gas": TRANSFER_GAS,
                    "maxFeePerGas": max_fee,
                    "maxPriorityFeePerGas": priority,
                    "chainId": chain.chain_id,
                    "nonce": i,
                },
            )
            t_signed = ms_since(t1)
            if i >= warmup:
                total.append(elapsed)
                signing.append(t_signed)
    return Stats.of(total), Stats.of(signing)


async def eth_call_round_trips(
    cfg: StackConfig, transport_ids: list[str], n: int, warmup: int = 5
) -> Stats:
    """``registry.get_transport``: the read the gateway makes first for every lookup."""
    dep = Deployment.from_dict(cfg.deployment or {})
    keys = [transport_key(t) for t in transport_ids]
    async with await Chain.connect(cfg.chain_rpc, expected_chain_id=cfg.chain_id) as chain:
        out = []
        for i in range(warmup + n):
            t0 = time.perf_counter()
            await registry.get_transport(chain, dep, keys[i % len(keys)])
            if i >= warmup:
                out.append(ms_since(t0))
    return Stats.of(out)


async def nats_round_trips(nats_url: str, n: int, warmup: int = 50) -> Stats:
    """Core NATS request/reply to an echo responder on its own connection."""
    responder = await nats.connect(nats_url, name="bench-echo")
    requester = await nats.connect(nats_url, name="bench-requester")
    try:
        subject = f"bench.echo.{secrets.token_hex(4)}"

        async def echo(msg) -> None:
            await msg.respond(msg.data)

        await responder.subscribe(subject, cb=echo)
        await responder.flush()
        for _ in range(100):  # until the server routes the subject to the responder
            try:
                await requester.request(subject, b"", timeout=2)
                break
            except nats.errors.NoRespondersError:
                await asyncio.sleep(0.01)
        payload = os.urandom(NATS_PAYLOAD_BYTES)
        out = []
        for i in range(warmup + n):
            t0 = time.perf_counter()
            await requester.request(subject, payload, timeout=2)
            if i >= warmup:
                out.append(ms_since(t0))
    finally:
        await requester.close()
        await responder.close()
    return Stats.of(out)


class Http:
    """The timed client: one aiohttp session, kept-alive connections, a lookup as one POST with
    ``Prefer: wait`` (what ``lookup_client.lookup`` sends), the JSON body read in full."""

    def __init__(self, cfg: StackConfig, concurrency: int) -> None:
        self.base = base_url(cfg)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency, force_close=False),
            timeout=aiohttp.ClientTimeout(total=30.0),
        )

    async def __aenter__(self) -> Http:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def healthz(self) -> None:
        async with self.session.get(f"{self.base}/healthz") as r:
            r.raise_for_status()
            await r.read()

    async def lookup(self, transport_id: str, key: str, wait_s: float = 5.0) -> LookupOutcome:
        out, _retries = await lookup_light(
            self.session, self.base, transport_id, key, wait_s=wait_s
        )
        return out


async def http_round_trips(client: Http, n: int, warmup: int = 20) -> Stats:
    out = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        await client.healthz()
        if i >= warmup:
            out.append(ms_since(t0))
    return Stats.of(out)


# ---- lookups ----------------------------------------------------------------------------------
def http_client(cfg: StackConfig, concurrency: int, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url(cfg),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        timeout=httpx.Timeout(30.0),
        **kwargs,
    )


@dataclass
class Sequential:
    lookups: Stats  # client: POST + GET, OK lookups only
    gateway_elapsed: Stats  # the gateway's own accepted -> result (the body's elapsed_ms)
    before_accept: Stats  # client total minus gateway elapsed: HTTP, API key, intent published
    statuses: dict[str, int]


async def sequential(
    client: Http, key: str, ids: list[str], n: int, rng: random.Random
) -> Sequential:
    totals, gateway, before = [], [], []
    statuses: Counter[str] = Counter()
    for _ in range(n):
        t0 = time.perf_counter()
        out = await client.lookup(rng.choice(ids), key)
        elapsed = ms_since(t0)
        statuses[str(out.status)] += 1
        if out.ok:
            totals.append(elapsed)
            gw = float(out.body.get("elapsed_ms", 0.0))
            gateway.append(gw)
            before.append(elapsed - gw)
    return Sequential(Stats.of(totals), Stats.of(gateway), Stats.of(before), dict(statuses))


@dataclass
class Phases:
    """Medians, in ms. ``post`` and ``client_total`` are timed by the client from its POST; the
    others are the gateway's ``at_ms``, counted from when it took the lookup on (after the API
    key check, the intent and the Redis write), so they start a little after the POST was sent."""

    n: int
    post: float | None
    accepted: float | None
    first_share: float | None
    threshold_share: float | None
    on_chain: float | None
    result: float | None
    client_total: float | None
    shares_before_chain: int  # lookups whose t-th share reached the gateway before its chain log


async def settled_events(
    client: httpx.AsyncClient, out: LookupOutcome, key: str, within_s: float = 2.0
) -> list[dict[str, Any]]:
    events = out.events
    deadline = time.perf_counter() + within_s
    while not any(ev["event"] in ("on_chain", "chain_failed") for ev in events):
        if time.perf_counter() > deadline:
            break
        await asyncio.sleep(0.02)
        events = []
        headers = {"Authorization": f"Bearer {key}"}
        async with client.stream(
            "GET", f"/lookups/{out.body['guid']}/events", headers=headers
        ) as r:
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:].strip()))
    return events


async def phases(
    cfg: StackConfig, key: str, ids: list[str], n: int, rng: random.Random, threshold: int
) -> Phases:
    post_ms: list[float] = []

    async def on_request(request: httpx.Request) -> None:
        request.extensions["bench_t0"] = time.perf_counter()

    async def on_response(response: httpx.Response) -> None:
        if response.request.method == "POST":
            post_ms.append(ms_since(response.request.extensions["bench_t0"]))

    cols: dict[str, list[float]] = {
        k: [] for k in ("accepted", "first_share", "threshold_share", "on_chain", "result", "total")
    }
    before_chain = 0
    hooks = {"request": [on_request], "response": [on_response]}
    async with http_client(cfg, 4, event_hooks=hooks) as client:
        for _ in range(n):
            t0 = time.perf_counter()
            out = await lookup(client, rng.choice(ids), key, on_event=lambda _ev: None)
            total = ms_since(t0)
            if not out.ok:
                continue
            # The stream ends at the result; the chain log may come later, so read the
            # (finished) stream again until it holds on_chain too.
            events = await settled_events(client, out, key)
            shares = [ev["at_ms"] for ev in events if ev["event"] == "share"]
            first = {ev["event"]: ev["at_ms"] for ev in reversed(events)}
            on_chain = first.get("on_chain")
            cols["total"].append(total)
            for name, value in (
                ("accepted", first.get("accepted")),
                ("first_share", shares[0] if shares else None),
                ("threshold_share", shares[threshold - 1] if len(shares) >= threshold else None),
                ("on_chain", on_chain),
                ("result", first.get("result")),
            ):
                if value is not None:
                    cols[name].append(value)
            if (
                on_chain is not None
                and len(shares) >= threshold
                and shares[threshold - 1] < on_chain
            ):
                before_chain += 1
    return Phases(
        n=len(cols["total"]),
        post=median(post_ms),
        accepted=median(cols["accepted"]),
        first_share=median(cols["first_share"]),
        threshold_share=median(cols["threshold_share"]),
        on_chain=median(cols["on_chain"]),
        result=median(cols["result"]),
        client_total=median(cols["total"]),
        shares_before_chain=before_chain,
    )


@dataclass
class Sustained:
    concurrency: int
    duration_s: float
    ok: int
    ok_per_s: float  # OK lookups that finished inside the window, per second
    accepted: int  # lookups the gateway took on (given a guid: 202, or an outcome with Prefer)
    lost: int  # accepted but no 200 result
    errors: dict[str, int]  # by status (POST or GET) or exception name
    latency: Stats  # OK lookups, under load
    drain_s: float  # how long the in-flight lookups took to finish after the window
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per process in the window
    cpu_busy_pct: float | None = None  # whole machine, all cores
    # The audit trail on chain: the responder's LookupRequested events and its transactions.
    accepted_in_window: int = 0
    on_chain_in_window: int = 0  # LookupRequested events mined inside the window
    chain_txs_in_window: int = 0  # Gatekeeper transactions mined inside the window (batches)
    chain_catch_up_s: float | None = None  # after the window, until every accepted one is on chain


class OnChain:
    """The responder's lookups recorded on chain (LookupRequested events) and its transactions."""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain, self.address = chain, address
        self.topic = event_topic("Gatekeeper", "LookupRequested")
        self.requester = "0x" + "00" * 12 + address[2:].lower()

    async def lookups(self, from_block: int) -> int:
        found = await self.chain.rpc.call(
            "eth_getLogs",
            [{"fromBlock": hex(from_block), "topics": [self.topic, None, None, self.requester]}],
        )
        return len(found)

    async def block(self) -> int:
        return int(await self.chain.rpc.call("eth_blockNumber", []), 16)

    async def txs(self) -> int:
        return int(
            await self.chain.rpc.call("eth_getTransactionCount", [self.address, "latest"]), 16
        )


def cpu_snapshot(run_dir: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    procs = {name: info["pid"] for name, info in stack.running(run_dir).items()}
    procs["bench client"] = os.getpid()
    for name, pid in procs.items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system
        except psutil.Error:
            pass
    return out


async def sustained(
    cfg: StackConfig,
    key: str,
    ids: list[str],
    concurrency: int,
    duration: float,
    seed: int,
    on_chain: OnChain,
    catch_up_within_s: float = 15.0,
) -> Sustained:
    accepted = 0
    finished: list[tuple[float, str, float]] = []  # (end, status, ms)
    async with Http(cfg, concurrency) as client:
        # Open the connections before the clock starts.
        await asyncio.gather(*(client.healthz() for _ in range(concurrency)))
        await asyncio.sleep(1.0)  # earlier lookups' requests settle on chain
        block0, txs0 = await on_chain.block() + 1, await on_chain.txs()
        cpu0 = cpu_snapshot(cfg.run_dir)
        psutil.cpu_percent(None)
        stop_at = time.perf_counter() + duration

        async def one_client(i: int) -> None:
            rng = random.Random(seed * 1000 + i)
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    out = await client.lookup(rng.choice(ids), key)
                    status = str(out.status)
                    if "guid" in out.body:
                        nonlocal accepted
                        accepted += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status = type(exc).__name__
                finished.append((time.perf_counter(), status, ms_since(t0)))

        tasks = [asyncio.create_task(one_client(i)) for i in range(concurrency)]
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        busy = psutil.cpu_percent(None)
        cpu1 = cpu_snapshot(cfg.run_dir)
        accepted_in_window = accepted
        on_chain_in_window = await on_chain.lookups(block0)
        txs_in_window = await on_chain.txs() - txs0
        await asyncio.gather(*tasks)
        drain = time.perf_counter() - stop_at
    catch_up: float | None = None
    while time.perf_counter() - stop_at < duration + catch_up_within_s:
        if await on_chain.lookups(block0) >= accepted:
            catch_up = round(time.perf_counter() - stop_at, 2)
            break
        await asyncio.sleep(0.1)
    statuses = Counter(s for _, s, _ in finished)
    ok = statuses.pop("200", 0)
    in_window = sum(1 for end, s, _ in finished if s == "200" and end <= stop_at)
    return Sustained(
        concurrency=concurrency,
        duration_s=duration,
        ok=ok,
        ok_per_s=round(in_window / duration, 1),
        accepted=accepted,
        lost=accepted - ok,
        errors=dict(statuses),
        latency=Stats.of([ms for _, s, ms in finished if s == "200"]),
        drain_s=round(drain, 3),
        cpu_s={n: round(cpu1[n] - cpu0[n], 2) for n in cpu0 if n in cpu1},
        cpu_busy_pct=busy,
        accepted_in_window=accepted_in_window,
        on_chain_in_window=on_chain_in_window,
        chain_txs_in_window=txs_in_window,
        chain_catch_up_s=catch_up,
    )


# ---- one policy -----------------------------------------------------------------------------
@dataclass
class PolicyRun:
    policy: str
    startup_s: float
    transports: int
    baselines: Baselines
    sequential: Sequential
    phases: Phases
    sustained: Sustained


async def measure(cfg: StackConfig, policy: str, args: argparse.Namespace, say) -> PolicyRun:
    rng = random.Random(args.seed)
    org_ids = {o.id for o in cfg.orgs}
    sheets = [s for s in read_transports(sample_transports_path()) if s.company in org_ids]
    sheets = rng.sample(sheets, min(args.transports, len(sheets)))
    t = time.perf_counter()
    report = await transports.register(cfg, sheets)
    left = await transports.wait_stored(cfg)
    if any(v != 0 for v in left.values()):
        raise RuntimeError(f"shares not stored by every org node after 60 s: {left}")
    ids = [s.transport_id for s in sheets]
    say(f"registered {len(report.registered)} transports ({time.perf_counter() - t:.1f} s)")

    chain_tx, signing = await chain_tx_round_trips(cfg.chain_rpc, cfg.chain_id, args.chain_samples)
    eth_call = await eth_call_round_trips(cfg, ids, args.chain_samples)
    nats_req = await nats_round_trips(cfg.nats_url, args.nats_samples)
    key = api_key(cfg)
    async with Http(cfg, 4) as client:
        healthz = await http_round_trips(client, args.http_samples)
        baselines = Baselines(chain_tx, signing.p50, eth_call, nats_req, healthz)
        say(
            f"baselines: anvil tx p50 {chain_tx.p50} ms, eth_call p50 {eth_call.p50} ms, "
            f"NATS request p50 {nats_req.p50} ms, HTTP /healthz p50 {healthz.p50} ms"
        )
        for _ in range(args.warmup):
            await client.lookup(rng.choice(ids), key)
        seq = await sequential(client, key, ids, args.samples, rng)
    say(f"sequential: {seq.lookups.n} OK of {args.samples}, p50 {seq.lookups.p50} ms")
    ph = await phases(cfg, key, ids, args.phase_samples, rng, cfg.threshold)
    requester = Account.from_key(ParticipantKeys.load(cfg.gateway.responders[0].key_file).chain_key)
    async with await Chain.connect(cfg.chain_rpc, expected_chain_id=cfg.chain_id) as chain:
        sus = await sustained(
            cfg,
            key,
            ids,
            args.concurrency,
            args.duration,
            args.seed,
            OnChain(chain, requester.address),
        )
    say(f"sustained: {sus.ok_per_s} OK lookups/s, {sus.lost} lost")
    return PolicyRun(policy, 0.0, len(ids), baselines, seq, ph, sus)


def run_policy(policy: str, args: argparse.Namespace) -> PolicyRun:
    run_dir = Path(tempfile.mkdtemp(prefix=f"shardline-bench-{policy}-"))

    def say(message: str) -> None:
        print(f"  [{policy}] {message}", flush=True)

    finished = False
    try:
        t = time.perf_counter()
        cfg = stack.up(
            run_dir,
            orgs=args.orgs,
            threshold=args.threshold,
            policy=policy,
            ports=stack.Ports.free(),
            deadline_s=args.deadline,
            say=say,
        )
        startup = time.perf_counter() - t
        result = uvloop.run(measure(cfg, policy, args, say))  # the loop the workers run on
        result.startup_s = round(startup, 2)
        finished = True
        return result
    finally:
        stack.down(run_dir, say=lambda _m: None)
        if finished and not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"  [{policy}] run directory kept: {run_dir} (logs in {run_dir / 'logs'})")


# ---- report -----------------------------------------------------------------------------------
def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def trio(s: Stats, *keys: str) -> str:
    return " / ".join(fmt(getattr(s, k)) for k in keys)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT MET")


Floors = dict[str, list[tuple[float, float]]]  # policy -> rounds of (floor p50, baseline p50)


def targets(runs: dict[str, PolicyRun], floors: Floors | None = None) -> dict:
    cc, aa = runs.get(CHAIN_CONFIRMED), runs.get(AUDIT_AFTER)
    out: dict[str, Any] = {}
    for policy, key, base, of in (
        (AUDIT_AFTER, "audit_after_floor_over_nats_request", "nats_p50", NATS_RATIO_TARGET),
        (
            CHAIN_CONFIRMED,
            "chain_confirmed_floor_over_chain_tx",
            "chain_tx_p50",
            CHAIN_RATIO_TARGET,
        ),
    ):
        rounds = (floors or {}).get(policy)
        if rounds:
            out[key] = {
                "rounds": [{"floor_p50": f, base: b, "ratio": f / b} for f, b in rounds],
                "median_ratio": statistics.median(f / b for f, b in rounds),
                "of": of,
            }
    if cc:
        r = ratio(cc.sequential.lookups.p50, cc.baselines.chain_tx.p50)
        out["chain_confirmed_p50_over_chain_tx_p50"] = {
            "ratio": r,
            "target": f"<= {CHAIN_RATIO_TARGET}",
            "met": None if r is None else r <= CHAIN_RATIO_TARGET,
        }
    if aa:
        r = ratio(aa.sequential.lookups.p50, aa.baselines.nats_request.p50)
        out["audit_after_p50_over_nats_request_p50"] = {
            "ratio": r,
            "target": f"<= {NATS_RATIO_TARGET}",
            "met": None if r is None else r <= NATS_RATIO_TARGET,
        }
        out["audit_after_sustained"] = {
            "ok_per_s": aa.sustained.ok_per_s,
            "lost": aa.sustained.lost,
            "target": f">= {RATE_TARGET:g} OK lookups/s, none lost",
            "met": aa.sustained.ok_per_s >= RATE_TARGET and aa.sustained.lost == 0,
            "chain_confirmed_ok_per_s": cc.sustained.ok_per_s if cc else None,
            "chain_confirmed_lost": cc.sustained.lost if cc else None,
        }
    return out


def print_report(
    args: argparse.Namespace,
    runs: dict[str, PolicyRun],
    floors: Floors | None = None,
) -> None:
    names = [p for p in POLICIES if p in runs]
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, cell: Callable[[PolicyRun], str]) -> None:
        rows.append((label, [cell(runs[p]) for p in names]))

    def section(title: str) -> None:
        rows.append((title, []))

    section("baselines (same run)")
    row(
        f"  anvil tx round trip p50/p95 ms (n={args.chain_samples})",
        lambda r: trio(r.baselines.chain_tx, "p50", "p95"),
    )
    row("    of which signing p50 ms", lambda r: fmt(r.baselines.chain_tx_sign_p50))
    row(
        f"  get_transport (eth_call) p50/p95 ms (n={args.chain_samples})",
        lambda r: trio(r.baselines.eth_call, "p50", "p95"),
    )
    row(
        f"  NATS request/reply p50/p95 ms (n={args.nats_samples})",
        lambda r: trio(r.baselines.nats_request, "p50", "p95"),
    )
    row(
        f"  gateway GET /healthz p50/p95 ms (n={args.http_samples})",
        lambda r: trio(r.baselines.http_healthz, "p50", "p95"),
    )
    section("sequential lookups (POST + GET)")
    row(
        "  OK / asked",
        lambda r: f"{r.sequential.lookups.n} / {sum(r.sequential.statuses.values())}",
    )
    row("  latency p50/p95/p99 ms", lambda r: trio(r.sequential.lookups, "p50", "p95", "p99"))
    row(
        "  gateway accepted->result p50/p95 ms",
        lambda r: trio(r.sequential.gateway_elapsed, "p50", "p95"),
    )
    row(
        "  before accepted + HTTP p50/p95 ms",
        lambda r: trio(r.sequential.before_accept, "p50", "p95"),
    )
    section(f"where the time goes (medians, n={args.phase_samples}, SSE followed)")
    row("  client POST returned ms", lambda r: fmt(r.phases.post))
    row("  gateway at_ms: accepted", lambda r: fmt(r.phases.accepted))
    row("  gateway at_ms: first share", lambda r: fmt(r.phases.first_share))
    row(
        f"  gateway at_ms: share {args.threshold} of {args.threshold}",
        lambda r: fmt(r.phases.threshold_share),
    )
    row("  gateway at_ms: on_chain (its log)", lambda r: fmt(r.phases.on_chain))
    row("  gateway at_ms: result", lambda r: fmt(r.phases.result))
    row("  client total ms (POST+SSE+GET)", lambda r: fmt(r.phases.client_total))
    row(
        "  sheet ready before the chain log",
        lambda r: f"{r.phases.shares_before_chain} / {r.phases.n}",
    )
    section(f"sustained ({args.concurrency} clients, {args.duration:g} s)")
    row("  OK lookups/s", lambda r: fmt(r.sustained.ok_per_s, 1))
    row("  OK / accepted", lambda r: f"{r.sustained.ok} / {r.sustained.accepted}")
    row("  lost (accepted, no 200)", lambda r: str(r.sustained.lost))
    row(
        "  errors by status",
        lambda r: ", ".join(f"{k}: {v}" for k, v in sorted(r.sustained.errors.items())) or "none",
    )
    row("  latency p50/p95/p99 ms", lambda r: trio(r.sustained.latency, "p50", "p95", "p99"))
    row("  drain after window s", lambda r: fmt(r.sustained.drain_s))
    row(
        "  on chain in window / accepted (in txs)",
        lambda r: (
            f"{r.sustained.on_chain_in_window} / {r.sustained.accepted_in_window} "
            f"({r.sustained.chain_txs_in_window})"
        ),
    )
    row(
        "  chain caught up s after window",
        lambda r: (
            fmt(r.sustained.chain_catch_up_s)
            if r.sustained.chain_catch_up_s is not None
            else "not yet"
        ),
    )
    row("  machine CPU busy % (all cores)", lambda r: fmt(r.sustained.cpu_busy_pct, 0))
    procs = sorted({n for p in names for n in runs[p].sustained.cpu_s})
    for name in sorted(procs, key=lambda n: -max(runs[p].sustained.cpu_s.get(n, 0) for p in names)):
        row(f"  CPU s: {name}", lambda r, n=name: fmt(r.sustained.cpu_s.get(n), 2))
    row("stack startup s", lambda r: fmt(r.startup_s, 1))

    width = max(len(label) for label, _ in rows) + 2
    col = max(18, *(len(c) + 2 for _, cells in rows for c in cells))
    print()
    print(
        f"shardline lookup benchmark: {args.orgs} orgs, threshold {args.threshold}, "
        f"{args.transports} transports, deadline {args.deadline:g} s, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(" " * width + "".join(p.rjust(col) for p in names))
    for label, cells in rows:
        print(label.ljust(width) + "".join(c.rjust(col) for c in cells))

    print()
    print("targets (ratios against the baselines of the same run)")
    t = targets(runs, floors)

    def floor_line(key: str, digits: int) -> None:
        if key in t:
            x = t[key]
            print(
                "    beside it, the floor (bench/lookup_floor.py: only what any lookup must do, "
                f"its own processes): {fmt(x['median_ratio'], digits)}x of the {x['of']:g}x "
                f"(rounds: {', '.join(fmt(r['ratio'], digits) + 'x' for r in x['rounds'])})"
            )

    if "chain_confirmed_p50_over_chain_tx_p50" in t:
        x, cc = t["chain_confirmed_p50_over_chain_tx_p50"], runs[CHAIN_CONFIRMED]
        print(
            f"  chain-confirmed lookup p50 / anvil tx p50 = {fmt(cc.sequential.lookups.p50)} / "
            f"{fmt(cc.baselines.chain_tx.p50)} ms = {fmt(x['ratio'])}x "
            f"(target {x['target']}x): {verdict(x['met'])}"
        )
    floor_line("chain_confirmed_floor_over_chain_tx", 2)
    if "audit_after_p50_over_nats_request_p50" in t:
        x, aa = t["audit_after_p50_over_nats_request_p50"], runs[AUDIT_AFTER]
        print(
            f"  audit-after lookup p50 / NATS request p50 = {fmt(aa.sequential.lookups.p50)} / "
            f"{fmt(aa.baselines.nats_request.p50, 3)} ms = {fmt(x['ratio'], 1)}x "
            f"(target {x['target']}x): {verdict(x['met'])}"
        )
    floor_line("audit_after_floor_over_nats_request", 1)
    if "audit_after_sustained" in t:
        x = t["audit_after_sustained"]
        beside = (
            ""
            if x["chain_confirmed_ok_per_s"] is None
            else f"; chain-confirmed beside it: {fmt(x['chain_confirmed_ok_per_s'], 1)}/s, "
            f"{x['chain_confirmed_lost']} lost"
        )
        print(
            f"  audit-after sustained = {fmt(x['ok_per_s'], 1)} OK lookups/s, {x['lost']} lost "
            f"(target {x['target']}): {verdict(x['met'])}{beside}"
        )


# ---- main -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="sustained window, seconds")
    p.add_argument("--concurrency", type=int, default=32, help="concurrent clients when sustained")
    p.add_argument("--samples", type=int, default=200, help="sequential lookups")
    p.add_argument("--orgs", type=int, default=4)
    p.add_argument("--threshold", type=int, default=2)
    p.add_argument("--transports", type=int, default=60, help="sample transports to register")
    p.add_argument("--deadline", type=float, default=2.0, help="the gateway's lookup deadline, s")
    p.add_argument("--chain-samples", type=int, default=100, help="bare anvil txs and eth_calls")
    p.add_argument("--nats-samples", type=int, default=1000, help="bare NATS requests")
    p.add_argument("--http-samples", type=int, default=200, help="bare GET /healthz")
    p.add_argument("--phase-samples", type=int, default=30, help="lookups followed over SSE")
    p.add_argument("--warmup", type=int, default=10, help="lookups before measuring")
    p.add_argument("--policy", choices=POLICIES, action="append", help="only this policy")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the run directories and logs")
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the floors of the policies run (bench/lookup_floor.py, about 20 s each) "
        "after the runs",
    )
    return p.parse_args(argv)


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt  # so that the stack under test is shut down on the way out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.perf_counter()
    runs: dict[str, PolicyRun] = {}
    failures: dict[str, str] = {}
    for policy in args.policy or POLICIES:
        print(f"policy {policy}: starting a fresh stack", flush=True)
        try:
            runs[policy] = run_policy(policy, args)
        except Exception as exc:
            traceback.print_exc()
            failures[policy] = f"{type(exc).__name__}: {exc}"
    import lookup_floor  # beside this file

    floors: Floors = {}
    for policy in [p for p in POLICIES if p in runs and not args.no_floor]:
        # the fewest org nodes a lookup can have (the threshold): the lowest floor there is
        print(f"the floor of a {policy} lookup (bench/lookup_floor.py)", flush=True)
        try:
            floors[policy] = lookup_floor.measure(
                min(args.orgs, args.threshold),
                args.threshold,
                300,
                3,
                chained=policy == CHAIN_CONFIRMED,
            )
        except Exception as exc:
            traceback.print_exc()
            failures[f"floor {policy}"] = f"{type(exc).__name__}: {exc}"
    if runs:
        print_report(args, runs, floors)
    for what, why in failures.items():
        what = what if what.startswith("floor") else f"policy {what}"
        print(f"{what} crashed: {why}", file=sys.stderr)
    total = time.perf_counter() - started
    print(f"\ntotal run time {total:.0f} s")
    if args.json:
        doc = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "runs": {p: asdict(r) for p, r in runs.items()},
            "targets": targets(runs, floors),
            "failures": failures,
            "total_s": round(total, 1),
        }
        args.json.write_text(json.dumps(doc, indent=2))
        print(f"figures written to {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
