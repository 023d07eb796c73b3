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
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import websockets
from web3 import AsyncWeb3

from shardline.bus import log
from shardline.core.logpoller import BlockRef, Cursor

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


def _b(hexstr: str) -> bytes:
    return bytes.fromhex(hexstr[2:] if hexstr.startswith("0x") else hexstr)


class Rpc:
    """Plain JSON-RPC over the web3 provider's session: no formatters on the hot path."""

    def __init__(self, w3: AsyncWeb3) -> None:
        self.w3 = w3

    async def call(self, method: str, params: list) -> object:
        resp = await self.w3.provider.make_request(method, params)
        if "error" in resp:
            raise RuntimeError(f"{method} failed: {resp['error']}")
        return resp["result"]

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
        return [
            RawLog(
                address=r["address"].lower(),
                topics=tuple(_b(t) for t in r["topics"]),
                data=_b(r["data"]),
                block_number=int(r["blockNumber"], 16),
                block_hash=_b(r["blockHash"]),
                tx_hash=_b(r["transactionHash"]),
                log_index=int(r["logIndex"], 16),
            )
            for r in raw  # type: ignore[union-attr]
            if not r.get("removed")
        ]


class HeadWatcher:
    """Wakes the reader on each new head (websocket ``newHeads``), else every ``fallback_s``."""

    def __init__(self, ws_url: str, fallback_s: float = 1.0) -> None:
        self.ws_url = ws_url
        self.fallback_s = fallback_s
        self.event = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def wait(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), self.fallback_s)
        self.event.clear()

    async def _run(self) -> None:
        while True:
            try:
                async with websockets.connect(self.ws_url, max_size=2**22) as ws:
                    await ws.send(
                        json.dumps(
                            {
                                "jsonrpc": "2.0",
                                "id": 1,
                                "method": "eth_subscribe",
                                "params": ["newHeads"],
                            }
                        )
                    )
                    async for _ in ws:
                        self.event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the node restarted or has no websocket: poll meanwhile
                log.warn("chain.head_subscription_lost", url=self.ws_url, error=str(exc))
                await asyncio.sleep(1.0)


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
    ) -> None:
        self.rpc = rpc
        self.cursor = cursor
        self.addresses = addresses
        self.topics0 = topics0
        self.confirmations = confirmations
        self.save = save
        self.head_seen = 0

    async def step(self, handle: Callable[[RawLog], Awaitable[None]]) -> int:
        """Read what is new up to head - confirmations; returns how many logs were handled."""
        latest = await self.rpc.block_number()
        self.head_seen = latest
        target = latest - self.confirmations
        start = self.cursor.next_number
        if target < start:
            return 0
        end = min(target, start + MAX_RANGE - 1)
        headers = await asyncio.gather(*(self.rpc.header(n) for n in range(start, end + 1)))
        if any(h is None for h in headers):
            return 0  # the node is behind its own block number; try again on the next head
        chain = [h for h in headers if h is not None]
        if not self.cursor.extends(chain):
            await self._rewind()
            return 0
        hashes = {h.number: h.hash for h in chain}
        logs = await self.rpc.logs(start, end, self.addresses(), self.topics0)
        if any(hashes.get(lg.block_number) != lg.block_hash for lg in logs):
            return 0  # a reorg happened while reading: read again
        logs.sort(key=lambda lg: (lg.block_number, lg.log_index))
        for lg in logs:
            await handle(lg)
        self.cursor.advance(chain)
        if self.save is not None:
            saved = self.save(self.cursor)
            if saved is not None:
                await saved
        return len(logs)

    async def _rewind(self) -> None:
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
