"""A real S3-compatible server for the S3 storage driver's tests: gofakes3 v1.2.0 (hack/tools.sh builds it).

Why gofakes3: MinIO's server is AGPL and not for us to build in; SeaweedFS and VersityGW are large builds
for two cores. gofakes3 is a real HTTP S3 implementation (SigV4-tolerant, multipart uploads, CopyObject,
ListObjectsV2, path-style and virtual-hosted buckets) that builds in about a minute from the Go module
proxy with `go install`. It runs on its memory backend, so objects do not survive a server restart: its
bolt (file) backend dies copying a completed multipart upload (what every chunked push's commit does) and
its `fs` backend answers NoSuchBucket when listing a missing prefix. It checks no signatures, so presigned
URLs are tested for shape and by fetching them, not for their authorization. `S3Server.restart()` stops
it and starts it again on the same port (empty: the memory backend keeps nothing), for the tests of a
server restarted mid-push.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import procs, tool

ACCESS_KEY = "dockyard-test"
SECRET_KEY = "dockyard-test-secret"


@dataclasses.dataclass
class S3Server:
    endpoint: str
    bucket: str
    process: procs.Process

    def restart(self) -> None:
        """Stop the server (SIGTERM) and start it again on the same port. On the memory backend the
        bucket comes back empty: every object and every multipart upload is gone."""
        self.process.stop()
        self.process = procs.Process(name=self.process.name, argv=self.process.argv, log=self.process.log)
        procs.wait_http(self.endpoint + "/", watch=[self.process], timeout=30)


def available() -> str | None:
    """None when the server can run here, else why not (for pytest.skip)."""
    try:
        tool("gofakes3")
    except FileNotFoundError as e:
        return f"no S3 server: {e}"
    return None


@contextmanager
def running(tmp: Path, *, bucket: str = "dockyard") -> Iterator[S3Server]:
    port = procs.reserve_port()
    proc = procs.Process(
        name="gofakes3",
        argv=[
            str(tool("gofakes3")),
            "-host",
            f"127.0.0.1:{port.number}",
            # In memory: bolt's CopyObject reads an object's hash after its transaction ends (gofakes3
            # v1.2.0 then dies with "fatal error: fault" copying a completed multipart upload), and the
            # fs backend answers NoSuchBucket to a listing of a missing prefix.
            "-backend",
            "memory",
            "-initialbucket",
            bucket,
            "-quiet",
        ],
        log=tmp / "gofakes3.log",
    )
    server = S3Server(endpoint=f"http://127.0.0.1:{port.number}", bucket=bucket, process=proc)
    try:
        procs.wait_http(server.endpoint + "/", watch=[proc], timeout=30)
        yield server
    finally:
        server.process.stop()
        port.release()  # held across restarts
