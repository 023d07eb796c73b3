"""Dedup as Celery batch jobs on the Redis broker.

A job is a row in the org's store (``dedup_jobs``) and a Celery task on the org's queue
(``contacts.<org>``). The task works in chunks of candidate pairs and stores each chunk's
comparison levels before it moves on, so a job killed mid-way and started again (``resume``)
skips the chunks it has and gives the same groups; the result replaces any earlier result of the
job in one transaction, so it is never doubled. Tasks are acknowledged late: a worker that dies
leaves the task on the broker for the next worker.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections import defaultdict
from functools import cache

from celery import Celery

from shardline.config import StackConfig
from shardline.contacts.store import ContactStore, to_record
from shardline.core import dedup
from shardline.core.keys import ParticipantKeys

CHUNK = int(os.environ.get("SHARDLINE_DEDUP_CHUNK", "5000"))

app = Celery("shardline.contacts")
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    result_expires=24 * 3600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


def queue(org: str) -> str:
    return f"contacts.{org}"


def configure(cfg: StackConfig) -> Celery:
    if app.conf.broker_url != cfg.redis_url:
        app.conf.broker_url = cfg.redis_url
        app.conf.result_backend = cfg.redis_url
        app._pool = None  # never reuse connections to another stack's broker
    os.environ["SHARDLINE_CONFIG"] = str(cfg.path.resolve())
    return app


@cache
def _config() -> StackConfig:
    cfg = StackConfig.load(None)
    configure(cfg)
    return cfg


@cache
def _store(url: str) -> ContactStore:
    return ContactStore(url)


def submit(cfg: StackConfig, org: str, threshold: float | None = None) -> str:
    """Create a job in the org's store and queue it; returns the job id."""
    configure(cfg)
    store = ContactStore(cfg.org(org).database_url)
    job_id = secrets.token_hex(16)
    store.create_job(job_id, threshold)
    store.update_job(job_id, contacts=max((c.id for c in store.contacts()), default=0))
    run_dedup.apply_async(args=[org, job_id], queue=queue(org), task_id=job_id)
    return job_id


def resume(cfg: StackConfig, org: str, job_id: str) -> None:
    """Queue an unfinished job again: it keeps the chunks it has."""
    configure(cfg)
    store = ContactStore(cfg.org(org).database_url)
    job = store.job(job_id)
    if job.state == "done":
        raise ValueError(f"dedup job {job_id} is done; nothing to resume")
    run_dedup.apply_async(args=[org, job_id], queue=queue(org), task_id=f"{job_id}-{job.attempts}")


@app.task(name="shardline.contacts.dedup", bind=True)
def run_dedup(self, org: str, job_id: str) -> dict:
    cfg = _config()
    o = cfg.org(org)
    store = _store(o.database_url)
    keys = ParticipantKeys.load(o.key_file)
    from shardline.contacts.progress import ProgressPublisher

    pub = ProgressPublisher(cfg.nats_url, keys, org, job_id)
    try:
        return execute(store, job_id, pub)
    except Exception as exc:
        store.update_job(job_id, state="failed", stage="failed", error=str(exc)[:2000])
        pub.send("failed", "failed", 0, 0, detail=str(exc)[:500])
        raise
    finally:
        pub.close()


def execute(store: ContactStore, job_id: str, pub) -> dict:
    """The job itself: resumable, deterministic for a given store snapshot."""
    job = store.job(job_id)
    if job.state == "done":  # a copy the broker redelivered after the job was resumed elsewhere
        return {"job": job_id, "groups": job.groups, "pairs": job.total, "model": job.model_json}
    store.update_job(job_id, state="running", stage="loading", attempts=job.attempts + 1)
    pub.send("running", "loading", 0, 0)
    rows = [c for c in store.contacts(live_only=True) if c.id <= job.contacts]
    prepared = [dedup.prepare(c.id, to_record(c)) for c in rows]
    by_id = {p.id: p for p in prepared}
    pub.send("running", "blocking", 0, len(prepared))
    pairs = dedup.candidate_pairs(prepared)
    chunks = [pairs[i : i + CHUNK] for i in range(0, len(pairs), CHUNK)]
    have = store.done_chunks(job_id)
    store.update_job(job_id, stage="scoring", total=len(pairs))
    levels: list[tuple[int, ...]] = []
    done = 0
    for n, chunk in enumerate(chunks):
        if n in have:
            got = [tuple(lv) for lv in have[n]]
        else:
            got = [dedup.compare(by_id[a], by_id[b]) for a, b in chunk]
            store.save_chunk(job_id, n, got)
        levels.extend(got)
        done += len(chunk)
        store.update_job(job_id, done=done)
        pub.send("running", "scoring", done, len(pairs))
    pub.send("running", "estimating", done, len(pairs))
    patterns: dict[tuple[int, ...], int] = defaultdict(int)
    for lv in levels:
        patterns[lv] += 1
    model = dedup.estimate(patterns)
    threshold = job.threshold if job.threshold is not None else dedup.default_threshold(model)
    weights = model.weights()
    scored = [(a, b, model.score(lv, weights)) for (a, b), lv in zip(pairs, levels, strict=True)]
    pub.send("running", "clustering", done, len(pairs))
    accepted, rejected = store.reviews()
    matched = [(a, b) for a, b, s in scored if s >= threshold]
    groups = dedup.cluster(matched, accepted, rejected)
    kept = [(a, b, s) for a, b, s in scored if s >= threshold]
    store.save_result(job_id, groups, kept, model.to_dict(), threshold)
    pub.send("done", "done", done, len(pairs), groups=len(groups))
    return {
        "job": job_id,
        "groups": len(groups),
        "pairs": len(pairs),
        "model": json.dumps(model.to_dict()),
    }


def node_name(orgs: list[str]) -> str:
    """One name per worker process: workers of the same org on several hosts (or several on
    one host) share the org's queue, and Celery tells its workers apart by this name."""
    return f"contacts-{'-'.join(orgs)}.{os.getpid()}@{socket.gethostname()}"


def worker_main(cfg: StackConfig, orgs: list[str], concurrency: int = 1) -> None:
    """Run a Celery worker (prefork) for these orgs' queues, in the foreground."""
    configure(cfg)
    app.worker_main(
        [
            "worker",
            "--loglevel=INFO",
            f"--concurrency={concurrency}",
            "--pool=prefork",
            "-Q",
            ",".join(queue(o) for o in orgs),
            "-n",
            node_name(orgs),
            "--without-gossip",
            "--without-mingle",
        ]
    )
