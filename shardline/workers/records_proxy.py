"""Records proxy, one per org node: re-encrypts a record's capsule for a reader with a live grant.

It takes an owner's key fragment only when the owner signed it for that record and reader and
the grant on its own chain endpoint names this org; it keeps it sealed at rest. It follows
AccessGranted and AccessRevoked events with the reorg-safe reader, woken by the heads its node
pushes, into a book of grants (``shardline.core.records_grants``) and deletes superseded or
revoked fragments. On an access request it answers from the book once its reader has applied
the chain's head: the newest head pushed (``pushed``, the default: no chain call on the
request's path) or the block number read after the request arrived (``exact``: one cheap call,
shared by the requests that arrived together; revocation exact at the revoking block). While
the head subscription is down or stalled it reads the grant itself, as every request once did.
Expiry is judged by the later of the chain's latest block time and its own clock. It
re-encrypts the on-chain capsule and answers with the capsule fragment sealed to the reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

import umbral_pre as umbral
from nats.micro.request import Request
from nats.micro.service import EndpointConfig

from shardline.bus import envelope, log, subjects
from shardline.bus.consumers import org_consumer
from shardline.bus.envelope import BadMessage, unb64
from shardline.bus.worker import Incoming, Transient, Worker
from shardline.contracts import records as chain_records
from shardline.contracts.client import Chain, ChainError
from shardline.contracts.cursor import EventReader, HeadWatcher, RawLog, Rpc
from shardline.contracts.deploy import Deployment
from shardline.core import records as rc
from shardline.core import records_wire
from shardline.core.directory import Directory, Participant, UnknownParticipant
from shardline.core.logpoller import Cursor
from shardline.core.records_grants import GrantBook
from shardline.workers.records_store import ProxyStore

PARTY = 3  # a records party's kind in a PartyDirectory (not an OrgRegistry kind)
# How long a request waits for the proxy's event reader to reach the chain's head before the
# proxy reads the grant from the chain itself.
CATCH_UP_S = 0.5
# How fresh the grant book must be to answer from it (see ``RecordsProxy.live_grant``):
PUSHED = "pushed"  # the chain's head as the node last pushed it
EXACT = "exact"  # the chain's block number, read after the request arrived
FRESHNESS = (PUSHED, EXACT)
# With no head pushed for this long, the proxy asks the node whether its pushes have stalled.
STALL_CHECK_S = 1.0
# Audit rows are written together, this often (and when the proxy stops).
AUDIT_EVERY_S = 0.05


class TimedHeads(HeadWatcher):
    """A HeadWatcher that also keeps the latest pushed head's timestamp (the chain's time)."""

    latest_time = 0

    def _take(self, head: dict) -> None:
        super()._take(head)
        with contextlib.suppress(KeyError, TypeError, ValueError):
            self.latest_time = max(self.latest_time, int(head["timestamp"], 16))


class HeadBarrier:
    """The chain's block number, read after the caller asked.

    Callers that ask before a read has been sent share it; one that asks while a read is in
    flight waits for the next, since the one in flight may predate its request.
    """

    def __init__(self, rpc: Rpc) -> None:
        self.rpc = rpc
        self._next: asyncio.Future | None = None
        self._reads: set[asyncio.Task] = set()

    async def __call__(self) -> int:
        fut = self._next
        if fut is None:
            fut = self._next = asyncio.get_running_loop().create_future()
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
            task = asyncio.ensure_future(self._read(fut))
            self._reads.add(task)
            task.add_done_callback(self._reads.discard)
        return await asyncio.shield(fut)

    async def _read(self, fut: asyncio.Future) -> None:
        self._next = None  # from here on, callers wait for the next read
        try:
            number = await self.rpc.block_number()
        except Exception as exc:
            if not fut.done():
                fut.set_exception(exc)
        else:
            if not fut.done():
                fut.set_result(number)


class PartyDirectory(Directory):
    """Records parties (owners and readers) by id, from the RecordsRegistry on one's own chain.

    Party keys cannot change on chain once registered, so an entry is kept once read.
    """

    def __init__(self, chain: Chain, deployment: Deployment) -> None:
        super().__init__()
        self.chain = chain
        self.deployment = deployment
        self.parties: dict[str, rc.Party] = {}

    async def party(self, party_id: str) -> rc.Party:
        found = self.parties.get(party_id)
        if found is None:
            try:
                found = await chain_records.get_party(self.chain, self.deployment, party_id)
            except ValueError:  # not an id shape at all
                found = None
            if found is None:
                raise UnknownParticipant(f"{party_id!r} is not a records party on chain")
            self.parties[party_id] = found
        return found

    async def resolve(self, participant_id: str) -> Participant:
        p = await self.party(participant_id)
        return Participant(p.id, p.signing_pk, p.sealing_pk, p.account, PARTY)


class RecordsProxy(Worker):
    kind = "records-proxy"

    def __init__(
        self,
        *args,
        org_id: str,
        store: ProxyStore,
        chain: Chain,
        deployment: Deployment,
        ws_url: str,
        freshness: str = PUSHED,
        clock: Callable[[], float] = time.time,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if freshness not in FRESHNESS:
            raise ValueError(
                f"records proxy freshness {freshness!r} is not one of {', '.join(FRESHNESS)}"
            )
        self.freshness = freshness
        self._heads_stalled = False
        self.org_id = org_id
        self.store = store
        self.chain = chain
        self.deployment = deployment
        self.parties: PartyDirectory = self.directory  # type: ignore[assignment]
        self.clock = clock
        self._records: dict[str, rc.RecordInfo] = {}
        self._kfrags: dict[tuple[str, str], tuple[int, umbral.VerifiedKeyFrag]] = {}
        self.book = GrantBook()
        self.grant_reads = {"book": 0, "chain": 0}  # where access requests' grants came from
        self._book_generation = 0  # bumped when a reorg empties the book
        self._stepped = asyncio.Event()
        self._audit_rows: list[tuple[str, str, str, int, float]] = []
        # (record, reader, version, trace id) re-encrypted, to be logged with the audit rows
        self._served: list[tuple[str, str, int, str]] = []
        self._audit_task: asyncio.Task | None = None
        self._audit_due = asyncio.Event()
        self.rpc = Rpc(chain.rpc)
        self.barrier = HeadBarrier(self.rpc)
        self.reader = EventReader(
            Rpc(chain.rpc),
            Cursor(start=int(deployment.block), remembered=store.cursor_blocks()),
            addresses=lambda: [deployment.records_registry],
            topics0=[chain_records.ACCESS_REVOKED, chain_records.ACCESS_GRANTED],
            # The book must be the chain's state at its head: a revoke acts at once (the safe
            # side), and a reorg empties the book (see _follow_chain).
            confirmations=0,
            save=lambda c: store.save_cursor(c.remembered()),
            heads=(heads := TimedHeads(ws_url, fallback_s=STALL_CHECK_S)),
        )
        self.heads = heads
        self._loop: asyncio.Task | None = None

    # ---- wiring -------------------------------------------------------------------------
    async def setup(self) -> None:
        self.consume(
            org_consumer(self.org_id, f"records-kfrags-{self.org_id}"),
            self.on_kfrag,
        )
        self.heads.start()
        self._loop = asyncio.create_task(self._follow_chain())
        self._audit_task = asyncio.create_task(self._write_audits())

    def endpoints(self) -> list[EndpointConfig]:
        return [
            EndpointConfig(
                name="reencrypt",
                subject=subjects.RECORDS_ACCESS.format(org=self.org_id),
                handler=self.on_access,
            ),
            EndpointConfig(
                name="records-state",
                subject=f"records.state.{self.org_id}",
                handler=self.on_state,
            ),
        ]

    async def stop(self) -> None:
        for task in (self._loop, self._audit_task):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.heads.stop()
        self._flush_audits()
        await super().stop()

    # ---- key fragments ------------------------------------------------------------------
    async def on_kfrag(self, m: Incoming) -> None:
        b = m.body
        rid, reader, version = b["record_id"], b["reader"], b["version"]
        if b["org"] != self.org_id:
            raise BadMessage(f"key fragment for {b['org']} was sealed to {self.org_id}")
        try:
            record = await self.record(rid)
        except rc.UnknownRecord:
            raise Transient(f"record {rid} is not on this org's chain endpoint yet") from None
        if m.env.sender != record.owner:
            raise BadMessage(f"{m.env.sender} is not the owner of record {rid}")
        grant, _now = await chain_records.grant_of(self.chain, self.deployment, rid, reader)
        if grant.version:
            grant = self.book.merge(grant)
        if grant.version < version:
            raise Transient(f"grant {version} of record {rid} to {reader} is not on chain yet")
        if grant.version > version or grant.revoked:
            log.event("records.kfrag_outdated", org=self.org_id, record=rid, reader=reader)
            return
        if self.org_id not in grant.proxies:
            raise BadMessage(f"grant of record {rid} to {reader} does not name {self.org_id}")
        owner = await self.parties.party(record.owner)
        try:
            reader_party = await self.parties.party(reader)
            verified = rc.verify_kfrag(
                unb64(b["kfrag"]), owner.verifying_pk, owner.umbral_pk, reader_party.umbral_pk
            )
        except (UnknownParticipant, rc.BadFragment) as exc:
            raise BadMessage(f"key fragment of record {rid} for {reader}: {exc}") from None
        # Kept exactly as it arrived, sealed to this org.
        self.store.put_kfrag(rid, reader, version, record.owner, m.env.to_bytes())
        self._kfrags[(rid, reader)] = (version, verified)
        log.event(
            "records.kfrag_stored", org=self.org_id, record=rid, reader=reader, version=version
        )

    def kfrag(self, rid: str, reader: str) -> tuple[int, umbral.VerifiedKeyFrag] | None:
        cached = self._kfrags.get((rid, reader))
        if cached is not None:
            return cached
        row = self.store.get_kfrag(rid, reader)
        if row is None:
            return None
        body = envelope.open_body(envelope.parse(row.sealed, "records.kfrag"), self.keys)
        # It verified when it arrived, and only this proxy writes its rows.
        found = (row.version, umbral.KeyFrag.from_bytes(unb64(body["kfrag"])).skip_verification())
        self._kfrags[(rid, reader)] = found
        return found

    def forget(self, rid: str, reader: str, up_to_version: int | None = None) -> bool:
        cached = self._kfrags.get((rid, reader))
        if cached is not None and (up_to_version is None or cached[0] <= up_to_version):
            del self._kfrags[(rid, reader)]
        return self.store.drop_kfrag(rid, reader, up_to_version)

    async def record(self, rid: str) -> rc.RecordInfo:
        found = self._records.get(rid)
        if found is None:  # a record's hash and capsule never change on chain
            found = await chain_records.get_record(self.chain, self.deployment, rid)
            self._records[rid] = found
        return found

    # ---- access requests ----------------------------------------------------------------
    async def on_access(self, req: Request) -> None:
        try:
            env = envelope.parse(req.data, "records.access")
        except BadMessage as exc:
            await req.respond_error("400", f"bad access request: {exc}")
            return
        try:
            reply = await self.answer(env)
        except (ChainError, OSError) as exc:
            reply = self.refusal(env, "unavailable", f"this proxy cannot reach its chain: {exc}")
        except Exception as exc:
            log.error("records.access_failed", org=self.org_id, error=repr(exc))
            reply = self.refusal(env, "unavailable", f"{self.org_id} failed: {exc!r}")
        if isinstance(reply, envelope.Envelope):
            await req.respond(reply.to_bytes())
            self.counts["ok" if reply.type == "records.cfrag" else "error"] += 1
        else:
            await req.respond(reply)
            self.counts["ok"] += 1

    async def answer(self, env: envelope.Envelope) -> envelope.Envelope | bytes:
        """A refusal (a signed envelope), or the cfrag as a frame (``records_wire``) signed by
        this org and sealed to the reader."""
        b = env.body
        rid, reader = b["record_id"], b["reader"]
        if env.sender != reader:
            return self.refusal(env, "bad request", f"signed by {env.sender}, not by {reader}")
        # The usual case (pushed heads, live): the grant comes from the book, after the
        # re-encryption, with no task of its own; else its read is started now, to run while
        # this request's parties and record are read and its capsule re-encrypted.
        pushed = self.freshness == PUSHED and self.heads.live and not self._heads_stalled
        grant_call = None if pushed else asyncio.ensure_future(self.live_grant(rid, reader))
        try:
            try:
                await envelope.verify(env, self.parties)
            except BadMessage as exc:
                return self.refusal(env, "bad request", str(exc))
            reader_party = await self.parties.party(reader)
            try:
                record = await self.record(rid)
            except rc.UnknownRecord as exc:
                return self.refusal(env, "not granted", str(exc))
            held = self.kfrag(rid, reader)
            # Re-encrypt while the grant read is in flight; nothing leaves unless it is live.
            cfrag = rc.reencrypt(record.capsule, held[1]) if held else None
            if grant_call is None:
                grant, chain_time = await self.live_grant(rid, reader)
            else:
                grant, chain_time = await grant_call
        finally:
            if grant_call is not None:
                grant_call.cancel()
        refused = grant.refusal(max(self.clock(), chain_time))
        if refused is not None:
            if refused.reason in (rc.REVOKED, rc.EXPIRED) and self.forget(rid, reader):
                log.event(
                    "records.kfrag_deleted",
                    org=self.org_id,
                    record=rid,
                    reader=reader,
                    why=refused.reason,
                )
            return self.refusal(env, refused.reason, f"{self.org_id}: {refused}")
        if self.org_id not in grant.proxies:
            return self.refusal(
                env,
                "not a proxy",
                f"the grant of record {rid} to {reader} does not name {self.org_id}",
            )
        if held is None or cfrag is None or held[0] != grant.version:
            return self.refusal(
                env,
                "no key fragment",
                f"{self.org_id} holds no key fragment for grant {grant.version} "
                f"of record {rid} to {reader} (yet)",
            )
        self._audit(b["request_id"], rid, reader, grant.version, env.trace_id)
        return records_wire.make(
            request_id=b["request_id"],
            record_id=rid,
            reader=reader,
            org=self.org_id,
            version=grant.version,
            cfrag=cfrag,
            signing_key=self.keys.signing_key,
            reader_sealing_pk=reader_party.sealing_pk,
        )

    # ---- the grant as the chain has it now -----------------------------------------------
    async def live_grant(self, rid: str, reader: str) -> tuple[rc.Grant, float]:
        """The grant as of a chain head read after the request arrived, and the chain's time.

        The head is, with ``exact`` freshness, the block number read (in one call shared with
        the requests that came with this one) after the request arrived, so a revoke is refused
        from its own block on; with ``pushed``, the newest head the node has pushed to this
        proxy, which the node pushes as it mines: a revoke is refused from the moment its block
        reaches the proxy (milliseconds after it is mined; the owner's ``revoke`` returns when
        every reachable proxy has read it). Either way the answer comes from the book once the
        event reader has applied that head, while the head subscription is live and has not
        stalled; else the grant is read from the chain, as every request once did.
        """
        if self.heads.live and not self._heads_stalled:
            if self.freshness == EXACT:
                head = await self.barrier()
            else:
                await asyncio.sleep(0)  # take in a head that has already arrived
                head = self.heads.latest
            if await self.applied_through(head):
                held = self.book.get(rid, reader)
                if held is not None:
                    self.grant_reads["book"] += 1
                    return held, float(self.heads.latest_time)
        self.grant_reads["chain"] += 1
        generation = self._book_generation
        grant, chain_time = await chain_records.read_grant(self.rpc, self.deployment, rid, reader)
        if grant.version and generation == self._book_generation:
            grant = self.book.merge(grant)  # a newer event may have come meanwhile: it wins
        return grant, chain_time

    def applied(self) -> int:
        head = self.reader.cursor.head
        return head.number if head else self.reader.cursor.start - 1

    async def applied_through(self, block: int) -> bool:
        """Wait (briefly) until the event reader has applied ``block``; False if it has not."""
        if self.applied() >= block:
            return True
        deadline = asyncio.get_running_loop().time() + CATCH_UP_S
        while self.applied() < block:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            self.heads.event.set()  # wake the reader if it sleeps
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stepped.wait(), left)
        return True

    # ---- audit ----------------------------------------------------------------------------
    def _audit(self, request_id: str, rid: str, reader: str, version: int, trace: str) -> None:
        """Note what was re-encrypted for whom; written and logged in batches, off the reply's
        path."""
        self._audit_rows.append((request_id, rid, reader, version, time.time()))
        self._served.append((rid, reader, version, trace))
        self._audit_due.set()

    def _log_served(self) -> None:
        """One log line for the re-encryptions of a batch (a line each cost as much CPU as
        half a re-encryption): [record, reader, version, trace id] for each."""
        served, self._served = self._served, []
        if served:
            log.event(
                "records.reencrypted",
                org=self.org_id,
                count=len(served),
                served=[list(s) for s in served],
            )

    async def _write_audits(self) -> None:
        while True:
            await self._audit_due.wait()
            await asyncio.sleep(AUDIT_EVERY_S)  # let the rows of that moment gather
            self._audit_due.clear()
            rows, self._audit_rows = self._audit_rows, []
            self._log_served()
            try:
                await asyncio.to_thread(self.store.record_reencrypted_many, rows)
            except Exception as exc:
                log.error("records.audit_write_failed", org=self.org_id, error=repr(exc))
                self._audit_rows[:0] = rows  # try again in a moment
                self._audit_due.set()
                await asyncio.sleep(1.0)

    def _flush_audits(self) -> None:
        rows, self._audit_rows = self._audit_rows, []
        self._log_served()
        try:
            self.store.record_reencrypted_many(rows)
        except Exception as exc:
            log.error("records.audit_write_failed", org=self.org_id, error=repr(exc))

    def refusal(self, env: envelope.Envelope, reason: str, detail: str) -> envelope.Envelope:
        b = env.body
        log.event(
            "records.refused",
            org=self.org_id,
            record=b["record_id"],
            reader=b["reader"],
            reason=reason,
            trace_id=env.trace_id,
        )
        return envelope.make(
            "records.refusal",
            {
                "request_id": b["request_id"],
                "record_id": b["record_id"],
                "reader": b["reader"],
                "org": self.org_id,
                "reason": reason,
                "detail": detail[:1000],
            },
            self.keys,
            trace_id=env.trace_id,
        )

    async def on_state(self, req: Request) -> None:
        """What this proxy holds (ids only) and how far it has read the chain: for operators."""
        head = self.reader.cursor.head
        await req.respond(
            json.dumps(
                {
                    "org": self.org_id,
                    "freshness": self.freshness,
                    "block": head.number if head else None,
                    "grant_reads": self.grant_reads,
                    "kfrags": [
                        {"record_id": r, "reader": rd, "version": v}
                        for r, rd, v in self.store.kfrags()
                    ],
                }
            ).encode()
        )

    # ---- grant events -------------------------------------------------------------------
    async def _follow_chain(self) -> None:
        while True:
            before = self.reader.cursor.next_number
            try:
                await self.reader.step(self.on_log)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # node away: keep the cursor and try again
                log.warn("records.chain_step_failed", org=self.org_id, error=str(exc))
                await asyncio.sleep(0.5)
            if self.reader.cursor.next_number < before:  # a reorg: the chain's state moved back
                self.book.clear()
                self._book_generation += 1
            self._stepped.set()
            self._stepped = asyncio.Event()
            if self.reader.caught_up:
                pushed, waited = self.heads.latest, time.monotonic()
                await self.heads.wait()
                if self.heads.latest != pushed:
                    self._heads_stalled = False
                elif self.heads.live and time.monotonic() - waited >= STALL_CHECK_S:
                    await self._check_stall()

    async def _check_stall(self) -> None:
        """No head pushed for a while: fine if the node has mined nothing since, else the
        subscription has stalled and requests read their grant from the chain meanwhile."""
        try:
            number = await self.rpc.block_number()
        except Exception:  # node away: the next step says so
            return
        stalled = number > self.heads.latest
        if stalled and not self._heads_stalled:
            log.warn(
                "records.heads_stalled", org=self.org_id, node=number, pushed=self.heads.latest
            )
        self._heads_stalled = stalled

    async def on_log(self, lg: RawLog) -> None:
        kind, rid, reader, version = chain_records.decode_access_event(lg)
        if kind == "revoked":
            self.book.revoked(rid, reader, version)
        else:
            self.book.merge(chain_records.grant_from_event(lg))
        # revoked: this grant's fragment goes; granted anew: older fragments are superseded
        up_to = version if kind == "revoked" else version - 1
        if self.forget(rid, reader, up_to):
            log.event(
                "records.kfrag_deleted",
                org=self.org_id,
                record=rid,
                reader=reader,
                why=kind,
                block=lg.block_number,
            )
