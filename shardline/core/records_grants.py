"""A records proxy's book of grants, as the chain's AccessGranted/AccessRevoked events tell them.

A grant's state only ever moves forward: each new grant has a higher version, and within a
version a grant can go from live to revoked but never back. So the book keeps, for each
(record, reader), the greatest (version, revoked) it has been told, whatever order the news
came in (an event read by the cursor, a direct read of the chain after a restart, an event
read again after a restart). After a chain reorganisation the proxy empties the book and
reads again: the one case where the chain's state can move back.

Whether the book is fresh enough to answer from is the proxy's question (it knows how far its
event reader has read and how far the chain has got); this module is plain data.
"""

from __future__ import annotations

from dataclasses import replace

from shardline.core.records import Grant


def _rank(g: Grant) -> tuple[int, bool]:
    return g.version, g.revoked


class GrantBook:
    def __init__(self) -> None:
        self._grants: dict[tuple[str, str], Grant] = {}

    def __len__(self) -> int:
        return len(self._grants)

    def get(self, record_id: str, reader: str) -> Grant | None:
        return self._grants.get((record_id, reader))

    def merge(self, g: Grant) -> Grant:
        """Take ``g`` if it is newer than what the book holds; returns what the book holds."""
        key = (g.record_id, g.reader)
        held = self._grants.get(key)
        if held is None or _rank(g) > _rank(held):
            self._grants[key] = g
            return g
        return held

    def revoked(self, record_id: str, reader: str, version: int) -> Grant:
        """An AccessRevoked event: grant ``version`` (and any older one) is revoked."""
        held = self._grants.get((record_id, reader))
        if held is not None and held.version == version:
            return self.merge(replace(held, revoked=True))
        # A revoke of a grant the book has not seen: nothing of it may be served.
        return self.merge(Grant(record_id, reader, 0, (), 0, version, True))

    def forget(self, record_id: str, reader: str) -> None:
        self._grants.pop((record_id, reader), None)

    def clear(self) -> None:
        self._grants.clear()
