"""The facilitator: one per stakeholder, between the public mediator and its private executor.

It reads the mediator's events from its own chain endpoint with the reorg-safe cursor, in order:
- GroupCreated naming its account: deploys the group's private contract on its executor (out of
  band) and checks that its root is the group's initial root.
- PrivateTxInit of one of its groups: takes the ciphertext (pushed on the bus ahead of the chain
  transaction, else from the object store), checks it against the payload hash, unwraps its key,
  decrypts, executes on its executor and votes (old root, new root). A payload it cannot open is
  refused: it votes (old root, 0) and says why, and the policy decides.
- PrivateTxFini: YES keeps the execution (or, for one it missed while away, runs it now and
  checks the agreed root); NO or FAILED goes back to the snapshot before it. Reverting drops
  what ran after it, so later executions of other groups are run again; later ones of the same
  group were built on the dropped state and are discarded (they settle NO at the mediator, whose
  YES needs the group's agreed root as the old root).
A push that asks for a vote ahead (``seq``, ``ephemeral``, ``wraps``: what the submission will
carry) is executed at once when it is the group's next transaction here, and answered with a vote
signed by the stakeholder's account for that position (``privtx.prevote``); the sender carries it
in ``submitVoted``. Such an execution waits in state ``pre`` for its PrivateTxInit: at the position
it was executed for, it counts as executed; another transaction at that position (or a revert
beneath it) abandons it, back to its snapshot, and it is run afresh if its PrivateTxInit comes.
Votes are sent in batches: everything decided while the previous vote transaction was being sent
goes into one ``voteMany``; or, in BLS mode, signed and shared on ``privtx.vote.<group>`` and
submitted as one aggregate by the lowest-indexed signer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from eth_account import Account
from eth_keys import keys
from nacl import bindings as sodium
from nats.aio.msg import Msg

from shardline.bus import log
from shardline.bus.blobs import BlobCorrupt, BlobNotFound
from shardline.bus.connect import connect
from shardline.bus.credentials import ClientAuth
from shardline.bus.envelope import BadMessage
from shardline.bus.payloads import PayloadStore
from shardline.contracts import mediator as med
from shardline.contracts.client import Chain, ChainError
from shardline.contracts.cursor import EventReader, HeadWatcher, RawLog, Rpc, raw_log
from shardline.contracts.watch import LogWatch
from shardline.core import privtx as pt
from shardline.core.bls import BlsKey, aggregate
from shardline.core.logpoller import Cursor
from shardline.workers import privtx_messages as pm
from shardline.workers.privtx_executor import Executor, ExecutorLost
from shardline.workers.privtx_rebuild import agreed_history
from shardline.workers.privtx_store import FacilitatorStore, TxRow

PAYLOAD_SUBJECT = pm.PAYLOAD_SUBJECT
VOTE_SUBJECT = pm.VOTE_SUBJECT
FETCH_WAIT_S = 5.0
BLS_FALLBACK_S = 5.0
MAX_VOTES = 64  # votes per voteMany: well inside a block's gas limit
PUSH_CACHE = 4096
VOTE_LINGER_S = 0.15  # at most, and only while pushed PrivateTxInits wait to be executed
READ_EVERY_S = 0.25  # the reorg-safe reader's pace (see _LazyReader)
OPEN = ("executed", "refused")  # a row's states while its transaction is undecided
WATCH_EXECUTOR_S = 2.0  # how often an idle facilitator checks its executor still has its state


@dataclass
class FacilitatorConfig:
    name: str
    account_key: str  # hex: the stakeholder's chain account (votes come from it)
    sealing_sk: bytes  # X25519 secret: key wraps are made to its public key
    executor_url: str
    chain_rpc: str
    mediator: str
    start_block: int
    nats_url: str
    database_url: str
    chain_ws: str | None = None
    bls_sk: bytes | None = None  # with it, votes go as one aggregate BLS signature
    private_contract: str = "SharedInventory"
    bus_auth: ClientAuth | None = None  # its org's nkey user; None: the URL's own user


@dataclass
class _Group:
    info: med.GroupInfo
    member: int
    contract: str
    root: bytes  # the agreed root, as this facilitator has read it
    out_of_sync: str = ""
    head: bytes | None = None  # the executor's root after its last execution, while known
    last_seq: int = 0  # the sequence number of the last PrivateTxInit handled
    ahead: dict[str, TxRow] = field(default_factory=dict)  # executed ahead, no PrivateTxInit yet
    # executed on their PrivateTxInit behind a refusal of this member's that is not decided yet:
    # their votes wait for it (the PrivateTxInit, or None when read again after a restart)
    held: dict[str, med.TxInit | None] = field(default_factory=dict)

    def next_position(self) -> int:
        """The position in the group's sequence this executor's next execution would take."""
        return max([self.last_seq, *(r.seq for r in self.ahead.values())]) + 1


class _Heads(HeadWatcher):
    """The node's new heads, also as a future any number of tasks can wait on (the base's
    event is the reader's alone)."""

    def __init__(self, ws_url: str) -> None:
        super().__init__(ws_url)
        self.next: asyncio.Future = asyncio.get_running_loop().create_future()

    def _take(self, head: dict) -> None:
        super()._take(head)
        fut, self.next = self.next, asyncio.get_running_loop().create_future()
        fut.set_result(None)

    async def mined(self, chain: Chain, tx: str, timeout_s: float = 120.0) -> dict:
        """A transaction's receipt, asked for once per new head instead of polled."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            nxt = self.next
            receipt = await chain.rpc.call("eth_getTransactionReceipt", [tx])
            if receipt:
                return receipt
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):  # not wait_for: see HeadWatcher.wait
                    await asyncio.shield(nxt)
        return await chain.mined(tx)  # says clearly why not


class _LazyReader(EventReader):
    """The reorg-safe reader, reading at most every READ_EVERY_S: each read costs a getLogs
    and a cursor write, and with a block per transaction reading every block would cost more
    than the rest of a private transaction. Nothing waits on it: PrivateTxInit is taken as the
    node pushes it (``_fast_inits``), and a PrivateTxFini only confirms or reverts."""

    async def next_head(self) -> None:
        await super().next_head()
        await asyncio.sleep(READ_EVERY_S)


@dataclass
class _Pending:
    votes: dict[tuple[bytes, bytes], dict[int, tuple[int, int]]] = field(default_factory=dict)
    sent: bool = False


class Facilitator:
    def __init__(self, cfg: FacilitatorConfig) -> None:
        self.cfg = cfg
        self.account = Account.from_key(cfg.account_key)
        self.vote_key = keys.PrivateKey(bytes(self.account.key))  # signs votes cast ahead
        self.sealing_pk = sodium.crypto_scalarmult_base(cfg.sealing_sk)
        self.bls = BlsKey.from_bytes(cfg.bls_sk) if cfg.bls_sk else None
        self.store = FacilitatorStore(cfg.database_url)
        self.executor = Executor(cfg.executor_url)
        self.groups: dict[bytes, _Group] = {}
        self.rows: dict[str, TxRow] = {r.payload_hash: r for r in self.store.txs()}
        self.step = max((r.step for r in self.rows.values()), default=0)
        # the rows still waiting for their PrivateTxFini: what the expiry watch looks at each
        # second (all rows would grow with every transaction ever handled)
        self.open = {n for n, r in self.rows.items() if r.state in OPEN}
        self.pushed: dict[str, bytes] = {}
        self.checks: set[asyncio.Task] = set()  # was our vote ahead carried? (see _on_init)
        self.votes: list[tuple[bytes, bytes, bytes, bytes]] = []
        self.direct_votes: list[tuple[bytes, bytes, bytes, bytes]] = []
        self.vote_ready = asyncio.Event()
        self.bls_votes: dict[bytes, _Pending] = {}
        self.shared_at: dict[bytes, tuple[float, bytes, bytes, bytes]] = {}
        self.tasks: list[asyncio.Task] = []
        self.fast = None
        self.drained = asyncio.Event()  # no pushed PrivateTxInit waits to be executed
        self.settled = asyncio.Event()  # set after each PrivateTxFini handled (for waiters)
        self.lock = asyncio.Lock()  # chain events and rebuilds of the executor, one at a time
        self.rebuilds = 0
        self._busy_at = 0.0

    # -- life ---------------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        self.nc = await connect(cfg.nats_url, f"privtx-{cfg.name}", cfg.bus_auth)
        self.js = self.nc.jetstream(timeout=5)
        self.payloads = await PayloadStore.open(self.js)
        self.chain = await Chain.connect(cfg.chain_rpc)
        self.heads = _Heads(cfg.chain_ws) if cfg.chain_ws else None
        self.reader = _LazyReader(
            Rpc(self.chain.rpc),
            Cursor(start=cfg.start_block, remembered=self.store.cursor_blocks()),
            addresses=lambda: [cfg.mediator],
            topics0=[med.GROUP_CREATED, med.TX_INIT, med.TX_FINI],
            save=lambda c: self.store.save_cursor(c.remembered()),
            heads=self.heads,
            poll_s=0.01,  # no websocket: poll the node closely, votes wait on it
        )
        stored = self.store.groups()
        for gid, (member, contract) in stored.items():
            info = await med.group_of(self.chain, cfg.mediator, bytes.fromhex(gid))
            self.groups[info.group] = _Group(info, member, contract, info.root)
        for row in self.rows.values():
            g = self.groups.get(bytes.fromhex(row.group_id))
            if g is None or not row.seq or row.state == "abandoned":
                continue
            if row.state == "pre":
                g.ahead[row.payload_hash] = row
            else:
                g.last_seq = max(g.last_seq, row.seq)
        # An executor restarted while this facilitator was away comes back empty: rebuild it
        # before reading on (if it cannot be reached now, the watch below tries again).
        try:
            async with self.lock:
                await self._check_executor()
        except Exception as exc:
            log.warn("privtx.executor_unreachable", stakeholder=cfg.name, error=repr(exc))
        await self._vote_again()
        await self.nc.subscribe(PAYLOAD_SUBJECT.format(group="*"), cb=self._on_push)
        if self.bls is not None:
            await self.nc.subscribe(VOTE_SUBJECT.format(group="*"), cb=self._on_bls_vote)
        if self.heads is not None:
            self.heads.start()
        self.fast: LogWatch | None = None
        if cfg.chain_ws:
            self.inits: asyncio.Queue[RawLog] = asyncio.Queue()
            self.fast = LogWatch(cfg.chain_ws, [med.TX_INIT], self.inits.put_nowait, lambda: None)
            self.fast.start()
            self.tasks.append(asyncio.create_task(self._fast_inits()))
        self.tasks += [
            asyncio.create_task(
                self.reader.follow(
                    self.on_log, event="privtx.chain_step_failed", stakeholder=cfg.name
                )
            ),
            asyncio.create_task(self._send_votes()),
            asyncio.create_task(self._expire_overdue()),
            asyncio.create_task(self._watch_executor()),
        ]
        log.event("privtx.facilitator_started", stakeholder=cfg.name, account=self.account.address)

    async def _vote_again(self) -> None:
        """At start: the votes the last run may have lost, and the held ones."""
        # Undecided executions may have lost their vote with the last run (a vote batch not yet
        # sent, or one ahead not carried): vote again; the mediator skips a vote it counted.
        # One behind an undecided refusal of this member's waits for it, as it did before.
        for row in [self.rows[n] for n in self.open]:
            gid = bytes.fromhex(row.group_id)
            g = self.groups.get(gid)
            if g is None or not row.old_root:
                continue
            if row.state == "executed" and self._refusal_before(g, row.seq) is not None:
                g.held[row.payload_hash] = None
                continue
            new = pt.ZERO_ROOT if row.state == "refused" else row.new_root
            self._queue_vote(gid, bytes.fromhex(row.payload_hash), row.old_root, new, direct=True)
        # One taken back by a catch-up whose run again did not happen before the stop (a held
        # one, most likely): held again, and run and voted below if nothing holds it back (the
        # mediator skips a vote it counted already).
        now = time.time()
        for row in list(self.rows.values()):
            g = self.groups.get(bytes.fromhex(row.group_id))
            if g is None or row.state != "discarded" or not row.seq or row.deadline < now:
                continue
            with contextlib.suppress(Exception):  # the node away: its PrivateTxFini settles it
                info = await med.tx_of(
                    self.chain, self.cfg.mediator, g.info.group, bytes.fromhex(row.payload_hash)
                )
                if info is not None and info.status == pt.Status.PENDING:
                    g.held[row.payload_hash] = None
        for g in self.groups.values():
            if g.held:
                try:
                    async with self.lock:
                        await self._release_held(g)
                except Exception as exc:  # the executor away: the group's next outcome retries
                    log.warn("privtx.release_failed", stakeholder=self.cfg.name, error=repr(exc))

    async def stop(self) -> None:
        for t in [*self.tasks, *self.checks]:
            t.cancel()
        for t in [*self.tasks, *self.checks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.heads is not None:
            await self.heads.stop()
        if self.fast is not None:
            await self.fast.stop()
        self.store.save_cursor(self.reader.cursor.remembered())
        await self.nc.close()
        await self.chain.close()
        await self.executor.close()
        self.store.close()

    # -- the bus ------------------------------------------------------------------------------
    async def _on_push(self, msg: Msg) -> None:
        try:
            push = pm.parse_push(msg.subject, bytes(msg.data))
        except BadMessage as exc:
            await pm.dead_letter(self.js, msg, str(exc), f"privtx-facilitator.{self.cfg.name}")
            return
        # named by its hash, checked again against the chain's: a forged push is a miss
        self.pushed[push.name] = push.ciphertext
        if len(self.pushed) > PUSH_CACHE:
            self.pushed.pop(next(iter(self.pushed)))
        if push.ahead is not None and msg.reply:
            try:
                await self._execute_ahead(push, msg.reply)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # no vote ahead: it is executed when its Init comes
                log.warn("privtx.ahead_failed", stakeholder=self.cfg.name, error=repr(exc))

    async def _execute_ahead(self, push: pm.Push, reply: str) -> None:
        """Execute a pushed payload before its submission, if it is the group's next one here,
        and answer with the vote for that position, signed by this stakeholder's account."""
        assert push.ahead is not None
        g = self.groups.get(push.group)
        seq = push.ahead.seq
        if g is None or g.out_of_sync or push.name in self.rows:
            return
        async with self.lock:
            if push.name in self.rows or self._refusal_before(g, seq) is not None:
                return  # (behind its own undecided refusal, a vote ahead would be stale too)
            head = None
            if seq == g.next_position():
                head = g.head = g.head or await self.executor.root(g.contract)
            if head != push.ahead.root:
                # Another position, or its state is not the one the sender expects (a payload
                # it refused or missed that the others agreed on, a NO not yet reverted here):
                # it executes on the chain's PrivateTxInit instead, in order.
                log.event(
                    "privtx.not_in_step",
                    stakeholder=self.cfg.name,
                    group=g.info.group.hex(),
                    payload=push.name,
                    seq=seq,
                    next=g.next_position(),
                    root_matches=head == push.ahead.root,
                )
                return
            self._busy_at = time.monotonic()
            phash = bytes.fromhex(push.name)
            row = TxRow(push.name, push.group.hex(), seq, self._next_step(), "pre", "", b"", b"", 0)
            init = med.TxInit(push.group, phash, seq, push.ahead.ephemeral_pk, push.ahead.wraps, 0)
            self.pushed.pop(push.name, None)  # opened from the push itself
            try:
                call = await self._open(init, g, push.ciphertext)
            except pt.PrivTxError as exc:
                row.note = str(exc)[:400]
                row.old_root, row.new_root = head, pt.ZERO_ROOT  # a refusal, as on chain
            else:
                ex = await self.executor.execute(g.contract, g.info.sender, call, old_root=head)
                g.head = ex.new_root
                row.snapshot, row.old_root, row.new_root = ex.snapshot, ex.old_root, ex.new_root
                row.note = "" if ex.ok else "the private call reverted: state unchanged"
            self._keep(row)
        seal = pt.seal_hash(push.ahead.ephemeral_pk, push.ahead.wraps)
        digest = pt.pre_vote_digest(
            self.chain.chain_id,
            self.cfg.mediator,
            push.group,
            phash,
            seq,
            seal,
            row.old_root,
            row.new_root,
        )
        vote = pt.PreVote(
            g.member, row.old_root, row.new_root, pt.sign_pre_vote(self.vote_key, digest)
        )
        await self.nc.publish(reply, pm.prevote_body(phash, seq, vote))

    async def _ciphertext(self, phash: bytes) -> bytes:
        name = phash.hex()
        if name in self.pushed:
            return self.pushed.pop(name)
        deadline = time.monotonic() + FETCH_WAIT_S
        while True:
            try:
                return await self.payloads.get(name)
            except BlobNotFound:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    # -- chain events -------------------------------------------------------------------------
    async def on_log(self, lg: RawLog) -> None:
        async with self.lock:
            self._busy_at = time.monotonic()
            try:
                await self._on_log(lg)
            except Exception:
                # An executor that lost its state fails in many ways (no signer, no snapshot,
                # no contract): look, rebuild it from the agreed history, and handle it again.
                if not await self._check_executor():
                    raise
                await self._on_log(lg)

    async def _on_log(self, lg: RawLog) -> None:
        ev = med.decode_event(lg)
        if isinstance(ev, med.GroupInfo):
            await self._on_group(ev)
        elif isinstance(ev, med.TxInit) and ev.group in self.groups:
            await self._on_init(ev, lg.tx_hash)
        elif isinstance(ev, med.TxFini) and ev.group in self.groups:
            await self._on_fini(ev)
            self.settled.set()
            self.settled = asyncio.Event()

    async def _fast_inits(self) -> None:
        """PrivateTxInit as the node pushes it, ahead of the reorg-safe reader: executing and
        voting early is safe (a vote counts only if the submission is on chain; an execution is
        kept only when its PrivateTxFini, read by the reader, says YES). Taken only when it is
        the group's next one, so that executions stay in the group's order; anything else
        (a gap, a group not joined yet) is left to the reader, and what the reader reads again
        is done already."""
        while True:
            if self.inits.empty():
                self.drained.set()
            lg = await self.inits.get()
            try:
                if lg.removed or lg.address.lower() != self.cfg.mediator.lower():
                    continue
                ev = med.decode_event(lg)
                if not isinstance(ev, med.TxInit):
                    continue
                g = self.groups.get(ev.group)
                if g is None or ev.seq != g.last_seq + 1 or not self._fresh(ev):
                    continue
                async with self.lock:
                    if ev.seq == g.last_seq + 1 and self._fresh(ev):
                        self._busy_at = time.monotonic()
                        await self._on_init(ev, lg.tx_hash)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the reader will handle it in its turn
                log.warn("privtx.fast_init_failed", stakeholder=self.cfg.name, error=repr(exc))

    def _fresh(self, ev: med.TxInit) -> bool:
        """Not handled yet: no row, or one executed ahead (or abandoned) awaiting this Init."""
        row = self.rows.get(ev.payload_hash.hex())
        return row is None or row.state in ("pre", "abandoned")

    async def _on_group(self, info: med.GroupInfo) -> None:
        member = info.index_of(self.account.address)
        if member is None or info.group in self.groups:
            return
        if info.seal_keys[member] != self.sealing_pk:
            log.warn(
                "privtx.wrong_sealing_key",
                group=info.group.hex(),
                detail="the group names this account with another sealing key: payloads "
                "will not open here; recreate the group with this stakeholder's key",
            )
        contract = await self.executor.deploy(self.cfg.private_contract)
        root = await self.executor.root(contract)
        self.store.add_group(info.group.hex(), member, contract)
        g = _Group(info, member, contract, info.root)
        if root != info.root:
            g.out_of_sync = f"fresh contract root {root.hex()} is not the group's {info.root.hex()}"
            log.warn("privtx.out_of_sync", group=info.group.hex(), why=g.out_of_sync)
        self.groups[info.group] = g
        log.event("privtx.group_joined", group=info.group.hex(), member=member, contract=contract)

    async def _on_init(self, ev: med.TxInit, tx_hash: bytes | None = None) -> None:
        name = ev.payload_hash.hex()
        g = self.groups[ev.group]
        # What was executed ahead for a position up to this one, other than this very payload at
        # this very position (this payload elsewhere too), can never settle where it was
        # executed: back to the snapshot before the earliest of it (and what ran after it).
        stale = [
            r
            for r in g.ahead.values()
            if (r.seq <= ev.seq or r.payload_hash == name)
            and (r.seq, r.payload_hash) != (ev.seq, name)
        ]
        if stale:
            await self._abandon(
                min(stale, key=lambda r: r.step), f"position {ev.seq} went to {name}"
            )
        row = self.rows.get(name)
        if row is not None and row.state == "pre":  # executed ahead, for this very position
            g.last_seq = max(g.last_seq, ev.seq)
            row.state = "refused" if row.new_root == pt.ZERO_ROOT else "executed"
            row.deadline = ev.deadline
            self._keep(row)
            # Counted already if the sender carried it (and then most likely settled in the
            # same transaction): the submission's receipt says; voted on chain if not.
            task = asyncio.create_task(self._vote_unless_carried(ev, row, tx_hash))
            self.checks.add(task)
            task.add_done_callback(self.checks.discard)
            return
        if name in self.rows and self.rows[name].state != "abandoned":
            return  # read again after a restart: done already
        g.last_seq = max(g.last_seq, ev.seq)
        row = TxRow(name, ev.group.hex(), ev.seq, self._next_step(), "", "", b"", b"", ev.deadline)
        try:
            call = await self._open(ev, g)
        except (pt.PrivTxError, BlobNotFound, BlobCorrupt) as exc:
            await self._refuse(g, ev, row, exc)
            return
        ex = await self.executor.execute(g.contract, g.info.sender, call, old_root=g.head)
        g.head = ex.new_root
        row.state, row.snapshot = "executed", ex.snapshot
        row.old_root, row.new_root = ex.old_root, ex.new_root
        row.note = "" if ex.ok else "the private call reverted: state unchanged"
        self._keep(row)
        self._vote_or_hold(g, ev, row)

    async def _refuse(
        self, g: _Group, ev: med.TxInit, row: TxRow, exc: Exception, *, direct: bool = False
    ) -> None:
        """Nothing is executed: vote (current root, 0) so the policy decides, and say why."""
        row.state, row.note = "refused", str(exc)[:400]
        row.old_root = row.new_root = await self.executor.root(g.contract)
        self._keep(row)
        log.warn("privtx.refused", group=row.group_id, payload=row.payload_hash, why=str(exc))
        self._queue_vote(ev.group, ev.payload_hash, row.old_root, pt.ZERO_ROOT, direct=direct)

    def _refusal_before(self, g: _Group, seq: int) -> TxRow | None:
        """A transaction of the group before position ``seq`` that this member refused and
        that is not decided yet."""
        gid = g.info.group.hex()
        for name in self.open:
            r = self.rows[name]
            if r.group_id == gid and r.state == "refused" and 0 < r.seq < seq:
                return r
        return None

    def _vote_or_hold(self, g: _Group, ev: med.TxInit, row: TxRow) -> None:
        """Vote for an execution on its PrivateTxInit, unless this member refused an earlier
        transaction of the group that is not decided yet. If the others agree on that one, this
        execution ran on a state without it: a vote for it would count, could not be taken back,
        and under k-of-n with a member down could leave the transaction short of its threshold
        until it failed. Held, it is voted once that one is decided (``_release_held``): as it
        is if that one settles NO, run again on the caught-up state if it settles YES."""
        behind = self._refusal_before(g, row.seq)
        if behind is None:
            self._queue_vote(ev.group, ev.payload_hash, row.old_root, row.new_root)
            return
        g.held[row.payload_hash] = ev
        log.event(
            "privtx.vote_held",
            stakeholder=self.cfg.name,
            payload=row.payload_hash,
            behind=behind.payload_hash,
        )

    async def _release_held(self, g: _Group) -> None:
        """Vote the held executions whose earlier refusals are decided, in the group's order;
        one taken back by a catch-up runs again first, on the caught-up state."""
        if g.out_of_sync:  # its state is not the group's: a vote from it would mislead
            for name in list(g.held):
                log.warn("privtx.held_vote_dropped", payload=name, why=g.out_of_sync)
            g.held.clear()
            return
        for name in sorted(g.held, key=lambda n: self.rows[n].seq if n in self.rows else 0):
            row = self.rows.get(name)
            if row is None or row.state not in ("executed", "discarded"):
                g.held.pop(name)  # decided, or taken back and undone, meanwhile
                continue
            if self._refusal_before(g, row.seq) is not None:
                return  # still behind one: it and the later ones wait
            # Kept in ``held`` until its vote is queued: if anything below raises, the handler
            # of this PrivateTxFini runs again (``on_log``) and so does this.
            ev = g.held[name] or await self._init_of(g.info.group, bytes.fromhex(name))
            if ev is None:
                log.warn("privtx.held_vote_dropped", payload=name, why="no PrivateTxInit found")
                g.held.pop(name)
                continue
            g.held[name] = ev
            if row.state == "discarded":
                # whatever of the group ran after its position goes back first (run again in
                # turn if held, or on its PrivateTxFini if it settles YES)
                await self._take_back(g, row.seq, f"ran before {name}, which runs again first")
                try:
                    call = await self._open(ev, g)
                except (pt.PrivTxError, BlobNotFound, BlobCorrupt) as exc:
                    g.held.pop(name)
                    await self._refuse(g, ev, row, exc, direct=True)
                    continue
                ex = await self.executor.execute(g.contract, g.info.sender, call)
                g.head = ex.new_root
                row.state, row.snapshot, row.step = "executed", ex.snapshot, self._next_step()
                row.old_root, row.new_root = ex.old_root, ex.new_root
                row.note = "run again once the refusal before it was decided"
                self._keep(row)
            log.event("privtx.vote_released", stakeholder=self.cfg.name, payload=name)
            g.held.pop(name)
            # by transaction even in BLS mode: the others' shares went long ago
            self._queue_vote(ev.group, ev.payload_hash, row.old_root, row.new_root, direct=True)

    async def _vote_unless_carried(self, ev: med.TxInit, row: TxRow, tx_hash: bytes | None) -> None:
        """Vote on chain for an execution ahead unless the submission carried our vote or
        settled the transaction (both show in its receipt)."""
        member = self.groups[ev.group].member
        try:
            receipt = None
            if tx_hash is not None:
                receipt = await self.chain.rpc.call(
                    "eth_getTransactionReceipt", ["0x" + tx_hash.hex()]
                )
            for lg in med.receipt_logs(receipt, self.cfg.mediator):
                if lg.topics[2:3] != (ev.payload_hash,):
                    continue
                topic = med.topic_of(lg)
                if topic == med.TX_FINI:
                    return
                if topic == med.TX_VOTE and med.decode_event(lg).member == member:
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # cannot tell: vote (the mediator skips a counted vote)
            log.warn("privtx.receipt_unread", payload=row.payload_hash, error=repr(exc))
        if row.state in OPEN:  # by transaction: the others' shares were carried, not shared
            self._queue_vote(ev.group, ev.payload_hash, row.old_root, row.new_root, direct=True)

    async def _abandon(self, row: TxRow, why: str) -> None:
        """Undo an execution made ahead whose position went to another transaction (and what
        ran after it); it runs afresh if its PrivateTxInit comes."""
        # (a refusal ahead changed nothing: then what its group ran after it goes back)
        await self._take_back(self.groups[bytes.fromhex(row.group_id)], row.seq - 1, why)
        row.state, row.note = "abandoned", why[:400]
        self._keep(row)
        log.event("privtx.abandoned", stakeholder=self.cfg.name, payload=row.payload_hash, why=why)

    async def _open(self, ev: med.TxInit, g: _Group, ciphertext: bytes | None = None) -> bytes:
        if len(ev.wraps) <= g.member:
            raise pt.WrapError(f"payload {ev.payload_hash.hex()} has no wrap for member {g.member}")
        key = pt.unwrap_key(
            ev.wraps[g.member],
            ev.ephemeral_pk,
            self.cfg.sealing_sk,
            ev.group,
            ev.payload_hash,
            g.member,
        )
        if ciphertext is None:
            ciphertext = await self._ciphertext(ev.payload_hash)
        return pt.open_payload(ciphertext, key, ev.group, ev.payload_hash)

    async def _on_fini(self, ev: med.TxFini) -> None:
        g = self.groups[ev.group]
        g.held.pop(ev.payload_hash.hex(), None)  # decided: settled here, never voted again
        await self._settle(ev)
        if g.held:
            await self._release_held(g)

    async def _settle(self, ev: med.TxFini) -> None:
        g = self.groups[ev.group]
        name = ev.payload_hash.hex()
        row = self.rows.get(name)
        if row is not None and row.state in ("final", "reverted", "diverged"):
            return  # read again after a restart
        if ev.status == pt.Status.YES:
            g.root = ev.new_root
            if row is not None and row.state == "executed" and row.new_root == ev.new_root:
                row.state = "final"
                self._keep(row)
                return
            if row is not None and row.state == "executed":
                # This stakeholder is the odd one: back to the agreed old state, then name it.
                await self._revert(row)
            await self._catch_up(ev, g, row)
            return
        # NO or FAILED: nobody keeps it.
        if row is not None and row.state == "executed":
            await self._revert(row)
        elif row is not None and row.state != "discarded":
            row.state = "reverted"
            self._keep(row)
        root = await self.executor.root(g.contract)
        log.event(
            "privtx.settled_no",
            group=g.info.group.hex(),
            payload=name,
            status=ev.status.name,
            root=root.hex(),
            at_agreed_root=root == g.root,
        )

    async def _catch_up(self, ev: med.TxFini, g: _Group, row: TxRow | None) -> None:
        """Run a transaction the others agreed on that this one has not (kept) executed."""
        init = await self._init_of(ev.group, ev.payload_hash)
        g.head = None
        ex = None
        if init is not None:
            # What ran here after its position (the group's later transactions, executed on a
            # state without it) goes back first; each runs again if it settles YES.
            await self._take_back(
                g,
                init.seq,
                f"ran before {ev.payload_hash.hex()}, which the group agreed on first",
            )
            with contextlib.suppress(pt.PrivTxError, BlobNotFound, BlobCorrupt):
                call = await self._open(init, g)
                ex = await self.executor.execute(g.contract, g.info.sender, call)
        name = ev.payload_hash.hex()
        row = row or TxRow(name, ev.group.hex(), init.seq if init else 0, 0, "", "", b"", b"", 0)
        before = f" (before: {row.note})" if row.note else ""
        row.step = self._next_step()
        if ex is not None and ex.new_root == ev.new_root:
            row.state, row.snapshot, row.old_root, row.new_root = (
                "final",
                ex.snapshot,
                ex.old_root,
                ex.new_root,
            )
            row.note = "caught up"
            self._keep(row)
            g.out_of_sync = ""
            log.event("privtx.caught_up", group=row.group_id, payload=name)
            return
        if ex is not None:
            await self.executor.revert(ex.snapshot)
            for other in self.groups.values():
                other.head = None
        row.state = "diverged"
        row.note = (
            f"the group agreed on root {ev.new_root.hex()}; this executor reached "
            f"{ex.new_root.hex() if ex else 'nothing (the payload did not open)'}{before}"
        )[:400]
        g.out_of_sync = row.note
        self._keep(row)
        log.warn("privtx.diverged", group=row.group_id, payload=name, why=row.note)

    async def _init_of(self, group: bytes, payload_hash: bytes) -> med.TxInit | None:
        logs = await self.reader.rpc.call(
            "eth_getLogs",
            [
                {
                    "address": self.cfg.mediator,
                    "fromBlock": hex(self.cfg.start_block),
                    "toBlock": "latest",
                    "topics": [med.TX_INIT, "0x" + group.hex(), "0x" + payload_hash.hex()],
                }
            ],
        )

        for r in logs or []:
            init = med.decode_event(raw_log(r))
            if isinstance(init, med.TxInit):
                return init
        return None

    async def _take_back(self, g: _Group, after_seq: int, why: str) -> None:
        """Back to the snapshot before the group's earliest undecided execution at a position
        after ``after_seq`` (and so before everything that ran after it): an execution ahead is
        then ``abandoned`` (run afresh if its Init comes), one on its Init ``discarded`` (run
        again if it settles YES)."""
        held = [
            r
            for r in [*(self.rows[n] for n in self.open), *g.ahead.values()]
            if r.group_id == g.info.group.hex() and r.snapshot and r.seq > after_seq
        ]
        if held:
            first = min(held, key=lambda r: r.step)
            await self._revert(first, "abandoned" if first.state == "pre" else "discarded", why)

    async def _revert(self, row: TxRow, state: str = "reverted", note: str | None = None) -> None:
        """Back to the snapshot before ``row``; re-run the later executions of other groups.
        ``row`` is kept in ``state`` (with ``note``) before anything else is awaited."""
        later = sorted(
            (
                r
                for r in self.rows.values()
                if r.step > row.step and r.state in ("executed", "final", "pre")
            ),
            key=lambda r: r.step,
        )
        await self.executor.revert(row.snapshot)
        for g in self.groups.values():
            g.head = None  # read again from the executor
        row.state = state
        if note is not None:
            row.note = note[:400]
        self._keep(row)
        for r in later:
            if r.state == "pre":  # no PrivateTxInit to run it from: run when it comes
                r.state, r.note = "abandoned", f"reverted beneath it ({row.payload_hash})"
                self._keep(r)
                continue
            if r.group_id == row.group_id:
                r.state = "discarded"  # built on the state just dropped
                self._keep(r)
                continue
            g = self.groups[bytes.fromhex(r.group_id)]
            init = await self._init_of(bytes.fromhex(r.group_id), bytes.fromhex(r.payload_hash))
            call = await self._open(init, g) if init else None
            if call is None:
                continue
            ex = await self.executor.execute(g.contract, g.info.sender, call)
            r.snapshot, r.step = ex.snapshot, self._next_step()
            if ex.new_root != r.new_root:
                log.warn("privtx.replay_differs", payload=r.payload_hash, group=r.group_id)
            self._keep(r)

    # -- an executor that lost its state -------------------------------------------------------
    async def _check_executor(self) -> bool:
        """Rebuild the executor if it lost its private state; True if it did. Hold the lock."""
        if not self.groups:
            return False
        try:
            await self.executor.root(next(iter(self.groups.values())).contract)
            return False
        except ExecutorLost as exc:
            log.warn("privtx.executor_lost", stakeholder=self.cfg.name, why=str(exc))
        await self._rebuild()
        return True

    async def _watch_executor(self) -> None:
        while True:
            await asyncio.sleep(WATCH_EXECUTOR_S)
            if time.monotonic() - self._busy_at < WATCH_EXECUTOR_S:
                continue  # events are flowing: a lost executor shows in handling them
            try:
                async with self.lock:
                    await self._check_executor()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # unreachable for now: try again
                log.warn("privtx.executor_unreachable", stakeholder=self.cfg.name, error=repr(exc))

    async def _rebuild(self) -> None:
        """Deploy every group's private contract afresh and replay the group's agreed history
        (its YES transactions from the chain, payloads from the object store), checking each
        agreed root on the way. What it executed but had not seen settle is lost with the old
        state: it is run again if it settles YES (catch-up), like one missed while away."""
        self.rebuilds += 1
        self.executor.forget()
        for row in list(self.rows.values()):
            if row.state == "executed":
                row.state, row.note = "lost", "executed on an executor that lost its state"
                self._keep(row)
            elif row.state == "pre":
                row.state, row.note = (
                    "abandoned",
                    "executed ahead on an executor that lost its state",
                )
                self._keep(row)
        for gid in self.store.groups():
            g = self.groups.get(bytes.fromhex(gid))
            if g is None:
                continue
            g.contract = await self.executor.deploy(self.cfg.private_contract)
            self.store.set_contract(gid, g.contract)
            g.head, g.out_of_sync = None, ""
            history = await agreed_history(
                self.reader.rpc, self.cfg.mediator, self.cfg.start_block, g.info.group
            )
            for a in history:
                name = a.fini.payload_hash.hex()
                row = self.rows.get(name) or TxRow(
                    name, gid, a.init.seq, 0, "", "", b"", b"", a.init.deadline
                )
                try:
                    call = await self._open(a.init, g)
                except (pt.PrivTxError, BlobNotFound, BlobCorrupt) as exc:
                    reached = None
                    why = str(exc)
                else:
                    ex = await self.executor.execute(
                        g.contract, g.info.sender, call, old_root=g.head
                    )
                    g.head = reached = ex.new_root
                    why = f"it reached {ex.new_root.hex()}"
                    row.snapshot, row.old_root, row.new_root = ex.snapshot, ex.old_root, ex.new_root
                row.step = self._next_step()
                if reached != a.fini.new_root:
                    row.state = "diverged"
                    row.note = (
                        f"rebuilding: the group agreed on root {a.fini.new_root.hex()}; {why}"
                    )[:400]
                    g.out_of_sync = row.note
                    self._keep(row)
                    log.warn("privtx.diverged", group=gid, payload=name, why=row.note)
                    break
                g.last_seq = max(g.last_seq, a.init.seq)
                row.state, row.note = "final", "replayed after the executor lost its state"
                self._keep(row)
                g.root = a.fini.new_root
            root = await self.executor.root(g.contract)
            log.event(
                "privtx.rebuilt",
                stakeholder=self.cfg.name,
                group=gid,
                replayed=len(history),
                root=root.hex(),
                in_sync=not g.out_of_sync,
            )

    # -- votes --------------------------------------------------------------------------------
    def _queue_vote(
        self, group: bytes, phash: bytes, old: bytes, new: bytes, *, direct: bool = False
    ) -> None:
        """``direct``: by transaction (``voteMany``) even in BLS mode, for a vote whose fellow
        shares will not come (the others' votes were carried ahead, or went before a restart)."""
        (self.direct_votes if direct else self.votes).append((group, phash, old, new))
        self.vote_ready.set()

    async def _send_votes(self) -> None:
        while True:
            await self.vote_ready.wait()
            # PrivateTxInits pushed but not executed yet (a submitMany brings many in one
            # block) will vote too: a short wait lets them share this vote transaction.
            if self.fast is not None and not self.inits.empty():
                self.drained.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(VOTE_LINGER_S):  # not wait_for: it can
                        await self.drained.wait()  # swallow stop()'s cancel (Python 3.11)
            self.vote_ready.clear()
            batch, self.votes = self.votes, []
            direct, self.direct_votes = self.direct_votes, []
            # A vote for a transaction this batch already saw settle is not sent.
            batch, direct = self._undecided(batch), self._undecided(direct)
            shared, by_tx = (batch, direct) if self.bls is not None else ([], batch + direct)
            try:
                if shared:
                    await self._publish_bls(shared)
                if by_tx:
                    await self._vote_many(by_tx)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the chain is away: the deadline will settle them
                log.warn("privtx.vote_failed", stakeholder=self.cfg.name, error=repr(exc))

    def _undecided(self, votes: list) -> list:
        return [
            v
            for v in votes
            if self.rows.get(v[1].hex(), None) is None
            or self.rows[v[1].hex()].state in ("executed", "refused")
        ]

    async def _vote_many(self, batch) -> None:
        by_group: dict[bytes, list[tuple[bytes, bytes, bytes]]] = {}
        for group, phash, old, new in batch:
            by_group.setdefault(group, []).append((phash, old, new))
        sent = []
        chunks = [
            (group, votes[i : i + MAX_VOTES])
            for group, votes in by_group.items()
            for i in range(0, len(votes), MAX_VOTES)
        ]
        for group, votes in chunks:
            data = med.vote_many_data(group, votes)
            gas = med.VOTE_GAS_BASE + med.VOTE_GAS_EACH * len(votes)
            sent.append(await self.chain.send_call(self.account, self.cfg.mediator, data, gas=gas))
        # The next batch collects whatever is decided while these are being mined.
        if self.heads is not None:
            await asyncio.gather(*(self.heads.mined(self.chain, tx) for tx in sent))
        else:
            await asyncio.gather(*(self.chain.mined(tx) for tx in sent))

    async def _publish_bls(self, batch) -> None:
        assert self.bls is not None
        for group, phash, old, new in batch:
            self.shared_at[phash] = (time.monotonic(), group, old, new)
            g = self.groups[group]
            digest = pt.vote_digest(self.chain.chain_id, self.cfg.mediator, group, phash, old, new)
            sig = self.bls.sign(digest)
            body = pm.vote_body(phash, g.member, old, new, sig)
            await self.nc.publish(VOTE_SUBJECT.format(group=group.hex()), body)

    async def _on_bls_vote(self, msg: Msg) -> None:
        try:
            share = pm.parse_vote(msg.subject, bytes(msg.data))
        except BadMessage as exc:
            await pm.dead_letter(self.js, msg, str(exc), f"privtx-facilitator.{self.cfg.name}")
            return
        group, phash, member = share.group, share.payload_hash, share.member
        pair, sig = (share.old_root, share.new_root), share.sig
        # Kept even before this facilitator has read the group (it may lag behind the others).
        pending = self.bls_votes.setdefault(phash, _Pending())
        signers = pending.votes.setdefault(pair, {})
        signers[member] = sig
        g = self.groups.get(group)
        if g is None or any(not 0 <= m < len(g.info.members) for m in signers):
            return
        # The lowest-indexed signer of the first outcome to reach the threshold submits it; a
        # forged share makes the aggregate fail on chain, and the deadline settles it.
        if pending.sent or len(signers) < g.info.threshold or min(signers) != g.member:
            return
        pending.sent = True
        bitmap = sum(1 << i for i in signers)
        agg = aggregate(list(signers.values()))
        data = med.vote_aggregate_data(group, phash, pair[0], pair[1], bitmap, agg)
        gas = med.AGGREGATE_GAS_BASE + med.AGGREGATE_GAS_EACH * len(signers)
        try:
            tx = await self.chain.send_call(self.account, self.cfg.mediator, data, gas=gas)
            await self.chain.wait(tx)
            log.event("privtx.aggregate_sent", payload=phash.hex(), signers=bitmap, tx=tx)
        except ChainError as exc:
            log.warn("privtx.aggregate_failed", payload=phash.hex(), error=str(exc))
        if len(self.bls_votes) > PUSH_CACHE:
            self.bls_votes.pop(next(iter(self.bls_votes)))

    async def _expire_overdue(self) -> None:
        """Ends this stakeholder's transactions that passed their deadline as FAILED.

        In BLS mode it also votes on its own, by transaction, for any transaction whose
        aggregate has not come within BLS_FALLBACK_S of its share (a signer offline at the
        wrong moment, or a bad share from someone on the bus making the aggregate fail).
        """
        while True:
            await asyncio.sleep(1.0)
            late = time.monotonic() - BLS_FALLBACK_S
            for phash, (at, group, old, new) in list(self.shared_at.items()):
                row = self.rows.get(phash.hex())
                if row is None or row.state not in ("executed", "refused"):
                    self.shared_at.pop(phash, None)
                elif at < late:
                    self.shared_at.pop(phash, None)
                    log.warn("privtx.aggregate_late", payload=phash.hex())
                    try:
                        await self._vote_many([(group, phash, old, new)])
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # the node away: the deadline settles it
                        log.warn("privtx.vote_failed", stakeholder=self.cfg.name, error=repr(exc))
            now = time.time()
            for row in [self.rows[n] for n in list(self.open)]:
                g = self.groups.get(bytes.fromhex(row.group_id))
                # Members take turns a second apart, so that usually one transaction ends it.
                grace = 1 + (g.member if g else 0)
                if row.state not in ("executed", "refused") or row.deadline >= now - grace:
                    continue
                group, phash = bytes.fromhex(row.group_id), bytes.fromhex(row.payload_hash)
                try:
                    info = await med.tx_of(self.chain, self.cfg.mediator, group, phash)
                    if info is None or info.status != pt.Status.PENDING:
                        continue  # its PrivateTxFini is on its way to the reader
                    # The node's latest block may be older than the deadline (a chain that
                    # mines on demand): the transaction's own block is what counts.
                    tx = await self.chain.send_call(
                        self.account,
                        self.cfg.mediator,
                        med.expire_data(group, phash),
                        gas=med.EXPIRE_GAS,
                    )
                    await self.chain.mined(tx)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warn("privtx.expire_failed", payload=row.payload_hash, error=repr(exc))

    # -- bookkeeping --------------------------------------------------------------------------
    def _next_step(self) -> int:
        self.step += 1
        return self.step

    def _keep(self, row: TxRow) -> None:
        self.rows[row.payload_hash] = row
        g = self.groups.get(bytes.fromhex(row.group_id))
        if g is not None:
            if row.state == "pre":
                g.ahead[row.payload_hash] = row
            else:
                g.ahead.pop(row.payload_hash, None)
        if row.state in OPEN:
            self.open.add(row.payload_hash)
        else:
            self.open.discard(row.payload_hash)
        self.store.put_tx(row)

    def status(self) -> dict:
        return {
            "account": self.account.address,
            "groups": {
                g.info.group.hex(): {
                    "member": g.member,
                    "contract": g.contract,
                    "agreed_root": g.root.hex(),
                    "out_of_sync": g.out_of_sync,
                }
                for g in self.groups.values()
            },
        }
