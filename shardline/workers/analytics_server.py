"""MPC server, one per org node: adds the producers' shares it holds and answers jobs on chain.

Producers' parts (one per contribution: one row or a batch of many) arrive on
``analytics.input.<org>`` sealed to this org, in the message or in the ``analytics`` object store;
the sender must be the producer the Market knows, and the hash of the part must match the digest
the producer put on chain. The server checks the rows against the schema on its shares
(``core.shared_checks``, seeded by the block that recorded the digest), keeps only their sums,
and sends its check values on ``analytics.check.<org>``; with every server's values it decides,
as every other server does, whether the contribution counts. It follows ``Contributed`` (the
order of inputs) and ``JobOpened``. For a job that names it, it adds the sums of the first
``inputs`` contributions that passed, takes the
job's sums (``core.analytics.selectors``), pads them with its share of the consumer's mask,
commits (with its unmasked share of the row count), and once every server has committed (or
the commit deadline passed) decodes the count from the committed count shares: fewer than the
data set's k and it refuses, else it reveals. Only the consumer can remove the mask.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import time

from shardline.bus import envelope, log, subjects
from shardline.bus.blobs import BlobCorrupt, BlobNotFound, BlobStore
from shardline.bus.consumers import org_consumer
from shardline.bus.envelope import BadMessage, unb64
from shardline.bus.worker import Incoming, Transient, Worker
from shardline.contracts import market as mk
from shardline.contracts import registry
from shardline.contracts.client import Chain, ChainError
from shardline.contracts.cursor import EventReader, HeadWatcher, RawLog, Rpc
from shardline.contracts.deploy import Deployment
from shardline.core import analytics as an
from shardline.core import analytics_batch as ab
from shardline.core import bulk_shares as bs
from shardline.core import field_shares as fs
from shardline.core import sealing
from shardline.core import shared_checks as sc
from shardline.core.directory import Directory, Participant, UnknownParticipant
from shardline.core.logpoller import Cursor
from shardline.workers.analytics_store import AnalyticsStore

INPUT_BUCKET = "analytics"  # parts too large for one message, sealed to their server
PRODUCER = 4  # a producer's kind in a ProducerDirectory (not an OrgRegistry kind)
POLL_S = 0.05
WAIT_S = 1.0  # a job waiting for contributions looks again at least this often


class ProducerDirectory(Directory):
    """Producers by id, from the Market on one's own chain endpoint (keys never change), and the
    orgs of the on-chain registry (the servers sign their check values as their org). An org's
    id is its own: a producer registered under an org's name cannot speak for it."""

    ORG_REFRESH_S = 5.0

    def __init__(self, chain: Chain, deployment: Deployment) -> None:
        super().__init__()
        self.chain = chain
        self.deployment = deployment
        self.known: dict[str, Participant] = {}
        self._orgs: dict[str, Participant] = {}
        self._orgs_read = -1e9
        self._orgs_lock = asyncio.Lock()

    async def _org(self, participant_id: str) -> Participant | None:
        async with self._orgs_lock:  # concurrent handlers wait for one read of the registry
            if (
                participant_id not in self._orgs
                and time.monotonic() - self._orgs_read > self.ORG_REFRESH_S
            ):
                found = await registry.list_participants(self.chain, self.deployment)
                self._orgs = {p.id: p for p in found if p.active}
                self._orgs_read = time.monotonic()
        return self._orgs.get(participant_id)

    async def resolve(self, participant_id: str) -> Participant:
        found = self._orgs.get(participant_id) or self.known.get(participant_id)
        if found is None:
            org = await self._org(participant_id)
            if org is not None:
                return org
            try:
                got = await mk.read_producer(self.chain.rpc, self.deployment, participant_id)
            except ValueError:
                got = None
            if got is None:
                raise UnknownParticipant(f"{participant_id!r} is not a producer on the Market")
            found = Participant(participant_id, got[1], b"", got[0], PRODUCER)
            self.known[participant_id] = found
        return found


def part_digest(dataset: str, producer: str, hashes: list[bytes]) -> bytes:
    """What a producer puts on chain: binds the data set, itself and every server's part."""
    return hashlib.sha256(mk.ident(dataset) + mk.ident(producer) + b"".join(hashes)).digest()


class CheckOutbox:
    """A server's check values, sent together: the inputs checked within a few milliseconds of
    each other go out in one message per data set (group commit: each input is acked only once
    its values are on the stream, so a crash loses none)."""

    WINDOW_S = 0.02
    MAX_POINTS = 512

    def __init__(self, publish) -> None:
        self._publish = publish
        self._pending: list[tuple[str, int, dict, asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    async def send(self, ds_id: str, x: int, digest: bytes, point: sc.CheckPoint) -> None:
        fut = asyncio.get_running_loop().create_future()
        item = {
            "digest": digest.hex(),
            "consistency": str(point.consistency),
            "rules": str(point.rules),
        }
        self._pending.append((ds_id, x, item, fut))
        if self._task is None:
            self._task = asyncio.create_task(self._flush())
        await fut

    async def _flush(self) -> None:
        await asyncio.sleep(self.WINDOW_S)
        batch, self._pending, self._task = self._pending, [], None
        groups: dict[tuple[str, int], list[tuple[dict, asyncio.Future]]] = {}
        for ds_id, x, item, fut in batch:
            groups.setdefault((ds_id, x), []).append((item, fut))
        for (ds_id, x), items in groups.items():
            for start in range(0, len(items), self.MAX_POINTS):
                chunk = items[start : start + self.MAX_POINTS]
                try:
                    await self._publish(ds_id, x, [i for i, _f in chunk])
                except Exception as exc:  # each waiting input is retried by the bus
                    for _i, f in chunk:
                        if not f.done():
                            f.set_exception(exc)
                else:
                    for _i, f in chunk:
                        if not f.done():
                            f.set_result(None)


class AnalyticsServer(Worker):
    kind = "analytics-server"
    publishes = ("analytics.check",)

    def __init__(
        self,
        *args,
        org_id: str,
        store: AnalyticsStore,
        chain: Chain,
        deployment: Deployment,
        account,
        ws_url: str,
        confirmations: int = 0,
        stake_wei: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.org_id = org_id
        self.store = store
        self.chain = chain
        self.deployment = deployment
        self.account = account
        self.stake_wei = stake_wei
        self._datasets: dict[str, mk.DatasetInfo] = {}
        self._reading: dict[str, asyncio.Future] = {}  # data sets being read, for the waiters
        self._aggregates: dict[tuple[str, int], list[int]] = {}
        self._jobs: dict[int, asyncio.Task] = {}
        self._blobs: BlobStore | None = None
        self._progress = asyncio.Event()  # set when a contribution is recorded or decided
        self.outbox = CheckOutbox(self._publish_checks)
        self.heads = HeadWatcher(ws_url)
        self.reader = EventReader(
            Rpc(chain.rpc),
            Cursor(start=int(deployment.block), remembered=store.cursor_blocks()),
            addresses=lambda: [deployment.market],
            topics0=[mk.CONTRIBUTED, mk.JOB_OPENED],
            confirmations=confirmations,
            save=lambda c: store.save_cursor(c.remembered()),
            heads=self.heads,
        )
        self._loop: asyncio.Task | None = None

    # ---- wiring -------------------------------------------------------------------------
    async def setup(self) -> None:
        me = await mk.server(self.chain, self.deployment, self.org_id)
        if me.stake == 0 and self.stake_wei:
            try:
                await mk.stake(self.chain, self.account, self.deployment, self.stake_wei)
                log.event("analytics.staked", org=self.org_id, wei=self.stake_wei)
            except ChainError as exc:  # the node's other work goes on; it is just not chosen
                log.warn("analytics.stake_failed", org=self.org_id, error=str(exc))
        self.consume(
            org_consumer(self.org_id, f"analytics-checks-{self.org_id}"),
            self.on_check,
        )
        self.consume(
            org_consumer(self.org_id, f"analytics-inputs-{self.org_id}"),
            self.on_input,
        )
        self.heads.start()
        self._loop = asyncio.create_task(
            self.reader.follow(self.on_log, event="analytics.chain_step_failed", org=self.org_id)
        )
        # a job committed before a restart is revealed with what was committed
        for job_id, detail in self.store.jobs_in("committing", "committed"):
            self._jobs[job_id] = asyncio.create_task(self._resume(job_id, detail))

    async def stop(self) -> None:
        for t in [self._loop, *self._jobs.values(), *self._reading.values()]:
            if t:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        await self.heads.stop()
        await super().stop()

    async def dataset(self, dataset_id: str) -> mk.DatasetInfo:
        """A data set never changes once created: read once. The inputs and check values that
        arrive together wait for that one read instead of each reading it."""
        found = self._datasets.get(dataset_id)
        if found is not None:
            return found
        reading = self._reading.get(dataset_id)
        if reading is None:
            reading = asyncio.ensure_future(mk.dataset(self.chain, self.deployment, dataset_id))
            self._reading[dataset_id] = reading

            def done(f: asyncio.Future, dataset_id: str = dataset_id) -> None:
                if self._reading.get(dataset_id) is f:
                    del self._reading[dataset_id]
                if not f.cancelled():
                    f.exception()  # retrieved: its waiters, if any are left, raise it

            reading.add_done_callback(done)
        found = await asyncio.shield(reading)
        if found is None:
            raise Transient(f"data set {dataset_id} is not on this org's chain endpoint yet")
        self._datasets[dataset_id] = found
        return found

    # ---- inputs -------------------------------------------------------------------------
    async def on_input(self, m: Incoming) -> None:
        """A producer's part: unseal, bind to the digest on chain, check in shared form, sum."""
        b = m.body
        ds_id, producer = b["dataset"], b["producer"]
        if m.env.sender != producer:
            raise BadMessage(f"input of producer {producer} was signed by {m.env.sender}")
        ds = await self.dataset(ds_id)
        x = b["x"]
        if x > len(ds.servers) or ds.servers[x - 1] != self.org_id:
            raise BadMessage(f"share {x} of data set {ds_id} does not belong to {self.org_id}")
        hashes = [bytes.fromhex(h) for h in b["hashes"]]
        if len(hashes) != len(ds.servers):
            raise BadMessage(f"data set {ds_id} has {len(ds.servers)} servers, not {len(hashes)}")
        digest = bytes.fromhex(b["digest"])
        if part_digest(ds_id, producer, hashes) != digest:
            raise BadMessage(f"the digest of {producer}'s contribution does not bind its parts")
        if self.store.verdicts(ds_id, [digest]) or self.store.points(ds_id, digest).get(x):
            return  # checked and summed before (a redelivery)
        started = time.monotonic()
        part = await self.part(b)
        fetched = time.monotonic()
        if hashlib.sha256(part).digest() != hashes[x - 1]:
            raise BadMessage(f"the shares of {producer} do not match their hash")
        schema = an.Schema.from_dict(ds.schema)
        lay = sc.layout(schema)
        try:
            body, w, eta = ab.split_part(lay, part, b["rows"], bool(b.get("seeded")))
        except ValueError as exc:
            raise BadMessage(f"contribution of {producer} to {ds_id}: {exc}") from None
        block = await self.contribution_block(ds_id, digest)
        on_chain = time.monotonic()
        try:
            point, sums = await asyncio.to_thread(
                self.check_and_sum, lay, body, b["rows"], x, w, eta, sc.seed(block, digest)
            )
        except ValueError as exc:  # a share outside the field
            raise BadMessage(f"contribution of {producer} to {ds_id}: {exc}") from None
        checked = time.monotonic()
        self.store.put_input(ds_id, digest, producer, b["rows"], fs.pack(sums))
        await self.outbox.send(ds_id, x, digest, point)
        log.event(
            "analytics.input_stored",
            org=self.org_id,
            dataset=ds_id,
            producer=producer,
            rows=b["rows"],
            fetch_s=round(fetched - started, 4),
            block_wait_s=round(on_chain - fetched, 4),
            check_s=round(checked - on_chain, 4),
            store_send_s=round(time.monotonic() - checked, 4),
        )

    def _progressed(self) -> None:
        """Wake the jobs waiting for contributions (``aggregate``)."""
        self._progress.set()
        self._progress = asyncio.Event()

    async def _publish_checks(self, ds_id: str, x: int, points: list[dict]) -> None:
        body = {"dataset": ds_id, "x": x, "points": points}
        key = hashlib.sha256("".join(p["digest"] for p in points).encode()).hexdigest()[:32]
        await self.js.publish(
            subjects.ANALYTICS_CHECK.format(org=self.org_id),
            envelope.make("analytics.check", body, self.keys).to_bytes(),
            headers={"Nats-Msg-Id": f"check.{self.org_id}.{key}"},
        )

    @staticmethod
    def check_and_sum(
        lay: sc.Layout, body: bytes, rows: int, x: int, w: int, eta: int, seed: bytes
    ) -> tuple[sc.CheckPoint, list[int]]:
        v = bs.elements(body)  # ValueError when a share is not below p
        if rows < sc.SMALL_BATCH:
            point = sc.evaluate(lay, body, rows, x, w, eta, seed)
        else:
            point = sc.evaluate_array(lay, v, rows, x, w, eta, seed)
        return point, bs.array_column_sums(v, lay.extended)[: lay.width]

    async def part(self, b: dict) -> bytes:
        """This server's part of a contribution: in the message, or sealed in the object store."""
        if "shares" in b:
            return unb64(b["shares"])
        if self._blobs is None:
            self._blobs = await BlobStore.open(self.js, INPUT_BUCKET)
        try:
            sealed = await self._blobs.get(b["object"])
        except (BlobNotFound, BlobCorrupt) as exc:
            raise BadMessage(f"the part of {b['producer']} is not readable: {exc}") from None
        try:
            return sealing.unseal(sealed, self.keys.sealing_key)
        except sealing.SealError:
            raise BadMessage(
                f"the part of {b['producer']} is not sealed to {self.org_id}"
            ) from None

    async def contribution_block(self, ds_id: str, digest: bytes) -> bytes:
        """The hash of the block that recorded ``digest``: the producer sends its parts after
        that block, so it comes in a moment; after a while, let the bus redeliver."""
        loop = asyncio.get_running_loop()
        until = loop.time() + 5.0
        while loop.time() < until:
            progress = self._progress  # set when a Contributed event is recorded
            block = self.store.block(ds_id, digest)
            if block is not None:
                return block
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), 0.2)
        raise Transient(f"contribution {digest.hex()[:12]} to {ds_id} is not on chain here yet")

    async def on_check(self, m: Incoming) -> None:
        """Another server's (or our own) check values; with all n, a contribution's verdict."""
        b = m.body
        ds = await self.dataset(b["dataset"])
        x = b["x"]
        if not 1 <= x <= len(ds.servers) or ds.servers[x - 1] != m.env.sender:
            raise BadMessage(f"check values {x} of {b['dataset']} sent by {m.env.sender}")
        got = [
            (bytes.fromhex(p["digest"]), int(p["consistency"]), int(p["rules"]))
            for p in b["points"]
        ]
        held = self.store.add_points(ds.id, x, got)
        full = [d for d, n in held.items() if n >= len(ds.servers)]
        decided = self.store.verdicts(ds.id, full) if full else {}
        undecided = [d for d in full if d not in decided]
        if not undecided:
            return
        reasons = {
            digest: sc.verdict(
                {px: sc.CheckPoint(c, r) for px, (c, r) in pts.items()}, ds.threshold
            )
            for digest, pts in self.store.points_of(ds.id, undecided).items()
        }
        self.store.put_verdicts(ds.id, reasons)
        self._progressed()
        for digest, reason in reasons.items():
            if reason:
                log.warn(
                    "analytics.input_rejected",
                    org=self.org_id,
                    dataset=ds.id,
                    digest=digest.hex(),
                    reason=reason,
                )

    # ---- the chain ----------------------------------------------------------------------
    async def on_log(self, lg: RawLog) -> None:
        topic = "0x" + lg.topics[0].hex()
        if topic == mk.CONTRIBUTED:
            from eth_abi import decode as abi_decode

            index, digest, rows = abi_decode(["uint32", "bytes32", "uint32"], lg.data)
            ds_id = mk.name_of(lg.topics[1])
            self.store.add_contribution(
                ds_id, int(index), bytes(digest), int(rows), block_hash=lg.block_hash
            )
            self._progressed()
            return
        job_id, _ds, servers, _xs, _spec, _boxes = mk.decode_job_opened(lg)
        if self.org_id in servers and job_id not in self._jobs:
            done = self.store.job(job_id)
            if done is not None and done[0] in ("revealed", "refused", "failed"):
                return
            self._jobs[job_id] = asyncio.create_task(self._serve(job_id, lg))

    async def _serve(self, job_id: int, lg: RawLog) -> None:
        try:
            await self.serve_job(job_id, lg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("analytics.job_failed", org=self.org_id, job=job_id, error=repr(exc))
            self.store.save_job(job_id, "failed", reason=repr(exc))

    async def chain_time(self) -> float:
        """The time the next block will carry, near enough: an idle automining node's latest
        block is old, and the next transaction's block takes the wall clock."""
        block = await self.chain.rpc.call("eth_getBlockByNumber", ["latest", False])
        return max(time.time(), int(block["timestamp"], 16))  # type: ignore[index]

    # ---- one job ------------------------------------------------------------------------
    async def serve_job(self, job_id: int, lg: RawLog) -> None:
        _j, ds_id, servers, _xs, spec_d, boxes = mk.decode_job_opened(lg)
        slot = servers.index(self.org_id)
        job = await mk.job(self.chain, self.deployment, job_id)
        assert job is not None
        ds = await self.dataset(ds_id)
        schema, spec = an.Schema.from_dict(ds.schema), an.JobSpec.from_dict(spec_d)
        saved = self.store.job(job_id)
        if saved is None:
            mask, mask_salt = self.open_mask(boxes[slot])
            sel = an.selectors(schema, spec)
            if (
                len(sel) != job.width
                or len(mask) != job.width
                or mk.mask_commitment(job.consumer_key, slot, mask, mask_salt)
                != job.mask_commits[slot]
            ):
                # The consumer's fault, not ours: commit to nothing and refuse in the reveal phase.
                log.warn("analytics.bad_mask", org=self.org_id, job=job_id)
                await mk.commit(
                    self.chain, self.account, self.deployment, job_id, secrets.token_bytes(32), 0
                )
                await self.finish_job(job_id, [], b"", ds, refuse=True)
                return
            aggregate = await self.aggregate(ds_id, schema.width, job.inputs, job.commit_deadline)
            out = self.output_share(aggregate, sel)
            masked = [(o + m) % fs.PRIME for o, m in zip(out, mask, strict=True)]
            salt = secrets.token_bytes(32)
            commitment = mk.output_commitment(job_id, slot, masked, salt)
            self.store.save_job(job_id, "committing", masked=masked, salt=salt.hex(), count=out[0])
            await mk.commit(self.chain, self.account, self.deployment, job_id, commitment, out[0])
            self.store.save_job(job_id, "committed", masked=masked, salt=salt.hex(), count=out[0])
            log.event("analytics.committed", org=self.org_id, job=job_id)
        else:
            detail = saved[1]
            masked, salt = detail["masked"], bytes.fromhex(detail["salt"])
        await self.finish_job(job_id, masked, salt, ds)

    async def finish_job(
        self,
        job_id: int,
        masked: list[int],
        salt: bytes,
        ds: mk.DatasetInfo | None = None,
        *,
        refuse: bool = False,
    ) -> None:
        """After committing: wait for every commitment (or the deadline), check k, reveal."""
        while True:
            job = await mk.job(self.chain, self.deployment, job_id)
            assert job is not None
            if job.status != mk.OPEN:
                return
            # a margin: the next block's time may lag the wall clock by a second
            if (
                job.committed == len(job.servers)
                or await self.chain_time() > job.commit_deadline + 1.5
            ):
                break
            await asyncio.sleep(POLL_S)
        ds = ds or await self.dataset(job.dataset)
        count = await self.decoded_count(job, ds.threshold)
        # beyond MAX_ROWS the sums of squares could wrap: no result rather than a wrong one
        if refuse or (count is not None and not ds.k <= count <= an.MAX_ROWS):
            await mk.refuse(self.chain, self.account, self.deployment, job_id)
            self.store.save_job(job_id, "refused", count=count)
            log.event("analytics.refused", org=self.org_id, job=job_id, count=count, k=ds.k)
            return
        await mk.reveal(self.chain, self.account, self.deployment, job_id, masked, salt)
        self.store.save_job(job_id, "revealed", masked=masked, salt=salt.hex())
        log.event("analytics.revealed", org=self.org_id, job=job_id)

    async def _resume(self, job_id: int, detail: dict) -> None:
        try:
            await self.finish_job(job_id, detail["masked"], bytes.fromhex(detail["salt"]))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("analytics.job_failed", org=self.org_id, job=job_id, error=repr(exc))
            self.store.save_job(job_id, "failed", reason=repr(exc))

    def output_share(self, aggregate: list[int], sel: list[list[int]]) -> list[int]:
        return an.output_share(aggregate, sel)

    def open_mask(self, box: bytes) -> tuple[list[int], bytes]:
        """This server's mask share and salt; an empty mask when the box does not open."""
        try:
            d = json.loads(sealing.unseal(box, self.keys.sealing_key))
            return [int(v) for v in d["mask"]], bytes.fromhex(d["salt"])
        except (sealing.SealError, ValueError, KeyError, TypeError):
            return [], b""

    async def decoded_count(self, job: mk.JobInfo, threshold: int) -> int | None:
        slots = await asyncio.gather(
            *(mk.slot(self.chain, self.deployment, job.id, i) for i in range(len(job.xs)))
        )
        points = {x: [s.count_share] for x, s in zip(job.xs, slots, strict=True) if s.committed}
        try:
            return fs.centered(fs.robust_reconstruct(points, threshold).values[0])
        except fs.DecodeError as exc:
            log.warn("analytics.count_undecodable", org=self.org_id, job=job.id, error=str(exc))
            return None

    async def aggregate(self, ds_id: str, width: int, inputs: int, deadline: int) -> list[int]:
        """The sum of the share vectors of the data set's first ``inputs`` contributions that
        passed the servers' range check (a rejected one counts for no row)."""
        key = (ds_id, inputs)
        if key in self._aggregates:
            return self._aggregates[key]
        while True:
            progress = self._progress  # woken when a contribution is recorded or decided
            digests = self.store.contributions(ds_id, inputs)
            complete = len(digests) == inputs
            verdicts = self.store.verdicts(ds_id, digests) if complete else {}
            held = self.store.inputs(ds_id, digests) if len(verdicts) == inputs else {}
            if complete and len(held) == inputs and len(verdicts) == inputs:
                break
            if await self.chain_time() > deadline:
                raise ValueError(
                    f"{len(held)} of the {inputs} contributions to {ds_id} reached this server, "
                    f"{len(verdicts)} were checked by all servers, before the commit deadline"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), WAIT_S)
        acc = [0] * width
        for d in digests:
            if verdicts[d]:
                fs.add_into(acc, fs.unpack(held[d]))
        total = fs.reduce(acc)
        self._aggregates[key] = total
        return total
