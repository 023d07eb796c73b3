"""The sender: seals a private call for a group's stakeholders and submits it to the mediator.

Per transaction: a fresh key and nonce encrypt the call (XChaCha20-Poly1305); the key is wrapped
for each stakeholder (X25519 + ChaCha20-Poly1305, one ephemeral key); the ciphertext is pushed to
the stakeholders on ``privtx.payload.<group>`` (so they hold it before the chain event arrives)
and stored in the object store under its SHA3-256; then ``submit`` goes to the mediator. Nothing
but ciphertext and hashes leaves the sender. Outcomes are read from ``PrivateTxFini`` logs pushed
by the node (``eth_subscribe``), falling back to ``txOf`` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from eth_account import Account
from eth_account.signers.local import LocalAccount

from shardline.bus.connect import connect
from shardline.bus.payloads import PayloadStore
from shardline.contracts import mediator as med
from shardline.contracts.client import Chain, ChainError
from shardline.contracts.cursor import RawLog
from shardline.contracts.watch import LogWatch
from shardline.core import privtx as pt
from shardline.workers import privtx_messages as pm
from shardline.workers.privtx_facilitator import PAYLOAD_SUBJECT

MAX_BATCH = 64  # submissions per submitMany: well inside a block's gas limit
CHECK_EVERY_S = 10.0  # txOf read for a waiting transaction even while its outcome is pushed


class SettleTimeout(TimeoutError):
    pass


@dataclass(frozen=True)
class Sent:
    group: bytes
    payload_hash: bytes
    tx_hash: str
    sent_at: float


class PrivateSender:
    def __init__(self, chain: Chain, account: LocalAccount, mediator: str) -> None:
        self.chain = chain
        self.account = account
        self.mediator = mediator
        self._groups: dict[bytes, med.GroupInfo] = {}
        self._finis: dict[bytes, med.TxFini] = {}
        self._stored: dict[bytes, asyncio.Task] = {}
        self._waiters: dict[bytes, asyncio.Future] = {}
        self._queue: list[tuple[bytes, pt.SealedPayload, asyncio.Future]] = []
        self._submitter: asyncio.Task | None = None
        self._mine: set[bytes] = set()
        # Bumped at each drop and each (re)subscription of the PrivateTxFini feed: a transaction
        # sent in the same epoch as now cannot have had its PrivateTxFini missed.
        self._epoch = 0
        self._sent_epoch: dict[bytes, int] = {}
        self.watch: LogWatch | None = None

    @classmethod
    async def connect(
        cls,
        nats_url: str,
        chain_rpc: str,
        mediator: str,
        account_key: str,
        chain_ws: str | None = None,
    ) -> PrivateSender:
        chain = await Chain.connect(chain_rpc)
        self = cls(chain, Account.from_key(account_key), mediator)
        self.nc = await connect(nats_url, "privtx-sender")
        self.payloads = await PayloadStore.open(self.nc.jetstream())
        if chain_ws:
            self.watch = LogWatch(chain_ws, [med.TX_FINI], self._on_log, self._on_reset)
            self.watch.start()
            await self.watch.started()
        return self

    async def close(self) -> None:
        if self._stored:  # payloads sent but not yet written to the store: finish them
            await asyncio.gather(*self._stored.values(), return_exceptions=True)
        if self.watch is not None:
            await self.watch.stop()
        await self.nc.close()
        await self.chain.close()

    async def group(self, group: bytes) -> med.GroupInfo:
        info = self._groups.get(group)
        if info is None:
            info = self._groups[group] = await med.group_of(self.chain, self.mediator, group)
            if info.sender.lower() != self.account.address.lower():
                raise pt.PrivTxError(
                    f"group {group.hex()} accepts submissions only from {info.sender}, not "
                    f"{self.account.address}; send with the group's sender key"
                )
        return info

    async def send(self, group: bytes, call: bytes) -> Sent:
        """Seal ``call`` for the group, push it, store it and submit it; returns once mined.

        Submissions made while the previous one is on its way go to the chain together, in one
        ``submitMany`` per group (each payload keeps its own PrivateTxInit).
        """
        info = await self.group(group)
        sealed = pt.seal_payload(call, group, list(info.seal_keys))
        started = time.perf_counter()
        # Pushed first: the online stakeholders hold it before the chain event. Stored while
        # the submission is mined: a stakeholder that missed the push fetches it later.
        await self.nc.publish(
            PAYLOAD_SUBJECT.format(group=group.hex()), pm.push_body(sealed.ciphertext)
        )
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._mine.add(sealed.payload_hash)  # only its own outcomes are kept from the logs
        self._sent_epoch[sealed.payload_hash] = self._epoch
        self._queue.append((group, sealed, fut))
        if self._submitter is None or self._submitter.done():
            self._submitter = asyncio.create_task(self._submit_batches())
        # The store is written beside the submission and the stakeholders' votes: the online
        # ones hold the push already. ``outcome`` reports a failed write.
        self._stored[sealed.payload_hash] = asyncio.create_task(
            self.payloads.put(sealed.ciphertext)
        )
        try:
            tx = await fut
        except BaseException:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._stored.pop(sealed.payload_hash)
            raise
        return Sent(group, sealed.payload_hash, tx, started)

    async def _check_stored(self, payload_hash: bytes) -> None:
        task = self._stored.pop(payload_hash, None)
        if task is not None:
            await task  # raises what the object store said

    async def _submit_batches(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            by_group: dict[bytes, list] = {}
            for item in batch:
                by_group.setdefault(item[0], []).append(item)
            await asyncio.gather(*(self._submit_group(g, items) for g, items in by_group.items()))

    async def _submit_group(self, group: bytes, items: list) -> None:
        info = await self.group(group)
        sealed = [it[1] for it in items]
        if len(sealed) == 1:
            s = sealed[0]
            data = med.submit_data(group, s.payload_hash, s.ephemeral_pk, s.wraps)
        else:
            data = med.submit_many_data(group, sealed)
        gas = med.submit_gas(len(sealed), len(info.members))
        try:
            tx = await self.chain.send_call(self.account, self.mediator, data, gas=gas)
            receipt = await self.chain.mined(tx)
            if int(receipt["status"], 16) != 1:
                await self.chain.wait(tx)  # raises ChainRevert with the mediator's reason
        except Exception as exc:  # any failure, not only the chain's: send() waits on it
            if len(items) > 1 and isinstance(exc, ChainError):
                for it in items:  # one bad submission must not sink the others: one by one
                    await self._submit_group(group, [it])
                return
            for it in items:
                if not it[2].done():
                    it[2].set_exception(exc)
            return
        for it in items:
            if not it[2].done():
                it[2].set_result(tx)

    def _on_reset(self) -> None:
        self._epoch += 1

    def _heard_throughout(self, payload_hash: bytes) -> bool:
        """Has the PrivateTxFini feed been live without a break since this was sent?"""
        live = self.watch is not None and self.watch.live
        return live and self._sent_epoch.get(payload_hash) == self._epoch

    def _on_log(self, lg: RawLog) -> None:
        ev = med.decode_event(lg)
        if isinstance(ev, med.TxFini) and ev.payload_hash in self._mine:
            self._mine.discard(ev.payload_hash)
            self._finis[ev.payload_hash] = ev
            fut = self._waiters.pop(ev.payload_hash, None)
            if fut is not None and not fut.done():
                fut.set_result(ev)

    async def outcome(
        self, group: bytes, payload_hash: bytes, timeout_s: float = 60.0
    ) -> med.TxInfo:
        """Wait until the transaction settles; its status and agreed roots."""
        deadline = time.monotonic() + timeout_s
        checked_at = time.monotonic()
        try:
            while True:
                if payload_hash not in self._finis:
                    fut = self._waiters.setdefault(
                        payload_hash, asyncio.get_running_loop().create_future()
                    )
                    try:
                        live = self.watch is not None and self.watch.live
                        async with asyncio.timeout(2.0 if live else 0.05):  # not wait_for,
                            await asyncio.shield(fut)  # which can swallow a cancel (3.11)
                    except TimeoutError:
                        pass
                if payload_hash in self._finis:
                    ev = self._finis.pop(payload_hash)
                    await self._check_stored(payload_hash)
                    return med.TxInfo(ev.status, 0, 0, 0, ev.old_root, ev.new_root)
                # While the node has pushed PrivateTxFini logs without a break since this was
                # sent, its outcome will come that way: reading txOf (a contract call, for
                # each of up to --window waiting transactions) is only a rare check. After a
                # break it is read once the feed is back, so that nothing settled in the gap
                # is missed.
                now = time.monotonic()
                if self._heard_throughout(payload_hash) and now - checked_at < CHECK_EVERY_S:
                    if now > deadline:
                        break
                    continue
                checked_at = now
                if self.watch is not None and self.watch.live:
                    self._sent_epoch[payload_hash] = self._epoch  # checked from here on
                try:
                    info = await med.tx_of(self.chain, self.mediator, group, payload_hash)
                except ChainError:
                    info = None
                if info is not None and info.status != pt.Status.PENDING:
                    self._waiters.pop(payload_hash, None)
                    await self._check_stored(payload_hash)
                    return info
                if time.monotonic() > deadline:
                    break
        finally:
            self._sent_epoch.pop(payload_hash, None)
        raise SettleTimeout(
            f"private transaction {payload_hash.hex()} of group {group.hex()} did not "
            f"settle within {timeout_s:.0f} s; see `shardline privtx status`"
        )
