"""The phone gateway (FastAPI): a responder asks for a transport's sheet and watches it arrive.

``POST /lookups`` checks the responder's API key, asks the chain (a dry run first, so that an
unauthorised requester gets the contract's reason as a 403 and no share leaves any node), makes a
guid and an ephemeral key, leaves the terms for the combiner in Redis, publishes the signed intent
and sends the Gatekeeper transaction. ``GET /lookups/{guid}`` waits for the sheet up to the
deadline; ``GET /lookups/{guid}/events`` streams progress as Server-Sent Events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from nats.aio.msg import Msg
from prometheus_client import Counter, Histogram, make_asgi_app
from pydantic import BaseModel, Field
from redis.asyncio import Redis
from sse_starlette.sse import EventSourceResponse

from shardline.bus import envelope, log, subjects
from shardline.bus.connect import connect
from shardline.bus.envelope import BadMessage
from shardline.bus.worker import traceparent
from shardline.config import Responder, StackConfig
from shardline.contracts import registry
from shardline.contracts.client import ChainError, ChainRevert
from shardline.core import ids, sealing
from shardline.core.keys import ParticipantKeys
from shardline.workers.combiner import LOOKUP_TTL_S, lookup_key
from shardline.workers.records_api import records_router

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


@dataclass
class LookupState:
    guid: str
    transport_id: str
    threshold: int
    org_ids: tuple[str, ...]
    requester: str
    started: float
    deadline: float
    events: list[dict[str, Any]] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)
    outcome: dict[str, Any] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def add(self, kind: str, **data: Any) -> None:
        self.events.append(
            {"event": kind, "at_ms": round(1000 * (time.monotonic() - self.started), 1), **data}
        )
        async with self.changed:
            self.changed.notify_all()

    async def finish(self, status: int, **data: Any) -> None:
        if self.outcome is not None:
            return
        self.outcome = {"status": status, **data}
        await self.add("result" if status == 200 else "error", status=status, **data)
        self.done.set()
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

    async def start(self) -> None:
        from shardline.runtime import account, chain_view

        self.view = await chain_view(self.cfg.chain_rpc, self.cfg)
        self.directory = await self.view.directory()
        self.gatekeeper = await registry.current_gatekeeper(self.view.chain, self.view.deployment)
        self.nc = await connect(self.cfg.nats_url, "gateway")
        self.js = self.nc.jetstream()
        self.redis = Redis.from_url(self.cfg.redis_url)
        for r in self.cfg.gateway.responders:
            self.accounts[r.name] = account(ParticipantKeys.load(r.key_file))
        await self.nc.subscribe("lookup.progress.*", cb=self._on_progress)
        await self.nc.subscribe("lookup.result.*", cb=self._on_result)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
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

    # ---- the lookup ---------------------------------------------------------------------
    async def begin(self, responder: Responder, transport_id: str) -> LookupState:
        try:
            key = ids.transport_key(transport_id)
        except ids.InvalidId as exc:
            raise HTTPException(422, str(exc)) from None
        acct = self.accounts[responder.name]
        found = await self.view.terms(key)
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
        guid = ids.new_guid()
        esk, epk = sealing.ephemeral_keypair()
        gk = self.view.chain.contract("Gatekeeper", self.gatekeeper)
        fn = gk.functions.requestLookup(guid, key, epk)
        try:
            await self.view.chain.simulate(acct.address, fn)
        except ChainRevert as exc:
            LOOKUPS.labels("http_403").inc()
            raise HTTPException(
                403, f"the Gatekeeper refused {responder.name}: {exc.reason}"
            ) from None
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
        )
        self.lookups[g] = state
        lk = lookup_key(g)
        await self.redis.hset(
            lk,
            mapping={
                "esk": bytes(esk).hex(),
                "transport_key": key.hex(),
                "transport_id": transport_id,
                "threshold": terms.threshold,
                "org_ids": json.dumps(list(terms.org_ids)),
                "commitment": terms.commitment.hex(),
            },
        )
        await self.redis.expire(lk, LOOKUP_TTL_S)
        intent = envelope.make(
            "lookup.intent",
            {
                "guid": g,
                "transport_key": key.hex(),
                "ephemeral_pk": epk.hex(),
                "requester": acct.address,
            },
            self.keys,
            trace_id=g,
        )
        await self.js.publish(
            subjects.LOOKUP_INTENT.format(guid=g),
            intent.to_bytes(),
            headers={"Nats-Msg-Id": f"intent:{g}", "traceparent": traceparent(g)},
        )
        await state.add(
            "accepted",
            transport_id=transport_id,
            threshold=terms.threshold,
            orgs=list(terms.org_ids),
        )
        self._spawn(self._send(state, acct, fn))
        self._spawn(self._deadline(state))
        log.event(
            "lookup.accepted", guid=g, transport=transport_id, responder=responder.name, trace_id=g
        )
        return state

    async def _send(self, state: LookupState, acct: LocalAccount, fn) -> None:
        try:
            tx = await self.view.chain.transact(acct, fn, gas=registry.LOOKUP_GAS, wait=True)
            await state.add("on_chain", tx=tx.tx_hash, block=tx.block_number)
        except (ChainRevert, ChainError) as exc:
            log.warn("lookup.chain_failed", guid=state.guid, error=str(exc), trace_id=state.guid)
            await state.add("chain_failed", detail=str(exc))

    async def _deadline(self, state: LookupState) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.done.wait(), max(0.0, state.deadline - time.monotonic()))
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
        await asyncio.sleep(LOOKUP_TTL_S)
        self.lookups.pop(state.guid, None)

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


def create_app(cfg: StackConfig) -> FastAPI:
    gw = Gateway(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await gw.start()
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
    app.include_router(records_router(cfg))

    async def responder(
        authorization: str | None = Header(default=None),
        x_api_key: str | None = Header(default=None),
    ) -> Responder:
        presented = x_api_key or (authorization or "").removeprefix("Bearer ").strip()
        found = cfg.gateway.responder_for(presented) if presented else None
        if found is None:
            raise HTTPException(
                401,
                "missing or unknown API key: send `Authorization: Bearer <key>`",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return found

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "gatekeeper": gw.gatekeeper, "lookups_in_memory": len(gw.lookups)}

    @app.post(
        "/lookups",
        status_code=202,
        response_model=LookupAccepted,
        responses={
            401: {},
            403: {"description": "the Gatekeeper refused the requester"},
            404: {"description": "no such transport"},
        },
    )
    async def post_lookup(
        req: LookupRequest, who: Responder = Depends(responder)
    ) -> LookupAccepted:
        state = await gw.begin(who, req.transport_id)
        return LookupAccepted(
            guid=state.guid,
            transport_id=state.transport_id,
            events=f"/lookups/{state.guid}/events",
            result=f"/lookups/{state.guid}",
            deadline_s=cfg.gateway.deadline_s,
        )

    def _state(guid: str) -> LookupState:
        state = gw.lookups.get(guid)
        if state is None:
            raise HTTPException(
                404, f"no lookup {guid} on this gateway (they are kept {LOOKUP_TTL_S} s)"
            )
        return state

    @app.get(
        "/lookups/{guid}",
        responses={200: {}, 502: {}, 504: {"description": "fewer than t org nodes answered"}},
    )
    async def get_lookup(guid: str, _who: Responder = Depends(responder)) -> JSONResponse:
        state = _state(guid)
        await state.done.wait()
        assert state.outcome is not None
        return JSONResponse(
            {"guid": guid, "transport_id": state.transport_id, **state.outcome},
            status_code=state.outcome["status"],
        )

    @app.get("/lookups/{guid}/events")
    async def lookup_events(guid: str, request: Request, _who: Responder = Depends(responder)):
        state = _state(guid)

        async def stream():
            sent = 0
            while True:
                while sent < len(state.events):
                    ev = state.events[sent]
                    sent += 1
                    yield {"event": ev["event"], "data": json.dumps(ev)}
                if state.done.is_set() or await request.is_disconnected():
                    return
                async with state.changed:
                    if sent == len(state.events):
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(state.changed.wait(), 1.0)

        return EventSourceResponse(stream())

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
    )
