"""Two `serve --gc-schedule` replicas on one gofakes3 bucket: one collects, the other defers.

Covers (issue 14, "GC with several replicas", the online gc): two registry processes on the same bucket
and prefix, both with `--gc-schedule '* * * * *'` (every minute, so both start their runs in the same
second) and `--gc-grace 0s`, with metrics listeners. Orphan blobs (pushed, named by no manifest) wait in
the bucket. At the minute, exactly one replica collects: its `/gc` reports the run (every orphan
deleted) and its `gc_runs_total` is 1, while the other's run is skipped: no last run, `deferredRuns` 1
naming the collecting run, `gc_deferred_runs_total` 1. Meanwhile image pushes through both replicas keep
succeeding (some while the run's marker is in the bucket); afterwards the orphans are gone, every pushed
image pulls back whole from both replicas, `fsck` is clean and no run marker is left.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from dockyard_registry.storage import blocking, s3
from tests.integration.registry import harness, images
from tests.integration.registry.replicas import (
    assert_pulls_whole,
    push_image,
    s3_flags,
    start_replica,
)
from tests.support import procs, s3server

pytestmark = pytest.mark.integration


def gc_status(metrics: procs.Port) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics.number}/gc", timeout=10) as resp:
        doc = json.loads(resp.read())
    assert isinstance(doc, dict)
    return doc


def counter(metrics: procs.Port, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics.number}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    assert len(found) == 1, (name, text)
    return float(found[0])


def ticked(doc: dict[str, Any]) -> bool:
    """Whether the replica's first scheduled run has come and gone (collected or deferred)."""
    return doc["lastRun"] is not None or doc["deferredRuns"] > 0


def test_of_two_replicas_on_one_schedule_exactly_one_collects_while_pushes_go_on(
    s3_server: s3server.S3Server, s3_env: None, tmp_path: Path
) -> None:
    prefix = f"gc-schedule-{uuid.uuid4().hex[:8]}"
    flags = [*s3_flags(s3_server, prefix), "--gc-schedule", "* * * * *", "--gc-grace", "0s"]
    bucket = blocking.BlockingS3Driver.start(
        s3.S3Config(
            bucket=s3_server.bucket,
            endpoint=s3_server.endpoint,
            prefix=prefix,
            access_key=s3server.ACCESS_KEY,
            secret_key=s3server.SECRET_KEY,
        )
    )
    # The orphans below must be older than the first run's cutoff (its start, less a second): start well
    # before a minute ends, or after it.
    if 60 - time.time() % 60 < 20:
        time.sleep(60 - time.time() % 60 + 1)
    metrics = [procs.reserve_port(), procs.reserve_port()]
    replicas = [
        start_replica(tmp_path / name, flags, metrics=port)
        for name, port in zip(("one", "two"), metrics, strict=True)
    ]
    try:
        clients = [r.client(None) for r in replicas]
        accepted: list[tuple[str, images.Image, str]] = []
        kept = images.random_image(label="kept", layer_count=1, layer_size=8192)
        push_image(clients[0], "s3/kept", kept, "v1")
        accepted.append(("s3/kept", kept, "v1"))
        orphans = [clients[i % 2].push_blob("s3/orphans", os.urandom(2048)) for i in range(30)]
        assert not any(ticked(gc_status(m)) for m in metrics), "a run started before the orphans were pushed"

        n, during_run = 0, 0
        deadline = time.monotonic() + 150
        while not all(ticked(gc_status(m)) for m in metrics):
            assert time.monotonic() < deadline, "no scheduled gc run on both replicas within 150 s"
            fresh = images.random_image(label=f"during-{n}", layer_count=2, layer_size=8192)
            push_image(clients[n % 2], "s3/fresh", fresh, f"v{n}")  # asserts every answer (201)
            accepted.append(("s3/fresh", fresh, f"v{n}"))
            during_run += bool(bucket.list("gc/runs"))
            n += 1
            time.sleep(0.1)

        docs = [gc_status(m) for m in metrics]
        collected = [i for i, doc in enumerate(docs) if doc["lastRun"] is not None]
        assert len(collected) == 1, docs
        winner, deferred = collected[0], 1 - collected[0]
        last = docs[winner]["lastRun"]
        assert last["blobsDeleted"] == len(orphans) and last["errors"] == 0, last
        assert docs[winner]["deferredRuns"] == 0, docs
        assert docs[deferred]["deferredRuns"] == 1 and docs[deferred]["lastDeferredTo"], docs
        assert counter(metrics[winner], "dockyard_registry_gc_runs_total") == 1
        assert counter(metrics[winner], "dockyard_registry_gc_deferred_runs_total") == 0
        assert counter(metrics[deferred], "dockyard_registry_gc_runs_total") == 0
        assert counter(metrics[deferred], "dockyard_registry_gc_deferred_runs_total") == 1
        assert during_run >= 1, "no push completed while the run's marker was in the bucket"

        for client in clients:
            for orphan in orphans:
                assert client.request("HEAD", f"/v2/s3/orphans/blobs/{orphan}").status == 404, orphan
            for repo, img, tag in accepted:
                assert_pulls_whole(client, repo, img, tag)
        checked = harness.run_cli("fsck", *s3_flags(s3_server, prefix))
        assert checked.returncode == 0 and "ok: no problems found" in checked.stdout, (
            checked.stdout + checked.stderr
        )
        harness.wait_for("the run to remove its marker", lambda: bucket.list("gc/runs") == [], timeout=30)
        print(
            f"replica {winner} collected, {deferred} deferred; {n} pushes, {during_run} while a run was live"
        )
    finally:
        for reg in replicas:
            reg.stop()
        for port in metrics:
            port.release()
        bucket.close()
