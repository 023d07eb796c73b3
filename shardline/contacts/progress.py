"""Publish a dedup job's progress on the bus from synchronous code (a Celery task)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from shardline.bus import envelope, subjects
from shardline.bus.connect import connect
from shardline.core.keys import ParticipantKeys


class ProgressPublisher:
    """Signed ``dedup.progress`` messages on ``dedup.job.<id>.progress``, at most every
    ``every_s`` seconds except for stage changes and the end."""

    def __init__(
        self, nats_url: str, keys: ParticipantKeys, org: str, job: str, every_s: float = 0.2
    ):
        self.keys, self.org, self.job, self.every_s = keys, org, job, every_s
        self.loop = asyncio.new_event_loop()
        self.nc = self.loop.run_until_complete(connect(nats_url, f"dedup.{org}.{job[:8]}"))
        self._last = 0.0
        self._stage = ""

    def send(self, state: str, stage: str, done: int, total: int, **extra) -> None:
        now = time.monotonic()
        if stage == self._stage and state == "running" and now - self._last < self.every_s:
            return
        self._last, self._stage = now, stage
        body = {
            "job": self.job,
            "org": self.org,
            "state": state,
            "stage": stage,
            "done": done,
            "total": total,
            **extra,
        }
        env = envelope.make("dedup.progress", body, self.keys, trace_id=self.job)
        subject = subjects.DEDUP_PROGRESS.format(job=self.job)
        self.loop.run_until_complete(self._publish(subject, env.to_bytes()))

    async def _publish(self, subject: str, data: bytes) -> None:
        await self.nc.publish(subject, data)
        await self.nc.flush(timeout=2)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self.nc.drain())
        self.loop.close()
