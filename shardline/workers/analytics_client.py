"""Producers and consumers of analytics: share rows to the MPC servers, open jobs, read results.

A producer range-checks every row against the data set's schema before anything is shared,
shares each row's vector t-of-n among the data set's servers, puts the digest of the parts on
the Market, and sends each server its part sealed to it. A consumer opens a job with a deposit
and a fresh random mask shared among the chosen servers; the servers' outputs come back on
chain padded with it, so only the consumer can read the statistic. The consumer decodes with
Berlekamp-Welch; a server whose output is off the others' polynomial is named on chain with the
mask opened as evidence, which the contract checks before it slashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from shardline.bus import envelope, subjects
from shardline.bus.blobs import BlobStore
from shardline.bus.connect import connect
from shardline.contracts import market as mk
from shardline.contracts import registry
from shardline.contracts.client import Chain, ChainRevert
from shardline.contracts.deploy import Deployment
from shardline.core import analytics as an
from shardline.core import analytics_batch as ab
from shardline.core import field_shares as fs
from shardline.core import sealing
from shardline.core.keys import ParticipantKeys
from shardline.workers.analytics_server import INPUT_BUCKET, part_digest

# A part up to this size travels in its message (sealed, base64 twice: under the envelope's
# 256 KiB); a larger one is sealed once into the object store.
INLINE_PART_BYTES = 96_000


class JobFailed(RuntimeError):
    """The job ended without a result: the deposit is refunded (and the faulty slashed)."""


@dataclass
class JobSecret:
    """What only the consumer knows about its job: the mask shares and their salts."""

    job: int
    dataset: str
    spec: dict
    servers: list[str]
    xs: list[int]
    consumer_key: str
    masks: list[list[int]]
    salts: list[str]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f)

    @classmethod
    def load(cls, path: Path) -> JobSecret:
        if not path.exists():
            raise FileNotFoundError(
                f"no secrets for this job at {path}: results are readable only where the job "
                "was opened"
            )
        return cls(**json.loads(path.read_text()))


@dataclass(frozen=True)
class JobOutcome:
    job: int
    status: str
    result: an.Result | None
    cheaters: list[str]
    silent: list[str]

    def to_dict(self) -> dict:
        return {
            "job": self.job,
            "status": self.status,
            "result": self.result.to_dict() if self.result else None,
            "cheaters": self.cheaters,
            "silent": self.silent,
        }


class AnalyticsClient:
    def __init__(self, nc, chain: Chain, deployment: Deployment) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=10) if nc is not None else None
        self.chain = chain
        self.deployment = deployment
        self._sealing: dict[str, bytes] = {}
        self._datasets: dict[str, tuple[mk.DatasetInfo, an.Schema]] = {}
        self._reads = asyncio.Lock()  # many producers at once read the chain once
        self._blobs: BlobStore | None = None

    @classmethod
    async def connect(
        cls, nats_url: str | None, chain_rpc: str, deployment: dict, *, name: str
    ) -> AnalyticsClient:
        dep = Deployment.from_dict(deployment)
        chain = await Chain.connect(chain_rpc, expected_chain_id=dep.chain_id)
        nc = await connect(nats_url, name) if nats_url else None
        return cls(nc, chain, dep)

    async def close(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.drain()
        with contextlib.suppress(Exception):
            await self.chain.close()

    async def sealing_key(self, org: str) -> bytes:
        if org not in self._sealing:
            async with self._reads:
                if org not in self._sealing:
                    for p in await registry.list_participants(self.chain, self.deployment):
                        self._sealing[p.id] = p.sealing_pk
        if org not in self._sealing:
            raise ValueError(f"{org} is not an org in the on-chain registry")
        return self._sealing[org]

    async def dataset(self, dataset_id: str) -> tuple[mk.DatasetInfo, an.Schema]:
        if dataset_id in self._datasets:  # a data set never changes once created
            return self._datasets[dataset_id]
        async with self._reads:
            if dataset_id not in self._datasets:
                await self._read_dataset(dataset_id)
        return self._datasets[dataset_id]

    async def _read_dataset(self, dataset_id: str) -> None:
        ds = await mk.dataset(self.chain, self.deployment, dataset_id)
        if ds is None:
            raise ValueError(
                f"no data set {dataset_id!r} on the Market: create it with "
                "`shardline analytics create`, or check the id"
            )
        self._datasets[dataset_id] = (ds, an.Schema.from_dict(ds.schema))

    # ---- producers ----------------------------------------------------------------------
    async def submit(self, keys: ParticipantKeys, dataset_id: str, rows: list[dict]) -> list[bytes]:
        """Check, share, register and send ``rows`` as one contribution; returns its digest.

        ``rows`` may be one producer's row or a batch of many producers' rows (a clinic sending
        for its consenting patients): either way one digest on chain, one part per server
        (in the message, or sealed in the object store when large), one check at the servers.
        """
        ds, schema = await self.dataset(dataset_id)
        xs = list(range(1, len(ds.servers) + 1))
        batch = await asyncio.to_thread(ab.share_batch, schema, rows, ds.threshold, xs)
        return [await self.send_batch(keys, dataset_id, batch)]

    async def send_batch(
        self, keys: ParticipantKeys, dataset_id: str, batch: ab.SharedBatch
    ) -> bytes:
        """Put a shared batch's digest on chain, then each server's part on the bus."""
        ds, _schema = await self.dataset(dataset_id)
        xs = list(range(1, len(ds.servers) + 1))
        digest = part_digest(dataset_id, keys.participant_id, batch.hashes)
        account: LocalAccount = Account.from_key(keys.chain_key)
        tx = await mk.send_contribution(
            self.chain,
            account,
            self.deployment,
            dataset_id,
            keys.participant_id,
            keys.signing_public,
            digest,
            batch.rows,
        )
        receipt = await self.chain.mined(tx)
        if int(receipt["status"], 16) != 1:
            await self.chain.wait(tx)  # raises with the contract's reason
        await asyncio.gather(
            *(
                self._send_part(keys, dataset_id, digest, batch, x, org)
                for x, org in zip(xs, ds.servers, strict=True)
            )
        )
        return digest

    async def _send_part(
        self,
        keys: ParticipantKeys,
        dataset_id: str,
        digest: bytes,
        batch: ab.SharedBatch,
        x: int,
        org: str,
    ) -> None:
        pk = await self.sealing_key(org)
        body = {
            "dataset": dataset_id,
            "producer": keys.participant_id,
            "digest": digest.hex(),
            "x": x,
            "rows": batch.rows,
            "hashes": [h.hex() for h in batch.hashes],
        }
        part = batch.parts[x]
        if x in batch.seeded:  # 32 bytes of seed stand for this server's shares of the rows
            body["seeded"] = True
        if len(part) <= INLINE_PART_BYTES:
            body["shares"] = envelope.b64(part)
        else:  # one sealed object per server, one small message pointing at it
            if self._blobs is None:
                self._blobs = await BlobStore.open(self.js, INPUT_BUCKET)  # type: ignore[arg-type]
            sealed = await asyncio.to_thread(sealing.seal, part, pk)
            body["object"] = await self._blobs.put(sealed, f"analytics part {x} of {digest.hex()}")
        env = envelope.make("analytics.input", body, keys, seal_to=(org, pk))
        await self.js.publish(  # type: ignore[union-attr]
            subjects.ANALYTICS_INPUT.format(org=org),
            env.to_bytes(),
            headers={"Nats-Msg-Id": f"{digest.hex()}.{org}"},
        )

    # ---- consumers ----------------------------------------------------------------------
    async def open(
        self,
        account: LocalAccount,
        dataset_id: str,
        spec: an.JobSpec,
        *,
        price: int,
        commit_window_s: int = 60,
        reveal_window_s: int = 60,
    ) -> JobSecret:
        ds, schema = await self.dataset(dataset_id)
        width = len(an.selectors(schema, spec))  # a bad spec fails here, before any deposit
        servers = await mk.choose_servers(self.chain, self.deployment, dataset_id)
        xs = [ds.servers.index(s) + 1 for s in servers]
        consumer_key = secrets.token_bytes(32)
        mask = [secrets.randbelow(fs.PRIME) for _ in range(width)]
        shares = fs.split_vector(mask, ds.threshold, xs)
        salts = [secrets.token_bytes(32) for _ in servers]
        commits, boxes = [], []
        for i, (org, x) in enumerate(zip(servers, xs, strict=True)):
            commits.append(mk.mask_commitment(consumer_key, i, shares[x], salts[i]))
            opened = json.dumps({"mask": [str(v) for v in shares[x]], "salt": salts[i].hex()})
            boxes.append(sealing.seal(opened.encode(), await self.sealing_key(org)))
        job_id = await mk.open_job(
            self.chain,
            account,
            self.deployment,
            dataset_id=dataset_id,
            spec_json=spec.to_json(),
            width=width,
            consumer_key=consumer_key,
            server_ids=servers,
            mask_commits=commits,
            mask_boxes=boxes,
            price=price,
            commit_window_s=commit_window_s,
            reveal_window_s=reveal_window_s,
        )
        return JobSecret(
            job_id,
            dataset_id,
            spec.to_dict(),
            servers,
            xs,
            consumer_key.hex(),
            [shares[x] for x in xs],
            [s.hex() for s in salts],
        )

    async def _finalise(self, account: LocalAccount, job_id: int) -> None:
        """``finalise``, retried while the chain's own clock (block time, which can lag or lead
        the wall clock after bursts of blocks) has not passed the reveal deadline."""
        for attempt in range(40):
            try:
                await mk.finalise(self.chain, account, self.deployment, job_id)
                return
            except ChainRevert as exc:
                if "deadline has not passed" not in str(exc) or attempt == 39:
                    raise
                await asyncio.sleep(0.5)

    async def chain_time(self) -> float:
        block = await self.chain.rpc.call("eth_getBlockByNumber", ["latest", False])
        return max(time.time(), int(block["timestamp"], 16))  # type: ignore[index]

    async def wait_outputs(self, job_id: int, timeout_s: float) -> mk.JobInfo:
        """Until every server revealed or refused, the job ended, or its reveal deadline passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            job = await mk.job(self.chain, self.deployment, job_id)
            if job is None:
                raise ValueError(f"no job {job_id} on the Market")
            if (
                job.status != mk.OPEN
                or job.revealed + job.refused == len(job.servers)
                or await self.chain_time() > job.reveal_deadline + 1.5
                or loop.time() > deadline
            ):
                return job
            await asyncio.sleep(0.05)

    async def result(
        self, account: LocalAccount, secret: JobSecret, *, timeout_s: float = 60.0
    ) -> JobOutcome:
        """Decode the statistic, name any cheater on chain, and settle the job."""
        job = await self.wait_outputs(secret.job, timeout_s)
        slots = await asyncio.gather(
            *(mk.slot(self.chain, self.deployment, job.id, i) for i in range(len(job.servers)))
        )
        silent = [
            s
            for s, sl in zip(job.servers, slots, strict=True)
            if not sl.revealed and not sl.refused
        ]
        if job.status == mk.REFUSED:
            raise an.TooFewProducers(
                f"job {job.id}: the servers refused, the filter selects fewer than k rows; the "
                "deposit is back in your Market balance"
            )
        if job.status == mk.OPEN and job.revealed < len(job.servers):
            if await self.chain_time() <= job.reveal_deadline + 1.5:
                raise TimeoutError(f"job {job.id}: still waiting for {', '.join(silent)}")
            await self._finalise(account, job.id)
            job = await mk.job(self.chain, self.deployment, job.id)  # type: ignore[assignment]
        if job.status == mk.FAILED:
            raise JobFailed(
                f"job {job.id} failed: {', '.join(silent) or 'a server'} did not reveal by the "
                "deadline and was slashed; the deposit is back in your Market balance"
            )
        ds, schema = await self.dataset(job.dataset)
        outs = {
            x: [(m - k) % fs.PRIME for m, k in zip(sl.masked, mask, strict=True)]
            for x, sl, mask in zip(secret.xs, slots, secret.masks, strict=True)
            if sl.revealed
        }
        decoded = fs.robust_reconstruct(outs, ds.threshold)
        cheaters = [job.servers[secret.xs.index(x)] for x in sorted(decoded.bad)]
        if job.status == mk.OPEN:
            if decoded.bad:
                await mk.accuse(
                    self.chain,
                    account,
                    self.deployment,
                    job.id,
                    [secret.xs.index(x) for x in sorted(decoded.bad)],
                    secret.masks,
                    [bytes.fromhex(s) for s in secret.salts],
                )
            await mk.accept(self.chain, account, self.deployment, job.id)
        result = an.finish(schema, an.JobSpec.from_dict(job.spec), decoded.values)
        return JobOutcome(job.id, "done", result, cheaters, silent)
