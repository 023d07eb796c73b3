"""Does the embedded chain get slower as it grows? A transaction's round trip, young and old.

anvil hashes its whole state again at every block, so a block costs more the more storage slots
the chain holds. On anvil's default EVM (prague) the block-hash history contract (EIP-2935)
adds a slot with every block, up to 8,191; the embedded chain runs cancun, the EVM the contracts
are compiled for (``servers.ANVIL_HARDFORK``), which keeps no such history. For each EVM this
starts a fresh anvil as the stack does, times ``--txs`` plain transfers (sign, send, poll for the
receipt) on the young chain, mines ``--blocks`` empty blocks, and times them again.

    .venv/bin/python bench/chain_growth.py                 # 4,000 blocks: about half a minute
    .venv/bin/python bench/chain_growth.py --blocks 8200   # past the history's 8,191 slots

Prints each EVM's p50 at both lengths and the ratio old / young; the young chain is the baseline
of its own run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from eth_account import Account

from shardline import servers
from shardline.stack import ANVIL_ADMIN_KEY


def _rpc(url: str, method: str, params: list) -> object:
    return servers._json_rpc(url, method, params, timeout=600)


def _round_trips(url: str, n: int) -> list[float]:
    """``n`` sequential 0-wei transfers: send, then poll until the receipt is there (ms)."""
    acct = Account.from_key(ANVIL_ADMIN_KEY)
    nonce = int(_rpc(url, "eth_getTransactionCount", [acct.address, "pending"]), 16)
    chain_id = int(_rpc(url, "eth_chainId", []), 16)
    out = []
    for i in range(n):
        tx = acct.sign_transaction(
            {
                "to": acct.address,
                "value": 0,
                "gas": 21_000,
                "maxFeePerGas": 10**11,
                "maxPriorityFeePerGas": 1,
                "nonce": nonce + i,
                "chainId": chain_id,
                "type": 2,
            }
        )
        t0 = time.perf_counter()
        h = _rpc(url, "eth_sendRawTransaction", [tx.raw_transaction.to_0x_hex()])
        while _rpc(url, "eth_getTransactionReceipt", [h]) is None:
            pass
        out.append((time.perf_counter() - t0) * 1000)
    return out


def measure(hardfork: str | None, blocks: int, txs: int) -> dict:
    """One fresh anvil (as ``servers.anvil_spec`` starts it, on ``hardfork``; None: anvil's
    default): p50 round trip on the young chain, the time to mine ``blocks``, p50 again."""
    with tempfile.TemporaryDirectory(prefix="chain-growth-") as d:
        port = servers.free_port()
        spec = servers.anvil_spec(Path(d), port)
        argv = list(spec.argv)
        i = argv.index("--hardfork")
        if hardfork is None:
            del argv[i : i + 2]
        else:
            argv[i + 1] = hardfork
        proc = servers.spawn(
            servers.ServerSpec(spec.name, argv, spec.healthy, spec.ports), Path(d) / "anvil.log"
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while not spec.healthy():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"anvil did not start: {Path(d) / 'anvil.log'}")
                time.sleep(0.05)
            young = _round_trips(url, txs)
            t0 = time.perf_counter()
            _rpc(url, "anvil_mine", [hex(blocks)])
            mined_s = time.perf_counter() - t0
            old = _round_trips(url, txs)
            head = int(_rpc(url, "eth_blockNumber", []), 16)
        finally:
            servers.stop_pid(proc.pid)
    return {
        "hardfork": hardfork or "anvil's default",
        "young_p50_ms": statistics.median(young),
        "old_p50_ms": statistics.median(old),
        "blocks": head,
        "mine_s": mined_s,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=4000, help="empty blocks mined in between")
    ap.add_argument("--txs", type=int, default=100, help="transfers timed at each length")
    args = ap.parse_args()
    rows = [measure(servers.ANVIL_HARDFORK, args.blocks, args.txs)]
    rows.append(measure(None, args.blocks, args.txs))
    print(f"anvil transfer round trip (send + receipt), p50 of {args.txs}, {sys.platform}")
    print(
        f"{'EVM':>18} {'young ms':>9} {'old ms':>9} {'at block':>9} {'old/young':>10} {'mine s':>8}"
    )
    for r in rows:
        print(
            f"{r['hardfork']:>18} {r['young_p50_ms']:9.2f} {r['old_p50_ms']:9.2f} "
            f"{r['blocks']:9d} {r['old_p50_ms'] / r['young_p50_ms']:9.2f}x {r['mine_s']:8.1f}"
        )
    ours = rows[0]
    print(
        f"the embedded chain ({servers.ANVIL_HARDFORK}) at block {ours['blocks']}: "
        f"{ours['old_p50_ms'] / ours['young_p50_ms']:.2f}x its young round trip"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
