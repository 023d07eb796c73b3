"""The records flows of an owner (put, grant, revoke, list) and of a reader (get).

Used by the CLI (`shardline records ...`) and the gateway's /records routes. The owner's
plaintext never leaves this process: it is encrypted here, the ciphertext goes to the blob store
and the capsule and content hash to the chain. A reader asks the grant's proxies at once, keeps
the first m capsule fragments that verify, names any that do not, and decrypts all or nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from eth_account import Account
from eth_account.signers.local import LocalAccount
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from shardline.bus import envelope, subjects
from shardline.bus.blobs import BlobCorrupt, BlobNotFound, BlobStore
from shardline.bus.connect import connect
from shardline.bus.envelope import BadMessage, b64, unb64
from shardline.contracts import records as chain_records
from shardline.contracts import registry
from shardline.contracts.client import Chain, ChainRevert
from shardline.contracts.cursor import Rpc
from shardline.contracts.deploy import Deployment
from shardline.core import records as rc
from shardline.core import records_wire
from shardline.core.directory import Directory, UnknownParticipant

MAX_RECORD_BYTES = 16 * 1024 * 1024
# A reader remembers a grant's proxies and threshold this long; liveness is the proxies' call.
GRANT_TTL_S = 5.0
# Ask m proxies and SPARE_PROXIES more at once (the first m good answers are used); ask the
# others when one fails (offline, refusing, a bad fragment), or when m have not answered by
# HEDGE_S. On the shared 2-core machine a spare asked at once made reads slower (bench/records.py,
# samples rotated: p50 lower without it in 10 of 12 comparisons, p95 in 7 of 12): its
# re-encryption competes with the reader's verifications for a core.
SPARE_PROXIES = 0
HEDGE_S = 0.1
LOCAL_CHAIN_ID = 31337
# An owner's revoke waits at most this long for the grant's proxies to read the revoking block.
REVOKE_WAIT_S = 3.0
# When the reader verifies capsule fragments (rc.CfragCollector): ON_FAILURE takes them parsed
# and verifies them only when the m do not open the record (the bad one is then named and the
# others asked); ALWAYS verifies each as it comes. Both give the owner's plaintext or nothing.
ON_FAILURE, ALWAYS = "on_failure", "always"
VERIFY_CFRAGS = ON_FAILURE
# Ciphertexts a reader keeps, by content hash, up to this many bytes (0: none): a record's
# ciphertext never changes, and without m capsule fragments from live proxies it opens nothing.
BLOB_CACHE_BYTES = 64 * 1024 * 1024


class BlobCache:
    """Ciphertexts that hashed to their record's on-chain content hash, least recently used out."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._blobs: OrderedDict[bytes, bytes] = OrderedDict()

    def get(self, content_hash: bytes) -> bytes | None:
        blob = self._blobs.get(content_hash)
        if blob is not None:
            self._blobs.move_to_end(content_hash)
        return blob

    def put(self, content_hash: bytes, blob: bytes) -> None:
        if len(blob) > self.max_bytes or content_hash in self._blobs:
            return
        self._blobs[content_hash] = blob
        self.size += len(blob)
        while self.size > self.max_bytes:
            _, old = self._blobs.popitem(last=False)
            self.size -= len(old)


@dataclass
class Answer:
    """One proxy's answer to one access request."""

    org: str
    outcome: str  # cfrag | refusal | bad | silent
    detail: str = ""
    cfrag: bytes = b""
    reason: str = ""


@dataclass
class ReadResult:
    record_id: str
    reader: str
    plaintext: bytes = field(repr=False)
    used: list[str]
    bad: dict[str, str]
    refused: dict[str, str]
    silent: list[str]
    elapsed_ms: float


@dataclass
class GrantView:
    grant: rc.Grant
    status: str


def account_of(keys: rc.PartyKeys) -> LocalAccount:
    return Account.from_key(keys.participant.chain_key)


class RecordsClient:
    def __init__(
        self,
        nc: Client,
        chain: Chain,
        deployment: Deployment,
        blobs: BlobStore,
        timeout_s: float,
        blob_cache_bytes: int = BLOB_CACHE_BYTES,
        spare_proxies: int = SPARE_PROXIES,
        verify_cfrags: str = VERIFY_CFRAGS,
    ) -> None:
        if verify_cfrags not in (ON_FAILURE, ALWAYS):
            raise ValueError(
                f"verify_cfrags {verify_cfrags!r} is not one of {ON_FAILURE}, {ALWAYS}"
            )
        self.verify_cfrags = verify_cfrags
        self.nc = nc
        self.spare_proxies = spare_proxies
        self.blob_cache = BlobCache(blob_cache_bytes)
        self.chain = chain
        self.deployment = deployment
        self.blobs = blobs
        self.timeout_s = timeout_s
        self.orgs = Directory(refresh=lambda: registry.list_participants(chain, deployment))
        self.rpc = Rpc(chain.rpc)
        self._records: dict[str, rc.RecordInfo] = {}
        self._parties: dict[str, rc.Party] = {}
        self._grants: dict[tuple[str, str], tuple[rc.Grant, float]] = {}

    @classmethod
    async def connect(
        cls,
        nats_url: str,
        chain_rpc: str,
        deployment: dict,
        *,
        name: str,
        timeout_s: float = 2.0,
        blob_cache_bytes: int = BLOB_CACHE_BYTES,
        spare_proxies: int = SPARE_PROXIES,
        verify_cfrags: str = VERIFY_CFRAGS,
    ) -> RecordsClient:
        dep = Deployment.from_dict(deployment)
        chain = await Chain.connect(chain_rpc, expected_chain_id=dep.chain_id)
        nc = await connect(nats_url, name)
        blobs = await BlobStore.open(nc.jetstream(timeout=10))
        client = cls(
            nc, chain, dep, blobs, timeout_s, blob_cache_bytes, spare_proxies, verify_cfrags
        )
        await client.orgs.refresh()
        return client

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.drain()
        with contextlib.suppress(Exception):
            await self.chain.close()

    # ---- parties ------------------------------------------------------------------------
    async def party(self, party_id: str, *, role: str = "reader", record_id: str = "") -> rc.Party:
        found = self._parties.get(party_id)
        if found is None:
            found = await chain_records.get_party(self.chain, self.deployment, party_id)
            if found is None:
                raise rc.UnknownReader(
                    f"unknown {role} {party_id!r}"
                    + (f" for record {record_id}" if record_id else "")
                    + ": no records party of that id is registered on chain; it must run "
                    "`shardline records keygen` first",
                    record_id=record_id,
                    reader_id=party_id,
                )
            self._parties[party_id] = found  # party keys never change on chain
        return found

    async def register(self, keys: rc.PartyKeys) -> None:
        """Register a party on chain (funding its account first on the local anvil chain)."""
        acct = account_of(keys)
        if self.chain.chain_id == LOCAL_CHAIN_ID:
            await self.chain.w3.provider.make_request(
                "anvil_setBalance", [acct.address, hex(10**20)]
            )
        p = keys.participant
        await chain_records.register_party(
            self.chain,
            acct,
            self.deployment,
            keys.id,
            p.signing_public,
            p.sealing_public,
            keys.umbral_pk,
            keys.verifying_pk,
        )

    # ---- owner --------------------------------------------------------------------------
    async def put(self, owner: rc.PartyKeys, plaintext: bytes) -> rc.RecordInfo:
        if len(plaintext) > MAX_RECORD_BYTES:
            raise rc.RecordError(
                f"a record may have at most {MAX_RECORD_BYTES} bytes, this one has {len(plaintext)}"
            )
        await self.party(owner.id, role="owner")
        capsule, ciphertext = await asyncio.to_thread(rc.encrypt, owner.umbral_pk, plaintext)
        info = rc.RecordInfo(
            rc.new_record_id(), owner.id, rc.content_hash(ciphertext), capsule, len(plaintext)
        )
        await self.blobs.put(ciphertext, description=f"record {info.record_id}")
        await chain_records.register_record(self.chain, account_of(owner), self.deployment, info)
        self._records[info.record_id] = info
        return info

    async def grant(
        self,
        owner: rc.PartyKeys,
        record_id: str,
        reader: str,
        *,
        threshold: int,
        proxies: list[str] | None = None,
        expires_at: int,
    ) -> rc.Grant:
        """Grant on chain, then hand each proxy its key fragment sealed to its org."""
        rc.check_record_id(record_id)
        record = await self.record(record_id)
        if record.owner != owner.id:
            raise rc.RecordError(
                f"record {record_id} belongs to {record.owner}, not to {owner.id}",
                record_id=record_id,
                reader_id=reader,
            )
        reader_party = await self.party(reader, record_id=record_id)
        if proxies is None:
            await self.orgs.refresh()
            proxies = sorted(p.id for p in self.orgs.orgs())
        if not 1 <= threshold <= len(proxies):
            raise rc.RecordError(
                f"threshold {threshold} must be between 1 and the {len(proxies)} proxies "
                f"({', '.join(proxies)}) for record {record_id} and reader {reader}",
                record_id=record_id,
                reader_id=reader,
            )
        orgs = [await self._org(o, record_id, reader) for o in proxies]
        try:
            await chain_records.grant(
                self.chain,
                account_of(owner),
                self.deployment,
                record_id,
                reader,
                threshold,
                proxies,
                expires_at,
            )
        except ChainRevert as exc:
            raise rc.RecordError(
                f"the chain refused the grant of record {record_id} to {reader}: {exc.reason}",
                record_id=record_id,
                reader_id=reader,
            ) from None
        g, _ = await chain_records.grant_of(self.chain, self.deployment, record_id, reader)
        kfrags = await asyncio.to_thread(
            rc.make_kfrags, owner, reader_party.umbral_pk, threshold, len(proxies)
        )
        js = self.nc.jetstream(timeout=5)
        for org, kfrag in zip(orgs, kfrags, strict=True):
            body = {
                "record_id": record_id,
                "reader": reader,
                "version": g.version,
                "org": org.id,
                "kfrag": b64(kfrag),
            }
            env = envelope.make(
                "records.kfrag", body, owner.participant, seal_to=(org.id, org.sealing_pk)
            )
            await js.publish(
                subjects.RECORDS_KFRAG.format(org=org.id),
                env.to_bytes(),
                headers={"Nats-Msg-Id": f"kfrag:{record_id}:{reader}:{g.version}:{org.id}"},
            )
        return g

    async def _org(self, org_id: str, record_id: str, reader: str):
        try:
            return await self.orgs.resolve(org_id)
        except UnknownParticipant as exc:
            raise rc.RecordError(
                f"proxy {org_id} for record {record_id} and reader {reader}: {exc}",
                record_id=record_id,
                reader_id=reader,
            ) from None

    async def revoke(self, owner: rc.PartyKeys, record_id: str, reader: str) -> int:
        """Revoke on chain; returns the block from which every proxy refuses.

        It returns once each of the grant's proxies that answers has read that block (or after
        REVOKE_WAIT_S): a proxy refuses from the moment it has, and one that is offline serves
        nothing and reads the chain up to its head before it serves again.
        """
        rc.check_record_id(record_id)
        try:
            tx = await chain_records.revoke(
                self.chain, account_of(owner), self.deployment, record_id, reader
            )
        except ChainRevert as exc:
            raise rc.RecordError(
                f"the chain refused to revoke record {record_id} for {reader}: {exc.reason}",
                record_id=record_id,
                reader_id=reader,
            ) from None
        assert tx.block_number is not None
        g, _ = await chain_records.read_grant(self.rpc, self.deployment, record_id, reader)
        await self.wait_read(g.proxies, tx.block_number)
        return tx.block_number

    async def wait_read(
        self, proxies: tuple[str, ...], block: int, timeout_s: float = REVOKE_WAIT_S
    ) -> list[str]:
        """Wait until the proxies that answer have read ``block``; returns those that have not."""

        async def one(org: str) -> str | None:
            deadline = time.monotonic() + timeout_s
            while True:
                state = await self.held_by(org)
                if state is None or (state.get("block") or 0) >= block:
                    return None if state else org
                if time.monotonic() >= deadline:
                    return org
                await asyncio.sleep(0.01)

        return [o for o in await asyncio.gather(*(one(o) for o in proxies)) if o]

    async def held_by(self, org: str) -> dict | None:
        """A proxy's ids of held key fragments and its chain cursor (None: offline)."""
        import json

        try:
            msg = await self.nc.request(f"records.state.{org}", b"", timeout=1.0)
        except (NatsTimeout, NoRespondersError, TimeoutError):
            return None
        return json.loads(msg.data)

    async def wait_held(self, g: rc.Grant, timeout_s: float = 10.0) -> list[str]:
        """Wait until the grant's proxies hold its key fragment; returns those that do not."""
        deadline = time.monotonic() + timeout_s
        missing = list(g.proxies)
        while missing and time.monotonic() < deadline:
            for org in list(missing):
                state = await self.held_by(org)
                if state and any(
                    k["record_id"] == g.record_id
                    and k["reader"] == g.reader
                    and k["version"] == g.version
                    for k in state["kfrags"]
                ):
                    missing.remove(org)
            if missing:
                await asyncio.sleep(0.05)
        return missing

    async def record(self, record_id: str) -> rc.RecordInfo:
        found = self._records.get(record_id)
        if found is None:
            found = await chain_records.get_record(self.chain, self.deployment, record_id)
            self._records[record_id] = found  # hash and capsule never change on chain
        return found

    async def grant_view(self, record_id: str, reader: str) -> GrantView:
        g, chain_time = await chain_records.read_grant(self.rpc, self.deployment, record_id, reader)
        return GrantView(g, g.status(max(time.time(), chain_time)))

    async def listing(self, party_id: str) -> dict:
        """The records a party owns (with each grant) and the records granted to it."""
        await self.party(party_id, role="party")
        owned = []
        for rid in await chain_records.records_of(self.chain, self.deployment, party_id):
            info = await self.record(rid)
            grants = []
            for reader in await chain_records.readers_of(self.chain, self.deployment, rid):
                grants.append(_grant_dict(await self.grant_view(rid, reader)))
            owned.append(
                {
                    "record_id": rid,
                    "size": info.size,
                    "content_hash": info.content_hash.hex(),
                    "grants": grants,
                }
            )
        granted = []
        for rid in await chain_records.granted_to(self.chain, self.deployment, party_id):
            info = await self.record(rid)
            view = await self.grant_view(rid, party_id)
            granted.append({"record_id": rid, "owner": info.owner, **_grant_dict(view)})
        return {"party": party_id, "owned": owned, "granted": granted}

    # ---- reader -------------------------------------------------------------------------
    async def context(
        self, reader: rc.PartyKeys, record_id: str, *, fresh: bool = False
    ) -> tuple[rc.ReadContext, rc.Grant]:
        """What a read needs; the grant from the chain, or remembered for GRANT_TTL_S."""
        rc.check_record_id(record_id)
        cached = self._grants.get((record_id, reader.id))
        if cached and not fresh and time.monotonic() - cached[1] < GRANT_TTL_S:
            # all of it remembered (the usual read): no task, no turn of the loop
            record = self._records.get(record_id)
            parties = self._parties
            if record and reader.id in parties and record.owner in parties:
                g = cached[0]
                ctx = rc.ReadContext(record, parties[record.owner], parties[reader.id], g.threshold)
                return ctx, g
            record, reader_party = await asyncio.gather(
                self.record(record_id), self.party(reader.id, record_id=record_id)
            )
            g = cached[0]
        else:
            record, (g, chain_time), reader_party = await asyncio.gather(
                self.record(record_id),
                chain_records.read_grant(self.rpc, self.deployment, record_id, reader.id),
                self.party(reader.id, record_id=record_id),
            )
            refused = g.refusal(max(time.time(), chain_time))
            if refused is not None:
                self._grants.pop((record_id, reader.id), None)
                raise refused
            self._grants[(record_id, reader.id)] = (g, time.monotonic())
        owner = await self.party(record.owner, role="owner", record_id=record_id)
        return rc.ReadContext(record, owner, reader_party, g.threshold), g

    def access_request(
        self, reader: rc.PartyKeys, record_id: str, trace_id: str
    ) -> tuple[dict, bytes]:
        """A signed access request (body, bytes); one read sends the same one to each proxy."""
        body = {"request_id": secrets.token_hex(16), "record_id": record_id, "reader": reader.id}
        req = envelope.make("records.access", body, reader.participant, trace_id=trace_id)
        return body, req.to_bytes()

    async def ask(
        self,
        reader: rc.PartyKeys,
        record_id: str,
        org: str,
        trace_id: str,
        request: tuple[dict, bytes] | None = None,
    ) -> Answer:
        """One proxy's answer: a capsule fragment (not yet verified), a refusal, or silence."""
        body, raw = request or self.access_request(reader, record_id, trace_id)
        sent = await self._send(org, raw)
        if isinstance(sent, Answer):
            return sent
        return await self._read(reader, record_id, org, body, sent)

    async def _send(self, org: str, raw: bytes) -> Msg | Answer:
        """The proxy's reply as it came (not yet read), or its silence."""
        try:
            return await self.nc.request(
                subjects.RECORDS_ACCESS.format(org=org), raw, timeout=self.timeout_s
            )
        except NoRespondersError:
            return Answer(org, "silent", "offline")
        except (NatsTimeout, TimeoutError):
            return Answer(org, "silent", f"no answer within {self.timeout_s:g} s")

    async def _read(
        self, reader: rc.PartyKeys, record_id: str, org: str, body: dict, msg: Msg
    ) -> Answer:
        """A reply checked (the proxy's signature, sealed to this reader, for this request)."""
        if records_wire.is_frame(msg.data):  # a cfrag: the proxies' usual answer
            try:
                sender = await self.orgs.resolve(org)
                _version, cfrag = records_wire.open_frame(
                    msg.data,
                    request_id=body["request_id"],
                    record_id=record_id,
                    reader=reader.id,
                    org=org,
                    org_signing_pk=sender.signing_pk,
                    reader_sealing_key=reader.participant.sealing_key,
                )
            except (records_wire.BadFrame, UnknownParticipant) as exc:
                return Answer(org, "bad", f"unreadable answer: {exc}")
            return Answer(org, "cfrag", cfrag=cfrag)
        try:
            env = envelope.parse(msg.data)
            if env.sender != org or env.type not in ("records.cfrag", "records.refusal"):
                raise BadMessage(f"a {env.type} from {env.sender} answered for {org}")
            await envelope.verify(env, self.orgs)
            b = envelope.open_body(env, reader.participant)
            if b["request_id"] != body["request_id"] or b["record_id"] != record_id:
                raise BadMessage("the answer is for another request")
        except BadMessage as exc:
            return Answer(org, "bad", f"unreadable answer: {exc}")
        if env.type == "records.refusal":
            return Answer(org, "refusal", b["detail"], reason=b["reason"])
        try:
            return Answer(org, "cfrag", cfrag=unb64(b["cfrag"]))
        except ValueError:
            return Answer(org, "bad", "the capsule fragment is not base64")

    def _ask_more(self, asked: dict, orgs: list[str], raw: bytes) -> set[asyncio.Future]:
        more = {asyncio.ensure_future(self._send(o, raw)): o for o in orgs}
        asked |= more
        return set(more)

    async def ask_all(
        self, reader: rc.PartyKeys, record_id: str, proxies: tuple[str, ...]
    ) -> dict[str, Answer]:
        trace = envelope.new_trace_id()
        answers = await asyncio.gather(*(self.ask(reader, record_id, o, trace) for o in proxies))
        return {a.org: a for a in answers}

    async def get(self, reader: rc.PartyKeys, record_id: str) -> ReadResult:
        started = time.perf_counter()
        ctx, g = await self.context(reader, record_id)
        content_hash = ctx.record.content_hash
        cached = self.blob_cache.get(content_hash)
        blob = asyncio.ensure_future(
            _ready(cached) if cached is not None else self.blobs.get(content_hash.hex())
        )
        trace = envelope.new_trace_id()
        order = random.sample(g.proxies, len(g.proxies))  # spread the load over the proxies
        first = g.threshold + self.spare_proxies
        waiting = order[first:]
        body, raw = self.access_request(reader, record_id, trace)
        # Only the replies: each is read (signature, sealed box) when the collector still
        # needs one, so a spare's that comes with the others costs nothing.
        asked = {asyncio.ensure_future(self._send(o, raw)): o for o in order[:first]}
        pending = set(asked)
        collector = rc.CfragCollector(ctx)
        keep = collector.add if self.verify_cfrags == ALWAYS else collector.take
        silent: list[str] = []
        plaintext: bytes | None = None
        try:
            while plaintext is None:
                while pending and not collector.ready:
                    done, pending = await asyncio.wait(
                        pending,
                        timeout=HEDGE_S if waiting else None,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    failed = 0
                    for task in done:
                        if collector.ready:  # m good ones: a spare's answer is not looked at
                            break
                        a = task.result()
                        if not isinstance(a, Answer):
                            a = await self._read(reader, record_id, asked[task], body, a)
                        if a.outcome == "cfrag":
                            failed += not keep(a.org, a.cfrag)
                        else:
                            failed += 1
                            if a.outcome == "refusal":
                                collector.refuse(a.org, f"{a.reason}: {a.detail}")
                            elif a.outcome == "bad":
                                collector.bad[a.org] = a.detail
                            else:
                                silent.append(a.org)
                    if waiting and (failed or not done):  # ask the others too
                        pending |= self._ask_more(asked, waiting, raw)
                        waiting = []
                if not collector.ready:
                    blob.cancel()
                    if collector.refused:  # the grant may have changed since it was remembered
                        await self.context(reader, record_id, fresh=True)
                    raise collector.shortfall(g.proxies)
                try:
                    ciphertext = await blob
                except (BlobNotFound, BlobCorrupt) as exc:
                    raise rc.TamperedCiphertext(
                        f"the ciphertext of record {record_id} cannot be used ({exc}); nothing "
                        f"was decrypted for reader {reader.id}",
                        record_id=record_id,
                        reader_id=reader.id,
                    ) from None
                # The blob store has checked the ciphertext against the chain's content hash,
                # and the cache keeps only what it gave.
                plaintext = await _open(collector, reader, ciphertext)
                if plaintext is None and waiting:  # a fragment was bad: ask the others
                    pending |= self._ask_more(asked, waiting, raw)
                    waiting = []
            self.blob_cache.put(content_hash, ciphertext)
        finally:
            for task in pending:
                task.cancel()
            if not blob.done():
                blob.cancel()
        return ReadResult(
            record_id,
            reader.id,
            plaintext,
            used=list(collector.good)[: g.threshold],
            bad=dict(collector.bad),
            refused=dict(collector.refused),
            silent=silent,
            elapsed_ms=round(1000 * (time.perf_counter() - started), 2),
        )


async def _ready(value: bytes) -> bytes:
    return value


async def _open(
    collector: rc.CfragCollector, reader: rc.PartyKeys, ciphertext: bytes
) -> bytes | None:
    if len(ciphertext) > 64 * 1024:  # keep the loop free for other requests on big records
        return await asyncio.to_thread(collector.open, reader, ciphertext, hash_checked=True)
    return collector.open(reader, ciphertext, hash_checked=True)


def _grant_dict(view: GrantView) -> dict:
    g = view.grant
    return {
        "reader": g.reader,
        "threshold": g.threshold,
        "proxies": list(g.proxies),
        "expires_at": g.expires_at,
        "version": g.version,
        "status": view.status,
    }
