"""A company registers its transports: split each sheet, commit on chain, send each org its share.

The chain transaction comes first, so that an org node can check a share against the on-chain
commitment when it arrives; the shares go through JetStream with a natural key (transport key,
version, org), so a second run of the same registration delivers nothing twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from eth_account import Account

from shardline.bus import envelope, subjects
from shardline.bus.connect import connect
from shardline.bus.envelope import b64
from shardline.bus.streams import ensure_streams, set_replicas
from shardline.config import StackConfig
from shardline.contracts import registry
from shardline.contracts.client import Chain, ChainRevert
from shardline.contracts.deploy import Deployment
from shardline.core import protocol
from shardline.core.cargo import CargoSheet
from shardline.core.ids import transport_key
from shardline.core.keys import ParticipantKeys


class RegistrationError(RuntimeError):
    pass


@dataclass
class RegisterReport:
    registered: list[str]
    skipped: list[str]


async def register(
    cfg: StackConfig,
    sheets: list[CargoSheet],
    *,
    company: str | None = None,
    threshold: int | None = None,
    progress: Callable[[int], None] = lambda _n: None,
    batch: int = 50,
) -> RegisterReport:
    dep = Deployment.from_dict(cfg.deployment or {})
    org_ids = [o.id for o in cfg.orgs]
    threshold = threshold or cfg.threshold
    keys = {o.id: ParticipantKeys.load(o.key_file) for o in cfg.orgs}
    report = RegisterReport([], [])
    nc = await connect(cfg.nats_url, "registrar")
    js = nc.jetstream()
    set_replicas(cfg.stream_replicas)
    await ensure_streams(js)
    chain = await Chain.connect(cfg.chain_rpc, expected_chain_id=cfg.chain_id)
    chain.gas_policy = cfg.gas
    try:
        directory = {p.id: p for p in await registry.list_participants(chain, dep)}
        for start in range(0, len(sheets), batch):
            chunk = sheets[start : start + batch]
            plans = []
            for sheet in chunk:
                owner = company or sheet.company
                if owner not in keys:
                    raise RegistrationError(
                        f"transport {sheet.transport_id} belongs to {owner!r}, which is not an org of this stack "
                        f"({', '.join(org_ids)}); pass --company to register it as one of them"
                    )
                key = transport_key(sheet.transport_id)
                if await registry.get_transport(chain, dep, key) is not None:
                    report.skipped.append(sheet.transport_id)
                    progress(1)
                    continue
                plan = protocol.register(sheet, key, org_ids, threshold)
                acct = Account.from_key(keys[owner].chain_key)
                tx = await registry.register_transport(
                    chain, acct, dep, key, plan.commitment, threshold, org_ids, wait=False
                )
                plans.append((sheet, owner, plan, tx))
            for sheet, _owner, _plan, tx in plans:
                try:
                    await chain.wait(tx)
                except ChainRevert as exc:
                    raise RegistrationError(
                        f"the chain refused transport {sheet.transport_id}: {exc.reason}"
                    ) from exc
            for sheet, owner, plan, _tx in plans:
                for share in plan.shares:
                    body = {
                        "transport_id": sheet.transport_id,
                        "transport_key": plan.transport_key.hex(),
                        "version": 1,
                        "org": share.org_id,
                        "x": share.x,
                        "share": b64(share.share),
                        "opening": share.opening.to_dict(),
                        "threshold": threshold,
                        "org_ids": org_ids,
                    }
                    env = envelope.make(
                        "transport.share",
                        body,
                        keys[owner],
                        seal_to=(share.org_id, directory[share.org_id].sealing_pk),
                    )
                    await js.publish(
                        subjects.TRANSPORT_SHARE.format(org=share.org_id),
                        env.to_bytes(),
                        headers={
                            "Nats-Msg-Id": f"tshare:{plan.transport_key.hex()}:1:{share.org_id}"
                        },
                    )
                report.registered.append(sheet.transport_id)
                progress(1)
    finally:
        await nc.close()
        await chain.close()
    return report


async def wait_stored(cfg: StackConfig, within_s: float = 60.0) -> dict[str, int]:
    """Wait until every org node has taken in all shares sent to it; returns what is left."""
    nc = await connect(cfg.nats_url, "registrar")
    js = nc.jetstream()
    try:
        deadline = asyncio.get_running_loop().time() + within_s
        while True:
            left = {}
            for o in cfg.orgs:
                try:
                    info = await js.consumer_info("TRANSPORTS", f"shares-{o.id}")
                    left[o.id] = info.num_pending + info.num_ack_pending
                except Exception:
                    left[o.id] = -1  # its node has not created its consumer yet
            if all(v == 0 for v in left.values()) or asyncio.get_running_loop().time() > deadline:
                return left
            await asyncio.sleep(0.2)
    finally:
        await nc.close()
