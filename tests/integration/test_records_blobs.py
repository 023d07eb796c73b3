"""The records blob store on a real nats-server: the batched direct read gives what the object
store's own reader gives, for empty, one-chunk and many-chunk objects, and catches rewrites."""

from __future__ import annotations

import os

import nats
import pytest

from shardline.bus.blobs import BlobCorrupt, BlobNotFound, BlobStore, blob_name

pytestmark = pytest.mark.integration


@pytest.fixture
async def blobs(nats_url):
    nc = await nats.connect(nats_url)
    yield await BlobStore.open(nc.jetstream(timeout=10), bucket="records-test")
    await nc.drain()


@pytest.mark.parametrize("size", [0, 1, 1024, 128 * 1024, 128 * 1024 + 1, 1024 * 1024 + 7])
async def test_direct_read_matches_the_object_store_reader(blobs, size):
    data = os.urandom(size)
    name = await blobs.put(data)
    assert name == blob_name(data)
    direct = await blobs._get_direct(name)
    assert direct is not None, "the server answered the batched direct get with no batch"
    assert direct == data == await blobs._get_consumer(name) == await blobs.get(name)


async def test_a_missing_blob_and_a_rewritten_one(blobs):
    with pytest.raises(BlobNotFound):
        await blobs.get(blob_name(b"never stored"))
    data = os.urandom(300 * 1024)
    name = await blobs.put(data)
    assert await blobs.get(name) == data  # its entry is now remembered
    await blobs.store.put(name, os.urandom(300 * 1024))  # same name, other bytes
    with pytest.raises(BlobCorrupt, match="rewritten"):
        await blobs.get(name)
    fresh = BlobStore(blobs.store, blobs.js, blobs.bucket)  # one that never read it
    with pytest.raises(BlobCorrupt, match="rewritten"):
        await fresh.get(name)
