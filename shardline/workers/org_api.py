"""An org node's HTTP API: the contacts routes (``/orgs/{org}/...``) with OpenAPI at ``/docs``."""

from __future__ import annotations

from fastapi import FastAPI

from shardline.bus import log
from shardline.config import StackConfig
from shardline.contacts.api import router as contacts_router
from shardline.contacts.lists_api import router as lists_router


def create_app(cfg: StackConfig, orgs: list[str]) -> FastAPI:
    app = FastAPI(
        title="shardline org node",
        version="0.1.0",
        description="An org's contacts: import, dedup, private matching with peer orgs.",
    )
    app.include_router(contacts_router(cfg, orgs))
    app.include_router(lists_router(cfg, orgs))

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "orgs": orgs}

    return app


def serve(cfg: StackConfig, orgs: list[str]) -> None:
    import uvicorn

    log.setup()
    uvicorn.run(
        create_app(cfg, orgs),
        host=cfg.gateway.host,
        port=cfg.contacts_api_port,
        log_level="warning",
        access_log=False,
    )
