"""A Redis client that rides out a redis-server restart.

``Redis.from_url`` builds a connection pool whose connections retry nothing (redis-py gives its
default retries only to a client that builds its own pool). After a restart every pooled
connection is dead, so the first command on each fails with "Connection closed by server". This
client retries on connection errors, reconnecting, with a short exponential backoff that covers a
restart of a second or two.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

RETRIES = 8  # at most about 2.6 s of backoff in all (full jitter: about half on average)
BACKOFF_BASE_S = 0.02
BACKOFF_CAP_S = 0.5


def connect(url: str, **kwargs) -> Redis:
    return Redis.from_url(
        url,
        retry=Retry(ExponentialWithJitterBackoff(cap=BACKOFF_CAP_S, base=BACKOFF_BASE_S), RETRIES),
        **kwargs,
    )
