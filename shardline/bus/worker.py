"""The worker base: a handler is a small async function of one checked message.

The base pulls from durable JetStream consumers (a standing pull request per consumer, topped up
as messages are handled, so that a message costs one delivery and one ack), parses the envelope, checks the sender's
signature and the schema, opens a sealed body, and calls the handler. A handler that returns
has done its effect durably, so the message is acked. ``BadMessage`` is poison: the original goes
to ``dlq.<subject>`` with the reason and is terminated, never retried. ``Transient`` and any other
failure are nak'ed with backoff; after ``max_deliver`` attempts the message goes to the dead
letters too. Every worker answers the NATS service API (``$SRV.PING/INFO/STATS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, EndpointStats, Service, ServiceConfig
from prometheus_client import Counter, Histogram

from shardline import __version__, schemas
from shardline.bus import envelope, log, streams, subjects, telemetry
from shardline.bus.envelope import BadMessage, Envelope
from shardline.bus.replay import ReplayGuard, stream_position
from shardline.bus.telemetry import traceparent
from shardline.core.directory import Directory
from shardline.core.keys import ParticipantKeys

PROCESSED = Counter(
    "shardline_messages_processed_total",
    "Messages a worker finished, by outcome",
    ["worker", "status"],
)
DURATION = Histogram(
    "shardline_message_processing_duration_seconds",
    "Time from delivery to ack of one message",
    ["worker"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
DEAD_LETTERS = Counter(
    "shardline_dead_letters_total", "Messages sent to the dead letters", ["worker"]
)


PULL_EXPIRES_S = 30.0
PULL_HEARTBEAT_S = 5.0


# The connections whose streams a worker has checked (one check serves all its workers).
_STREAMS_ENSURED: weakref.WeakSet = weakref.WeakSet()


class Transient(RuntimeError):
    """Not now, maybe later: the message is nak'ed with backoff and redelivered."""


@dataclass(frozen=True)
class Incoming:
    msg: Msg
    env: Envelope
    body: dict[str, Any]

    @property
    def subject(self) -> str:
        return self.msg.subject

    @property
    def attempt(self) -> int:
        return self.msg.metadata.num_delivered


Handler = Callable[[Incoming], Awaitable[None]]


class Worker:
    """Base of every pipeline step. Subclasses call ``consume`` in ``setup`` and implement handlers."""

    kind = "worker"

    def __init__(
        self,
        nc: Client,
        keys: ParticipantKeys,
        directory: Directory,
        *,
        instance: str,
        concurrency: int = 32,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=5)
        self.keys = keys
        self.directory = directory
        self.instance = instance
        self.concurrency = concurrency
        self.name = f"{self.kind}.{instance}"
        self._subs: list[tuple[streams.ConsumerSpec, Handler]] = []
        # plain subjects (no stream): (subject, message type, handler, queue group)
        self._plain: list[tuple[str, str, Handler, str]] = []
        self._plain_subs: list[Any] = []
        self._tasks: list[asyncio.Task] = []
        self._inflight: set[asyncio.Task] = set()
        self._service: Service | None = None
        self._stopping = asyncio.Event()
        self.counts = {"ok": 0, "retry": 0, "dead_letter": 0, "error": 0}
        self._busy_s = 0.0
        self.replay = ReplayGuard()  # stale and replayed envelopes are poison (bus/replay.py)

    # ---- for subclasses -------------------------------------------------------------
    publishes: tuple[str, ...] = ()  # the message types it sends, compiled at start with the rest

    def consume(self, spec: streams.ConsumerSpec, handler: Handler) -> None:
        self._subs.append((spec, handler))

    def listen(self, subject: str, message_type: str, handler: Handler, *, queue: str = "") -> None:
        """A plain NATS subject, in no stream (a request answered on its reply subject). Each
        message is checked as a consumer's is (schema, signature, replay, sealed body) and a bad
        one goes to the dead letters; nothing redelivers it, so a handler that fails is logged
        and counted, and the sender asks again if it must."""
        self._plain.append((subject, message_type, handler, queue))

    async def setup(self) -> None:
        """Declare consumers, plain subjects and endpoints here."""

    def endpoints(self) -> list[EndpointConfig]:
        return []

    async def publish(
        self, subject: str, env: Envelope, *, msg_id: str | None = None, durable: bool = True
    ) -> None:
        headers = {"Shardline-Type": env.type}
        if telemetry.enabled:
            headers["traceparent"] = traceparent(env.trace_id)
        if msg_id:
            headers["Nats-Msg-Id"] = msg_id
        if durable:
            await self.js.publish(subject, env.to_bytes(), headers=headers)
        else:
            await self.nc.publish(subject, env.to_bytes(), headers=headers)

    # ---- running --------------------------------------------------------------------
    async def start(self) -> None:
        # once per connection, not once per worker: a process runs several workers on one
        if self.nc not in _STREAMS_ENSURED:
            await streams.ensure_streams(self.js)
            _STREAMS_ENSURED.add(self.nc)
        await self.setup()
        schemas.warm(  # before the first message, not during it
            [
                *(s.message_type for s, _h in self._subs),
                *(p[1] for p in self._plain),
                *self.publishes,
            ]
        )
        for spec, handler in self._subs:
            await streams.ensure_consumer(self.js, spec)
            inbox = self.nc.new_inbox()
            sub = await self.nc.subscribe(inbox, pending_msgs_limit=-1, pending_bytes_limit=-1)
            self._tasks.append(asyncio.create_task(self._pull(sub, inbox, spec, handler)))
        for subject, message_type, handler, queue in self._plain:

            async def take(msg: Msg, message_type=message_type, handler=handler) -> None:
                await self._handle_plain(msg, message_type, handler)

            self._plain_subs.append(
                await self.nc.subscribe(
                    subject,
                    queue=queue,
                    cb=take,
                    pending_msgs_limit=-1,
                    pending_bytes_limit=-1,
                )
            )
        self._service = await add_service(
            self.nc,
            ServiceConfig(
                name=f"shardline-{self.kind}",
                version=__version__,
                description=f"shardline {self.kind} {self.instance}",
                metadata={"instance": self.instance, "participant": self.keys.participant_id},
                stats_handler=self._stats,
            ),
        )
        await self._service.add_endpoint(
            EndpointConfig(
                name="status",
                subject=f"shardline.status.{self.kind}.{self.instance}",
                handler=self._status,
            )
        )
        for ep in self.endpoints():
            await self._service.add_endpoint(ep)
        log.event("worker.started", worker=self.name, consumers=[s.durable for s, _ in self._subs])

    async def stop(self) -> None:
        self._stopping.set()
        for sub in self._plain_subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=5)
        if self._service is not None:
            with contextlib.suppress(Exception):
                await self._service.stop()
        log.event("worker.stopped", worker=self.name)

    async def _pull(self, sub, inbox: str, spec: streams.ConsumerSpec, handler: Handler) -> None:
        """One standing pull on ``spec``'s consumer, handling up to ``concurrency`` at a time.

        Messages asked for but not yet delivered (``asked``) plus those being handled never exceed
        twice the concurrency, so nothing waits long in this process while its ack timer runs.
        The server sends a heartbeat while idle; when two are missed (a restart, a reconnect)
        the pull is asked again.
        """
        api = f"$JS.API.CONSUMER.MSG.NEXT.{spec.stream}.{spec.durable}"
        window = 2 * self.concurrency
        slots = asyncio.Semaphore(self.concurrency)
        asked = 0
        handling = 0

        def done(_task: asyncio.Task) -> None:
            nonlocal handling
            handling -= 1
            slots.release()

        try:
            while not self._stopping.is_set():
                free = window - asked - handling
                if free >= window // 2:
                    request = {
                        "batch": free,
                        "expires": int(PULL_EXPIRES_S * 1e9),
                        "idle_heartbeat": int(PULL_HEARTBEAT_S * 1e9),
                    }
                    try:
                        await self.nc.publish(api, json.dumps(request).encode(), reply=inbox)
                        asked += free
                    except Exception as exc:  # connection trouble: the client reconnects
                        log.warn("worker.pull_failed", worker=self.name, error=str(exc))
                        await asyncio.sleep(0.5)
                        continue
                try:
                    msg = await sub.next_msg(timeout=2.5 * PULL_HEARTBEAT_S)
                except (NatsTimeout, TimeoutError):
                    asked = 0  # the server lost our pull: ask again
                    continue
                status = msg.headers.get("Status") if msg.headers else None
                if status:
                    if status == "408":  # the pull expired; what it did not deliver is void
                        pending = msg.headers.get("Nats-Pending-Messages")
                        asked = max(0, asked - int(pending)) if pending else 0
                    elif status not in ("100",):  # 409 and the like: start over, gently
                        log.warn(
                            "worker.pull_status",
                            worker=self.name,
                            consumer=spec.durable,
                            status=status,
                            description=msg.headers.get("Description", ""),
                        )
                        asked = 0
                        await asyncio.sleep(0.2)
                    continue
                asked = max(0, asked - 1)
                await slots.acquire()
                handling += 1
                task = asyncio.create_task(self._handle(msg, spec, handler))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
                task.add_done_callback(done)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _handle(self, msg: Msg, spec: streams.ConsumerSpec, handler: Handler) -> None:
        started = time.perf_counter()
        trace = ""
        parent = (
            telemetry.parse_traceparent(msg.headers.get("traceparent")) if msg.headers else None
        )
        if parent and telemetry.enabled:
            trace = parent[0]
            telemetry.bind(*parent)
        try:
            env = envelope.parse(msg.data, spec.message_type)
            if not trace:
                trace = env.trace_id
                if telemetry.enabled:
                    telemetry.bind(trace)
            await envelope.verify(env, self.directory)
            await self.replay.admit(env, *stream_position(msg))
            body = envelope.open_body(env, self.keys)
            await handler(Incoming(msg, env, body))
        except BadMessage as exc:
            await self.dead_letter(msg, str(exc), trace)
            await msg.term()
            status = "dead_letter"
        except Transient as exc:
            status = await self._retry(msg, spec, f"{exc}", trace)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(
                "worker.handler_failed",
                worker=self.name,
                subject=msg.subject,
                trace_id=trace,
                error=repr(exc),
            )
            status = await self._retry(msg, spec, f"handler failed: {exc!r}", trace)
        else:
            await msg.ack()
            status = "ok"
        self.record(status, time.perf_counter() - started)

    def record(self, status: str, elapsed: float) -> None:
        """Count one message handled: from a consumer, or outside one (a plain request, an
        event handed over in-process), so that the counts and metrics tell the whole story."""
        self._busy_s += elapsed
        self.counts[status] = self.counts.get(status, 0) + 1
        if telemetry.enabled:
            PROCESSED.labels(self.kind, status).inc()
            DURATION.labels(self.kind).observe(elapsed)

    async def _handle_plain(self, msg: Msg, message_type: str, handler: Handler) -> None:
        started = time.perf_counter()
        trace = ""
        try:
            env = envelope.parse(msg.data, message_type)
            trace = env.trace_id
            if telemetry.enabled:
                telemetry.bind(trace)
            await envelope.verify(env, self.directory)
            # No stream copy: every arrival of an id after the first is a replay, so each
            # arrival gets a position of its own, named by its kind ("intent:<random>").
            kind = message_type.rsplit(".", 1)[-1]
            await self.replay.admit(env, None, (kind, secrets.token_hex(8)))
            body = envelope.open_body(env, self.keys)
            await handler(Incoming(msg, env, body))
            status = "ok"
        except BadMessage as exc:
            await self.dead_letter(msg, str(exc), trace)
            status = "dead_letter"
        except Transient as exc:  # nothing redelivers it: the sender asks again
            log.warn(
                "worker.not_now",
                worker=self.name,
                subject=msg.subject,
                reason=str(exc),
                trace_id=trace,
            )
            status = "retry"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(
                "worker.handler_failed",
                worker=self.name,
                subject=msg.subject,
                trace_id=trace,
                error=repr(exc),
            )
            status = "error"
        self.record(status, time.perf_counter() - started)

    async def _retry(self, msg: Msg, spec: streams.ConsumerSpec, reason: str, trace: str) -> str:
        attempt = msg.metadata.num_delivered
        if attempt >= spec.max_deliver:
            await self.dead_letter(msg, f"gave up after {attempt} attempts: {reason}", trace)
            await msg.term()
            return "dead_letter"
        await msg.nak(delay=spec.delay(attempt))
        log.event(
            "worker.retry",
            worker=self.name,
            subject=msg.subject,
            attempt=attempt,
            reason=reason,
            trace_id=trace,
        )
        return "retry"

    async def dead_letter(self, msg: Msg, reason: str, trace: str = "") -> None:
        headers = {
            "Shardline-Reason": reason[:1000],
            "Shardline-Subject": msg.subject,
            "Shardline-Worker": self.name,
        }
        with contextlib.suppress(Exception):
            meta = msg.metadata
            # one dead letter per consumer and stored message: a worker that dies after
            # publishing it and refuses the redelivery adds no second copy, while each org's
            # consumer of a shared message (an intent) keeps its own refusal
            headers["Nats-Msg-Id"] = f"dlq:{meta.consumer}:{meta.stream}:{meta.sequence.stream}"
        if trace:
            headers["Shardline-Trace"] = trace
        await self.js.publish(subjects.dlq(msg.subject), msg.data, headers=headers)
        DEAD_LETTERS.labels(self.kind).inc()
        log.warn(
            "worker.dead_letter",
            worker=self.name,
            subject=msg.subject,
            reason=reason,
            trace_id=trace,
        )

    # ---- the service API ------------------------------------------------------------
    def _stats(self, endpoint: EndpointStats) -> dict:
        done = sum(self.counts.values())
        return {**self.counts, "average_ms": round(1000 * self._busy_s / done, 3) if done else 0.0}

    async def _status(self, req: Request) -> None:
        await req.respond(
            json.dumps(
                {"worker": self.name, "counts": self.counts, "inflight": len(self._inflight)}
            ).encode()
        )
