"""Analytics: mean and variance over 100k producers with 4 MPC servers, beside MPyC alone and NumPy.

One run measures, on the same machine:

- plaintext: NumPy ``mean`` and ``var`` of the values (median of 5);
- MPyC alone: ``bench/mpyc_meanvar.py -M4`` (4 local parties, t = 1; party 0 inputs the values,
  the parties add them and take a secure inner product, open sum and sum of squares);
- the pipeline on a fresh local stack (4 org nodes, t = 1): ``--rows`` producers, one row each,
  submitted through ``--collectors`` concurrent ``submit`` calls (a clinic sending for its
  consenting patients: one digest on chain and one sealed part per server per call). Submission
  is timed until every server has checked every contribution in shared form and summed it
  (client range check, encoding, sharing, sealing, the Market contribution, object store and
  JetStream to each server, unsealing, hash against the chain, the servers' range check and its
  exchange). Then one ``variance`` job (count, sum and sum of squares: mean and variance): open
  with deposit and mask, four servers commit, check k, reveal on chain, the consumer decodes
  with Berlekamp-Welch and accepts. "pipeline" = submission + that job; a second job on the same
  data is timed alone. For comparison, ``--single`` producers also submit one by one (a chain
  transaction each).

Then it measures how time and bytes grow with servers (n = 3t + 1), producers and statistic, in
this process on the core functions the workers run (sharing, range check, sums, output share,
decoding) and with exact message and calldata sizes, draws the plots (matplotlib) and writes
``docs/analytics-scaling.md``. Timings are reported, never asserted.

    .venv/bin/python bench/analytics.py                  # 100k producers, about 5 minutes
    .venv/bin/python bench/analytics.py --rows 20000 --no-scaling --single 0
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sqlalchemy

from shardline import stack
from shardline.contracts import market as mk
from shardline.core import analytics as an
from shardline.core import analytics_batch as ab
from shardline.core import bulk_shares as bs
from shardline.core import field_shares as fs
from shardline.core import sealing
from shardline.core import shared_checks as checks
from shardline.core.keys import ParticipantKeys

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TARGET = 1.5
BENCH_SCHEMA = {
    "name": "bench",
    "fields": [{"name": "value", "type": "int", "min": 0, "max": 1000}],
}
RICH_SCHEMA = {
    "name": "clinic",
    "fields": [
        {"name": "age", "type": "int", "min": 0, "max": 119, "bin_width": 10},
        {"name": "bmi", "type": "float", "min": 10, "max": 60, "decimals": 1},
        {"name": "region", "type": "category", "values": ["north", "south", "east"]},
    ],
}


def values(n: int, seed: int = 1) -> list[int]:
    rnd = random.Random(seed)
    return [rnd.randint(0, 1000) for _ in range(n)]


def plaintext(n: int) -> float:
    arr = np.array(values(n), dtype=np.int64)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        arr.mean(), arr.var()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def mpyc_alone(n: int) -> dict:
    env = dict(os.environ, BENCH_ROWS=str(n))
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "mpyc_meanvar.py"), "-M4"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    wall = time.perf_counter() - t
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    got = json.loads(line)
    got["wall"] = wall
    return got


def server_stores(cfg, servers: list[str]) -> list:
    """The servers' stores, opened before the clock starts (opening one costs milliseconds)."""
    from shardline.workers.analytics_store import AnalyticsStore

    return [AnalyticsStore(cfg.org(o).database_url) for o in servers]


async def wait_checked(stores: list, digests: list[bytes]) -> None:
    """Until every server has checked and summed every contribution (its verdict is stored)."""
    # while waiting, one cheap count per server every 50 ms (the polling shares the cores with
    # what it waits for); the verdicts themselves are read once all are there
    count = sqlalchemy.text("SELECT count(*) FROM analytics_verdicts WHERE dataset = 'bench'")
    for _ in range(18000):
        done = 0
        for s in stores:
            with s.engine.connect() as conn:
                done += conn.execute(count).scalar_one() >= len(digests)
        if done == len(stores):
            got = [s.verdicts("bench", digests) for s in stores]
            if all(len(v) == len(digests) for v in got):
                bad = [d for v in got for d, ok in v.items() if not ok]
                assert not bad, f"honest contributions rejected: {bad}"
                return
        await asyncio.sleep(0.05)
    raise TimeoutError("the servers did not check every contribution")


def cpu_seconds(run_dir: Path) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each process of the stack and by this one."""
    import psutil

    out = {"bench client (this process)": sum(psutil.Process().cpu_times()[:2])}
    for name, info in stack.read_pids(run_dir).items():
        try:
            proc = psutil.Process(info["pid"])
            procs = [proc, *proc.children(recursive=True)]
            out[name] = sum(sum(p.cpu_times()[:2]) for p in procs)
        except psutil.Error:
            continue
    return out


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0) > 0.05}


async def settled(
    run_dir: Path, window_s: float = 0.5, idle: float = 0.05, limit_s: float = 120.0
) -> float:
    """Wait until the stack's processes are idle (less than ``idle`` of a core together over
    two windows in a row), as a running deployment's servers are when a job comes: the workers
    that ``up`` started last are still importing and connecting when the contracts answer.
    MPyC alone is likewise timed from connected parties. Returns the seconds waited."""
    t = time.perf_counter()
    quiet = 0
    before = cpu_seconds(run_dir)
    while time.perf_counter() - t < limit_s and quiet < 2:
        await asyncio.sleep(window_s)
        now = cpu_seconds(run_dir)
        client = "bench client (this process)"
        busy = sum(now[k] - before.get(k, 0.0) for k in now if k != client)
        before = now
        quiet = quiet + 1 if busy < idle * window_s else 0
    return time.perf_counter() - t


def compute_floor(n: int, collectors: int) -> dict:
    """The pipeline's computation alone, in this process, on the same rows and batches: sharing
    (with the range check's aux bits), sealing and unsealing every server's part, hashing it,
    and each of the four servers' range check and sums. Any pipeline that checks inputs in
    shared form and seals them to the servers computes this much before anything crosses a
    process, the bus or the chain; spread perfectly over the machine's cores it is a floor
    under the pipeline's time."""
    from shardline.workers.analytics_server import AnalyticsServer

    schema = an.Schema.from_dict(BENCH_SCHEMA)
    lay = checks.layout(schema)
    rows = [{"value": v} for v in values(n)]
    xs = [1, 2, 3, 4]
    keys = {x: sealing.ephemeral_keypair() for x in xs}  # (secret, public) per server
    per = -(-n // collectors)
    spent: dict[str, float] = {}

    def timed(what: str, work):
        t = time.process_time()
        out = work()
        spent[what] = time.process_time() - t
        return out

    batches = timed(
        "share",
        lambda: [
            ab.share_batch(schema, rows[i : i + per], 1, xs) for i in range(0, len(rows), per)
        ],
    )
    sealed = timed(
        "seal",
        lambda: {x: [sealing.seal(b.parts[x], keys[x][1]) for b in batches] for x in xs},
    )
    opened = timed(
        "unseal",
        lambda: {x: [sealing.unseal(c, keys[x][0]) for c in sealed[x]] for x in xs},
    )
    timed("hash", lambda: [hashlib.sha256(part).digest() for x in xs for part in opened[x]])

    def check() -> None:
        for x in xs:
            for b, part in zip(batches, opened[x], strict=True):
                body, w, eta = ab.split_part(lay, part, b.rows, x in b.seeded)
                AnalyticsServer.check_and_sum(lay, body, b.rows, x, w, eta, b"\0" * 32)

    timed("check", check)
    total = sum(spent.values())
    cores = os.cpu_count() or 1
    return {**spent, "total": total, "cores": cores, "floor_s": total / cores}


async def pipeline(n: int, collectors: int, single: int, logs: Path | None = None) -> dict:
    from eth_account import Account

    from shardline.core import analytics_batch as ab
    from shardline.workers.analytics_client import AnalyticsClient

    run_dir = Path(tempfile.mkdtemp(prefix="shardline-bench-analytics-"))
    cfg = await asyncio.to_thread(
        stack.up, run_dir, orgs=4, threshold=2, ports=stack.Ports.free(), say=lambda _m: None
    )
    try:
        client = await AnalyticsClient.connect(
            cfg.nats_url, cfg.chain_rpc, cfg.deployment, name="bench"
        )
        chain, dep = client.chain, client.deployment
        servers = ["org1", "org2", "org3", "org4"]
        for _ in range(600):  # each org node stakes as its MPC server starts
            if all(s.stake for s in [await mk.server(chain, dep, o) for o in servers]):
                break
            await asyncio.sleep(0.1)
        consumer = Account.create()
        await chain.w3.provider.make_request("anvil_setBalance", [consumer.address, hex(10**21)])
        schema = an.Schema.from_dict(BENCH_SCHEMA)
        await mk.create_dataset(chain, consumer, dep, "bench", schema.to_json(), 1, 10, servers)
        vals = values(n)
        rows = [{"value": v} for v in vals]  # one row per producer
        keys = [ParticipantKeys.generate(f"c{i:03d}") for i in range(collectors)]
        for k in keys:
            addr = Account.from_key(k.chain_key).address
            await chain.w3.provider.make_request("anvil_setBalance", [addr, hex(10**19)])
        per = -(-n // collectors)
        xs = [1, 2, 3, 4]
        waited = await settled(run_dir)
        # where the time goes, measured apart on the same rows (not part of the timed run)
        t = time.perf_counter()
        ab.share_batch(schema, rows[:per], 1, xs)
        share_one = time.perf_counter() - t

        stores = server_stores(cfg, servers)
        cpu0 = cpu_seconds(run_dir)
        t0 = time.perf_counter()
        digests = [
            d
            for ds in await asyncio.gather(
                *(
                    client.submit(k, "bench", rows[i * per : (i + 1) * per])
                    for i, k in enumerate(keys)
                    if rows[i * per : (i + 1) * per]
                )
            )
            for d in ds
        ]
        sent = time.perf_counter() - t0

        async def checked() -> float:
            await wait_checked(stores, digests)
            return time.perf_counter() - t0

        # the consumer opens its job as soon as the digests are on chain, as a real one would;
        # the servers finish checking and summing while the job opens, then commit
        checking = asyncio.create_task(checked())
        secret = await client.open(
            consumer,
            "bench",
            an.JobSpec("variance", "value"),
            price=10**17,
            commit_window_s=600,
            reveal_window_s=600,
        )
        out = await client.result(consumer, secret, timeout_s=900)
        cold = time.perf_counter() - t0
        submitted = await checking
        cpu = cpu_used(cpu0, cpu_seconds(run_dir))
        t1 = time.perf_counter()
        secret2 = await client.open(
            consumer,
            "bench",
            an.JobSpec("variance", "value"),
            price=10**17,
            commit_window_s=600,
            reveal_window_s=600,
        )
        out2 = await client.result(consumer, secret2, timeout_s=900)
        job = time.perf_counter() - t1
        arr = np.array(vals, dtype=np.int64)
        assert out.result.count == n, (out.result.count, n)
        assert out.result.value == out2.result.value
        assert abs(out.result.value - float(arr.var())) < 1e-6 * max(1.0, float(arr.var()))
        # producers one by one: a chain transaction and n messages each
        single_s = None
        if single:
            solo = [ParticipantKeys.generate(f"s{i:05d}") for i in range(single)]
            for k in solo:
                addr = Account.from_key(k.chain_key).address
                await chain.w3.provider.make_request("anvil_setBalance", [addr, hex(10**18)])
            t2 = time.perf_counter()
            solo_digests: list[bytes] = []
            for start in range(0, single, 100):
                for ds in await asyncio.gather(
                    *(
                        client.submit(k, "bench", [{"value": v}])
                        for k, v in zip(solo[start : start + 100], vals, strict=False)
                    )
                ):
                    solo_digests += ds
            await wait_checked(stores, solo_digests)
            single_s = time.perf_counter() - t2
        await client.close()
        return {
            "submission": submitted,
            "sent": sent,
            "share_one_collector": share_one,
            "cold": cold,
            "job": job,
            "variance": out.result.value,
            "mean": float(arr.mean()),
            "single": single,
            "single_s": single_s,
            "cpu": cpu,
            "settled": waited,
        }
    finally:
        if logs is not None:  # the workers' logs (their per-input timings), kept for reading
            shutil.copytree(run_dir / "logs", logs, dirs_exist_ok=True)
        await asyncio.to_thread(stack.down, run_dir, say=lambda _m: None)


# ---- scaling, in process ----------------------------------------------------------------------
def producer_cost(schema: an.Schema, n_servers: int, t: int, rows: int) -> tuple[float, int]:
    """Seconds to check, share, pack and seal ``rows`` rows for n servers; bytes sent."""
    rnd = random.Random(3)
    data = [
        {
            f.name: (
                rnd.choice(f.values)
                if f.type == "category"
                else round(rnd.uniform(f.min, f.max), f.decimals)
                if f.decimals
                else rnd.randint(int(f.min), int(f.max))
            )
            for f in schema.fields
        }
        for _ in range(rows)
    ]
    pks = [bytes(sealing.ephemeral_keypair()[1]) for _ in range(n_servers)]
    xs = list(range(1, n_servers + 1))
    t0 = time.perf_counter()
    batch = ab.share_batch(schema, data, t, xs)
    sent = 0
    for x, pk in zip(xs, pks, strict=True):
        sent += len(sealing.seal(batch.parts[x], pk))
    return time.perf_counter() - t0, sent


def server_cost(schema: an.Schema, rows: int, spec: an.JobSpec) -> float:
    """One server's work on a contribution of ``rows`` rows (range check, sums) and its job."""
    lay = checks.layout(schema)
    data = [
        {f.name: (f.values[0] if f.type == "category" else f.min) for f in schema.fields}
    ] * rows
    batch = ab.share_batch(schema, data, 1, [1, 2, 3, 4])
    t0 = time.perf_counter()
    x = 4  # a server that gets its shares (the first t get a seed, and expand it)
    body, w, eta = ab.split_part(lay, batch.parts[x], rows, x in batch.seeded)
    checks.evaluate(lay, body, rows, x, w, eta, checks.seed(b"b" * 32, b"d" * 32))
    sums = bs.column_sums(body, lay.extended)[: lay.width]
    an.output_share(sums, an.selectors(schema, spec))
    return time.perf_counter() - t0


def decode_cost(n_servers: int, t: int, width: int, liars: int) -> float:
    xs = list(range(1, n_servers + 1))
    shares = fs.split_vector([random.randrange(fs.PRIME) for _ in range(width)], t, xs)
    for x in xs[:liars]:
        shares[x][0] = (shares[x][0] + 1) % fs.PRIME
    t0 = time.perf_counter()
    for _ in range(20):
        fs.robust_reconstruct(shares, t)
    return (time.perf_counter() - t0) / 20


def chain_bytes(n_servers: int, width: int) -> int:
    """Calldata of one job: open (masks sealed to each server), n commits, n reveals."""
    word = 32
    open_ = 4 + 10 * word + n_servers * (3 * word + 48 + width * fs.ELEMENT_BYTES * 3)
    commit = 4 + 3 * word
    reveal = 4 + 4 * word + width * word
    return open_ + n_servers * (commit + reveal)


def scaling() -> dict:
    bench = an.Schema.from_dict(BENCH_SCHEMA)
    rich = an.Schema.from_dict(RICH_SCHEMA)
    var = an.JobSpec("variance", "value")
    out: dict = {"servers": [], "producers": [], "statistic": []}
    for t in (1, 2, 3):
        n = 3 * t + 1
        p_s, p_b = producer_cost(bench, n, t, 5000)
        out["servers"].append(
            {
                "servers": n,
                "t": t,
                "producer_s_per_1k_rows": p_s / 5,
                "bytes_per_row": p_b / 5000,
                "decode_ms_one_liar": decode_cost(n, t, 3, 1) * 1000,
                "decode_ms_t_liars": decode_cost(n, t, 3, t) * 1000,
                "chain_bytes_per_job": chain_bytes(n, 3),
            }
        )
    for rows in (1_000, 10_000, 100_000):
        out["producers"].append(
            {
                "rows": rows,
                "server_aggregate_s": server_cost(bench, rows, var),
                "producer_share_s": producer_cost(bench, 4, 1, min(rows, 20_000))[0]
                * rows
                / min(rows, 20_000),
                "bytes_to_servers": producer_cost(bench, 4, 1, 1000)[1] * rows / 1000,
            }
        )
    specs = [
        an.JobSpec("count"),
        an.JobSpec("mean", "age"),
        an.JobSpec("variance", "age"),
        an.JobSpec("mean", "age", "region", ("north", "east")),
        an.JobSpec("histogram", "age", bins=tuple(range(0, 130, 10))),
    ]
    for spec in specs:
        width = len(an.selectors(rich, spec))
        out["statistic"].append(
            {
                "statistic": spec.describe(),
                "output_width": width,
                "server_s_10k_rows": server_cost(rich, 10_000, spec),
                "chain_bytes_per_job": chain_bytes(4, width),
                "decode_ms_one_liar": decode_cost(4, 1, width, 1) * 1000,
            }
        )
    out["row_width"] = {"bench": bench.width, "clinic": rich.width}
    return out


def plots(sc: dict, head: dict | None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = DOCS / "analytics-scaling"
    folder.mkdir(exist_ok=True)
    names = []
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    s = sc["servers"]
    ax[0].plot(
        [r["servers"] for r in s],
        [r["producer_s_per_1k_rows"] for r in s],
        "o-",
        label="producer: share + seal, s per 1k rows",
    )
    ax[0].plot(
        [r["servers"] for r in s],
        [r["decode_ms_t_liars"] / 1000 for r in s],
        "s-",
        label="consumer: decode with t liars, s",
    )
    ax[0].set_xlabel("servers (n = 3t + 1)")
    ax[0].set_ylabel("seconds")
    ax[0].legend(fontsize=7)
    ax[1].plot(
        [r["servers"] for r in s],
        [r["bytes_per_row"] for r in s],
        "o-",
        label="bytes per row, all servers",
    )
    ax[1].plot(
        [r["servers"] for r in s],
        [r["chain_bytes_per_job"] for r in s],
        "s-",
        label="calldata bytes per job",
    )
    ax[1].set_xlabel("servers (n = 3t + 1)")
    ax[1].set_ylabel("bytes")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "servers.png", dpi=110)
    names.append("servers.png")
    plt.close(fig)

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    p = sc["producers"]
    ax[0].loglog(
        [r["rows"] for r in p],
        [r["server_aggregate_s"] for r in p],
        "o-",
        label="server: range check + sums + output",
    )
    ax[0].loglog(
        [r["rows"] for r in p],
        [r["producer_share_s"] for r in p],
        "s-",
        label="producers: share + seal (total)",
    )
    ax[0].set_xlabel("rows (producers)")
    ax[0].set_ylabel("seconds")
    ax[0].legend(fontsize=7)
    ax[1].loglog(
        [r["rows"] for r in p],
        [r["bytes_to_servers"] for r in p],
        "o-",
        label="bytes to the 4 servers",
    )
    ax[1].set_xlabel("rows (producers)")
    ax[1].set_ylabel("bytes")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "producers.png", dpi=110)
    names.append("producers.png")
    plt.close(fig)

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    st = sc["statistic"]
    labels = [r["statistic"].replace(" where ", "\nwhere ") for r in st]
    ax[0].bar(labels, [r["server_s_10k_rows"] for r in st])
    ax[0].set_ylabel("server seconds, 10k rows")
    ax[0].tick_params(axis="x", labelsize=6)
    ax[1].bar(labels, [r["chain_bytes_per_job"] for r in st])
    ax[1].set_ylabel("calldata bytes per job")
    ax[1].tick_params(axis="x", labelsize=6)
    fig.tight_layout()
    fig.savefig(folder / "statistic.png", dpi=110)
    names.append("statistic.png")
    plt.close(fig)
    return names


def _ratios(floor: dict) -> str:
    return ", ".join(f"{r['ratio']:.2f}x" for r in floor["rounds"])


def report(head: dict | None, sc: dict, args) -> str:
    lines = ["# Analytics: how time and bytes grow", ""]
    lines += [
        "Written by `bench/analytics.py` from one run on this machine "
        f"({time.strftime('%Y-%m-%d')}, 2 shared cores); rerun it to refresh. Timings are from a "
        "busy shared machine: compare the ratios, not the absolute figures.",
        "",
    ]
    if head:
        ratio = head["cold"] / head["mpyc"]
        lines += [
            f"## Mean and variance over {args.rows:,} producers, 4 servers, t = 1",
            "",
            f"Load average at the start of the run: {head['load']}; at the end: "
            f"{head['load_end']}.",
            "",
            "| what | seconds | vs MPyC alone |",
            "|---|---|---|",
            f"| NumPy in the clear (mean + var) | {head['plain']:.4f} | {head['plain'] / head['mpyc']:.4f}x |",
            f"| MPyC alone (4 parties: party 0 inputs the values, sum + inner product, open; median of {', '.join(f'{r:.2f}' for r in head['mpyc_runs'])}) | {head['mpyc']:.2f} | 1x |",
            f"| pipeline, submission: {args.rows:,} producers' rows through {args.collectors} concurrent `submit` calls, until every server has checked (in shared form) and summed every contribution (the job below opens meanwhile) | {head['submission']:.2f} | {head['submission'] / head['mpyc']:.2f}x |",
            f"| pipeline, a second variance job on the submitted data alone (open with deposit and mask, commit, reveal, decode, accept) | {head['job']:.2f} | {head['job'] / head['mpyc']:.2f}x |",
            f"| **pipeline: submission + job** (submission start to the consumer's result; the job opens once the digests are on chain) | {head['cold']:.2f} | **{ratio:.2f}x** |",
            *(
                [
                    f"| the computation alone, in one process (sharing, sealing and unsealing every part, hashing, the four servers' range checks and sums: {fl['total']:.2f} CPU-s), spread perfectly over {fl['cores']} cores: a floor under the pipeline | {fl['floor_s']:.2f} | {fl['floor_s'] / head['mpyc']:.2f}x |"
                ]
                if (fl := head.get("floor"))
                else []
            ),
            *(
                [
                    f"| the computation and the bus alone (`bench/analytics_floor.py`: the same sharing, sealing, object store, range checks, sums and check values between four server processes, with no chain, signatures, schema checks or database), submission only; rounds {_ratios(bf)} (MPyC alone measured beside each round) | {bf['median_s']:.2f} | {bf['median_ratio']:.2f}x |"
                ]
                if (bf := head.get("bus_floor"))
                else []
            ),
            "",
            f"Target: pipeline at most {TARGET}x MPyC alone: "
            f"{'met' if ratio <= TARGET else 'not met'} in this run ({ratio:.2f}x).",
            "",
            'What "pipeline" covers: every producer\'s row range checked by the client, encoded '
            "(sketch + aux bits), shared t-of-n over GF(2^61 - 1) (server 1's shares as a 32-byte "
            "seed), each other server's part sealed to it and put in the object store, the "
            "batch's digest on chain (`contribute`, mined), one message per server; each server "
            "fetches, unseals (or expands its seed), checks the hash against the chain, evaluates "
            "its range-check values and sums the rows, publishes the values; every server decides "
            "from all of them; then the job (open with deposit and mask, commit, k check, reveal, "
            "Berlekamp-Welch, accept), all on one machine: the client, four org nodes, "
            "nats-server and anvil share its cores. MPyC alone covers input sharing, the sums and "
            "the opening among 4 local processes only: no chain, no bus, no sealing, no range "
            "check. Both are timed from running, connected parties: the pipeline starts once "
            f"the stack's processes have been idle for a second ({head.get('settled', 0.0):.1f} s "
            "after the servers staked), as MPyC's clock starts once its parties are connected.",
            "",
            "Where the submission's time goes (same run):",
            "",
            f"- one collector's batch of {-(-args.rows // args.collectors):,} rows: check + encode + "
            f"share for 4 servers, {head['share_one_collector']:.2f} s (in the client process);",
            f"- all {args.collectors} batches shared, sealed, on chain and on the bus: "
            f"{head['sent']:.2f} s after the start; the servers' check and sums take the rest "
            f"({head['submission'] - head['sent']:.2f} s, the four servers sharing the machine's "
            "cores).",
            "- CPU seconds used during submission + job, by process: "
            + ", ".join(
                f"{k} {v:.2f}" for k, v in sorted(head["cpu"].items(), key=lambda kv: -kv[1])
            )
            + f"; total {sum(head['cpu'].values()):.2f} in {head['cold']:.2f} s of wall time on "
            f"{os.cpu_count()} cores shared with other work (load average above).",
        ]
        if head.get("single_s"):
            per = head["single_s"] / head["single"]
            lines += [
                f"- for comparison, {head['single']:,} producers each submitting their own row "
                f"(one `contribute` transaction and 4 messages each, 100 at a time): "
                f"{head['single_s']:.2f} s, {per * 1000:.1f} ms per producer, so about "
                f"{per * args.rows:,.0f} s for {args.rows:,}: producers that submit alone are "
                "bound by one chain transaction each; batching through a collector is what "
                "makes 100k producers one pipeline run.",
            ]
        lines += [""]
    lines += [
        "## Servers (n = 3t + 1: t liars are corrected and named)",
        "",
        "![servers](analytics-scaling/servers.png)",
        "",
    ]
    lines += [
        "| n | t | producer s / 1k rows | bytes / row (all servers) | decode ms, 1 liar | decode ms, t liars | calldata bytes / job |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sc["servers"]:
        lines.append(
            f"| {r['servers']} | {r['t']} | {r['producer_s_per_1k_rows']:.3f} | {r['bytes_per_row']:.0f} | {r['decode_ms_one_liar']:.2f} | {r['decode_ms_t_liars']:.2f} | {r['chain_bytes_per_job']:,} |"
        )
    lines += ["", "## Producers (rows)", "", "![producers](analytics-scaling/producers.png)", ""]
    lines += [
        "| rows | server: range check + sums + output, s | producers: check + share + seal, s | bytes to 4 servers |",
        "|---|---|---|---|",
    ]
    for r in sc["producers"]:
        lines.append(
            f"| {r['rows']:,} | {r['server_aggregate_s']:.3f} | {r['producer_share_s']:.2f} | {r['bytes_to_servers']:,.0f} |"
        )
    lines += [
        "",
        f"## Statistic (clinic schema: a row is {sc['row_width']['clinic']} field elements)",
        "",
        "![statistic](analytics-scaling/statistic.png)",
        "",
    ]
    lines += [
        "| statistic | output width | server s (check + sums + output), 10k rows | calldata bytes / job | decode ms, 1 liar |",
        "|---|---|---|---|---|",
    ]
    for r in sc["statistic"]:
        lines.append(
            f"| {r['statistic']} | {r['output_width']} | {r['server_s_10k_rows']:.3f} | {r['chain_bytes_per_job']:,} | {r['decode_ms_one_liar']:.2f} |"
        )
    lines += [
        "",
        "## Reading it",
        "",
        "- Producers pay for sharing: time and bytes grow linearly with rows, servers and the row's "
        "width (contexts x numeric fields x bins, plus the range check's aux bits: about "
        "log2(range) per numeric field); sealing is one box per server per batch.",
        "- A server's work per contribution is one pass over its shares when it arrives (the "
        "range check and the column sums, linear in rows x width); it then keeps only the sums. "
        "A job adds one stored vector per contribution, so jobs on submitted data cost the chain "
        "round trips and little else.",
        "- The chain carries O(n x output width) per job, independent of the number of rows: "
        "two transactions per server (commit, reveal) plus open and accept.",
        "- Decoding is a Lagrange check when all agree; with liars, Berlekamp-Welch per output "
        "coordinate (a small linear system in n), milliseconds for n up to 10.",
        "- The statistic changes only the output width (count 1, mean 2, variance 3, histogram "
        "one per bin); filters cost nothing extra at the servers.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument(
        "--collectors", type=int, default=10, help="concurrent submit calls sharing the rows"
    )
    ap.add_argument(
        "--single", type=int, default=500, help="producers that also submit alone, for comparison"
    )
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--logs", type=Path, help="copy the stack's worker logs here")
    ap.add_argument(
        "--no-bus-floor",
        action="store_true",
        help="skip the floor with the bus (bench/analytics_floor.py, about 30 s)",
    )
    args = ap.parse_args()
    head = {"plain": plaintext(args.rows), "load": ", ".join(f"{v:.2f}" for v in os.getloadavg())}
    print(f"load average {head['load']}", flush=True)
    print(f"NumPy mean+var of {args.rows:,} values: {head['plain'] * 1000:.3f} ms", flush=True)
    # MPyC alone twice before the pipeline and once after it: on a shared machine one run can be
    # off by 3x; the median of the three is the baseline
    runs = []

    def baseline() -> None:
        m = mpyc_alone(args.rows)
        runs.append(m["seconds"])
        print(
            f"MPyC alone, 4 parties: {m['seconds']:.2f} s (wall {m['wall']:.2f} s; mean {m['mean']:.3f}, variance {m['variance']:.3f})",
            flush=True,
        )

    baseline()
    baseline()
    p = asyncio.run(pipeline(args.rows, args.collectors, args.single, args.logs))
    baseline()
    head["mpyc"] = statistics.median(runs)
    head["mpyc_runs"] = runs
    head["floor"] = fl = compute_floor(args.rows, args.collectors)
    head["load_end"] = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"MPyC alone, median of {runs}: {head['mpyc']:.2f} s", flush=True)
    head.update(p)
    print(
        f"pipeline ({args.rows:,} producers, {args.collectors} collectors): submission {p['submission']:.2f} s "
        f"(all sent at {p['sent']:.2f} s; one collector's sharing {p['share_one_collector']:.2f} s), "
        f"job {p['job']:.2f} s, submission + job {p['cold']:.2f} s; mean {p['mean']:.3f}, "
        f"variance {p['variance']:.3f} (started once the stack was idle, {p['settled']:.1f} s "
        "after the servers staked)",
        flush=True,
    )
    print(
        f"ratios vs MPyC alone: pipeline (submission + job) {p['cold'] / head['mpyc']:.2f}x "
        f"(target {TARGET}x), submission {p['submission'] / head['mpyc']:.2f}x, "
        f"job {p['job'] / head['mpyc']:.2f}x; NumPy {head['plain'] / head['mpyc']:.5f}x",
        flush=True,
    )
    print(
        f"the computation alone, in this process: {fl['total']:.2f} CPU-s (sharing "
        f"{fl['share']:.2f}, sealing {fl['seal']:.2f}, unsealing {fl['unseal']:.2f}, hashing "
        f"{fl['hash']:.2f}, four servers' checks and sums {fl['check']:.2f}); over "
        f"{fl['cores']} cores at best {fl['floor_s']:.2f} s = "
        f"{fl['floor_s'] / head['mpyc']:.2f}x MPyC alone, a floor under the pipeline",
        flush=True,
    )
    if not args.no_bus_floor:
        import analytics_floor  # beside this file

        used: list[dict[str, float]] = []
        rounds = analytics_floor.measure(args.rows, args.collectors, 3, used)
        head["bus_floor"] = bf = {
            "rounds": [
                {"floor_s": f, "mpyc_s": m, "ratio": f / m, "cpu": c}
                for (f, m), c in zip(rounds, used, strict=True)
            ],
            "median_ratio": statistics.median(f / m for f, m in rounds),
            "median_s": statistics.median(f for f, _m in rounds),
        }
        print(
            "the computation and the bus alone (bench/analytics_floor.py: four server processes "
            "and the object store, no chain, signatures or database), submission only: "
            f"{bf['median_s']:.2f} s, {bf['median_ratio']:.2f}x MPyC alone (rounds: "
            + ", ".join(f"{r['ratio']:.2f}x" for r in bf["rounds"])
            + "), a floor under the pipeline's submission",
            flush=True,
        )
    cpu = p["cpu"]
    print(
        f"CPU seconds during submission + job ({p['cold']:.2f} s wall, {os.cpu_count()} cores): "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
        + f"; total {sum(cpu.values()):.2f}",
        flush=True,
    )
    if p.get("single_s"):
        print(
            f"{p['single']} producers submitting alone: {p['single_s']:.2f} s "
            f"({p['single_s'] / p['single'] * 1000:.1f} ms each)",
            flush=True,
        )
    sc = scaling() if not args.no_scaling else None
    if sc:
        plots(sc, head)
        (DOCS / "analytics-scaling.md").write_text(report(head, sc, args))
        print(f"wrote {DOCS / 'analytics-scaling.md'}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"head": head, "scaling": sc}, indent=2))


if __name__ == "__main__":
    main()
