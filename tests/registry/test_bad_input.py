"""Bad input gets the spec's error code and never changes what was stored before.

Each test pushes known-good content first, sends one kind of bad request, checks the status and OCI
error code, and then compares a snapshot of every stored file (upload sessions included) with the one
taken before. Covers: invalid repository names (uppercase, `..`, leading
separators, over 255 chars), invalid tags and digests, unknown digest algorithms, digest mismatches
(monolithic, chunked, manifest by digest), manifests over 4 MiB / not JSON / referencing missing blobs /
nested 200k levels deep / not UTF-8 (UTF-16, UTF-32, a BOM, Latin-1) / with a key twice or two keys
differing only in case in one object / with layer `urls` (foreign layers are off by default),
wrong and malformed Content-Range, unknown and foreign upload ids, path traversal in every path segment
(also percent-encoded), truncated bodies and client disconnects mid-upload (raw sockets), and unknown
exceptions (500 UNKNOWN without a traceback); a full disk (507, the upload left where it was); invalid
page sizes for tags/list and the catalog (PAGINATION_NUMBER_INVALID: only ASCII digits, at most 19 of
them; `n=0` is an empty page); paths aiohttp's router would refuse itself (a percent-encoded newline, a
path outside `/v2/`, a method `/auth` lacks) get the OCI envelope too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from dockyard_registry import digest
from dockyard_registry import store as store_module
from dockyard_registry.storage import base
from tests.registry.conftest import OCI_MANIFEST, Registry, make_image, make_manifest, sha256


def snapshot(root: Path) -> dict[str, bytes]:
    """Every stored file (upload sessions included) and its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
async def seeded(fs_registry: Registry) -> Registry:
    await fs_registry.push_image("team/app", make_image("seed"), tag="v1")
    return fs_registry


def root(reg: Registry) -> Path:
    path = reg.store.driver.local_path("x")
    assert path is not None
    return path.parent


async def error_code(resp: Any) -> str:
    body = await resp.json(content_type=None)
    return str(body["errors"][0]["code"])


@pytest.mark.parametrize(
    "path",
    [
        "/v2/Team/app/tags/list",
        "/v2/team//app/tags/list",
        "/v2/-team/tags/list",
        "/v2/" + "a" * 256 + "/tags/list",
        "/v2/team/app%2F..%2F..%2Fx/tags/list",
        "/v2/a%2e%2e/tags/list",
    ],
)
async def test_invalid_repository_names_are_name_invalid(seeded: Registry, path: str) -> None:
    before = snapshot(root(seeded))
    resp = await seeded.client.get(path)
    assert resp.status == 400
    assert await error_code(resp) == "NAME_INVALID"
    assert snapshot(root(seeded)) == before


async def test_name_with_dot_dot_segment_never_reaches_storage(seeded: Registry) -> None:
    before = snapshot(root(seeded))
    # Sent raw so no client normalizes the dot segments away first.
    for path in ("/v2/team/../team/app/tags/list", "/v2/../../etc/blobs/uploads/"):
        status, _ = await raw_request(seeded, "POST" if "uploads" in path else "GET", path)
        assert status in (400, 404), path
    assert snapshot(root(seeded)) == before


async def test_push_to_invalid_name_stores_nothing(seeded: Registry) -> None:
    before = snapshot(root(seeded))
    resp = await seeded.client.post(f"/v2/Bad/blobs/uploads/?digest={sha256(b'x')}", data=b"x")
    assert (resp.status, await error_code(resp)) == (400, "NAME_INVALID")
    assert snapshot(root(seeded)) == before


@pytest.mark.parametrize("tag", ["-dash", ".dot", "a" * 129])
async def test_invalid_tags_are_tag_invalid(seeded: Registry, tag: str) -> None:
    before = snapshot(root(seeded))
    resp = await seeded.client.put(
        f"/v2/team/app/manifests/{tag}",
        data=make_image("seed").manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert (resp.status, await error_code(resp)) == (400, "TAG_INVALID")
    assert snapshot(root(seeded)) == before


async def test_invalid_tag_parameter_is_tag_invalid(seeded: Registry) -> None:
    image = make_image("seed")
    resp = await seeded.client.put(
        f"/v2/team/app/manifests/{image.digest}?tag=..bad",
        data=image.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert (resp.status, await error_code(resp)) == (400, "TAG_INVALID")


@pytest.mark.parametrize(
    "path",
    [
        "/v2/team/app/blobs/sha256:nothex",
        "/v2/team/app/manifests/sha256:baddigeststring",
        "/v2/team/app/referrers/sha256:short",
    ],
)
async def test_invalid_digests_are_digest_invalid(seeded: Registry, path: str) -> None:
    resp = await seeded.client.get(path)
    assert (resp.status, await error_code(resp)) == (400, "DIGEST_INVALID")


async def test_unknown_digest_algorithm_is_unsupported(seeded: Registry) -> None:
    before = snapshot(root(seeded))
    resp = await seeded.client.post(
        "/v2/team/app/blobs/uploads/?digest=md5:d41d8cd98f00b204e9800998ecf8427e", data=b""
    )
    assert (resp.status, await error_code(resp)) == (400, "UNSUPPORTED")
    get = await seeded.client.get("/v2/team/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e")
    assert (get.status, await error_code(get)) == (400, "UNSUPPORTED")
    assert snapshot(root(seeded)) == before


async def test_monolithic_push_with_wrong_digest_stores_nothing(seeded: Registry) -> None:
    before = snapshot(root(seeded))
    resp = await seeded.client.post(
        f"/v2/team/app/blobs/uploads/?digest={sha256(b'expected')}", data=b"actual"
    )
    assert (resp.status, await error_code(resp)) == (400, "DIGEST_INVALID")
    assert snapshot(root(seeded)) == before
    assert (await seeded.client.head(f"/v2/team/app/blobs/{sha256(b'expected')}")).status == 404


async def test_chunked_upload_finished_with_wrong_digest_keeps_the_session_intact(seeded: Registry) -> None:
    location = (await seeded.client.post("/v2/team/app/blobs/uploads/")).headers["Location"]
    await seeded.client.patch(location, data=b"abc")
    before = snapshot(root(seeded))
    resp = await seeded.client.put(f"{location}?digest={sha256(b'abd')}")
    assert (resp.status, await error_code(resp)) == (400, "DIGEST_INVALID")
    assert snapshot(root(seeded)) == before
    assert (await seeded.client.put(f"{location}?digest={sha256(b'abc')}")).status == 201


async def test_finishing_an_upload_without_digest_is_digest_invalid(seeded: Registry) -> None:
    location = (await seeded.client.post("/v2/team/app/blobs/uploads/")).headers["Location"]
    resp = await seeded.client.put(location, data=b"abc")
    assert (resp.status, await error_code(resp)) == (400, "DIGEST_INVALID")


async def test_manifest_put_by_mismatching_digest_stores_nothing(seeded: Registry) -> None:
    before = snapshot(root(seeded))
    body = make_image("seed").manifest + b"  "
    resp = await seeded.client.put(
        f"/v2/team/app/manifests/{make_image('seed').digest}",
        data=body,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert (resp.status, await error_code(resp)) == (400, "DIGEST_INVALID")
    assert snapshot(root(seeded)) == before


async def test_manifest_over_4_mib_is_refused_and_tag_unchanged(seeded: Registry) -> None:
    before = snapshot(root(seeded))
    huge = b'{"schemaVersion": 2, "pad": "' + b"x" * (4 * 1024 * 1024) + b'"}'
    resp = await seeded.client.put(
        "/v2/team/app/manifests/v1", data=huge, headers={"Content-Type": OCI_MANIFEST}
    )
    assert (resp.status, await error_code(resp)) == (413, "MANIFEST_INVALID")
    assert snapshot(root(seeded)) == before


async def test_manifest_over_4_mib_sent_chunked_is_refused(seeded: Registry) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * (1024 * 1024)

    resp = await seeded.client.put(
        "/v2/team/app/manifests/v1", data=body(), headers={"Content-Type": OCI_MANIFEST}
    )
    assert (resp.status, await error_code(resp)) == (413, "MANIFEST_INVALID")


@pytest.mark.parametrize(
    "body", [b"not json at all", b"{}", b'{"schemaVersion": 2, "mediaType": "text/html"}']
)
async def test_unparseable_manifests_are_manifest_invalid_and_tag_unchanged(
    seeded: Registry, body: bytes
) -> None:
    before = snapshot(root(seeded))
    resp = await seeded.client.put(
        "/v2/team/app/manifests/v1", data=body, headers={"Content-Type": OCI_MANIFEST}
    )
    assert (resp.status, await error_code(resp)) == (400, "MANIFEST_INVALID")
    assert snapshot(root(seeded)) == before


def _seed_manifest_with(*extra: tuple[str, str], **replace: str) -> bytes:
    """The seeded image's manifest (every blob present) as JSON text, with members replaced or appended
    as raw (key, JSON value) text, so one object can hold a key twice."""
    doc = json.loads(make_image("seed").manifest)
    members = [(key, replace.get(key, json.dumps(value))) for key, value in doc.items()]
    return ("{" + ", ".join(f'"{key}": {value}' for key, value in [*members, *extra]) + "}").encode()


def _hostile_manifests() -> dict[str, bytes]:
    seed = make_image("seed")
    doc = json.loads(seed.manifest)
    config = doc["config"]
    # Blobs the repository holds, so only the duplicate decides: the config as the single layer.
    other_layers = json.dumps([{**doc["layers"][0], "digest": config["digest"], "size": config["size"]}])
    config_twice = (
        f'{{"mediaType": "{config["mediaType"]}", "digest": "{config["digest"]}", '
        f'"Digest": "{doc["layers"][0]["digest"]}", "size": {config["size"]}}}'
    )
    text = seed.manifest.decode()
    return {
        # 200k levels: the stdlib parser raised RecursionError (500 with a traceback in the log).
        "nested-200k-deep": b'{"schemaVersion": 2, "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
        # json.loads(bytes) guesses UTF-16/32 and a UTF-8 BOM: each of these was stored (201).
        "utf-16-with-bom": text.encode("utf-16"),
        "utf-16-le": text.encode("utf-16-le"),
        "utf-32": text.encode("utf-32"),
        "utf-8-bom": b"\xef\xbb\xbf" + seed.manifest,
        "latin-1": _seed_manifest_with(("annotations", '{"k": "caf\u00e9"}')).replace(b"\xc3\xa9", b"\xe9"),
        # Python keeps the last duplicate, Go's encoding/json the last case-insensitive match: two readers
        # of one digest could see different layers. Each of these was stored (201).
        "layers-twice": _seed_manifest_with(("layers", other_layers)),
        "layers-and-Layers": _seed_manifest_with(("Layers", other_layers)),
        "schemaVersion-and-SCHEMAVERSION": _seed_manifest_with(("SCHEMAVERSION", "2")),
        "config-digest-and-Digest": _seed_manifest_with(config=config_twice),
    }


@pytest.mark.parametrize("name", list(_hostile_manifests()))
async def test_manifests_other_parsers_could_read_differently_are_manifest_invalid(
    seeded: Registry, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = snapshot(root(seeded))
    resp = await seeded.client.put(
        "/v2/team/app/manifests/v1", data=_hostile_manifests()[name], headers={"Content-Type": OCI_MANIFEST}
    )
    text = await resp.text()
    assert (resp.status, json.loads(text)["errors"][0]["code"]) == (400, "MANIFEST_INVALID"), text
    assert "Traceback" not in text and "Traceback" not in caplog.text
    assert snapshot(root(seeded)) == before


async def test_the_seed_manifest_spelled_by_hand_is_accepted(seeded: Registry) -> None:
    """The control for the test above: the hand-built JSON is valid when nothing hostile is added."""
    resp = await seeded.client.put(
        "/v2/team/app/manifests/v2", data=_seed_manifest_with(), headers={"Content-Type": OCI_MANIFEST}
    )
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    ],
)
async def test_layers_with_urls_are_manifest_invalid_unless_foreign_layers_are_allowed(
    seeded: Registry, media_type: str
) -> None:
    before = snapshot(root(seeded))
    doc = json.loads(make_image("seed").manifest)
    doc["layers"][0] = {**doc["layers"][0], "mediaType": media_type, "urls": ["https://example.com/layer"]}
    resp = await seeded.client.put(
        "/v2/team/app/manifests/v1", data=json.dumps(doc).encode(), headers={"Content-Type": OCI_MANIFEST}
    )
    text = await resp.text()
    assert (resp.status, json.loads(text)["errors"][0]["code"]) == (400, "MANIFEST_INVALID"), text
    assert "foreign layers" in text
    assert snapshot(root(seeded)) == before


async def test_manifest_referencing_missing_blob_is_manifest_blob_unknown(seeded: Registry) -> None:
    before = snapshot(root(seeded))
    body = make_manifest(config=make_image("seed").config, layers=[b"never pushed"])
    resp = await seeded.client.put(
        "/v2/team/app/manifests/v1", data=body, headers={"Content-Type": OCI_MANIFEST}
    )
    assert (resp.status, await error_code(resp)) == (400, "MANIFEST_BLOB_UNKNOWN")
    assert (await resp.json())["errors"][0]["detail"] == {"digest": sha256(b"never pushed")}
    assert snapshot(root(seeded)) == before


async def test_manifest_referencing_a_blob_of_another_repository_is_manifest_blob_unknown(
    seeded: Registry,
) -> None:
    resp = await seeded.client.put(
        "/v2/other/manifests/v1", data=make_image("seed").manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert (resp.status, await error_code(resp)) == (400, "MANIFEST_BLOB_UNKNOWN")


async def test_out_of_order_chunk_is_416_with_location_and_current_range(seeded: Registry) -> None:
    location = (await seeded.client.post("/v2/team/app/blobs/uploads/")).headers["Location"]
    await seeded.client.patch(location, data=b"0123456789", headers={"Content-Range": "0-9"})
    before = snapshot(root(seeded))
    resp = await seeded.client.patch(location, data=b"abc", headers={"Content-Range": "20-22"})
    assert (resp.status, await error_code(resp)) == (416, "RANGE_INVALID")
    assert resp.headers["Location"] == location
    assert resp.headers["Range"] == "0-9"
    assert snapshot(root(seeded)) == before


@pytest.mark.parametrize("header", ["garbage", "5-2", "bytes=x-y"])
async def test_malformed_content_range_is_range_invalid(seeded: Registry, header: str) -> None:
    location = (await seeded.client.post("/v2/team/app/blobs/uploads/")).headers["Location"]
    before = snapshot(root(seeded))
    resp = await seeded.client.patch(location, data=b"abc", headers={"Content-Range": header})
    assert (resp.status, await error_code(resp)) == (416, "RANGE_INVALID")
    assert snapshot(root(seeded)) == before


async def test_content_range_length_not_matching_body_is_refused(seeded: Registry) -> None:
    location = (await seeded.client.post("/v2/team/app/blobs/uploads/")).headers["Location"]
    resp = await seeded.client.patch(location, data=b"abc", headers={"Content-Range": "0-9"})
    assert (resp.status, await error_code(resp)) == (416, "RANGE_INVALID")
    assert (await seeded.client.get(location)).headers["Range"] == "0-0"


@pytest.mark.parametrize("upload_id", ["0" * 32, "not-a-uuid", "..%2F..%2Fblobs"])
async def test_unknown_upload_ids_are_blob_upload_unknown(seeded: Registry, upload_id: str) -> None:
    before = snapshot(root(seeded))
    base = f"/v2/team/app/blobs/uploads/{upload_id}"
    for method, url in (
        ("GET", base),
        ("PATCH", base),
        ("PUT", f"{base}?digest={sha256(b'')}"),
        ("DELETE", base),
    ):
        resp = await seeded.client.request(method, url, data=b"")
        assert (resp.status, await error_code(resp)) == (404, "BLOB_UPLOAD_UNKNOWN"), (method, upload_id)
    assert snapshot(root(seeded)) == before


async def test_an_upload_cannot_be_continued_from_another_repository(seeded: Registry) -> None:
    location = (await seeded.client.post("/v2/team/app/blobs/uploads/")).headers["Location"]
    upload_id = location.rsplit("/", 1)[1]
    resp = await seeded.client.patch(f"/v2/evil/blobs/uploads/{upload_id}", data=b"x")
    assert (resp.status, await error_code(resp)) == (404, "BLOB_UPLOAD_UNKNOWN")


@pytest.mark.parametrize(
    "path",
    [
        "/v2/team/app/blobs/..%2F..%2F..%2Fetc%2Fpasswd",
        "/v2/team/app/manifests/..%2F..%2Fx",
        "/v2/team/app/manifests/%2e%2e",
        "/v2/%2e%2e%2f%2e%2e/blobs/uploads/",
        "/v2/team/app/referrers/..%2F..",
    ],
)
async def test_percent_encoded_traversal_in_any_segment_is_refused(seeded: Registry, path: str) -> None:
    before = snapshot(root(seeded))
    for method in ("GET", "PUT", "DELETE", "POST"):
        status, body = await raw_request(seeded, method, path)
        assert 400 <= status < 500, (method, path, status)
        if status != 405:
            assert json.loads(body)["errors"][0]["code"] in {
                "NAME_INVALID",
                "DIGEST_INVALID",
                "TAG_INVALID",
                "NAME_UNKNOWN",
                "UNSUPPORTED",
            }
    assert snapshot(root(seeded)) == before
    assert not (root(seeded).parent / "etc").exists()


async def raw_request(reg: Registry, method: str, path: str, *, body: bytes = b"") -> tuple[int, bytes]:
    """One request over a raw socket, so no client library normalizes the path."""
    server = reg.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), rest


async def wait_for_uploads_to_settle(reg: Registry, *, started: bool) -> None:
    """Wait (bounded) until an upload handler is in flight (started=True) or none is (False)."""
    for _ in range(2400):  # 60 s at most: generous on a loaded machine, never a timing assertion
        if (reg.store.uploads_in_flight() > 0) == started:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"uploads never became {'busy' if started else 'idle'}")


@pytest.mark.parametrize("half_close", [True, False])
async def test_truncated_patch_body_rolls_the_upload_back(seeded: Registry, half_close: bool) -> None:
    location = (await seeded.client.post("/v2/team/app/blobs/uploads/")).headers["Location"]
    await seeded.client.patch(location, data=b"A" * 1000)
    before = snapshot(root(seeded))
    server = seeded.client.server
    _, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
        f"Content-Range: 1000-100999\r\n\r\n".encode()
        + b"B" * 5000
    )
    await writer.drain()
    await wait_for_uploads_to_settle(seeded, started=True)
    if half_close:
        writer.write_eof()
    else:
        writer.transport.abort()
    await wait_for_uploads_to_settle(seeded, started=False)
    writer.close()
    assert snapshot(root(seeded)) == before
    status = await seeded.client.get(location)
    assert status.headers["Range"] == "0-999"
    # The session is still usable from where it was.
    await seeded.client.patch(location, data=b"C", headers={"Content-Range": "1000-1000"})
    done = await seeded.client.put(f"{location}?digest={sha256(b'A' * 1000 + b'C')}")
    assert done.status == 201


async def test_truncated_monolithic_push_leaves_no_blob_and_no_session(seeded: Registry) -> None:
    before = snapshot(root(seeded))
    data = b"D" * 100000
    server = seeded.client.server
    _, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        f"POST /v2/team/app/blobs/uploads/?digest={sha256(data)} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data[:3000]
    )
    await writer.drain()
    await wait_for_uploads_to_settle(seeded, started=True)
    writer.transport.abort()
    await wait_for_uploads_to_settle(seeded, started=False)
    assert snapshot(root(seeded)) == before
    assert (await seeded.client.head(f"/v2/team/app/blobs/{sha256(data)}")).status == 404


async def test_store_rolls_back_an_append_when_the_body_fails(driver: base.Driver) -> None:
    st = store_module.Store(driver)
    upload = st.start_upload("r")

    async def ok() -> AsyncIterator[bytes]:
        yield b"good"

    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise ConnectionResetError("client went away")

    await st.write_chunk("r", upload, body=ok())
    with pytest.raises(ConnectionResetError):
        await st.write_chunk("r", upload, body=broken())
    assert st.upload_size("r", upload) == 4
    await st.finish_upload("r", upload, dgst=digest.of_bytes(b"good"))
    assert st.blob_size("r", digest.of_bytes(b"good")) == 4


async def test_unknown_exceptions_are_500_unknown_without_traceback(
    seeded: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(name: str) -> list[str]:
        raise RuntimeError("internal detail /secret/path")

    monkeypatch.setattr(seeded.store, "tags", explode)
    resp = await seeded.client.get("/v2/team/app/tags/list")
    text = await resp.text()
    assert resp.status == 500
    assert json.loads(text) == {"errors": [{"code": "UNKNOWN", "message": "internal server error"}]}
    assert "Traceback" not in text and "secret" not in text


async def test_a_full_disk_is_507_and_leaves_the_upload_where_it_was(
    seeded: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    location = (await seeded.client.post("/v2/team/app/blobs/uploads/")).headers["Location"]
    await seeded.client.patch(location, data=b"A" * 100)
    before = snapshot(root(seeded))
    real_open = seeded.store.driver.open_writer

    def full_disk_writer(path: str) -> Any:
        writer = real_open(path)

        def write(data: bytes) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        writer.write = write  # type: ignore[method-assign]
        return writer

    monkeypatch.setattr(seeded.store.driver, "open_writer", full_disk_writer)
    resp = await seeded.client.patch(location, data=b"B" * 100)
    assert resp.status == 507
    assert await error_code(resp) == "UNKNOWN"
    assert "storage is full" in await resp.text()
    monkeypatch.undo()
    assert snapshot(root(seeded)) == before
    assert (await seeded.client.get(location)).headers["Range"] == "0-99"


@pytest.mark.parametrize(
    "query",
    [
        "n=abc",
        "n=-1",
        "n=-0",
        "n=+1",
        "n=1.5",
        "n=%20" + "1",
        # int() accepts these, and str.isdigit() too: a superscript two and an Arabic-Indic three.
        "n=%C2%B2",
        "n=%D9%A3",
        # Past int()'s digit limit (a ValueError deep in the conversion), and past any sane page size.
        "n=" + "9" * 5000,
        "n=" + "1" * 20,
    ],
)
async def test_invalid_page_sizes_are_pagination_number_invalid(
    seeded: Registry, query: str, caplog: pytest.LogCaptureFixture
) -> None:
    for path in ("/v2/team/app/tags/list", "/v2/_catalog"):
        resp = await seeded.client.get(f"{path}?{query}")
        text = await resp.text()
        assert resp.status == 400, path
        assert json.loads(text)["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"
        assert "n must be a non-negative integer" in text
        assert "Traceback" not in text
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("n", ["0", "00", "1" * 19])
async def test_page_sizes_of_ascii_digits_are_accepted_zero_giving_an_empty_page(
    seeded: Registry, n: str
) -> None:
    tags = await seeded.client.get(f"/v2/team/app/tags/list?n={n}")
    catalog = await seeded.client.get(f"/v2/_catalog?n={n}")
    assert (tags.status, catalog.status) == (200, 200)
    expected = ([], []) if int(n) == 0 else (["v1"], ["team/app"])
    assert ((await tags.json())["tags"], (await catalog.json())["repositories"]) == expected
    assert "Link" not in tags.headers and "Link" not in catalog.headers


@pytest.mark.parametrize(
    ("path", "method", "status", "code"),
    [
        ("/v2/%0A", "GET", 404, "NAME_UNKNOWN"),
        ("/v2/a%0Ab/tags/list", "GET", 400, "NAME_INVALID"),
        ("/v2/team/app%0A/manifests/v1", "GET", 400, "NAME_INVALID"),
        ("/nowhere", "GET", 404, "NAME_UNKNOWN"),
        ("/auth", "POST", 405, "UNSUPPORTED"),
    ],
)
async def test_what_aiohttp_would_refuse_itself_gets_the_oci_envelope(
    seeded: Registry, path: str, method: str, status: int, code: str
) -> None:
    before = snapshot(root(seeded))
    url = URL(str(seeded.client.make_url("/")).rstrip("/") + path, encoded=True)
    async with seeded.client.session.request(method, url) as resp:
        assert resp.status == status
        assert (await resp.json())["errors"][0]["code"] == code
    assert snapshot(root(seeded)) == before
