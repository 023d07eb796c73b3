"""Wiring: build the workers of an org node or of the gateway from the stack configuration."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from prometheus_client import start_http_server
from web3 import Web3

from shardline.bus import log, streams, telemetry
from shardline.bus.connect import connect
from shardline.bus.replay import SKEW_S as REPLAY_SKEW_S
from shardline.bus.replay import WINDOW_S as REPLAY_WINDOW_S
from shardline.bus.seen_ids import RedisSeenIds, SeenIds
from shardline.bus.worker import Worker
from shardline.bus_access import gateway_bus, org_bus
from shardline.config import AUDIT_AFTER, OrgNodeConfig, StackConfig
from shardline.contracts import registry
from shardline.contracts.client import Chain
from shardline.contracts.cursor import Rpc
from shardline.contracts.deploy import Deployment
from shardline.core.directory import Directory, Participant
from shardline.core.keys import ParticipantKeys
from shardline.core.protocol import Terms


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run a worker process's main coroutine on uvloop: libuv's loop costs a fraction of the
    standard one per message, which is most of what a worker does."""
    import uvloop

    uvloop.run(main)


def account(keys: ParticipantKeys) -> LocalAccount:
    return Account.from_key(keys.chain_key)


def ws_url(rpc_url: str) -> str:
    return rpc_url.replace("https://", "wss://").replace("http://", "ws://")


@dataclass
class ChainView:
    """What workers read from their own chain endpoint."""

    chain: Chain
    deployment: Deployment

    async def participants(self) -> list[Participant]:
        return await registry.list_participants(self.chain, self.deployment)

    async def directory(self) -> Directory:
        d = Directory(refresh=self.participants)
        await d.refresh()
        return d

    async def terms(self, key: bytes) -> tuple[Terms, str, int, bool] | None:
        info = await registry.get_transport(self.chain, self.deployment, key)
        if info is None:
            return None
        terms = Terms(key, info.threshold, tuple(info.org_ids), info.commitment)
        return terms, info.company, info.version, info.active

    async def authorised(self, requester: str) -> bool:
        return await registry.has_role(
            self.chain, self.deployment, "RESPONDER", Web3.to_checksum_address(requester)
        )


async def chain_view(rpc_url: str, cfg: StackConfig) -> ChainView:
    if cfg.deployment is None:
        raise RuntimeError("the stack has no contract deployment yet: run `shardline up`")
    chain = await Chain.connect(rpc_url, expected_chain_id=cfg.chain_id)
    chain.gas_policy = cfg.gas
    return ChainView(chain, Deployment.from_dict(cfg.deployment))


async def org_node_workers(cfg: StackConfig, org: OrgNodeConfig) -> list[Worker]:
    from shardline.workers.intake import ChainIntake
    from shardline.workers.share_node import ShareNode
    from shardline.workers.store import OrgStore

    keys = ParticipantKeys.load(org.key_file)
    rpc_url = cfg.org_rpc(org)
    view = await chain_view(rpc_url, cfg)
    directory = await view.directory()
    url, auth = org_bus(cfg, org)
    nc = await connect(url, f"org-node.{org.id}", auth)
    streams.set_replicas(cfg.stream_replicas)
    store = OrgStore(org.database_url)
    gatekeeper = await registry.current_gatekeeper(view.chain, view.deployment)
    node = ShareNode(
        nc,
        keys,
        directory,
        instance=org.id,
        org=org,
        store=store,
        terms=view.terms,
        authorised=view.authorised,
    )
    intake = ChainIntake(
        nc,
        keys,
        directory,
        instance=org.id,
        org_id=org.id,
        rpc=Rpc(view.chain.rpc),
        ws_url=ws_url(rpc_url),
        store=store,
        deployment=cfg.deployment or {},
        gatekeepers=[gatekeeper],
        confirmations=cfg.confirmations,
        min_interval_s=cfg.poll_interval_s,
        leaves_to_others=node.leaves_to_others,
        serve_here=node.serve_chain_event,
        push=org.policy != AUDIT_AFTER,
    )
    from shardline.contacts.store import ContactStore
    from shardline.workers.psi_node import PsiNode

    matcher = PsiNode(
        nc,
        keys,
        directory,
        instance=org.id,
        concurrency=1,
        org_id=org.id,
        store=ContactStore(org.database_url),
    )
    from shardline.ops.metrics import watch_intake

    watch_intake(intake)
    workers: list[Worker] = [intake, node, matcher]
    if view.deployment.records_registry:
        workers.append(records_proxy(nc, keys, view, org, rpc_url, cfg))
    if view.deployment.list_agreements:
        workers.append(list_node(nc, keys, directory, view, org))
    if view.deployment.market:
        workers.append(analytics_server(nc, keys, view, org, rpc_url, cfg))
    from shardline.bus.seen_ids_sql import SqlSeenIds

    remember_seen_ids(workers, SqlSeenIds(org.database_url))
    return workers


def remember_seen_ids(workers: list[Worker], store: SeenIds) -> None:
    """Keep the replay guards' seen ids in ``store``, so that a restart does not forget them."""
    for w in workers:
        w.replay.durable = store
        w.replay.scope = w.kind


def list_node(
    nc, keys: ParticipantKeys, directory: Directory, view: ChainView, org: OrgNodeConfig
) -> Worker:
    from shardline.contacts.lists_store import ListStore
    from shardline.contacts.store import ContactStore, contact_secret
    from shardline.workers.list_node import ListNode

    return ListNode(
        nc,
        keys,
        directory,
        instance=org.id,
        concurrency=4,
        org_id=org.id,
        store=ListStore(ContactStore(org.database_url)),
        secret=contact_secret(keys.signing_seed),
        chain=view.chain,
        deployment=view.deployment,
        account=account(keys),
    )


def analytics_server(
    nc, keys: ParticipantKeys, view: ChainView, org: OrgNodeConfig, rpc_url: str, cfg: StackConfig
) -> Worker:
    from shardline.contracts.deploy import MARKET_MIN_STAKE
    from shardline.workers.analytics_server import AnalyticsServer, ProducerDirectory
    from shardline.workers.analytics_store import AnalyticsStore

    return AnalyticsServer(
        nc,
        keys,
        ProducerDirectory(view.chain, view.deployment),
        instance=org.id,
        concurrency=8,
        org_id=org.id,
        store=AnalyticsStore(org.database_url),
        chain=view.chain,
        deployment=view.deployment,
        account=account(keys),
        ws_url=ws_url(rpc_url),
        confirmations=cfg.confirmations,
        stake_wei=MARKET_MIN_STAKE * 3 // 2,
    )


def records_proxy(
    nc, keys: ParticipantKeys, view: ChainView, org: OrgNodeConfig, rpc_url: str, cfg: StackConfig
) -> Worker:
    from shardline.workers.records_proxy import PartyDirectory, RecordsProxy
    from shardline.workers.records_store import ProxyStore

    return RecordsProxy(
        nc,
        keys,
        PartyDirectory(view.chain, view.deployment),
        instance=org.id,
        concurrency=1,
        org_id=org.id,
        store=ProxyStore(org.database_url),
        chain=view.chain,
        deployment=view.deployment,
        ws_url=ws_url(rpc_url),
        freshness=org.records_freshness,
    )


async def combiner_workers(cfg: StackConfig) -> list[Worker]:
    from shardline import redis_client
    from shardline.workers.combiner import Combiner

    keys = ParticipantKeys.load(cfg.gateway.key_file)
    view = await chain_view(cfg.chain_rpc, cfg)
    directory = await view.directory()
    url, auth = gateway_bus(cfg)
    nc = await connect(url, "combiner", auth)
    streams.set_replicas(cfg.stream_replicas)
    redis = redis_client.connect(cfg.redis_url)  # rides out a redis-server restart
    workers: list[Worker] = [
        Combiner(
            nc,
            keys,
            directory,
            instance="main",
            redis=redis,
            gateway_id=cfg.gateway.id,
            share_cost_s=cfg.gateway.combiner_share_cost_s,
        )
    ]
    remember_seen_ids(workers, RedisSeenIds(redis, REPLAY_WINDOW_S + REPLAY_SKEW_S))
    return workers


async def run_workers(build: Callable[[], Awaitable[list[Worker]]], metrics_port: int = 0) -> None:
    """Start workers, serve /metrics, and run until SIGTERM or SIGINT."""
    log.setup()
    if metrics_port and telemetry.enabled:
        try:
            start_http_server(metrics_port, addr="127.0.0.1")
        except OSError as exc:  # the work matters more than its metrics
            log.warn("metrics.unavailable", port=metrics_port, error=str(exc))
    workers = await build()
    for w in workers:
        await w.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for w in reversed(workers):
        with contextlib.suppress(Exception):
            await w.stop()
    with contextlib.suppress(Exception):
        await workers[0].nc.drain()
