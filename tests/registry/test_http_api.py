"""Every `/v2/` endpoint over HTTP, against the in-process registry on both storage drivers.

Covers: `GET /v2/` and its API-version header, /healthz; blob monolithic push, POST+PUT, chunked PATCH
with Content-Range, upload status and cancel, cross-repository and anonymous mount, blob GET/HEAD with
Range (206, suffix, clipped; 416 RANGE_INVALID with its envelope, also for the empty suffix `bytes=-0`
and malformed or empty headers, on every serving path), blob DELETE and per-repository
visibility; manifest PUT by tag and by digest (`?tag=` -> OCI-Tag), GET/HEAD by tag and digest with
exact bytes and headers, Accept negotiation for indexes, DELETE of tags and manifests; tags/list and
_catalog with n/last pagination and Link headers; the referrers API with OCI-Subject and artifactType
filtering; --no-delete; and X-Accel-Redirect answers; concurrent pushes of the same content (stored
once, linked everywhere).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.registry import conftest
from tests.registry.conftest import OCI_INDEX, OCI_MANIFEST, Registry, make_image, make_manifest, sha256


async def test_base_endpoint_answers_200_with_api_version_header(registry: Registry) -> None:
    resp = await registry.client.get("/v2/")
    assert resp.status == 200
    assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert await resp.json() == {}


async def test_healthz_answers_ok_without_auth(registry: Registry) -> None:
    resp = await registry.client.get("/healthz")
    assert (resp.status, await resp.text()) == (200, "ok")


async def test_monolithic_push_then_get_and_head(registry: Registry) -> None:
    dgst = await registry.push_blob("team/app", b"hello world")
    resp = await registry.client.get(f"/v2/team/app/blobs/{dgst}")
    assert resp.status == 200
    assert await resp.read() == b"hello world"
    assert resp.headers["Docker-Content-Digest"] == dgst
    head = await registry.client.head(f"/v2/team/app/blobs/{dgst}")
    assert head.status == 200
    assert head.headers["Content-Length"] == "11"
    assert head.headers["Docker-Content-Digest"] == dgst
    assert await head.read() == b""


async def test_post_then_put_with_body_completes_an_upload(registry: Registry) -> None:
    resp = await registry.client.post("/v2/r/blobs/uploads/")
    assert resp.status == 202
    location = resp.headers["Location"]
    assert resp.headers["Range"] == "0-0"
    data = b"x" * 5000
    put = await registry.client.put(f"{location}?digest={sha256(data)}", data=data)
    assert put.status == 201
    assert put.headers["Location"] == f"/v2/r/blobs/{sha256(data)}"
    assert await (await registry.client.get(f"/v2/r/blobs/{sha256(data)}")).read() == data


async def test_chunked_upload_reports_progress_and_finishes_with_empty_put(registry: Registry) -> None:
    location = (await registry.client.post("/v2/r/blobs/uploads/")).headers["Location"]
    data = bytes(range(256)) * 40
    for start in range(0, len(data), 4000):
        chunk = data[start : start + 4000]
        resp = await registry.client.patch(
            location,
            data=chunk,
            headers={
                "Content-Range": f"{start}-{start + len(chunk) - 1}",
                "Content-Type": "application/octet-stream",
            },
        )
        assert resp.status == 202, await resp.text()
        assert resp.headers["Range"] == f"0-{start + len(chunk) - 1}"
        location = resp.headers["Location"]
    status = await registry.client.get(location)
    assert (status.status, status.headers["Range"]) == (204, f"0-{len(data) - 1}")
    done = await registry.client.put(f"{location}?digest={sha256(data)}")
    assert done.status == 201
    assert await (await registry.client.get(f"/v2/r/blobs/{sha256(data)}")).read() == data


async def test_streamed_patch_without_content_range_appends(registry: Registry) -> None:
    location = (await registry.client.post("/v2/r/blobs/uploads/")).headers["Location"]
    await registry.client.patch(location, data=b"abc")
    await registry.client.patch(location, data=b"def")
    done = await registry.client.put(f"{location}?digest={sha256(b'abcdef')}")
    assert done.status == 201


async def test_sha512_blob_push_is_verified_with_sha512(registry: Registry) -> None:
    import hashlib

    data = b"sha512 content"
    dgst = "sha512:" + hashlib.sha512(data).hexdigest()
    location = (await registry.client.post("/v2/r/blobs/uploads/")).headers["Location"]
    await registry.client.patch(location, data=data)
    assert (await registry.client.put(f"{location}?digest={dgst}")).status == 201
    assert (await registry.client.head(f"/v2/r/blobs/{dgst}")).status == 200


async def test_cancelled_upload_is_gone(registry: Registry) -> None:
    location = (await registry.client.post("/v2/r/blobs/uploads/")).headers["Location"]
    assert (await registry.client.delete(location)).status == 204
    resp = await registry.client.get(location)
    assert resp.status == 404
    assert (await resp.json())["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"


async def test_mount_from_another_repository_links_without_upload(registry: Registry) -> None:
    dgst = await registry.push_blob("src", b"shared layer")
    resp = await registry.client.post(f"/v2/dst/blobs/uploads/?mount={dgst}&from=src")
    assert resp.status == 201
    assert resp.headers["Location"] == f"/v2/dst/blobs/{dgst}"
    assert (await registry.client.head(f"/v2/dst/blobs/{dgst}")).status == 200


async def test_mount_of_missing_blob_falls_back_to_an_upload_session(registry: Registry) -> None:
    resp = await registry.client.post(f"/v2/dst/blobs/uploads/?mount={sha256(b'nothing')}&from=src")
    assert resp.status == 202
    assert "/blobs/uploads/" in resp.headers["Location"]


async def test_mount_without_from_finds_the_blob_in_any_repository(registry: Registry) -> None:
    dgst = await registry.push_blob("somewhere/else", b"anon mount")
    resp = await registry.client.post(f"/v2/dst/blobs/uploads/?mount={dgst}")
    assert resp.status == 201


async def test_blobs_are_visible_only_in_repositories_they_were_pushed_or_mounted_to(
    registry: Registry,
) -> None:
    dgst = await registry.push_blob("one", b"private")
    resp = await registry.client.get(f"/v2/two/blobs/{dgst}")
    assert resp.status == 404
    assert (await resp.json())["errors"][0]["code"] == "BLOB_UNKNOWN"


async def _range(registry: Registry, dgst: str, value: str) -> Any:
    return await registry.client.get(f"/v2/r/blobs/{dgst}", headers={"Range": value})


async def test_range_requests_answer_206_with_content_range(registry: Registry) -> None:
    data = bytes(range(256)) * 8  # 2048 bytes
    dgst = await registry.push_blob("r", data)
    cases = {
        "bytes=500-1499": (500, 1500),
        "bytes=500-": (500, 2048),
        "bytes=-500": (1548, 2048),
        "bytes=2000-5000": (2000, 2048),
    }
    for header, (start, end) in cases.items():
        resp = await _range(registry, dgst, header)
        assert resp.status == 206, header
        assert await resp.read() == data[start:end]
        assert resp.headers["Content-Range"] == f"bytes {start}-{end - 1}/2048"


@pytest.mark.parametrize("size", [2048, 100_000])  # read whole / FileResponse on the filesystem driver
async def test_unsatisfiable_ranges_answer_416(registry: Registry, size: int) -> None:
    dgst = await registry.push_blob("r", b"z" * size)
    # A zero-length suffix (RFC 9110 14.1.1) is unsatisfiable: it was a 206 with the whole blob.
    # Malformed ones too (also empty), with the OCI envelope: FileResponse answered them with no body.
    headers = ("bytes=500-0", f"bytes={size}-{size + 10}", "bytes=-0", "bytes=-000", "BYTES=-0", "bytes=1-0",
               "", "chars=0-1", "bytes=a-b", "bytes=-")  # fmt: skip
    for header in headers:
        resp = await _range(registry, dgst, header)
        assert resp.status == 416, header
        assert resp.headers["Content-Range"] == f"bytes */{size}", header
        assert (await resp.json())["errors"][0]["code"] == "RANGE_INVALID", header


async def test_blob_delete_unlinks_it_from_the_repository_only(registry: Registry) -> None:
    dgst = await registry.push_blob("a", b"both")
    await registry.client.post(f"/v2/b/blobs/uploads/?mount={dgst}&from=a")
    assert (await registry.client.delete(f"/v2/a/blobs/{dgst}")).status == 202
    assert (await registry.client.head(f"/v2/a/blobs/{dgst}")).status == 404
    assert (await registry.client.head(f"/v2/b/blobs/{dgst}")).status == 200


async def test_manifest_put_by_tag_and_get_by_tag_and_digest_return_exact_bytes(registry: Registry) -> None:
    image = make_image()
    dgst = await registry.push_image("team/app", image, tag="v1")
    for ref in ("v1", dgst):
        resp = await registry.client.get(f"/v2/team/app/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert resp.status == 200
        assert await resp.read() == image.manifest
        assert resp.headers["Content-Type"] == OCI_MANIFEST
        assert resp.headers["Docker-Content-Digest"] == dgst
        head = await registry.client.head(f"/v2/team/app/manifests/{ref}")
        assert head.status == 200
        assert head.headers["Content-Length"] == str(len(image.manifest))


async def test_manifest_put_by_digest_with_tag_parameters_answers_oci_tag(registry: Registry) -> None:
    image = make_image()
    await registry.push_blob("r", image.config)
    await registry.push_blob("r", image.layer)
    resp = await registry.client.put(
        f"/v2/r/manifests/{image.digest}?tag=a&tag=b",
        data=image.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert resp.status == 201
    assert resp.headers["OCI-Tag"] == "a, b"
    assert resp.headers["Location"] == f"/v2/r/manifests/{image.digest}"
    tags = await (await registry.client.get("/v2/r/tags/list")).json()
    assert tags == {"name": "r", "tags": ["a", "b"]}


async def test_index_is_negotiated_down_for_clients_that_only_accept_image_manifests(
    registry: Registry,
) -> None:
    image = make_image()
    child = await registry.push_image("r", image, tag=None)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": child,
                    "size": len(image.manifest),
                    "platform": {"os": "linux", "architecture": "amd64"},
                }
            ],
        }
    ).encode()
    put = await registry.client.put("/v2/r/manifests/multi", data=index, headers={"Content-Type": OCI_INDEX})
    assert put.status == 201
    narrow = await registry.client.get("/v2/r/manifests/multi", headers={"Accept": OCI_MANIFEST})
    assert narrow.headers["Docker-Content-Digest"] == child
    wide = await registry.client.get(
        "/v2/r/manifests/multi", headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
    )
    assert await wide.read() == index


async def test_index_referencing_an_unknown_manifest_is_refused(registry: Registry) -> None:
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(b"missing"), "size": 7}],
        }
    ).encode()
    resp = await registry.client.put("/v2/r/manifests/x", data=index, headers={"Content-Type": OCI_INDEX})
    assert resp.status == 400
    assert (await resp.json())["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"


async def test_tag_delete_keeps_the_manifest_and_manifest_delete_removes_its_tags(registry: Registry) -> None:
    dgst = await registry.push_image("r", make_image(), tag="v1")
    await registry.client.put(
        "/v2/r/manifests/v2", data=make_image().manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert (await registry.client.delete("/v2/r/manifests/v1")).status == 202
    assert (await registry.client.get("/v2/r/manifests/v1")).status == 404
    assert (await registry.client.get(f"/v2/r/manifests/{dgst}")).status == 200
    assert (await registry.client.delete(f"/v2/r/manifests/{dgst}")).status == 202
    gone = await registry.client.get(f"/v2/r/manifests/{dgst}")
    assert gone.status == 404
    assert (await gone.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert (await (await registry.client.get("/v2/r/tags/list")).json())["tags"] == []


async def test_tags_list_paginates_with_n_last_and_link(registry: Registry) -> None:
    image = make_image()
    await registry.push_image("r", image, tag="a")
    for tag in ("b", "c", "d"):
        await registry.client.put(
            f"/v2/r/manifests/{tag}", data=image.manifest, headers={"Content-Type": OCI_MANIFEST}
        )
    first = await registry.client.get("/v2/r/tags/list?n=2")
    assert (await first.json())["tags"] == ["a", "b"]
    assert first.headers["Link"] == '</v2/r/tags/list?n=2&last=b>; rel="next"'
    second = await registry.client.get("/v2/r/tags/list?n=2&last=b")
    assert (await second.json())["tags"] == ["c", "d"]
    assert "Link" not in second.headers
    assert (await (await registry.client.get("/v2/r/tags/list?last=c")).json())["tags"] == ["d"]


async def test_tags_list_of_unknown_repository_is_name_unknown(registry: Registry) -> None:
    resp = await registry.client.get("/v2/never/pushed/tags/list")
    assert resp.status == 404
    assert (await resp.json())["errors"][0]["code"] == "NAME_UNKNOWN"


async def test_catalog_lists_repositories_with_pagination(registry: Registry) -> None:
    for repo in ("b/two", "a/one", "c"):
        await registry.push_blob(repo, repo.encode())
    assert (await (await registry.client.get("/v2/_catalog")).json()) == {
        "repositories": ["a/one", "b/two", "c"]
    }
    page = await registry.client.get("/v2/_catalog?n=1&last=a/one")
    assert (await page.json())["repositories"] == ["b/two"]
    assert page.headers["Link"] == '</v2/_catalog?n=1&last=b%2Ftwo>; rel="next"'


async def test_referrers_list_manifests_whose_subject_is_the_digest(registry: Registry) -> None:
    subject_digest = await registry.push_image("r", make_image("subject"), tag="v1")
    subject = {
        "mediaType": OCI_MANIFEST,
        "digest": subject_digest,
        "size": len(make_image("subject").manifest),
    }
    empty = b"{}"
    await registry.push_blob("r", empty)
    sbom = make_manifest(
        config=empty,
        layers=[],
        subject=subject,
        artifact_type="application/x-sbom",
        annotations={"org.example": "yes"},
    )
    sig = make_manifest(config=empty, layers=[], subject=subject, artifact_type="application/x-sig")
    for body in (sbom, sig):
        resp = await registry.client.put(
            f"/v2/r/manifests/{sha256(body)}", data=body, headers={"Content-Type": OCI_MANIFEST}
        )
        assert resp.status == 201
        assert resp.headers["OCI-Subject"] == subject_digest
    listing = await registry.client.get(f"/v2/r/referrers/{subject_digest}")
    assert listing.headers["Content-Type"] == OCI_INDEX
    found = {d["digest"]: d for d in (await listing.json())["manifests"]}
    assert found[sha256(sbom)] == {
        "mediaType": OCI_MANIFEST,
        "digest": sha256(sbom),
        "size": len(sbom),
        "artifactType": "application/x-sbom",
        "annotations": {"org.example": "yes"},
    }
    assert sha256(sig) in found
    filtered = await registry.client.get(f"/v2/r/referrers/{subject_digest}?artifactType=application/x-sig")
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in (await filtered.json())["manifests"]] == [sha256(sig)]
    await registry.client.delete(f"/v2/r/manifests/{sha256(sig)}")
    after = await (await registry.client.get(f"/v2/r/referrers/{subject_digest}")).json()
    assert [d["digest"] for d in after["manifests"]] == [sha256(sbom)]


async def test_referrers_of_unknown_subject_is_an_empty_index(registry: Registry) -> None:
    resp = await registry.client.get(f"/v2/r/referrers/{sha256(b'nobody')}")
    assert resp.status == 200
    assert await resp.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


async def test_no_delete_answers_405_unsupported_and_keeps_content(
    make_client: conftest.ClientFactory,
) -> None:
    reg = await make_client(delete_enabled=False)
    dgst = await reg.push_image("r", make_image(), tag="v1")
    for path in (
        f"/v2/r/manifests/{dgst}",
        "/v2/r/manifests/v1",
        f"/v2/r/blobs/{sha256(make_image().layer)}",
    ):
        resp = await reg.client.delete(path)
        assert resp.status == 405
        assert (await resp.json())["errors"][0]["code"] == "UNSUPPORTED"
    assert (await reg.client.get("/v2/r/manifests/v1")).status == 200


async def test_accel_redirect_answers_empty_body_with_the_blob_file_path(
    make_client: conftest.ClientFactory,
) -> None:
    reg = await make_client(accel_redirect="/_dockyard_blobs/")
    dgst = await reg.push_blob("r", b"served by nginx")
    resp = await reg.client.get(f"/v2/r/blobs/{dgst}")
    hexpart = dgst.split(":")[1]
    assert resp.headers["X-Accel-Redirect"] == f"/_dockyard_blobs/blobs/sha256/{hexpart[:2]}/{hexpart}/data"
    assert resp.headers["Docker-Content-Digest"] == dgst
    assert resp.headers["ETag"] == f'"{dgst}"'
    assert await resp.read() == b""
    # The redirect target is the blob's file relative to the data dir, which nginx aliases.
    local = reg.store.driver.local_path(resp.headers["X-Accel-Redirect"].removeprefix("/_dockyard_blobs/"))
    assert local is not None and local.read_bytes() == b"served by nginx"


async def test_unknown_method_on_a_known_path_is_405(registry: Registry) -> None:
    resp = await registry.client.post("/v2/r/tags/list")
    assert resp.status == 405
    assert (await resp.json())["errors"][0]["code"] == "UNSUPPORTED"


async def test_every_response_carries_the_api_version_header(registry: Registry) -> None:
    dgst = await registry.push_blob("r", b"v" * 100)
    responses = [
        await registry.client.get(f"/v2/r/blobs/{dgst}"),
        await registry.client.get(f"/v2/r/blobs/{dgst}", headers={"Range": "bytes=0-9"}),
        await registry.client.get("/v2/r/manifests/missing"),
        await registry.client.post("/v2/r/blobs/uploads/"),
        await registry.client.get("/healthz"),
    ]
    for resp in responses:
        assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0", resp.url


async def test_large_blobs_stream_whole_and_small_ones_are_answered_in_one_read(registry: Registry) -> None:
    for size in (10, 64 * 1024, 64 * 1024 + 1, 3 * 1024 * 1024 + 7):
        data = bytes(range(256)) * (size // 256) + b"t" * (size % 256)
        dgst = await registry.push_blob("sizes", data)
        resp = await registry.client.get(f"/v2/sizes/blobs/{dgst}")
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(size)
        assert resp.headers["Docker-Content-Digest"] == dgst
        assert await resp.read() == data


async def test_concurrent_pushes_of_the_same_content_store_it_once_and_link_it_everywhere(
    registry: Registry,
) -> None:
    import asyncio

    data = b"popular layer" * 1000
    repos = [f"team/app{i}" for i in range(10)]
    pushed = await asyncio.gather(*(registry.push_blob(repo, data) for repo in repos))
    assert set(pushed) == {sha256(data)}
    digest_hex = sha256(data).split(":")[1]
    assert registry.store.driver.list(f"blobs/sha256/{digest_hex[:2]}") == [digest_hex]
    for repo in repos:
        resp = await registry.client.get(f"/v2/{repo}/blobs/{sha256(data)}")
        assert await resp.read() == data
    assert registry.store.driver.list("uploads") == []
