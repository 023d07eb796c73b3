"""The floor of the analytics pipeline on this machine: the computation and the bus, nothing else.

``bench/analytics.py`` compares the pipeline (mean and variance over 100k producers, 4 servers,
t = 1) with MPyC alone (target: at most 1.5x). Its "computation alone" is a floor without any
process boundary. This one adds only what moving the inputs to four server processes must cost,
with the project's own primitives and the pipeline's durable transport:

- the timing process, standing for the collectors: each batch of rows range checked, encoded
  (sketch and aux bits) and shared t-of-n (``analytics_batch.share_batch``, in a thread so that
  the next batch is shared while the last is stored), each server's part sealed to it and put
  in a JetStream object store (``bus.blobs.BlobStore``, file storage, as the pipeline keeps
  them for a server that restarts), then one small message per server naming the part;
- each of four server processes fetches its part, unseals it, hashes it against the digest in
  the message, evaluates its range-check values and sums the rows
  (``AnalyticsServer.check_and_sum``), and publishes its check values to the other servers;
- a server is done with a batch once it has all four servers' check values and the verdict
  (``shared_checks.verdict``); the clock stops when every server is done with every batch.

No chain (no digest on chain, no job, no block hash in the check's seed), no signatures, no
schema checks of the messages, no database, no logs. The pipeline's time also includes its job
(open, commit, reveal, decode, accept), so the submission alone is compared here. Its own
nats-server; MPyC alone is measured in the same run, alternating with the rounds.

    .venv/bin/python bench/analytics_floor.py                # 100k rows, 10 batches, 3 rounds
    .venv/bin/python bench/analytics_floor.py --rows 20000
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

BUCKET = "floor-inputs"
SERVERS = [1, 2, 3, 4]
THRESHOLD = 1


def server_key(x: int):
    from nacl.public import PrivateKey

    return PrivateKey((f"floor-server-{x}".encode() * 32)[:32])  # a measurement, not a secret


# ---- a server process ----------------------------------------------------------------------
async def server(nats_url: str, x: int) -> None:
    import nats
    from analytics import BENCH_SCHEMA  # bench/analytics.py: the same data set

    from shardline.bus.blobs import BlobStore
    from shardline.core import analytics as an
    from shardline.core import analytics_batch as ab
    from shardline.core import sealing
    from shardline.core import shared_checks as sc
    from shardline.workers.analytics_server import AnalyticsServer

    lay = sc.layout(an.Schema.from_dict(BENCH_SCHEMA))
    key = server_key(x)
    nc = await nats.connect(nats_url)
    blobs = await BlobStore.open(nc.jetstream(), BUCKET)
    points: dict[str, dict[int, sc.CheckPoint]] = {}  # batch -> the servers' check values
    mine: set[str] = set()  # batches this server has checked

    async def settle(batch: str) -> None:
        got = points.get(batch, {})
        if batch in mine and len(got) == len(SERVERS):
            reason = sc.verdict(got, THRESHOLD)
            await nc.publish("floor.done", json.dumps({"x": x, "ok": reason is None}).encode())
            del points[batch]

    async def on_part(msg) -> None:
        m = json.loads(msg.data)
        part = sealing.unseal(await blobs.get(m["object"]), key)
        if hashlib.sha256(part).hexdigest() != m["digest"]:
            raise ValueError("the part does not hash to its digest")
        body, w, eta = ab.split_part(lay, part, m["rows"], m["seeded"])
        point, _sums = AnalyticsServer.check_and_sum(lay, body, m["rows"], x, w, eta, b"\0" * 32)
        mine.add(m["batch"])
        values = {"batch": m["batch"], "x": x, "c": str(point.consistency), "r": str(point.rules)}
        await nc.publish("floor.point", json.dumps(values).encode())

    async def on_point(msg) -> None:
        m = json.loads(msg.data)
        pts = points.setdefault(m["batch"], {})
        pts[m["x"]] = sc.CheckPoint(int(m["c"]), int(m["r"]))
        await settle(m["batch"])

    await nc.subscribe(f"floor.part.{x}", cb=on_part)
    await nc.subscribe("floor.point", cb=on_point)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


# ---- the timing process --------------------------------------------------------------------
async def submit(nats_url: str, n: int, batches: int) -> float:
    """One round: every batch shared, sealed, stored and announced; seconds until every server
    has its verdict on every batch."""
    import nats
    from analytics import BENCH_SCHEMA, values

    from shardline.bus.blobs import BlobStore
    from shardline.core import analytics as an
    from shardline.core import analytics_batch as ab
    from shardline.core import sealing

    schema = an.Schema.from_dict(BENCH_SCHEMA)
    rows = [{"value": v} for v in values(n)]
    per = -(-n // batches)
    pks = {x: bytes(server_key(x).public_key) for x in SERVERS}
    nc = await nats.connect(nats_url)
    blobs = await BlobStore.open(nc.jetstream(), BUCKET)
    done = 0
    all_done = asyncio.get_running_loop().create_future()
    expected = len(SERVERS) * len(range(0, n, per))

    async def on_done(msg) -> None:
        nonlocal done
        if all_done.done():
            return
        if not json.loads(msg.data)["ok"]:  # the round ends here, not at its timeout
            all_done.set_exception(RuntimeError("a server rejected an honest batch"))
            return
        done += 1
        if done == expected:
            all_done.set_result(None)

    await nc.subscribe("floor.done", cb=on_done)
    await nc.flush()

    def shared(chunk: list[dict]) -> tuple[ab.SharedBatch, dict[int, bytes]]:
        b = ab.share_batch(schema, chunk, THRESHOLD, SERVERS)
        return b, {x: sealing.seal(b.parts[x], pks[x]) for x in SERVERS}

    async def send(b: ab.SharedBatch, sealed: dict[int, bytes]) -> None:
        names = await asyncio.gather(*(blobs.put(sealed[x]) for x in SERVERS))
        batch = hashlib.sha256(b"".join(b.hashes)).hexdigest()  # as the chain's digest
        for x, name in zip(SERVERS, names, strict=True):
            note = {
                "batch": batch,
                "object": name,
                "digest": b.hashes[x - 1].hex(),
                "rows": b.rows,
                "seeded": x in b.seeded,
            }
            await nc.publish(f"floor.part.{x}", json.dumps(note).encode())

    t0 = time.perf_counter()
    sending = []
    for i in range(0, n, per):
        b, sealed = await asyncio.to_thread(shared, rows[i : i + per])
        sending.append(asyncio.create_task(send(b, sealed)))
    await asyncio.gather(*sending)
    await asyncio.wait_for(all_done, 120)
    took = time.perf_counter() - t0
    await nc.close()
    return took


def cpu_seconds(procs: list[subprocess.Popen]) -> dict[str, float]:
    """CPU seconds (user + system) so far: this process, nats-server, the servers together."""
    import psutil

    def of(pid: int) -> float:
        return sum(psutil.Process(pid).cpu_times()[:2])

    return {
        "client (this process)": sum(psutil.Process().cpu_times()[:2]),
        "nats-server": of(procs[0].pid),
        "4 servers": sum(of(p.pid) for p in procs[1:]),
    }


def measure(
    n: int, batches: int, rounds: int, cpu: list[dict[str, float]] | None = None
) -> list[tuple[float, float]]:
    """Start the floor's nats-server and servers; each round's (floor s, MPyC alone s), and
    into ``cpu`` each round's CPU seconds by process."""
    from analytics import mpyc_alone
    from lookup_floor import processes, start_ready

    from shardline import servers

    cpu = [] if cpu is None else cpu

    with tempfile.TemporaryDirectory(prefix="analytics-floor-") as tmp, processes(tmp) as procs:
        port = servers.free_port()
        nats_url = f"nats://127.0.0.1:{port}"
        spec = servers.nats_spec(Path(tmp) / "nats", port, servers.free_port())
        procs.append(servers.spawn(spec, Path(tmp) / "nats.log"))
        for x in SERVERS:
            argv = [sys.executable, __file__, "--role", "server", "--nats", nats_url, "--x", str(x)]
            start_ready(procs, argv, Path(tmp) / f"server{x}")
        asyncio.run(submit(nats_url, min(n, 10_000), batches))  # warm: imports, buckets
        out = []
        for _ in range(rounds):
            mpc = mpyc_alone(n)["seconds"]
            before = cpu_seconds(procs)
            took = asyncio.run(submit(nats_url, n, batches))
            cpu.append({k: v - before[k] for k, v in cpu_seconds(procs).items()})
            out.append((took, mpc))
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batches", type=int, default=10, help="as the bench's collectors")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--role", choices=["server"], help=argparse.SUPPRESS)
    ap.add_argument("--nats", help=argparse.SUPPRESS)
    ap.add_argument("--x", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "server":
        import uvloop

        uvloop.run(server(args.nats, args.x))
        return
    print(
        f"floor of the analytics submission: {args.rows:,} rows in {args.batches} batches, "
        f"{len(SERVERS)} server processes, t = {THRESHOLD}"
    )
    cpu: list[dict[str, float]] = []
    rounds = measure(args.rows, args.batches, args.rounds, cpu)
    for i, ((floor, mpc), used) in enumerate(zip(rounds, cpu, strict=True), 1):
        spent = ", ".join(f"{k} {v:.2f}" for k, v in used.items())
        print(
            f"round {i}: floor {floor:.3f} s, MPyC alone {mpc:.3f} s: {floor / mpc:.2f}x "
            f"(CPU s: {spent}; total {sum(used.values()):.2f})"
        )
    print(
        f"floor / MPyC alone, median of {args.rounds} rounds: "
        f"{statistics.median(f / m for f, m in rounds):.2f}x "
        "(the target is 1.5x for the whole pipeline, submission and job)"
    )


if __name__ == "__main__":
    main()
