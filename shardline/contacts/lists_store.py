"""Distribution lists in an org's contact store: the list, its roster, the pairs this org is in,
the bid tables its partners sent, and the assignments this org computes for its own contacts.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import delete, select

from shardline.contacts.models import (
    DistributionList,
    ListBidPart,
    ListPair,
    PsiSession,
    PsiShared,
)
from shardline.contacts.store import ContactStore, StoreError
from shardline.core import assignment
from shardline.core.assignment import BidEntry, BidTable

BIDS_PER_PART = 200  # entries per lists.bids message: well under the bus's message size


@dataclass(frozen=True)
class Member:
    org: str
    capacity: int


def roster(dl: DistributionList) -> list[Member]:
    return [Member(m["org"], int(m["capacity"])) for m in json.loads(dl.roster_json)]


class ListStore:
    """Lists of one org, kept beside its contacts (same database, same migrations)."""

    def __init__(self, contacts: ContactStore) -> None:
        self.contacts = contacts

    def _s(self):
        return self.contacts.session()

    # ---- lists ----------------------------------------------------------------------
    def create(self, name: str, owner: str, capacity: int) -> DistributionList:
        if capacity < 1:
            raise StoreError(f"capacity {capacity} is not positive: give --capacity 1 or more")
        if not name.strip():
            raise StoreError("a list needs a name (the service it delivers)")
        dl = DistributionList(
            id=secrets.token_hex(16),
            name=name.strip()[:200],
            owner=owner,
            state="owner",
            capacity=capacity,
            roster_json=json.dumps([{"org": owner, "capacity": capacity}]),
            invited_json="[]",
            created_at=time.time(),
            accepted_at=time.time(),
        )
        with self._s() as s, s.begin():
            s.add(dl)
        return dl

    def get(self, list_id: str) -> DistributionList:
        with self._s() as s:
            dl = s.get(DistributionList, list_id)
        if dl is None:
            raise StoreError(
                f"no distribution list {list_id} in this org's store; "
                "`shardline contacts lists show` lists them"
            )
        return dl

    def all(self) -> list[DistributionList]:
        with self._s() as s:
            return list(s.scalars(select(DistributionList).order_by(DistributionList.created_at)))

    def invite(self, list_id: str, me: str, org: str) -> DistributionList:
        with self._s() as s, s.begin():
            dl = s.get(DistributionList, list_id)
            if dl is None:
                raise StoreError(f"no distribution list {list_id} in this org's store")
            if dl.owner != me:
                raise StoreError(f"only the list's owner {dl.owner} may invite to list {list_id}")
            if org == me:
                raise StoreError("an org cannot invite itself")
            if any(m.org == org for m in roster(dl)):
                raise StoreError(f"{org} already takes part in list {list_id}")
            invited = json.loads(dl.invited_json)
            if org not in invited:
                dl.invited_json = json.dumps([*invited, org])
            return dl

    def receive_invite(self, list_id: str, name: str, owner: str) -> bool:
        """Keep an invitation; False when the list is already known here."""
        with self._s() as s, s.begin():
            if s.get(DistributionList, list_id) is not None:
                return False
            s.add(
                DistributionList(
                    id=list_id,
                    name=name,
                    owner=owner,
                    state="invited",
                    capacity=0,
                    roster_json="[]",
                    invited_json="[]",
                    created_at=time.time(),
                )
            )
            return True

    def accept(self, list_id: str, capacity: int) -> DistributionList:
        if capacity < 1:
            raise StoreError(f"capacity {capacity} is not positive: give --capacity 1 or more")
        with self._s() as s, s.begin():
            dl = s.get(DistributionList, list_id)
            if dl is None:
                raise StoreError(
                    f"no invitation to list {list_id} has reached this org yet; "
                    "is its node running? (`shardline status`)"
                )
            if dl.state == "owner":
                raise StoreError(f"this org owns list {list_id}: it takes part already")
            if dl.state == "accepted" and dl.capacity != capacity:
                raise StoreError(f"list {list_id} was accepted with capacity {dl.capacity}")
            dl.state, dl.capacity, dl.accepted_at = "accepted", capacity, time.time()
            return dl

    def join(self, list_id: str, me: str, org: str, capacity: int) -> DistributionList:
        """The owner adds an invited org that accepted; the roster keeps the joining order."""
        with self._s() as s, s.begin():
            dl = s.get(DistributionList, list_id)
            if dl is None or dl.owner != me:
                raise StoreError(f"{me} does not own a list {list_id}")
            members = json.loads(dl.roster_json)
            if any(m["org"] == org for m in members):
                return dl
            if org not in json.loads(dl.invited_json):
                raise StoreError(f"{org} was not invited to list {list_id}")
            dl.roster_json = json.dumps([*members, {"org": org, "capacity": capacity}])
            return dl

    def set_roster(self, list_id: str, members: list[Member]) -> DistributionList:
        with self._s() as s, s.begin():
            dl = s.get(DistributionList, list_id)
            if dl is None:
                raise StoreError(f"no distribution list {list_id} in this org's store")
            known = roster(dl)
            # the roster only grows, in joining order: an older roster arriving late changes nothing
            if len(members) > len(known) and members[: len(known)] == known:
                dl.roster_json = json.dumps([m.__dict__ for m in members])
            return dl

    # ---- pairs --------------------------------------------------------------------------
    def pairs(self, list_id: str) -> list[ListPair]:
        with self._s() as s:
            q = select(ListPair).where(ListPair.list_id == list_id).order_by(ListPair.peer)
            return list(s.scalars(q))

    def open_pairs(self) -> list[ListPair]:
        with self._s() as s:
            q = select(ListPair).where(ListPair.state.not_in(("recorded", "failed")))
            return list(s.scalars(q))

    def pair(self, list_id: str, peer: str) -> ListPair | None:
        with self._s() as s:
            return s.get(ListPair, (list_id, peer))

    def add_pair(self, list_id: str, peer: str, session_id: str, role: str) -> ListPair:
        with self._s() as s, s.begin():
            row = s.get(ListPair, (list_id, peer))
            if row is None:
                row = ListPair(
                    list_id=list_id,
                    peer=peer,
                    session_id=session_id,
                    role=role,
                    state="matching",
                    created_at=time.time(),
                )
                s.add(row)
            return row

    def drop_pair(self, list_id: str, peer: str) -> None:
        with self._s() as s, s.begin():
            row = s.get(ListPair, (list_id, peer))
            if row is not None and row.state == "matching":
                s.delete(row)

    def update_pair(self, list_id: str, peer: str, **values) -> None:
        with self._s() as s, s.begin():
            row = s.get(ListPair, (list_id, peer))
            if row is None:
                raise StoreError(f"no pair {peer} in list {list_id}")
            for k, v in values.items():
                setattr(row, k, v)
            if values.get("state") in ("recorded", "failed"):
                row.finished_at = time.time()

    def session_state(self, session_id: str) -> tuple[str, str] | None:
        with self._s() as s:
            row = s.get(PsiSession, session_id)
            return None if row is None else (row.state, row.detail)

    # ---- bid tables -------------------------------------------------------------------
    def shared_values(self, session_id: str) -> dict[int, list[str]]:
        """My contacts a finished match found shared, with the values each shares."""
        with self._s() as s:
            rows = s.scalars(select(PsiShared).where(PsiShared.session_id == session_id))
            return {r.contact_id: json.loads(r.values_json) for r in rows}

    def my_table(self, list_id: str, me: str, session_id: str, secret: bytes) -> BidTable:
        dl = self.get(list_id)
        shared = self.shared_values(session_id)
        entries = tuple(
            BidEntry(tuple(sorted(v)), assignment.bid(secret, list_id, c))
            for c, v in sorted(shared.items())
        )
        return BidTable(me, dl.capacity, entries)

    def add_bid_part(
        self, list_id: str, peer: str, part: int, parts: int, capacity: int, entries: list
    ) -> None:
        with self._s() as s, s.begin():
            if s.get(ListBidPart, (list_id, peer, part)) is None:
                s.add(
                    ListBidPart(
                        list_id=list_id,
                        peer=peer,
                        part=part,
                        parts=parts,
                        capacity=capacity,
                        entries_json=json.dumps(entries),
                    )
                )

    def peer_table(self, list_id: str, peer: str) -> BidTable | None:
        """The partner's whole bid table, or None while parts are missing."""
        with self._s() as s:
            q = select(ListBidPart).where(ListBidPart.list_id == list_id, ListBidPart.peer == peer)
            rows = list(s.scalars(q.order_by(ListBidPart.part)))
        if not rows or len(rows) != rows[0].parts:
            return None
        entries = [e for r in rows for e in json.loads(r.entries_json)]
        return BidTable(
            peer,
            rows[0].capacity,
            tuple(BidEntry(tuple(sorted(e["v"])), int(e["u"], 16)) for e in entries),
        )

    def drop_bid_parts(self, list_id: str, peer: str) -> None:
        with self._s() as s, s.begin():
            s.execute(
                delete(ListBidPart).where(ListBidPart.list_id == list_id, ListBidPart.peer == peer)
            )

    # ---- what this org serves ---------------------------------------------------------
    def assignments(self, list_id: str, me: str, secret: bytes) -> dict[int, str]:
        """For each of my contacts shared in an agreed pair of the list: the org that serves it.

        Only agreed pairs count; a pair still matching leaves its contacts out until it agrees.
        """
        dl = self.get(list_id)
        tables: dict[str, tuple[BidTable, BidTable]] = {}
        contacts: set[int] = set()
        for p in self.pairs(list_id):
            if not p.agreement_json:
                continue
            doc = json.loads(p.agreement_json)
            tables[p.peer] = (
                BidTable.from_canonical(me, doc["tables"][me]),
                BidTable.from_canonical(p.peer, doc["tables"][p.peer]),
            )
            contacts.update(self.shared_values(p.session_id))
        bids = {c: assignment.bid(secret, list_id, c) for c in contacts}
        return assignment.my_assignments(me, dl.capacity, bids, tables)
