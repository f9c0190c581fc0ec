"""Who may pull through a mirror: a mirror's `anonymousPull` opens its prefix, and only its prefix.

Nodes wired to a mirror (containerd's `hosts.toml`) send the registry no credentials; the mirrors file
lets anonymous pulls under a mirror's prefix (default: only when the upstream is asked without
credentials, its content being public anyway) while every other repository keeps asking for a login.

Aspects covered:
- the default follows the credentials; `anonymousPull` overrides it either way; anything but a boolean
  is refused with the field named
- with auth on: anonymous manifest, blob and tag-list pulls under an open mirror work; under a mirror
  with credentials (default closed), in an ordinary repository (existing or not) and at `/v2/` they are
  401; anonymous pushes under the open mirror are refused too; a user still pulls the closed mirror
- the registry token flow: an anonymous `/token` grants pull under the open mirror and nothing else
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import test_utils

from dockyard_registry import app, auth, mirror, mirrors, state, store, tokens
from dockyard_registry.storage import filesystem
from tests.registry.conftest import make_image, sha256
from tests.registry.test_mirror import Upstream, _app

PASSWORD = "alice-password"  # a test user's


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({}, True),
        ({"usernameFile": "u", "passwordFile": "p"}, False),
        ({"anonymousPull": False}, False),
        ({"usernameFile": "u", "passwordFile": "p", "anonymousPull": True}, True),
    ],
)
def test_anonymous_pull_defaults_to_open_only_without_upstream_credentials(
    entry: dict[str, Any], expected: bool
) -> None:
    config = mirrors.parse({"mirrors": [{"prefix": "hub", "upstream": "https://x", **entry}]}, base=Path("/"))
    assert config.entries[0].anonymous_pull is expected
    assert config.anonymous_pull_repositories == (("hub/**",) if expected else ())


def test_anonymous_pull_must_be_a_boolean() -> None:
    doc = {"mirrors": [{"prefix": "hub", "upstream": "https://x", "anonymousPull": "yes"}]}
    with pytest.raises(mirrors.MirrorConfigError, match=r"mirrors\[0\]\.anonymousPull must be true or false"):
        mirrors.parse(doc, base=Path("/"))


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[test_utils.TestClient[Any, Any]]:
    """A registry with auth (one user, alice) and two mirrors of one anonymous upstream: `hub` without
    credentials (open by default) and `priv` with credentials (closed by default)."""
    up = Upstream()
    up.put_image("library/app", make_image("open"), tag="1.0")
    upstream_server = test_utils.TestServer(_app(up))
    await upstream_server.start_server()
    (tmp_path / "user").write_text(up.username)
    (tmp_path / "pass").write_text(up.password)
    url = str(upstream_server.make_url("")).rstrip("/")
    config = mirrors.parse(
        {
            "mirrors": [
                {"prefix": "hub", "upstream": url},
                {"prefix": "priv", "upstream": url, "usernameFile": "user", "passwordFile": "pass"},
            ]
        },
        base=tmp_path,
    )
    (tmp_path / "htpasswd").write_text(f"alice:{auth.hash_password(PASSWORD, rounds=4)}\n")
    authenticator = auth.Authenticator(
        htpasswd=tmp_path / "htpasswd",
        access=None,
        registry_tokens=tokens.RegistryTokens(service="test"),
        anonymous_pull_repositories=config.anonymous_pull_repositories,
    )
    st = store.Store(filesystem.FilesystemDriver(tmp_path / "data"))
    pull = mirror.PullThrough(config, store=st)
    settings = state.Settings(
        store=st, authenticator=authenticator, mirror=pull, token_realm="http://x/token"
    )
    client = test_utils.TestClient(test_utils.TestServer(app.create_app(settings)))
    await client.start_server()
    yield client
    await client.close()
    await pull.close()
    await upstream_server.close()


def _alice() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()}


async def _status(client: test_utils.TestClient[Any, Any], method: str, path: str, **kw: Any) -> int:
    async with client.request(method, path, **kw) as response:
        await response.read()
        return response.status


async def test_anonymous_pulls_reach_the_open_mirror_and_nothing_else(
    registry: test_utils.TestClient[Any, Any],
) -> None:
    image = make_image("open")
    async with registry.get("/v2/hub/library/app/manifests/1.0") as response:
        assert response.status == 200, await response.text()
        assert await response.read() == image.manifest
    async with registry.get(f"/v2/hub/library/app/blobs/{sha256(image.layer)}") as response:
        assert (response.status, await response.read()) == (200, image.layer)
    assert await _status(registry, "GET", "/v2/hub/library/app/tags/list") == 200

    # Everything else still asks for a login: the closed mirror, ordinary repositories, the base.
    own = await _status(registry, "PUT", "/v2/own/app/manifests/v1", data=image.manifest, headers={
        **_alice(), "Content-Type": "application/vnd.oci.image.manifest.v1+json"})  # fmt: skip
    assert own in (201, 400)  # stored, or refused for blobs it names: the repository exists either way
    for path in (
        "/v2/priv/library/app/manifests/1.0",
        "/v2/own/app/manifests/v1",
        "/v2/other/app/manifests/v1",
        "/v2/",
        "/v2/_catalog",
    ):
        assert await _status(registry, "GET", path) == 401, path
    assert await _status(registry, "POST", "/v2/hub/library/app/blobs/uploads/") == 401
    assert await _status(registry, "GET", "/v2/priv/library/app/manifests/1.0", headers=_alice()) == 200


async def test_an_anonymous_token_grants_pull_under_the_open_mirror_only(
    registry: test_utils.TestClient[Any, Any],
) -> None:
    scopes = "repository:hub/library/app:pull,push repository:priv/library/app:pull repository:own/app:pull"
    async with registry.get("/token", params={"service": "test", "scope": scopes}) as response:
        assert response.status == 200, await response.text()
        token = json.loads(await response.read())["token"]
    access = jwt.decode(token, options={"verify_signature": False})["access"]
    assert {a["name"]: a["actions"] for a in access if a["actions"]} == {"hub/library/app": ["pull"]}
    bearer = {"Authorization": f"Bearer {token}"}
    assert await _status(registry, "GET", "/v2/hub/library/app/manifests/1.0", headers=bearer) == 200
    assert await _status(registry, "GET", "/v2/priv/library/app/manifests/1.0", headers=bearer) in (401, 403)
