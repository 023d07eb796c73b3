"""`shardline org add`: admit a new org node to a running local stack.

It makes the org's keys (signing, sealing, chain) and its NATS nkey, registers it in the on-chain
registry, gives it a bus user whose permissions cover its own subjects only (nats-server reloads
its configuration), adds it to the stack configuration and starts its node. On a consortium's
real bus the same steps are: the org makes its keys and seed and sends only the public parts; the
registry owner admits it on chain; the NATS operator adds its public nkey with
``credentials.org_permissions`` and reloads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from eth_account import Account

from shardline import bus_access, servers, stack
from shardline.config import CHAIN_CONFIRMED, OrgNodeConfig, StackConfig
from shardline.core.directory import ORG
from shardline.core.ids import check_org_id
from shardline.core.keys import ParticipantKeys


class OrgError(ValueError):
    pass


async def _register(cfg: StackConfig, keys: ParticipantKeys) -> None:
    from shardline.contracts import registry
    from shardline.contracts.client import Chain
    from shardline.contracts.deploy import Deployment

    if cfg.deployment is None:
        raise OrgError("the stack has no contract deployment: start it with `shardline up`")
    admin = Account.from_key(stack.ANVIL_ADMIN_KEY)
    address = Account.from_key(keys.chain_key).address
    async with await Chain.connect(cfg.chain_rpc, expected_chain_id=cfg.chain_id) as chain:
        await chain.w3.provider.make_request("anvil_setBalance", [address, hex(10**21)])
        await registry.register_participant(
            chain,
            admin,
            Deployment.from_dict(cfg.deployment),
            keys.participant_id,
            keys.signing_public,
            keys.sealing_public,
            address,
            ORG,
        )


def add_org(
    cfg: StackConfig,
    org_id: str,
    *,
    name: str | None = None,
    policy: str = CHAIN_CONFIRMED,
    start: bool = True,
    say: Callable[[str], None] = print,
) -> OrgNodeConfig:
    check_org_id(org_id)
    if any(o.id == org_id for o in cfg.orgs) or org_id == cfg.gateway.id:
        raise OrgError(f"{org_id!r} is already in this stack; choose another id")
    pids = stack.running(cfg.run_dir)
    if "nats" not in pids:
        raise OrgError(
            "the stack's nats-server is not running: start the stack with `shardline up`"
        )
    # as `up` gave the others: a SQLite file, or its own database from the stack's {org} template
    database_url = stack.org_databases(cfg.run_dir, [org_id], cfg.database_url_template)[org_id]
    keys_dir = cfg.run_dir / "keys"
    keys = ParticipantKeys.generate(org_id)
    keys.save(keys_dir / f"{org_id}.json")
    seed = bus_access.new_seed(cfg.run_dir, org_id)
    asyncio.run(_register(cfg, keys))
    say(f"registered {org_id} on chain")
    org = OrgNodeConfig(
        id=org_id,
        name=name or f"Org {org_id}",
        policy=policy,  # type: ignore[arg-type]
        key_file=keys_dir / f"{org_id}.json",
        database_url=database_url,
        metrics_port=servers.free_port(),
        nats_seed_file=seed,
    )
    cfg.orgs.append(org)
    cfg.save()
    bus_access.rewrite_server_config(cfg, pids["nats"]["pid"])
    say(f"bus user for {org_id} added (its own subjects only); nats-server reloaded")
    bus_access.prepare(cfg)  # its durable consumers, made by the operator: the org may not
    if start:
        stack.start_workers(cfg, [f"node-{org_id}"])
        say(f"started node-{org_id}")
    return org
