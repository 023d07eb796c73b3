"""The phone gateway (FastAPI): a responder asks for a transport's sheet and watches it arrive.

``POST /lookups`` checks the responder's API key, asks the chain (a dry run first, so that an
unauthorised requester gets the contract's reason as a 403 and no share leaves any node), makes a
guid and an ephemeral key, publishes the signed intent naming the org nodes asked first, and sends
the Gatekeeper transaction. The shares that come back (replies to the intent, and the stream's
copies of shares served on a chain event with no intent seen) are opened and combined here at
once. A lookup still open after ``hedge_s`` gets the other org nodes asked and its terms left for
the combiner in Redis; the combiner finishes it from its durable consumer if this gateway missed
the shares (a reconnect), and whichever result comes first is the one served.
``GET /lookups/{guid}`` waits for the sheet up to the deadline; ``GET /lookups/{guid}/events``
streams progress as Server-Sent Events.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from nacl.public import PrivateKey
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from prometheus_client import Counter, Histogram, make_asgi_app
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from sse_starlette.sse import EventSourceResponse
from web3 import Web3

from shardline import gateways, redis_client, schemas
from shardline.bus import envelope, log, subjects, telemetry
from shardline.bus.connect import connect
from shardline.bus.envelope import BadMessage
from shardline.bus.worker import traceparent
from shardline.bus_access import gateway_bus
from shardline.config import AUDIT_AFTER, Responder, StackConfig
from shardline.contracts import registry
from shardline.contracts.artifacts import event_topic
from shardline.contracts.client import ChainError, ChainRevert, TxDropped
from shardline.contracts.cursor import RawLog
from shardline.contracts.watch import LogWatch
from shardline.core import bearer, ids, protocol, sealing, shamir
from shardline.core import commitment as cm
from shardline.core.keys import ParticipantKeys
from shardline.core.protocol import BadShare, RebuildError, Terms
from shardline.workers import webapp
from shardline.workers.combiner import LOOKUP_TTL_S, lookup_key, open_share
from shardline.workers.lookup_tx import LookupTxBatcher, Sent
from shardline.workers.ops_api import ops_router
from shardline.workers.records_api import records_router
from shardline.workers.responder_auth import ResponderAuth

# What the gateway keeps from the chain while its log subscription is live.
TERMS_KEPT = 100_000  # transports' terms, the most recently used (about 50 MB)
TRANSPORT_RETIRED = event_topic("TransportRegistry", "TransportRetired")
TERMS_IN_EVENT = ["bytes32", "uint8", "bytes32[]", "uint32"]  # TransportRegistered/Updated data
TRANSPORT_EVENTS = [
    event_topic("TransportRegistry", e)
    for e in ("TransportRegistered", "TransportUpdated", "TransportRetired")
]
ROLE_EVENTS = [event_topic("Gatekeeper", e) for e in ("RoleGranted", "RoleRevoked")]
LOOKUP_REQUESTED = event_topic("Gatekeeper", "LookupRequested")
GATEKEEPER_UPGRADED = event_topic("Governor", "GatekeeperUpgraded")
# After this long without its LookupRequested log, a lookup's receipt is fetched to say why.
CHAIN_CHECK_S = 5.0
# An org node that let a lookup down is asked last for this long, or until it answers again;
# then it is asked first again in turn (one that is still down costs one lookup a spare round).
SLOW_FOR_S = 10.0
# lookups named in one notice to an org node not asked: the schema's limit
LEFT_MAX = schemas.schema("lookup.left")["properties"]["guids"]["maxItems"]
GATEWAY_PUBLISHES = ("lookup.intent", "lookup.left")
SWEEP_S = 1.0  # finished lookups are forgotten within this of ``keep_finished_s``
MAX_CHAIN_ATTEMPTS = 3
# A chain request the node could not take or answer for (the node away, the account out of
# funds): tried again after each of these, seconds, while something needs it on chain.
CHAIN_RETRY_S = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)

LOOKUPS = Counter("shardline_lookups_total", "Lookups by outcome", ["outcome"])
LOOKUP_SECONDS = Histogram(
    "shardline_lookup_duration_seconds",
    "From request to sheet",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)


class LookupRequest(BaseModel):
    transport_id: str = Field(description="The id on the transport's QR label, e.g. TR-100001")


class LookupAccepted(BaseModel):
    guid: str
    transport_id: str
    events: str
    result: str
    deadline_s: float


def _kept_json(value: Any) -> bytes:
    """JSON to keep for a while, in a buffer of its own size: orjson's result keeps the 4 KiB
    it was written into (measured: 4,097 bytes held for a 42-byte result)."""
    return memoryview(orjson.dumps(value)).tobytes()


_NONE: Any = ()  # what a finished lookup holds instead of a list of its own
_FINISHED = asyncio.Event()  # what a finished lookup holds instead of an event of its own
_FINISHED.set()


@dataclass
class _Request:
    """A lookup's chain request, as it is sent again if the chain drops it."""

    state: LookupState
    batcher: LookupTxBatcher  # its responder account's
    guid: bytes
    key: bytes
    epk: bytes
    attempt: int = 1
    retries: int = 0  # of CHAIN_RETRY_S


@dataclass
class LookupState:
    guid: str
    transport_id: str
    threshold: int
    org_ids: tuple[str, ...]
    requester: str
    started: float
    deadline: float
    terms: Terms | None = None
    esk: PrivateKey | None = None
    good: dict[str, shamir.Share] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    chain_seen: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition | None = None  # made when an event stream follows it
    asked_later: tuple[str, ...] = ()  # org nodes a later round asked (a tuple: no object)
    marked: tuple[str, ...] = ()  # org nodes this lookup ranked last (silent when it asked more)
    done_callbacks: list[Callable[[], None]] = field(default_factory=list)
    # Once finished: the outcome and the events as JSON, and the status.
    status: int = 0
    outcome_json: bytes = b""
    events_json: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status != 0

    def event_count(self) -> int:
        return len(self.events_json) if self.finished else len(self.events)

    def event(self, i: int) -> tuple[str, bytes]:
        """The i-th event: its kind and its JSON."""
        if self.finished:
            return self.events_json[i]
        ev = self.events[i]
        return ev["event"], orjson.dumps(ev)

    def body(self, **head: Any) -> bytes:
        """``{**head, **outcome}`` as JSON, from the outcome serialized once."""
        return orjson.dumps(head)[:-1] + b"," + self.outcome_json[1:]

    async def add(self, kind: str, **data: Any) -> None:
        ev = {"event": kind, "at_ms": round(1000 * (time.monotonic() - self.started), 1), **data}
        if self.finished:  # on chain after the sheet (audit-after): kept for a later reader
            self.events_json.append((kind, _kept_json(ev)))
        else:
            self.events.append(ev)
        if self.changed is not None:
            async with self.changed:
                self.changed.notify_all()

    async def finish(self, status: int, **data: Any) -> None:
        if self.finished:
            return
        outcome = {"status": status, **data}
        for callback in self.done_callbacks:
            callback()
        # what only the combining needed: the ephemeral secret goes with it
        self.esk = None
        self.good.clear()
        await self.add("result" if status == 200 else "error", status=status, **data)
        # A finished lookup is kept ``keep_finished_s`` for a client that asks again, as bytes:
        # as dicts (the sheet, the events) it kept dozens of small objects that every full
        # garbage collection walks, and at 200 lookups/s each such collection stopped the
        # gateway for up to 0.5 s (docs/reliability.md, the soak).
        self.outcome_json = _kept_json(outcome)
        self.events_json = [(ev["event"], _kept_json(ev)) for ev in self.events]
        self.events = _NONE
        self.terms = None
        self.done_callbacks = _NONE
        self.status = status
        self.done.set()
        self.done = _FINISHED  # one set event for all that finished: one object less to walk
        LOOKUPS.labels("ok" if status == 200 else f"http_{status}").inc()
        if status == 200:
            LOOKUP_SECONDS.observe(time.monotonic() - self.started)


class Gateway:
    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self.keys = ParticipantKeys.load(cfg.gateway.key_file)
        self.lookups: dict[str, LookupState] = {}
        self.accounts: dict[str, LocalAccount] = {}
        self._tasks: set[asyncio.Task] = set()
        # Kept only while the log subscription is live; every (re)subscription empties them.
        self._terms: OrderedDict[bytes, tuple] = OrderedDict()  # newest use last
        self._authorised: set[str] = set()
        # org node -> when it let a lookup down: asked last for SLOW_FOR_S, or until it answers
        self._slow: dict[str, float] = {}
        # org node -> when a good share of it last came (any lookup): alive, if maybe busy;
        # and when the newest lookup it answered started (one answered after this lookup's
        # start, with this one still silent, skipped this one: its intent or share was lost)
        self._heard: dict[str, float] = {}
        self._answered_upto: dict[str, float] = {}
        # audit-after org node -> lookups it was not asked for, to tell it before their chain
        # request goes out (``_tell``), and the notices being sent
        self._left: dict[str, list[str]] = {}
        self._left_sent: asyncio.Future | None = None
        self._batchers: dict[tuple[str, float], LookupTxBatcher] = {}
        self._audit_after = {o.id: o.policy == AUDIT_AFTER for o in cfg.orgs}
        # a mined request's transaction -> its recheck, and the lookups it carries
        self._rechecks: dict[str, tuple[asyncio.Future, list[_Request]]] = {}
        self.in_flight = 0  # lookups taken on and not finished
        # (when, guid): lookups to forget, oldest first; one timer sweeps them (a timer per
        # lookup kept thousands of timer objects that every full garbage collection walks)
        self._forget: deque[tuple[float, str]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        from shardline.runtime import account, chain_view, ws_url

        # what it reads and sends, compiled before the first lookup rather than during it
        schemas.warm(["lookup.progress", "lookup.result", "lookup.share", *GATEWAY_PUBLISHES])
        self.view = await chain_view(self.cfg.chain_rpc, self.cfg)
        self.directory = await self.view.directory()
        self.gatekeeper = await registry.current_gatekeeper(self.view.chain, self.view.deployment)
        self.registry_address = self.view.deployment.transport_registry.lower()
        self.governor_address = self.view.deployment.governor.lower()
        self.watch = LogWatch(
            ws_url(self.cfg.chain_rpc),
            [*TRANSPORT_EVENTS, *ROLE_EVENTS, LOOKUP_REQUESTED, GATEKEEPER_UPGRADED],
            self._on_log,
            self._forget_chain_state,
        )
        self.watch.start()
        await self.watch.started()
        url, auth = gateway_bus(self.cfg)
        self.nc = await connect(url, "gateway", auth)
        self.js = self.nc.jetstream()
        self.redis = redis_client.connect(self.cfg.redis_url)  # reconnects after a restart
        for r in self.cfg.gateway.responders:
            self.accounts[r.name] = account(ParticipantKeys.load(r.key_file))
        await self.nc.subscribe("lookup.progress.*", cb=self._on_progress)
        await self.nc.subscribe("lookup.result.*", cb=self._on_result)
        # Shares: replies to this gateway's intents, and every share the org nodes publish on
        # a chain event (the stream keeps those for the combiner; the gateway sees them live).
        # this process's reply subject (under its bus user's, which only it may read)
        self._replies = subjects.LOOKUP_REPLY.format(
            user=self.cfg.gateway.id, inbox=secrets.token_hex(8), guid=""
        ).rstrip(".")
        for subject in (f"{self._replies}.*", subjects.LOOKUP_SHARE.format(guid="*")):
            await self.nc.subscribe(
                subject, cb=self._on_share, pending_msgs_limit=-1, pending_bytes_limit=-1
            )

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for task, _waiting in list(self._rechecks.values()):
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for b in self._batchers.values():
            await b.stop()
        with contextlib.suppress(Exception):
            await self.watch.stop()
        with contextlib.suppress(Exception):
            await self.nc.drain()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        with contextlib.suppress(Exception):
            await self.view.chain.close()

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- what the chain says, kept while the subscription is live -----------------------
    def _forget_chain_state(self) -> None:
        self._terms.clear()
        self._authorised.clear()

    def _on_log(self, lg: RawLog) -> None:
        topic = "0x" + lg.topics[0].hex()
        if topic == LOOKUP_REQUESTED:
            state = self.lookups.get(lg.topics[1][:16].hex())
            if state is not None and not lg.removed and lg.address == self.gatekeeper.lower():
                state.chain_seen.set()
                self._spawn(
                    state.add("on_chain", tx="0x" + lg.tx_hash.hex(), block=lg.block_number)
                )
        elif topic in TRANSPORT_EVENTS and lg.address == self.registry_address:
            self._terms.pop(lg.topics[1], None)
            if topic != TRANSPORT_RETIRED and not lg.removed:
                # the event carries the terms: the first lookup of a new transport reads nothing
                commitment, threshold, org_ids, version = abi_decode(TERMS_IN_EVENT, lg.data)
                info = registry.transport_info(
                    commitment, threshold, org_ids, lg.topics[2][12:], version, True
                )
                terms = Terms(lg.topics[1], info.threshold, tuple(info.org_ids), info.commitment)
                self._keep_terms(lg.topics[1], (terms, info.company, info.version, info.active))
        elif topic in ROLE_EVENTS:
            self._authorised.clear()
        elif topic == GATEKEEPER_UPGRADED and lg.address == self.governor_address:
            self.gatekeeper = Web3.to_checksum_address(lg.topics[2][12:])
            self._authorised.clear()
            log.event("gateway.gatekeeper_upgraded", gatekeeper=self.gatekeeper)

    def _keep_terms(self, key: bytes, found: tuple) -> None:
        self._terms[key] = found
        while len(self._terms) > TERMS_KEPT:
            self._terms.popitem(last=False)

    async def terms(self, key: bytes) -> tuple | None:
        found = self._terms.get(key)
        if found is not None:
            self._terms.move_to_end(key)
        if found is None:
            live = self.watch.live
            found = await self.view.terms(key)
            if found is not None and live and self.watch.live:
                self._keep_terms(key, found)
        return found

    async def check_requester(self, responder: Responder, acct: LocalAccount, calldata: bytes):
        """Raise 403 with the Gatekeeper's own reason unless it would take this request."""
        if acct.address in self._authorised:
            return
        live = self.watch.live
        try:
            await self.view.chain.simulate_call(acct.address, self.gatekeeper, calldata)
        except ChainRevert as exc:
            LOOKUPS.labels("http_403").inc()
            raise HTTPException(
                403, f"the Gatekeeper refused {responder.name}: {exc.reason}"
            ) from None
        if live and self.watch.live:
            self._authorised.add(acct.address)

    def choose_servers(
        self, org_ids: tuple[str, ...], threshold: int
    ) -> tuple[list[str], list[str]]:
        """The org nodes asked first, and the spares asked after ``spare_after_s`` if the first
        have not given the sheet by then, those that let us down last. Asking only threshold
        first wakes one process fewer per lookup (on two shared cores, about a sixth of the org
        nodes' CPU per lookup; ``docs/design-notes.md``). Spares go with the first when
        ``spare_after_s`` is 0, and when an org node serves on its chain event
        (chain-confirmed): the time to its share is the chain's, which the spare cannot beat."""
        gw = self.cfg.gateway
        want = min(len(org_ids), threshold + gw.spare_shares)
        now = time.monotonic()
        ranked = sorted(
            org_ids,
            key=lambda o: (now - self._slow.get(o, -1e9) < SLOW_FOR_S, secrets.randbelow(1 << 16)),
        )
        if gw.spare_after_s <= 0 or not all(self._audit_after.get(o, False) for o in org_ids):
            return ranked[:want], []
        return ranked[:threshold], ranked[threshold:want]

    # ---- the lookup ---------------------------------------------------------------------
    async def begin(self, responder: Responder, transport_id: str) -> LookupState:
        try:
            key = ids.transport_key(transport_id)
        except ids.InvalidId as exc:
            raise HTTPException(422, str(exc)) from None
        acct = self.accounts[responder.name]
        found = await self.terms(key)
        if found is None:
            LOOKUPS.labels("http_404").inc()
            raise HTTPException(
                404, f"no transport {transport_id} is registered; check the id on the label"
            )
        terms, _company, _version, active = found
        if not active:
            LOOKUPS.labels("http_404").inc()
            raise HTTPException(
                404, f"transport {transport_id} is retired by its company; no sheet is served"
            )
        if self.in_flight >= self.cfg.gateway.max_in_flight:
            LOOKUPS.labels("http_503").inc()
            raise HTTPException(
                503,
                f"the gateway has {self.in_flight} lookups in flight, its limit: try again in a "
                "second, or through another gateway",
                headers={"Retry-After": "1"},
            )
        guid = ids.new_guid()
        esk, epk = sealing.ephemeral_keypair()
        calldata = registry.request_lookup_calldata(guid, key, epk)
        await self.check_requester(responder, acct, calldata)
        g = guid.hex()
        now = time.monotonic()
        state = LookupState(
            g,
            transport_id,
            terms.threshold,
            terms.org_ids,
            acct.address,
            now,
            now + self.cfg.gateway.deadline_s,
            terms=terms,
            esk=esk,
        )
        self.lookups[g] = state
        self.in_flight += 1
        state.done_callbacks.append(self._landed)
        first, spares = self.choose_servers(terms.org_ids, terms.threshold)
        # before the intent goes out: its shares may come back before the publish returns
        await state.add(
            "accepted",
            transport_id=transport_id,
            threshold=terms.threshold,
            orgs=list(terms.org_ids),
            asked=first,
        )
        # The org nodes not asked learn it: a chain-confirmed one from the same intent, at
        # once, as its chain event comes within milliseconds; an audit-after one from a notice
        # just before the chain request goes out (``_tell``), so that the lookup wakes only the
        # org nodes it asked.
        later = [o for o in terms.org_ids if o not in first and self._audit_after.get(o, False)]
        intent = self._intent(state, key, epk, first)
        try:
            await self._send_intent(
                state.guid, intent, [o for o in terms.org_ids if o not in later]
            )
        except Exception as exc:  # the bus is away (a restart): the chain request still goes out
            log.warn("lookup.ask_failed", guid=g, error=str(exc))
        tell = (lambda: self._tell(state, later)) if later else None
        # The chain request next: a chain-confirmed lookup waits for it.
        self._spawn(self._send(state, acct, guid, key, epk, tell))
        # Timers, not a task per lookup: most lookups are done long before either fires.
        loop = asyncio.get_running_loop()
        if spares:
            loop.call_later(
                self.cfg.gateway.spare_after_s, self._ask_spares, state, key, epk, first, spares
            )
        loop.call_later(self.cfg.gateway.hedge_s, self._hedge, state, key, epk, first)
        loop.call_later(self.cfg.gateway.deadline_s, self._expire, state)
        log.event(
            "lookup.accepted", guid=g, transport=transport_id, responder=responder.name, trace_id=g
        )
        return state

    def _intent(self, state: LookupState, key: bytes, epk: bytes, orgs: list[str]) -> bytes:
        """The signed intent naming ``orgs``: audit-after org nodes named serve on it;
        chain-confirmed ones serve on the chain event, straight back to this gateway's inbox;
        the others leave the lookup to those named."""
        return envelope.make(
            "lookup.intent",
            {
                "guid": state.guid,
                "transport_key": key.hex(),
                "ephemeral_pk": epk.hex(),
                "requester": state.requester,
                "orgs": orgs,
            },
            self.keys,
            trace_id=state.guid,
        ).to_bytes()

    async def _send_intent(self, guid: str, intent: bytes, to: list[str]) -> None:
        """To each org node in ``to``, on its own subject."""
        for org in to:
            await self._publish_intent(guid, org, intent)

    async def _publish_intent(self, guid: str, org: str, data: bytes) -> None:
        # A plain request: the org nodes answer on this gateway's inbox, one hop each way.
        await self.nc.publish(
            subjects.LOOKUP_INTENT.format(org=org, guid=guid),
            data,
            reply=f"{self._replies}.{guid}",
            headers={"traceparent": traceparent(guid)} if telemetry.enabled else None,
        )

    async def _tell(self, state: LookupState, orgs: list[str]) -> None:
        """The audit-after org nodes this lookup did not ask, told just before its chain request
        goes out, so that its chain event finds it left to others: in one notice per org node
        with the other lookups of the same transaction (the batcher runs their hooks together),
        where an intent per lookup cost each node a message to check per lookup. Not those a
        later round asked since."""
        for org in orgs:
            if org not in state.asked_later:
                self._left.setdefault(org, []).append(state.guid)
        if self._left_sent is None or self._left_sent.done():
            self._left_sent = asyncio.ensure_future(self._send_left())
        await asyncio.shield(self._left_sent)

    async def _send_left(self) -> None:
        """The notices for every lookup added since the last: each org node's alone, so that
        one that cannot go out (the bus away) costs no other org node its own. One that fails
        leaves the org node to defer those lookups' chain events to its reader, which serves
        them through the stream (a spare share, matched by the audit)."""
        await asyncio.sleep(0)  # the other lookups of the transaction add theirs first
        left, self._left = self._left, {}
        self._left_sent = None  # lookups added from now on go in a notice of their own
        for org, guids in left.items():
            for i in range(0, len(guids), LEFT_MAX):
                part = guids[i : i + LEFT_MAX]
                env = envelope.make("lookup.left", {"guids": part}, self.keys, trace_id=part[0])
                try:
                    await self.nc.publish(subjects.LOOKUP_LEFT.format(org=org), env.to_bytes())
                except Exception as exc:  # the bus away: the others still go
                    log.warn("lookup.left_not_sent", org=org, lookups=len(part), error=str(exc))

    def _landed(self) -> None:
        self.in_flight -= 1

    def _busy(self, state: LookupState, silent: list[str], within_s: float) -> bool:
        """Has every org node in ``silent`` answered another lookup within ``within_s``, and
        none that started after this one? Then it is busy working through the lookups before
        this one, not gone, and asking more org nodes of a loaded stack only loads it more.
        One that answered a later lookup skipped this one (its intent or reply was lost)."""
        now = time.monotonic()
        return bool(silent) and all(
            now - self._heard.get(o, -1e9) < within_s
            and self._answered_upto.get(o, -1e9) <= state.started
            for o in silent
        )

    def _slow_down(self, state: LookupState, orgs: list[str]) -> None:
        """Rank ``orgs`` last for ``SLOW_FOR_S``: they let this lookup down. One that answers
        it after all (its share late, after the sheet) is ranked as before again."""
        now = time.monotonic()
        for o in orgs:
            self._slow[o] = now
        state.marked += tuple(o for o in orgs if o not in state.marked)

    def _ask_spares(
        self, state: LookupState, key: bytes, epk: bytes, first: list[str], spares: list[str]
    ) -> None:
        """``spare_after_s`` after the first intent and still no sheet: a first org node is
        silent (down, or slow) or its share was bad, so the spares are asked too, and the
        silent ones are ranked last next time. Not while every silent one is busy with other
        lookups (a loaded stack, where all are slow alike): the hedge decides then."""
        if state.done.is_set():
            return
        silent = [o for o in first if o not in state.answered and o not in state.bad]
        short = len(state.good) + len(silent) < state.threshold  # a bad share among the first
        if not short and self._busy(state, silent, self.cfg.gateway.spare_after_s):
            return
        self._slow_down(state, silent)
        ask = [o for o in spares if o not in state.asked_later]
        if ask:
            self._spawn(self._ask_again(state, key, epk, ask))

    def _hedge(
        self,
        state: LookupState,
        key: bytes,
        epk: bytes,
        first: list[str],
        waited_s: float | None = None,
    ) -> None:
        """The first org nodes are slow: ask the others too, and the silent first ones again,
        and ask those last next time; and leave the combiner what it needs to finish the lookup
        from the stream.

        Not yet when every org node still silent on this lookup answered another one within the
        last ``hedge_s``: it is busy, not gone, and asking more org nodes of a loaded stack only
        loads it more (a soak at 200/s collapsed that way). Then it waits twice as long again,
        while at least half of the lookup's deadline would be left for the others."""
        if state.done.is_set():
            return
        waited_s = waited_s or self.cfg.gateway.hedge_s
        asked = first + [o for o in state.asked_later if o not in first]  # and the spares
        silent = [o for o in asked if o not in state.answered and o not in state.bad]
        if (
            self._busy(state, silent, self.cfg.gateway.hedge_s)
            and time.monotonic() + 2 * waited_s
            <= state.started + (state.deadline - state.started) / 2
        ):
            asyncio.get_running_loop().call_later(
                2 * waited_s, self._hedge, state, key, epk, first, 2 * waited_s
            )
            return
        self._spawn(self._keep_for_combiner(state, key))
        rest = [o for o in state.org_ids if o not in asked]
        if rest:
            self._slow_down(state, [o for o in asked if o not in state.answered])
        # The others, and the silent ones asked first again: one whose intent was lost serves
        # now, and one whose reply was lost (a bus restart drops what is in flight) sends the
        # same share again, where its served row would stop any later serve.
        again = rest + silent
        if again:
            self._spawn(self._ask_again(state, key, epk, again))

    async def _keep_for_combiner(self, state: LookupState, key: bytes) -> None:
        """The combiner's copy of the terms and key, for shares that only the LOOKUPS stream
        has (served on a chain event while this gateway was cut off from the bus). Written only
        for a lookup still open after ``hedge_s``: the rest are done from the replies, and a
        Redis write per lookup cost every lookup. Redis away (a restart) costs only that
        fallback."""
        if state.esk is None or state.terms is None:
            return
        lk = lookup_key(state.guid)
        try:
            async with self.redis.pipeline(transaction=False) as p:
                p.hset(
                    lk,
                    mapping={
                        "esk": bytes(state.esk).hex(),
                        "transport_key": key.hex(),
                        "transport_id": state.transport_id,
                        "threshold": state.threshold,
                        "org_ids": json.dumps(list(state.org_ids)),
                        "commitment": state.terms.commitment.hex(),
                    },
                )
                p.expire(lk, LOOKUP_TTL_S)
                await p.execute()
        except (RedisError, OSError) as exc:
            log.warn(
                "lookup.combiner_state_not_written",
                guid=state.guid,
                error=str(exc),
                trace_id=state.guid,
            )

    async def _ask_again(self, state: LookupState, key: bytes, epk: bytes, rest: list[str]) -> None:
        state.asked_later += tuple(rest)
        await state.add("asked", orgs=rest)
        try:
            await self._send_intent(state.guid, self._intent(state, key, epk, rest), rest)
        except Exception as exc:  # the bus is away: the deadline will say who answered
            log.warn("lookup.ask_failed", guid=state.guid, error=str(exc))

    def _expire(self, state: LookupState) -> None:
        """The deadline: a lookup without its sheet gets a 504 naming who did not answer; every
        lookup is forgotten ``keep_finished_s`` after its deadline."""
        if not state.done.is_set():
            self._spawn(self._time_out(state))
        self._forget.append((time.monotonic() + self.cfg.gateway.keep_finished_s, state.guid))
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)

    def _sweep(self) -> None:
        """Forget the lookups whose time is up; again in ``SWEEP_S`` while any are left."""
        now = time.monotonic()
        while self._forget and self._forget[0][0] <= now:
            self.lookups.pop(self._forget.popleft()[1], None)
        self._sweeper = (
            asyncio.get_running_loop().call_later(SWEEP_S, self._sweep) if self._forget else None
        )

    def batcher(self, acct: LocalAccount, linger_s: float) -> LookupTxBatcher:
        found = self._batchers.get((acct.address, linger_s))
        if found is None:
            found = LookupTxBatcher(
                self.view.chain, acct, lambda: self.gatekeeper, linger_s=linger_s
            )
            self._batchers[(acct.address, linger_s)] = found
        return found

    def linger_for(self, org_ids: tuple[str, ...]) -> float:
        """How long a lookup's request waits for others to share its transaction: longer when
        every org node of the transport serves on the intent, so nothing waits for the chain."""
        if all(self._audit_after.get(o, False) for o in org_ids):
            return max(self.cfg.gateway.tx_linger_s, self.cfg.gateway.audit_linger_s)
        return self.cfg.gateway.tx_linger_s

    async def _send(
        self,
        state: LookupState,
        acct: LocalAccount,
        guid: bytes,
        key: bytes,
        epk: bytes,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """The Gatekeeper request; its LookupRequested log marks the lookup on chain.
        ``before``: what must go out just before the transaction that carries it is sent.

        A request must stay on chain, or the audit would find shares served for nothing: a
        transaction that a reorg or a node restart dropped is sent again, alone, with the
        account's nonce counted afresh (a dropped nonce would hold up every later request).
        """
        batcher = self.batcher(acct, self.linger_for(state.org_ids))
        req = _Request(state, batcher, guid, key, epk)
        try:
            sent = await batcher.submit(guid, key, epk, before=before)
        except ChainError as exc:  # not taken: sent again alone, a little later
            try:
                sent = await self._send_alone(req, exc)
            except ChainError as final:
                await self._chain_failed(state, final)
                return
        log.event(
            "lookup.tx_sent",
            guid=state.guid,
            tx=sent.tx_hash,
            batch=sent.batch_size,
            at_ms=round(1000 * (time.monotonic() - state.started), 1),
            trace_id=state.guid,
        )
        await self._confirm(req, sent.tx_hash, sent.batch_size)

    async def _send_alone(self, req: _Request, failed: ChainError | None = None) -> Sent:
        """The request sent alone: at once, or after ``failed`` (the node did not take it) the
        next of ``CHAIN_RETRY_S`` later, and so on while it fails and something needs it on
        chain. A refusal (``ChainRevert``), or the last failure once that is spent, is raised."""
        while True:
            if failed is not None and (
                isinstance(failed, ChainRevert) or not await self._retry_after(req, failed)
            ):
                raise failed
            try:
                return await req.batcher.send_one(req.guid, req.key, req.epk)
            except ChainError as exc:
                failed = exc

    async def _retry_after(self, req: _Request, exc: ChainError) -> bool:
        """Wait the next of ``CHAIN_RETRY_S`` before asking the chain again after ``exc``;
        False when they are spent, or when nothing needs the request on chain any more: a
        chain-confirmed lookup that ended without it had nothing served for it."""
        state = req.state
        audited = any(self._audit_after.get(o, False) for o in state.org_ids)
        if req.retries >= len(CHAIN_RETRY_S) or (state.finished and not audited):
            return False
        delay = CHAIN_RETRY_S[req.retries]
        req.retries += 1
        log.warn(
            "lookup.chain_retry",
            guid=state.guid,
            error=str(exc),
            retry_in_s=delay,
            trace_id=state.guid,
        )
        await state.add("chain_retry", detail=str(exc), retry_in_s=delay)
        await asyncio.sleep(delay)
        self.view.chain.resync_nonce(req.batcher.account.address)
        return True

    async def _confirm(
        self, req: _Request, tx_hash: str, batch_size: int, *, dropped: bool = False
    ) -> None:
        """Until the request is seen on chain (sent again first if ``dropped``); from then on
        its batch's recheck watches it. No task per lookup waits for that recheck: at 200
        lookups/s the thousands of them waiting its ~30 s were most of what every full garbage
        collection walked."""
        state = req.state
        try:
            while True:
                if dropped:
                    sent = await self._resend(req, tx_hash)
                    tx_hash, batch_size, dropped = sent.tx_hash, sent.batch_size, False
                    req.attempt += 1
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CHAIN_CHECK_S):  # no task per wait, as wait_for
                        await state.chain_seen.wait()
                try:
                    if not state.chain_seen.is_set():  # no log (yet): the receipt says why
                        result = await self.view.chain.wait(tx_hash)
                        if not state.chain_seen.is_set():
                            state.chain_seen.set()
                            await state.add("on_chain", tx=tx_hash, block=result.block_number)
                    self._recheck_later(tx_hash, req)
                    return
                except ChainRevert:
                    if batch_size == 1 or req.attempt == MAX_CHAIN_ATTEMPTS:
                        raise
                    sent = await req.batcher.send_one(
                        req.guid, req.key, req.epk
                    )  # alone, it may pass
                    tx_hash, batch_size = sent.tx_hash, sent.batch_size
                    req.attempt += 1
                except TxDropped:
                    dropped = True
                except ChainError as exc:  # the node away while the receipt was asked for
                    if not await self._retry_after(req, exc):
                        raise
        except (ChainRevert, ChainError) as exc:
            await self._chain_failed(state, exc)

    async def _resend(self, req: _Request, dropped: str) -> Sent:
        """A request the chain dropped, sent again alone with the nonce counted afresh."""
        if req.attempt == MAX_CHAIN_ATTEMPTS:
            raise ChainError(
                f"the request for lookup {req.state.guid} was dropped from the chain "
                f"{req.attempt} times; check the node at {self.cfg.chain_rpc}"
            )
        req.state.chain_seen.clear()
        self.view.chain.resync_nonce(req.batcher.account.address)
        sent = await self._send_alone(req)  # the node away meanwhile: again, a little later
        log.warn(
            "lookup.tx_resent",
            guid=req.state.guid,
            dropped=dropped,
            tx=sent.tx_hash,
            trace_id=req.state.guid,
        )
        await req.state.add("chain_resent", dropped=dropped, tx=sent.tx_hash)
        return sent

    async def _chain_failed(self, state: LookupState, exc: Exception) -> None:
        log.warn("lookup.chain_failed", guid=state.guid, error=str(exc), trace_id=state.guid)
        await state.add("chain_failed", detail=str(exc))

    def _recheck_later(self, tx_hash: str, req: _Request) -> None:
        """Checked again after each of ``chain_recheck_s``: a reorg may drop a mined request.
        The lookups of one batch share one check."""
        found = self._rechecks.get(tx_hash)
        if found is None:
            waiting: list[_Request] = []
            task = asyncio.ensure_future(self._recheck(tx_hash, waiting))
            task.add_done_callback(lambda _t: self._rechecks.pop(tx_hash, None))
            found = self._rechecks[tx_hash] = (task, waiting)
        found[1].append(req)

    async def _recheck(self, tx_hash: str, waiting: list[_Request]) -> None:
        try:
            for delay in self.cfg.gateway.chain_recheck_s:
                await asyncio.sleep(delay)
                if not await self.view.chain.still_mined(tx_hash):
                    for req in waiting:
                        self._spawn(self._confirm(req, tx_hash, 1, dropped=True))
                    return
        except Exception as exc:  # the node away: the request is taken as it was seen, mined
            log.warn("lookup.chain_recheck_failed", tx=tx_hash, error=str(exc))

    async def _time_out(self, state: LookupState) -> None:
        if not state.done.is_set():
            missing = [o for o in state.org_ids if o not in state.answered and o not in state.bad]
            good = [o for o in state.answered if o not in state.bad]
            await state.finish(
                504,
                detail=(
                    f"not enough companies answered within {self.cfg.gateway.deadline_s:g} s: "
                    f"{len(good)} good share(s) of {state.threshold} needed; "
                    f"answered: {', '.join(good) or 'none'}; "
                    + (f"bad: {', '.join(state.bad)}; " if state.bad else "")
                    + f"no answer: {', '.join(missing) or 'none'}"
                ),
                answered=good,
                bad=state.bad,
                missing=missing,
                needed=state.threshold,
            )

    async def _on_share(self, msg: Msg) -> None:
        """Open and check one org's share for a lookup of this gateway; rebuild at t good ones.

        Shares of other gateways' lookups are left alone before any work. A share is held
        against its org only when that org signed it: one whose signature does not verify, or
        signed by another participant than the org it names, is logged and dropped, since any
        bus user may publish on ``lookup.share.*`` and guids are public on chain (blaming the org
        named would let anyone knock an honest org's share out of a lookup)."""
        # Both subjects end in the lookup's guid: a share of another gateway's lookup, or one
        # that comes after the sheet was rebuilt (the spare's, most often), is not even parsed.
        guid = msg.subject.rpartition(".")[2]
        state = self.lookups.get(guid)
        if state is None:
            return
        if state.finished:
            if state.marked:  # from an org node ranked last for being late: it is alive
                await self._late_share(state, msg)
            return
        if state.terms is None:
            return
        try:
            env = envelope.parse(msg.data, "lookup.share")
        except BadMessage as exc:
            log.warn("gateway.bad_share", subject=msg.subject, reason=str(exc))
            return
        b = env.body
        if b["guid"] != guid:
            log.warn("gateway.bad_share", subject=msg.subject, reason="for another lookup")
            return
        org = b["org"]
        if org in state.good or org in state.bad:
            return
        try:
            await self._signed_by_its_org(env)
        except BadMessage as exc:  # nobody's share: the org it names did not sign it
            log.warn("share.unattributed", guid=guid, org=org, reason=str(exc), trace_id=state.guid)
            return
        if state.esk is None:  # finished while this share's signature was checked
            return
        try:
            share, opening = open_share(state.terms, state.esk, org, b)
        except BadShare as exc:  # signed by its org: the org is answerable for it
            state.bad[org] = exc.reason
            log.warn(
                "share.rejected", guid=state.guid, org=org, reason=exc.reason, trace_id=state.guid
            )
            await state.add("bad_share", org=org, detail=exc.reason)
            return
        state.good[org] = share
        self._heard[org] = time.monotonic()
        self._answered_upto[org] = max(self._answered_upto.get(org, -1e9), state.started)
        if org not in state.answered:
            state.answered.append(org)
            self._slow.pop(org, None)
            await state.add("share", org=org)
        if len(state.good) >= state.threshold:
            await self._combine(state, opening)

    async def _signed_by_its_org(self, env: envelope.Envelope) -> None:
        """Raise BadMessage unless the share's signature verifies and is the org's it names."""
        await envelope.verify(env, self.directory)
        if env.sender != env.body["org"]:
            raise BadMessage(f"{env.sender} signed a share naming {env.body['org']}")

    async def _late_share(self, state: LookupState, msg: Msg) -> None:
        """A share after the sheet, of a lookup that ranked the org nodes silent at the time
        last: one of them answered after all, slow, not gone, and is ranked as before. Only
        its own signature says so (anyone may publish on the share subjects)."""
        try:
            env = envelope.parse(msg.data, "lookup.share")
            if env.body["org"] not in state.marked or env.body["guid"] != state.guid:
                return
            await self._signed_by_its_org(env)
        except BadMessage:
            return
        self._slow.pop(env.body["org"], None)

    async def _combine(self, state: LookupState, opening: cm.Opening) -> None:
        assert state.terms is not None
        shares = sorted(state.good.values(), key=lambda s: s.x)[: state.threshold]
        used = [state.terms.org_ids[s.x - 1] for s in shares]
        bad = [{"org": o, "reason": r} for o, r in state.bad.items()]
        try:
            sheet = protocol.rebuild(state.terms, shares, opening)
        except (RebuildError, shamir.ShamirError, ValueError) as exc:
            await state.finish(
                502,
                detail=f"the shares of {', '.join(used)} did not rebuild the committed sheet: {exc}",
                used_orgs=used,
                bad_orgs=bad,
            )
            return
        log.event("lookup.combined", guid=state.guid, ok=True, used=used, trace_id=state.guid)
        await state.finish(
            200,
            sheet=sheet.model_dump(mode="json"),
            used_orgs=used,
            bad_orgs=bad,
            elapsed_ms=round(1000 * (time.monotonic() - state.started), 1),
        )

    async def _on_progress(self, msg: Msg) -> None:
        try:
            env = envelope.parse(msg.data, "lookup.progress")
            await envelope.verify(env, self.directory)
        except BadMessage as exc:
            log.warn("gateway.bad_progress", subject=msg.subject, reason=str(exc))
            return
        state = self.lookups.get(env.body["guid"])
        if state is None:
            return
        org, stage = env.body["org"], env.body["stage"]
        if stage == "share" and org not in state.answered:
            state.answered.append(org)
            self._slow.pop(org, None)
            await state.add("share", org=org)
        elif stage == "bad_share":
            state.bad[org] = env.body.get("detail", "")
            await state.add("bad_share", org=org, detail=env.body.get("detail", ""))
        elif stage == "late_share":
            await state.add("late_share", org=org)

    async def _on_result(self, msg: Msg) -> None:
        try:
            env = envelope.parse(msg.data, "lookup.result")
            await envelope.verify(env, self.directory)
            body = envelope.open_body(env, self.keys)
        except BadMessage as exc:
            log.warn("gateway.bad_result", subject=msg.subject, reason=str(exc))
            return
        state = self.lookups.get(body["guid"])
        if state is None:
            return
        if body["ok"]:
            await state.finish(
                200,
                sheet=body["sheet"],
                used_orgs=body["used_orgs"],
                bad_orgs=body["bad_orgs"],
                elapsed_ms=round(1000 * (time.monotonic() - state.started), 1),
            )
        else:
            await state.finish(
                502,
                detail=body.get("error", "the shares did not rebuild the sheet"),
                used_orgs=body["used_orgs"],
                bad_orgs=body["bad_orgs"],
            )


def preferred_wait(prefer: str | None, limit_s: float = 30.0) -> float:
    """Seconds from a ``Prefer: wait=N`` header (RFC 7240), capped; 0 when absent or malformed."""
    for part in (prefer or "").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "wait":
            try:
                return max(0.0, min(float(value.strip().strip('"')), limit_s))
            except ValueError:
                return 0.0
    return 0.0


RESPONDER_HEADERS: list[dict] = [
    {
        "name": "Authorization",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "`Bearer <API key or token>`: the responder's API key, or a token "
        "from the configured issuer",
    },
    {
        "name": "X-API-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "the responder's API key, instead of `Authorization`",
    },
]
PREFER_HEADER: dict = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "`wait=N` (RFC 7240): answer with the outcome if it comes within N s, "
    "saving a second round trip on a weak signal; else 202 as without it",
}


def create_app(cfg: StackConfig) -> FastAPI:
    gw = Gateway(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await gw.start()
        # What was made to start (modules, schemas, the app) lives as long as the process: out
        # of the collector's way, so that a full collection walks only what lookups made.
        gc.collect()
        gc.freeze()
        app.state.gateway = gw
        yield
        await gw.stop()

    app = FastAPI(
        title="shardline gateway",
        version="0.1.0",
        description="Emergency lookup of hazardous-transport cargo sheets, assembled from the org nodes that are online.",
        lifespan=lifespan,
    )
    app.mount("/metrics", make_asgi_app())
    peers = gateways.urls(cfg)
    if len(peers) > 1:
        # A phone whose page came from another gateway of this deployment asks this one when
        # its own is down: requests from those pages are let through (keys travel in headers,
        # never cookies, so no credentials are allowed).
        app.add_middleware(
            CORSMiddleware,
            allow_origins=peers,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Prefer"],
            max_age=600,
        )

    @app.exception_handler(NatsError)
    async def bus_unavailable(_request: Request, exc: NatsError) -> JSONResponse:
        # e.g. while the client moves to another server of the cluster
        return JSONResponse(
            {
                "detail": f"the bus is unavailable ({type(exc).__name__}); try again in a few seconds"
            },
            status_code=503,
            headers={"Retry-After": "5"},
        )

    auth = ResponderAuth(cfg.gateway)

    async def responder(request: Request) -> Responder:
        """An API key, or a JWT from the configured token issuer, naming one responder.

        Read from the headers themselves: declared as ``Header`` parameters, FastAPI inspected
        their annotations again on every request (40-80 us of CPU a request, measured alone).
        The routes that take it document the headers (``RESPONDER_HEADERS``)."""
        h = request.headers
        return auth.identify(bearer.presented(h.get("authorization"), h.get("x-api-key")))

    @app.get("/healthz")
    async def healthz() -> dict:
        return {
            "status": "ok",
            "gatekeeper": gw.gatekeeper,
            "lookups_in_memory": len(gw.lookups),
            "lookups_in_flight": gw.in_flight,
        }

    @app.post(
        "/lookups",
        status_code=202,
        response_model=LookupAccepted,
        responses={
            200: {"description": "with `Prefer: wait=N`: the sheet, when it came within N s"},
            401: {},
            403: {"description": "the Gatekeeper refused the requester"},
            503: {"description": "the gateway is at its limit of lookups in flight: retry"},
            404: {"description": "no such transport"},
            502: {"description": "with `Prefer: wait=N`: the shares did not rebuild the sheet"},
            504: {"description": "with `Prefer: wait=N`: fewer than t org nodes answered"},
        },
        openapi_extra={"parameters": [*RESPONDER_HEADERS, PREFER_HEADER]},
    )
    async def post_lookup(
        req: LookupRequest, request: Request, who: Responder = Depends(responder)
    ) -> Any:
        state = await gw.begin(who, req.transport_id)
        links = {
            "events": f"/lookups/{state.guid}/events",
            "result": f"/lookups/{state.guid}",
        }
        wait_s = preferred_wait(request.headers.get("prefer"))
        if wait_s:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await state.done.wait()
            if state.finished:
                return Response(
                    state.body(guid=state.guid, transport_id=state.transport_id, **links),
                    status_code=state.status,
                    media_type="application/json",
                    headers={"Preference-Applied": f"wait={wait_s:g}"},
                )
        return LookupAccepted(
            guid=state.guid,
            transport_id=state.transport_id,
            deadline_s=cfg.gateway.deadline_s,
            **links,
        )

    def _state(guid: str) -> LookupState:
        state = gw.lookups.get(guid)
        if state is None:
            raise HTTPException(
                404,
                f"no lookup {guid} on this gateway (they are kept "
                f"{cfg.gateway.keep_finished_s:g} s after their deadline)",
            )
        return state

    @app.get(
        "/lookups/{guid}",
        responses={200: {}, 502: {}, 504: {"description": "fewer than t org nodes answered"}},
        openapi_extra={"parameters": RESPONDER_HEADERS},
    )
    async def get_lookup(guid: str, _who: Responder = Depends(responder)) -> Response:
        state = _state(guid)
        await state.done.wait()
        return Response(
            state.body(guid=guid, transport_id=state.transport_id),
            status_code=state.status,
            media_type="application/json",
        )

    @app.get("/lookups/{guid}/events", openapi_extra={"parameters": RESPONDER_HEADERS})
    async def lookup_events(guid: str, request: Request, _who: Responder = Depends(responder)):
        state = _state(guid)

        async def stream():
            sent = 0
            while True:
                while sent < state.event_count():
                    kind, data = state.event(sent)
                    sent += 1
                    yield {"event": kind, "data": data.decode()}
                if state.done.is_set() or await request.is_disconnected():
                    return
                if state.changed is None:
                    state.changed = asyncio.Condition()
                async with state.changed:
                    if sent == state.event_count():
                        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the
                        # cancellation of a stream whose client went away
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(1.0):
                                await state.changed.wait()

        return EventSourceResponse(stream())

    # After the lookups' routes: a request is matched against the routes in order, and a
    # responder's lookup should not be tried against every records and ops route first.
    app.include_router(records_router(cfg))
    app.include_router(ops_router(cfg))  # /ops: the operators' page and its JSON
    webapp.install(app, cfg)
    return app


def serve(cfg: StackConfig) -> None:
    import uvicorn

    log.setup()
    uvicorn.run(
        create_app(cfg),
        host=cfg.gateway.host,
        port=cfg.gateway.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )
