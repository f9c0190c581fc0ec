"""Clients that vanish in the middle of a request, while the registry keeps running.

Covers:
- a client gone halfway through a PATCH: the upload rolls back to its last committed byte, and the
  same upload resumes from there and completes with the right digest;
- a client gone halfway through a monolithic PUT with a digest: no blob appears, and pushing the
  blob again works;
- twelve uploads at once, half of them abandoned midway: every completed blob is byte-exact, no
  abandoned one is visible, and fsck finds the data dir clean.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.registry import harness

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
ADMIN = harness.Credentials("vanishing", harness.new_password())


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Registry]:
    with harness.running_registry(
        tmp=tmp_path_factory.mktemp("vanishing"), users=[harness.User(ADMIN, access="admin")]
    ) as r:
        yield r


def _range_end(resp: harness.Response) -> int:
    value = resp.header("Range")
    assert value is not None and value.startswith("0-"), resp.describe()
    return int(value.removeprefix("0-"))


def _abandon(client: harness.Client, method: str, path: str, *, total: int, prefix: bytes) -> None:
    """Send headers announcing `total` bytes and only `prefix` of the body, then hang up."""
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(total)}
    with client.partial_request(method, path, headers=headers, body_prefix=prefix):
        pass


def test_a_client_gone_mid_patch_leaves_the_upload_at_its_last_committed_byte(reg: harness.Registry) -> None:
    client = reg.client(ADMIN)
    blob = os.urandom(3 * MIB)
    started = client.request("POST", "/v2/gone/patch/blobs/uploads/")
    first = client.request(
        "PATCH",
        harness.upload_path(started),
        body=blob[:MIB],
        headers={"Content-Type": "application/octet-stream", "Content-Range": f"0-{MIB - 1}"},
    )
    assert first.status == 202 and _range_end(first) == MIB - 1, first.describe()
    location = harness.upload_path(first)

    _abandon(client, "PATCH", location, total=MIB, prefix=blob[MIB : MIB + MIB // 2])

    # The registry notices the hang-up asynchronously; the range must settle back on the committed byte.
    harness.wait_for(
        "the upload to roll back to its committed chunk",
        lambda: _range_end(client.request("GET", location)) == MIB - 1,
    )
    rest = client.request(
        "PATCH",
        location,
        body=blob[MIB:],
        headers={"Content-Type": "application/octet-stream", "Content-Range": f"{MIB}-{len(blob) - 1}"},
    )
    assert rest.status == 202 and _range_end(rest) == len(blob) - 1, rest.describe()
    final = harness.upload_path(rest)
    sep = "&" if "?" in final else "?"
    done = client.request(
        "PUT", f"{final}{sep}digest={harness.sha256(blob)}", headers={"Content-Length": "0"}
    )
    assert done.status == 201, done.describe()
    assert client.get_blob("gone/patch", harness.sha256(blob)).body == blob


def test_a_client_gone_mid_monolithic_put_leaves_no_blob(reg: harness.Registry) -> None:
    client = reg.client(ADMIN)
    blob = os.urandom(2 * MIB)
    digest = harness.sha256(blob)
    started = client.request("POST", "/v2/gone/put/blobs/uploads/")
    location = harness.upload_path(started)
    sep = "&" if "?" in location else "?"

    _abandon(client, "PUT", f"{location}{sep}digest={digest}", total=len(blob), prefix=blob[:MIB])
    # Completing the same upload with no more bytes must fail: whatever half arrived was rolled back
    # (or the session dropped), never kept as if it were the whole blob.
    completed = client.request("PUT", f"{location}{sep}digest={digest}", headers={"Content-Length": "0"})

    assert completed.status in (400, 404), completed.describe()
    assert completed.error_codes() in (["DIGEST_INVALID"], ["BLOB_UPLOAD_UNKNOWN"]), completed.describe()
    assert client.request("HEAD", f"/v2/gone/put/blobs/{digest}").status == 404
    assert client.push_blob("gone/put", blob) == digest
    assert client.get_blob("gone/put", digest).body == blob


def test_many_uploads_at_once_half_abandoned_leave_only_whole_blobs(
    reg: harness.Registry, tmp_path: Path
) -> None:
    client = reg.client(ADMIN)
    blobs = [os.urandom(MIB + n) for n in range(12)]

    def upload(n: int) -> str | None:
        if n % 2 == 0:
            return client.push_blob("gone/many", blobs[n])
        started = client.request("POST", "/v2/gone/many/blobs/uploads/")
        location = harness.upload_path(started)
        sep = "&" if "?" in location else "?"
        _abandon(
            client, "PUT", f"{location}{sep}digest={harness.sha256(blobs[n])}", total=len(blobs[n]),
            prefix=blobs[n][: MIB // 2],
        )  # fmt: skip
        return None

    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(upload, range(12)))

    for n, blob in enumerate(blobs):
        got = client.get_blob("gone/many", harness.sha256(blob))
        if results[n] is None:
            assert got.status == 404, f"abandoned blob {n} is visible: {got.describe()}"
        else:
            assert got.status == 200 and got.body == blob, f"blob {n}: {got.describe()}"
    fsck = harness.run_cli("fsck", "--data-dir", str(reg.data_dir))
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
