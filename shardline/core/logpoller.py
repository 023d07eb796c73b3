"""The reorg-safe chain cursor as a state machine (no I/O).

It remembers the hashes of the last ``depth`` blocks it has processed. Before it takes new blocks
it checks that they extend what it remembers; when they do not, the chain has reorganised, and it
finds the last common ancestor by comparing remembered hashes with the canonical ones, forgets
everything above it and starts again from there. Events are published with natural keys, so a
block read twice acts once; a block that was replaced is re-read, so no event is lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class BlockRef:
    number: int
    hash: bytes
    parent: bytes


class ReorgTooDeep(RuntimeError):
    """The chain changed below everything the cursor remembers: an operator must look."""


class Cursor:
    def __init__(self, start: int, remembered: Iterable[BlockRef] = (), depth: int = 256) -> None:
        """``start`` is the first block to read when nothing is remembered."""
        self.start = start
        self.depth = depth
        # kept in ascending order of number (a dict keeps its insertion order): blocks are only
        # added above the head and dropped from either end, so the head is the last entry and
        # the oldest the first, each found without a scan (this runs for every block)
        self._blocks: dict[int, BlockRef] = {
            b.number: b for b in sorted(remembered, key=lambda b: b.number)
        }
        self._trim()

    @property
    def head(self) -> BlockRef | None:
        return self._blocks[next(reversed(self._blocks))] if self._blocks else None

    @property
    def next_number(self) -> int:
        head = self.head
        return head.number + 1 if head else self.start

    def remembered(self) -> list[BlockRef]:
        return [self._blocks[n] for n in sorted(self._blocks)]

    def extends(self, headers: list[BlockRef]) -> bool:
        """True when ``headers`` (consecutive, ascending) continue the remembered chain."""
        prev = self.head
        for h in headers:
            if prev is not None and (h.number != prev.number + 1 or h.parent != prev.hash):
                return False
            prev = h
        return True

    def advance(self, headers: list[BlockRef]) -> None:
        if not self.extends(headers):
            raise ValueError("headers do not extend the cursor; check for a reorg first")
        for h in headers:
            self._blocks[h.number] = h
        self._trim()

    def common_ancestor(self, canonical: dict[int, bytes]) -> int | None:
        """The highest remembered block whose hash is still canonical (None: none of them)."""
        for number in sorted(self._blocks, reverse=True):
            if canonical.get(number) == self._blocks[number].hash:
                return number
        return None

    def rewind(self, canonical: dict[int, bytes]) -> int:
        """Forget blocks above the common ancestor; returns the next block number to read."""
        ancestor = self.common_ancestor(canonical)
        if ancestor is None:
            if self._blocks and min(self._blocks) > self.start:
                raise ReorgTooDeep(
                    f"the chain reorganised below block {min(self._blocks)}, deeper than the "
                    f"{self.depth} blocks this cursor remembers; raise confirmations and resync"
                )
            self._blocks.clear()
            return self.start
        for number in [n for n in self._blocks if n > ancestor]:
            del self._blocks[number]
        return ancestor + 1

    def _trim(self) -> None:
        while len(self._blocks) > self.depth:
            del self._blocks[next(iter(self._blocks))]
