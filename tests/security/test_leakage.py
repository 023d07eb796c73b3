"""Nothing secret crosses the bus, and one org's store alone reveals nothing.

A recorder subscribed to ``>`` as the operator keeps every byte of every message (subjects,
headers, data: JetStream API calls, acks and replies included) while a transport is registered
and looked up, a record is put, granted and read, and two orgs match contacts. No cargo sheet
field, record, contact, share or key may appear in it, raw, hex or base64.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path

import nats
import pytest
from sqlalchemy.orm import Session

from shardline import transports
from shardline.bus import envelope
from shardline.contacts.importer import import_file
from shardline.contacts.matching import start_match, wait_match
from shardline.contacts.store import ContactStore, contact_secret
from shardline.core import shamir
from shardline.core.keys import ParticipantKeys
from shardline.workers.records_client import RecordsClient
from shardline.workers.store import OrgStore, StoredShare

from ..e2e.test_lookup import do_lookup

pytestmark = pytest.mark.e2e

CONTACTS = [
    ("Quillondra", "Vexmorrow", "1971-03-09", "+44 7700 900461"),
    ("Thaddeusz", "Brimblecombe", "1988-11-23", "+44 7700 900871"),
    ("Oriabelle", "Fenwhistle", "1964-06-30", "+44 7700 900532"),
]


def encodings(secret: bytes) -> list[bytes]:
    return [secret, secret.hex().encode(), base64.b64encode(secret).rstrip(b"=")]


def secrets_of(run_dir: Path) -> dict[str, bytes]:
    """Every key the stack holds: participants' seeds, sealing and chain keys, bus seeds."""
    found: dict[str, bytes] = {}
    for f in sorted((run_dir / "keys").glob("*.json")):
        k = ParticipantKeys.load(f)
        found[f"{k.participant_id} signing seed"] = k.signing_seed
        found[f"{k.participant_id} sealing key"] = k.sealing_secret
        found[f"{k.participant_id} chain key"] = k.chain_key
    for f in sorted((run_dir / "keys").glob("*.nk")):
        found[f"{f.stem} bus seed"] = f.read_text().strip().encode()
    for f in sorted((run_dir / "keys").glob("*.apikey")):
        found[f"{f.stem} API key"] = f.read_text().strip().encode()
    return found


def test_nothing_secret_on_the_bus_during_every_capability(live_stack, sample_sheets, tmp_path):
    cfg = live_stack
    new_sheet = sample_sheets[40]
    marker = b"RECORD-MARKER-" + os.urandom(8).hex().encode()
    record = (marker + b" allergy: penicillin; blood group AB-\n") * 8
    recording: list[bytes] = []

    async def run():
        spy = await nats.connect(cfg.nats_url)

        async def keep(msg) -> None:
            head = b"".join(f"{k}:{v}".encode() for k, v in (msg.headers or {}).items())
            recording.append(msg.subject.encode() + b" " + head + b" " + bytes(msg.data))

        await spy.subscribe(">", cb=keep)
        await spy.flush()
        try:
            # cargo: registration (shares sealed to each org) and lookups
            await transports.register(cfg, [new_sheet])
            await transports.wait_stored(cfg)
            for sheet in (new_sheet, sample_sheets[2]):
                out = await do_lookup(cfg, sheet.transport_id)
                assert out.status == 200 and out.body["sheet"]["vehicle"] == sheet.vehicle
            # records: put, grant 2-of-3, read
            from shardline.core import records as rc

            client = await RecordsClient.connect(
                cfg.nats_url, cfg.chain_rpc, cfg.deployment, name="leak-test", timeout_s=5.0
            )
            owner = rc.PartyKeys.generate(f"owner-{os.urandom(3).hex()}")
            reader = rc.PartyKeys.generate(f"reader-{os.urandom(3).hex()}")
            await client.register(owner)
            await client.register(reader)
            info = await client.put(owner, record)
            grant = await client.grant(
                owner,
                info.record_id,
                reader.id,
                threshold=2,
                proxies=["org1", "org2", "org3"],
                expires_at=int(time.time() + 3600),
            )
            assert await client.wait_held(grant) == []
            assert (await client.get(reader, info.record_id)).plaintext == record
            await client.close()
            # contacts: org3 and org4 hold the same three people and match privately
            session = await start_match(cfg, "org3", "org4", pad_to=64)
            row = await wait_match(ContactStore(cfg.org("org3").database_url), session, 120)
            assert row.state == "done", row.detail
            await spy.flush()
            await asyncio.sleep(0.3)
        finally:
            await spy.drain()
        return info.content_hash

    csv = tmp_path / "people.csv"
    csv.write_text(
        "given_name,family_name,birth_date,phone\n"
        + "".join(f"{g},{f},{b},{p}\n" for g, f, b, p in CONTACTS)
    )
    for org in ("org3", "org4"):
        o = cfg.org(org)
        secret = contact_secret(ParticipantKeys.load(o.key_file).signing_seed)
        assert import_file(ContactStore(o.database_url), csv, secret).imported == len(CONTACTS)

    content_hash = asyncio.run(run())
    bus = b"\n".join(recording)
    assert len(recording) > 100 and b"lookup.share." in bus and b"records." in bus
    assert b"psi.round." in bus
    # the recorder does see what may travel: the record's content hash (its object's name)
    assert content_hash.hex().encode() in bus

    wanted: dict[str, bytes] = {
        "record": marker,
        "sheet": new_sheet.canonical_bytes(),
        "vehicle": new_sheet.vehicle.encode(),
        "emergency phone": new_sheet.emergency_contact.phone.encode(),
        "emergency contact": new_sheet.emergency_contact.name.encode(),
        **secrets_of(cfg.run_dir),
    }
    for g, f, b, p in CONTACTS:
        wanted.update(
            {f"contact {g}": g.encode(), f"contact {f}": f.encode(), f"phone of {g}": p.encode()}
        )
        wanted[f"birth date of {g}"] = b.encode()
    leaked = [
        name
        for name, secret in wanted.items()
        if secret and any(e in bus for e in encodings(secret))
    ]
    assert not leaked, f"seen on the bus: {leaked}"


def consistent_second_share(held: shamir.Share, target: bytes, x2: int) -> shamir.Share:
    """The second share that, with ``held``, rebuilds ``target`` (threshold 2): one exists for
    every target of the same size, which is why one share tells nothing about the secret."""
    chunks = shamir._frame(target)
    assert len(chunks) == len(held.ys)
    ys = []
    for c, y1 in zip(chunks, held.ys, strict=True):
        slope = (y1 - c) * pow(held.x, -1, shamir.PRIME) % shamir.PRIME
        ys.append((c + slope * x2) % shamir.PRIME)
    return shamir.Share(x2, tuple(ys))


def test_one_orgs_store_alone_reveals_nothing(live_stack, sample_sheets):
    """org1's database keeps each share sealed to org1; opened with org1's own key it is one
    share of a 2-of-4 split, and that one share fits any sheet at all equally well."""
    sheet = sample_sheets[5]
    o = live_stack.org("org1")
    db = Path(o.database_url.removeprefix("sqlite:///"))
    raw = b"".join(f.read_bytes() for f in db.parent.glob(db.name + "*"))
    for field in (sheet.vehicle, sheet.emergency_contact.phone, sheet.emergency_contact.name):
        assert field.encode() not in raw, field
    keys = ParticipantKeys.load(o.key_file)
    with Session(OrgStore(o.database_url).engine) as s:
        rows = s.query(StoredShare).filter_by(transport_id=sheet.transport_id).all()
    assert len(rows) == 1
    sealed_env = envelope.parse(rows[0].sealed, "transport.share")
    assert sealed_env.sealed  # at rest exactly as it came: sealed to org1
    body = envelope.open_body(sealed_env, keys)
    assert body["threshold"] == 2 and body["org"] == "org1"
    held = shamir.Share.from_bytes(base64.b64decode(body["share"]))
    # alone it rebuilds nothing
    with pytest.raises(shamir.ShamirError):
        shamir.combine([held])
    # and with a made-up second share it "rebuilds" any other sheet of the same size
    for other in (sample_sheets[6], sample_sheets[7]):
        width = 64 * len(held.ys) - 4
        target = other.canonical_bytes()[:width].ljust(width - 8, b" ")
        fake = consistent_second_share(held, target, x2=3 if held.x != 3 else 4)
        assert shamir.combine([held, fake]) == target
