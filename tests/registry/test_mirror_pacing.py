"""A mirror's blob fetch paces its two readers separately: the first client ("leader") and the store.

The upstream read hands each chunk to the leader's queue and, through a bounded feed, to the store, which
hashes and writes on a task of its own (blobfetch.py). Against the in-process upstream of test_mirror.py.

Aspects covered:
- a store whose hashing thread is stalled does not stall the leader: it receives everything read so
  far, the store's untaken bytes included, and the upstream is read no further than the feed's bound
- a leader that reads nothing holds the fetch within its queue's bound (the upstream is not read on into
  memory); once it goes away the fetch completes and the blob is stored
- an upstream that drops the connection mid-body: the leader's body is cut short, later requests get a
  502 naming the upstream, no upload session or blob is left behind
- a store failing mid-blob (a full disk): the upstream is read no further, the leader gets the store's
  error, nothing is left behind, and a later request fetches the blob again
- the feed itself: chunks in order, its reader woken once `wake_at` bytes wait, its writer held at the
  bound until the reader takes one; a failed fetch drops what is buffered and the reader gets
  FeedAbortedError; a reader that stopped releases the writer (its puts answer False)
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import threading
from collections.abc import Callable

import aiohttp
import pytest

from dockyard_registry import blobfetch, digest, store
from dockyard_registry.storage import base
from tests.registry.conftest import sha256
from tests.registry.test_mirror import PREFIX, Factory, Upstream, _committed, mirrored

__all__ = ["mirrored"]  # the fixture, shared with test_mirror.py

NAME = f"{PREFIX}/library/app"
# Far above one read of the upstream's connection (a loopback socket read is at most 256 KiB): only the
# bounds below use it, so the assertions hold whatever size the chunks come in.
MAX_CHUNK = 1 << 20


def _layer(seed: bytes, mib: int) -> bytes:
    return hashlib.sha256(seed).digest() * (mib << 15)


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(4000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


def _nothing_left(s: store.Store, dgst: str) -> None:
    assert s.driver.list("uploads") == []
    assert s.driver.size(f"blobs/sha256/{dgst[7:9]}/{dgst[7:]}/data") is None
    with pytest.raises(store.BlobUnknownError):
        s.blob_size(NAME, digest.parse(dgst))


async def test_a_stalled_store_does_not_stall_the_leader_and_the_upstream_is_read_no_further_than_the_feed(
    mirrored: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = Upstream()
    layer = _layer(b"stalled store", 16)
    dgst = sha256(layer)
    up.blobs[dgst] = layer
    s = await mirrored(up, credentials=False)
    hashing, release = threading.Event(), threading.Event()
    real_consume = store._consume

    def stalled(hasher: digest.Hasher | None, writer: base.Writer, chunks: list[bytes]) -> None:
        hashing.set()  # the store's hashing thread, waiting (for a core, say)
        assert release.wait(30)
        real_consume(hasher, writer, chunks)

    monkeypatch.setattr(store, "_consume", stalled)
    fetch, leader = s.pull.fetch_blob(NAME, digest.parse(dgst))
    assert leader and fetch.task is not None
    got = bytearray()

    async def read() -> None:
        async for chunk in fetch.chunks():
            got.extend(chunk)

    reading = asyncio.create_task(read())
    try:
        await _until(
            lambda: (
                hashing.is_set() and fetch.feed.waiting and fetch.queue is not None and fetch.queue.empty()
            ),
            "the relay waits for room in the feed and the leader has read its queue",
        )
        feed = fetch.feed
        # The store took its two batches at most (one being hashed, one waiting for it) ...
        assert fetch.received - feed.buffered <= 2 * store._BATCH + 2 * MAX_CHUNK
        # ... and the feed is full: the relay waits, the upstream is read no further meanwhile.
        assert feed.limit <= feed.buffered < feed.limit + MAX_CHUNK
        assert fetch.received < len(layer)
        # The leader has everything read so far but the chunk held back (the store's untaken bytes too).
        assert fetch.received - MAX_CHUNK <= len(got) < fetch.received
        assert len(got) > feed.limit
        assert bytes(got) == layer[: len(got)]
    finally:
        release.set()
    await reading
    fetch.detach()
    assert bytes(got) == layer
    assert await asyncio.shield(fetch.task) == len(layer)
    assert s.store.blob_size(NAME, digest.parse(dgst)) == len(layer)


async def test_a_leader_that_reads_nothing_holds_the_fetch_within_its_queue_until_it_goes_away(
    mirrored: Factory,
) -> None:
    up = Upstream()
    layer = _layer(b"idle leader", 32)
    dgst = sha256(layer)
    up.blobs[dgst] = layer
    s = await mirrored(up, credentials=False)
    fetch, leader = s.pull.fetch_blob(NAME, digest.parse(dgst))
    assert leader and fetch.task is not None

    # The store takes all it is fed; the leader's queue fills and the relay waits for it.
    await _until(
        lambda: fetch.queue is not None and fetch.queue.full() and fetch.feed.buffered == 0,
        "the leader's queue is full and the store has taken everything read",
    )
    assert fetch.received <= (blobfetch.QUEUE_CHUNKS + 2) * MAX_CHUNK < len(layer)
    assert not fetch.task.done()

    fetch.detach()  # the client went away: the fetch goes on without it
    assert await asyncio.shield(fetch.task) == len(layer)
    assert fetch.received == len(layer)
    assert s.store.read_blob(digest.parse(dgst)) == layer


async def test_an_upstream_cut_mid_body_cuts_the_leader_short_and_leaves_nothing_behind(
    mirrored: Factory,
) -> None:
    layer = _layer(b"cut", 6)
    dgst = sha256(layer)
    up = Upstream(cut=5 << 20)
    up.blobs[dgst] = layer
    s = await mirrored(up, credentials=False)
    path = f"/v2/{NAME}/blobs/{dgst}"

    with pytest.raises(aiohttp.ClientPayloadError):  # the body ends before its Content-Length
        await s.get(path)
    status, body, _ = await s.get(path, headers={"Range": "bytes=0-3"})  # waits for a fetch of its own
    assert status == 502
    assert "unreachable" in json.loads(body)["errors"][0]["message"]
    await _committed(s)
    _nothing_left(s.store, dgst)
    assert up.count("GET", dgst) == 2


async def test_a_store_failing_mid_blob_stops_the_upstream_read_and_leaves_nothing_behind(
    mirrored: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = Upstream()
    layer = _layer(b"disk full", 32)
    dgst = sha256(layer)
    up.blobs[dgst] = layer
    s = await mirrored(up, credentials=False)
    real_consume = store._consume
    batches = 0

    def filling(hasher: digest.Hasher | None, writer: base.Writer, chunks: list[bytes]) -> None:
        nonlocal batches
        batches += 1
        if batches == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_consume(hasher, writer, chunks)

    monkeypatch.setattr(store, "_consume", filling)
    fetch, leader = s.pull.fetch_blob(NAME, digest.parse(dgst))
    assert leader and fetch.task is not None
    got = 0
    with pytest.raises(OSError, match="No space left"):
        async for chunk in fetch.chunks():
            got += len(chunk)
    fetch.detach()
    with pytest.raises(OSError):
        await asyncio.shield(fetch.task)
    assert got < len(layer)
    # Read no further than the store's batches, the feed and the chunk in hand.
    assert fetch.received <= 4 * store._BATCH + blobfetch.FEED_BYTES + 2 * MAX_CHUNK < len(layer)
    _nothing_left(s.store, dgst)

    monkeypatch.setattr(store, "_consume", real_consume)  # room again: the next request fetches anew
    status, data, _ = await s.get(f"/v2/{NAME}/blobs/{dgst}")
    assert (status, data == layer) == (200, True)
    await _committed(s)
    assert up.count("GET", dgst) == 2


# ------------------------------------------------------------------------------------ the feed itself
async def _settle() -> None:
    for _ in range(5):  # a woken task runs within one turn of the loop
        await asyncio.sleep(0)


async def test_the_feed_holds_its_bound_and_hands_over_in_order() -> None:
    feed = blobfetch.Feed(limit=10, wake_at=4)
    taken: list[bytes] = []

    async def take() -> None:
        async for chunk in feed.chunks():
            taken.append(chunk)

    reader = asyncio.create_task(take())
    await _settle()
    assert await feed.put(b"ab")
    await _settle()
    assert taken == []  # below `wake_at`: the reader is left waiting for more
    assert await feed.put(b"cdef")
    await _settle()
    assert taken == [b"ab", b"cdef"]  # woken once for both

    # A reader that takes nothing: puts go on until the bound, then the writer waits for room.
    reader.cancel()
    feed = blobfetch.Feed(limit=10, wake_at=4)
    for chunk in (b"0123", b"4567", b"89ab"):  # the last one is accepted below the bound, passing it
        assert await feed.put(chunk)
    writer = asyncio.create_task(feed.put(b"cd"))
    await _settle()
    assert feed.waiting and not writer.done() and feed.buffered == 12
    chunks = feed.chunks()
    assert await anext(chunks) == b"0123"  # room again: the writer goes on
    await _settle()
    assert writer.done() and writer.result() is True and not feed.waiting
    feed.close()
    assert [c async for c in chunks] == [b"4567", b"89ab", b"cd"]


async def test_a_failed_fetch_ends_the_feed_at_once_and_a_stopped_reader_releases_the_writer() -> None:
    feed = blobfetch.Feed(limit=10, wake_at=4)
    assert await feed.put(b"0123")
    feed.close(ConnectionResetError())
    with pytest.raises(blobfetch.FeedAbortedError, match="ConnectionResetError"):
        await anext(feed.chunks())  # what was buffered is dropped, not half stored
    assert feed.buffered == 0

    feed = blobfetch.Feed(limit=4, wake_at=4)
    assert await feed.put(b"0123")
    writer = asyncio.create_task(feed.put(b"4567"))
    await _settle()
    assert feed.waiting
    feed.stop()  # the store failed
    assert await writer is False
    assert await feed.put(b"89") is False
