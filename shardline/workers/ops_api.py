"""The ops page at ``/ops`` and its JSON, for the people who run the consortium.

The page is a static shell; everything it shows comes from ``/ops/api/*``, which needs an
operator's API key (``Authorization: Bearer <key>``, ``.shardline/keys/operator.apikey`` on the
local stack), checked the way the gateway checks a responder's key. A responder's key is refused
with 403: the operator role is a separate key, not a responder's privilege.

- ``GET /ops/api/snapshot``: the monitor's picture (`shardline monitor --json`), read live;
- ``GET /ops/api/audit``: every on-chain request beside the shares served for it, filtered by
  org, requester and time, unmatched ones counted (`shardline audit`).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse

from shardline.config import Operator, StackConfig
from shardline.core import bearer

PAGE = Path(__file__).resolve().parents[1] / "ops" / "ops.html"
SNAPSHOT_MAX_AGE_S = 0.5  # several open pages share one reading of the stack


def ops_router(cfg: StackConfig) -> APIRouter:
    router = APIRouter(tags=["ops"])
    cache: dict[str, Any] = {"at": 0.0, "value": None}
    lock = asyncio.Lock()

    async def operator(
        authorization: str | None = Header(default=None),
        x_api_key: str | None = Header(default=None),
    ) -> Operator:
        presented = bearer.presented(authorization, x_api_key)
        if presented:
            found = cfg.gateway.operator_for(presented)
            if found is not None:
                return found
            if cfg.gateway.responder_for(presented) is not None:
                raise HTTPException(
                    403, "this key has no operator role: the ops page needs an operator's key"
                )
        raise HTTPException(
            401,
            "missing or unknown API key: send an operator's key as `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )

    @router.get("/ops", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html", headers={"Cache-Control": "no-store"})

    @router.get("/ops/api/session")
    async def session(who: Operator = Depends(operator)) -> dict:
        return {"operator": who.name}

    @router.get("/ops/api/snapshot")
    async def snapshot(request: Request, _who: Operator = Depends(operator)) -> dict:
        from shardline.ops.snapshot import collect

        async with lock:
            if cache["value"] is None or time.monotonic() - cache["at"] > SNAPSHOT_MAX_AGE_S:
                gw = getattr(request.app.state, "gateway", None)
                cache["value"] = await collect(
                    cfg, getattr(gw, "nc", None), getattr(gw, "redis", None)
                )
                cache["at"] = time.monotonic()
            return cache["value"]

    @router.get("/ops/api/audit")
    async def audit(
        _who: Operator = Depends(operator),
        org: str | None = Query(default=None, description="only this org's served shares"),
        requester: str | None = Query(default=None, description="only this chain account"),
        since: float = Query(default=0.0, description="served at or after (epoch seconds)"),
        until: float | None = Query(default=None, description="served before (epoch seconds)"),
        grace: float = Query(default=30.0, description="seconds a share may await its request"),
    ) -> dict:
        from shardline import audit as auditing

        report = await auditing.run(cfg, since=since, until=until, grace_s=grace)
        rows = [
            r
            for r in report.rows
            if (not org or r.org == org)
            and (not requester or r.requester.lower() == requester.lower())
        ]
        report.rows = rows
        return report.to_dict()

    return router
