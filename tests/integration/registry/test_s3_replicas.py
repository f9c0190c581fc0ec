"""Several registry processes on one gofakes3 bucket: gc on one while another accepts pushes, and two
replicas behind one nginx upstream (round robin) with one SIGKILLed mid-push.

Covers (issue 14, "GC with several replicas"): `dockyard-registry gc --grace 0` runs as its own process
against the bucket two live registries serve. Once its run marker is in the bucket, the second replica
takes a manifest naming blobs that are old and unreferenced (the race the gc fence exists for). It also
takes another such manifest once the sweep has deleted its first orphan, and keeps taking fresh pushes
(through both replicas) until gc exits. Every push is either accepted or refused with
MANIFEST_BLOB_UNKNOWN (then pushed again); afterwards every orphan is gone, `fsck` is clean and every
accepted image pulls back whole, digests matching, from both replicas.

Also (issue 14, "two processes behind one nginx upstream"): a chunked push through nginx whose PATCHes
alternate between the two replicas (nginx's access log says which one served each); the replica the
next PATCH goes to is SIGKILLed while that PATCH's body is half sent. The client asks nginx where the
upload stands (the last whole chunk), sends the rest (the survivor takes it), finishes it, and pushes
the manifest. The image pulls back whole from both replicas (the killed one restarted) and fsck is clean.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from dockyard_registry import gc as gc_module
from dockyard_registry.storage import blocking, s3
from tests.integration.registry import harness, images
from tests.integration.registry.replicas import (
    assert_pulls_whole,
    push_image,
    put_manifest_or_push_again,
    s3_flags,
    start_replica,
)
from tests.support import procs, s3server

pytestmark = pytest.mark.integration


def test_gc_on_one_process_while_another_replica_accepts_pushes_loses_nothing(
    s3_server: s3server.S3Server, s3_env: None, tmp_path: Path
) -> None:
    prefix = f"replicas-{uuid.uuid4().hex[:8]}"
    flags = s3_flags(s3_server, prefix)
    bucket = blocking.BlockingS3Driver.start(
        s3.S3Config(
            bucket=s3_server.bucket,
            endpoint=s3_server.endpoint,
            prefix=prefix,
            access_key=s3server.ACCESS_KEY,
            secret_key=s3server.SECRET_KEY,
        )
    )
    one = start_replica(tmp_path / "one", flags)
    two = start_replica(tmp_path / "two", flags)
    gc: subprocess.Popen[str] | None = None
    try:
        a, b = one.client(None), two.client(None)
        accepted: list[tuple[str, images.Image, str]] = []
        kept = images.random_image(label="kept", layer_count=1, layer_size=8192)
        push_image(a, "s3/kept", kept, "v1")
        accepted.append(("s3/kept", kept, "v1"))
        # Blobs pushed but named by no manifest yet: old and unreferenced once gc starts.
        early = images.random_image(label="reused-early", layer_count=2, layer_size=8192)
        late = images.random_image(label="reused-late", layer_count=2, layer_size=8192)
        for blob in [*early.blobs(), *late.blobs()]:
            a.push_blob("s3/reused", blob.data)
        orphans = [a.push_blob("s3/orphans", os.urandom(2048)) for _ in range(60)]
        time.sleep(gc_module.CUTOFF_MARGIN + 0.5)  # `--grace 0` collects only what is older than that

        gc = subprocess.Popen(
            [str(harness.registry_bin()), "gc", *flags, "--grace", "0", "--upload-expiry", "1h"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        harness.wait_for("gc's run marker in the bucket", lambda: bool(bucket.list("gc/runs")), timeout=60)
        assert gc.poll() is None, "gc ended before the race could be run"
        outcomes = {"early": put_manifest_or_push_again(b, "s3/reused", early, "early")}
        accepted.append(("s3/reused", early, "early"))
        harness.wait_for(
            "gc's sweep to delete an orphan",
            lambda: any(b.request("HEAD", f"/v2/s3/orphans/blobs/{o}").status == 404 for o in orphans),
            timeout=120,
        )
        outcomes["late"] = put_manifest_or_push_again(b, "s3/reused", late, "late")
        accepted.append(("s3/reused", late, "late"))
        n = 0
        while gc.poll() is None or n < 2:
            fresh = images.random_image(label=f"during-gc-{n}", layer_count=2, layer_size=8192)
            push_image((b, a)[n % 2], "s3/fresh", fresh, f"v{n}")
            accepted.append(("s3/fresh", fresh, f"v{n}"))
            n += 1
        out, err = gc.communicate(timeout=120)
        assert gc.returncode == 0, err
        assert "deleted blob" in out, out

        for orphan in orphans:
            assert b.request("HEAD", f"/v2/s3/orphans/blobs/{orphan}").status == 404, orphan
        for client in (a, b):
            for repo, img, tag in accepted:
                assert_pulls_whole(client, repo, img, tag)
        checked = harness.run_cli("fsck", *flags)
        assert checked.returncode == 0 and "ok: no problems found" in checked.stdout, (
            checked.stdout + checked.stderr
        )
        assert bucket.list("gc/runs") == []  # the run removed its marker
        print(f"manifests naming old unreferenced blobs during gc: {outcomes}; {n} pushes during the run")
    finally:
        if gc is not None and gc.poll() is None:
            gc.kill()
            gc.wait()
        one.stop()
        two.stop()
        bucket.close()


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)
    if found is None:
        pytest.skip("nginx is not installed: run `make setup` (hack/setup.sh installs it)")
    return found


def round_robin_conf(tmp: Path, *, listen: int, upstreams: list[int]) -> Path:
    """nginx in front of the replicas: one worker, equal weights (strict alternation), bodies streamed."""
    servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=0;" for p in upstreams)
    temp = "\n".join(
        f"  {kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1;
pid {tmp / "nginx.pid"};
events {{}}
http {{
{temp}
  log_format upstream '$request_method $uri $status $upstream_addr';
  access_log {tmp / "access.log"} upstream;
  upstream replicas {{
{servers}
  }}
  server {{
    listen 127.0.0.1:{listen};
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_http_version 1.1;
    location / {{
      proxy_pass http://replicas;
      proxy_set_header Host $http_host;
      proxy_next_upstream error timeout;
    }}
  }}
}}
"""
    )
    return conf


def served(access_log: Path) -> list[tuple[str, str, str, str]]:
    """(method, path, status, upstream address) of every request nginx finished, in order."""
    rows = []
    for line in access_log.read_text().splitlines():
        method, path, status, upstream = line.split(" ", 3)
        rows.append((method, path, status, upstream))
    return rows


def patch_rows(access_log: Path) -> list[tuple[str, str, str, str]]:
    return [row for row in served(access_log) if row[0] == "PATCH"]


def test_a_chunked_push_through_nginx_survives_the_replica_it_alternates_to_being_killed(
    s3_server: s3server.S3Server, s3_env: None, tmp_path: Path
) -> None:
    flags = s3_flags(s3_server, f"nginx-{uuid.uuid4().hex[:8]}")
    metrics = [procs.reserve_port(), procs.reserve_port()]
    replicas = [
        start_replica(tmp_path / name, flags, metrics=m)
        for name, m in zip(("one", "two"), metrics, strict=True)
    ]
    by_address = {f"127.0.0.1:{r.port}": (r, m) for r, m in zip(replicas, metrics, strict=True)}
    front_port = procs.reserve_port()
    front_dir = tmp_path / "nginx"
    front_dir.mkdir()
    conf = round_robin_conf(front_dir, listen=front_port.number, upstreams=[r.port for r in replicas])
    access_log = front_dir / "access.log"
    nginx = procs.Process(
        name="nginx",
        argv=[nginx_binary(), "-e", "stderr", "-c", str(conf), "-p", str(front_dir), "-g", "daemon off;"],
        log=front_dir / "nginx.log",
        ports=[front_port],
    )
    try:
        procs.wait_http(f"http://127.0.0.1:{front_port.number}/healthz", watch=[nginx], timeout=30)
        front = harness.Client(host="127.0.0.1", port=front_port.number, ca_file=None, credentials=None)
        img = images.random_image(label="through-nginx", layer_count=1, layer_size=7 * 1024 * 1024)
        layer = img.layers[0].blob
        front.push_blob("s3/nginx", img.config.data)
        chunk = 2 * 1024 * 1024
        started = front.request("POST", "/v2/s3/nginx/blobs/uploads/")
        assert started.status == 202, started.describe()
        location = harness.upload_path(started)

        def patch(offset: int) -> harness.Response:
            piece = layer.data[offset : offset + chunk]
            return front.request(
                "PATCH",
                location,
                body=piece,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + len(piece) - 1}",
                    "Content-Length": str(len(piece)),
                },
            )

        for offset in (0, chunk):
            resp = patch(offset)
            assert resp.status == 202, resp.describe()
            location = harness.upload_path(resp)
        # nginx logs a request just after answering it.
        harness.wait_for("nginx to log both PATCHes", lambda: len(patch_rows(access_log)) == 2)
        patches = patch_rows(access_log)
        assert [row[2] for row in patches] == ["202", "202"]
        assert patches[0][3] != patches[1][3], f"both PATCHes went to {patches[0][3]}"

        # The next request goes to the replica that did not serve the last one: kill it mid-body.
        last = served(access_log)[-1][3]
        doomed, doomed_metrics = next(pair for address, pair in by_address.items() if address != last)
        with front.partial_request(
            "PATCH",
            location,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{2 * chunk}-{3 * chunk - 1}",
                "Content-Length": str(chunk),
            },
            body_prefix=layer.data[2 * chunk : 2 * chunk + chunk // 4],
        ):
            harness.wait_for(
                "the half-sent PATCH to be receiving bytes on the replica nginx sent it to",
                lambda: receiving(doomed_metrics.number),
                timeout=30,
            )
            doomed.kill()

        # The client retries: where does the upload stand? Only whole chunks count.
        status = front.request("GET", location)
        assert status.status == 204, status.describe()
        assert status.header("Range") == f"0-{2 * chunk - 1}", status.describe()
        rest = layer.data[2 * chunk :]
        resp = front.request(
            "PATCH",
            location,
            body=rest,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{2 * chunk}-{len(layer.data) - 1}",
                "Content-Length": str(len(rest)),
            },
        )
        assert resp.status == 202, resp.describe()
        location = harness.upload_path(resp)
        sep = "&" if "?" in location else "?"
        done = front.request("PUT", f"{location}{sep}digest={layer.digest}", headers={"Content-Length": "0"})
        assert done.status == 201, done.describe()
        front.push_manifest("s3/nginx", "v1", img.manifest.data)

        harness.wait_for("nginx to log the cut PATCH", lambda: len(patch_rows(access_log)) >= 4)
        cut = patch_rows(access_log)[2]  # the half-sent PATCH: the killed replica had it, nginx said 502
        assert cut[3] == f"127.0.0.1:{doomed.port}" and cut[2] == "502", cut
        doomed.start()
        for client in (front, *(r.client(None) for r in replicas)):
            assert_pulls_whole(client, "s3/nginx", img, "v1")
        checked = harness.run_cli("fsck", *flags)
        assert checked.returncode == 0 and "ok: no problems found" in checked.stdout, (
            checked.stdout + checked.stderr
        )
    finally:
        nginx.stop(grace=15)
        for reg in replicas:
            reg.stop()
        for port in metrics:
            port.release()


def receiving(metrics_port: int) -> bool:
    """Whether a replica has an upload request receiving bytes right now (its /metrics says so)."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return any(
        line.startswith("dockyard_registry_uploads_in_flight") and float(line.split()[-1]) >= 1
        for line in text.splitlines()
    )
