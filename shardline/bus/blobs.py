"""The content-addressed blob store: record ciphertexts in a NATS JetStream object store.

An object's name is the hex SHA-256 of its bytes, so the chain's content hash says where a
record lives and whether what came back is what was stored. The object store cuts large
objects into chunks (128 KiB) and checks its own digest on the way out. Only ciphertext is ever
put here.
"""

from __future__ import annotations

import base64
import hashlib

from nats.js import JetStreamContext
from nats.js.api import ObjectMeta, StorageType
from nats.js.errors import BadRequestError, BucketNotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

BUCKET = "records"
DIGEST_PREFIX = "SHA-256="


class BlobNotFound(LookupError):
    pass


class BlobCorrupt(ValueError):
    pass


def blob_name(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str = BUCKET) -> BlobStore:
        try:
            return cls(await js.object_store(bucket))
        except BucketNotFoundError:
            try:
                return cls(await js.create_object_store(bucket, storage=StorageType.FILE))
            except BadRequestError:  # created meanwhile by another client
                return cls(await js.object_store(bucket))

    async def put(self, data: bytes, description: str = "") -> str:
        """Store ``data`` under its SHA-256 (hex); storing the same bytes twice is a no-op."""
        name = blob_name(data)
        try:
            info = await self.store.get_info(name)
            if _digest(info.digest) == bytes.fromhex(name):
                return name
        except ObjectNotFoundError:
            pass
        await self.store.put(name, data, meta=ObjectMeta(name=name, description=description))
        return name

    async def get(self, name: str) -> bytes:
        """The bytes stored under ``name``, checked against it; raises BlobNotFound/BlobCorrupt."""
        try:
            result = await self.store.get(name)
        except ObjectNotFoundError:
            raise BlobNotFound(f"no blob {name} in the object store {BUCKET!r}") from None
        except Exception as exc:  # the store's own digest check, or a malformed entry
            if type(exc).__name__ in ("DigestMismatchError", "BadObjectMetaError"):
                raise BlobCorrupt(f"blob {name} is corrupt in the store: {exc!r}") from None
            raise
        data = bytes(result.data or b"")
        # The store has checked the chunks against the digest in its meta; the meta must in
        # turn name the digest we asked for (the chain's hash), else someone rewrote it.
        if (
            _digest(result.info.digest or "") != bytes.fromhex(name)
            or len(data) != result.info.size
        ):
            raise BlobCorrupt(f"blob {name} does not hash to its name: it was rewritten")
        return data


def _digest(text: str) -> bytes:
    body = text.removeprefix(DIGEST_PREFIX).removeprefix(DIGEST_PREFIX.lower())
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError:
        return b""
