"""The sender: seals a private call for a group's stakeholders and submits it to the mediator.

Per transaction: a fresh key and nonce encrypt the call (XChaCha20-Poly1305); the key is wrapped
for each stakeholder (X25519 + ChaCha20-Poly1305, one ephemeral key); the ciphertext is pushed to
the stakeholders on ``privtx.payload.<group>`` (so they hold it before the chain event arrives)
and stored in the object store under its SHA3-256; then ``submit`` goes to the mediator. Nothing
but ciphertext and hashes leaves the sender. Outcomes are read from ``PrivateTxFini`` logs pushed
by the node (``eth_subscribe``), falling back to ``txOf`` reads.

Votes ahead: the push also carries the wraps, the ephemeral key and the position in the group's
sequence the submission will take. Stakeholders in step execute it at once and answer with votes
signed for that position; the sender waits for them (until they decide the policy, all members
have answered, or ``PREVOTE_WAIT_S``) and submits payload and votes in one ``submitVoted``. When
they meet the policy, the transaction settles in that one public transaction, and its outcome is
read from the receipt. A member whose vote did not come (or did not verify) votes on chain as
before; a group none of whose members answer is not waited for until one does again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from eth_account import Account
from eth_account.signers.local import LocalAccount

from shardline.bus import log
from shardline.bus.connect import connect
from shardline.bus.envelope import BadMessage
from shardline.bus.payloads import PayloadStore
from shardline.contracts import mediator as med
from shardline.contracts.client import Chain, ChainError
from shardline.contracts.cursor import RawLog
from shardline.contracts.watch import LogWatch
from shardline.core import privtx as pt
from shardline.workers import privtx_messages as pm
from shardline.workers.privtx_facilitator import PAYLOAD_SUBJECT

MAX_BATCH = 64  # submissions per submitMany: well inside a block's gas limit
STALE_S = 5.0  # a transaction unheard of for this long is looked up before asking ahead
DROPPED_S = 120.0  # one the Mediator still does not know after this was dropped
PREVOTE_WAIT_S = 0.25  # how long the next submission waits for the votes ahead
CHECK_EVERY_S = 10.0  # txOf read for a waiting transaction even while its outcome is pushed


class SettleTimeout(TimeoutError):
    pass


@dataclass
class _Ballot:
    """A sealed payload on its way: the votes ahead that came for it, in submission order."""

    group: bytes
    sealed: pt.SealedPayload
    info: med.GroupInfo
    fut: asyncio.Future
    seq: int = 0  # asking for votes ahead: the position expected, and the root it builds on
    root: bytes = b""
    seal: bytes = b""  # pt.seal_hash of its ephemeral key and wraps
    votes: dict[int, pt.PreVote] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    submitted: bool = False

    def add(self, vote: pt.PreVote) -> None:
        self.votes[vote.member] = vote
        size = len(self.info.members)
        pairs = {m: (v.old_root, v.new_root) for m, v in self.votes.items()}
        # decided (either way) whatever the group's root is, or everyone has answered
        decided = pt.decide(pairs, size, self.info.threshold, b"\x01" * 32).status
        if decided != pt.Status.PENDING or len(self.votes) == size:
            self.ready.set()


@dataclass
class _Tip:
    """A group's latest transaction from this sender: the position its receipt gave it and the
    outcome it settled with, as they become known."""

    payload_hash: bytes
    seq: int | None = None
    status: pt.Status | None = None
    root: bytes = b""


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
        # per group, in the order sent: each group's submissions go in their own turn, so that
        # one waiting for its votes ahead holds up no other group's
        self._queues: dict[bytes, list[_Ballot]] = {}
        self._submitters: dict[bytes, asyncio.Task] = {}
        self.votes_ahead = True  # False: the stakeholders always execute on PrivateTxInit
        # the ballots that asked for votes ahead, by payload hash, until they settle
        self._ballots: dict[bytes, _Ballot] = {}
        self._tips: dict[bytes, _Tip] = {}  # per group
        self._quiet: set[bytes] = set()  # groups none of whose members answered the last push
        # per group: sent, outcome not yet seen (payload hash -> when sent)
        self._unsettled: dict[bytes, dict[bytes, float]] = {}
        self._deciding: dict[bytes, asyncio.Lock] = {}
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
        self._inbox = self.nc.new_inbox()
        await self.nc.subscribe(self._inbox, cb=self._on_prevote)
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
        ``submitVoted`` (or ``submitMany``) per group (each payload keeps its own
        PrivateTxInit), in the order they were sent.
        """
        info = await self.group(group)
        sealed = pt.seal_payload(call, group, list(info.seal_keys))
        phash = sealed.payload_hash
        started = time.perf_counter()
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        ballot = _Ballot(group, sealed, info, fut)
        # Votes ahead are asked for a transaction sent alone: then the stakeholders' executions
        # are the next step and the one public transaction settles it. While others of the group
        # are on their way, submissions and votes go in batches instead (fewer transactions,
        # more throughput), and the stakeholders execute on the chain's PrivateTxInit.
        unsettled = self._unsettled.setdefault(group, {})
        # decided and the slot taken in one step: sends that come meanwhile see this one
        async with self._deciding.setdefault(group, asyncio.Lock()):
            if self.votes_ahead and unsettled:
                await self._forget_settled(group, unsettled)
            ahead = self.votes_ahead and not unsettled
            unsettled[phash] = time.monotonic()
            if ahead:
                try:
                    ballot.seq, ballot.root = await self._expected(group)
                except BaseException:
                    unsettled.pop(phash, None)
                    raise
                ballot.seal = pt.seal_hash(sealed.ephemeral_pk, sealed.wraps)
                self._ballots[phash] = ballot
            else:
                ballot.ready.set()
        # Pushed first: the online stakeholders hold it (and execute and vote) before the chain
        # event. Stored while the votes come and the submission is mined: a stakeholder that
        # missed the push fetches it later.
        ask = pm.Ahead(ballot.seq, ballot.root, sealed.ephemeral_pk, tuple(sealed.wraps))
        try:
            await self.nc.publish(
                PAYLOAD_SUBJECT.format(group=group.hex()),
                pm.push_body(sealed.ciphertext, ask if ahead else None),
                reply=self._inbox,
            )
            self._tips[group] = _Tip(phash)
            self._mine.add(phash)  # only its own outcomes are kept from the logs
            self._sent_epoch[phash] = self._epoch
            self._queues.setdefault(group, []).append(ballot)
            submitter = self._submitters.get(group)
            if submitter is None or submitter.done():
                self._submitters[group] = asyncio.create_task(self._submit_batches(group))
            # ``outcome`` reports a failed write.
            self._stored[phash] = asyncio.create_task(self.payloads.put(sealed.ciphertext))
            tx = await fut
        except BaseException:
            self._ballots.pop(phash, None)
            unsettled.pop(phash, None)
            stored = self._stored.pop(phash, None)
            if stored is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await stored
            raise
        return Sent(group, phash, tx, started)

    async def _expected(self, group: bytes) -> tuple[int, bytes]:
        """The position the next submission will take and the agreed root it builds on, when
        nothing of the group is on its way: after the group's latest transaction of this sender,
        as its receipt and outcome said when it settled YES; else read from the mediator."""
        tip = self._tips.get(group)
        if tip is not None and tip.seq is not None and tip.status == pt.Status.YES:
            return tip.seq + 1, tip.root
        info = await med.group_of(self.chain, self.mediator, group)
        return info.submitted + 1, info.root

    def _learn(self, group: bytes, phash: bytes, status: pt.Status, new_root: bytes) -> None:
        tip = self._tips.get(group)
        if tip is not None and tip.payload_hash == phash:
            tip.status, tip.root = status, new_root
        self._unsettled.get(group, {}).pop(phash, None)
        self._ballots.pop(phash, None)

    async def _forget_settled(self, group: bytes, unsettled: dict[bytes, float]) -> None:
        """Transactions sent a while ago whose outcome this sender has not heard (no feed, and
        nobody asked for it): read them, so that they do not keep the group from votes ahead."""
        now = time.monotonic()
        for phash, at in list(unsettled.items()):
            if now - at <= STALE_S:
                continue
            try:
                info = await med.tx_of(self.chain, self.mediator, group, phash)
            except Exception as exc:  # the node away: ask again next time
                log.warn("privtx.outcome_unread", payload=phash.hex(), error=repr(exc))
                return
            if info is not None and info.status != pt.Status.PENDING:
                self._learn(group, phash, info.status, info.new_root)
            elif info is None and now - at > DROPPED_S:
                unsettled.pop(phash, None)  # never mined (dropped): nothing to wait for
                self._ballots.pop(phash, None)
            elif info is not None:
                unsettled[phash] = now  # still pending: look again in a while

    async def _on_prevote(self, msg) -> None:
        if msg.headers and msg.headers.get("Status"):
            return  # the server's "no responders": no stakeholder listens to the group now
        try:
            m = pm.parse_prevote(msg.subject, bytes(msg.data))
        except BadMessage as exc:
            await pm.dead_letter(self.nc.jetstream(), msg, str(exc), "privtx-sender")
            return
        ballot = self._ballots.get(m.payload_hash)
        v = m.vote
        if ballot is None:
            return
        if ballot.submitted:
            # submitted already without it: its member votes on chain. But the group's members
            # do execute ahead: wait for their votes again.
            self._quiet.discard(ballot.group)
            return
        if m.seq != ballot.seq or v.member in ballot.votes:
            return  # for another position (the member votes on chain), or said already
        members = ballot.info.members
        digest = pt.pre_vote_digest(
            self.chain.chain_id,
            self.mediator,
            ballot.group,
            m.payload_hash,
            m.seq,
            ballot.seal,
            v.old_root,
            v.new_root,
        )
        if v.member >= len(members) or pt.pre_vote_signer(digest, v.sig) != members[v.member]:
            log.warn(
                "privtx.prevote_refused",
                payload=m.payload_hash.hex(),
                member=v.member,
                why="its signature is not the member's account's",
            )
            return
        self._quiet.discard(ballot.group)
        ballot.add(v)

    async def _check_stored(self, payload_hash: bytes) -> None:
        task = self._stored.pop(payload_hash, None)
        if task is not None:
            await task  # raises what the object store said

    async def _submit_batches(self, group: bytes) -> None:
        """The group's submissions in the order sent: the first waits for its votes ahead (up to
        ``PREVOTE_WAIT_S``), and those behind it whose votes are in go with it, in one
        submission."""
        queue = self._queues[group]
        while queue:
            head = queue[0]
            if not head.ready.is_set() and group not in self._quiet:
                try:
                    async with asyncio.timeout(PREVOTE_WAIT_S):  # not wait_for (3.11 cancel)
                        await head.ready.wait()
                except TimeoutError:
                    if not head.votes:  # nobody executes ahead: do not wait for the next ones
                        self._quiet.add(group)
            n = 1
            while n < min(len(queue), MAX_BATCH) and (
                queue[n].ready.is_set() or group in self._quiet
            ):
                n += 1
            batch = queue[:n]
            del queue[:n]  # (in place: send appends to this very list)
            for b in batch:
                b.submitted = True
            try:
                await self._submit_group(group, batch)
            except Exception as exc:  # failed before the chain was asked: the senders hear why
                for b in batch:
                    if not b.fut.done():
                        b.fut.set_exception(exc)

    async def _submit_group(self, group: bytes, items: list[_Ballot]) -> None:
        info = await self.group(group)
        sealed = [b.sealed for b in items]
        votes = sum(len(b.votes) for b in items)
        if votes:
            data = med.submit_voted_data(
                group, [(b.sealed, sorted(b.votes.values(), key=lambda v: v.member)) for b in items]
            )
            gas = med.submit_voted_gas(len(sealed), len(info.members), votes)
        elif len(sealed) == 1:
            s = sealed[0]
            data = med.submit_data(group, s.payload_hash, s.ephemeral_pk, s.wraps)
            gas = med.submit_gas(1, len(info.members))
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
                if not it.fut.done():
                    it.fut.set_exception(exc)
            return
        # The position the group's latest submission took; the outcome too when the votes it
        # carried settled it.
        tip = self._tips.get(group)
        for lg in med.receipt_logs(receipt, self.mediator):
            topic = med.topic_of(lg)
            if topic == med.TX_FINI:
                self._on_log(lg)
            elif topic == med.TX_INIT and tip is not None and lg.topics[2] == tip.payload_hash:
                tip.seq = med.decode_event(lg).seq
        for it in items:
            if not it.fut.done():
                it.fut.set_result(tx)

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
            self._learn(ev.group, ev.payload_hash, ev.status, ev.new_root)
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
                    self._learn(group, payload_hash, info.status, info.new_root)
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
