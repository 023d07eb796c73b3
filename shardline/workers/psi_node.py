"""An org node's private-matching worker: ECDH PSI rounds as signed messages on the bus.

Initiator I and responder R, each with a secret scalar for the session:
  offer  I -> R  H(k)^i for I's keys, shuffled (padded with random points to ``pad_to``)
  reply  R -> I  (H(k)^i)^r for each offered point, in I's order
  mine   R -> I  H(k')^r for R's keys, shuffled and padded alike
  final  I -> R  (H(k')^r)^i for each of R's points, in R's order
I compares reply with final's values and learns which of its own contacts are shared; R compares
final with its own doubly-blinded copy of the offer and learns the same for its contacts. Each
side sees only points; set sizes (padded) are the only other thing revealed. A peer that goes
silent past the deadline fails the session with a message naming it, and no result is kept:
results are written only when a session completes, in one transaction.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from nats.micro.request import Request
from nats.micro.service import EndpointConfig

from shardline.bus import envelope, log, streams, subjects
from shardline.bus.envelope import BadMessage
from shardline.bus.worker import Incoming, Worker
from shardline.contacts.store import ContactStore, to_record
from shardline.core import psi

PART = 4000  # points per message (the schema's limit)
WORK = 4000  # points per task handed to the process pool
DEFAULT_TIMEOUT_S = 600.0


def _pool() -> ProcessPoolExecutor:
    # forkserver: the workers never inherit the event loop or the bus connection
    return ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("forkserver"))


@dataclass
class Session:
    id: str
    peer: str
    role: str
    scalar: bytes = field(repr=False)
    deadline: float
    owners: list[int] = field(default_factory=list)  # contact id per element of my shuffled set
    sent: int = 0
    prototype: bool = False
    pad_to: int = 0
    parts: dict[str, dict[int, list[bytes]]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    offer_double: list[bytes] = field(default_factory=list, repr=False)  # responder only
    busy: bool = False

    def add(self, step: str, part: int, parts: int, count: int, points: list[bytes]) -> bool:
        got = self.parts.setdefault(step, {})
        got[part] = points
        self.totals[step] = parts
        return len(got) == parts and sum(len(v) for v in got.values()) == count

    def whole(self, step: str) -> list[bytes]:
        got = self.parts.pop(step)
        return [p for i in sorted(got) for p in got[i]]


class PsiNode(Worker):
    kind = "psi-node"

    def __init__(self, *args, org_id: str, store: ContactStore, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.org_id = org_id
        self.store = store
        self.sessions: dict[str, Session] = {}
        self.pool: ProcessPoolExecutor | None = None
        self._watch: asyncio.Task | None = None
        self.bytes_sent = 0

    async def setup(self) -> None:
        self.consume(
            streams.ConsumerSpec(
                stream="PSI",
                durable=f"psi-{self.org_id}",
                filter_subjects=(subjects.PSI_ROUND.format(session="*", org=self.org_id),),
                message_type="psi.round",
                ack_wait_s=30,
                deliver_new=True,
            ),
            self.on_round,
        )
        self._watch = asyncio.create_task(self._watchdog())

    def endpoints(self) -> list[EndpointConfig]:
        return [
            EndpointConfig(
                name="psi-start",
                subject=subjects.PSI_START.format(org=self.org_id),
                handler=self.on_start,
            )
        ]

    async def stop(self) -> None:
        if self._watch:
            self._watch.cancel()
        await super().stop()
        if self.pool:
            self.pool.shutdown(wait=False, cancel_futures=True)

    # ---- crypto in the process pool ---------------------------------------------------
    async def _map(self, fn, items: list, *args) -> list:
        if not items:
            return []
        if self.pool is None:
            self.pool = _pool()
        loop = asyncio.get_running_loop()
        chunks = [items[i : i + WORK] for i in range(0, len(items), WORK)]
        done = await asyncio.gather(
            *(loop.run_in_executor(self.pool, fn, c, *args) for c in chunks)
        )
        return [x for part in done for x in part]

    async def _my_points(self, s: Session) -> list[bytes]:
        contacts = await asyncio.to_thread(self.store.contacts, None, True)
        keyf = psi.prototype_key if s.prototype else psi.match_keys
        owners, keys = psi.flatten((c.id, keyf(to_record(c))) for c in contacts)
        order = psi.shuffled_order(len(keys))
        s.owners = [owners[i] for i in order]
        points = await self._map(psi.blind_keys, [keys[i] for i in order], s.scalar)
        pad = max(0, s.pad_to - len(points))
        if pad:
            points += [psi.random_point() for _ in range(pad)]
            s.owners += [-1] * pad
        # padding must not sit at the end, where it could be told apart: shuffle once more
        order = psi.shuffled_order(len(points))
        s.owners = [s.owners[i] for i in order]
        return [points[i] for i in order]

    async def _send(self, s: Session, step: str, points: list[bytes], **extra) -> None:
        parts = max(1, -(-len(points) // PART))
        for n in range(parts):
            chunk = points[n * PART : (n + 1) * PART]
            body = {
                "session": s.id,
                "from_org": self.org_id,
                "to_org": s.peer,
                "step": step,
                "part": n,
                "parts": parts,
                "count": len(points),
                "points": [base64.b64encode(p).decode() for p in chunk],
                **extra,
            }
            env = envelope.make("psi.round", body, self.keys, trace_id=s.id)
            self.bytes_sent += len(env.to_bytes())
            await self.publish(
                subjects.PSI_ROUND.format(session=s.id, org=s.peer),
                env,
                msg_id=f"psi:{s.id}:{self.org_id}:{step}:{n}",
            )

    # ---- starting ---------------------------------------------------------------------
    async def on_start(self, req: Request) -> None:
        try:
            env = envelope.parse(req.data, "psi.start")
            await envelope.verify(env, self.directory)
            if env.sender != self.org_id:
                raise BadMessage(
                    f"only {self.org_id} itself may start its matches, not {env.sender}"
                )
            body = env.body
            if body["peer"] == self.org_id:
                raise BadMessage("an org cannot match with itself")
            await self.directory.resolve(body["peer"])
        except BadMessage as exc:
            await req.respond(json.dumps({"error": str(exc)}).encode())
            return
        except Exception as exc:  # unknown peer and the like
            await req.respond(json.dumps({"error": f"cannot start: {exc}"}).encode())
            return
        s = Session(
            id=body["session"],
            peer=body["peer"],
            role="initiator",
            scalar=psi.new_scalar(),
            deadline=time.monotonic() + float(body.get("timeout_s", DEFAULT_TIMEOUT_S)),
            prototype=bool(body.get("prototype", False)),
            pad_to=int(body.get("pad_to", 0)),
        )
        self.sessions[s.id] = s
        await asyncio.to_thread(self.store.start_session, s.id, s.peer, s.role)
        await req.respond(json.dumps({"session": s.id}).encode())
        self._spawn(s, self._offer(s))

    def _spawn(self, s: Session, coro) -> None:
        async def run() -> None:
            s.busy = True
            try:
                await coro
            except Exception as exc:
                log.error("psi.failed", worker=self.name, session=s.id, error=repr(exc))
                await self._fail(
                    s, f"match {s.id} with {s.peer} failed here: {exc}", tell_peer=True
                )
            finally:
                s.busy = False

        task = asyncio.create_task(run())
        self._tasks.append(task)

    async def _offer(self, s: Session) -> None:
        points = await self._my_points(s)
        s.sent = len(points)
        await self._send(
            s, "offer", points, pad_to=s.pad_to, detail="prototype" if s.prototype else ""
        )

    # ---- rounds ---------------------------------------------------------------------------
    async def on_round(self, inc: Incoming) -> None:
        b = inc.body
        if b["to_org"] != self.org_id or inc.env.sender != b["from_org"]:
            raise BadMessage(f"round from {inc.env.sender} names {b['from_org']} -> {b['to_org']}")
        points = [base64.b64decode(p) for p in b["points"]]
        s = self.sessions.get(b["session"])
        if b["step"] == "abort":
            if s is not None:
                await self._fail(s, f"{b['from_org']} stopped the match: {b.get('detail', '')}")
            return
        if s is None:
            if b["step"] != "offer":
                return  # a session this node no longer knows (restarted): the peer will time out
            s = Session(
                id=b["session"],
                peer=b["from_org"],
                role="responder",
                scalar=psi.new_scalar(),
                deadline=time.monotonic() + DEFAULT_TIMEOUT_S,
                prototype=b.get("detail") == "prototype",
                pad_to=int(b.get("pad_to", 0)),
            )
            self.sessions[s.id] = s
            await asyncio.to_thread(self.store.start_session, s.id, s.peer, s.role)
        if s.peer != b["from_org"]:
            raise BadMessage(f"session {s.id} is with {s.peer}, not {b['from_org']}")
        if not s.add(b["step"], b["part"], b["parts"], b["count"], points):
            return
        if s.role == "responder" and b["step"] == "offer":
            self._spawn(s, self._answer(s, s.whole("offer")))
        elif s.role == "initiator" and b["step"] in ("reply", "mine"):
            if all(
                step in s.totals and len(s.parts.get(step, {})) == s.totals[step]
                for step in ("reply", "mine")
            ):
                self._spawn(s, self._conclude(s, s.whole("reply"), s.whole("mine")))
        elif s.role == "responder" and b["step"] == "final":
            self._spawn(s, self._finish_responder(s, s.whole("final")))

    async def _answer(self, s: Session, offer: list[bytes]) -> None:
        s.offer_double = await self._map(psi.reblind, offer, s.scalar)
        # the reply goes back in the initiator's order: only the initiator can place it
        await self._send(s, "reply", s.offer_double)
        mine = await self._my_points(s)
        s.sent = len(mine)
        await self._send(s, "mine", mine)
        s.parts.setdefault("final", {})

    async def _conclude(self, s: Session, reply: list[bytes], theirs: list[bytes]) -> None:
        if len(reply) != s.sent:
            raise BadMessage(f"{s.peer} answered {len(reply)} points for the {s.sent} offered")
        theirs_double = await self._map(psi.reblind, theirs, s.scalar)
        await self._send(s, "final", theirs_double)
        shared = psi.intersect(reply, s.owners, theirs_double)
        shared.pop(-1, None)
        await asyncio.to_thread(self.store.finish_session, s.id, shared, s.sent, len(theirs))
        self.sessions.pop(s.id, None)
        log.event("psi.done", worker=self.name, session=s.id, peer=s.peer, shared=len(shared))

    async def _finish_responder(self, s: Session, final: list[bytes]) -> None:
        if len(final) != s.sent:
            raise BadMessage(f"{s.peer} returned {len(final)} points for the {s.sent} sent")
        shared = psi.intersect(final, s.owners, s.offer_double)
        shared.pop(-1, None)
        await asyncio.to_thread(
            self.store.finish_session, s.id, shared, s.sent, len(s.offer_double)
        )
        self.sessions.pop(s.id, None)
        log.event("psi.done", worker=self.name, session=s.id, peer=s.peer, shared=len(shared))

    # ---- failure ------------------------------------------------------------------------------
    async def _fail(self, s: Session, detail: str, tell_peer: bool = False) -> None:
        self.sessions.pop(s.id, None)
        await asyncio.to_thread(self.store.fail_session, s.id, detail)
        log.warn("psi.session_failed", worker=self.name, session=s.id, detail=detail)
        if tell_peer:
            with contextlib.suppress(Exception):
                await self._send(s, "abort", [], detail=detail[:500])

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for s in list(self.sessions.values()):
                if now > s.deadline and not s.busy:
                    waiting = [st for st in ("offer", "reply", "mine", "final") if st in s.parts]
                    await self._fail(
                        s,
                        f"{s.peer} went silent: no complete {'/'.join(waiting) or 'answer'} "
                        f"before the deadline; no result is kept for match {s.id}",
                    )
