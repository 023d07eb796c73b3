"""Refusing replayed envelopes: a freshness window on ``sent_at`` and a set of ids already seen.

Whoever can publish on a subject can also publish an old, validly signed envelope again. Two checks
stop that, both made after the signature is verified:

- Freshness. ``sent_at`` (signed) is compared with the time the bus stored the message (the
  JetStream timestamp of the stream copy, not the time a worker reads it): an envelope stored more
  than ``window_s`` after it was signed, or dated more than ``skew_s`` into the future, is refused.
  So a backlog that a worker reads hours late (a node that was down) is still accepted, while an
  old envelope published again now is not.
- Uniqueness. Within the window, each envelope id may reach a worker from one stream position
  only. A JetStream redelivery (same stream and sequence, after a nak or a crash) is the same
  message and passes; the same envelope stored again under another sequence is a replay.

The seen-id set lives in the worker's memory and is trimmed to the window, so it is bounded by
the message rate times the window. Memory alone is forgotten on a restart, so a worker given a
durable store (``durable``, shardline/bus/seen_ids.py: an org node's database, the combiner's
Redis) also records each new id there and asks it first: an envelope handled before a restart,
or by another instance on the same consumer, is still refused when replayed within the window.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from shardline.bus.envelope import BadMessage, Envelope
from shardline.bus.seen_ids import SeenIds, position_key

WINDOW_S = 120.0
SKEW_S = 30.0
MAX_SEEN = 500_000


class ReplayGuard:
    def __init__(
        self,
        window_s: float = WINDOW_S,
        skew_s: float = SKEW_S,
        clock: Callable[[], float] = time.time,
        max_seen: int = MAX_SEEN,
        durable: SeenIds | None = None,
        scope: str = "worker",
    ) -> None:
        self.window_s = window_s
        self.skew_s = skew_s
        self.clock = clock
        self.max_seen = max_seen
        # envelope id -> (where it was stored, as position_key, sent_at), oldest arrival first
        self._seen: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.durable = durable
        self.scope = scope

    async def admit(self, env: Envelope, stored_at: float | None, position: object) -> None:
        """``check``, and with a durable store, the same check against what it remembers.

        An id this process has not seen is recorded in the store; if the store already had it
        at another position (seen before a restart, or by another instance), it is a replay."""
        known = env.id in self._seen
        self.check(env, stored_at, position)
        if known or self.durable is None or position is None:
            return
        try:
            first = await self.durable.claim(self.scope, env.id, position, env.sent_at)
        except BaseException:
            self._seen.pop(env.id, None)  # not recorded: a redelivery asks the store again
            raise
        if first != position_key(position):
            self._seen[env.id] = (first, env.sent_at)  # a second copy here is refused at once
            raise BadMessage(
                f"replayed envelope {env.id} from {env.sender}: already received at {first}"
            )
        now = self.clock() if stored_at is None else stored_at
        await self.durable.trim(now - self.window_s - self.skew_s)

    def check(self, env: Envelope, stored_at: float | None, position: object) -> None:
        """Raise ``BadMessage`` for a stale, future-dated or replayed envelope; else remember it.

        ``stored_at``: when the bus stored the message (None: now); ``position``: what names that
        stored copy (stream and sequence), the same on a redelivery.
        """
        now = self.clock() if stored_at is None else stored_at
        age = now - env.sent_at
        if age > self.window_s:
            raise BadMessage(
                f"stale envelope {env.id} from {env.sender}: signed {age:.0f} s before the bus "
                f"took it, more than the {self.window_s:.0f} s allowed; a replay, or the "
                "sender's clock is wrong"
            )
        if -age > self.skew_s:
            raise BadMessage(
                f"envelope {env.id} from {env.sender} is dated {-age:.0f} s in the future: "
                "the sender's clock is wrong"
            )
        where = position_key(position)
        seen = self._seen.get(env.id)
        if seen is not None and seen[0] != where:
            raise BadMessage(
                f"replayed envelope {env.id} from {env.sender}: already received at {seen[0]}"
            )
        if seen is None:
            self._seen[env.id] = (where, env.sent_at)
        self._trim(now)

    def _trim(self, now: float) -> None:
        horizon = now - self.window_s - self.skew_s
        while self._seen:
            _, (_, sent_at) = next(iter(self._seen.items()))
            if sent_at >= horizon and len(self._seen) <= self.max_seen:
                break
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)


def stream_position(msg) -> tuple[float | None, object]:
    """(when the bus stored it, stream and sequence) of a JetStream message; (None, None) else."""
    try:
        meta = msg.metadata
    except Exception:
        return None, None
    return meta.timestamp.timestamp(), (meta.stream, meta.sequence.stream)
