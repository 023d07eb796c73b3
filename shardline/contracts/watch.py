"""Logs pushed by the node as blocks are mined (``eth_subscribe("logs")`` over a websocket).

For what a process keeps in memory from the chain (a transport's terms, whether an account may
look up), and to see its own transactions land without polling for receipts. A cache built on a
subscription is sound only while the subscription is live: ``live`` is false from a drop until
the node has confirmed a new subscription, and ``on_reset`` runs at each (re)subscription so
that whatever was cached before is dropped. An org node's intake does not rely on this: it reads
with the reorg-safe cursor in ``cursor.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import orjson
import websockets

from shardline.bus import log

from .cursor import RawLog, Subscription, raw_log


class LogWatch(Subscription):
    def __init__(
        self,
        ws_url: str,
        topics0: list[str],
        on_log: Callable[[RawLog], None],
        on_reset: Callable[[], None],
        *,
        retry_s: float = 1.0,
    ) -> None:
        self.ws_url = ws_url
        self.topics0 = topics0
        self.on_log = on_log
        self.on_reset = on_reset
        self.retry_s = retry_s
        self._subscribed = asyncio.Event()

    async def started(self, timeout_s: float = 5.0) -> bool:
        """Wait until the first subscription is live (False if the node has none to offer)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout_s)
        return self.live

    async def _run(self) -> None:
        request = orjson.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "eth_subscribe",
                "params": ["logs", {"topics": [self.topics0]}],
            }
        )
        while True:
            try:
                async with websockets.connect(self.ws_url, max_size=2**22) as ws:
                    await ws.send(request)
                    async for frame in ws:
                        msg = orjson.loads(frame)
                        if msg.get("id") == 1:
                            if "error" in msg:
                                raise RuntimeError(f"eth_subscribe refused: {msg['error']}")
                            self.on_reset()
                            self.live = True
                            self._subscribed.set()
                            continue
                        result = (msg.get("params") or {}).get("result")
                        if isinstance(result, dict) and "topics" in result:
                            try:
                                self.on_log(raw_log(result))
                            except Exception as exc:  # one bad log must not drop the rest
                                log.error("chain.log_handler_failed", error=repr(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # node restarted or has no websocket: caches go cold
                if self.live:
                    log.warn("chain.log_subscription_lost", url=self.ws_url, error=str(exc))
                self.live = False
                self.on_reset()
                self._subscribed.set()
                await asyncio.sleep(self.retry_s)
            else:
                self.live = False
                self.on_reset()
