"""The agreed history of a group, read from the public chain: what a stakeholder replays when its
executor lost its private state (killed, or started afresh without ``--state``).

The mediator settles every private transaction with a ``PrivateTxFini``; those with status YES
form one chain of agreed roots per group (each one's old root is the previous one's new root).
Replaying their calls in that order on a fresh copy of the group's private contract, each call
opened from its ``PrivateTxInit`` (the stakeholder's key wrap) and the sealed payload in the
object store, must reach every agreed root on the way; where it does not, the stakeholder is
out of sync and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from shardline.contracts import mediator as med
from shardline.contracts.cursor import Rpc
from shardline.core import privtx as pt


@dataclass(frozen=True)
class Agreed:
    init: med.TxInit
    fini: med.TxFini


async def _logs(rpc: Rpc, mediator: str, start: int, topic0: str, group: bytes) -> list:
    raw = await rpc.call(
        "eth_getLogs",
        [
            {
                "address": mediator,
                "fromBlock": hex(start),
                "toBlock": "latest",
                "topics": [topic0, "0x" + group.hex()],
            }
        ],
    )
    from shardline.contracts.cursor import raw_log

    logs = [raw_log(r) for r in raw or [] if not r.get("removed")]
    logs.sort(key=lambda lg: (lg.block_number, lg.log_index))
    return [med.decode_event(lg) for lg in logs]


async def agreed_history(rpc: Rpc, mediator: str, start: int, group: bytes) -> list[Agreed]:
    """The group's YES transactions in the order they settled, each with its PrivateTxInit."""
    inits = {
        ev.payload_hash: ev
        for ev in await _logs(rpc, mediator, start, med.TX_INIT, group)
        if isinstance(ev, med.TxInit)
    }
    out = []
    for ev in await _logs(rpc, mediator, start, med.TX_FINI, group):
        if isinstance(ev, med.TxFini) and ev.status == pt.Status.YES:
            init = inits.get(ev.payload_hash)
            if init is None:
                raise pt.PrivTxError(
                    f"payload {ev.payload_hash.hex()} settled YES in group {group.hex()} but "
                    "the node has no PrivateTxInit for it: read the chain from an archive node"
                )
            out.append(Agreed(init, ev))
    return out
