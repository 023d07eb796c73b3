"""Chain intake, one per org: reads its own chain endpoint and republishes verified events.

The org's share node acts only on events that came through here, signed by its own org. Each
event is published with its natural key (the lookup guid), so a block read twice after a reorg,
or a restart between publish and cursor save, acts once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable

from eth_utils import keccak
from web3 import Web3

from shardline.bus import envelope, log, subjects
from shardline.bus.worker import Worker
from shardline.contracts.cursor import EventReader, HeadWatcher, RawLog, Rpc
from shardline.contracts.watch import LogWatch
from shardline.core.logpoller import Cursor
from shardline.workers.store import OrgStore

LOOKUP_REQUESTED = (
    "0x" + keccak(text="LookupRequested(bytes16,bytes32,address,bytes32,uint32)").hex()
)
LAZY_READ_S = 0.25
GATEKEEPER_UPGRADED = "0x" + keccak(text="GatekeeperUpgraded(address,address)").hex()


@functools.lru_cache(maxsize=4096)
def _checksummed(address: bytes) -> str:
    """A responder's address as the chain's tools write it (a keccak each: a few responders
    make most lookups, so it is kept)."""
    return Web3.to_checksum_address(address)


def decode_lookup(lg: RawLog) -> dict:
    return {
        "guid": lg.topics[1][:16].hex(),
        "transport_key": lg.topics[2].hex(),
        "requester": _checksummed(lg.topics[3][12:]),
        "ephemeral_pk": lg.data[:32].hex(),
        "transport_version": int.from_bytes(lg.data[32:64], "big"),
        "block_number": lg.block_number,
        "block_hash": lg.block_hash.hex(),
        "tx_hash": lg.tx_hash.hex(),
        "log_index": lg.log_index,
    }


class ChainIntake(Worker):
    kind = "intake"
    publishes = ("lookup.requested",)

    def __init__(
        self,
        *args,
        org_id: str,
        rpc: Rpc,
        ws_url: str,
        store: OrgStore,
        deployment: dict,
        gatekeepers: list[str],
        confirmations: int = 0,
        min_interval_s: float = 0.02,
        leaves_to_others: Callable[[dict], bool] = lambda _event: False,
        serve_here: Callable[..., Awaitable[bool]] | None = None,
        push: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.org_id = org_id
        self.store = store
        self.governor = deployment["governor"].lower()
        self.gatekeepers = {g.lower() for g in gatekeepers}
        self.min_interval_s = min_interval_s
        # lookups whose intent asked other org nodes: nothing for this org to serve (yet)
        self.leaves_to_others = leaves_to_others
        # the share node of this process: serves an event at once; the stream is the fallback
        self.serve_here = serve_here
        cursor = Cursor(start=int(deployment["block"]), remembered=store.cursor_blocks())
        self.heads = HeadWatcher(ws_url)
        self.reader = EventReader(
            rpc,
            cursor,
            addresses=lambda: [],  # by topic: an upgrade and a lookup may share a block
            topics0=[LOOKUP_REQUESTED, GATEKEEPER_UPGRADED],
            confirmations=confirmations,
            save=lambda c: store.save_cursor(c.remembered()),
            heads=self.heads,
        )
        # With no confirmations to wait for, the node's own push of each LookupRequested log is
        # served at once, and the reader above (which checks that blocks link up and keeps the
        # cursor) need not read every block: it reads every LAZY_READ_S while the push is live.
        # An audit-after org node (``push=False``) serves on the gateway's intent, before the
        # chain has the request; served from the push, a lookup it had heard no intent for yet
        # (its notice on the way) gave a share to a lookup the gateway had left to others. So
        # it takes no push: its reader reads every LAZY_READ_S, confirms what the intents
        # served, and serves through the stream what no intent reached, or one that failed.
        self.intents_serve = confirmations == 0 and not push
        self.pushed: LogWatch | None = None
        if confirmations == 0 and push:
            self.pushed = LogWatch(ws_url, [LOOKUP_REQUESTED], self._on_pushed, lambda: None)
        self._pushed_tasks: set[asyncio.Task] = set()
        self._loop: asyncio.Task | None = None

    async def setup(self) -> None:
        self.heads.start()
        if self.pushed is not None:
            self.pushed.start()
        self._loop = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._loop:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        await self.heads.stop()
        if self.pushed is not None:
            await self.pushed.stop()
        for t in list(self._pushed_tasks):
            t.cancel()
        await super().stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                n = await self.reader.step(self.on_log)
                if n:
                    self.counts["ok"] += n
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # node or bus away: keep the cursor, try again
                self.counts["error"] += 1
                log.warn("intake.step_failed", org=self.org_id, error=str(exc))
                await asyncio.sleep(0.5)
            if self.reader.caught_up:
                # the push (while live) or the intents (no push taken) serve: this confirms
                if self.intents_serve or (self.pushed is not None and self.pushed.live):
                    await asyncio.sleep(LAZY_READ_S)
                else:
                    await self.reader.next_head()
            # at most one read per min_interval_s under load; none of it when idle
            await asyncio.sleep(max(0.0, self.min_interval_s - (loop.time() - started)))

    def _on_pushed(self, lg: RawLog) -> None:
        if lg.removed or lg.address not in self.gatekeepers or self.serve_here is None:
            return  # a log a reorg took back, or of a Gatekeeper the reader has not seen yet
        task = asyncio.get_running_loop().create_task(self._serve_pushed(lg))
        self._pushed_tasks.add(task)
        task.add_done_callback(self._pushed_tasks.discard)

    async def _serve_pushed(self, lg: RawLog) -> None:
        """Serve a pushed lookup now; anything that stops it here is left to the reader, which
        reads the same log again and falls back to the stream."""
        assert self.serve_here is not None
        body = decode_lookup(lg)
        if self.store.served(body["guid"]) or self.leaves_to_others(body):
            return
        self._requested(body, pushed=True)
        await self.serve_here(body, pushed=True)

    def _requested(self, body: dict, **fields: object) -> None:
        log.event(
            "intake.lookup_requested",
            org=self.org_id,
            guid=body["guid"],
            block=body["block_number"],
            trace_id=body["guid"],
            **fields,
        )

    async def on_log(self, lg: RawLog) -> None:
        topic = "0x" + lg.topics[0].hex()
        if topic == GATEKEEPER_UPGRADED and lg.address == self.governor:
            new = Web3.to_checksum_address(lg.topics[2][12:]).lower()
            self.gatekeepers.add(new)
            log.event("intake.gatekeeper_upgraded", org=self.org_id, gatekeeper=new)
            return
        if topic != LOOKUP_REQUESTED or lg.address not in self.gatekeepers:
            return
        body = decode_lookup(lg)
        if self.store.mark_on_chain(body["guid"], lg.block_number, body["requester"]):
            # already served on the gateway's intent (audit-after): the chain has caught up
            log.event(
                "intake.lookup_confirmed",
                org=self.org_id,
                guid=body["guid"],
                block=lg.block_number,
                trace_id=body["guid"],
            )
            return
        if self.leaves_to_others(body):
            return
        self._requested(body)
        if self.serve_here is not None and await self.serve_here(body):
            return
        env = envelope.make("lookup.requested", body, self.keys, trace_id=body["guid"])
        await self.publish(
            subjects.LOOKUP_REQUESTED.format(org=self.org_id),
            env,
            msg_id=f"{self.org_id}:lookup:{body['guid']}",
        )
