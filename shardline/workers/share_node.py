"""Share node, one per org: keeps this org's shares and serves one per verified lookup.

It stores a company's share only when it matches the transport's on-chain commitment, and
serves a share only on a LookupRequested event read by its own chain intake or, for an org whose
policy is audit-after, on the gateway's signed intent for an authorised requester. A share goes out
sealed to the request's ephemeral key, once per lookup, and is written to the served log that
`shardline audit` reads.

The intent is a plain NATS request, not a stream message: a lookup is interactive, and a lost
intent costs the responder a re-ask (the gateway asks the other org nodes after ``hedge_s``), not a
lost effect. A share served on it is written to the served log first and then sent straight back
to the gateway's reply subject, one hop. A chain-confirmed org node keeps that reply subject from
the intent and answers the chain event there the same way. A share served on a chain event with no
intent seen (the gateway's message lost, or the gateway gone) goes through the LOOKUPS stream with
its natural key, so that a crash between publish and log repeats nothing, and the combiner takes it.

The intent names the org nodes asked first and goes to each on its own subject. The others
leave the lookup to them, keeping its chain event in case the gateway names them in a later round
because the first were slow. A chain-confirmed org node not asked is sent the intent at once (its
chain event comes within milliseconds). An audit-after one is told only just before the gateway's
chain request goes out, in one notice (``lookup.left.<org>``) for every lookup of that transaction
it was not asked for, so that a lookup wakes only the org nodes it asks.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from nats.micro.request import Request
from nats.micro.service import EndpointConfig

from shardline.bus import envelope, log, subjects
from shardline.bus.consumers import org_consumer
from shardline.bus.envelope import BadMessage, b64, unb64
from shardline.bus.worker import Incoming, Transient, Worker
from shardline.config import AUDIT_AFTER, OrgNodeConfig
from shardline.core import commitment as cm
from shardline.core import sealing
from shardline.core.directory import GATEWAY
from shardline.core.protocol import Terms
from shardline.workers.store import OrgStore, ShareRow

# (transport key) -> on-chain terms plus the registering company's account, or None
TermsReader = Callable[[bytes], Awaitable[tuple[Terms, str, int, bool] | None]]
# requester address -> may it look up?
AuthReader = Callable[[str], Awaitable[bool]]
NOT_ASKED_KEPT = 20_000  # lookups whose intent named others: a later round comes within seconds
REPLIES_KEPT = 20_000
SENT_KEPT = 20_000  # shares sent on a reply subject, to send again if the gateway asks again
OPENED_KEPT = 50_000
INTENT_MAX_AGE_S = 60.0  # an older intent is not served: the gateway gave up on it long ago


def _trim(kept: OrderedDict, limit: int) -> None:
    """Forget the oldest entries past ``limit``."""
    while len(kept) > limit:
        kept.popitem(last=False)


class ShareNode(Worker):
    kind = "share-node"
    publishes = ("lookup.share",)

    def __init__(
        self,
        *args,
        org: OrgNodeConfig,
        store: OrgStore,
        terms: TermsReader,
        authorised: AuthReader,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.org = org
        self.store = store
        self.terms = terms
        self.authorised = authorised
        self._auth_cache: dict[str, tuple[bool, float]] = {}
        # lookups whose intent named other org nodes (newest last), with their chain event once
        # it came (served if the gateway names this org after all)
        self._not_asked: OrderedDict[str, dict | None] = OrderedDict()
        # lookups an intent named this org for (newest last)
        self._asked: OrderedDict[str, None] = OrderedDict()
        # chain-confirmed: the gateway's reply subject for a lookup it asked this org for
        self._reply_to: OrderedDict[str, str] = OrderedDict()
        # lookups being served in this process: the chain event and a late intent may meet
        self._serving: set[str] = set()
        # guid -> (ephemeral key, requester, trigger) of a share sent on a reply subject: a
        # gateway that asks again for the same lookup (its reply lost on the way) gets it again
        self._sent: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        # (transport key, version) -> (x, the share and opening as served), newest use last
        self._opened: OrderedDict[tuple[str, int], tuple[int, bytes]] = OrderedDict()

    async def setup(self) -> None:
        org = self.org.id
        self.consume(
            org_consumer(org, f"shares-{org}"),
            self.on_transport_share,
        )
        self.consume(
            org_consumer(org, f"lookups-{org}"),
            self.on_lookup_requested,
        )
        # The intents to this org only: one that names others reaches it only to say so. The
        # queue group keeps a restarted node's overlap with its predecessor to one taker; an
        # org runs one org-node process (docs/deploy.md, "Org nodes": several would each keep
        # their own "left to others" and reply subjects while the chain event reaches another).
        self.listen(
            subjects.LOOKUP_INTENT.format(org=org, guid="*"),
            "lookup.intent",
            self.on_intent,
            queue=f"share-node.{org}",
        )
        self.listen(
            subjects.LOOKUP_LEFT.format(org=org),
            "lookup.left",
            self.on_left,
            queue=f"share-node.{org}",
        )

    def leaves_to_others(self, event: dict) -> bool:
        """Was this lookup's intent addressed to other org nodes? Then its chain event is kept,
        to serve if the gateway names this org in a later round, and nothing is served now."""
        guid = event["guid"]
        if guid not in self._not_asked:
            return False
        self._not_asked[guid] = event
        return True

    def endpoints(self) -> list[EndpointConfig]:
        return [
            EndpointConfig(
                name="served",
                subject=subjects.AUDIT_SERVED.format(org=self.org.id),
                handler=self.on_served_query,
            )
        ]

    # ---- registration -----------------------------------------------------------------
    async def on_transport_share(self, m: Incoming) -> None:
        body = m.body
        if body["org"] != self.org.id:
            raise BadMessage(f"share for {body['org']} was sealed to {self.org.id}")
        key = bytes.fromhex(body["transport_key"])
        found = await self.terms(key)
        if found is None:
            raise Transient(f"transport {body['transport_id']} is not on chain yet")
        terms, company_account, version, _active = found
        if version < body["version"]:
            raise Transient(
                f"transport {body['transport_id']} version {body['version']} is not on chain yet"
            )
        if version > body["version"]:
            log.event(
                "share.outdated",
                org=self.org.id,
                transport=body["transport_id"],
                version=body["version"],
            )
            return
        sender = await self.directory.resolve(m.env.sender)
        if sender.account.lower() != company_account.lower():
            raise BadMessage(
                f"{m.env.sender} is not the company that registered {body['transport_id']}"
            )
        opening = cm.Opening.from_dict(body["opening"])
        if not (
            cm.opening_matches(key, terms.threshold, opening, terms.commitment)
            and cm.share_matches(key, opening, body["x"], unb64(body["share"]))
            and terms.org_ids.index(self.org.id) + 1 == body["x"]
        ):
            raise BadMessage(
                f"share for {body['transport_id']} does not match its on-chain commitment"
            )
        # Kept exactly as it arrived, sealed to this org: opened only to serve a lookup.
        sealed = m.env.to_bytes()
        self.store.put_share(
            body["transport_key"], body["transport_id"], version, m.env.sender, sealed
        )
        log.event(
            "share.stored",
            org=self.org.id,
            transport=body["transport_id"],
            version=version,
            trace_id=m.env.trace_id,
        )

    # ---- lookups --------------------------------------------------------------------
    async def on_lookup_requested(self, m: Incoming) -> None:
        if m.env.sender != self.org.id:
            raise BadMessage(
                f"lookup events are taken only from this org's own intake, not {m.env.sender}"
            )
        await self.serve_event(m.body, m.env.trace_id)

    async def serve_event(self, b: dict, trace_id: str, *, pushed: bool = False) -> None:
        """A LookupRequested event read by this org's own intake: serve it, unless it was served
        already (on the intent) or the gateway asked other org nodes for it.

        ``pushed``: the node's push of an unconfirmed log, which the intake found not served and
        not left to others with no await since, so neither is asked twice. Nor is a served row
        ever confirmed from a push (a reorg may take the log back): the reorg-safe reader
        confirms it from the same log.
        """
        if not pushed:
            if self.store.served(b["guid"]):
                self.store.mark_on_chain(b["guid"], b["block_number"], b["requester"])
                return
            if self.leaves_to_others(b):
                return  # the gateway chose other org nodes for this lookup
        await self.serve(
            b["guid"],
            b["transport_key"],
            b["ephemeral_pk"],
            b["requester"],
            "chain",
            trace_id,
            block=b["block_number"],
            version=b["transport_version"],
            reply=self._reply_to.pop(b["guid"], None),
        )

    async def serve_chain_event(self, b: dict, *, pushed: bool = False) -> bool:
        """``serve_event`` for this process's own chain intake, without the hop through the
        stream. False leaves it to the stream (``lookup.requested.<org>``), whose consumer
        retries: the share has not arrived yet, or serving failed."""
        started = time.perf_counter()
        try:
            await self.serve_event(b, b["guid"], pushed=pushed)
        except Exception as exc:
            log.event("lookup.served_later", org=self.org.id, guid=b["guid"], reason=str(exc))
            self.record("retry", time.perf_counter() - started)
            return False
        self.record("ok", time.perf_counter() - started)
        return True

    async def _from_gateway(self, env: envelope.Envelope) -> None:
        """Intents and notices come from gateways only: raise BadMessage for any other sender."""
        sender = await self.directory.resolve(env.sender)
        if sender.kind != GATEWAY:
            raise BadMessage(f"{env.sender} is not a registered gateway")

    async def on_left(self, m: Incoming) -> None:
        """A gateway's notice, just before a chain request goes out, of the lookups in it that
        it asked other org nodes for: their chain events are kept, to serve if a later round
        names this org, and nothing is served now. A lookup an intent named this org for stays
        asked."""
        await self._from_gateway(m.env)
        for guid in m.body["guids"]:
            self._left_to_others(guid)

    def _left_to_others(self, guid: str) -> None:
        if guid not in self._asked:
            self._not_asked.setdefault(guid, None)
            _trim(self._not_asked, NOT_ASKED_KEPT)

    async def on_intent(self, m: Incoming) -> None:
        env, reply = m.env, m.msg.reply or None
        await self._from_gateway(env)
        b = env.body
        guid = b["guid"]
        if "orgs" in b and self.org.id not in b["orgs"]:
            # The gateway asked others first and asks again if they are slow; the chain event
            # for this lookup, when it comes, is not a reason to serve either. A later round
            # that names only others (the slow ones' replacements) leaves this org asked.
            self._left_to_others(guid)
            return
        self._asked[guid] = None
        _trim(self._asked, NOT_ASKED_KEPT)
        skipped = self._not_asked.pop(guid, None)  # named now, after others were slow
        if time.time() - env.sent_at > INTENT_MAX_AGE_S:
            log.warn("intent.stale", org=self.org.id, guid=guid, trace_id=env.trace_id)
            return
        if self.store.served(guid):
            if reply is not None:
                await self._send_again(b, reply, env.trace_id)
            return
        if self.org.policy != AUDIT_AFTER:
            # This org waits for the chain event; its share then goes straight to this reply.
            if reply is not None:
                self._reply_to[guid] = reply
                _trim(self._reply_to, REPLIES_KEPT)
            if skipped is not None:  # the event came while others were asked: serve it now
                await self.serve_event(skipped, env.trace_id)
            return
        if not await self._authorised(b["requester"]):
            log.warn(
                "intent.refused",
                org=self.org.id,
                guid=guid,
                requester=b["requester"],
                reason="requester not authorised",
                trace_id=env.trace_id,
            )
            return
        await self.serve(
            guid,
            b["transport_key"],
            b["ephemeral_pk"],
            b["requester"],
            "intent",
            env.trace_id,
            reply=reply,
        )

    async def serve(
        self,
        guid: str,
        transport_key: str,
        ephemeral_pk: str,
        requester: str,
        trigger: str,
        trace_id: str,
        *,
        block: int | None = None,
        version: int | None = None,
        reply: str | None = None,
    ) -> None:
        if guid in self._serving:
            return  # being served already, on the chain event or a late intent
        self._serving.add(guid)
        try:
            row = self.store.get_share(transport_key)
            if row is None or (version is not None and row.version < version):
                found = await self.terms(bytes.fromhex(transport_key))
                if found is not None and self.org.id in found[0].org_ids:
                    raise Transient(
                        f"share for transport key {transport_key[:12]} has not arrived yet"
                    )
                log.warn(
                    "share.none",
                    org=self.org.id,
                    guid=guid,
                    transport_key=transport_key,
                    trace_id=trace_id,
                )
                return
            env = self._share(guid, transport_key, row, ephemeral_pk, trigger, trace_id)
            if reply is not None:
                # Logged before it goes: nothing redelivers an intent, so a crash in between
                # leaves a served row for a share never sent (the audit over-reports), never the
                # reverse.
                if not self.store.record_served(guid, transport_key, requester, trigger, block):
                    return
                await self.nc.publish(reply, env.to_bytes())
                self._sent[guid] = (ephemeral_pk, requester, trigger)
                _trim(self._sent, SENT_KEPT)
            else:
                # Published before it is logged: a crash in between is redelivered, and the
                # stream drops the second copy by its natural key, so the share goes out once.
                await self.publish(
                    subjects.LOOKUP_SHARE.format(guid=guid),
                    env,
                    msg_id=f"share:{guid}:{self.org.id}",
                )
                self.store.record_served(guid, transport_key, requester, trigger, block)
            log.event(
                "share.served",
                org=self.org.id,
                guid=guid,
                transport=row.transport_id,
                trigger=trigger,
                requester=requester,
                trace_id=trace_id,
            )
        finally:
            self._serving.discard(guid)

    def _share(
        self,
        guid: str,
        transport_key: str,
        row: ShareRow,
        ephemeral_pk: str,
        trigger: str,
        trace_id: str,
    ) -> envelope.Envelope:
        """This org's share for a lookup, sealed to its ephemeral key and signed."""
        x, inner = self._opened_share(transport_key, row.version, row.sealed)
        body = {
            "guid": guid,
            "org": self.org.id,
            "x": x,
            "transport_key": transport_key,
            "trigger": trigger,
            "sealed": b64(sealing.seal(inner, bytes.fromhex(ephemeral_pk))),
        }
        return envelope.make("lookup.share", body, self.keys, trace_id=trace_id)

    async def _send_again(self, intent: dict, reply: str, trace_id: str) -> None:
        """The share this node sent for a lookup, again, to the gateway that asks again for the
        same lookup (same ephemeral key and requester): its first reply was lost on the way (a
        bus restart drops what is in flight), and nothing else would send it, since the served
        row stops every later serve. Nothing new is disclosed and no row is added: the same
        share, to the same key, of a lookup already in the served log. Any other intent for a
        served guid gets nothing."""
        guid, transport_key = intent["guid"], intent["transport_key"]
        sent = self._sent.get(guid)
        if sent is None or sent[:2] != (intent["ephemeral_pk"], intent["requester"]):
            return
        row = self.store.get_share(transport_key)
        if row is None:
            return
        env = self._share(guid, transport_key, row, sent[0], sent[2], trace_id)
        await self.nc.publish(reply, env.to_bytes())
        log.event("share.sent_again", org=self.org.id, guid=guid, trace_id=trace_id)

    def _opened_share(self, transport_key: str, version: int, sealed: bytes) -> tuple[int, bytes]:
        """The share and opening as served, from the stored envelope sealed to this org: opened
        once per transport version and kept in this process, which holds the org's key anyway."""
        found = self._opened.get((transport_key, version))
        if found is None:
            stored = envelope.open_body(envelope.parse(sealed, "transport.share"), self.keys)
            inner = json.dumps({"share": stored["share"], "opening": stored["opening"]}).encode()
            found = self._opened[(transport_key, version)] = (stored["x"], inner)
            _trim(self._opened, OPENED_KEPT)
        else:
            self._opened.move_to_end((transport_key, version))
        return found

    async def _authorised(self, requester: str) -> bool:
        cached = self._auth_cache.get(requester)
        if cached and time.monotonic() - cached[1] < 5.0:
            return cached[0]
        ok = await self.authorised(requester)
        self._auth_cache[requester] = (ok, time.monotonic())
        return ok

    # ---- audit ----------------------------------------------------------------------
    async def on_served_query(self, req: Request) -> None:
        try:
            q = json.loads(req.data or b"{}")
            rows = self.store.served_since(float(q.get("since", 0)), q.get("until"))
        except (ValueError, TypeError) as exc:
            await req.respond_error("400", f"bad audit query: {exc}")
            return
        payload = {"org": self.org.id, "served": [r.__dict__ for r in rows]}
        # Signed, so that the auditor can trust the list came from this org.
        signed = sealing.sign(envelope.canonical(payload), self.keys.signing_key)
        await req.respond(json.dumps({**payload, "sig": b64(signed)}).encode())
