"""An org node's distribution-list worker: invitations, the roster, the pairs' negotiation.

  invite  owner -> invitee    the list's id, name and owner (kept as an invitation)
  accept  invitee -> owner    the capacity the invitee declares
  roster  owner -> members    who takes part, in joining order (sent on every join)
  bids    member <-> member   a pair's bid table: blinded values and keyed bids, no detail

On a roster, each member starts a private match with every member that joined before it (so
each pair runs one session, started by its newcomer), through its own PSI worker. When its
match is done, the initiator sends its bid table; the responder answers with its own; each
side then holds both tables, builds the pair's agreement, records its digest on chain
(ListAgreements) and computes which of its own shared contacts it serves. A reconciler loop
drives the pairs forward, so a node restarted mid-way picks up where it was.
"""

from __future__ import annotations

import asyncio
import json
import secrets

from eth_account.signers.local import LocalAccount

from shardline.bus import envelope, log, subjects
from shardline.bus.consumers import org_consumer
from shardline.bus.envelope import BadMessage
from shardline.bus.worker import Incoming, Transient, Worker
from shardline.contacts.lists_store import BIDS_PER_PART, ListStore, Member, roster
from shardline.contacts.models import ListPair
from shardline.contacts.store import StoreError
from shardline.contracts import lists as chain_lists
from shardline.contracts.client import Chain
from shardline.contracts.deploy import Deployment
from shardline.core import assignment

TICK_S = 0.5
MATCH_TIMEOUT_S = 600.0


class ListNode(Worker):
    kind = "list-node"

    def __init__(
        self,
        *args,
        org_id: str,
        store: ListStore,
        secret: bytes,
        chain: Chain,
        deployment: Deployment,
        account: LocalAccount,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.org_id = org_id
        self.store = store
        self.secret = secret
        self.chain = chain
        self.deployment = deployment
        self.account = account
        self._loop_task: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    async def setup(self) -> None:
        for kind, handler in (
            ("invite", self.on_invite),
            ("accept", self.on_accept),
            ("roster", self.on_roster),
            ("bids", self.on_bids),
        ):
            self.consume(
                org_consumer(self.org_id, f"lists-{kind}-{self.org_id}"),
                handler,
            )
        self._loop_task = asyncio.create_task(self._reconcile_forever())

    async def stop(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
        await super().stop()

    async def _send(self, msg_type: str, subject: str, body: dict, msg_id: str) -> None:
        env = envelope.make(msg_type, body, self.keys, trace_id=body["list"])
        await self.publish(subject, env, msg_id=msg_id)

    # ---- invitations and the roster -----------------------------------------------------
    async def on_invite(self, inc: Incoming) -> None:
        b = inc.body
        if inc.env.sender != b["owner"] or b["to_org"] != self.org_id:
            raise BadMessage(f"invite from {inc.env.sender} names {b['owner']} -> {b['to_org']}")
        if await asyncio.to_thread(self.store.receive_invite, b["list"], b["name"], b["owner"]):
            log.event("lists.invited", worker=self.name, list=b["list"], owner=b["owner"])

    async def on_accept(self, inc: Incoming) -> None:
        b = inc.body
        if b["owner"] != self.org_id:
            raise BadMessage(f"accept for list {b['list']} names owner {b['owner']}")
        try:
            dl = await asyncio.to_thread(
                self.store.join, b["list"], self.org_id, inc.env.sender, b["capacity"]
            )
        except StoreError as exc:
            raise BadMessage(str(exc)) from None
        members = roster(dl)
        body = {
            "list": dl.id,
            "name": dl.name,
            "owner": dl.owner,
            "members": [m.__dict__ for m in members],
        }
        for m in members:
            await self._send(
                "lists.roster",
                subjects.LISTS_ROSTER.format(org=m.org),
                body,
                f"lists:roster:{dl.id}:{len(members)}:{m.org}",
            )
        log.event("lists.joined", worker=self.name, list=dl.id, org=inc.env.sender)

    async def on_roster(self, inc: Incoming) -> None:
        b = inc.body
        try:
            dl = await asyncio.to_thread(self.store.get, b["list"])
        except StoreError:
            raise BadMessage(f"roster of list {b['list']}, never invited here") from None
        if inc.env.sender != dl.owner or b["owner"] != dl.owner:
            raise BadMessage(f"roster of list {dl.id} from {inc.env.sender}, not its owner")
        members = [Member(m["org"], m["capacity"]) for m in b["members"]]
        names = [m.org for m in members]
        if self.org_id not in names or dl.state not in ("owner", "accepted"):
            return  # a roster this org is not (yet) part of
        dl = await asyncio.to_thread(self.store.set_roster, dl.id, members)
        known = [m.org for m in roster(dl)]
        mine = known.index(self.org_id)
        for earlier in known[:mine]:  # the newcomer starts the match with every earlier member
            if await asyncio.to_thread(self.store.pair, dl.id, earlier) is None:
                await self._start_pair(dl.id, earlier)

    async def _start_pair(self, list_id: str, peer: str) -> None:
        session = secrets.token_hex(16)
        row = await asyncio.to_thread(self.store.add_pair, list_id, peer, session, "initiator")
        if row.session_id != session:
            return  # another delivery of a roster started this pair already
        body = {"session": session, "peer": peer, "timeout_s": MATCH_TIMEOUT_S}
        env = envelope.make("psi.start", body, self.keys, trace_id=session)
        try:
            msg = await self.nc.request(
                subjects.PSI_START.format(org=self.org_id), env.to_bytes(), timeout=10
            )
        except Exception as exc:  # the PSI worker is busy or restarting: the roster comes again
            await asyncio.to_thread(self.store.drop_pair, list_id, peer)
            raise Transient(f"the PSI worker of {self.org_id} did not answer: {exc!r}") from None
        answer = json.loads(msg.data)
        if "error" in answer:
            await asyncio.to_thread(
                self.store.update_pair,
                list_id,
                peer,
                state="failed",
                detail=f"the match could not start: {answer['error']}",
            )
        log.event("lists.pair_started", worker=self.name, list=list_id, peer=peer, session=session)

    # ---- bids -----------------------------------------------------------------------------
    async def on_bids(self, inc: Incoming) -> None:
        b = inc.body
        peer = inc.env.sender
        if b["to_org"] != self.org_id:
            raise BadMessage(f"bids for {b['to_org']} reached {self.org_id}")
        try:
            dl = await asyncio.to_thread(self.store.get, b["list"])
        except StoreError:
            raise BadMessage(f"bids for list {b['list']}, unknown here") from None
        if peer not in [m.org for m in roster(dl)]:
            raise Transient(f"{peer} is not on this node's roster of list {dl.id} yet")
        pair = await asyncio.to_thread(self.store.pair, dl.id, peer)
        if pair is None:
            pair = await asyncio.to_thread(
                self.store.add_pair, dl.id, peer, b["session"], "responder"
            )
        if pair.session_id != b["session"]:
            raise BadMessage(f"pair {peer} of list {dl.id} runs session {pair.session_id}")
        await asyncio.to_thread(
            self.store.add_bid_part,
            dl.id,
            peer,
            b["part"],
            b["parts"],
            b["capacity"],
            b["entries"],
        )
        await self._advance(pair)

    async def _send_bids(self, pair: ListPair) -> None:
        table = await asyncio.to_thread(
            self.store.my_table, pair.list_id, self.org_id, pair.session_id, self.secret
        )
        entries = [{"v": list(e.values), "u": f"{e.u:016x}"} for e in table.entries]
        parts = max(1, -(-len(entries) // BIDS_PER_PART))
        for n in range(parts):
            body = {
                "list": pair.list_id,
                "session": pair.session_id,
                "to_org": pair.peer,
                "capacity": table.capacity,
                "part": n,
                "parts": parts,
                "entries": entries[n * BIDS_PER_PART : (n + 1) * BIDS_PER_PART],
            }
            await self._send(
                "lists.bids",
                subjects.LISTS_BIDS.format(org=pair.peer),
                body,
                f"lists:bids:{pair.list_id}:{pair.session_id}:{self.org_id}:{n}",
            )
        await asyncio.to_thread(
            self.store.update_pair, pair.list_id, pair.peer, bids_sent=1, state="bidding"
        )

    async def _advance(self, pair: ListPair) -> None:
        """Move one pair as far as it can go now; safe to call again at any time."""
        async with self._lock:
            pair = await asyncio.to_thread(self.store.pair, pair.list_id, pair.peer)
            if pair is None or pair.state in ("recorded", "failed"):
                return
            state = await asyncio.to_thread(self.store.session_state, pair.session_id)
            if state is None or state[0] == "running":
                return  # the match is still running (bids that came early wait)
            if state[0] == "failed":
                await asyncio.to_thread(
                    self.store.update_pair,
                    pair.list_id,
                    pair.peer,
                    state="failed",
                    detail=f"the match with {pair.peer} failed: {state[1]}",
                )
                return
            theirs = await asyncio.to_thread(self.store.peer_table, pair.list_id, pair.peer)
            if not pair.bids_sent and (pair.role == "initiator" or theirs is not None):
                await self._send_bids(pair)
            if theirs is None:
                return
            if not pair.agreement_json:
                mine = await asyncio.to_thread(
                    self.store.my_table, pair.list_id, self.org_id, pair.session_id, self.secret
                )
                doc = assignment.agreement(pair.list_id, [mine, theirs])
                await asyncio.to_thread(
                    self.store.update_pair,
                    pair.list_id,
                    pair.peer,
                    agreement_json=json.dumps(doc, sort_keys=True, separators=(",", ":")),
                    digest=assignment.digest(doc),
                    state="agreed",
                )
                await asyncio.to_thread(self.store.drop_bid_parts, pair.list_id, pair.peer)
                pair = await asyncio.to_thread(self.store.pair, pair.list_id, pair.peer)
            await self._record(pair)

    async def _record(self, pair: ListPair) -> None:
        pid = assignment.pair_id(pair.list_id, self.org_id, pair.peer)
        on_chain = await chain_lists.recorded_digest(
            self.chain, self.deployment, pair.list_id, pid, self.org_id
        )
        if on_chain is None:
            tx = await chain_lists.record_agreement(
                self.chain, self.account, self.deployment, pair.list_id, pid, pair.digest
            )
            tx_hash = tx.tx_hash
        elif on_chain == pair.digest:
            tx_hash = pair.tx_hash or "recorded"
        else:
            await asyncio.to_thread(
                self.store.update_pair,
                pair.list_id,
                pair.peer,
                state="failed",
                detail=f"the chain holds digest {on_chain} for this org, not {pair.digest}",
            )
            return
        await asyncio.to_thread(
            self.store.update_pair, pair.list_id, pair.peer, state="recorded", tx_hash=tx_hash
        )
        log.event(
            "lists.agreed", worker=self.name, list=pair.list_id, peer=pair.peer, digest=pair.digest
        )

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                for pair in await asyncio.to_thread(self.store.open_pairs):
                    await self._advance(pair)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the chain or the bus away for a moment: next tick
                log.warn("lists.reconcile_failed", worker=self.name, error=repr(exc))
