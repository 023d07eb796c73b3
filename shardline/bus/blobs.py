"""The content-addressed blob store: record ciphertexts in a NATS JetStream object store.

An object's name is the hex SHA-256 of its bytes, so the chain's content hash says where a
record lives and whether what came back is what was stored. The object store cuts large
objects into chunks (as large as the server takes) and checks its own digest on the way out.
Only ciphertext is ever put here.
"""

from __future__ import annotations

import base64
import hashlib
import json

from nats.js import JetStreamContext
from nats.js.api import ObjectInfo, ObjectMeta, ObjectMetaOptions, StorageType
from nats.js.errors import BadRequestError, BucketNotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from shardline.bus import log

BUCKET = "records"
DIGEST_PREFIX = "SHA-256="
CHUNK_MIN = 128 * 1024  # the object store's own default
CHUNK_MAX = 8 * 1024 * 1024
INFOS_KEPT = 4096  # object entries a reader remembers (where each object's chunks are)


class BlobNotFound(LookupError):
    pass


class BlobCorrupt(ValueError):
    pass


def blob_name(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(
        self, store: ObjectStore, js: JetStreamContext, bucket: str, timeout_s: float = 10.0
    ) -> None:
        self.store = store
        self.js = js
        self.bucket = bucket
        self.timeout_s = timeout_s
        self._api = f"{js._prefix}.DIRECT.GET.OBJ_{bucket}"
        self._infos: dict[str, ObjectInfo] = {}

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str = BUCKET) -> BlobStore:
        try:
            store = await js.object_store(bucket)
        except BucketNotFoundError:
            try:
                store = await js.create_object_store(bucket, storage=StorageType.FILE)
            except BadRequestError:  # created meanwhile by another client
                store = await js.object_store(bucket)
        return cls(store, js, bucket)

    def chunk_size(self) -> int:
        """Chunks as large as the server takes, less room for headers: a large object goes in
        and comes out in a few messages instead of one per 128 KiB (a 1 MiB record in 2, not 8;
        an analytics part of a few MB in a few acknowledged publishes)."""
        limit = int(getattr(self.js._nc, "max_payload", 0) or 0)
        return max(CHUNK_MIN, min(CHUNK_MAX, limit - 64 * 1024))

    async def put(self, data: bytes, description: str = "", chunk_size: int | None = None) -> str:
        """Store ``data`` under its SHA-256 (hex); storing the same bytes twice is a no-op.
        ``chunk_size``: bytes per chunk message (default ``chunk_size()``)."""
        name = blob_name(data)
        try:
            info = await self.store.get_info(name)
            if _digest(info.digest) == bytes.fromhex(name):
                return name
        except ObjectNotFoundError:
            pass
        options = ObjectMetaOptions(max_chunk_size=chunk_size or self.chunk_size())
        meta = ObjectMeta(name=name, description=description, options=options)
        await self.store.put(name, data, meta=meta)
        return name

    async def get(self, name: str) -> bytes:
        """The bytes stored under ``name``, checked against it; raises BlobNotFound/BlobCorrupt.

        Read in two requests (the object's meta, then all its chunks in one batched direct
        get); where the server cannot batch, through the object store's own reader.
        """
        try:
            data = await self._get_direct(name)
        except (BlobNotFound, BlobCorrupt):
            raise
        except Exception as exc:  # no batched direct get here: the slower, general reader
            log.event("blobs.direct_get_unavailable", blob=name, error=repr(exc))
            data = None
        if data is not None:
            return data
        return await self._get_consumer(name)

    async def _get_direct(self, name: str) -> bytes | None:
        """None when the object is a link or the answers are not what a batch gives.

        An object's entry (where its chunks are) is remembered once read: its bytes cannot
        change under its name, and if the entry was replaced the chunks are gone or do not
        hash to the name, and it is read again.
        """
        known = self._infos.get(name)
        if known is not None:
            try:
                data = await self._chunks(name, known)
            except BlobCorrupt:
                data = None
            if data is not None:
                return data
            self._infos.pop(name, None)
        info = await self._info(name)
        if info is None:
            return None
        if not info.size:
            if name != blob_name(b""):
                raise BlobCorrupt(f"blob {name} is empty in the store")
            return b""
        data = await self._chunks(name, info)
        if data is not None:
            self._remember(name, info)
        return data

    def _remember(self, name: str, info: ObjectInfo) -> None:
        self._infos[name] = info
        if len(self._infos) > INFOS_KEPT:
            self._infos.pop(next(iter(self._infos)))

    async def _info(self, name: str) -> ObjectInfo | None:
        meta_subject = f"$O.{self.bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
        meta = await self.js._nc.request(f"{self._api}.{meta_subject}", b"", timeout=self.timeout_s)
        status = (meta.headers or {}).get("Status")
        if status == "404":
            raise BlobNotFound(f"no blob {name} in the object store {BUCKET!r}")
        if status:
            return None
        try:
            info = ObjectInfo.from_response(json.loads(meta.data))
        except Exception as exc:
            raise BlobCorrupt(f"blob {name} has a malformed entry in the store: {exc!r}") from None
        if info.deleted:
            raise BlobNotFound(f"no blob {name} in the object store {BUCKET!r}")
        if info.is_link() or not info.nuid:
            return None
        if _digest(info.digest or "") != bytes.fromhex(name):
            raise BlobCorrupt(f"blob {name} does not hash to its name: it was rewritten")
        return info

    async def _chunks(self, name: str, info: ObjectInfo) -> bytes | None:
        """All of an object's chunks, in one batched direct get, checked against ``name``."""
        nc = self.js._nc
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        try:
            request = {
                "seq": 1,
                "next_by_subj": f"$O.{self.bucket}.C.{info.nuid}",
                "batch": int(info.chunks or 0),
            }
            await nc.publish(self._api, json.dumps(request).encode(), reply=inbox)
            h, parts = hashlib.sha256(), []
            while True:
                msg = await sub.next_msg(timeout=self.timeout_s)
                status = (msg.headers or {}).get("Status")
                if status:  # 204: end of the batch; anything else: not a batch answer
                    if status != "204":
                        return None
                    break
                h.update(msg.data)
                parts.append(msg.data)
        finally:
            await sub.unsubscribe()
        data = b"".join(parts)
        if len(data) != info.size:  # a batch cut short: let the general reader have it
            return None
        if h.digest() != bytes.fromhex(name):
            raise BlobCorrupt(f"blob {name} does not hash to its name: it was rewritten")
        return data

    async def _get_consumer(self, name: str) -> bytes:
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
