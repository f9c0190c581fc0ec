"""Big blobs, many tags and clients pushing at the same time, against a real registry process.

Covers:
- a 192 MiB blob streamed in one PATCH and pulled back byte-exact, while the registry's peak memory
  grows by far less than the blob (a blob byte is streamed, never held whole in memory);
- tag listing pagination: `?n=` pages in lexical order with a `Link: <...>; rel="next"` header that,
  followed to the end, yields every tag exactly once — what skopeo relies on for long tag lists;
- two skopeo processes pushing images that share layers into the same repository at once both
  succeed, both images pull back intact and fsck finds the data dir clean;
- eight clients pushing the same blob at once and six racing to tag "latest": every push succeeds,
  the tag names one whole racer, every racer stays reachable by digest, fsck is clean;
- 120 requests at once with the same valid, not yet verified credentials all succeed (none shed
  with 429).
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import os
import re
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.registry import harness, images
from tests.integration.registry.clients import skopeo_pull

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
ADMIN = harness.Credentials("bulk", harness.new_password())


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Registry]:
    with harness.running_registry(
        tmp=tmp_path_factory.mktemp("bulk"), users=[harness.User(ADMIN, access="admin")]
    ) as r:
        yield r


def test_a_big_blob_streams_through_without_the_registry_holding_it_in_memory(reg: harness.Registry) -> None:
    client = reg.client(ADMIN)
    size = 192 * MIB
    # One random MiB repeated with a counter: cheap to produce, and no two MiB are equal.
    seed = os.urandom(MIB)

    def chunks() -> Iterator[bytes]:
        for i in range(size // MIB):
            yield i.to_bytes(8, "big") + seed[8:]

    hasher = hashlib.sha256()
    for chunk in chunks():
        hasher.update(chunk)
    digest = f"sha256:{hasher.hexdigest()}"
    baseline = reg.peak_rss_bytes()

    started = client.request("POST", "/v2/bulk/big/blobs/uploads/")
    assert started.status == 202, started.describe()
    patched = client.upload_stream(
        "PATCH",
        harness.upload_path(started),
        chunks=chunks(),
        length=size,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert patched.status == 202, patched.describe()
    location = harness.upload_path(patched)
    sep = "&" if "?" in location else "?"
    done = client.request("PUT", f"{location}{sep}digest={digest}", headers={"Content-Length": "0"})
    assert done.status == 201, done.describe()
    resp, got_digest, got_size = client.download_digest(f"/v2/bulk/big/blobs/{digest}")

    assert resp.status == 200 and got_digest == digest and got_size == size
    growth = reg.peak_rss_bytes() - baseline
    assert growth < size // 4, (
        f"registry peak memory grew by {growth // MIB} MiB for a {size // MIB} MiB blob"
    )


def test_tag_list_pages_follow_link_headers_to_every_tag_in_order(reg: harness.Registry) -> None:
    client = reg.client(ADMIN)
    img = images.random_image(label="many-tags", layer_count=1)
    for blob in img.blobs():
        client.push_blob("bulk/tags", blob.data)
    tags = [f"t{i:02d}" for i in range(11)]
    for tag in tags:
        client.push_manifest("bulk/tags", tag, img.manifest.data)

    seen: list[str] = []
    path: str | None = "/v2/bulk/tags/tags/list?n=4"
    pages = 0
    while path is not None:
        page = client.request("GET", path)
        assert page.status == 200, page.describe()
        body = page.json()
        assert isinstance(body, dict) and body["name"] == "bulk/tags"
        assert len(body["tags"]) <= 4
        seen += body["tags"]
        pages += 1
        link = page.header("Link")
        if link is None:
            path = None
        else:
            match = re.fullmatch(r"<([^>]+)>;\s*rel=\"next\"", link.strip())
            assert match, f"malformed Link header {link!r}"
            parts = urllib.parse.urlsplit(match.group(1))
            path = parts.path + "?" + parts.query
        assert pages <= 5, f"pagination does not end: {seen}"

    assert seen == tags
    assert pages == 3


def test_two_clients_pushing_images_with_shared_layers_at_once_both_succeed(
    reg: harness.Registry, tmp_path: Path
) -> None:
    cert_dir = harness.ca_dir(ca_file=reg.ca, into=tmp_path / "certs")
    shared = [images.random_layer(name=f"shared-{i}.bin", size=4 * MIB) for i in range(3)]
    imgs = [
        images.image(layers=[*shared, images.random_layer(name=f"own-{n}.bin", size=MIB)], label=f"racer-{n}")
        for n in range(2)
    ]
    procs = []
    for n, img in enumerate(imgs):
        layout = images.write_layout(directory=tmp_path / f"src{n}", tag="src", img=img)
        procs.append(
            subprocess.Popen(
                [
                    harness.require_binary("skopeo"), "copy", "--quiet", f"oci:{layout}:src",
                    f"docker://{reg.address}/bulk/race:v{n}",
                    "--dest-cert-dir", str(cert_dir), "--dest-creds", ADMIN.colon(),
                ],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
        )  # fmt: skip
    results = [p.communicate(timeout=300) for p in procs]

    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    for n, img in enumerate(imgs):
        back = skopeo_pull(
            ref=f"{reg.address}/bulk/race:v{n}", into=tmp_path / f"back{n}", cert_dir=cert_dir, creds=ADMIN
        )
        assert back.manifest_digest == img.digest
    fsck = harness.run_cli("fsck", "--data-dir", str(reg.data_dir))
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_many_clients_pushing_the_same_blob_and_racing_for_one_tag_leave_consistent_data(
    reg: harness.Registry,
) -> None:
    client = reg.client(ADMIN)
    blob = os.urandom(4 * MIB)
    racers = [images.random_image(label=f"tag-racer-{n}", layer_count=1) for n in range(6)]
    for img in racers:
        for part in img.blobs():
            client.push_blob("bulk/contended", part.data)

    def push_same_blob(_: int) -> str:
        return client.push_blob("bulk/contended", blob)

    def push_tag(img: images.Image) -> str:
        return client.push_manifest("bulk/contended", "latest", img.manifest.data)

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        blob_digests = list(pool.map(push_same_blob, range(8)))
        tag_digests = list(pool.map(push_tag, racers))

    assert set(blob_digests) == {harness.sha256(blob)}
    fetched = client.get_blob("bulk/contended", harness.sha256(blob))
    assert fetched.status == 200 and fetched.body == blob
    latest = client.get_manifest("bulk/contended", "latest")
    assert latest.status == 200 and harness.sha256(latest.body) in tag_digests, latest.describe()
    for img in racers:  # every racer's manifest stays reachable by digest
        assert client.get_manifest("bulk/contended", img.digest).body == img.manifest.data
    fsck = harness.run_cli("fsck", "--data-dir", str(reg.data_dir))
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_a_burst_of_clients_with_the_same_fresh_credentials_is_served_not_shed(tmp_path: Path) -> None:
    """A rollout: many nodes pull with one imagePullSecret right after a registry restart (nothing cached).

    Wrong passwords may be shed with 429 to protect the registry, but one valid credential arriving
    many times at once must cost one bcrypt, not one per request, and every request must succeed.
    """
    puller = harness.Credentials("rollout", harness.new_password())
    with harness.running_registry(tmp=tmp_path, users=[harness.User(puller, access="pull")]) as fresh:
        client = fresh.client(puller)
        with concurrent.futures.ThreadPoolExecutor(max_workers=120) as pool:
            statuses = list(pool.map(lambda _: client.request("GET", "/v2/").status, range(120)))

    assert statuses == [200] * 120, collections.Counter(statuses)
