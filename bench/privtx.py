"""Private transactions with three stakeholders beside a plain public transaction, same chain,
same run.

It starts nats-server, a public anvil (with the Mediator and, for the baseline, SharedInventory
deployed on it in the open) and one anvil per stakeholder as its private EVM, and runs the three
facilitators as separate processes. Then, in one run:

- public: ``receiveGoods`` on the public SharedInventory, sent with ``Chain.send_call`` and
  awaited with ``Chain.mined``: one after another (p50), then ``--count`` in flight at once (tx/s);
- private: the same call sealed for the group, pushed, stored and submitted, until its
  ``PrivateTxFini`` arrives at the sender: one after another (p50: each sent alone, so the
  stakeholders execute the push and vote ahead, and ``submitVoted`` settles it in one public
  transaction), then ``--count`` with up to ``--window`` in flight (tx/s: ``submitMany`` and one
  ``voteMany`` per stakeholder per batch);
- BLS: the facilitators restarted with aggregate votes, ``--bls-samples`` one after another;
- gas: mean gasUsed of submit, voteMany (per vote) and voteAggregate, from the receipts;
- floor, before the facilitators start: the three stakeholders' executions alone (the call and
  the root each votes on, all three at once, straight to the private EVMs), then one public
  transaction; samples alternate with public transactions. No sealing, bus or signature: what a
  private transaction cannot go below on this machine, as a ratio to the public p50.

Targets: at least 137 private tx/s; private p50 at most 3x the public p50. Reported, never
asserted.

    .venv/bin/python bench/privtx.py --samples 100 --count 600 --window 128 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak

from shardline import privtx_local as pl
from shardline import servers
from shardline.contracts import mediator as med
from shardline.contracts.client import Chain
from shardline.contracts.deploy import deploy_contract
from shardline.core import privtx as pt
from shardline.workers.privtx_executor import Executor
from shardline.workers.privtx_sender import PrivateSender

ADMIN = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
TARGET_TPS = 137.0
TARGET_RATIO = 3.0
RECEIVE = keccak(text="receiveGoods(bytes32,uint256)")[:4]


def call(units: int) -> bytes:
    return RECEIVE + abi_encode(["bytes32", "uint256"], [b"sku:bench".ljust(32, b"\0"), units])


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes (Linux /proc).

    On a shared machine wall-clock figures move with everyone else's load; the CPU a
    transaction costs all the processes of the run (nodes, bus, facilitators, sender) does not."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


class Facilitators:
    def __init__(self, tmp: Path, common: dict, stakeholders, executors) -> None:
        self.tmp, self.common, self.stakeholders, self.executors = (
            tmp,
            common,
            stakeholders,
            executors,
        )
        self.procs: list[subprocess.Popen] = []

    def start(self, bls: bool) -> None:
        for i, s in enumerate(self.stakeholders):
            path = self.tmp / f"facilitator-{i}.json"
            path.write_text(
                json.dumps(
                    {
                        **self.common,
                        "name": s.name,
                        "account_key": s.account_key,
                        "sealing_sk": s.sealing_sk.hex(),
                        "bls_sk": s.bls_sk.hex(),
                        "executor_url": self.executors[i],
                        "db_path": str(self.tmp / f"facilitator-{i}.db"),
                        "bls": bls,
                    }
                )
            )
            log = open(self.tmp / f"facilitator-{i}.log", "ab")
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "shardline.privtx_local", str(path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            log.close()

    def stop(self) -> None:
        for p in self.procs:
            servers.stop_pid(p.pid)
        self.procs = []


async def public_baseline(chain: Chain, account, inventory: str, samples: int, count: int):
    lat = []
    for i in range(samples):
        t0 = time.perf_counter()
        tx = await chain.send_call(account, inventory, call(i + 1), gas=120_000)
        await chain.mined(tx)
        lat.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    hashes = [
        await chain.send_call(account, inventory, call(i + 1), gas=120_000) for i in range(count)
    ]
    await asyncio.gather(*(chain.mined(h) for h in hashes))
    return lat, count / (time.perf_counter() - t0)


async def floor_run(
    chain: Chain, account, inventory: str, executor_urls: list[str], samples: int
) -> tuple[list[float], list[float]]:
    """The least a private transaction must do, with no sealing, bus, facilitator or signature.

    Each stakeholder runs the call on its own private EVM and reads the root it votes on (the
    facilitator's ``Executor.execute``: the call mined, then the root and the next snapshot in
    one batch), all three at once, then one public transaction settles it. Samples alternate
    with public transactions, so both see the machine in the same state; returns (public,
    floor) latencies."""
    executors = [Executor(u) for u in executor_urls]
    try:
        contracts = [await e.deploy() for e in executors]  # beside the groups' own contracts
        caller = "0x" + "5e" * 20
        pub, floor = [], []
        for i in range(samples + 3):  # the first three warm the connections up
            t0 = time.perf_counter()
            tx = await chain.send_call(account, inventory, call(i + 1), gas=120_000)
            await chain.mined(tx)
            t1 = time.perf_counter()
            await asyncio.gather(
                *(
                    e.execute(c, caller, call(i + 1))
                    for e, c in zip(executors, contracts, strict=True)
                )
            )
            tx = await chain.send_call(account, inventory, call(i + 1), gas=120_000)
            await chain.mined(tx)
            t2 = time.perf_counter()
            if i >= 3:
                pub.append(t1 - t0)
                floor.append(t2 - t1)
        return pub, floor
    finally:
        for e in executors:
            await e.close()


async def private_run(sender: PrivateSender, group: bytes, samples: int, count: int, window: int):
    lat, submitted = [], []
    for i in range(samples):
        t0 = time.perf_counter()
        sent = await sender.send(group, call(i + 1))
        submitted.append(time.perf_counter() - t0)
        out = await sender.outcome(group, sent.payload_hash)
        if out.status != pt.Status.YES:
            raise RuntimeError(f"private transaction settled {out.status.name}")
        lat.append(time.perf_counter() - t0)
    private_run.submitted = submitted  # type: ignore[attr-defined]
    if count == 0:
        return lat, 0.0, {}
    slots = asyncio.Semaphore(window)
    statuses: dict[str, int] = {}

    async def one(i: int) -> None:
        async with slots:
            sent = await sender.send(group, call(i + 1))
            out = await sender.outcome(group, sent.payload_hash, timeout_s=120)
            statuses[out.status.name] = statuses.get(out.status.name, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return lat, count / (time.perf_counter() - t0), statuses


async def mediator_txs(chain: Chain, mediator: str, start: int, end: int) -> list[dict]:
    """The transactions to the Mediator in blocks start..end."""
    txs = []
    for b in range(start, end + 1):
        block = await chain.rpc.call("eth_getBlockByNumber", [hex(b), True])
        txs += [t for t in block["transactions"] if (t.get("to") or "").lower() == mediator.lower()]
    return txs


async def gas_report(chain: Chain, mediator: str, start: int, end: int) -> dict[str, float]:
    used: dict[str, list[int]] = {}
    votes_in_many: list[int] = []
    submits_in_many: list[int] = []
    for t in await mediator_txs(chain, mediator, start, end):
        receipt = await chain.rpc.call("eth_getTransactionReceipt", [t["hash"]])
        if int(receipt["status"], 16) != 1:
            continue
        sel = bytes.fromhex(t["input"][2:10])
        name = {
            med.SUBMIT: "submit",
            med.SUBMIT_MANY: "submitMany",
            med.SUBMIT_VOTED: "submitVoted",
            med.VOTE_MANY: "voteMany",
            med.VOTE_AGGREGATE: "voteAggregate",
            med.EXPIRE: "expire",
        }.get(sel, "other")
        used.setdefault(name, []).append(int(receipt["gasUsed"], 16))
        if name in ("voteMany", "submitMany"):
            # the first array's length: its offset is the second head word
            args = bytes.fromhex(t["input"][10:])
            offset = int.from_bytes(args[32:64], "big")
            n = int.from_bytes(args[offset : offset + 32], "big")
            (votes_in_many if name == "voteMany" else submits_in_many).append(n)
    out = {f"{k} gas (mean)": statistics.fmean(v) for k, v in used.items()}
    if votes_in_many:
        out["votes per voteMany (mean)"] = statistics.fmean(votes_in_many)
        out["voteMany gas per vote"] = sum(used["voteMany"]) / sum(votes_in_many)
    if submits_in_many:
        out["payloads per submitMany (mean)"] = statistics.fmean(submits_in_many)
        out["submitMany gas per payload"] = sum(used["submitMany"]) / sum(submits_in_many)
    return out


async def main(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="privtx-bench-"))
    procs = []
    fac = None
    try:
        nport, mport = servers.free_port(), servers.free_port()
        procs.append(servers.spawn(servers.nats_spec(tmp / "nats", nport, mport), tmp / "nats.log"))
        nats_url = f"nats://127.0.0.1:{nport}"
        p, chain_rpc = pl.start_executor(tmp / "public")
        procs.append(p)
        executors = []
        for i in range(3):
            p, url = pl.start_executor(tmp / f"executor-{i}")
            procs.append(p)
            executors.append(url)
        chain = await Chain.connect(chain_rpc)
        admin = Account.from_key(ADMIN)
        mediator = await deploy_contract(chain, admin, "Mediator")
        inventory = await deploy_contract(chain, admin, "SharedInventory")
        start = int(await chain.rpc.call("eth_blockNumber", []), 16)
        stakeholders = [pl.Stakeholder.generate(n) for n in ("acme", "bolt", "crane")]
        sender_key = "0x" + secrets.token_bytes(32).hex()
        public_key = "0x" + secrets.token_bytes(32).hex()
        await pl.fund(
            chain,
            Account.from_key(sender_key).address,
            Account.from_key(public_key).address,
            *(s.address for s in stakeholders),
        )
        common = {
            "chain_rpc": chain_rpc,
            "mediator": mediator,
            "start_block": start,
            "nats_url": nats_url,
        }
        # The floor first, with no facilitator running (they wake for every public block), its
        # samples alternating with public transactions so that both see the same machine.
        floor_pub, floor_lat = await floor_run(
            chain, Account.from_key(public_key), inventory, executors, args.samples
        )
        fac = Facilitators(tmp, common, stakeholders, executors)
        fac.start(bls=False)
        sender = await PrivateSender.connect(
            nats_url,
            chain_rpc,
            mediator,
            sender_key,
            chain_ws=chain_rpc.replace("http://", "ws://"),
        )
        sender_addr = Account.from_key(sender_key).address
        group = await pl.create_group(chain, admin, mediator, sender_addr, stakeholders, bls=False)
        await asyncio.sleep(1.0)  # the facilitators deploy the group's private contract
        await private_run(sender, group, 3, 0, 1)  # warm up

        roles = {
            "sender (this process)": [os.getpid()],
            "nats-server": [procs[0].pid],
            "public anvil": [procs[1].pid],
            "executors (3 anvils)": [p.pid for p in procs[2:5]],
            "facilitators (3)": [p.pid for p in fac.procs],
        }
        pids = [pid for group_pids in roles.values() for pid in group_pids]
        c0 = cpu_s(pids)
        pub_lat, pub_tps = await public_baseline(
            chain, Account.from_key(public_key), inventory, args.samples, args.count
        )
        c1 = cpu_s(pids)
        by_role = {role: cpu_s(p) for role, p in roles.items()}
        b0 = int(await chain.rpc.call("eth_blockNumber", []), 16)
        priv_lat, _, _ = await private_run(sender, group, args.samples, 0, 1)
        b_seq = int(await chain.rpc.call("eth_blockNumber", []), 16)
        submitted_seq = private_run.submitted  # type: ignore[attr-defined]
        seq_txs = len(await mediator_txs(chain, mediator, b0 + 1, b_seq))
        _, priv_tps, statuses = await private_run(sender, group, 0, args.count, args.window)
        c2 = cpu_s(pids)
        submit_p50 = pct(submitted_seq, 50)
        n_priv = args.samples + args.count
        by_role = {role: 1000 * (cpu_s(p) - by_role[role]) / n_priv for role, p in roles.items()}
        load = os.getloadavg()
        b1 = int(await chain.rpc.call("eth_blockNumber", []), 16)
        gas_tx = await gas_report(chain, mediator, b0, b1)

        fac.stop()
        fac.start(bls=True)
        bls_group = await pl.create_group(
            chain, admin, mediator, sender_addr, stakeholders, bls=True
        )
        await asyncio.sleep(3.0)  # restart + join
        b2 = int(await chain.rpc.call("eth_blockNumber", []), 16)
        bls_lat, _, _ = await private_run(sender, bls_group, args.bls_samples, 0, 1)
        b3 = int(await chain.rpc.call("eth_blockNumber", []), 16)
        gas_bls = await gas_report(chain, mediator, b2, b3)
        await sender.close()
        await chain.close()

        ms = 1000.0
        result = {
            "public tx p50 ms": pct(pub_lat, 50) * ms,
            "public tx/s (pipelined)": pub_tps,
            "private tx p50 ms (votes ahead)": pct(priv_lat, 50) * ms,
            "private tx p90 ms (votes ahead)": pct(priv_lat, 90) * ms,
            "  of which until the submission was mined (p50 ms)": submit_p50 * ms,
            "  Mediator transactions per private tx (sent alone)": seq_txs / args.samples,
            "private tx/s (window: submitMany, voteMany)": priv_tps,
            "private outcomes": statuses,
            "private tx p50 ms (BLS aggregate)": pct(bls_lat, 50) * ms,
            "private p50 / public p50": pct(priv_lat, 50) / pct(pub_lat, 50),
            "private BLS p50 / public p50": pct(bls_lat, 50) / pct(pub_lat, 50),
            "private tx/s / target 137": priv_tps / TARGET_TPS,
            "floor: 3 executions at once + 1 public tx (p50 ms)": pct(floor_lat, 50) * ms,
            "floor p50 / public p50 (alternating samples)": pct(floor_lat, 50) / pct(floor_pub, 50),
            "floor p50 / public p50 (the baseline above)": pct(floor_lat, 50) / pct(pub_lat, 50),
            "CPU ms per public tx (all processes)": 1000 * (c1 - c0) / (args.samples + args.count),
            "CPU ms per private tx (all processes)": 1000 * (c2 - c1) / (args.samples + args.count),
            "CPU ms per private tx, by process": by_role,
            "load average (1, 5, 15 min) after": f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}",
            "gas, one-transaction votes": gas_tx,
            "gas, BLS aggregate votes": gas_bls,
        }
        return result
    finally:
        if fac is not None:
            fac.stop()
        for p in procs:
            servers.stop_pid(p.pid)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")


def run() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--samples", type=int, default=60, help="sequential transactions per kind")
    ap.add_argument("--count", type=int, default=400, help="transactions for throughput")
    ap.add_argument("--window", type=int, default=128, help="private transactions in flight")
    ap.add_argument("--bls-samples", type=int, default=20)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory and logs")
    args = ap.parse_args()
    result = asyncio.run(main(args))
    for k, v in result.items():
        if isinstance(v, dict):
            print(f"{k}:")
            for k2, v2 in v.items():
                print(f"  {k2:34s} {v2:,.1f}" if isinstance(v2, float) else f"  {k2:34s} {v2}")
        elif isinstance(v, str):
            print(f"{k:40s} {v}")
        else:
            print(f"{k:40s} {v:,.2f}")
    p50 = result["private p50 / public p50"]
    tps = result["private tx/s (window: submitMany, voteMany)"]
    print(
        f"targets: private p50 <= {TARGET_RATIO}x public ({'met' if p50 <= TARGET_RATIO else 'NOT met'}: "
        f"{p50:.2f}x); >= {TARGET_TPS:.0f} private tx/s ({'met' if tps >= TARGET_TPS else 'NOT met'}: "
        f"{tps:.1f})"
    )
    floor = result["floor p50 / public p50 (alternating samples)"]
    print(
        f"floor: the three executions and one public transaction alone take {floor:.2f}x a public "
        f"transaction on this machine (target {TARGET_RATIO}x for the whole private transaction)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    run()
