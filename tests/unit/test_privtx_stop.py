"""A facilitator stops when it is told to, even when a block lands in the same turn.

On Python 3.11 ``asyncio.wait_for`` swallows a cancellation that arrives in the same turn of the
event loop as what it waits for (the awaited task is done first, so wait_for returns its result
and the cancel is lost). A reader waiting for the next head, or a vote batch lingering for its
last executions, then carries on, and ``Facilitator.stop()``, which cancels its tasks and awaits
them, waits for ever: under load, when many sockets turn ready in one turn, that is what hung the
BLS integration test now and then. These tests cancel in exactly that turn, many times over.
"""

from __future__ import annotations

import asyncio
import secrets

from shardline.contracts.cursor import EventReader, HeadWatcher, Rpc
from shardline.core.logpoller import Cursor
from shardline.workers.privtx_facilitator import Facilitator, FacilitatorConfig

ROUNDS = 50


async def _cancelled_within(task: asyncio.Task, seconds: float = 2.0) -> bool:
    done, _ = await asyncio.wait({task}, timeout=seconds)
    return task in done and task.cancelled()


async def test_a_reader_stops_when_cancelled_in_the_turn_its_head_arrives():
    heads = HeadWatcher("ws://127.0.0.1:9")  # never started: the test plays the node's push
    heads.live, heads.latest = True, 1
    reader = EventReader(
        Rpc(None),  # type: ignore[arg-type]  # caught up at block 1: nothing is read
        Cursor(start=2),
        addresses=lambda: [],
        topics0=[],
        heads=heads,
    )

    async def handle(_log) -> None:
        raise AssertionError("nothing to read")

    assert await reader.step(handle) == 0 and reader.caught_up  # so follow waits for a head

    for _ in range(ROUNDS):
        task = asyncio.create_task(reader.follow(handle, event="test.step_failed"))
        await asyncio.sleep(0.005)  # the reader waits for the next head
        heads.event.set()  # a head lands ...
        task.cancel()  # ... in the turn stop() cancels the reader
        assert await _cancelled_within(task), "the reader read on after it was cancelled"


async def test_a_lingering_vote_batch_stops_when_cancelled_as_the_executions_drain(tmp_path):
    cfg = FacilitatorConfig(
        name="acme",
        account_key="0x" + secrets.token_bytes(32).hex(),
        sealing_sk=secrets.token_bytes(32),
        executor_url="http://127.0.0.1:9",  # never called: the batch is cancelled first
        chain_rpc="http://127.0.0.1:9",
        mediator="0x" + "00" * 20,
        start_block=0,
        nats_url="nats://127.0.0.1:9",
        database_url=f"sqlite:///{tmp_path / 'f.db'}",
    )
    f = Facilitator(cfg)
    try:
        f.fast = object()  # as with the node pushing PrivateTxInit
        f.inits = asyncio.Queue()
        for _ in range(ROUNDS):
            f.inits.put_nowait(object())  # one PrivateTxInit still to be executed ...
            task = asyncio.create_task(f._send_votes())
            f._queue_vote(b"\1" * 32, secrets.token_bytes(32), b"\2" * 32, b"\3" * 32)
            await asyncio.sleep(0.005)  # ... so the vote batch lingers for it
            f.inits.get_nowait()
            f.drained.set()  # the last execution is taken ...
            task.cancel()  # ... in the turn stop() cancels the vote sender
            assert await _cancelled_within(task), "the vote sender went on after it was cancelled"
            f.votes.clear()
            f.vote_ready.clear()
    finally:
        await f.executor.close()
        f.store.close()
