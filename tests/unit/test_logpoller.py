"""The reorg-safe chain cursor as a plain state machine."""

from __future__ import annotations

import hashlib

import pytest

from shardline.core.logpoller import BlockRef, Cursor, ReorgTooDeep


def h(number: int, fork: str = "a") -> bytes:
    return hashlib.sha256(f"{number}:{fork}".encode()).digest()


def chain(first: int, last: int, fork: str = "a", fork_from: int | None = None) -> list[BlockRef]:
    """Blocks first..last; blocks >= fork_from are on ``fork``, the rest on the main chain."""

    def f(n: int) -> str:
        return fork if fork_from is not None and n >= fork_from else "a"

    if fork_from is None:
        fork_from = first if fork != "a" else None
    return [BlockRef(n, h(n, f(n)), h(n - 1, f(n - 1))) for n in range(first, last + 1)]


def canonical(blocks: list[BlockRef]) -> dict[int, bytes]:
    return {b.number: b.hash for b in blocks}


def test_fresh_cursor_starts_at_start():
    c = Cursor(start=10)
    assert c.head is None
    assert c.next_number == 10
    assert c.remembered() == []


def test_advance_over_a_linear_chain():
    c = Cursor(start=10)
    c.advance(chain(10, 14))
    assert c.head == BlockRef(14, h(14), h(13))
    assert c.next_number == 15
    c.advance(chain(15, 15))
    assert c.next_number == 16
    assert [b.number for b in c.remembered()] == list(range(10, 16))


def test_extends_empty_list_is_true():
    c = Cursor(start=0)
    c.advance(chain(0, 3))
    assert c.extends([])


def test_extends_false_on_a_gap():
    c = Cursor(start=0)
    c.advance(chain(0, 3))
    assert c.extends(chain(4, 6))
    assert not c.extends(chain(5, 6))
    with pytest.raises(ValueError, match="reorg"):
        c.advance(chain(5, 6))
    assert c.next_number == 4


def test_extends_false_within_the_batch():
    c = Cursor(start=0)
    c.advance(chain(0, 3))
    batch = chain(4, 5) + chain(7, 7)
    assert not c.extends(batch)


def test_extends_false_on_parent_mismatch():
    c = Cursor(start=0)
    c.advance(chain(0, 5))
    other = chain(6, 7, fork="b", fork_from=5)  # block 6's parent is h(5, "b")
    assert not c.extends(other)
    with pytest.raises(ValueError):
        c.advance(other)
    assert c.head.number == 5


@pytest.mark.parametrize("depth", [1, 3])
def test_rewind_to_common_ancestor_after_reorg(depth):
    c = Cursor(start=0)
    c.advance(chain(0, 10))
    fork_from = 11 - depth
    new = chain(0, 12, fork="b", fork_from=fork_from)
    # the new tip does not extend what we remember
    assert not c.extends([b for b in new if b.number == 11])
    assert c.common_ancestor(canonical(new)) == fork_from - 1
    nxt = c.rewind(canonical(new))
    assert nxt == fork_from
    assert c.next_number == fork_from
    assert c.head == BlockRef(fork_from - 1, h(fork_from - 1), h(fork_from - 2))
    # now the replacement blocks extend the cursor
    replacement = [b for b in new if b.number >= fork_from]
    assert c.extends(replacement)
    c.advance(replacement)
    assert c.head.hash == h(12, "b")


def test_rewind_without_reorg_keeps_everything():
    c = Cursor(start=0)
    c.advance(chain(0, 5))
    assert c.rewind(canonical(chain(0, 5))) == 6
    assert len(c.remembered()) == 6


def test_rewind_when_canonical_chain_is_shorter():
    c = Cursor(start=0)
    c.advance(chain(0, 8))
    # the new chain only reached block 6 and replaced 5 and 6
    new = chain(0, 6, fork="b", fork_from=5)
    assert c.rewind(canonical(new)) == 5


def test_rewind_below_memory_raises_reorg_too_deep():
    c = Cursor(start=0, depth=4)
    c.advance(chain(0, 10))
    assert min(b.number for b in c.remembered()) == 7 > c.start
    new = chain(0, 10, fork="b", fork_from=3)
    with pytest.raises(ReorgTooDeep, match="below block 7"):
        c.rewind(canonical(new))


def test_rewind_of_everything_from_start_resets():
    c = Cursor(start=5)
    c.advance(chain(5, 8))
    new = chain(5, 9, fork="b", fork_from=5)
    assert c.common_ancestor(canonical(new)) is None
    assert c.rewind(canonical(new)) == 5
    assert c.head is None
    assert c.next_number == 5


def test_rewind_with_nothing_remembered_returns_start():
    c = Cursor(start=3)
    assert c.rewind({}) == 3


def test_depth_trimming_keeps_only_depth_blocks():
    c = Cursor(start=0, depth=5)
    c.advance(chain(0, 20))
    assert [b.number for b in c.remembered()] == [16, 17, 18, 19, 20]
    c.advance(chain(21, 22))
    assert [b.number for b in c.remembered()] == [18, 19, 20, 21, 22]
    assert c.next_number == 23


def test_restored_cursor_trims_and_continues():
    c = Cursor(start=0, remembered=chain(0, 9), depth=3)
    assert [b.number for b in c.remembered()] == [7, 8, 9]
    assert c.next_number == 10
    assert c.extends(chain(10, 11))
    assert not c.extends(chain(10, 11, fork="b", fork_from=9))
