"""JetStream streams and durable pull consumers, created idempotently."""

from __future__ import annotations

from dataclasses import dataclass, field

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from shardline.bus import subjects

# Replicas of every stream this process creates or updates: 1 on a single server, 3 on a
# three-node cluster (the stack file's ``stream_replicas``; see ``set_replicas``).
_replicas = 1


def set_replicas(n: int) -> None:
    """Make the streams of this process R``n``; every process of a stack must agree."""
    global _replicas
    if not 1 <= n <= 5:
        raise ValueError(f"stream replicas must be between 1 and 5, not {n}")
    _replicas = n


def stream_configs(replicas: int | None = None) -> list[StreamConfig]:
    """Every stream of the subject catalogue, as JetStream is asked to hold it."""
    return [
        StreamConfig(
            name=name,
            subjects=spec["subjects"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=spec["max_age_s"],
            duplicate_window=subjects.DUPLICATE_WINDOW_S,
            num_replicas=replicas or _replicas,
        )
        for name, spec in subjects.STREAMS.items()
    ]


async def ensure_streams(js: JetStreamContext) -> None:
    for config in stream_configs():
        try:
            info = await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            # only a change is sent: org nodes may read stream info but not change streams
            if not _same(info.config, config):
                await js.update_stream(config)


def _same(have: StreamConfig, want: StreamConfig) -> bool:
    return (
        sorted(have.subjects or []) == sorted(want.subjects or [])
        and (have.max_age or 0) == (want.max_age or 0)
        and (have.duplicate_window or 0) == (want.duplicate_window or 0)
        and have.storage == want.storage
        and have.retention == want.retention
        and (have.num_replicas or 1) == (want.num_replicas or 1)
    )


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer and how its messages are retried."""

    stream: str
    durable: str
    filter_subjects: tuple[str, ...]
    message_type: str
    ack_wait_s: float = 5.0
    max_deliver: int = 8
    backoff_s: tuple[float, ...] = field(default=(0.05, 0.2, 0.5, 1.0, 2.0, 5.0))
    deliver_new: bool = False

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            filter_subjects=list(self.filter_subjects),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver,
            max_ack_pending=1024,
            deliver_policy=DeliverPolicy.NEW if self.deliver_new else DeliverPolicy.ALL,
        )

    def delay(self, attempt: int) -> float:
        return self.backoff_s[min(max(attempt - 1, 0), len(self.backoff_s) - 1)]


class ConsumerError(RuntimeError):
    """A worker's consumer is missing (and it may not create it) or is not the one it declares."""


def differences(spec: ConsumerSpec, have: ConsumerConfig) -> list[str]:
    """What the consumer on the server does otherwise than ``spec`` says (empty: the same)."""
    want = spec.config()
    filters = set(have.filter_subjects or []) | ({have.filter_subject} - {None, ""})
    out = []
    if filters != set(want.filter_subjects or []):
        out.append(f"filter {sorted(filters)}, not {sorted(want.filter_subjects or [])}")
    if abs((have.ack_wait or 0) - (want.ack_wait or 0)) > 1e-3:
        out.append(f"ack_wait {have.ack_wait} s, not {want.ack_wait} s")
    if (have.max_deliver or -1) != want.max_deliver:
        out.append(f"max_deliver {have.max_deliver}, not {want.max_deliver}")
    if have.deliver_policy != want.deliver_policy:
        out.append(f"deliver_policy {have.deliver_policy}, not {want.deliver_policy}")
    if have.ack_policy != want.ack_policy:
        out.append(f"ack_policy {have.ack_policy}, not {want.ack_policy}")
    return out


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> None:
    """Bind to ``spec``'s durable consumer; create it where this connection may (the operator).

    Org nodes and the gateway may not create consumers (shardline/bus/consumers.py): the
    operator made theirs. A consumer that differs from ``spec`` is an error, never changed here.
    """
    try:
        info = await js.consumer_info(spec.stream, spec.durable)
    except NotFoundError:
        info = None
    except Exception as exc:  # a permissions violation shows as a request that times out
        raise ConsumerError(
            f"cannot look up consumer {spec.durable} on stream {spec.stream} ({exc!r}): a bus "
            "user may bind only to its own consumers (shardline/bus/credentials.py), and the "
            "bus operator creates every consumer (`shardline up`, `shardline org add`; "
            "catalogue in shardline/bus/consumers.py)"
        ) from None
    if info is None:
        try:
            await js.add_consumer(spec.stream, spec.config())
        except Exception as exc:
            raise ConsumerError(
                f"consumer {spec.durable} on stream {spec.stream} does not exist and this bus "
                f"user may not create it ({exc!r}): the bus operator creates every consumer "
                "(`shardline up`, `shardline org add`; catalogue in shardline/bus/consumers.py)"
            ) from None
        return
    diff = differences(spec, info.config)
    if diff:
        raise ConsumerError(
            f"consumer {spec.durable} on stream {spec.stream} is not the one this worker "
            f"declares: {'; '.join(diff)}. Make shardline/bus/consumers.py and the worker agree; "
            "the operator then deletes the consumer and creates it again (`shardline up`)"
        )
