"""The proxy's grant book: the greatest (version, revoked) wins, whatever order the news comes in."""

from __future__ import annotations

import itertools

from shardline.core.records import REVOKED, Grant
from shardline.core.records_grants import GrantBook

RID, READER = "ab" * 16, "st-marys"


def grant(version: int, *, revoked: bool = False, expires_at: int = 2_000_000_000) -> Grant:
    return Grant(RID, READER, 2, ("org1", "org2", "org3"), expires_at, version, revoked)


def test_a_newer_grant_replaces_an_older_one_never_the_reverse():
    book = GrantBook()
    assert book.merge(grant(1)) == grant(1)
    assert book.merge(grant(2, expires_at=5)) == grant(2, expires_at=5)
    assert book.merge(grant(1)) == grant(2, expires_at=5)  # an old event read again
    assert book.get(RID, READER) == grant(2, expires_at=5)
    assert book.get(RID, "someone-else") is None


def test_a_revoke_keeps_the_grant_and_is_never_undone_by_its_own_grant_event():
    book = GrantBook()
    book.merge(grant(1))
    book.revoked(RID, READER, 1)
    assert book.get(RID, READER) == grant(1, revoked=True)
    assert book.merge(grant(1)) == grant(1, revoked=True)  # the grant event read again
    assert book.get(RID, READER).status(0) == REVOKED
    book.merge(grant(2))  # granted anew
    assert book.get(RID, READER) == grant(2)


def test_a_revoke_of_an_unseen_grant_refuses_it_and_any_older_read():
    book = GrantBook()
    held = book.revoked(RID, READER, 3)
    assert held.revoked and held.version == 3 and held.proxies == ()
    # a direct chain read that left before the revoke and came back after it
    assert book.merge(grant(3)).revoked
    assert book.merge(grant(2)).revoked
    assert not book.merge(grant(4)).revoked


def test_every_order_of_the_same_news_ends_in_the_same_state():
    news = [
        ("grant", grant(1)),
        ("revoke", 1),
        ("grant", grant(2, expires_at=7)),
        ("revoke", 2),
        ("grant", grant(3, expires_at=9)),
    ]
    finals = set()
    for order in itertools.permutations(news):
        book = GrantBook()
        for kind, what in order:
            if kind == "grant":
                book.merge(what)
            else:
                book.revoked(RID, READER, what)
        finals.add(book.get(RID, READER))
    assert finals == {grant(3, expires_at=9)}


def test_clear_and_forget():
    book = GrantBook()
    book.merge(grant(1))
    book.forget(RID, READER)
    assert book.get(RID, READER) is None
    book.merge(grant(1))
    book.clear()
    assert len(book) == 0
