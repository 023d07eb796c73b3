"""An org node's private-matching worker: ECDH PSI rounds as signed messages on the bus.

Initiator I and responder R, each with a secret scalar for the session:
  offer  I -> R  H(k)^i for I's keys, shuffled (padded with random keys to ``pad_to``)
  reply  R -> I  tag((H(k)^i)^r) for each offered point, in I's order
  mine   R -> I  H(k')^r for R's keys, shuffled and padded alike
  final  I -> R  tag((H(k')^r)^i) for each of R's points, in R's order
I compares reply with final's values and learns which of its own contacts are shared; R compares
final with its own tags of the doubly-blinded offer and learns the same for its contacts. Each
side sees only points and tags of points (``psi.tag``: the second blinding is only compared for
equality); set sizes (padded) are the only other thing revealed.

The steps overlap: each part (``PART`` elements, one message) goes on the bus as soon as its
chunk is computed, the peer answers each part as it arrives, and R starts on its own set when
the first part of the offer comes in, so both nodes' cores are busy while the other still
computes. Elements travel packed: one base64 field of 32-byte points (or 12-byte tags) per
message. A peer that goes silent past the deadline fails the session with a message naming it,
and no result is kept: results are written only when a session completes, in one transaction.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
from dataclasses import dataclass, field

from nats.micro.request import Request
from nats.micro.service import EndpointConfig

from shardline.bus import envelope, log, subjects
from shardline.bus.consumers import org_consumer
from shardline.bus.envelope import BadMessage
from shardline.bus.worker import Incoming, Worker
from shardline.contacts.psi_pool import CHUNK, PsiPool
from shardline.contacts.store import ContactStore, to_record
from shardline.core import psi

PART = CHUNK  # elements per message: one pool chunk, so a part is sent the moment it is done
DEFAULT_TIMEOUT_S = 600.0
ITEM_BYTES = {
    "offer": psi.POINT_BYTES,
    "mine": psi.POINT_BYTES,
    "reply": psi.TAG_BYTES,
    "final": psi.TAG_BYTES,
    "abort": 1,
}


def round_body(
    session: str, from_org: str, to_org: str, step: str, part: int, count: int, items: list[bytes]
) -> dict:
    """One message's body: part ``part`` of a step of ``count`` elements, packed in one field."""
    return {
        "session": session,
        "from_org": from_org,
        "to_org": to_org,
        "step": step,
        "part": part,
        "parts": max(1, -(-count // PART)),
        "count": count,
        "blob": base64.b64encode(psi.pack(items, ITEM_BYTES[step])).decode(),
    }


@dataclass
class Session:
    id: str
    peer: str
    role: str
    scalar: bytes = field(repr=False)
    deadline: float
    owners: list[int] = field(default_factory=list)  # contact id per element of my shuffled set
    sent: int | None = None  # how many elements my own set has (known once it is built)
    prototype: bool = False
    pad_to: int = 0
    # what arrived or was computed, per step and part: the peer's points, and tags
    parts: dict[str, dict[int, list[bytes]]] = field(default_factory=dict, repr=False)
    totals: dict[str, tuple[int, int]] = field(default_factory=dict)  # step -> (parts, count)
    done_parts: dict[str, int] = field(default_factory=dict)  # answered parts per step
    mine_sent: bool = False
    busy: int = 0
    closed: bool = False

    def complete(self, step: str) -> bool:
        """Every part of ``step`` is in (and answered, for the steps we answer)."""
        if step not in self.totals:
            return False
        parts, count = self.totals[step]
        got = self.parts.get(step, {})
        return len(got) == parts and sum(len(v) for v in got.values()) == count

    def ordered(self, step: str) -> list[bytes]:
        got = self.parts.get(step, {})
        return [p for i in sorted(got) for p in got[i]]


class PsiNode(Worker):
    kind = "psi-node"

    def __init__(self, *args, org_id: str, store: ContactStore, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.org_id = org_id
        self.store = store
        self.sessions: dict[str, Session] = {}
        self.pool = PsiPool()
        self._watch: asyncio.Task | None = None
        self.bytes_sent = 0

    async def setup(self) -> None:
        self.consume(
            org_consumer(self.org_id, f"psi-{self.org_id}"),
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
        self.pool.shutdown()

    # ---- my own set, blinded and sent part by part -----------------------------------------
    async def _started_pool(self) -> PsiPool:
        """The pool's processes start with the first session and stay (about 30 MB each)."""
        await asyncio.to_thread(self.pool.start)
        return self.pool

    async def _send_mine(self, s: Session, step: str, **extra) -> None:
        pool = await self._started_pool()
        contacts = await asyncio.to_thread(self.store.contacts, None, True)
        keyf = psi.prototype_key if s.prototype else psi.match_keys
        owners, keys = psi.flatten((c.id, keyf(to_record(c))) for c in contacts)
        # padding: random keys, blinded like the real ones and shuffled in among them
        pad = max(0, s.pad_to - len(keys))
        keys += [secrets.token_bytes(32) for _ in range(pad)]
        owners += [-1] * pad
        order = psi.shuffled_order(len(keys))
        s.owners = [owners[i] for i in order]
        s.sent = len(keys)
        n = 0
        async for points in pool.stream(psi.blind_keys, [keys[i] for i in order], s.scalar):
            if s.closed:  # failed or aborted meanwhile: send no more
                return
            await self._send(s, step, n, s.sent, points, **extra)
            n += 1
        if not keys:
            await self._send(s, step, 0, 0, [], **extra)
        s.mine_sent = True
        await self._maybe_finish(s)

    async def _send(
        self, s: Session, step: str, part: int, count: int, items: list[bytes], **extra
    ) -> None:
        body = {**round_body(s.id, self.org_id, s.peer, step, part, count, items), **extra}
        env = envelope.make("psi.round", body, self.keys, trace_id=s.id)
        self.bytes_sent += len(env.to_bytes())
        await self.publish(
            subjects.PSI_ROUND.format(session=s.id, org=s.peer),
            env,
            msg_id=f"psi:{s.id}:{self.org_id}:{step}:{part}",
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
            s.busy += 1
            try:
                await coro
            except Exception as exc:
                if not s.closed:
                    log.error("psi.failed", worker=self.name, session=s.id, error=repr(exc))
                    await self._fail(
                        s, f"match {s.id} with {s.peer} failed here: {exc}", tell_peer=True
                    )
            finally:
                s.busy -= 1

        task = asyncio.create_task(run())
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(task)

    async def _offer(self, s: Session) -> None:
        await self._send_mine(
            s, "offer", pad_to=s.pad_to, detail="prototype" if s.prototype else ""
        )

    # ---- rounds ---------------------------------------------------------------------------
    async def on_round(self, inc: Incoming) -> None:
        b = inc.body
        if b["to_org"] != self.org_id or inc.env.sender != b["from_org"]:
            raise BadMessage(f"round from {inc.env.sender} names {b['from_org']} -> {b['to_org']}")
        s = self.sessions.get(b["session"])
        if b["step"] == "abort":
            if s is not None:
                await self._fail(s, f"{b['from_org']} stopped the match: {b.get('detail', '')}")
            return
        try:
            items = psi.unpack(envelope.unb64(b["blob"]), ITEM_BYTES[b["step"]])
        except (ValueError, psi.BadPoint) as exc:
            raise BadMessage(f"psi.round {b['step']} part {b['part']}: {exc}") from None
        if len(items) > PART or b["part"] >= b["parts"]:
            raise BadMessage(f"psi.round part {b['part']} of {b['parts']} has {len(items)} items")
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
            self.sessions[s.id] = s  # before any await: the next part finds it
            await asyncio.to_thread(self.store.start_session, s.id, s.peer, s.role)
            # my own set goes out while the offer is still coming in
            self._spawn(s, self._send_mine(s, "mine"))
        if s.peer != b["from_org"]:
            raise BadMessage(f"session {s.id} is with {s.peer}, not {b['from_org']}")
        expected = ("offer", "final") if s.role == "responder" else ("reply", "mine")
        if b["step"] not in expected:
            raise BadMessage(f"a {s.role} does not take {b['step']} rounds")
        step, part = b["step"], b["part"]
        if step in s.totals and s.totals[step] != (b["parts"], b["count"]):
            raise BadMessage(f"{step} part {part} disagrees on the step's size")
        s.totals[step] = (b["parts"], b["count"])
        if part in s.parts.get(step, {}) or part in s.parts.get(step + ".done", {}):
            return  # a redelivery of a part already taken
        if step in ("offer", "mine"):
            # answer this part now: the peer's points raised to my scalar, as tags
            s.parts.setdefault(step + ".done", {})[part] = []
            self._spawn(s, self._answer_part(s, step, part, items))
        else:
            s.parts.setdefault(step, {})[part] = items
            self._spawn(s, self._maybe_finish(s))

    async def _answer_part(self, s: Session, step: str, part: int, points: list[bytes]) -> None:
        pool = await self._started_pool()
        tags = await pool.map(psi.reblind_tags, points, s.scalar)
        if s.closed:
            return
        answer = "reply" if step == "offer" else "final"
        # the answer keeps the sender's order: only the sender can place it
        await self._send(s, answer, part, s.totals[step][1], tags)
        # my tags of the peer's set, to compare with what the peer returns for mine
        s.parts.setdefault(step, {})[part] = tags
        await self._maybe_finish(s)

    async def _maybe_finish(self, s: Session) -> None:
        """Conclude once my set is sent, every part of the peer's set is answered, and every
        part of the peer's answer to my set is in; exactly once."""
        if s.closed or not s.mine_sent:
            return
        theirs_step, answer_step = (
            ("mine", "reply") if s.role == "initiator" else ("offer", "final")
        )
        if not (s.complete(theirs_step) and s.complete(answer_step)):
            return
        answer = s.ordered(answer_step)
        if len(answer) != s.sent:
            raise BadMessage(f"{s.peer} answered {len(answer)} elements for the {s.sent} sent")
        s.closed = True
        theirs = s.ordered(theirs_step)
        shared = psi.intersect(answer, s.owners, theirs)
        shared.pop(-1, None)
        try:
            await asyncio.to_thread(self.store.finish_session, s.id, shared, s.sent, len(theirs))
        except Exception:
            s.closed = False  # not kept: the session fails (and says why) instead
            raise
        self.sessions.pop(s.id, None)
        log.event("psi.done", worker=self.name, session=s.id, peer=s.peer, shared=len(shared))

    # ---- failure ------------------------------------------------------------------------------
    async def _fail(self, s: Session, detail: str, tell_peer: bool = False) -> None:
        if s.closed:
            return
        s.closed = True
        self.sessions.pop(s.id, None)
        await asyncio.to_thread(self.store.fail_session, s.id, detail)
        log.warn("psi.session_failed", worker=self.name, session=s.id, detail=detail)
        if tell_peer:
            with contextlib.suppress(Exception):
                await self._send(s, "abort", 0, 0, [], detail=detail[:500])

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for s in list(self.sessions.values()):
                if now > s.deadline and not s.busy:
                    steps = ("mine", "reply") if s.role == "initiator" else ("offer", "final")
                    waiting = [st for st in steps if not s.complete(st)]
                    await self._fail(
                        s,
                        f"{s.peer} went silent: no complete {'/'.join(waiting) or 'answer'} "
                        f"before the deadline; no result is kept for match {s.id}",
                    )
