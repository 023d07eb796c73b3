"""A lookup the gateway keeps after it finished: bytes, not objects the collector walks."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import logging
import time
import tracemalloc

import orjson

from shardline.bus import log
from shardline.workers import gateway


def new_state() -> gateway.LookupState:
    now = time.monotonic()
    return gateway.LookupState(
        "ab" * 16, "TR-100001", 2, ("org1", "org2", "org3"), "0xabc", now, now + 2.0
    )


def test_a_finished_lookup_answers_from_bytes_and_keeps_later_events():
    async def run() -> gateway.LookupState:
        state = new_state()
        await state.add("accepted", threshold=2, orgs=["org1", "org2", "org3"])
        await state.add("share", org="org1")
        sheet = {"un_number": "UN1203", "do": ["keep upwind"], "contact": {"phone": "+1"}}
        await state.finish(200, sheet=sheet, used_orgs=["org1", "org2"])
        await state.add("on_chain", tx="0x01", block=7)  # after the sheet, audit-after
        await state.finish(504, detail="too late")  # a second outcome is ignored
        return state

    state = asyncio.run(run())
    assert state.finished and state.status == 200 and state.done.is_set()
    assert state.terms is None and state.esk is None
    body = json.loads(state.body(guid=state.guid, transport_id="TR-100001"))
    assert body == {
        "guid": state.guid,
        "transport_id": "TR-100001",
        "status": 200,
        "sheet": {"un_number": "UN1203", "do": ["keep upwind"], "contact": {"phone": "+1"}},
        "used_orgs": ["org1", "org2"],
    }
    kinds = [state.event(i)[0] for i in range(state.event_count())]
    assert kinds == ["accepted", "share", "result", "on_chain"]
    result = json.loads(state.event(2)[1])
    assert result["status"] == 200 and result["sheet"]["un_number"] == "UN1203"
    assert json.loads(state.event(3)[1])["block"] == 7


def test_kept_json_holds_its_own_size_not_orjson_s_buffer():
    value = {"event": "share", "org": "org1", "at_ms": 1.5}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [gateway._kept_json(value) for _ in range(1000)]
        held = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert orjson.loads(kept[0]) == value
    assert held < 256, f"{held:.0f} bytes held per kept result"


def test_a_long_garbage_collection_is_logged(monkeypatch):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    try:
        log.setup(stream=out)
        log.setup(stream=out)  # set up twice: still one callback
        assert gc.callbacks.count(log._gc_pause) == 1
        monkeypatch.setattr(log, "GC_PAUSE_LOGGED_S", 0.0)
        gc.collect()
        monkeypatch.undo()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        gc.callbacks.remove(log._gc_pause)  # this test process's own collections stay unlogged
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    pauses = [x for x in lines if x["event"] == "gc.pause"]
    assert pauses and pauses[-1]["generation"] == 2 and pauses[-1]["level"] == "warning"
    assert pauses[-1]["ms"] >= 0
