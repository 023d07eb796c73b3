"""The org node's contacts API on a live stack: JWT roles, import, dedup job state, matches."""

from __future__ import annotations

import time

import httpx
import pytest

from shardline.contacts import auth
from shardline.contacts.store import ContactStore
from shardline.core.keys import ParticipantKeys

pytestmark = pytest.mark.e2e

CSV = "first,last,dob\nAmira,Haddad,1991-05-12\nAmirah,Hadad,1991-05-12\nYusuf,Khoury,13/13/1980\n"


def token(cfg, org: str, role: str, subject: str = "alice") -> str:
    keys = ParticipantKeys.load(cfg.org(org).key_file)
    return auth.issue(auth.jwt_secret(keys.signing_seed), org, role, subject)


@pytest.fixture(scope="module")
def api(live_stack):
    with httpx.Client(
        base_url=f"http://{live_stack.gateway.host}:{live_stack.contacts_api_port}", timeout=30
    ) as c:
        yield c


def bearer(t: str) -> dict:
    return {"Authorization": f"Bearer {t}"}


def test_a_user_role_token_cannot_read_or_load_contacts(live_stack, api):
    user = bearer(token(live_stack, "org4", "user"))
    r = api.get("/orgs/org4/contacts", headers=user)
    assert r.status_code == 403 and "needs admin" in r.json()["detail"]
    r = api.post("/orgs/org4/contacts/imports", json={"content": CSV}, headers=user)
    assert r.status_code == 403
    assert api.get("/orgs/org4/contacts").status_code == 401
    assert api.get("/orgs/org4/contacts", headers=bearer("not-a-jwt")).status_code == 401
    # a token of another org is refused even with the admin role
    assert api.get(
        "/orgs/org4/contacts", headers=bearer(token(live_stack, "org3", "admin"))
    ).status_code in (401, 403)


def test_an_admin_imports_sees_and_dedups_contacts(live_stack, api):
    admin = bearer(token(live_stack, "org4", "admin"))
    mapping = {"given_name": "first", "family_name": "last", "birth_date": "dob"}
    r = api.post(
        "/orgs/org4/contacts/imports", json={"content": CSV, "mapping": mapping}, headers=admin
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["imported"] == 2
    assert [(e["line"], e["field"]) for e in body["errors"]] == [(4, "birth_date")]
    people = api.get("/orgs/org4/contacts", headers=admin).json()
    assert {p["family_name"] for p in people} >= {"haddad", "hadad"}
    job = api.post("/orgs/org4/dedup/jobs", json={}, headers=admin).json()["job"]
    deadline = time.monotonic() + 120
    while (state := api.get(f"/orgs/org4/dedup/jobs/{job}", headers=admin).json())["state"] not in (
        "done",
        "failed",
    ):
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    assert state["state"] == "done" and state["groups"] == 1
    groups = api.get(f"/orgs/org4/dedup/jobs/{job}/groups", headers=admin).json()
    merged = api.post(f"/orgs/org4/dedup/jobs/{job}/groups/1/merge", headers=admin).json()
    store = ContactStore(live_stack.org("org4").database_url)
    others = [c for c in groups[0]["contacts"] if c != merged["survivor"]]
    assert all(c.merged_into == merged["survivor"] for c in store.contacts(others))
    assert api.delete(f"/orgs/org4/merges/{merged['merge']}", headers=admin).status_code == 200
    assert all(c.merged_into is None for c in store.contacts(others))


def test_a_user_may_start_a_match_and_read_its_result(live_stack, api):
    user = bearer(token(live_stack, "org4", "user"))
    r = api.post("/orgs/org4/matches", json={"peer": "org3", "timeout_s": 60}, headers=user)
    assert r.status_code == 202, r.text
    session = r.json()["session"]
    deadline = time.monotonic() + 90
    while (m := api.get(f"/orgs/org4/matches/{session}", headers=user).json())[
        "state"
    ] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert m["state"] == "done", m
    assert set(m) >= {"shared_contacts", "shared_contact_ids"} and "given_name" not in str(m)
