"""Pull-through mirrors against a small in-process upstream (aiohttp), without a subprocess.

The upstream here is a stand-in for speed; tests/integration/registry/test_mirror_real.py runs the same
flows against a real Distribution registry.

Aspects covered:
- a manifest and blob miss under a mirror prefix is fetched, stored as ordinary content and served
  byte-identical; the next request is a cache hit with no upstream request
- upstream authentication: anonymous, Basic (credentials from files), the Bearer token flow (token
  fetched with the credentials, reused for its scope until it expires), wrong password -> 502 naming
  the upstream and never the password
- digest mismatch (blob and manifest): an error, nothing stored
- tags: trusted for the TTL, then re-checked with a HEAD (a moved tag is seen; an unchanged one is not
  fetched again)
- upstream unreachable: cached content served with `Dockyard-Mirror: stale` and counted; uncached -> 502
- upstream 404 -> 404 with the OCI code
- twenty concurrent GETs of one uncached blob make exactly one upstream fetch
- the first client's download completes once the blob is verified, without waiting for the commit to
  storage; a request arriving meanwhile joins the fetch and is served from storage once it is there
- pushes and deletes under a mirror prefix are DENIED; the rest of the registry still takes pushes
- a multi-arch index whose children are fetched on demand; referrers listed from the upstream
- tag lists: the upstream's (paging links rewritten to the mirror's name), the cached ones when it is down
- fsck reports mirrored references not fetched yet as neither corruption nor dangling; gc keeps cached
  content a tag reaches like any other
- the mirrors file: validation errors, and `serve --mirrors` with a bad file exits 2
- token realms: challenge parsing; a public upstream cannot point the credentials at an internal or
  clear-text realm
- metrics: upstream requests, errors and stale serves; `/status` per mirror (reachable, last error)
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import test_utils, web

from dockyard_registry import app, cli, digest, fsck, gc, metrics, mirror, mirrors, state, store, upstream
from dockyard_registry.storage import filesystem
from tests.registry.conftest import OCI_INDEX, OCI_MANIFEST, Clock, make_image, make_manifest, sha256

PREFIX = "hub"


@dataclasses.dataclass
class Upstream:
    """What the stand-in upstream holds and how it behaves; `log` records every request it answered."""

    auth: str = "anonymous"  # anonymous | basic | bearer
    username: str = "mirror"
    password: str = "s3cret-pass"
    manifests: dict[tuple[str, str], tuple[bytes, str]] = dataclasses.field(default_factory=dict)
    blobs: dict[str, bytes] = dataclasses.field(default_factory=dict)
    referrers: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    corrupt: bool = False  # send other bytes than the digest names
    gate: asyncio.Event | None = None  # hold blob bodies after their first chunk until set
    cut: int | None = None  # send this many bytes of a blob's body, then drop the connection
    log: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    tokens_issued: int = 0
    token_seconds: int = 300

    def put_image(self, repo: str, image: Any, *, tag: str) -> None:
        self.blobs[sha256(image.config)] = image.config
        self.blobs[sha256(image.layer)] = image.layer
        self.manifests[(repo, tag)] = (image.manifest, OCI_MANIFEST)
        self.manifests[(repo, image.digest)] = (image.manifest, OCI_MANIFEST)

    def count(self, method: str, fragment: str) -> int:
        return sum(1 for m, p in self.log if m == method and fragment in p)


def _app(up: Upstream) -> web.Application:
    async def token(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != _basic(up.username, up.password):
            return web.Response(status=401)
        up.tokens_issued += 1
        return web.json_response({"token": f"tok-{up.tokens_issued}", "expires_in": up.token_seconds})

    def authorized(request: web.Request, repo: str) -> web.StreamResponse | None:
        given = request.headers.get("Authorization", "")
        if up.auth == "basic" and given != _basic(up.username, up.password):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="upstream"'})
        if up.auth == "bearer" and not given.startswith(f"Bearer tok-{up.tokens_issued}"):
            realm = f"http://{request.host}/token"
            challenge = f'Bearer realm="{realm}",service="fake",scope="repository:{repo}:pull"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        return None

    async def v2(request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        up.log.append((request.method, tail))
        repo, kind, ref = tail.rsplit("/", 2)
        refused = authorized(request, repo)
        if refused is not None:
            return refused
        if kind == "manifests":
            found = up.manifests.get((repo, ref))
            if found is None:
                return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
            data, media_type = found
            dgst = sha256(data)
            if up.corrupt:
                data = data.replace(b"schemaVersion", b"schemaversion")
            headers = {"Docker-Content-Digest": dgst, "Content-Type": media_type}
            if request.method == "HEAD":
                return web.Response(headers={**headers, "Content-Length": str(len(data))})
            return web.Response(body=data, headers=headers)
        if kind == "tags":
            names = sorted(t for r, t in up.manifests if r == repo and not t.startswith("sha256:"))
            if not names:
                return web.json_response({"errors": [{"code": "NAME_UNKNOWN"}]}, status=404)
            last = request.query.get("last", "")
            names = [t for t in names if t > last]
            link = {}
            if request.query.get("n") and len(names) > int(request.query["n"]):
                names = names[: int(request.query["n"])]
                link = {"Link": f'</v2/{repo}/tags/list?n={request.query["n"]}&last={names[-1]}>; rel="next"'}
            return web.json_response({"name": repo, "tags": names}, headers=link)
        if kind == "referrers":
            return web.json_response(
                {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": up.referrers.get(ref, [])},
                content_type=OCI_INDEX,
            )
        blob = up.blobs.get(ref)
        if blob is None:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        if up.corrupt:
            blob = bytes(reversed(blob))
        if request.method == "HEAD":
            return web.Response(headers={"Content-Length": str(len(blob)), "Docker-Content-Digest": ref})
        response = web.StreamResponse(headers={"Content-Length": str(len(blob))})
        await response.prepare(request)
        if up.cut is not None:
            await response.write(blob[: up.cut])
            assert request.transport is not None
            request.transport.close()  # the Content-Length promised more
            return response
        await response.write(blob[:10])
        if up.gate is not None:
            await up.gate.wait()
        await response.write(blob[10:])
        await response.write_eof()
        return response

    application = web.Application()
    application.router.add_get("/token", token)
    application.router.add_route("*", "/v2/{tail:.*}", v2)
    return application


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@dataclasses.dataclass
class Setup:
    upstream: Upstream
    server: test_utils.TestServer
    client: test_utils.TestClient[Any, Any]
    pull: mirror.PullThrough
    store: store.Store
    clock: Clock

    async def get(self, path: str, **kw: Any) -> tuple[int, bytes, dict[str, str]]:
        async with self.client.get(path, **kw) as resp:
            return resp.status, await resp.read(), dict(resp.headers)


Factory = Callable[..., Awaitable[Setup]]


@pytest.fixture
async def mirrored(tmp_path: Path) -> AsyncIterator[Factory]:
    opened: list[Setup] = []

    async def factory(
        up: Upstream | None = None,
        *,
        ttl: float = 300.0,
        password: str | None = None,
        credentials: bool = True,
    ) -> Setup:
        up = up or Upstream()
        server = test_utils.TestServer(_app(up))
        await server.start_server()
        (tmp_path / "user").write_text(up.username + "\n")
        (tmp_path / "pass").write_text((password or up.password) + "\n")
        doc: dict[str, Any] = {
            "prefix": PREFIX,
            "upstream": str(server.make_url("")).rstrip("/"),
            "tagTTL": ttl,
        }
        if credentials:
            doc |= {"usernameFile": "user", "passwordFile": "pass"}
        config = mirrors.parse({"mirrors": [doc]}, base=tmp_path)
        clock = Clock()
        st = store.Store(filesystem.FilesystemDriver(tmp_path / "data"))
        pull = mirror.PullThrough(config, store=st, clock=clock)
        settings = state.Settings(store=st, authenticator=None, mirror=pull)
        client = test_utils.TestClient(test_utils.TestServer(app.create_app(settings)))
        await client.start_server()
        setup = Setup(upstream=up, server=server, client=client, pull=pull, store=st, clock=clock)
        opened.append(setup)
        return setup

    yield factory
    for setup in opened:
        await setup.client.close()
        await setup.server.close()


async def _pull_image(s: Setup, repo: str, tag: str) -> tuple[bytes, list[bytes]]:
    status, manifest, _headers = await s.get(f"/v2/{PREFIX}/{repo}/manifests/{tag}")
    assert status == 200, manifest
    doc = json.loads(manifest)
    blobs = []
    for d in [doc["config"], *doc["layers"]]:
        status, data, _ = await s.get(f"/v2/{PREFIX}/{repo}/blobs/{d['digest']}")
        assert status == 200, data
        assert sha256(data) == d["digest"]
        blobs.append(data)
    await _committed(s)
    return manifest, blobs


async def _committed(s: Setup) -> None:
    """Wait until the fetches finished committing to storage (the first client's download completes
    once the blob is verified, a moment before the commit)."""
    for _ in range(2000):
        if s.pull.fetches_running == 0:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{s.pull.fetches_running} fetches still running")


async def test_first_pull_fetches_and_stores_then_serves_from_cache(mirrored: Factory) -> None:
    up = Upstream()
    image = make_image("anon")
    up.put_image("library/app", image, tag="1.0")
    s = await mirrored(up, credentials=False)

    status, manifest, headers = await s.get(f"/v2/{PREFIX}/library/app/manifests/1.0")
    assert (status, manifest) == (200, image.manifest)
    assert headers["Docker-Content-Digest"] == image.digest
    assert headers["Dockyard-Mirror"] == "fetched"
    _, blobs = await _pull_image(s, "library/app", "1.0")
    assert blobs == [image.config, image.layer]
    # Stored as ordinary content of the repository.
    assert s.store.blob_size(f"{PREFIX}/library/app", digest.parse(sha256(image.layer))) == len(image.layer)
    assert s.store.tags(f"{PREFIX}/library/app") == ["1.0"]

    before = list(up.log)
    status, manifest, headers = await s.get(f"/v2/{PREFIX}/library/app/manifests/1.0")
    assert headers["Dockyard-Mirror"] == "hit"
    await _pull_image(s, "library/app", "1.0")
    assert up.log == before  # nothing asked upstream


async def test_basic_auth_credentials_come_from_the_files(mirrored: Factory) -> None:
    up = Upstream(auth="basic")
    image = make_image("basic")
    up.put_image("team/app", image, tag="v1")
    s = await mirrored(up)

    _, blobs = await _pull_image(s, "team/app", "v1")
    assert blobs == [image.config, image.layer]


async def test_basic_auth_first_requests_at_once_all_succeed(mirrored: Factory) -> None:
    # Requests sent before the first Basic challenge was answered all carry no credentials and are all
    # challenged: each retries with the credentials (a 401 is "refused" only for a request that sent them).
    up = Upstream(auth="basic")
    image = make_image("at-once")
    up.put_image("team/app", image, tag="v1")
    s = await mirrored(up)

    paths = [f"/v2/{PREFIX}/team/app/blobs/{sha256(b)}" for b in (image.config, image.layer)]
    results = await asyncio.gather(*(s.get(p) for p in [f"/v2/{PREFIX}/team/app/manifests/v1", *paths]))
    assert [(status, data) for status, data, _ in results] == [
        (200, image.manifest),
        (200, image.config),
        (200, image.layer),
    ]
    # Each blob fetched once with credentials, after at most one challenge: a blob GET sent after the
    # manifest's challenge was answered already carries them (how many did depends on the scheduling).
    assert up.count("GET", "/blobs/") <= 4
    assert s.pull.clients[PREFIX].errors == {}


async def test_wrong_password_is_a_502_that_names_the_upstream_not_the_password(mirrored: Factory) -> None:
    up = Upstream(auth="basic")
    up.put_image("team/app", make_image("x"), tag="v1")
    s = await mirrored(up, password="wrong-password")

    status, body, _ = await s.get(f"/v2/{PREFIX}/team/app/manifests/v1")
    assert status == 502
    error = json.loads(body)["errors"][0]
    assert error["code"] == "UNKNOWN"
    assert "refused the mirror's credentials" in error["message"]
    assert str(s.server.make_url("")).rstrip("/") in error["message"]
    assert b"wrong-password" not in body and b"s3cret" not in body


async def test_bearer_token_flow_reuses_the_token_until_it_expires(mirrored: Factory) -> None:
    up = Upstream(auth="bearer", token_seconds=120)
    image = make_image("bearer")
    up.put_image("library/app", image, tag="1.0")
    s = await mirrored(up, ttl=60)

    _, blobs = await _pull_image(s, "library/app", "1.0")
    assert blobs == [image.config, image.layer]
    assert up.tokens_issued == 1  # one token for the scope, reused for the manifest and both blobs

    s.clock.advance(200)  # past the token's expiry (and the tag's TTL)
    status, _, _ = await s.get(f"/v2/{PREFIX}/library/app/manifests/1.0")
    assert status == 200
    assert up.tokens_issued == 2


async def test_bearer_token_service_refusing_credentials_is_a_clear_502(mirrored: Factory) -> None:
    up = Upstream(auth="bearer")
    up.put_image("library/app", make_image("x"), tag="1.0")
    s = await mirrored(up, password="nope")

    status, body, _ = await s.get(f"/v2/{PREFIX}/library/app/manifests/1.0")
    assert status == 502
    assert "token service" in json.loads(body)["errors"][0]["message"]


async def test_blob_digest_mismatch_is_refused_and_nothing_is_stored(mirrored: Factory) -> None:
    up = Upstream()
    image = make_image("bad")
    up.put_image("library/app", image, tag="1.0")
    s = await mirrored(up, credentials=False)
    status, _, _ = await s.get(f"/v2/{PREFIX}/library/app/manifests/1.0")
    assert status == 200
    up.corrupt = True
    layer = sha256(image.layer)

    # The first client gets a truncated body (the stream was cut); a later one gets the error itself.
    with pytest.raises(Exception):  # noqa: B017 - aiohttp's payload error type varies by version
        await s.get(f"/v2/{PREFIX}/library/app/blobs/{layer}")
    status, body, _ = await s.get(f"/v2/{PREFIX}/library/app/blobs/{layer}", headers={"Range": "bytes=0-3"})
    assert status == 502
    assert "nothing was stored" in json.loads(body)["errors"][0]["message"]
    with pytest.raises(store.BlobUnknownError):
        s.store.blob_size(f"{PREFIX}/library/app", digest.parse(layer))
    assert s.store.driver.list("uploads") == []
    assert s.store.driver.size(f"blobs/sha256/{layer[7:9]}/{layer[7:]}/data") is None


async def test_manifest_digest_mismatch_is_refused_and_nothing_is_stored(mirrored: Factory) -> None:
    up = Upstream(corrupt=True)
    image = make_image("badm")
    up.put_image("library/app", image, tag="1.0")
    s = await mirrored(up, credentials=False)

    for ref in ("1.0", image.digest):
        status, body, _ = await s.get(f"/v2/{PREFIX}/library/app/manifests/{ref}")
        assert status == 502, body
        assert "nothing was stored" in json.loads(body)["errors"][0]["message"]
    assert (
        not s.store.repository_exists(f"{PREFIX}/library/app") or s.store.tags(f"{PREFIX}/library/app") == []
    )


async def test_a_tag_is_trusted_for_its_ttl_then_rechecked_with_a_head(mirrored: Factory) -> None:
    up = Upstream()
    old, new = make_image("old"), make_image("new")
    up.put_image("library/app", old, tag="latest")
    s = await mirrored(up, ttl=60, credentials=False)
    path = f"/v2/{PREFIX}/library/app/manifests/latest"
    assert (await s.get(path))[1] == old.manifest

    up.put_image("library/app", new, tag="latest")  # the tag moves upstream
    s.clock.advance(30)
    _, body, headers = await s.get(path)
    assert (body, headers["Dockyard-Mirror"]) == (old.manifest, "hit")  # within the TTL

    s.clock.advance(31)
    _, body, headers = await s.get(path)
    assert (body, headers["Dockyard-Mirror"]) == (new.manifest, "fetched")
    assert up.count("HEAD", "manifests/latest") == 1

    # Unchanged upstream after the next TTL: one HEAD, no GET.
    gets = up.count("GET", "manifests/latest")
    s.clock.advance(61)
    _status, body, _ = await s.get(path)
    assert body == new.manifest
    assert up.count("HEAD", "manifests/latest") == 2
    assert up.count("GET", "manifests/latest") == gets


async def test_upstream_unreachable_serves_the_cache_marked_stale(mirrored: Factory) -> None:
    up = Upstream()
    image = make_image("stale")
    up.put_image("library/app", image, tag="1.0")
    s = await mirrored(up, ttl=10, credentials=False)
    await _pull_image(s, "library/app", "1.0")
    await s.server.close()  # the upstream is gone
    s.clock.advance(11)

    status, body, headers = await s.get(f"/v2/{PREFIX}/library/app/manifests/1.0")
    assert (status, body, headers["Dockyard-Mirror"]) == (200, image.manifest, "stale")
    _, blobs = await _pull_image(s, "library/app", "1.0")  # blobs are content-addressed: always served
    assert blobs == [image.config, image.layer]
    assert s.pull.stale[PREFIX] >= 1

    status, body, _ = await s.get(f"/v2/{PREFIX}/library/other/manifests/1.0")
    assert status == 502
    assert "unreachable" in json.loads(body)["errors"][0]["message"]


async def test_upstream_404_is_a_404_with_the_oci_code(mirrored: Factory) -> None:
    s = await mirrored(Upstream(), credentials=False)

    status, body, _ = await s.get(f"/v2/{PREFIX}/library/none/manifests/1.0")
    assert status == 404
    assert json.loads(body)["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    status, body, _ = await s.get(f"/v2/{PREFIX}/library/none/blobs/{sha256(b'x')}")
    assert status == 404
    assert json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"
    async with s.client.head(f"/v2/{PREFIX}/library/none/blobs/{sha256(b'x')}") as resp:
        assert resp.status == 404


async def test_twenty_concurrent_gets_of_one_uncached_blob_make_one_upstream_fetch(mirrored: Factory) -> None:
    up = Upstream(gate=asyncio.Event())
    layer = hashlib.sha256(b"").digest() * 40000  # 1.28 MB: several chunks
    dgst = sha256(layer)
    up.blobs[dgst] = layer
    s = await mirrored(up, credentials=False)
    path = f"/v2/{PREFIX}/library/app/blobs/{dgst}"

    gets = [asyncio.create_task(s.get(path)) for _ in range(20)]
    # The upstream holds the body until every request has reached the registry and joined the fetch.
    for _ in range(2000):
        fetches = list(s.pull._blobs.values())
        if fetches and fetches[0].waiters == 19:
            break
        await asyncio.sleep(0.005)
    assert [f.waiters for f in s.pull._blobs.values()] == [19]
    assert up.gate is not None
    up.gate.set()
    results = await asyncio.gather(*gets)

    assert [status for status, _, _ in results] == [200] * 20
    assert all(body == layer for _, body, _ in results)
    assert up.count("GET", dgst) == 1
    assert s.pull.coalesced[PREFIX] == 19  # what `mirror_coalesced_blob_requests_total` shows


async def test_the_first_client_does_not_wait_for_the_commit_and_a_later_one_waits_for_it(
    mirrored: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = Upstream()
    layer = hashlib.sha256(b"commit").digest() * 50000  # 1.6 MB: several chunks
    dgst = sha256(layer)
    up.blobs[dgst] = layer
    s = await mirrored(up, credentials=False)
    path = f"/v2/{PREFIX}/library/app/blobs/{dgst}"
    committing, release = threading.Event(), threading.Event()
    real_commit = store.Store._commit_upload

    def slow_commit(self: store.Store, name: str, upload_id: str, d: digest.Digest) -> None:
        committing.set()
        assert release.wait(30)
        real_commit(self, name, upload_id, d)

    monkeypatch.setattr(store.Store, "_commit_upload", slow_commit)

    try:
        status, body, _ = await s.get(path)  # complete while the commit is held (or not begun yet)
        assert (status, body) == (200, layer)
        assert await asyncio.to_thread(committing.wait, 30)
        assert s.pull.fetches_running == 1
        later = asyncio.create_task(s.get(path))
        for _ in range(2000):
            if s.pull.coalesced[PREFIX] == 1:
                break
            await asyncio.sleep(0.005)
        assert s.pull.coalesced[PREFIX] == 1 and not later.done()  # joined the fetch, waits for the commit
    finally:
        release.set()
    status, body, _ = await later
    assert (status, body) == (200, layer)
    assert s.store.blob_size(f"{PREFIX}/library/app", digest.parse(dgst)) == len(layer)
    assert up.count("GET", dgst) == 1


async def test_pushes_and_deletes_under_a_mirror_prefix_are_denied(mirrored: Factory) -> None:
    up = Upstream()
    image = make_image("deny")
    up.put_image("library/app", image, tag="1.0")
    s = await mirrored(up, credentials=False)
    await _pull_image(s, "library/app", "1.0")

    for method, path in [
        ("POST", f"/v2/{PREFIX}/library/app/blobs/uploads/"),
        ("POST", f"/v2/{PREFIX}/blobs/uploads/"),
        ("PUT", f"/v2/{PREFIX}/library/app/manifests/2.0"),
        ("DELETE", f"/v2/{PREFIX}/library/app/manifests/{image.digest}"),
        ("DELETE", f"/v2/{PREFIX}/library/app/blobs/{sha256(image.layer)}"),
    ]:
        async with s.client.request(method, path, data=b"{}") as resp:
            assert resp.status == 403, (method, path)
            error = (await resp.json())["errors"][0]
            assert error["code"] == "DENIED"
            assert "read-only mirror" in error["message"]
    # Outside the prefix the registry takes pushes as before.
    async with s.client.post(f"/v2/mine/app/blobs/uploads/?digest={sha256(b'own')}", data=b"own") as resp:
        assert resp.status == 201


async def test_an_index_is_served_and_its_children_fetched_on_demand(mirrored: Factory) -> None:
    up = Upstream()
    amd, arm = make_image("amd64"), make_image("arm64")
    up.put_image("library/app", amd, tag="amd")
    up.put_image("library/app", arm, tag="arm")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": amd.digest,
                    "size": len(amd.manifest),
                    "platform": {"os": "linux", "architecture": "amd64"},
                },
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": arm.digest,
                    "size": len(arm.manifest),
                    "platform": {"os": "linux", "architecture": "arm64"},
                },
            ],
        }
    ).encode()
    up.manifests[("library/app", "multi")] = (index, OCI_INDEX)
    s = await mirrored(up, credentials=False)

    status, body, headers = await s.get(f"/v2/{PREFIX}/library/app/manifests/multi")
    assert (status, body, headers["Content-Type"]) == (200, index, OCI_INDEX)
    assert up.count("GET", amd.digest) == 0  # children are not fetched with the index
    status, body, _ = await s.get(f"/v2/{PREFIX}/library/app/manifests/{arm.digest}")
    assert (status, body) == (200, arm.manifest)

    report = fsck.check(s.store)
    assert report.corruption == [] and report.dangling == []
    assert any(amd.digest in line for line in report.uncached)  # the child not asked for yet


async def test_referrers_are_listed_from_the_upstream(mirrored: Factory) -> None:
    up = Upstream()
    image = make_image("subject")
    up.put_image("library/app", image, tag="1.0")
    signature = make_manifest(
        config=b"{}",
        layers=[b"sig"],
        artifact_type="application/vnd.example.sig",
        subject={"mediaType": OCI_MANIFEST, "digest": image.digest, "size": len(image.manifest)},
    )
    descriptor = {
        "mediaType": OCI_MANIFEST,
        "digest": sha256(signature),
        "size": len(signature),
        "artifactType": "application/vnd.example.sig",
    }
    up.referrers[image.digest] = [descriptor]
    up.manifests[("library/app", sha256(signature))] = (signature, OCI_MANIFEST)
    s = await mirrored(up, credentials=False)

    status, body, _ = await s.get(f"/v2/{PREFIX}/library/app/referrers/{image.digest}")
    assert status == 200
    assert json.loads(body)["manifests"] == [descriptor]
    status, body, _ = await s.get(f"/v2/{PREFIX}/library/app/manifests/{sha256(signature)}")
    assert (status, body) == (200, signature)


async def test_gc_treats_cached_content_like_any_other(mirrored: Factory) -> None:
    up = Upstream()
    image = make_image("gc")
    up.put_image("library/app", image, tag="1.0")
    s = await mirrored(up, credentials=False)
    await _pull_image(s, "library/app", "1.0")
    later = time.time() + 10  # past the grace period of everything just fetched

    report = gc.collect(s.store, grace=1.0, dry_run=False, clock=lambda: later, delete_untagged=True)
    assert report.blobs == [] and report.errors == []  # the tag keeps manifest, config and layer
    assert fsck.check(s.store).corruption == []

    s.store.delete_tag(f"{PREFIX}/library/app", "1.0")  # what retention would do to an old tag
    report = gc.collect(s.store, grace=1.0, dry_run=False, clock=lambda: later, delete_untagged=True)
    assert sorted(report.blobs) == sorted([sha256(image.config), sha256(image.layer), image.digest])
    # Gone from the cache, so the next pull fetches it again.
    _, blobs = await _pull_image(s, "library/app", "1.0")
    assert blobs == [image.config, image.layer]
    assert up.count("GET", sha256(image.layer)) == 2


async def test_metrics_and_status_count_upstream_requests_errors_and_stale_serves(mirrored: Factory) -> None:
    up = Upstream()
    up.put_image("library/app", make_image("m"), tag="1.0")
    s = await mirrored(up, ttl=0, credentials=False)
    await _pull_image(s, "library/app", "1.0")
    await s.get(f"/v2/{PREFIX}/library/none/manifests/1.0")
    await s.server.close()
    await s.get(f"/v2/{PREFIX}/library/app/manifests/1.0")

    measured = metrics.Metrics(metrics.Sources(mirror=s.pull))
    text = measured.exposition().decode()
    assert f'dockyard_registry_mirror_upstream_requests_total{{kind="blob",mirror="{PREFIX}"}} 2.0' in text
    assert (
        f'dockyard_registry_mirror_upstream_errors_total{{mirror="{PREFIX}",reason="not_found"}} 1.0' in text
    )
    assert (
        f'dockyard_registry_mirror_upstream_errors_total{{mirror="{PREFIX}",reason="unavailable"}} 1.0'
        in text
    )
    assert f'dockyard_registry_mirror_stale_serves_total{{mirror="{PREFIX}"}} 1.0' in text

    listener = test_utils.TestClient(test_utils.TestServer(metrics.listener_app(measured)))
    await listener.start_server()
    try:
        async with listener.get("/status") as resp:
            (entry,) = (await resp.json())["mirrors"]
    finally:
        await listener.close()
    assert (entry["prefix"], entry["reachable"], entry["staleServes"]) == (PREFIX, False, 1)
    assert "unreachable" in entry["lastError"] and entry["lastErrorAt"] is not None
    assert entry["lastErrorReason"] == "unavailable"
    assert entry["lastSuccessAt"] is not None and entry["lastSuccessAt"] <= entry["lastErrorAt"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"mirrors": [{"prefix": "a", "upstream": "ftp://x"}]}, "upstream must be http(s)"),
        ({"mirrors": [{"prefix": "a", "upstream": "https://u:p@x"}]}, "without credentials"),
        ({"mirrors": [{"prefix": "A!", "upstream": "https://x"}]}, "prefix must be a valid repository name"),
        ({"mirrors": [{"prefix": "a", "upstream": "https://x", "usernameFile": "u"}]}, "both usernameFile"),
        ({"mirrors": [{"prefix": "a", "upstream": "https://x", "tagTTL": "soon"}]}, "tagTTL"),
        (
            {"mirrors": [{"prefix": "a", "upstream": "https://x", "password": "p"}]},
            "unknown field(s) password",
        ),
        (
            {
                "mirrors": [
                    {"prefix": "a", "upstream": "https://x"},
                    {"prefix": "a/b", "upstream": "https://y"},
                ]
            },
            "overlap",
        ),
    ],
)
def test_an_invalid_mirrors_file_is_refused_with_the_field_named(doc: Any, message: str) -> None:
    with pytest.raises(mirrors.MirrorConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        mirrors.parse(doc, base=Path("/"))


def test_a_valid_mirrors_file_maps_prefixes_to_upstream_names(tmp_path: Path) -> None:
    (tmp_path / "mirrors.yaml").write_text(
        "mirrors:\n- prefix: hub\n  upstream: https://registry-1.docker.io/\n  tagTTL: 5m\n"
        "  usernameFile: creds/user\n  passwordFile: creds/pass\n"
    )
    config = mirrors.load(tmp_path / "mirrors.yaml")
    entry = config.find("hub/library/nginx")
    assert entry is not None
    assert (entry.upstream, entry.tag_ttl, entry.upstream_name("hub/library/nginx")) == (
        "https://registry-1.docker.io",
        300.0,
        "library/nginx",
    )
    assert entry.credentials is not None and entry.credentials.password_file == tmp_path / "creds/pass"
    assert config.find("hub") is None and config.covers("hub") is entry
    assert config.find("hubx/app") is None


def test_serve_with_an_invalid_mirrors_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mirrors.yaml").write_text("mirrors:\n- prefix: hub\n")
    code = cli.main(
        [
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--no-tls",
            "--no-auth",
            "--mirrors",
            str(tmp_path / "mirrors.yaml"),
        ]
    )
    assert code == 2
    assert "mirrors[0].upstream" in capsys.readouterr().err


def test_a_challenge_header_is_parsed_with_quoted_and_bare_values() -> None:
    scheme, params = upstream.challenge(
        'Bearer realm="https://auth.docker.io/token",service=registry.docker.io,scope="repository:a/b:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:a/b:pull",
    }


@pytest.mark.parametrize(
    ("realm", "message"),
    [
        ("https://10.0.0.7/token", "internal address"),
        ("https://localhost:8080/token", "internal address"),
        ("http://auth.example.org/token", "plain-http token realm"),
        ("file:///etc/passwd", r"not http\(s\)"),
    ],
)
async def test_a_public_upstream_cannot_send_the_credentials_to_an_internal_or_clear_text_realm(
    tmp_path: Path, realm: str, message: str
) -> None:
    (tmp_path / "u").write_text("user")
    (tmp_path / "p").write_text("pass")
    config = mirrors.parse(
        {"mirrors": [{"prefix": "hub", "upstream": "https://registry.example.org", "usernameFile": "u",
                      "passwordFile": "p"}]},
        base=tmp_path,
    )  # fmt: skip
    client = upstream.Client(config.entries[0])
    with pytest.raises(upstream.AuthError, match=message):
        await client._fetch_token({"realm": realm}, scope="repository:a:pull")
    await client.close()


async def test_the_tag_list_of_a_mirrored_repository_is_the_upstreams_with_its_paging(
    mirrored: Factory,
) -> None:
    up = Upstream()
    for tag in ("1.0", "1.1", "2.0"):
        up.put_image("library/app", make_image(tag), tag=tag)
    s = await mirrored(up, credentials=False)

    status, body, headers = await s.get(f"/v2/{PREFIX}/library/app/tags/list?n=2")
    assert status == 200
    assert json.loads(body) == {"name": f"{PREFIX}/library/app", "tags": ["1.0", "1.1"]}
    assert headers["Link"] == f'</v2/{PREFIX}/library/app/tags/list?n=2&last=1.1>; rel="next"'
    status, body, _ = await s.get(f"/v2/{PREFIX}/library/app/tags/list?n=2&last=1.1")
    assert json.loads(body)["tags"] == ["2.0"]
    status, body, _ = await s.get(f"/v2/{PREFIX}/library/none/tags/list")
    assert status == 404 and json.loads(body)["errors"][0]["code"] == "NAME_UNKNOWN"

    await _pull_image(s, "library/app", "1.0")
    await s.server.close()  # unreachable: what is cached
    status, body, _ = await s.get(f"/v2/{PREFIX}/library/app/tags/list")
    assert (status, json.loads(body)["tags"]) == (200, ["1.0"])
