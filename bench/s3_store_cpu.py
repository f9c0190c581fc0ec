"""`python -m bench.s3_store_cpu`: the CPU one process spends pushing through the store on S3 (issue 14).

The store over the S3 facade (`storage.blocking.BlockingS3Driver`, the registry's S3 path without HTTP,
nginx or a client) against gofakes3 from the tool cache: one chunked push of `--big-mib` (128 KiB chunks, as
a socket delivers them), then `--small` blobs of 64 KiB pushed as skopeo pushes them (HEAD, POST, PATCH,
PUT). Prints this process's CPU seconds per GiB of the big push and per small blob (every thread: the store's
hashing, the S3 client's signing and requests; gofakes3 is another process and not counted), wall times,
and the S3 requests per small blob. CPU time moves far less with the machine's load than rates do, so a
change to the S3 path can be judged here on a busy machine; `bench.s3_push_pull` is the end-to-end
comparison with Distribution.

Owns: the S3 server and the temp dir it runs in. Must not: leave either behind.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.support import s3server

from dockyard_registry import digest, store
from dockyard_registry.storage import blocking, s3

CHUNK = 128 * 1024
SMALL = 64 * 1024


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.s3_store_cpu", description=__doc__.splitlines()[0])
    p.add_argument("--big-mib", type=int, default=256, help="MiB of the chunked push (default 256)")
    p.add_argument("--small", type=int, default=100, help="small blobs pushed (default 100)")
    return p


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), CHUNK):
        yield data[i : i + CHUNK]


def _digest(data: bytes) -> digest.Digest:
    return digest.parse("sha256:" + hashlib.sha256(data).hexdigest())


async def _push(st: store.Store, data: bytes, dgst: digest.Digest) -> None:
    with contextlib.suppress(store.BlobUnknownError):
        await asyncio.to_thread(st.blob_size, "bench", dgst)  # the client's HEAD first
    upload = await asyncio.to_thread(st.start_upload, "bench")
    await st.write_chunk("bench", upload, body=_chunks(data))
    await st.finish_upload("bench", upload, dgst=dgst)


async def _measure(server: s3server.S3Server, *, big_mib: int, small: int) -> dict[str, float]:
    config = s3.S3Config(
        bucket=server.bucket, endpoint=server.endpoint, prefix="cpu",
        access_key=s3server.ACCESS_KEY, secret_key=s3server.SECRET_KEY,
    )  # fmt: skip
    driver = blocking.BlockingS3Driver.start(config)
    calls: collections.Counter[str] = collections.Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    driver.run(_register(driver, count))
    try:
        st = store.Store(driver)
        warm = os.urandom(SMALL)  # first connections, botocore's lazily loaded models: not measured
        await _push(st, warm, _digest(warm))
        big = os.urandom(big_mib << 20)
        big_digest = _digest(big)  # outside the measured span, like the client's own hashing
        cpu, wall = time.process_time(), time.perf_counter()
        await _push(st, big, big_digest)
        found = {"big_cpu_s_per_gib": (time.process_time() - cpu) * 1024 / big_mib,
                 "big_wall_s": time.perf_counter() - wall}  # fmt: skip
        del big
        blobs = [os.urandom(SMALL) for _ in range(small)]
        digests = [_digest(b) for b in blobs]
        calls.clear()
        direct_before = collections.Counter(driver._driver.direct.calls)
        cpu, wall = time.process_time(), time.perf_counter()
        for data, dgst in zip(blobs, digests, strict=True):
            await _push(st, data, dgst)
        found["small_cpu_ms"] = (time.process_time() - cpu) * 1000 / small
        found["small_wall_ms"] = (time.perf_counter() - wall) * 1000 / small
        direct = driver._driver.direct.calls - direct_before  # the requests made around botocore
        found["small_requests"] = (sum(calls.values()) + sum(direct.values())) / small
        return found
    finally:
        driver.close()


async def _register(driver: blocking.BlockingS3Driver, handler: Any) -> None:
    """Count every S3 operation the facade's client calls (registered on the client's own loop)."""
    driver._driver._client.meta.events.register("before-call.s3", handler)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if min(args.big_mib, args.small) < 1:
        print("bench.s3_store_cpu: every count must be >= 1", file=sys.stderr)
        return 2
    reason = s3server.available()
    if reason is not None:
        print(f"bench.s3_store_cpu: {reason} (run `bash hack/tools.sh gofakes3`)", file=sys.stderr)
        return 2
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory(prefix="dockyard-s3-cpu-") as tmp, s3server.running(Path(tmp)) as server:
        found = asyncio.run(_measure(server, big_mib=args.big_mib, small=args.small))
    print(f"{args.big_mib} MiB chunked push: {found['big_cpu_s_per_gib']:.2f} CPU-s per GiB, "
          f"{found['big_wall_s']:.2f} s wall")  # fmt: skip
    print(f"{args.small} small blobs: {found['small_cpu_ms']:.1f} CPU-ms per blob, "
          f"{found['small_wall_ms']:.1f} ms wall per blob, "
          f"{found['small_requests']:.1f} S3 requests per blob")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
