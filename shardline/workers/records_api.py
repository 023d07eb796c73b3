"""The gateway's /records routes: the same flows as `shardline records`, over REST.

A caller is a records party and authenticates with its API key (``Authorization: Bearer``),
made by `shardline records keygen` beside its keys. The gateway acts with that party's keys, so
it runs in the party's trust domain (a hospital's gateway for its readers, a patient's own).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from pathlib import Path

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from pydantic import BaseModel, Field

from shardline.config import StackConfig
from shardline.contracts.client import ChainError
from shardline.core import bearer
from shardline.core import records as rc
from shardline.core.keys import KeyFileError
from shardline.workers.records_client import RecordsClient


class RecordStored(BaseModel):
    record_id: str
    size: int
    content_hash: str


class GrantRequest(BaseModel):
    reader: str = Field(description="The reader's records party id, e.g. st-marys")
    threshold: int | None = Field(default=None, description="Proxies needed (default: the stack's)")
    proxies: list[str] | None = Field(
        default=None, description="Org ids (default: every active org)"
    )
    expires_at: int | None = Field(default=None, description="Unix seconds")
    expires_in_s: int | None = Field(default=None, description="Seconds from now (default 30 days)")


class GrantOut(BaseModel):
    record_id: str
    reader: str
    threshold: int
    proxies: list[str]
    expires_at: int
    version: int
    proxies_without_fragment: list[str]


STATUS = {
    rc.UnknownRecord: 404,
    rc.UnknownReader: 404,
    rc.AccessRefused: 403,
    rc.NotEnoughProxies: 503,
    rc.TamperedCiphertext: 502,
}


def http_error(exc: rc.RecordError) -> HTTPException:
    status = next((s for t, s in STATUS.items() if isinstance(exc, t)), 400)
    return HTTPException(
        status, {"detail": str(exc), "record_id": exc.record_id, "reader": exc.reader_id}
    )


def records_router(cfg: StackConfig) -> APIRouter:
    router = APIRouter(prefix="/records", tags=["records"])
    keys_dir = cfg.run_dir / "keys" / "records"
    state: dict = {"client": None, "lock": asyncio.Lock()}

    async def client() -> RecordsClient:
        async with state["lock"]:
            if state["client"] is None:
                state["client"] = await RecordsClient.connect(
                    cfg.nats_url, cfg.chain_rpc, cfg.deployment or {}, name="gateway-records"
                )
            return state["client"]

    def party(authorization: str | None = Header(default=None)) -> rc.PartyKeys:
        presented = bearer.presented(authorization)
        digest = hashlib.sha256(presented.encode()).digest()
        found: Path | None = None
        for f in sorted(keys_dir.glob("*.apikey")) if presented else []:
            if hmac.compare_digest(digest, hashlib.sha256(f.read_text().strip().encode()).digest()):
                found = f
        if found is None:
            raise HTTPException(
                401,
                "missing or unknown records API key: send `Authorization: Bearer <key>` "
                "(made by `shardline records keygen`)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            return rc.PartyKeys.load(found.with_suffix(".json"))
        except KeyFileError as exc:
            raise HTTPException(500, str(exc)) from None

    async def run(coro):
        try:
            return await coro
        except rc.RecordError as exc:
            raise http_error(exc) from None
        except ChainError as exc:
            raise HTTPException(502, str(exc)) from None

    @router.post("", status_code=201, response_model=RecordStored)
    async def put_record(request: Request, who: rc.PartyKeys = Depends(party)) -> RecordStored:
        """Encrypt the request body (any bytes) under the caller's key and store it."""
        data = await request.body()
        c = await client()
        info = await run(c.put(who, data))
        return RecordStored(
            record_id=info.record_id, size=info.size, content_hash=info.content_hash.hex()
        )

    @router.get("")
    async def list_records(who: rc.PartyKeys = Depends(party)) -> dict:
        """The caller's records with their grants, and the records granted to the caller."""
        c = await client()
        return await run(c.listing(who.id))

    @router.post(
        "/{record_id}/grants",
        status_code=201,
        response_model=GrantOut,
        responses={404: {"description": "unknown record or reader"}},
    )
    async def grant(
        record_id: str, req: GrantRequest, who: rc.PartyKeys = Depends(party)
    ) -> GrantOut:
        import time

        expires_at = req.expires_at or int(time.time() + (req.expires_in_s or 30 * 86400))
        c = await client()

        async def work():
            g = await c.grant(
                who,
                record_id,
                req.reader,
                threshold=req.threshold or cfg.threshold,
                proxies=req.proxies,
                expires_at=expires_at,
            )
            return g, await c.wait_held(g, timeout_s=5.0)

        g, missing = await run(work())
        return GrantOut(
            record_id=record_id,
            reader=g.reader,
            threshold=g.threshold,
            proxies=list(g.proxies),
            expires_at=g.expires_at,
            version=g.version,
            proxies_without_fragment=missing,
        )

    @router.delete("/{record_id}/grants/{reader}")
    async def revoke(record_id: str, reader: str, who: rc.PartyKeys = Depends(party)) -> dict:
        """Revoke: every proxy refuses from the returned block on."""
        c = await client()
        block = await run(c.revoke(who, record_id, reader))
        return {"record_id": record_id, "reader": reader, "revoked_in_block": block}

    @router.get(
        "/{record_id}",
        response_class=Response,
        responses={
            200: {"content": {"application/octet-stream": {}}},
            403: {"description": "no live grant (never granted, revoked or expired)"},
            404: {"description": "unknown record"},
            502: {"description": "the stored ciphertext was tampered with"},
            503: {"description": "fewer than m proxies gave a good capsule fragment"},
        },
    )
    async def read(record_id: str, who: rc.PartyKeys = Depends(party)) -> Response:
        """Read a record granted to the caller: all of it or an error, never a part."""
        c = await client()
        result = await run(c.get(who, record_id))
        return Response(
            result.plaintext,
            media_type="application/octet-stream",
            headers={
                "X-Shardline-Used-Proxies": ",".join(result.used),
                "X-Shardline-Bad-Proxies": ",".join(result.bad),
                "X-Shardline-Elapsed-Ms": str(result.elapsed_ms),
            },
        )

    return router
