"""Distribution lists on the org node's API (``/orgs/{org}/lists``).

An admin creates lists, invites orgs and accepts invitations; a user or an admin reads a list
(its roster, its pairs, how many of the org's shared contacts it serves) and verifies the
agreements against the chain. No route returns another org's data or any contact detail.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from shardline.config import ConfigError, StackConfig
from shardline.contacts import auth, guards, lists_client
from shardline.contacts.lists_client import ListError
from shardline.core.keys import ParticipantKeys

LIST_ID = r"^[0-9a-f]{32}$"


class CreateList(BaseModel):
    name: str = Field(min_length=1, max_length=200, description="The service delivered")
    capacity: int = Field(default=1, ge=1, description="This org's share of the work (weight)")


class Invite(BaseModel):
    org: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,30}$")


class Accept(BaseModel):
    capacity: int = Field(default=1, ge=1)


def router(cfg: StackConfig, orgs: list[str]) -> APIRouter:
    r = APIRouter(tags=["distribution lists"])
    keys = {o: ParticipantKeys.load(cfg.org(o).key_file) for o in orgs}
    principal, admin = guards.make({o: auth.jwt_secret(k.signing_seed) for o, k in keys.items()})

    async def call(fn, *args, **kwargs):
        try:
            out = fn(*args, **kwargs)
            return await out if asyncio.iscoroutine(out) else out
        except (ListError, ConfigError) as exc:
            status = 404 if "no distribution list" in str(exc) else 409
            raise HTTPException(status, str(exc)) from None

    @r.post("/orgs/{org}/lists", status_code=201)
    async def create(org: str, req: CreateList, who: auth.Principal = Depends(admin)) -> dict:
        return await call(asyncio.to_thread, lists_client.create, cfg, org, req.name, req.capacity)

    @r.get("/orgs/{org}/lists")
    async def all_lists(org: str, who: auth.Principal = Depends(principal)) -> list[dict]:
        return await call(asyncio.to_thread, lists_client.lists, cfg, org)

    @r.post("/orgs/{org}/lists/{list_id}/invitations", status_code=202)
    async def invite(
        org: str, list_id: str, req: Invite, who: auth.Principal = Depends(admin)
    ) -> dict:
        return await call(lists_client.invite, cfg, org, list_id, req.org)

    @r.post("/orgs/{org}/lists/{list_id}/acceptance", status_code=202)
    async def accept(
        org: str, list_id: str, req: Accept, who: auth.Principal = Depends(admin)
    ) -> dict:
        return await call(lists_client.accept, cfg, org, list_id, req.capacity)

    @r.get("/orgs/{org}/lists/{list_id}")
    async def show(org: str, list_id: str, who: auth.Principal = Depends(principal)) -> dict:
        return await call(asyncio.to_thread, lists_client.show, cfg, org, list_id, contacts=True)

    @r.get("/orgs/{org}/lists/{list_id}/verification")
    async def verify(org: str, list_id: str, who: auth.Principal = Depends(principal)) -> dict:
        checks = await call(lists_client.verify, cfg, org, list_id)
        return {
            "ok": bool(checks) and all(c.ok for c in checks),
            "pairs": [c.to_dict() for c in checks],
        }

    return r
