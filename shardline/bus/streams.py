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


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> None:
    try:
        await js.consumer_info(spec.stream, spec.durable)
    except NotFoundError:
        await js.add_consumer(spec.stream, spec.config())
