"""The reorg-safe event reader: follows the chain head and yields each log once, in order.

New heads arrive over a websocket subscription (with a slow poll as a fallback), so a confirmed
event is seen within milliseconds. Before it reads logs the reader checks that the new blocks
extend the ones it remembers (``shardline.core.logpoller.Cursor``); when they do not it re-reads
from the last common ancestor. Logs are taken only when their block hash is the one it checked,
so a reorg during a read is retried rather than half-applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
import websockets

from shardline.bus import log
from shardline.core import bloom
from shardline.core.logpoller import BlockRef, Cursor

from .rpc import JsonRpc

MAX_RANGE = 500


@dataclass(frozen=True)
class RawLog:
    address: str
    topics: tuple[bytes, ...]
    data: bytes
    block_number: int
    block_hash: bytes
    tx_hash: bytes
    log_index: int
    removed: bool = False


def raw_log(r: dict) -> RawLog:
    """A log as the node's JSON-RPC gives it (eth_getLogs, or a ``logs`` subscription)."""
    return RawLog(
        address=r["address"].lower(),
        topics=tuple(_b(t) for t in r["topics"]),
        data=_b(r["data"]),
        block_number=int(r["blockNumber"], 16),
        block_hash=_b(r["blockHash"]),
        tx_hash=_b(r["transactionHash"]),
        log_index=int(r["logIndex"], 16),
        removed=bool(r.get("removed", False)),
    )


def _b(hexstr: str) -> bytes:
    return bytes.fromhex(hexstr[2:] if hexstr.startswith("0x") else hexstr)


class Rpc:
    """The reads the cursor needs, in plain JSON-RPC: no formatters on the hot path."""

    def __init__(self, rpc: JsonRpc) -> None:
        self.rpc = rpc

    async def call(self, method: str, params: list) -> object:
        return await self.rpc.call(method, params)

    async def block_number(self) -> int:
        return int(await self.call("eth_blockNumber", []), 16)

    async def header(self, number: int) -> BlockRef | None:
        b = await self.call("eth_getBlockByNumber", [hex(number), False])
        if not b:
            return None
        return BlockRef(int(b["number"], 16), _b(b["hash"]), _b(b["parentHash"]))

    async def logs(
        self, start: int, end: int, addresses: list[str], topics0: list[str]
    ) -> list[RawLog]:
        query: dict = {"fromBlock": hex(start), "toBlock": hex(end), "topics": [topics0]}
        if addresses:
            query["address"] = addresses
        raw = await self.call("eth_getLogs", [query])
        return [raw_log(r) for r in raw if not r.get("removed")]  # type: ignore[union-attr]


class Subscription(ABC):
    """A websocket subscription run as a background task; ``live`` while it is confirmed."""

    live = False
    _task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self.live = False
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    @abstractmethod
    async def _run(self) -> None:
        """Subscribe, follow, and resubscribe after a drop, until cancelled."""


class HeadWatcher:
    """Wakes a reader on each new head (websocket ``newHeads``), else every ``fallback_s``.

    It is live from the moment its subscription is confirmed: it then asks for the node's latest
    block, so a reader that starts on a quiet chain need not wait for a block to be mined. It also
    keeps the recent heads it was sent (number, hash, parent, logs bloom), so that the reader need
    not ask the node for headers it was just given. They are hints: the reader checks that they
    link up and asks the node when they do not.

    The watchers of one process that follow the same node share one subscription (``_HeadFeed``):
    an org node's intake, records proxy and MPC server each wake on every block, and one socket
    and one parse per block serves them all. Each watcher keeps its own ``event``.
    """

    def __init__(self, ws_url: str, fallback_s: float = 1.0) -> None:
        self.ws_url = ws_url
        self.fallback_s = fallback_s
        self.event = asyncio.Event()
        self.latest = 0
        self.live = False
        self._feed: _HeadFeed | None = None

    def start(self) -> None:
        _HeadFeed.join(self)

    async def stop(self) -> None:
        feed, self._feed = self._feed, None
        self.live = False
        if feed is not None:
            await feed.leave(self)

    async def wait(self) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
        # arrives in the same turn as the head, and a reader being stopped then reads on for ever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.fallback_s):
                await self.event.wait()
        self.event.clear()

    def get(self, number: int) -> BlockRef | None:
        return self._feed.heads.get(number) if self._feed is not None else None

    def bloom(self, ref: BlockRef) -> int | None:
        """The logs bloom the node pushed with this head (None: not pushed, or not kept)."""
        return self._feed.blooms.get(ref.hash) if self._feed is not None else None

    def forget(self, start: int, end: int) -> None:
        if self._feed is not None:
            self._feed.forget(start, end)

    def _take(self, head: dict) -> None:
        """Called for each head the node pushes, once the feed has kept it."""
        assert self._feed is not None
        self.latest = self._feed.latest


class _HeadFeed(Subscription):
    """One ``newHeads`` subscription to one node, shared by the HeadWatchers of a process."""

    KEEP = 256
    SUBSCRIBE, LATEST = 1, 2  # ids of the two requests on the websocket
    _shared: dict[tuple[int, str], _HeadFeed] = {}  # by (event loop, node)

    def __init__(self, ws_url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.ws_url = ws_url
        self.loop = loop
        self.latest = 0
        self.heads: dict[int, BlockRef] = {}
        # each kept head's logs bloom, by its hash: a reader passes over the blocks whose bloom
        # rules out every log it reads (``bloom.may_match``) without asking for their logs
        self.blooms: dict[bytes, int] = {}
        self.watchers: list[HeadWatcher] = []
        self.last_head: dict | None = None  # as pushed: what a watcher that joins late is given

    @classmethod
    def join(cls, watcher: HeadWatcher) -> _HeadFeed:
        loop = asyncio.get_running_loop()
        key = (id(loop), watcher.ws_url)
        feed = cls._shared.get(key)
        if feed is None or feed.loop is not loop:
            feed = cls._shared[key] = cls(watcher.ws_url, loop)
            feed.start()
        if watcher not in feed.watchers:
            feed.watchers.append(watcher)
        watcher._feed = feed
        if feed.live and feed.last_head is not None:
            # a latecomer is given the head at once, as its own subscription would have been
            # (a subclass keeps what it needs of it: a records proxy the chain's time)
            feed._give(watcher, feed.last_head)
            watcher.event.set()
        return feed

    async def leave(self, watcher: HeadWatcher) -> None:
        with contextlib.suppress(ValueError):
            self.watchers.remove(watcher)
        if not self.watchers:
            key = (id(self.loop), self.ws_url)
            if self._shared.get(key) is self:
                del self._shared[key]
            await self.stop()

    def forget(self, start: int, end: int) -> None:
        for n in [n for n in self.heads if start <= n <= end]:
            self._drop(n)

    def _drop(self, number: int) -> None:
        ref = self.heads.pop(number, None)
        if ref is not None:
            self.blooms.pop(ref.hash, None)

    def _give(self, watcher: HeadWatcher, head: dict) -> None:
        try:
            watcher._take(head)
            watcher.live = True
        except Exception as exc:  # one watcher's fault is its own, not the others'
            log.warn("chain.head_watcher_failed", url=self.ws_url, error=repr(exc))

    def _take(self, head: dict) -> None:
        ref = BlockRef(int(head["number"], 16), _b(head["hash"]), _b(head["parentHash"]))
        if ref.number <= self.latest:
            # a reorg (or the same head again): what lay above it is no longer canonical
            for n in [n for n in self.heads if n >= ref.number]:
                self._drop(n)
        self.heads[ref.number] = ref
        with contextlib.suppress(KeyError, TypeError, ValueError):
            self.blooms[ref.hash] = bloom.parse(head["logsBloom"])
        self._drop(ref.number - self.KEEP)
        if len(self.heads) > self.KEEP:  # heads skipped (a resubscription): prune them all
            for n in [n for n in self.heads if n <= ref.number - self.KEEP]:
                self._drop(n)
        self.latest = ref.number
        self.last_head = head
        for w in list(self.watchers):
            self._give(w, head)

    def _lost(self) -> None:
        self.live = False
        self.last_head = None
        self.heads.clear()
        self.blooms.clear()
        for w in self.watchers:
            w.live = False

    async def _run(self) -> None:
        while True:
            try:
                async with websockets.connect(self.ws_url, max_size=2**22) as ws:
                    await ws.send(_rpc_frame(self.SUBSCRIBE, "eth_subscribe", ["newHeads"]))
                    async for frame in ws:
                        msg = orjson.loads(frame)
                        if msg.get("id") == self.SUBSCRIBE:
                            if "result" not in msg:
                                raise RuntimeError(f"newHeads subscription refused: {msg}")
                            # the node's latest block, on the same websocket: the heads pushed
                            # from now on are newer, so ``latest`` is the chain's head at once
                            await ws.send(
                                _rpc_frame(self.LATEST, "eth_getBlockByNumber", ["latest", False])
                            )
                            continue
                        if msg.get("id") == self.LATEST:
                            head = msg.get("result")
                            # a head pushed meanwhile is newer: keep it
                            if not isinstance(head, dict) or int(head["number"], 16) < self.latest:
                                continue
                        else:
                            head = (msg.get("params") or {}).get("result")
                        if isinstance(head, dict) and "hash" in head:
                            self._take(head)
                            self.live = True
                        for w in self.watchers:
                            w.event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the node restarted or has no websocket: poll meanwhile
                self._lost()
                log.warn("chain.head_subscription_lost", url=self.ws_url, error=str(exc))
                await asyncio.sleep(1.0)


def _rpc_frame(request_id: int, method: str, params: list) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


# After a failed step (the node away), the pause before the next.
STEP_RETRY_S = 0.5


class EventReader:
    """Reads logs of some contracts, reorg-safely, from a persisted cursor."""

    def __init__(
        self,
        rpc: Rpc,
        cursor: Cursor,
        *,
        addresses: Callable[[], list[str]],
        topics0: list[str],
        confirmations: int = 0,
        save: Callable[[Cursor], Awaitable[None] | None] | None = None,
        heads: HeadWatcher | None = None,
        save_every_s: float = 2.0,
        poll_s: float = 1.0,
    ) -> None:
        self.rpc = rpc
        self.heads = heads
        self.poll_s = poll_s  # without a head watcher: how often to look for new blocks
        self.save_every_s = save_every_s
        self._saved_at = float("-inf")
        self.cursor = cursor
        self.addresses = addresses
        self.topics0 = topics0
        self.confirmations = confirmations
        self.save = save
        self.head_seen = 0
        self._topic_masks = [bloom.mask(_b(t)) for t in topics0]
        self._address_masks: dict[str, int] = {}

    @property
    def caught_up(self) -> bool:
        """Nothing is left to read up to the last head seen, less the confirmations."""
        return self.cursor.next_number > self.head_seen - self.confirmations

    async def next_head(self) -> None:
        """Until a new head: pushed by the watcher (which polls when its feed is down), or
        ``poll_s`` without a watcher."""
        if self.heads is not None:
            await self.heads.wait()
        else:
            await asyncio.sleep(self.poll_s)

    async def follow(
        self, handle: Callable[[RawLog], Awaitable[None]], *, event: str, **fields: object
    ) -> None:
        """Read for ever: a step that fails (the node away) keeps the cursor and is tried again
        after a pause, logged as ``event``; once caught up, wait for the next head."""
        while True:
            try:
                await self.step(handle)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warn(event, error=repr(exc), **fields)
                await asyncio.sleep(STEP_RETRY_S)
                continue
            if self.caught_up:
                await self.next_head()

    async def step(self, handle: Callable[[RawLog], Awaitable[None]]) -> int:
        """Read what is new up to head - confirmations; returns how many logs were handled."""
        pushed = self.heads is not None and self.heads.live and self.heads.latest
        latest = self.heads.latest if pushed else await self.rpc.block_number()  # type: ignore[union-attr]
        self.head_seen = latest
        target = latest - self.confirmations
        start = self.cursor.next_number
        if target < start:
            return 0
        end = min(target, start + MAX_RANGE - 1)
        chain = await self._headers(start, end, use_pushed=bool(pushed))
        if chain is None:
            return 0  # the node is behind its own block number; try again on the next head
        if not self.cursor.extends(chain):
            await self._rewind()
            return 0
        hashes = {h.number: h.hash for h in chain}
        addresses = self.addresses()
        if self._none_in_blooms(chain, addresses):
            logs = []  # every block's bloom rules out the logs read here: nothing to ask for
        else:
            logs = await self.rpc.logs(start, end, addresses, self.topics0)
        if any(hashes.get(lg.block_number) != lg.block_hash for lg in logs):
            if self.heads is not None:
                self.heads.forget(start, end)
            return 0  # a reorg happened while reading: read again
        logs.sort(key=lambda lg: (lg.block_number, lg.log_index))
        for lg in logs:
            await handle(lg)
        self.cursor.advance(chain)
        # Saved when it carried events, else every few seconds: after a restart the blocks
        # since the last save are read again, and every act on an event is idempotent by its
        # natural key, so what an idle block changes need not be written at once.
        now = time.monotonic()
        if self.save is not None and (logs or now - self._saved_at >= self.save_every_s):
            self._saved_at = now
            saved = self.save(self.cursor)
            if saved is not None:
                await saved
        return len(logs)

    def _none_in_blooms(self, chain: list[BlockRef], addresses: list[str]) -> bool:
        """True when the pushed bloom of every block in ``chain`` rules out a log of
        ``addresses`` (any, when empty) with one of ``topics0``; False when a bloom is missing
        (a header read from the node, not pushed) or one may hold such a log."""
        if self.heads is None:
            return False
        masks = [self._mask(a) for a in addresses]
        for ref in chain:
            b = self.heads.bloom(ref)
            if b is None or bloom.may_match(b, masks, self._topic_masks):
                return False
        return True

    def _mask(self, address: str) -> int:
        found = self._address_masks.get(address)
        if found is None:
            found = self._address_masks[address] = bloom.mask(_b(address))
        return found

    async def _headers(self, start: int, end: int, *, use_pushed: bool) -> list[BlockRef] | None:
        """Headers start..end: those the node pushed, if they link up, else read from it."""
        if use_pushed and self.heads is not None:
            got = [self.heads.get(n) for n in range(start, end + 1)]
            missing = [start + i for i, h in enumerate(got) if h is None]
            if missing:
                read = await asyncio.gather(*(self.rpc.header(n) for n in missing))
                for n, h in zip(missing, read, strict=True):
                    got[n - start] = h
            if all(h is not None for h in got):
                chain = [h for h in got if h is not None]
                if all(b.parent == a.hash for a, b in itertools.pairwise(chain)):
                    return chain
            self.heads.forget(start, end)
        headers = await asyncio.gather(*(self.rpc.header(n) for n in range(start, end + 1)))
        if any(h is None for h in headers):
            return None
        return [h for h in headers if h is not None]

    async def _rewind(self) -> None:
        if self.heads is not None:
            self.heads.forget(0, self.heads.latest)
        remembered = self.cursor.remembered()
        canonical: dict[int, bytes] = {}
        for ref in reversed(remembered):
            h = await self.rpc.header(ref.number)
            if h is not None:
                canonical[ref.number] = h.hash
                if h.hash == ref.hash:
                    break
        resume = self.cursor.rewind(canonical)
        log.warn(
            "chain.reorg",
            resume_from=resume,
            dropped=len(remembered) - len(self.cursor.remembered()),
        )
        if self.save is not None:
            saved = self.save(self.cursor)
            if saved is not None:
                await saved
