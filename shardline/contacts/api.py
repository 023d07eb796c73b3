"""The contacts REST API of an org node (FastAPI router; OpenAPI at ``/docs``).

Every route is under ``/orgs/{org}/`` and needs ``Authorization: Bearer <jwt>`` for that org.
Admins load, see, dedup, review and merge contacts; users run matches and read their results.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from shardline.config import ConfigError, StackConfig
from shardline.contacts import auth, guards
from shardline.contacts.store import ContactStore, StoreError, contact_secret
from shardline.core.contacts import FIELDS, MappingError, identity_mapping, read_file_text
from shardline.core.keys import ParticipantKeys


class ImportRequest(BaseModel):
    content: str = Field(description="The file's text: CSV with a header, or JSON")
    format: Literal["csv", "json"] = "csv"
    mapping: dict[str, str | list[str]] | None = Field(
        default=None, description="field -> column(s); default: columns named like fields"
    )
    file_name: str = "upload"


class MatchRequest(BaseModel):
    peer: str
    pad_to: int = Field(default=0, ge=0)
    timeout_s: float = Field(default=600.0, ge=1, le=86400)


class ReviewRequest(BaseModel):
    a: int
    b: int
    decision: Literal["accept", "reject"]


class DedupRequest(BaseModel):
    threshold: float | None = None


def router(cfg: StackConfig, orgs: list[str]) -> APIRouter:
    r = APIRouter(tags=["contacts"])
    stores: dict[str, ContactStore] = {}
    keys = {o: ParticipantKeys.load(cfg.org(o).key_file) for o in orgs}
    secrets_ = {o: auth.jwt_secret(k.signing_seed) for o, k in keys.items()}

    def store(org: str) -> ContactStore:
        if org not in stores:
            stores[org] = ContactStore(cfg.org(org).database_url)
        return stores[org]

    principal, admin = guards.make(secrets_)

    @r.post("/orgs/{org}/contacts/imports", status_code=201)
    async def import_contacts(
        org: str, req: ImportRequest, who: auth.Principal = Depends(admin)
    ) -> dict[str, Any]:
        try:
            if req.mapping is None:
                first = req.content.splitlines()[0] if req.content else ""
                mapping = identity_mapping(c.strip() for c in first.split(","))
            else:
                mapping = req.mapping
            result = await asyncio.to_thread(read_file_text, req.content, req.format, mapping)
        except MappingError as exc:
            raise HTTPException(422, str(exc)) from None
        report = await asyncio.to_thread(
            store(org).import_result,
            result,
            file_name=req.file_name,
            file_sha256=hashlib.sha256(req.content.encode()).hexdigest(),
            fmt=req.format,
            mapping=mapping,
            secret=contact_secret(keys[org].signing_seed),
        )
        return {
            "import_id": report.import_id,
            "rows": report.rows,
            "imported": report.imported,
            "already": report.already,
            "errors": [e.__dict__ for e in report.errors],
        }

    @r.get("/orgs/{org}/contacts")
    async def list_contacts(
        org: str, offset: int = 0, limit: int = 100, who: auth.Principal = Depends(admin)
    ) -> list[dict]:
        rows = await asyncio.to_thread(store(org).page, offset, min(limit, 1000))
        return [
            {"id": c.id, "merged_into": c.merged_into, **{f: getattr(c, f) for f in FIELDS}}
            for c in rows
        ]

    @r.post("/orgs/{org}/dedup/jobs", status_code=202)
    async def start_dedup(
        org: str, req: DedupRequest, who: auth.Principal = Depends(admin)
    ) -> dict:
        from shardline.contacts import jobs

        job_id = await asyncio.to_thread(jobs.submit, cfg, org, req.threshold)
        return {"job": job_id, "progress_subject": f"dedup.job.{job_id}.progress"}

    @r.get("/orgs/{org}/dedup/jobs/{job}")
    async def dedup_state(org: str, job: str, who: auth.Principal = Depends(admin)) -> dict:
        try:
            j = await asyncio.to_thread(store(org).job, job)
        except StoreError as exc:
            raise HTTPException(404, str(exc)) from None
        return {
            k: getattr(j, k)
            for k in (
                "id",
                "state",
                "stage",
                "done",
                "total",
                "groups",
                "attempts",
                "error",
                "threshold",
            )
        }

    @r.get("/orgs/{org}/dedup/jobs/{job}/groups")
    async def dedup_groups(org: str, job: str, who: auth.Principal = Depends(admin)) -> list[dict]:
        s = store(org)
        groups = await asyncio.to_thread(s.groups, job)
        pairs = await asyncio.to_thread(s.pairs, job)
        by_group: dict[int, list] = {}
        for p in pairs:
            by_group.setdefault(p.group_no, []).append(
                {"a": p.a, "b": p.b, "score": round(p.score, 3)}
            )
        return [
            {"group": n, "contacts": g, "pairs": by_group.get(n, [])}
            for n, g in enumerate(groups, 1)
        ]

    @r.post("/orgs/{org}/dedup/reviews", status_code=201)
    async def review(org: str, req: ReviewRequest, who: auth.Principal = Depends(admin)) -> dict:
        try:
            await asyncio.to_thread(store(org).review, req.a, req.b, req.decision, who.subject)
        except StoreError as exc:
            raise HTTPException(404, str(exc)) from None
        return {"a": min(req.a, req.b), "b": max(req.a, req.b), "decision": req.decision}

    @r.post("/orgs/{org}/dedup/jobs/{job}/groups/{group}/merge", status_code=201)
    async def merge(org: str, job: str, group: int, who: auth.Principal = Depends(admin)) -> dict:
        try:
            m = await asyncio.to_thread(store(org).merge, job, group, who.subject)
        except StoreError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"merge": m.id, "survivor": m.survivor}

    @r.delete("/orgs/{org}/merges/{merge_id}")
    async def unmerge(org: str, merge_id: int, who: auth.Principal = Depends(admin)) -> dict:
        try:
            m = await asyncio.to_thread(store(org).undo_merge, merge_id)
        except StoreError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"merge": m.id, "undone_at": m.undone_at}

    @r.post("/orgs/{org}/matches", status_code=202)
    async def start_match(
        org: str, req: MatchRequest, who: auth.Principal = Depends(principal)
    ) -> dict:
        from shardline.contacts.matching import MatchError
        from shardline.contacts.matching import start_match as start

        try:
            session = await start(cfg, org, req.peer, pad_to=req.pad_to, timeout_s=req.timeout_s)
        except (MatchError, ConfigError) as exc:
            raise HTTPException(409, str(exc)) from None
        return {"session": session}

    @r.get("/orgs/{org}/matches/{session}")
    async def match_state(org: str, session: str, who: auth.Principal = Depends(principal)) -> dict:
        s = store(org)
        try:
            row = await asyncio.to_thread(s.psi_session, session)
        except StoreError as exc:
            raise HTTPException(404, str(exc)) from None
        shared = await asyncio.to_thread(s.shared, session) if row.state == "done" else []
        return {
            "session": row.id,
            "peer": row.peer,
            "state": row.state,
            "detail": row.detail,
            "sent": row.mine,
            "received": row.theirs,
            "shared_contacts": row.shared_contacts,
            # ids inside this org's own store, never details: a user sees which, not who
            "shared_contact_ids": [x.contact_id for x in shared],
        }

    return r
