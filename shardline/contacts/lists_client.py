"""What an org's people do with distribution lists: create, invite, accept, show, verify.

Create writes the org's own store; invite and accept also send a message signed with the org's
key to the other org's node; show and verify read the store and the chain. The negotiation
itself runs in the org nodes' list workers (``workers/list_node.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from shardline.bus import envelope, subjects
from shardline.bus.connect import connect
from shardline.bus.worker import traceparent
from shardline.config import StackConfig
from shardline.contacts.lists_store import ListStore, roster
from shardline.contacts.store import ContactStore, StoreError, contact_secret
from shardline.contracts import lists as chain_lists
from shardline.contracts.client import Chain
from shardline.contracts.deploy import Deployment
from shardline.core import assignment
from shardline.core.ids import InvalidId, check_org_id
from shardline.core.keys import ParticipantKeys


class ListError(RuntimeError):
    """A list operation that cannot be done; the text says what to do."""


def _store(cfg: StackConfig, org: str) -> ListStore:
    return ListStore(ContactStore(cfg.org(org).database_url))


async def _publish(
    cfg: StackConfig, org: str, msg_type: str, subject: str, body: dict, msg_id: str
):
    keys = ParticipantKeys.load(cfg.org(org).key_file)
    env = envelope.make(msg_type, body, keys, trace_id=body["list"])
    nc = await connect(cfg.nats_url, f"lists.{org}")
    try:
        js = nc.jetstream(timeout=5)
        headers = {
            "traceparent": traceparent(env.trace_id),
            "Shardline-Type": env.type,
            "Nats-Msg-Id": msg_id,
        }
        await js.publish(subject, env.to_bytes(), headers=headers)
    except Exception as exc:
        raise ListError(
            f"could not send {msg_type} on the bus ({exc!r}); is the stack up?"
        ) from None
    finally:
        await nc.close()


def create(cfg: StackConfig, org: str, name: str, capacity: int) -> dict:
    try:
        dl = _store(cfg, org).create(name, org, capacity)
    except StoreError as exc:
        raise ListError(str(exc)) from None
    return {"list": dl.id, "name": dl.name, "owner": dl.owner, "capacity": dl.capacity}


async def invite(cfg: StackConfig, org: str, list_id: str, peer: str) -> dict:
    try:
        check_org_id(peer)
        cfg_peer = [o.id for o in cfg.orgs]
        if cfg.orgs and peer not in cfg_peer:
            raise ListError(f"no org {peer} in this stack; orgs: {', '.join(cfg_peer)}")
        dl = _store(cfg, org).invite(list_id, org, peer)
    except (StoreError, InvalidId) as exc:
        raise ListError(str(exc)) from None
    body = {"list": dl.id, "name": dl.name, "owner": dl.owner, "to_org": peer}
    await _publish(
        cfg,
        org,
        "lists.invite",
        subjects.LISTS_INVITE.format(org=peer),
        body,
        f"lists:invite:{dl.id}:{peer}",
    )
    return {"list": dl.id, "invited": peer}


async def accept(cfg: StackConfig, org: str, list_id: str, capacity: int) -> dict:
    try:
        dl = _store(cfg, org).accept(list_id, capacity)
    except StoreError as exc:
        raise ListError(str(exc)) from None
    body = {"list": dl.id, "owner": dl.owner, "capacity": capacity}
    await _publish(
        cfg,
        org,
        "lists.accept",
        subjects.LISTS_ACCEPT.format(org=dl.owner),
        body,
        f"lists:accept:{dl.id}:{org}",
    )
    return {"list": dl.id, "owner": dl.owner, "capacity": capacity}


def show(cfg: StackConfig, org: str, list_id: str, *, contacts: bool = False) -> dict:
    """The list as this org sees it: roster, pairs, and what this org serves (its own only)."""
    store = _store(cfg, org)
    try:
        dl = store.get(list_id)
    except StoreError as exc:
        raise ListError(str(exc)) from None
    keys = ParticipantKeys.load(cfg.org(org).key_file)
    served = store.assignments(list_id, org, contact_secret(keys.signing_seed))
    mine = sorted(c for c, o in served.items() if o == org)
    out = {
        "list": dl.id,
        "name": dl.name,
        "owner": dl.owner,
        "state": dl.state,
        "capacity": dl.capacity,
        "members": [m.__dict__ for m in roster(dl)],
        "invited": json.loads(dl.invited_json),
        "pairs": [
            {
                "peer": p.peer,
                "state": p.state,
                "role": p.role,
                "session": p.session_id,
                "digest": p.digest,
                "tx": p.tx_hash,
                "detail": p.detail,
            }
            for p in store.pairs(list_id)
        ],
        "shared_contacts": len(served),
        "served_here": len(mine),
        "served_elsewhere": len(served) - len(mine),
    }
    if contacts:
        out["contacts_served_here"] = mine
    return out


def lists(cfg: StackConfig, org: str) -> list[dict]:
    return [
        {"list": d.id, "name": d.name, "owner": d.owner, "state": d.state}
        for d in _store(cfg, org).all()
    ]


def agreement(cfg: StackConfig, org: str, list_id: str, peer: str) -> dict:
    """The pair's agreement document: what this org can show anyone to prove what was agreed."""
    p = _store(cfg, org).pair(list_id, peer)
    if p is None or not p.agreement_json:
        raise ListError(f"{org} has no agreement with {peer} in list {list_id} (yet)")
    return json.loads(p.agreement_json)


@dataclass(frozen=True)
class PairCheck:
    pair: list[str]
    digest: str
    on_chain: dict[str, str | None]

    @property
    def ok(self) -> bool:
        return all(d == self.digest for d in self.on_chain.values())

    def to_dict(self) -> dict:
        return {"pair": self.pair, "digest": self.digest, "on_chain": self.on_chain, "ok": self.ok}


async def check_document(cfg: StackConfig, doc: dict) -> PairCheck:
    """Hash an agreement document and compare with what both orgs recorded on chain."""
    try:
        digest = assignment.digest(doc)
        list_id, (a, b) = doc["list"], doc["pair"]
        assignment.assignments_of(doc)  # a document whose tables do not parse is refused here
    except (KeyError, TypeError, ValueError) as exc:
        raise ListError(f"this is not an agreement document: {exc!r}") from None
    if cfg.deployment is None:
        raise ListError("the stack has no contract deployment: start it with `shardline up`")
    dep = Deployment.from_dict(cfg.deployment)
    pid = assignment.pair_id(list_id, a, b)
    async with await Chain.connect(cfg.chain_rpc, expected_chain_id=cfg.chain_id) as chain:
        got = {o: await chain_lists.recorded_digest(chain, dep, list_id, pid, o) for o in (a, b)}
    return PairCheck([a, b], digest, got)


async def verify(cfg: StackConfig, org: str, list_id: str) -> list[PairCheck]:
    """Every agreed pair of this org in the list, checked against the chain."""
    store = _store(cfg, org)
    try:
        store.get(list_id)
    except StoreError as exc:
        raise ListError(str(exc)) from None
    checks = []
    for p in store.pairs(list_id):
        if not p.agreement_json:
            continue
        doc = json.loads(p.agreement_json)
        check = await check_document(cfg, doc)
        if check.digest != p.digest:
            raise ListError(f"the stored agreement with {p.peer} no longer hashes to {p.digest}")
        checks.append(check)
    return checks
