"""The responders' web app, served by the gateway: the built shell at ``/`` and ``/static``,
and ``GET /session``, which tells the app whose API key it was given at sign-in.

The files are built from ``shardline/webapp/src`` with npm (``make webapp``) and committed in
``shardline/webapp/static``, so the gateway serves them with no Node at run time.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI, Header, HTTPException
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from shardline import gateways
from shardline.config import StackConfig
from shardline.core import bearer

STATIC = Path(str(resources.files("shardline") / "webapp" / "static"))

# The shell must be revalidated on every load so that a new build reaches the phones; the
# service worker keeps the offline copy.
NO_CACHE = {"Cache-Control": "no-cache"}


def router(cfg: StackConfig) -> APIRouter:
    r = APIRouter()

    @r.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=NO_CACHE)

    @r.get("/sw.js", include_in_schema=False)
    async def service_worker() -> FileResponse:
        return FileResponse(
            STATIC / "sw.js",
            media_type="text/javascript",
            headers={**NO_CACHE, "Service-Worker-Allowed": "/"},
        )

    @r.get("/manifest.webmanifest", include_in_schema=False)
    async def manifest() -> FileResponse:
        return FileResponse(
            STATIC / "manifest.webmanifest",
            media_type="application/manifest+json",
            headers=NO_CACHE,
        )

    @r.get("/session", responses={401: {"description": "missing or unknown API key"}})
    async def session(authorization: str | None = Header(default=None)) -> dict:
        """Which responder this API key belongs to: the app's sign-in check."""
        presented = bearer.presented(authorization)
        found = cfg.gateway.responder_for(presented) if presented else None
        if found is None:
            raise HTTPException(
                401,
                "missing or unknown API key: send `Authorization: Bearer <key>`",
                headers={"WWW-Authenticate": "Bearer"},
            )
        # The app asks these, its own first, when the gateway it came from does not answer.
        return {"responder": found.name, "gateways": gateways.urls(cfg)}

    return r


def install(app: FastAPI, cfg: StackConfig) -> None:
    """Serve the web app from this FastAPI app."""
    if not (STATIC / "index.html").is_file():
        raise RuntimeError(
            f"the web app is not built: {STATIC} has no index.html; run `make webapp`"
        )
    app.include_router(router(cfg))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
