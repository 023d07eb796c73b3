"""Records: a read through the pipeline beside the bare umbral-pre cost of the same steps.

It starts a fresh local stack (3 org nodes, each with its proxy) on free ports in a temporary
directory, stores a 1 KiB and a 1 MiB record, grants a reader 2-of-3, and measures in one run:

- bare: in this process, m re-encryptions (``umbral_pre.reencrypt``) and one
  ``decrypt_reencrypted`` of the same record: the cryptographic floor of a read; also the same plus
  the m capsule-fragment verifications a careful reader adds;
- pipeline: ``RecordsClient.get`` one read after another (chain reads, signed requests to the
  three proxies over NATS, each proxy's grant check on its chain endpoint and re-encryption, the
  ciphertext from the JetStream object store, verification of m cfrags, decryption), and then
  ``--concurrency`` reads at a time for throughput.

Target: pipeline p50 at most 3x the bare p50, for 1 MiB records as for 1 KiB ones. Timings are
reported, never asserted: the exit code is 0 unless something crashed.

    .venv/bin/python bench/records.py --samples 200 --concurrency 8 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import umbral_pre as umbral

from shardline import stack
from shardline.core import records as rc
from shardline.workers.records_client import RecordsClient

SIZES = {"1 KiB": 1024, "1 MiB": 1024 * 1024}
TARGET = 3.0


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def bare(size: int, samples: int, m: int = 2, n: int = 3) -> tuple[list[float], list[float]]:
    owner, reader = rc.PartyKeys.generate("owner"), rc.PartyKeys.generate("reader")
    plaintext = os.urandom(size)
    capsule_b, ciphertext = rc.encrypt(owner.umbral_pk, plaintext)
    capsule = umbral.Capsule.from_bytes(capsule_b)
    kfrags = [
        umbral.KeyFrag.from_bytes(k).skip_verification()
        for k in rc.make_kfrags(owner, reader.umbral_pk, m, n)
    ][:m]
    sk, opk = reader.umbral_sk, umbral.PublicKey.from_compressed_bytes(owner.umbral_pk)
    vpk = umbral.PublicKey.from_compressed_bytes(owner.verifying_pk)
    rpk = umbral.PublicKey.from_compressed_bytes(reader.umbral_pk)
    plain, verified = [], []
    for _ in range(samples):
        t = time.perf_counter()
        cfrags = [umbral.reencrypt(capsule=capsule, kfrag=k) for k in kfrags]
        out = umbral.decrypt_reencrypted(
            receiving_sk=sk,
            delegating_pk=opk,
            capsule=capsule,
            verified_cfrags=cfrags,
            ciphertext=ciphertext,
        )
        plain.append(time.perf_counter() - t)
        assert out == plaintext
        t = time.perf_counter()
        cfrags = [
            umbral.CapsuleFrag.from_bytes(bytes(umbral.reencrypt(capsule=capsule, kfrag=k))).verify(
                capsule=capsule, verifying_pk=vpk, delegating_pk=opk, receiving_pk=rpk
            )
            for k in kfrags
        ]
        umbral.decrypt_reencrypted(
            receiving_sk=sk,
            delegating_pk=opk,
            capsule=capsule,
            verified_cfrags=cfrags,
            ciphertext=ciphertext,
        )
        verified.append(time.perf_counter() - t)
    return plain, verified


async def read_many(client, reader, record_id, plaintext, reads: int, concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            assert (await client.get(reader, record_id)).plaintext == plaintext

    await asyncio.gather(*(one() for _ in range(reads)))


async def pipeline(cfg, samples: int, concurrency: int, rounds: int) -> dict:
    client = await RecordsClient.connect(
        cfg.nats_url, cfg.chain_rpc, cfg.deployment, name="bench-records", timeout_s=5.0
    )
    try:
        owner, reader = rc.PartyKeys.generate("bench-owner"), rc.PartyKeys.generate("bench-reader")
        await client.register(owner)
        await client.register(reader)
        out = {}
        for label, size in SIZES.items():
            plaintext = os.urandom(size)
            info = await client.put(owner, plaintext)
            g = await client.grant(
                owner,
                info.record_id,
                reader.id,
                threshold=2,
                proxies=["org1", "org2", "org3"],
                expires_at=int(time.time()) + 86400,
            )
            missing = await client.wait_held(g)
            assert not missing, f"proxies without a fragment: {missing}"
            for _ in range(5):  # warm the caches a long-lived reader has
                assert (await client.get(reader, info.record_id)).plaintext == plaintext
            lat = []
            for _ in range(samples):
                t = time.perf_counter()
                got = await client.get(reader, info.record_id)
                lat.append(time.perf_counter() - t)
                assert got.plaintext == plaintext
            reads = max(rounds, concurrency * 4)

            t = time.perf_counter()
            await read_many(client, reader, info.record_id, plaintext, reads, concurrency)
            rate = reads / (time.perf_counter() - t)
            out[label] = {"latency_s": lat, "reads_per_s": rate, "reads": reads}
        return out
    finally:
        await client.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--reads", type=int, default=100, help="reads in the throughput run")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the run directory and its logs")
    args = ap.parse_args()

    run_dir = Path(tempfile.mkdtemp(prefix="shardline-bench-records-"))
    print(f"starting a 3-org stack in {run_dir} ...", flush=True)
    cfg = stack.up(run_dir, orgs=3, threshold=2, ports=stack.Ports.free(), say=lambda _m: None)
    try:
        measured = asyncio.run(pipeline(cfg, args.samples, args.concurrency, args.reads))
    finally:
        stack.down(run_dir, say=lambda _m: None)
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)

    report = {}
    print(
        f"\nrecords read, 2-of-3 proxies, {args.samples} sequential reads; "
        f"throughput with {args.concurrency} at a time (ms unless said)\n"
    )
    head = (
        f"{'record':<7} {'bare p50':>9} {'+verify':>8} {'pipe p50':>9} {'p95':>7} {'ratio':>6} "
        f"{'vs +verify':>10} {'reads/s':>8} {'bare/s':>8} {'target':>7}"
    )
    print(head)
    for label, size in SIZES.items():
        plain, verified = bare(size, max(args.samples, 50))
        m = measured[label]
        b50, v50 = statistics.median(plain) * 1e3, statistics.median(verified) * 1e3
        p50, p95 = pct(m["latency_s"], 50) * 1e3, pct(m["latency_s"], 95) * 1e3
        ratio = p50 / b50
        bare_rate = 1000 / b50
        ok = "met" if ratio <= TARGET else "NOT met"
        print(
            f"{label:<7} {b50:9.2f} {v50:8.2f} {p50:9.2f} {p95:7.2f} {ratio:5.1f}x "
            f"{p50 / v50:9.1f}x {m['reads_per_s']:8.1f} {bare_rate:8.1f} {ok:>7}"
        )
        report[label] = {
            "bare_p50_ms": b50,
            "bare_with_verify_p50_ms": v50,
            "pipeline_p50_ms": p50,
            "pipeline_p95_ms": p95,
            "ratio_p50": ratio,
            "ratio_vs_verify": p50 / v50,
            "reads_per_s": m["reads_per_s"],
            "bare_reads_per_s_one_core": bare_rate,
            "throughput_ratio": m["reads_per_s"] / bare_rate,
            "target_met": ratio <= TARGET,
        }
    print(
        f"\nratio = pipeline p50 / bare p50 (m re-encryptions + one decryption); target <= {TARGET}x."
        "\n+verify = bare plus the m cfrag verifications every read must make."
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
