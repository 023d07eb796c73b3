"""The ops console on a real local stack: one lookup of each kind, then the metrics, the
monitor's JSON snapshot, the trace in the logs and the dead-letter listing must each show
exactly what happened."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import time

import httpx
import nats
import pytest

from shardline import stack
from shardline.config import StackConfig
from shardline.lookup_client import api_key, base_url
from shardline.ops import dlq, metrics
from shardline.ops.snapshot import expected_workers

from .test_lookup import do_lookup

pytestmark = pytest.mark.e2e

ALLOWED_LABELS = {"worker", "status", "outcome", "le"}


def cli(cfg: StackConfig, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shardline", *args, "--config", str(cfg.path)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=timeout,
    )


def monitor_json(cfg: StackConfig) -> tuple[int, dict]:
    out = cli(cfg, "monitor", "--json")
    assert out.stdout, out.stderr
    return out.returncode, json.loads(out.stdout)


def scrape_all(cfg: StackConfig) -> dict[str, dict[str, float]]:
    return {name: metrics.scrape(url) for name, url in metrics.endpoints(cfg).items()}


def delta(after: dict, before: dict, process: str, sample: str) -> float:
    return after[process].get(sample, 0.0) - before[process].get(sample, 0.0)


def trace_of(cfg: StackConfig, trace_id: str) -> list[dict]:
    out = cli(cfg, "logs", "--trace", trace_id, "--json")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


async def publish_garbage(cfg: StackConfig, subject: str, trace_id: str) -> None:
    nc = await nats.connect(cfg.nats_url)
    await nc.jetstream().publish(
        subject,
        b"{not json",
        headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
    )
    await nc.close()


async def _dead_letters(cfg: StackConfig, subject: str) -> list[dict]:
    nc = await nats.connect(cfg.nats_url)
    try:
        return [d.to_dict() for d in await dlq.listing(nc.jetstream(), subject=subject)]
    finally:
        await nc.close()


def dead_letters_of(cfg: StackConfig, subject: str) -> list[dict]:
    return asyncio.run(_dead_letters(cfg, subject))


def asked_orgs(out) -> list[str]:
    """The org nodes a lookup's intents named: those asked first, and any asked after."""
    orgs = list(next(e for e in out.events if e["event"] == "accepted")["asked"])
    for e in out.events:
        if e["event"] == "asked":
            orgs += [o for o in e["orgs"] if o not in orgs]
    return orgs


def wait_for(check, within_s: float = 15.0, every_s: float = 0.2):
    deadline = time.monotonic() + within_s
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(every_s)


def test_each_kind_of_lookup_shows_exactly_in_metrics_monitor_logs_and_dlq(
    live_stack, sample_sheets
):
    cfg = live_stack
    code, snap = monitor_json(cfg)
    assert code == 0 and snap["healthy"], snap["workers"]
    assert {w["name"] for w in snap["workers"] if w["up"]} >= set(expected_workers(cfg))
    dlq_before = {d["subject"]: d["count"] for d in snap["dead_letters"]["subjects"]}
    before = scrape_all(cfg)

    good = asyncio.run(do_lookup(cfg, sample_sheets[4].transport_id))
    refused = asyncio.run(do_lookup(cfg, sample_sheets[4].transport_id, responder="visitor"))
    unknown = asyncio.run(do_lookup(cfg, "TR-999999"))
    assert (good.status, refused.status, unknown.status) == (200, 403, 404)

    stack.stop(cfg.run_dir, "node-org4")
    try:
        code, down_snap = monitor_json(cfg)
        org_down = asyncio.run(do_lookup(cfg, sample_sheets[5].transport_id))
    finally:
        restarted_at = time.time()
        stack.start_workers(cfg, ["node-org4"])
    assert org_down.status == 200 and "org4" not in org_down.body["used_orgs"]
    # the monitor saw org4's workers, and only those, down; and said so with its exit code
    assert code == 1 and down_snap["healthy"] is False
    down = {w["name"] for w in down_snap["workers"] if not w["up"]}
    assert down == {n for n in expected_workers(cfg) if n.endswith(".org4")}
    intake = {r["org"]: r for r in down_snap["chain"]["intake"]}
    assert intake["org4"]["up"] is False and intake["org4"]["lag_blocks"] is None
    assert all(intake[o]["up"] and intake[o]["lag_blocks"] is not None for o in ("org1", "org2"))
    assert next(p for p in down_snap["processes"] if p["name"] == "node-org4")["running"] is False

    bad_trace = secrets.token_hex(16)
    bad_subject = f"lookup.share.{bad_trace}"
    asyncio.run(publish_garbage(cfg, bad_subject, bad_trace))

    # -- the dead-letter listing: exactly the malformed message, with its reason and trace
    assert wait_for(lambda: dead_letters_of(cfg, bad_subject))
    out = cli(cfg, "dlq", "list", "--subject", bad_subject, "--json")
    assert out.returncode == 0, out.stderr
    letters = json.loads(out.stdout)
    assert letters and len(letters) == 1
    assert letters[0]["worker"] == "combiner.main"
    assert letters[0]["reason"].startswith("not JSON")
    assert letters[0]["trace_id"] == bad_trace and letters[0]["size"] == len(b"{not json")

    # -- metrics: one of each outcome, one dead letter, nothing else
    after = scrape_all(cfg)
    lookups = {
        k: delta(after, before, "gateway", f'shardline_lookups_total{{outcome="{k}"}}')
        for k in ("ok", "http_403", "http_404", "http_504", "http_502")
    }
    assert lookups == {"ok": 2, "http_403": 1, "http_404": 1, "http_504": 0, "http_502": 0}
    assert delta(after, before, "combiner", 'shardline_dead_letters_total{worker="combiner"}') == 1
    processed = 'shardline_messages_processed_total{status="dead_letter",worker="combiner"}'
    assert delta(after, before, "combiner", processed) == 1
    for org in ("org1", "org2", "org3"):
        ok = 'shardline_messages_processed_total{status="ok",worker="share-node"}'
        assert delta(after, before, f"node-{org}", ok) >= 1  # each served at least once
        dead = 'shardline_dead_letters_total{worker="share-node"}'
        assert delta(after, before, f"node-{org}", dead) == 0
    assert "shardline_chain_intake_lag_blocks" in after["node-org1"]
    assert any(
        k.startswith("shardline_message_processing_duration_seconds_bucket")
        for k in after["combiner"]
    )
    # no per-id labels: no guid, transport or trace anywhere in a label
    ids = {good.body["guid"], org_down.body["guid"], bad_trace, sample_sheets[4].transport_id}
    for samples in after.values():
        for key in samples:
            if key.startswith("shardline_"):
                assert set(re.findall(r'(\w+)="', key)) <= ALLOWED_LABELS, key
            assert not any(i in key for i in ids), key

    # -- the monitor after the restart: healthy again, the dead letter counted with its reason
    code, snap = monitor_json(cfg)
    assert code == 0 and snap["healthy"]
    dl = {d["subject"]: d for d in snap["dead_letters"]["subjects"]}
    assert dl[bad_subject]["count"] == 1 and dl[bad_subject]["reason"].startswith("not JSON")
    assert {s for s in dl if dl[s]["count"] != dlq_before.get(s, 0)} == {bad_subject}
    assert snap["lookups"]["ok"] >= 2 and isinstance(snap["redis"]["used_memory"], int)
    assert snap["chain"]["head"] >= 1
    streams = {s["name"]: s for s in snap["streams"]}
    assert {"LOOKUPS", "DLQ", "TRANSPORTS"} <= set(streams)
    assert any(c["name"] == "combiner" for c in streams["LOOKUPS"]["consumers"])

    # -- the trace in the logs: the good lookup's whole path, in order
    path = trace_of(cfg, good.body["guid"])
    events = [(line["process"], line["event"]) for line in path]
    assert events[0] == ("gateway", "lookup.accepted")
    # the org nodes asked first serve on their own chain event, straight back to the gateway
    asked = asked_orgs(good)
    served = {p for p, e in events if e == "share.served"}
    served_before = {
        line["process"]
        for line in path
        if line["event"] == "share.served" and line["ts"] < restarted_at
    }
    assert served_before == {f"node-{o}" for o in asked}
    # org4, stopped right after, may read this lookup's event again when it is back (its
    # reader's cursor may not have passed the block yet) and, with no memory of the intent that
    # named the others, serve it through the stream: by design, and only then
    assert served - served_before <= {"node-org4"}
    assert {p for p, e in events if e == "intake.lookup_requested"} == served
    assert ("gateway", "lookup.combined") in events
    assert all(line["trace_id"] == good.body["guid"] for line in path)
    # the lookup with org4 down: org4 is in its path only after its restart (catching up);
    # the shares used were served while it was down, and every live org asked served one
    path = trace_of(cfg, org_down.body["guid"])
    while_down = [line for line in path if line["ts"] < restarted_at]
    assert while_down and not any(line["process"] == "node-org4" for line in while_down)
    used = {f"node-{o}" for o in org_down.body["used_orgs"]}
    assert used <= {line["process"] for line in while_down if line["event"] == "share.served"}
    assert {f"node-{o}" for o in asked_orgs(org_down) if o != "org4"} <= {
        line["process"] for line in path if line["event"] == "share.served"
    }
    # the malformed message: its trace, from the traceparent header, is on the dead letter's line
    path = trace_of(cfg, bad_trace)
    assert [(line["process"], line["event"]) for line in path] == [
        ("combiner", "worker.dead_letter")
    ]
    # a refused lookup never got a guid: nothing is published, nothing to trace
    assert "guid" not in refused.body


def test_dlq_show_and_replay(live_stack):
    cfg = live_stack
    trace = secrets.token_hex(16)
    subject = f"lookup.share.{trace}"
    asyncio.run(publish_garbage(cfg, subject, trace))

    def listed():
        return dead_letters_of(cfg, subject)

    first = wait_for(listed)
    assert first and len(first) == 1
    shown = cli(cfg, "dlq", "show", str(first[0]["seq"]))
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["headers"]["Shardline-Subject"] == subject
    assert data["message"]["envelope"] is None and data["message"]["size"] == 9

    replay = cli(cfg, "dlq", "replay", str(first[0]["seq"]))
    assert replay.returncode == 0, replay.stderr
    # the original is gone; the worker saw the message again and dead-lettered it anew
    again = wait_for(lambda: (x := listed()) and x[0]["seq"] != first[0]["seq"] and x)
    assert again and len(again) == 1 and again[0]["seq"] > first[0]["seq"]
    missing = cli(cfg, "dlq", "show", str(first[0]["seq"]))
    assert missing.returncode == 2 and "no dead letter" in missing.stderr


def test_tail_shows_envelopes_and_never_a_sealed_body(live_stack, sample_sheets):
    cfg = live_stack
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "shardline", "tail", "lookup.>", "--json"),
            *("--seconds", "20", "--config", str(cfg.path)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    raw: list[bytes] = []

    async def go():
        nc = await nats.connect(cfg.nats_url)

        async def keep(m) -> None:
            raw.append(m.data)

        sub = await nc.subscribe("lookup.>", cb=keep)
        # the tail says when it has subscribed (its start may take seconds on a busy machine)
        ready = await asyncio.to_thread(proc.stderr.readline)
        assert ready.startswith("tailing lookup.>"), ready
        out = await do_lookup(cfg, sample_sheets[6].transport_id)
        await asyncio.sleep(0.5)
        await sub.unsubscribe()
        await nc.close()
        return out

    out = asyncio.run(go())
    assert out.status == 200
    stdout, stderr = proc.communicate(timeout=60)
    rows = [json.loads(line) for line in stdout.splitlines()]
    mine = [r for r in rows if r["envelope"] and r["envelope"]["trace_id"] == out.body["guid"]]
    types = {r["envelope"]["type"] for r in mine}
    # (an org node's own intake hands it the chain event in-process: no lookup.requested; the
    # shares come back on the gateway's reply subject, lookup.reply.<user>.<inbox>.<guid>)
    assert {"lookup.intent", "lookup.share"} <= types, stderr
    replies = [r for r in mine if r["subject"].startswith(f"lookup.reply.{cfg.gateway.id}.")]
    assert len(replies) >= cfg.threshold, [r["subject"] for r in mine]
    assert all(r["size"] > 0 and r["envelope"]["sender"] for r in mine)
    # the sealed boxes that passed are nowhere in the tail's output, nor is the sheet
    boxes = []
    for data in raw:
        env = json.loads(data)
        if "box" in env.get("body", {}):
            boxes.append(env["body"]["box"])
        if "sealed" in env.get("body", {}):
            boxes.append(env["body"]["sealed"])
    assert boxes
    assert not any(b[:40] in stdout for b in boxes)
    assert sample_sheets[6].proper_shipping_name not in stdout


def test_ops_api_needs_the_operator_role(live_stack):
    cfg = live_stack
    with httpx.Client(base_url=base_url(cfg), timeout=30) as client:
        page = client.get("/ops")
        assert page.status_code == 200 and "shardline ops" in page.text
        none = client.get("/ops/api/snapshot")
        assert none.status_code == 401
        responder = client.get(
            "/ops/api/snapshot", headers={"Authorization": f"Bearer {api_key(cfg, 'responder')}"}
        )
        assert responder.status_code == 403 and "operator" in responder.json()["detail"]
        op = {"Authorization": f"Bearer {api_key(cfg, 'operator')}"}
        snap = client.get("/ops/api/snapshot", headers=op)
        assert snap.status_code == 200 and {w["name"] for w in snap.json()["workers"]} >= set(
            expected_workers(cfg)
        )
        audit = client.get("/ops/api/audit", params={"org": "org2"}, headers=op)
        assert audit.status_code == 200
        rows = audit.json()["rows"]
        assert rows and {r["org"] for r in rows} == {"org2"}


def test_audit_window_and_format_for_cron(live_stack, sample_sheets):
    cfg = live_stack
    out = asyncio.run(do_lookup(cfg, sample_sheets[7].transport_id))
    assert out.status == 200
    served_after = time.time() - 60

    def audit(*args: str, as_json: tuple[str, ...] = ("--format", "json")) -> tuple[int, dict]:
        done = cli(cfg, "audit", *as_json, *args)
        assert done.returncode in (0, 1), done.stderr
        return done.returncode, json.loads(done.stdout)

    code, report = audit("--since", str(served_after))
    assert code == 0 and report["unmatched"] == 0 and report["unreachable"] == []
    mine = [r for r in report["rows"] if r["guid"] == out.body["guid"]]
    # one row per org node that served: those the gateway asked (threshold first, then a spare)
    assert {r["org"] for r in mine} == set(asked_orgs(out)) and len(mine) >= cfg.threshold
    assert all(r["status"] == "matched" for r in mine)
    assert all(r["served_at"] >= served_after for r in report["rows"])
    code, report = audit("--until", "2020-01-01T00:00:00")
    assert code == 0 and report["rows"] == []
    # --json, as the other commands spell it, prints the same report
    code, same = audit("--since", str(served_after), as_json=("--json",))
    assert code == 0 and same["unmatched"] == 0
    assert out.body["guid"] in {r["guid"] for r in same["rows"]}
    bad = cli(cfg, "audit", "--format", "xml")
    assert bad.returncode == 2 and "--format must be table or json" in bad.stderr
