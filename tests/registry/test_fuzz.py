"""A property-based pass (hypothesis) over the registry's HTTP API, against the real app on a real socket.

Generated requests: any method on paths built from the API's shapes (`/v2/`, catalog, manifests, blobs,
uploads with a live session id, tags, referrers) with repository names, references and digests that
are valid, nearly valid or garbage (percent escapes, `..`, case, length), query strings (`n`, `last`,
`digest`, `mount`, `from`, `artifactType`: digits by the thousand, `²`, signs, empty), headers (`Range`,
`Content-Range`, `Content-Type`, `Accept`, `Authorization`: a pushing user, a pull-only user, wrong and
malformed credentials) and bodies (manifest-shaped JSON with wrong types and digests, arbitrary JSON,
UTF-16, truncated, raw bytes). For every request:
- never a 5xx, never a traceback in the body;
- every 4xx (but HEAD's) carries the OCI error envelope `{"errors":[{"code","message",...}]}`;
- nothing stored changes on a 4xx (the data directory's tree and file contents, before and after);
- nothing is logged at ERROR or with a traceback, and no credential sent reaches a log.
Requests aiohttp itself cannot parse (a header value with a control character, a bad header name, a
bad method, an oversized header) are answered 400 and logged without the bytes that were sent.

The run is reproducible (`derandomize=True`, no example database) and bounded (a few hundred examples).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import string
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from yarl import URL

from dockyard_registry import auth
from tests.registry import conftest
from tests.registry.conftest import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, make_image, sha256

ROUNDS = 4
REPO = "fuzz/app"
IMAGE = make_image("fuzz")
PASSWORDS = {"pusher": "pusher-secret-pw", "reader": "reader-secret-pw"}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


PUSHER = basic("pusher", PASSWORDS["pusher"])
WRONG_SECRET = "wrong-secret-pw"


class Records(logging.Handler):
    """Every log record while the test runs (the root logger, all levels)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(self.format(r) for r in self.records)


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


class Target:
    def __init__(self, reg: conftest.Registry, data: Path, session_path: str) -> None:
        self.reg, self.data, self.session_path = reg, data, session_path
        self.base = str(reg.client.make_url("/")).rstrip("/")

    def snapshot(self) -> dict[str, str]:
        """Every directory and file under the data root, files with a hash of their bytes."""
        tree: dict[str, str] = {}
        for path in sorted(self.data.rglob("*")):
            rel = str(path.relative_to(self.data))
            tree[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        return tree


@pytest.fixture
async def target(make_client: conftest.ClientFactory, tmp_path: Path) -> Target:
    htpasswd, access = tmp_path / "auth" / "htpasswd", tmp_path / "auth" / "access.yaml"
    htpasswd.parent.mkdir(parents=True)
    htpasswd.write_text(
        "".join(f"{u}:{auth.hash_password(p, rounds=ROUNDS)}\n" for u, p in PASSWORDS.items())
    )
    # pusher may push (not delete) everywhere; reader may only pull from fuzz/*.
    access.write_text(
        "users:\n  pusher: {access: push}\n  reader: {access: pull, repositories: ['fuzz/*']}\n"
    )
    reg = await make_client(authenticator=auth.Authenticator(htpasswd=htpasswd, access=access))
    await reg.push_image(REPO, IMAGE, tag="v1", headers={"Authorization": PUSHER})
    started = await reg.client.post(f"/v2/{REPO}/blobs/uploads/", headers={"Authorization": PUSHER})
    assert started.status == 202
    return Target(reg, tmp_path / "data", started.headers["Location"].split("?")[0])


# ------------------------------------------------------------------------------------------ strategies
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
SHORT_TEXT = st.text(PRINTABLE, max_size=40)
DIGESTS = st.sampled_from(
    [
        sha256(IMAGE.config),
        sha256(IMAGE.layer),
        IMAGE.digest,
        "sha256:" + "0" * 64,
        "sha256:" + "A" * 64,
        "sha256:abc",
        "sha512:" + "1" * 128,
        "md5:" + "2" * 32,
        "SHA256:" + "3" * 64,
        "sha256:" + "g" * 64,
        "",
    ]
) | st.text(string.ascii_letters + string.digits + ":+._-", max_size=80)
NAMES = st.sampled_from(
    [REPO, "fuzz/other", "fuzz", "Fuzz/App", "fuzz//app", "fuzz/../app", "fuzz/%2e%2e/app", "fuzz/app%2F..",
     "_layers", "fuzz/_manifests", "-x", "x" * 300, "a/" * 40 + "b", "fuzz/app/"]
) | st.from_regex(r"[a-z0-9]{1,8}([._/-][a-z0-9]{1,8}){0,3}", fullmatch=True)  # fmt: skip
REFERENCES = (
    st.sampled_from(["v1", "latest", "-bad", "x" * 129, ".hidden", "a:b", "%00", "%2e%2e"])
    | DIGESTS
    | st.text(string.ascii_letters + string.digits + "._-%", min_size=1, max_size=30)
)
SESSIONS = st.just("") | st.sampled_from(["00000000-0000-0000-0000-000000000000", "..", "%2e%2e", "x" * 200])
QUERY_VALUES = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6).map(str),
    st.sampled_from(["", "²", "٣", "1e3", "0x10", "+5", " 5", "9" * 5000, "-0", "1.5", "None"]),
    DIGESTS,
    NAMES,
    st.text(max_size=20),
)
QUERIES = st.dictionaries(
    st.sampled_from(["n", "last", "digest", "mount", "from", "artifactType", "x"]), QUERY_VALUES, max_size=3
)
AUTHORIZATIONS = st.sampled_from(
    [
        None,
        PUSHER,
        basic("reader", PASSWORDS["reader"]),
        basic("pusher", WRONG_SECRET),
        basic("ghost", WRONG_SECRET),
        "Basic !!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Bearer token",
        "Basic",
        "",
    ]
)
CONTENT_TYPES = st.sampled_from(
    [OCI_MANIFEST, OCI_INDEX, OCI_CONFIG, "application/vnd.docker.distribution.manifest.v2+json",
     "application/vnd.docker.distribution.manifest.list.v2+json", "application/json",
     "application/octet-stream", "text/plain; charset=utf-16", ""]
) | SHORT_TEXT  # fmt: skip
RANGES = st.sampled_from(
    ["bytes=0-4", "bytes=-0", "bytes=-5", "bytes=5-", "bytes=1-0", "bytes=0-99999999999999999999", "bytes=",
     "bytes=a-b", "chars=0-1", "bytes=0-1,3-4"]
) | SHORT_TEXT  # fmt: skip
CONTENT_RANGES = (
    st.sampled_from(["0-4", "0-0", "5-3", "-1-2", "0-", "99999999999999999999-1", "bytes 0-4/5"]) | SHORT_TEXT
)

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
DESCRIPTORS = st.fixed_dictionaries(
    {"mediaType": st.sampled_from([OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, "x"]) | JSON_SCALARS,
     "digest": DIGESTS | JSON_SCALARS,
     "size": st.sampled_from([len(IMAGE.config), len(IMAGE.layer), 0, -1, 2**70]) | JSON_SCALARS},
    optional={"urls": st.lists(st.text(max_size=30), max_size=2) | JSON_SCALARS,
              "annotations": JSON_VALUES, "artifactType": JSON_SCALARS},
)  # fmt: skip
MANIFESTS = st.fixed_dictionaries(
    {"schemaVersion": st.sampled_from([2, 1, 3, "2"]) | JSON_SCALARS,
     "mediaType": st.sampled_from([OCI_MANIFEST, OCI_INDEX]) | JSON_SCALARS,
     "config": DESCRIPTORS | JSON_VALUES,
     "layers": st.lists(DESCRIPTORS, max_size=3) | JSON_VALUES},
    optional={"manifests": st.lists(DESCRIPTORS, max_size=2), "subject": DESCRIPTORS | JSON_VALUES,
              "annotations": JSON_VALUES, "Layers": st.lists(DESCRIPTORS, max_size=1)},
)  # fmt: skip


@st.composite
def bodies(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["none", "valid", "manifest", "json", "utf16", "truncated", "bytes"]))
    if kind == "none":
        return None
    if kind == "valid":  # the pushed image's manifest with other annotations: a PUT of it is stored
        doc = json.loads(IMAGE.manifest)
        doc["annotations"] = draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2))
        return json.dumps(doc).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    doc: Any = draw(MANIFESTS) if kind in ("manifest", "utf16", "truncated") else draw(JSON_VALUES)
    text = json.dumps(doc)
    if kind == "utf16":
        return text.encode("utf-16")
    if kind == "truncated":
        return text.encode()[: draw(st.integers(min_value=0, max_value=max(0, len(text) - 1)))]
    return text.encode()


ANY_METHOD = st.sampled_from(["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"])


@st.composite
def paths(draw: st.DrawFn, session_path: str) -> tuple[str, str]:
    """(method, raw path): mostly a method the route has, sometimes any."""
    name, ref, dgst = draw(NAMES), draw(REFERENCES), draw(DIGESTS)
    quote = urllib.parse.quote  # the raw path must stay a valid request target
    repo = quote(name, safe="/%")
    session = draw(SESSIONS)
    upload = session_path if not session else f"/v2/{repo}/blobs/uploads/{quote(session, safe='%')}"
    shapes = [
        ("/v2/", ["GET", "HEAD"]),
        ("/v2/_catalog", ["GET"]),
        (f"/v2/{repo}/manifests/{quote(ref, safe='%:')}", ["GET", "HEAD", "PUT", "PUT", "DELETE"]),
        (f"/v2/{repo}/blobs/{quote(dgst, safe=':')}", ["GET", "HEAD", "DELETE"]),
        (f"/v2/{repo}/blobs/uploads/", ["POST"]),
        (upload, ["GET", "PATCH", "PUT", "DELETE"]),
        (session_path, ["GET", "PATCH", "PUT", "DELETE"]),
        (f"/v2/{repo}/tags/list", ["GET"]),
        (f"/v2/{repo}/referrers/{quote(dgst, safe=':')}", ["GET"]),
        ("/v2/" + quote(draw(st.text(max_size=40)), safe="/%:@"), ["GET"]),
    ]
    path, methods = draw(st.sampled_from(shapes))
    method = (
        draw(st.sampled_from(methods) | ANY_METHOD) if draw(st.booleans()) else draw(st.sampled_from(methods))
    )
    return method, path


@st.composite
def requests(draw: st.DrawFn, session_path: str) -> dict[str, Any]:
    headers: dict[str, str] = {}
    for name, strategy in (
        ("Authorization", AUTHORIZATIONS),
        ("Content-Type", CONTENT_TYPES),
        ("Range", RANGES),
        ("Content-Range", CONTENT_RANGES),
        ("Accept", CONTENT_TYPES),
    ):
        value = draw(st.none() | strategy)
        if value is not None:
            headers[name] = value
    if draw(st.integers(min_value=0, max_value=3)):
        headers["Authorization"] = PUSHER  # most requests get past authentication
    query = draw(QUERIES)
    method, path = draw(paths(session_path))
    if query:
        path += ("&" if "?" in path else "?") + urllib.parse.urlencode(query)
    # Within aiohttp's request line limit (8190 bytes); longer lines are the parser's, tested below.
    assume(len(path) < 8000)
    return {"method": method, "path": path, "headers": headers, "body": draw(bodies())}


# ------------------------------------------------------------------------------------------------ tests
async def send(target: Target, request: dict[str, Any]) -> tuple[int, bytes]:
    url = URL(target.base + request["path"], encoded=True)
    session: aiohttp.ClientSession = target.reg.client.session
    async with session.request(
        request["method"], url, headers=request["headers"], data=request["body"], allow_redirects=False
    ) as resp:
        return resp.status, await resp.read()


@settings(
    max_examples=500,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_generated_requests_never_5xx_always_an_oci_error_and_change_nothing_on_4xx(
    target: Target, records: Records, data: st.DataObject
) -> None:
    request = data.draw(requests(target.session_path), label="request")
    before = target.snapshot()
    records.records.clear()

    status, body = await send(target, request)
    event(f"{request['method']} {status}")  # --hypothesis-show-statistics: what the pass reached

    assert status < 500, body
    assert b"Traceback" not in body
    if 400 <= status < 500:
        if request["method"] != "HEAD":
            errors = json.loads(body)["errors"]
            assert errors and all(
                isinstance(e["code"], str) and isinstance(e["message"], str) for e in errors
            )
        assert target.snapshot() == before, f"a {status} changed what is stored"
    logged = records.text()
    assert not [r for r in records.records if r.levelno >= logging.ERROR or r.exc_info], logged
    # Header values never reach a log (the access log has the request line, so not those it holds).
    sent = [v for v in request["headers"].values() if len(v) > 8 and v not in request["path"]]
    for secret in (*PASSWORDS.values(), WRONG_SECRET, *sent):
        assert secret not in logged


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic "
        + base64.b64encode(b"u:" + b"lEaKy-" * 4000)
        + b"\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic lEaKy-lEaKy-\x01\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nlEaKy lEaKy: x\r\n\r\n",
        b"lEaKy /v2/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v2/lEaKy-lEaKy-\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["oversized-authorization", "control-character", "bad-header-name", "bad-method", "nul-in-path"],
)
async def test_requests_aiohttp_cannot_parse_are_400_and_none_of_their_bytes_are_logged(
    target: Target, records: Records, raw: bytes
) -> None:
    url = target.reg.client.make_url("/")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(raw)
        await writer.drain()
        answer = await reader.read(65536)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n", 1)[0], answer[:200]
    assert "lEaKy" not in records.text()
    assert "Traceback" not in records.text()
