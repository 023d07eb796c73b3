"""Distribution lists on a live stack: invitations and acceptances as signed bus messages, the
pairs' matches and bid tables between org nodes, the digests on chain, with two orgs and then
three; every holder of a shared person names the same server, and each org learns only its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import re
import subprocess
import time
from collections import Counter

import httpx
import nats
import pytest
from typer.testing import CliRunner

from shardline.cli import app
from shardline.contacts import lists_client, synth
from shardline.contacts.importer import import_file
from shardline.contacts.lists_store import ListStore
from shardline.contacts.store import ContactStore, contact_secret
from shardline.core.keys import ParticipantKeys

pytestmark = pytest.mark.e2e
SEED = 5151
PERSONS = 500
# who holds each person: (org3, org4) for the two-org phase; org1 joins later
HOLDINGS = [
    (("org3", "org4"), 0.40),
    (("org1", "org3", "org4"), 0.35),
    (("org3",), 0.08),
    (("org4",), 0.07),
    (("org1",), 0.05),
    (("org1", "org3"), 0.05),
]
CUMULATIVE = [(o, sum(s for _, s in HOLDINGS[: i + 1])) for i, (o, _) in enumerate(HOLDINGS)]
CUMULATIVE[-1] = (CUMULATIVE[-1][0], 1.0)


def lists_cli(cfg, *args: str) -> subprocess.CompletedProcess:
    """`shardline contacts lists ...`, run in this process (a new interpreter per call costs
    seconds on a busy machine; the code run is the same)."""
    r = CliRunner().invoke(app, ["contacts", "lists", *args, "--config", str(cfg.path)])
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr)


def _ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def people(live_stack, tmp_path_factory):
    """Synthetic persons spread over org1, org3 and org4; some copies carry typos."""
    rng = random.Random(SEED)
    base = synth.people(PERSONS, dup_share=0.0, seed=SEED)
    holders: dict[int, tuple[str, ...]] = {}
    rows: dict[str, list[synth.Person]] = {"org1": [], "org3": [], "org4": []}
    for p in base:
        x = rng.random()
        orgs = next(o for o, upto in CUMULATIVE if x < upto)
        holders[p.entity] = orgs
        for o in orgs:
            copy = p
            if rng.random() < 0.3:  # another spelling of the given name, or a typo
                copy = dataclasses.replace(p, given=p.given + p.given[-1])
            rows[o].append(copy)
    d = tmp_path_factory.mktemp("lists")
    for org, persons in rows.items():
        text = synth.to_csv(persons).replace("\np", "\ndl")  # refs dl<entity>-<i>: this test's own
        f = d / f"{org}.csv"
        f.write_text(text)
        o = live_stack.org(org)
        secret = contact_secret(ParticipantKeys.load(o.key_file).signing_seed)
        report = import_file(ContactStore(o.database_url), f, secret, synth.MAPPING)
        assert report.imported == len(persons), report.errors[:3]
    return holders


def servers(cfg, org: str, list_id: str) -> dict[int, str]:
    """entity -> the org that ``org`` computes serves it, for this test's persons it shares."""
    o = cfg.org(org)
    store = ContactStore(o.database_url)
    ext = {c.id: c.external_id for c in store.contacts()}
    secret = contact_secret(ParticipantKeys.load(o.key_file).signing_seed)
    got = ListStore(store).assignments(list_id, org, secret)
    out = {}
    for cid, server in got.items():
        if ext[cid].startswith("dl"):
            out[int(ext[cid][2:].split("-")[0])] = server
    return out


def show(cfg, org: str, list_id: str) -> dict:
    return json.loads(
        _ok(lists_cli(cfg, "show", list_id, "--org", org, "--timeout", "180", "--json"))
    )


async def _stream_bodies(cfg) -> list[dict]:
    """Every message the LISTS stream holds, as a subscriber to `lists.>` saw it."""
    nc = await nats.connect(cfg.nats_url)
    try:
        js = nc.jetstream()
        state = (await js.stream_info("LISTS")).state
        raws = [await js.get_msg("LISTS", q) for q in range(state.first_seq, state.last_seq + 1)]
    finally:
        await nc.close()
    return [json.loads(m.data)["body"] for m in raws]


def test_two_then_three_orgs_agree_who_serves_each_shared_person(live_stack, people, tmp_path):
    cfg = live_stack

    created = json.loads(
        _ok(lists_cli(cfg, "create", "--org", "org3", "--name", "food parcels", "--json"))
    )
    list_id = created["list"]
    # an org that was not invited cannot accept; an invitation reaches org4's node on the bus
    r = lists_cli(cfg, "accept", list_id, "--org", "org4")
    assert r.returncode == 1 and "no invitation to list" in r.stderr
    _ok(lists_cli(cfg, "invite", list_id, "--org", "org3", "--to", "org4"))
    for _ in range(60):
        if lists_cli(cfg, "accept", list_id, "--org", "org4", "--capacity", "3").returncode == 0:
            break
        time.sleep(0.5)
    else:
        pytest.fail("org4 never received the invitation")

    # ---- two orgs ------------------------------------------------------------------------
    s3, s4 = show(cfg, "org3", list_id), show(cfg, "org4", list_id)
    assert [m["org"] for m in s3["members"]] == ["org3", "org4"]
    (p34,), (p43,) = s3["pairs"], s4["pairs"]
    assert p34["state"] == p43["state"] == "recorded", (p34, p43)
    assert p34["digest"] == p43["digest"] and p34["session"] == p43["session"]
    a3, a4 = servers(cfg, "org3", list_id), servers(cfg, "org4", list_id)
    both = [e for e, h in people.items() if {"org3", "org4"} <= set(h)]
    found = [e for e in both if e in a3 and e in a4]
    assert len(found) >= 0.95 * len(both), (len(found), len(both))
    assert all(a3[e] == a4[e] for e in found), "org3 and org4 disagree on a person"
    share4 = Counter(a3[e] for e in found)["org4"] / len(found)
    assert 0.65 < share4 < 0.85, share4  # capacity 3 against 1
    # each side sees only its own: org4's show names its own contact ids, and counts
    assert s4["served_here"] + s4["served_elsewhere"] == s4["shared_contacts"]

    out = _ok(lists_cli(cfg, "verify", list_id, "--org", "org4"))
    assert "agreed" in out and "NOT" not in out
    doc_file = tmp_path / "agreement.json"
    doc_file.write_text(
        _ok(lists_cli(cfg, "show", list_id, "--org", "org3", "--agreement", "org4"))
    )
    _ok(lists_cli(cfg, "verify", "--document", str(doc_file)))
    doc = json.loads(doc_file.read_text())
    row = doc["tables"]["org4"]["bids"][0]
    row[1] = f"{(int(row[1], 16) ^ 1):016x}"  # one bid changed: no longer what was recorded
    doc_file.write_text(json.dumps(doc))
    r = lists_cli(cfg, "verify", "--document", str(doc_file))
    assert r.returncode == 1 and "NOT agreed" in r.stdout

    # ---- a third org joins -----------------------------------------------------------------
    _ok(lists_cli(cfg, "invite", list_id, "--org", "org3", "--to", "org1"))
    for _ in range(60):
        if lists_cli(cfg, "accept", list_id, "--org", "org1", "--capacity", "2").returncode == 0:
            break
        time.sleep(0.5)
    else:
        pytest.fail("org1 never received the invitation")
    views = {o: show(cfg, o, list_id) for o in ("org1", "org3", "org4")}
    for o, v in views.items():
        assert [m["org"] for m in v["members"]] == ["org3", "org4", "org1"], v
        assert sorted(p["peer"] for p in v["pairs"]) == sorted({"org1", "org3", "org4"} - {o})
        assert all(p["state"] == "recorded" for p in v["pairs"]), v["pairs"]
    for o in ("org1", "org3", "org4"):
        out = _ok(lists_cli(cfg, "verify", list_id, "--org", o))
        assert out.count("agreed") == 2 and "NOT" not in out
    got = {o: servers(cfg, o, list_id) for o in ("org1", "org3", "org4")}
    checked = 0
    for e, h in people.items():
        if len(h) < 2:
            continue
        if not all(e in got[o] for o in h):
            continue  # a holder's match missed this person: it serves on its own
        named = {got[o][e] for o in h}
        assert len(named) == 1, f"person {e} held by {h}: servers {named}"
        assert named.pop() in h
        checked += 1
    multi = sum(1 for h in people.values() if len(h) >= 2)
    assert checked >= 0.9 * multi, (checked, multi)
    triple = [e for e, h in people.items() if len(h) == 3 and e in got["org1"]]
    shares = Counter(got["org1"][e] for e in triple)
    assert set(shares) == {"org1", "org3", "org4"}, shares  # capacities 2, 1, 3 all get work

    # the lists' messages carry blinded values and bids (hex): no name, date or phone of anyone
    seen = asyncio.run(_stream_bodies(cfg))
    assert any("entries" in b for b in seen)
    bodies = json.dumps(seen)
    words = set(re.findall(r"[a-z]+|[0-9-]+", re.sub(r"[0-9a-f]{16,}", " ", bodies)))
    for person in synth.people(PERSONS, dup_share=0.0, seed=SEED):
        for detail in (*person.family.split(), person.given, person.birth, person.phone):
            assert detail not in words, detail


def test_list_routes_keep_roles(live_stack):
    """An admin creates and invites; a user reads and verifies but cannot create."""
    from shardline.contacts import auth

    keys = ParticipantKeys.load(live_stack.org("org2").key_file)
    secret = auth.jwt_secret(keys.signing_seed)
    admin = {"Authorization": "Bearer " + auth.issue(secret, "org2", "admin", "ann")}
    user = {"Authorization": "Bearer " + auth.issue(secret, "org2", "user", "bob")}
    with httpx.Client(
        base_url=f"http://{live_stack.gateway.host}:{live_stack.contacts_api_port}", timeout=30
    ) as api:
        r = api.post("/orgs/org2/lists", json={"name": "water"}, headers=user)
        assert r.status_code == 403
        r = api.post("/orgs/org2/lists", json={"name": "water", "capacity": 2}, headers=admin)
        assert r.status_code == 201, r.text
        list_id = r.json()["list"]
        r = api.post(f"/orgs/org2/lists/{list_id}/invitations", json={"org": "org4"}, headers=user)
        assert r.status_code == 403
        r = api.post(f"/orgs/org2/lists/{list_id}/invitations", json={"org": "org9"}, headers=admin)
        assert r.status_code == 409 and "no org org9" in r.json()["detail"]
        r = api.get(f"/orgs/org2/lists/{list_id}", headers=user)
        assert r.status_code == 200 and r.json()["members"] == [{"org": "org2", "capacity": 2}]
        assert api.get(f"/orgs/org2/lists/{list_id}").status_code == 401
        r = api.get(f"/orgs/org2/lists/{'0' * 32}", headers=user)
        assert r.status_code == 404
        r = api.get(f"/orgs/org2/lists/{list_id}/verification", headers=user)
        assert r.status_code == 200 and r.json() == {"ok": False, "pairs": []}
    # an acceptance from an org that was never invited goes to the dead letters, with the reason
    asyncio.run(
        lists_client._publish(
            live_stack,
            "org1",
            "lists.accept",
            "lists.accept.org2",
            {"list": list_id, "owner": "org2", "capacity": 1},
            f"lists:accept:{list_id}:org1",
        )
    )
    dead = asyncio.run(_dead_letters(live_stack, "dlq.lists.accept.org2"))
    assert any("org1 was not invited to list" in d for d in dead), dead
    r = lists_cli(live_stack, "show", list_id, "--org", "org2", "--json")
    assert [m["org"] for m in json.loads(_ok(r))["members"]] == ["org2"]


async def _dead_letters(cfg, subject: str, within: float = 30.0) -> list[str]:
    """The reasons of the dead letters on ``subject``, waiting for the first."""
    nc = await nats.connect(cfg.nats_url)
    try:
        js = nc.jetstream()
        deadline = asyncio.get_running_loop().time() + within
        while asyncio.get_running_loop().time() < deadline:
            sub = await js.subscribe(subject, ordered_consumer=True)
            found = []
            while True:
                try:
                    found.append(await sub.next_msg(timeout=0.3))
                except Exception:
                    break
            await sub.unsubscribe()
            if found:
                return [m.headers.get("Shardline-Reason", "") for m in found]
            await asyncio.sleep(0.3)
        return []
    finally:
        await nc.close()
