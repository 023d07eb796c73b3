"""The audit: every share an org served, matched to a LookupRequested on chain.

Each org's share node answers ``audit.served.<org>`` with its served log, signed with its key;
the chain's events are read here from the chain endpoint given. A served share with no on-chain
request (audit-after mode lets a node serve before the transaction settles) is unmatched once it
is older than the grace period; so is one whose requester or transport differs from the chain's.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from shardline.bus.connect import connect
from shardline.bus.envelope import canonical, unb64
from shardline.config import StackConfig
from shardline.contracts import registry
from shardline.contracts.client import Chain
from shardline.contracts.cursor import Rpc
from shardline.contracts.deploy import Deployment
from shardline.core import sealing
from shardline.workers.intake import GATEKEEPER_UPGRADED, LOOKUP_REQUESTED, decode_lookup


@dataclass
class AuditRow:
    guid: str
    org: str
    requester: str
    transport_key: str
    trigger: str
    served_at: float
    status: str  # matched | not_on_chain | mismatch | pending
    block: int | None = None
    detail: str = ""


@dataclass
class AuditReport:
    rows: list[AuditRow] = field(default_factory=list)
    unserved: list[str] = field(default_factory=list)  # on chain, no share served by anyone
    unreachable: list[str] = field(default_factory=list)  # orgs that did not answer

    @property
    def unmatched(self) -> list[AuditRow]:
        return [r for r in self.rows if r.status in ("not_on_chain", "mismatch")]

    def to_dict(self) -> dict:
        return {
            "rows": [asdict(r) for r in self.rows],
            "unserved": self.unserved,
            "unreachable": self.unreachable,
            "unmatched": len(self.unmatched),
        }


async def chain_lookups(chain: Chain, dep: Deployment) -> dict[str, list[dict]]:
    """Every LookupRequested of the deployment's Gatekeepers, by guid, oldest first (the chain
    keeps no set of used guids: a guid may be requested again, by anyone allowed to)."""
    rpc = Rpc(chain.rpc)
    latest = await rpc.block_number()
    gatekeepers = {(await registry.current_gatekeeper(chain, dep)).lower()}
    found: dict[str, list[dict]] = {}
    start = dep.block
    while start <= latest:
        end = min(latest, start + 9999)
        for lg in await rpc.logs(start, end, [], [LOOKUP_REQUESTED, GATEKEEPER_UPGRADED]):
            if (
                "0x" + lg.topics[0].hex() == GATEKEEPER_UPGRADED
                and lg.address == dep.governor.lower()
            ):
                gatekeepers.add("0x" + lg.topics[2][12:].hex())
            elif lg.address in gatekeepers:
                ev = decode_lookup(lg)
                found.setdefault(ev["guid"], []).append(ev)
        start = end + 1
    return found


ASK_ATTEMPTS = 3


async def served_log(nc, org_id: str, since: float, until: float | None):
    """An org's signed log of what it served. Asked again when no answer came: a node may be
    reconnecting (a bus server restarted or a cluster member was lost) for a few seconds."""
    for attempt in range(1, ASK_ATTEMPTS + 1):
        try:
            return await nc.request(
                f"audit.served.{org_id}",
                json.dumps({"since": since, "until": until}).encode(),
                timeout=3,
            )
        except (NatsTimeout, NoRespondersError):
            if attempt == ASK_ATTEMPTS:
                raise
            await asyncio.sleep(0.5 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


async def run(
    cfg: StackConfig,
    *,
    since: float = 0.0,
    until: float | None = None,
    grace_s: float = 30.0,
    rpc_url: str | None = None,
) -> AuditReport:
    dep = Deployment.from_dict(cfg.deployment or {})
    chain = await Chain.connect(rpc_url or cfg.chain_rpc, expected_chain_id=cfg.chain_id)
    nc = await connect(cfg.nats_url, "auditor", patient=False)
    report = AuditReport()
    try:
        on_chain = await chain_lookups(chain, dep)
        orgs = {
            p.id: p
            for p in await registry.list_participants(chain, dep)
            if p.kind == registry.KIND_ORG
        }
        served_guids: set[str] = set()
        now = time.time()
        for org_id, org in sorted(orgs.items()):
            try:
                msg = await served_log(nc, org_id, since, until)
                reply = json.loads(msg.data)
                sig = unb64(reply.pop("sig"))
                sealing.verify(canonical(reply), sig, org.signing_pk)
            except Exception:
                report.unreachable.append(org_id)
                continue
            for s in reply["served"]:
                served_guids.add(s["guid"])
                events = on_chain.get(s["guid"], [])
                ev = next(
                    (
                        e
                        for e in events
                        if e["requester"].lower() == s["requester"].lower()
                        and e["transport_key"] == s["transport_key"]
                    ),
                    None,
                )
                row = AuditRow(
                    s["guid"],
                    org_id,
                    s["requester"],
                    s["transport_key"],
                    s["trigger"],
                    s["served_at"],
                    "matched",
                )
                if not events:
                    row.status = "pending" if now - s["served_at"] < grace_s else "not_on_chain"
                    row.detail = "no LookupRequested on chain for this guid"
                elif ev is None:
                    row.status, row.block = "mismatch", events[0]["block_number"]
                    row.detail = "the chain names another requester or transport"
                else:
                    row.block = ev["block_number"]
                report.rows.append(row)
        report.unserved = sorted(g for g in on_chain if g not in served_guids)
    finally:
        await nc.close()
        await chain.close()
    report.rows.sort(key=lambda r: (r.served_at, r.org))
    return report
