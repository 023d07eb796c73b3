"""Sealed private-transaction payloads in the JetStream object store, named by SHA3-256.

The mediator's payload hash is the SHA3-256 of the ciphertext and the object's name is that
hash in hex, so a stakeholder fetches by what the chain says and checks what came back against
it before it unwraps anything. Only ciphertext is ever stored here.
"""

from __future__ import annotations

import hashlib
import hmac

from nats.js import JetStreamContext
from nats.js.api import ObjectMeta
from nats.js.errors import ObjectNotFoundError

from .blobs import BlobCorrupt, BlobNotFound, BlobStore

BUCKET = "privtx"


def payload_name(ciphertext: bytes) -> str:
    return hashlib.sha3_256(ciphertext).hexdigest()


class PayloadStore:
    def __init__(self, blobs: BlobStore) -> None:
        self.store = blobs.store

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str = BUCKET) -> PayloadStore:
        return cls(await BlobStore.open(js, bucket))

    async def put(self, ciphertext: bytes) -> str:
        """Store ``ciphertext`` under its SHA3-256; the same bytes twice is one object."""
        name = payload_name(ciphertext)
        await self.store.put(name, ciphertext, meta=ObjectMeta(name=name))
        return name

    async def get(self, name: str) -> bytes:
        """The ciphertext stored under ``name``, checked against it."""
        try:
            result = await self.store.get(name)
        except ObjectNotFoundError:
            raise BlobNotFound(f"no payload {name} in the object store {BUCKET!r}") from None
        data = bytes(result.data or b"")
        if not hmac.compare_digest(payload_name(data), name):
            raise BlobCorrupt(f"payload {name} does not hash to its name: it was rewritten")
        return data
