"""Records: a read through the pipeline beside the bare umbral-pre cost of the same steps.

It starts a fresh local stack (3 org nodes, each with its proxy) on free ports in a temporary
directory, stores a 1 KiB and a 1 MiB record, grants a reader 2-of-3, and measures in one run:

- bare: in this process, m re-encryptions (``umbral_pre.reencrypt``) and one
  ``decrypt_reencrypted`` of the same record: the cryptographic floor of a read; also the same plus
  the m capsule-fragment verifications a reader that checks each cfrag as it comes adds;
- pipeline: ``RecordsClient.get`` one read after another (one signed request to m proxies
  over NATS, each proxy's grant from the book its chain event reader keeps and its
  re-encryption, the m cfrags opened from their frames, decryption, the cfrags verified only
  if they do not open the record) by a long-lived reader that has the
  ciphertext from an earlier read; ``fetch``: the same by a reader that fetches the ciphertext
  from the JetStream object store on every read; ``checked``: the first, verifying each cfrag
  as it comes (``verify_cfrags="always"``); all taken in turn with the bare samples, in an order rotated every round (a sample
  taken just after a read pays for that read's leftovers at the other processes), so that the
  machine's load weighs on each alike; and then ``--concurrency`` reads at a time for
  throughput.

Target: pipeline p50 at most 3x the bare p50, for 1 MiB records as for 1 KiB ones. Timings are
reported, never asserted: the exit code is 0 unless something crashed.

    .venv/bin/python bench/records.py --samples 200 --concurrency 8 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import umbral_pre as umbral
import uvloop

from shardline import stack
from shardline.core import records as rc
from shardline.workers.records_client import RecordsClient

BLOB_CACHE_BYTES = 64 * 1024 * 1024
# the reader's other choice of capsule-fragment verification, measured beside its default:
# each cfrag verified as it comes ("always"), where the default verifies them only when the m
# do not open the record (code from before that choice always verifies)
ALT_VERIFY = "always"
ALT = "checked"

SIZES = {"1 KiB": 1024, "1 MiB": 1024 * 1024}
TARGET = 3.0
AUDIT_SETTLE_S = 0.3


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


class Bare:
    """The cryptographic floor of one read, in this process: m ``reencrypt`` and one
    ``decrypt_reencrypted`` of the same record; ``verified`` adds the m ``CapsuleFrag.verify``
    a careful reader makes."""

    def __init__(self, size: int, m: int = 2, n: int = 3) -> None:
        owner, reader = rc.PartyKeys.generate("owner"), rc.PartyKeys.generate("reader")
        self.plaintext = os.urandom(size)
        capsule_b, self.ciphertext = rc.encrypt(owner.umbral_pk, self.plaintext)
        self.capsule = umbral.Capsule.from_bytes(capsule_b)
        self.kfrags = [
            umbral.KeyFrag.from_bytes(k).skip_verification()
            for k in rc.make_kfrags(owner, reader.umbral_pk, m, n)
        ][:m]
        self.sk = reader.umbral_sk
        self.opk = umbral.PublicKey.from_compressed_bytes(owner.umbral_pk)
        self.vpk = umbral.PublicKey.from_compressed_bytes(owner.verifying_pk)
        self.rpk = umbral.PublicKey.from_compressed_bytes(reader.umbral_pk)

    def plain(self) -> float:
        t = time.perf_counter()
        cfrags = [umbral.reencrypt(capsule=self.capsule, kfrag=k) for k in self.kfrags]
        out = umbral.decrypt_reencrypted(
            receiving_sk=self.sk,
            delegating_pk=self.opk,
            capsule=self.capsule,
            verified_cfrags=cfrags,
            ciphertext=self.ciphertext,
        )
        took = time.perf_counter() - t
        assert out == self.plaintext
        return took

    def verified(self) -> float:
        t = time.perf_counter()
        cfrags = [
            umbral.CapsuleFrag.from_bytes(
                bytes(umbral.reencrypt(capsule=self.capsule, kfrag=k))
            ).verify(
                capsule=self.capsule,
                verifying_pk=self.vpk,
                delegating_pk=self.opk,
                receiving_pk=self.rpk,
            )
            for k in self.kfrags
        ]
        umbral.decrypt_reencrypted(
            receiving_sk=self.sk,
            delegating_pk=self.opk,
            capsule=self.capsule,
            verified_cfrags=cfrags,
            ciphertext=self.ciphertext,
        )
        return time.perf_counter() - t


async def read_many(client, reader, record_id, plaintext, reads: int, concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            assert (await client.get(reader, record_id)).plaintext == plaintext

    await asyncio.gather(*(one() for _ in range(reads)))


async def connect(
    cfg, name: str, keep_blobs: bool, spare: int | None = None, verify: str | None = None
) -> RecordsClient:
    kwargs = {}
    params = inspect.signature(RecordsClient.connect).parameters
    if "blob_cache_bytes" in params:
        kwargs["blob_cache_bytes"] = BLOB_CACHE_BYTES if keep_blobs else 0
    if spare is not None and "spare_proxies" in params:
        kwargs["spare_proxies"] = spare
    if verify is not None and "verify_cfrags" in params:
        kwargs["verify_cfrags"] = verify
    return await RecordsClient.connect(
        cfg.nats_url, cfg.chain_rpc, cfg.deployment, name=name, timeout_s=5.0, **kwargs
    )


async def timed_get(client, reader, record_id, plaintext) -> float:
    t = time.perf_counter()
    got = await client.get(reader, record_id)
    took = time.perf_counter() - t
    assert got.plaintext == plaintext
    return took


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stack_pids(cfg) -> dict[str, int]:
    """The processes a read wakes: nats-server, the org nodes (proxies), anvil."""
    pids = {}
    for f in sorted((Path(cfg.run_dir) / "pids").glob("*.json")):
        if f.stem == "nats" or f.stem == "anvil" or f.stem.startswith("node-"):
            pids[f.stem] = json.loads(f.read_text())["pid"]
    return pids


async def cpu_per_read(cfg, client, reader, record_id, plaintext, bare, reads: int) -> dict:
    """CPU a read costs, summed over every process it wakes (its reader, nats-server, the
    proxies' org nodes, anvil), against the CPU of the bare steps in this process: unlike
    latency, this hardly moves with the machine's load. What the processes use while idle, over
    the same time, is taken off."""
    pids = stack_pids(cfg)

    def sample() -> dict[str, float]:
        return {k: cpu_s(p) for k, p in pids.items()} | {"reader": time.process_time()}

    t, a = time.perf_counter(), sample()
    await asyncio.sleep(1.0)
    idle_s, b = time.perf_counter() - t, sample()
    idle = {k: (b[k] - a[k]) / idle_s for k in a}
    t = time.perf_counter()
    for _ in range(reads):
        await timed_get(client, reader, record_id, plaintext)
    await asyncio.sleep(AUDIT_SETTLE_S)  # the proxies write their audit rows in batches
    wall, c = time.perf_counter() - t, sample()
    per = {k: max(0.0, (c[k] - b[k] - idle[k] * wall) / reads) for k in a}
    p0 = time.process_time()
    for _ in range(reads):
        bare.plain()
    bare_cpu = (time.process_time() - p0) / reads
    return {
        "per_process_ms": {k: v * 1e3 for k, v in per.items()},
        "pipeline_ms": sum(per.values()) * 1e3,
        "bare_ms": bare_cpu * 1e3,
    }


async def pipeline(cfg, samples: int, concurrency: int, rounds: int, spare: int | None) -> dict:
    """Bare, pipeline and pipeline-without-kept-ciphertext samples taken in turn, so that
    the machine's load weighs on each alike."""
    kept = await connect(cfg, "bench-records", keep_blobs=True, spare=spare)
    fetching = await connect(cfg, "bench-records-fetching", keep_blobs=False, spare=spare)
    # the same reader verifying each capsule fragment as it comes
    checked = await connect(
        cfg, "bench-records-alt", keep_blobs=True, spare=spare, verify=ALT_VERIFY
    )
    try:
        owner, reader = rc.PartyKeys.generate("bench-owner"), rc.PartyKeys.generate("bench-reader")
        await kept.register(owner)
        await kept.register(reader)
        out = {}
        for label, size in SIZES.items():
            bare = Bare(size)
            plaintext = os.urandom(size)
            info = await kept.put(owner, plaintext)
            g = await kept.grant(
                owner,
                info.record_id,
                reader.id,
                threshold=2,
                proxies=["org1", "org2", "org3"],
                expires_at=int(time.time()) + 86400,
            )
            missing = await kept.wait_held(g)
            assert not missing, f"proxies without a fragment: {missing}"
            for _ in range(5):  # warm the caches a long-lived reader has
                await timed_get(kept, reader, info.record_id, plaintext)
                await timed_get(fetching, reader, info.record_id, plaintext)
                await timed_get(checked, reader, info.record_id, plaintext)
                bare.plain(), bare.verified()
            r = {"bare": [], "verified": [], "pipeline": [], "fetching": [], "checked": []}
            kinds = {
                "bare": bare.plain,
                "pipeline": partial(timed_get, kept, reader, info.record_id, plaintext),
                "verified": bare.verified,
                "fetching": partial(timed_get, fetching, reader, info.record_id, plaintext),
                "checked": partial(timed_get, checked, reader, info.record_id, plaintext),
            }
            order = list(kinds)
            for i in range(samples):
                # rotated, so that each kind follows each other kind as often
                for kind in order[i % len(order) :] + order[: i % len(order)]:
                    took = kinds[kind]()
                    r[kind].append(await took if inspect.isawaitable(took) else took)
            r["cpu"] = await cpu_per_read(
                cfg, kept, reader, info.record_id, plaintext, bare, samples
            )
            reads = max(rounds, concurrency * 4)
            t = time.perf_counter()
            await read_many(kept, reader, info.record_id, plaintext, reads, concurrency)
            r["reads_per_s"] = reads / (time.perf_counter() - t)
            r["reads"] = reads
            out[label] = r
        # where the proxies took each request's grant from (the old proxies do not say)
        out["grant_reads"] = {
            org: (await kept.held_by(org) or {}).get("grant_reads")
            for org in ("org1", "org2", "org3")
        }
        return out
    finally:
        await kept.close()
        await fetching.close()
        await checked.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--reads", type=int, default=100, help="reads in the throughput run")
    ap.add_argument(
        "--spare-proxies",
        type=int,
        help="proxies asked beyond m at once (default: the reader's, records_client.SPARE_PROXIES)",
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the run directory and its logs")
    args = ap.parse_args()

    run_dir = Path(tempfile.mkdtemp(prefix="shardline-bench-records-"))
    print(f"starting a 3-org stack in {run_dir} ...", flush=True)
    cfg = stack.up(run_dir, orgs=3, threshold=2, ports=stack.Ports.free(), say=lambda _m: None)
    try:
        load_before = os.getloadavg()
        # the loop the gateway (which reads for REST callers) and the CLI run on
        measured = uvloop.run(
            pipeline(cfg, args.samples, args.concurrency, args.reads, args.spare_proxies)
        )
        load_after = os.getloadavg()
    finally:
        stack.down(run_dir, say=lambda _m: None)
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)

    report = {}
    print(
        f"\nrecords read, 2-of-3 proxies, {args.samples} sequential reads each way, taken in turn "
        f"with the bare samples; throughput with {args.concurrency} at a time (ms unless said)\n"
    )
    print(
        f"{'record':<7} {'bare p50':>9} {'+verify':>8} {'pipe p50':>9} {'p95':>7} {'ratio':>6} "
        f"{'vs +verify':>10} {'fetch p50':>10} {'ratio':>6} {ALT + ' p50':>11} {'reads/s':>8} "
        f"{'bare/s':>8} {'target':>7}"
    )
    for label in SIZES:
        m = measured[label]
        b50 = statistics.median(m["bare"]) * 1e3
        v50 = statistics.median(m["verified"]) * 1e3
        p50, p95 = pct(m["pipeline"], 50) * 1e3, pct(m["pipeline"], 95) * 1e3
        f50, f95 = pct(m["fetching"], 50) * 1e3, pct(m["fetching"], 95) * 1e3
        o50, o95 = pct(m["checked"], 50) * 1e3, pct(m["checked"], 95) * 1e3
        ratio, fratio = p50 / b50, f50 / b50
        bare_rate = 1000 / b50
        ok = ratio <= TARGET and fratio <= TARGET
        print(
            f"{label:<7} {b50:9.2f} {v50:8.2f} {p50:9.2f} {p95:7.2f} {ratio:5.1f}x "
            f"{p50 / v50:9.1f}x {f50:10.2f} {fratio:5.1f}x {o50:11.2f} {m['reads_per_s']:8.1f} "
            f"{bare_rate:8.1f} "
            f"{'met' if ok else 'NOT met':>7}"
        )
        report[label] = {
            "bare_p50_ms": b50,
            "bare_with_verify_p50_ms": v50,
            "pipeline_p50_ms": p50,
            "pipeline_p95_ms": p95,
            "ratio_p50": ratio,
            "ratio_vs_verify": p50 / v50,
            "fetching_p50_ms": f50,
            "fetching_p95_ms": f95,
            "fetching_ratio_p50": fratio,
            "alt_verify_cfrags": ALT_VERIFY,
            "alt_p50_ms": o50,
            "alt_p95_ms": o95,
            "reads_per_s": m["reads_per_s"],
            "bare_reads_per_s_one_core": bare_rate,
            "throughput_ratio": m["reads_per_s"] / bare_rate,
            "target_met": ok,
        }
    print(
        f"\nratio = p50 / bare p50 (m re-encryptions + one decryption); target <= {TARGET}x."
        "\n+verify = bare plus the m cfrag verifications every read must make;"
        "\nvs +verify = pipe p50 / +verify p50."
        "\npipe = a long-lived reader, which keeps ciphertexts it has read (by content hash);"
        "\nfetch = a reader that fetches the ciphertext from the object store on every read;"
        f"\n{ALT} = the pipe reader verifying each cfrag as it comes; the five kinds"
        "\nof sample are taken in turn, in an order rotated every round."
    )
    print(
        f"{ALT} p95: "
        + ", ".join(f"{label} {report[label]['alt_p95_ms']:.2f} ms" for label in SIZES)
    )
    print("\nCPU per read, summed over the processes it wakes (idle use taken off), in ms:")
    for label in SIZES:
        c = measured[label]["cpu"]
        parts = ", ".join(f"{k} {v:.2f}" for k, v in c["per_process_ms"].items())
        print(
            f"{label}: pipeline {c['pipeline_ms']:.2f} (= {parts}); bare {c['bare_ms']:.2f}; "
            f"ratio {c['pipeline_ms'] / c['bare_ms']:.1f}x"
        )
        report[label]["cpu_per_read"] = c
    print(f"grants from the proxies' books / read from the chain: {measured['grant_reads']}")
    report["grant_reads"] = measured["grant_reads"]
    print(
        "load average (1, 5, 15 min) before / after the reads: "
        + " / ".join(", ".join(f"{x:.2f}" for x in la) for la in (load_before, load_after))
    )
    report["load_average"] = {"before": load_before, "after": load_after}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
