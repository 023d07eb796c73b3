"""Dedup as real Celery jobs on the real Redis broker, with progress on the real NATS bus."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import nats
import pytest

from shardline.contacts import jobs, synth
from shardline.contacts.importer import import_file
from shardline.contacts.store import ContactStore, contact_secret
from shardline.core.keys import ParticipantKeys
from tests.integration.contacts_env import CeleryWorker, contacts_config

pytestmark = pytest.mark.integration

PEOPLE = 6000


@pytest.fixture(scope="module")
def env(tmp_path_factory, nats_url, redis_url):
    run_dir = tmp_path_factory.mktemp("contacts")
    cfg = contacts_config(run_dir, nats_url, redis_url)
    store = ContactStore(cfg.org("org1").database_url)
    data = run_dir / "people.csv"
    data.write_text(synth.to_csv(synth.people(PEOPLE, seed=11)))
    secret = contact_secret(ParticipantKeys.load(cfg.org("org1").key_file).signing_seed)
    report = import_file(store, data, secret, synth.MAPPING)
    assert report.imported == PEOPLE
    return cfg, store


def wait_state(store: ContactStore, job_id: str, states: set[str], timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = store.job(job_id).state
        if state in states:
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {store.job(job_id).state} after {timeout} s")


async def collect_progress(nats_url: str, job_id: str, until_state: str):
    nc = await nats.connect(nats_url)
    got: list[dict] = []
    finished = asyncio.Event()

    async def on(msg):
        body = json.loads(msg.data)["body"]
        got.append(body)
        if body["state"] == until_state:
            finished.set()

    await nc.subscribe(f"dedup.job.{job_id}.progress", cb=on)
    return nc, got, finished


def test_a_job_runs_on_a_real_worker_and_reports_progress_on_the_bus(env):
    cfg, store = env
    worker = CeleryWorker(cfg)
    try:

        async def run():
            job_id = jobs.submit(cfg, "org1")
            nc, got, finished = await collect_progress(cfg.nats_url, job_id, "done")
            await asyncio.wait_for(finished.wait(), 240)
            await nc.close()
            return job_id, got

        job_id, got = asyncio.run(run())
    finally:
        worker.stop()
    job = store.job(job_id)
    assert job.state == "done" and job.groups > 0
    stages = [g["stage"] for g in got]
    assert "scoring" in stages and stages[-1] == "done"
    assert got[-1]["groups"] == job.groups == len(store.groups(job_id))


def test_an_interrupted_job_gives_the_same_groups(env):
    cfg, store = env
    small = {"SHARDLINE_DEDUP_CHUNK": "500"}
    # the reference: a job that runs through
    worker = CeleryWorker(cfg, small)
    try:
        ref = jobs.submit(cfg, "org1")
        wait_state(store, ref, {"done", "failed"})
    finally:
        worker.stop()
    assert store.job(ref).state == "done"

    # the same job killed (SIGKILL) once it has stored some chunks, then resumed on a new worker
    worker = CeleryWorker(cfg, small)
    job_id = jobs.submit(cfg, "org1")
    deadline = time.monotonic() + 240
    while not store.done_chunks(job_id):
        assert time.monotonic() < deadline and store.job(job_id).state != "failed"
        time.sleep(0.01)
    os.killpg(worker.proc.pid, signal.SIGSTOP)  # freeze it mid-way, then kill it
    worker.kill()
    job = store.job(job_id)
    assert job.state == "running", "the job finished before it could be interrupted"
    kept = len(store.done_chunks(job_id))
    assert kept >= 1
    worker = CeleryWorker(cfg, small)
    try:
        jobs.resume(cfg, "org1", job_id)
        wait_state(store, job_id, {"done", "failed"})
    finally:
        worker.stop()
    job = store.job(job_id)
    assert job.state == "done" and job.attempts == 2
    assert store.groups(job_id) == store.groups(ref)
    assert len(store.groups(job_id)) == store.job(job_id).groups  # the result is not doubled
