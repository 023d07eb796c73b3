"""Combiner (gateway domain): gathers the shares of a lookup and rebuilds the sheet.

Per lookup the gateway left the terms (threshold, commitment, org set) and the ephemeral secret
key in Redis. Each share is opened with that key and checked against the commitment: a wrong one
is named and never used. The first ``threshold`` good shares rebuild the sheet, which goes to the
gateway sealed to its key. Several combiners can share the work: state lives in Redis.
"""

from __future__ import annotations

import json
import time

from nacl.public import PrivateKey
from redis.asyncio import Redis

from shardline.bus import envelope, log, subjects
from shardline.bus.consumers import gateway_consumer
from shardline.bus.envelope import BadMessage, unb64
from shardline.bus.worker import Incoming, Worker
from shardline.core import commitment as cm
from shardline.core import protocol, sealing, shamir
from shardline.core.protocol import BadShare, RebuildError, Terms

LOOKUP_TTL_S = 600


def lookup_key(guid: str) -> str:
    return f"lookup:{guid}"


def open_share(
    terms: Terms, esk: PrivateKey, org: str, body: dict
) -> tuple[shamir.Share, cm.Opening]:
    """Open one org's sealed share with the lookup's ephemeral key and check it against the
    on-chain commitment; ``BadShare`` names the org and says what is wrong."""
    if body["transport_key"] != terms.transport_key.hex():
        raise BadShare(org, "the share is for another transport")
    try:
        inner = json.loads(sealing.unseal(unb64(body["sealed"]), esk))
        opening = cm.Opening.from_dict(inner["opening"])
        share = unb64(inner["share"])
    except (sealing.SealError, ValueError, KeyError, TypeError) as exc:
        raise BadShare(org, f"the sealed share does not open: {exc}") from None
    return protocol.check_share(terms, org, body["x"], share, opening), opening


class Combiner(Worker):
    kind = "combiner"
    publishes = ("lookup.result", "lookup.progress")

    def __init__(
        self, *args, redis: Redis, gateway_id: str, share_cost_s: float = 0.0, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.redis = redis
        self.gateway_id = gateway_id
        # Benchmarks only: a blocking pause per share, standing in for CPU-bound work.
        self.share_cost_s = share_cost_s

    async def setup(self) -> None:
        self.consume(
            gateway_consumer("combiner"),
            self.on_share,
        )

    async def on_share(self, m: Incoming) -> None:
        if self.share_cost_s:
            time.sleep(self.share_cost_s)  # noqa: ASYNC251 (blocks the loop on purpose, as CPU work would)
        b = m.body
        guid, org = b["guid"], b["org"]
        if m.env.sender != org:
            # not the named org's doing: a dead letter naming the signer, no blame on the org
            raise BadMessage(f"{m.env.sender} signed a share naming {org}")
        state = await self.redis.hgetall(lookup_key(guid))
        if not state:
            log.warn("share.unknown_lookup", guid=guid, org=org, trace_id=m.env.trace_id)
            return
        if state.get(b"done"):
            await self._progress(guid, "late_share", org, "", m.env.trace_id)
            return
        terms = Terms(
            transport_key=bytes.fromhex(state[b"transport_key"].decode()),
            threshold=int(state[b"threshold"]),
            org_ids=tuple(json.loads(state[b"org_ids"])),
            commitment=bytes.fromhex(state[b"commitment"].decode()),
        )
        try:
            esk = PrivateKey(bytes.fromhex(state[b"esk"].decode()))
            share, opening = open_share(terms, esk, org, b)
        except BadShare as exc:
            await self._bad(guid, org, exc.reason, m.env.trace_id)
            return
        key = lookup_key(guid)
        async with self.redis.pipeline(transaction=False) as p:
            p.hsetnx(f"{key}:good", org, share.to_bytes())
            p.expire(f"{key}:good", LOOKUP_TTL_S)
            p.hgetall(f"{key}:good")
            added, _, good = await p.execute()
        if added:
            await self._progress(guid, "share", org, "", m.env.trace_id)
        # "done" is written once the result is out, never before: a combiner killed in between
        # publishes it again on the share's redelivery (the Nats-Msg-Id keeps one in the stream)
        if len(good) < terms.threshold or await self.redis.hexists(key, "done"):
            return
        shares = sorted((shamir.Share.from_bytes(v) for v in good.values()), key=lambda s: s.x)
        used = [terms.org_ids[s.x - 1] for s in shares[: terms.threshold]]
        bad = [
            {"org": k.decode(), "reason": v.decode()}
            for k, v in (await self.redis.hgetall(f"{key}:bad")).items()
        ]
        try:
            sheet = protocol.rebuild(terms, shares, opening)
            result = {
                "guid": guid,
                "ok": True,
                "sheet": sheet.model_dump(mode="json"),
                "used_orgs": used,
                "bad_orgs": bad,
            }
        except (RebuildError, shamir.ShamirError, ValueError) as exc:
            result = {
                "guid": guid,
                "ok": False,
                "used_orgs": used,
                "bad_orgs": bad,
                "error": f"the shares of {', '.join(used)} did not rebuild the committed sheet: {exc}",
            }
        gateway = await self.directory.resolve(self.gateway_id)
        env = envelope.make(
            "lookup.result",
            result,
            self.keys,
            seal_to=(self.gateway_id, gateway.sealing_pk),
            trace_id=m.env.trace_id,
        )
        await self.publish(subjects.LOOKUP_RESULT.format(guid=guid), env, msg_id=f"result:{guid}")
        await self.redis.hset(key, "done", "1")
        log.event(
            "lookup.combined",
            guid=guid,
            ok=result["ok"],
            used=used,
            bad=[x["org"] for x in bad],
            trace_id=m.env.trace_id,
        )

    async def _bad(self, guid: str, org: str, reason: str, trace_id: str) -> None:
        key = f"{lookup_key(guid)}:bad"
        async with self.redis.pipeline(transaction=False) as p:
            p.hset(key, org, reason)
            p.expire(key, LOOKUP_TTL_S)
            await p.execute()
        log.warn("share.rejected", guid=guid, org=org, reason=reason, trace_id=trace_id)
        await self._progress(guid, "bad_share", org, reason, trace_id)

    async def _progress(self, guid: str, stage: str, org: str, detail: str, trace_id: str) -> None:
        env = envelope.make(
            "lookup.progress",
            {"guid": guid, "stage": stage, "org": org, "detail": detail[:500]},
            self.keys,
            trace_id=trace_id,
        )
        await self.publish(subjects.LOOKUP_PROGRESS.format(guid=guid), env, durable=False)
