"""The gateway's Gatekeeper transactions, committed in groups.

Every lookup must be requested on chain, but a transaction per lookup makes a block per lookup
on an automining node and a round of log reads at every org node. Lookups of one responder
account that arrive while its previous transaction is being sent (and, with ``linger_s``, a few
milliseconds more) go out together as one ``requestLookups`` transaction; each still gets its
own ``LookupRequested`` event. A single lookup goes out as ``requestLookup``. A batch that
reverts is sent again one by one by the caller, so one bad entry costs only itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount

from shardline.bus import log
from shardline.contracts import registry
from shardline.contracts.client import Chain

MAX_BATCH = 64
PER_LOOKUP_GAS = 80_000  # measured ~45k each in a batch; the rest is headroom
BEFORE_TIMEOUT_S = 0.5  # what a lookup must send before its transaction (a publish) may take
# after it, before the transaction: time for what was sent to be taken (the node mines and
# pushes the transaction's log within a millisecond or two)
BEFORE_GRACE_S = 0.005


@dataclass(frozen=True)
class Sent:
    tx_hash: str
    batch_size: int


@dataclass
class _Pending:
    item: tuple[bytes, bytes, bytes]
    before: Callable[[], Awaitable[None]] | None = None
    sent: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class LookupTxBatcher:
    """One per responder account: its nonce order is the order of its batches."""

    def __init__(
        self,
        chain: Chain,
        account: LocalAccount,
        gatekeeper: Callable[[], str],
        *,
        linger_s: float = 0.0,
    ) -> None:
        self.chain = chain
        self.account = account
        self.gatekeeper = gatekeeper
        self.linger_s = linger_s
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def submit(
        self,
        guid: bytes,
        key: bytes,
        epk: bytes,
        *,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> Sent:
        """Queue one lookup; returns once the transaction that carries it was taken by the node.
        ``before`` is awaited just before that transaction is sent, together with those of the
        other lookups in it (for at most ``BEFORE_TIMEOUT_S``; a failure is logged), which then
        waits ``BEFORE_GRACE_S``."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        pending = _Pending((guid, key, epk), before)
        self._queue.append(pending)
        self._wake.set()
        return await pending.sent

    async def send_one(self, guid: bytes, key: bytes, epk: bytes) -> Sent:
        """Send one lookup on its own (after a batch that carried it reverted)."""
        data = registry.request_lookup_calldata(guid, key, epk)
        tx = await self.chain.send_call(
            self.account, self.gatekeeper(), data, gas=registry.LOOKUP_GAS
        )
        return Sent(tx, 1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @staticmethod
    async def _before(p: _Pending) -> None:
        try:  # bounded: one stuck hook must not hold up the batch and those after
            async with asyncio.timeout(BEFORE_TIMEOUT_S):
                await p.before()  # type: ignore[misc]
        except Exception as exc:  # the bus away: the request goes out all the same
            log.warn("lookup.before_tx_failed", guid=p.item[0].hex(), error=repr(exc))

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if self.linger_s:
                await asyncio.sleep(self.linger_s)
            self._wake.clear()
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            if self._queue:
                self._wake.set()
            if not batch:
                continue
            hooked = [p for p in batch if p.before is not None]
            if hooked:  # together: what they send may go out as one message (Gateway._tell)
                await asyncio.gather(*(self._before(p) for p in hooked))
                await asyncio.sleep(BEFORE_GRACE_S)
            items = [p.item for p in batch]
            if len(items) == 1:
                data, gas = registry.request_lookup_calldata(*items[0]), registry.LOOKUP_GAS
            else:
                data = registry.request_lookups_calldata(items)
                gas = registry.LOOKUP_GAS + PER_LOOKUP_GAS * len(items)
            try:
                tx = await self.chain.send_call(self.account, self.gatekeeper(), data, gas=gas)
            except Exception as exc:  # every lookup of the batch hears why
                for p in batch:
                    if not p.sent.done():
                        p.sent.set_exception(exc)
                continue
            for p in batch:
                if not p.sent.done():
                    p.sent.set_result(Sent(tx, len(batch)))
