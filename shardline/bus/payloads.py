"""Sealed private-transaction payloads in the JetStream object store, named by SHA3-256.

The mediator's payload hash is the SHA3-256 of the ciphertext and the object's name is that
hash in hex, so a stakeholder fetches by what the chain says and checks what came back against
it before it unwraps anything. Only ciphertext is ever stored here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from nats.js import JetStreamContext
from nats.js.api import ObjectInfo, ObjectMeta
from nats.js.errors import ObjectNotFoundError

from .blobs import BlobCorrupt, BlobNotFound, BlobStore

BUCKET = "privtx"


def payload_name(ciphertext: bytes) -> str:
    return hashlib.sha3_256(ciphertext).hexdigest()


class PayloadStore:
    def __init__(self, blobs: BlobStore) -> None:
        self.store = blobs.store
        self.nc = blobs.js._nc
        self._api = f"{blobs.js._prefix}.DIRECT.GET.OBJ_{blobs.bucket}"
        self.bucket = blobs.bucket

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str = BUCKET) -> PayloadStore:
        return cls(await BlobStore.open(js, bucket))

    async def put(self, ciphertext: bytes) -> str:
        """Store ``ciphertext`` under its SHA3-256; the same bytes twice is one object."""
        name = payload_name(ciphertext)
        await self.store.put(name, ciphertext, meta=ObjectMeta(name=name))
        return name

    async def get(self, name: str) -> bytes:
        """The ciphertext stored under ``name``, checked against it.

        Read by direct gets (the object's entry, then its chunks in one batch): what an org's
        nkey user may do (no consumer of its own, no stream lookups); else by the object
        store's own reader."""
        data = await self._get_direct(name)
        if data is None:
            data = await self._get_consumer(name)
        if not hmac.compare_digest(payload_name(data), name):
            raise BlobCorrupt(f"payload {name} does not hash to its name: it was rewritten")
        return data

    async def _get_direct(self, name: str) -> bytes | None:
        token = base64.urlsafe_b64encode(name.encode()).decode()
        meta = await self.nc.request(f"{self._api}.$O.{self.bucket}.M.{token}", b"", timeout=10)
        status = (meta.headers or {}).get("Status")
        if status == "404":
            raise BlobNotFound(f"no payload {name} in the object store {self.bucket!r}")
        if status:
            return None
        try:
            info = ObjectInfo.from_response(json.loads(meta.data))
        except Exception as exc:
            raise BlobCorrupt(f"payload {name} has a malformed entry: {exc!r}") from None
        if info.deleted:
            raise BlobNotFound(f"no payload {name} in the object store {self.bucket!r}")
        if info.is_link() or not info.nuid or not info.chunks:
            return None
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        parts = []
        try:
            request = {"seq": 1, "next_by_subj": f"$O.{self.bucket}.C.{info.nuid}"}
            request["batch"] = int(info.chunks)
            await self.nc.publish(self._api, json.dumps(request).encode(), reply=inbox)
            while True:
                msg = await sub.next_msg(timeout=10)
                status = (msg.headers or {}).get("Status")
                if status:  # 204: the end of the batch
                    if status != "204":
                        return None
                    break
                parts.append(msg.data)
        finally:
            await sub.unsubscribe()
        data = b"".join(parts)
        return data if len(data) == info.size else None

    async def _get_consumer(self, name: str) -> bytes:
        try:
            result = await self.store.get(name)
        except ObjectNotFoundError:
            raise BlobNotFound(f"no payload {name} in the object store {BUCKET!r}") from None
        return bytes(result.data or b"")
