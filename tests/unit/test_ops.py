"""The ops console's pure parts: trace headers, what the tail may show, the trace search over
log files, the metrics parser and the operator's key."""

from __future__ import annotations

import hashlib
import io
import json
import logging

import pytest

from shardline.bus import envelope, log, telemetry
from shardline.config import GatewayConfig, Operator, Responder
from shardline.core.keys import ParticipantKeys
from shardline.ops import logs, metrics
from shardline.ops.tail import describe


def test_traceparent_is_w3c_with_a_fresh_span_each_hop():
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    a, b = telemetry.traceparent(trace), telemetry.traceparent(trace)
    assert a.startswith(f"00-{trace}-") and a.endswith("-01") and len(a) == 55
    assert a != b  # each hop's span id is its own
    assert telemetry.parse_traceparent(a) == (trace, a[36:52])


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace id
    ],
)
def test_a_malformed_traceparent_is_ignored(value):
    assert telemetry.parse_traceparent(value) is None


def test_a_bound_trace_reaches_every_log_line_unless_one_is_given():
    out = io.StringIO()
    log.setup(stream=out)
    try:
        telemetry.bind("ab" * 16)
        log.event("step.one", guid="x")
        log.event("step.two", trace_id="cd" * 16)
        telemetry.bind("")
        log.event("step.three")
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line.get("trace_id") for line in lines] == ["ab" * 16, "cd" * 16, None]


def test_the_tail_shows_envelope_fields_and_never_a_sealed_body():
    reader = ParticipantKeys.generate("gateway")
    sender = ParticipantKeys.generate("org1")
    secret = {"guid": "ab" * 16, "ok": False, "error": "UN1203", "used_orgs": [], "bad_orgs": []}
    env = envelope.make(
        "lookup.progress",
        {"guid": "ab" * 16, "org": "org1", "stage": "share", "detail": ""},
        sender,
        trace_id="ab" * 16,
    )
    shown = describe(env.to_bytes(), {"traceparent": "00-x", "Other": "y"})
    assert shown["envelope"]["sender"] == "org1" and shown["envelope"]["type"] == "lookup.progress"
    assert shown["body"] == {"plain_fields": ["detail", "guid", "org", "stage"]}
    assert shown["headers"] == {"traceparent": "00-x"}
    sealed = envelope.make(
        "lookup.result",
        secret,
        sender,
        seal_to=(reader.participant_id, reader.sealing_public),
        trace_id="ab" * 16,
    )
    text = json.dumps(describe(sealed.to_bytes()))
    assert "UN1203" not in text and sealed.body["box"][:20] not in text
    assert json.loads(text)["body"]["sealed_to"] == "gateway"
    raw = json.dumps({"type": "t", "sender": "s", "body": {"sealed_to": "gw", "box": "QUJD" * 50}})
    shown = describe(raw.encode())
    assert shown["body"] == {"sealed_to": "gw", "sealed_bytes": 150}
    assert "QUJD" not in json.dumps(shown)
    assert describe(b"{not json")["problem"].startswith("not JSON")
    assert describe(b'{"a": 1}')["envelope"] is None


def test_logs_trace_finds_one_trace_across_processes_in_time_order(tmp_path):
    t = "ab" * 16
    (tmp_path / "gateway.log").write_text(
        json.dumps({"ts": 2.0, "event": "lookup.accepted", "trace_id": t})
        + "\nnot json "
        + t
        + "\n"
        + json.dumps({"ts": 1.0, "event": "other", "trace_id": "cd" * 16})
        + "\n"
    )
    (tmp_path / "node-org1.log").write_text(
        json.dumps({"ts": 1.5, "event": "intake.lookup_requested", "guid": t}) + "\n"
    )
    found = logs.trace(tmp_path, t.upper())
    assert [(f["process"], f["event"]) for f in found] == [
        ("node-org1", "intake.lookup_requested"),
        ("gateway", "lookup.accepted"),
    ]
    with pytest.raises(logs.TraceError, match="not a trace id"):
        logs.trace(tmp_path, "TR-100001")
    with pytest.raises(logs.TraceError, match="no logs"):
        logs.trace(tmp_path / "missing", t)


def test_metrics_parse_keeps_names_and_labels():
    text = (
        "# TYPE shardline_lookups_total counter\n"
        'shardline_lookups_total{outcome="ok"} 3.0\n'
        'shardline_lookups_total{outcome="http_403"} 1.0\n'
        "# TYPE shardline_chain_intake_lag_blocks gauge\n"
        "shardline_chain_intake_lag_blocks 2.0\n"
    )
    assert metrics.parse(text) == {
        'shardline_lookups_total{outcome="ok"}': 3.0,
        'shardline_lookups_total{outcome="http_403"}': 1.0,
        "shardline_chain_intake_lag_blocks": 2.0,
    }


def test_an_operator_key_is_not_a_responder_key(tmp_path):
    def digest(k: str) -> str:
        return hashlib.sha256(k.encode()).hexdigest()

    gw = GatewayConfig(
        key_file=tmp_path / "gw.json",
        responders=[Responder(name="r", api_key_sha256=digest("rk"), key_file=tmp_path / "r")],
        operators=[Operator(name="op", api_key_sha256=digest("ok"))],
    )
    assert gw.operator_for("ok").name == "op" and gw.responder_for("ok") is None
    assert gw.operator_for("rk") is None and gw.responder_for("rk").name == "r"
    assert gw.operator_for("") is None
