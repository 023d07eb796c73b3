"""Does the embedded chain get slower as it grows? A transaction's round trip, young and old.

anvil hashes its whole state again at every block, so a block costs more the more storage slots
the chain holds. On anvil's default EVM (prague) the block-hash history contract (EIP-2935)
adds a slot with every block, up to 8,191; the embedded chain runs cancun, the EVM the contracts
are compiled for (``servers.ANVIL_HARDFORK``), which keeps no such history. For each EVM this
starts a fresh anvil as the stack does, times ``--txs`` plain transfers (sign, send, poll for
the receipt: the lookup bench's baseline) on the young chain, mines ``--blocks`` empty blocks,
and times them again.

    .venv/bin/python bench/chain_growth.py                 # 4,000 blocks: about half a minute
    .venv/bin/python bench/chain_growth.py --blocks 8200   # past the history's 8,191 slots

Prints each EVM's p50 at both lengths and the ratio old / young; the young chain is the baseline
of its own run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lookup import chain_tx_round_trips

from shardline import servers

CHAIN_ID = 31337


def measure(hardfork: str | None, blocks: int, txs: int) -> dict:
    """One fresh anvil (as ``servers.anvil_spec`` starts it, on ``hardfork``; None: anvil's
    default): the p50 round trip on the young chain, the time to mine ``blocks``, p50 again.
    The round trip is the lookup bench's baseline (``chain_tx_round_trips``)."""
    with tempfile.TemporaryDirectory(prefix="chain-growth-") as d:
        port = servers.free_port()
        spec = servers.anvil_spec(Path(d), port, chain_id=CHAIN_ID, hardfork=hardfork)
        proc = servers.spawn(spec, Path(d) / "anvil.log")
        url = f"http://127.0.0.1:{port}"
        try:
            young = asyncio.run(chain_tx_round_trips(url, CHAIN_ID, txs))[0]
            t0 = time.perf_counter()
            servers._json_rpc(url, "anvil_mine", [hex(blocks)], timeout=600)
            mined_s = time.perf_counter() - t0
            old = asyncio.run(chain_tx_round_trips(url, CHAIN_ID, txs))[0]
            head = int(str(servers._json_rpc(url, "eth_blockNumber")), 16)
        finally:
            servers.stop_pid(proc.pid)
    return {
        "hardfork": hardfork or "anvil's default",
        "young_p50_ms": young.p50,
        "old_p50_ms": old.p50,
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
