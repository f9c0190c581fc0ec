"""Authentication and authorization: globs, access.yaml, the credential cache, reloads, and HTTP behaviour.

Covers: `*`/`**` glob semantics; access.yaml parsing, defaults and clear errors; bcrypt paid once per
credential, also for a burst of concurrent requests bringing it (cache keyed by HMAC, invalidated when
the htpasswd entry changes), wrong passwords always
re-verified, unknown users verified against a dummy hash (same work, no shortcut), no password kept in
memory; levels pull/push/admin, users missing from access.yaml get push everywhere, anonymous pull;
reload of both files after a change (at most once a second, injectable clock) and keeping the last good
rules on a broken edit; entries written by Apache's `htpasswd -B` verify; over HTTP: 401 with
`WWW-Authenticate: Basic realm=...`, 403 DENIED, `/v2/` and
`_catalog` need a login, the catalog only lists pullable repositories, a mount from an unreadable source
is not performed, the nginx `/auth` endpoint (200/401/403, empty body; what it cannot map to a route,
a method and a valid repository name is refused: 401 without credentials, 403 with them), that no
password reaches a log
(also not from an Authorization header too large for aiohttp to parse: 4xx, none of its bytes logged),
that password checks queued beyond a limit are shed with 429 while cached credentials still pass, and
that a removed access.yaml keeps its last rules (never widening rights) while a removed htpasswd fails
closed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path
from typing import Any

import pytest

from dockyard_common import htpasswd as htpasswd_file
from dockyard_registry import auth
from tests.registry import conftest
from tests.registry.conftest import make_image

ROUNDS = 4  # bcrypt's minimum cost: the tests are about behaviour, not hashing strength


@pytest.mark.parametrize(
    ("pattern", "repo", "expected"),
    [
        ("team/*", "team/app", True),
        ("team/*", "team/app/sub", False),
        ("team/**", "team/app/sub", True),
        ("**", "anything/at/all", True),
        ("*", "a", True),
        ("*", "a/b", False),
        ("team/*", "teamx/app", False),
        ("a.b/*", "axb/c", False),
        ("tools/**", "tools", False),
    ],
)
def test_glob_star_stays_in_a_segment_and_double_star_crosses_them(
    pattern: str, repo: str, expected: bool
) -> None:
    assert auth.glob_match(pattern, repo) is expected


def test_access_file_parses_levels_globs_and_defaults() -> None:
    rules = auth.parse_access(
        "anonymousPull: true\n"
        "users:\n  alice: {access: push, repositories: ['team/*']}\n  bob: {access: pull}\n"
    )
    assert rules.anonymous_pull is True
    assert rules.users["alice"] == auth.UserRule(auth.Level.PUSH, ("team/*",))
    assert rules.users["bob"] == auth.UserRule(auth.Level.PULL, ("**",))
    assert auth.parse_access("") == auth.AccessRules()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("users: {a: {access: owner}}", "access must be one of"),
        ("users: {a: {repositories: []}}", "non-empty"),
        ("users: {a: {colour: red}}", "unknown keys"),
        ("anonymousPull: maybe", "true or false"),
        ("users: [a, b]", "mapping"),
        ("foo: 1", "unknown keys"),
        ("a: [", "not valid YAML"),
    ],
)
def test_bad_access_files_are_rejected_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(auth.AccessFileError, match=message):
        auth.parse_access(text)


def test_render_access_round_trips() -> None:
    rules = auth.AccessRules(True, {"a": auth.UserRule(auth.Level.ADMIN, ("x/**",))})
    assert auth.parse_access(auth.render_access(rules)) == rules


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_users(path: Path, users: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{u}:{auth.hash_password(p, rounds=ROUNDS)}\n" for u, p in users.items()))


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    htpasswd, access = tmp_path / "auth" / "htpasswd", tmp_path / "auth" / "access.yaml"
    write_users(htpasswd, {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "dave": "dave-pw"})
    access.write_text(
        "users:\n  alice: {access: admin}\n  bob: {access: pull, repositories: ['team/*']}\n"
        "  dave: {access: push, repositories: ['team/*']}\n"
    )
    return htpasswd, access


@pytest.fixture
def bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = auth._bcrypt_verify

    def counting(password: str, hashed: str) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(auth, "_bcrypt_verify", counting)
    return calls


async def test_bcrypt_is_paid_once_per_credential(files: tuple[Path, Path], bcrypt_calls: list[str]) -> None:
    authn = auth.Authenticator(htpasswd=files[0], access=files[1])
    for _ in range(5):
        assert await authn.verify("alice", "alice-pw")
    assert len(bcrypt_calls) == 1


async def test_a_burst_of_one_fresh_credential_pays_one_bcrypt_and_is_not_shed(
    files: tuple[Path, Path], bcrypt_calls: list[str]
) -> None:
    authn = auth.Authenticator(htpasswd=files[0], access=files[1], max_pending=2)
    results = await asyncio.gather(*(authn.verify("alice", "alice-pw") for _ in range(50)))
    assert all(results)
    assert len(bcrypt_calls) == 1


async def test_wrong_passwords_are_verified_every_time(
    files: tuple[Path, Path], bcrypt_calls: list[str]
) -> None:
    authn = auth.Authenticator(htpasswd=files[0], access=files[1])
    assert await authn.verify("alice", "alice-pw")
    for _ in range(3):
        assert not await authn.verify("alice", "guess")
    assert len(bcrypt_calls) == 4


async def test_unknown_users_are_checked_against_a_dummy_hash(
    files: tuple[Path, Path], bcrypt_calls: list[str]
) -> None:
    authn = auth.Authenticator(htpasswd=files[0], access=files[1])
    assert not await authn.verify("mallory", "whatever")
    assert len(bcrypt_calls) == 1
    known_cost = htpasswd_file.parse(files[0].read_text())["alice"][:7]
    assert bcrypt_calls[0].startswith(known_cost)  # same algorithm and cost as real entries


async def test_the_cache_holds_no_password(files: tuple[Path, Path]) -> None:
    authn = auth.Authenticator(htpasswd=files[0], access=files[1])
    assert await authn.verify("alice", "alice-pw")
    assert "alice-pw" not in repr(vars(authn))
    assert b"alice-pw" not in b"".join(mac for _, mac in authn._verified.values())


async def test_changed_htpasswd_entry_invalidates_the_cached_credential(files: tuple[Path, Path]) -> None:
    clock = Clock()
    authn = auth.Authenticator(htpasswd=files[0], access=files[1], clock=clock)
    assert await authn.verify("alice", "alice-pw")
    write_users(files[0], {"alice": "new-pw"})
    clock.now += 0.5
    assert await authn.verify("alice", "alice-pw"), "files are stat'ed at most once a second"
    clock.now += 1
    assert not await authn.verify("alice", "alice-pw")
    assert await authn.verify("alice", "new-pw")


def test_levels_glob_defaults_and_anonymous_pull(files: tuple[Path, Path]) -> None:
    authn = auth.Authenticator(htpasswd=files[0], access=files[1])
    alice, bob, carol = auth.Identity("alice"), auth.Identity("bob"), auth.Identity("carol")
    assert authn.permits(alice, "any/repo", auth.Action.DELETE)
    assert authn.permits(bob, "team/app", auth.Action.PULL)
    assert not authn.permits(bob, "team/app", auth.Action.PUSH)
    assert not authn.permits(bob, "other", auth.Action.PULL)
    assert authn.permits(carol, "x/y/z", auth.Action.PUSH), "not in access.yaml: push everywhere"
    assert not authn.permits(carol, "x", auth.Action.DELETE)
    assert not authn.permits(auth.ANONYMOUS, "team/app", auth.Action.PULL)
    forced = auth.Authenticator(htpasswd=files[0], access=files[1], anonymous_pull=True)
    assert forced.permits(auth.ANONYMOUS, "team/app", auth.Action.PULL)
    assert not forced.permits(auth.ANONYMOUS, "team/app", auth.Action.PUSH)


def test_access_file_reload_and_broken_edit_keeps_last_good_rules(
    files: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    authn = auth.Authenticator(htpasswd=files[0], access=files[1], clock=clock)
    bob = auth.Identity("bob")
    files[1].write_text("anonymousPull: true\nusers:\n  bob: {access: push}\n")
    clock.now += 2
    assert authn.permits(bob, "other", auth.Action.PUSH)
    assert authn.permits(auth.ANONYMOUS, "x", auth.Action.PULL)
    files[1].write_text("users: {bob: {access: superuser}}\n")
    clock.now += 2
    assert authn.permits(bob, "other", auth.Action.PUSH)
    assert "keeping previous" in caplog.text


def test_broken_access_file_at_startup_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "access.yaml"
    bad.write_text("users: {a: {access: root}}")
    with pytest.raises(auth.AccessFileError):
        auth.Authenticator(htpasswd=None, access=bad)


@pytest.mark.parametrize(
    "header", ["Bearer abc", "Basic !!!notbase64", "Basic " + base64.b64encode(b"nocolon").decode()]
)
async def test_malformed_authorization_is_bad_credentials(files: tuple[Path, Path], header: str) -> None:
    authn = auth.Authenticator(htpasswd=files[0], access=files[1])
    with pytest.raises(auth.BadCredentialsError):
        await authn.authenticate(header)


def test_passwords_over_72_bytes_are_refused_not_truncated() -> None:
    with pytest.raises(ValueError, match="longer than 72"):
        auth.hash_password("x" * 73, rounds=ROUNDS)


# ------------------------------------------------------------------------------------------------ HTTP
def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ALICE, BOB, CAROL = basic("alice", "alice-pw"), basic("bob", "bob-pw"), basic("carol", "carol-pw")


@pytest.fixture
async def secured(make_client: conftest.ClientFactory, files: tuple[Path, Path]) -> conftest.Registry:
    reg = await make_client(authenticator=auth.Authenticator(htpasswd=files[0], access=files[1]))
    await reg.push_image("team/app", make_image(), tag="v1", headers=ALICE)
    await reg.push_blob("secret/stuff", b"hidden", headers=ALICE)
    return reg


async def code(resp: Any) -> str:
    return str((await resp.json(content_type=None))["errors"][0]["code"])


async def test_requests_without_credentials_get_401_with_basic_challenge(secured: conftest.Registry) -> None:
    for path in ("/v2/", "/v2/_catalog", "/v2/team/app/manifests/v1", "/v2/team/app/tags/list"):
        resp = await secured.client.get(path)
        assert resp.status == 401, path
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="dockyard"'
        assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        assert await code(resp) == "UNAUTHORIZED"


async def test_wrong_password_is_401_and_right_one_is_200(secured: conftest.Registry) -> None:
    assert (await secured.client.get("/v2/", headers=basic("alice", "nope"))).status == 401
    assert (await secured.client.get("/v2/", headers=basic("mallory", "nope"))).status == 401
    assert (await secured.client.get("/v2/", headers=ALICE)).status == 200


async def test_known_user_without_permission_gets_403_denied(secured: conftest.Registry) -> None:
    push = await secured.client.post("/v2/team/app/blobs/uploads/", headers=BOB)
    assert (push.status, await code(push)) == (403, "DENIED")
    outside = await secured.client.get("/v2/secret/stuff/tags/list", headers=BOB)
    assert (outside.status, await code(outside)) == (403, "DENIED")
    delete = await secured.client.delete("/v2/team/app/manifests/v1", headers=CAROL)
    assert (delete.status, await code(delete)) == (403, "DENIED")
    assert (await secured.client.get("/v2/team/app/manifests/v1", headers=BOB)).status == 200


async def test_catalog_lists_only_repositories_the_user_may_pull(secured: conftest.Registry) -> None:
    bob = await (await secured.client.get("/v2/_catalog", headers=BOB)).json()
    assert bob == {"repositories": ["team/app"]}
    alice = await (await secured.client.get("/v2/_catalog", headers=ALICE)).json()
    assert alice == {"repositories": ["secret/stuff", "team/app"]}


async def test_mount_from_an_unreadable_repository_is_not_performed(secured: conftest.Registry) -> None:
    from tests.registry.conftest import sha256

    hidden = sha256(b"hidden")
    dave = basic("dave", "dave-pw")  # may push to team/*, may not read secret/stuff
    refused = await secured.client.post(
        f"/v2/team/app/blobs/uploads/?mount={hidden}&from=secret/stuff", headers=dave
    )
    assert refused.status == 202, "falls back to a plain upload session"
    anonymous_mount = await secured.client.post(f"/v2/team/app/blobs/uploads/?mount={hidden}", headers=dave)
    assert anonymous_mount.status == 202
    assert (await secured.client.head(f"/v2/team/app/blobs/{hidden}", headers=ALICE)).status == 404
    allowed = await secured.client.post(
        f"/v2/team/app/blobs/uploads/?mount={hidden}&from=secret/stuff", headers=CAROL
    )
    assert allowed.status == 201


async def test_anonymous_pull_allows_reads_but_not_login_or_push(
    make_client: conftest.ClientFactory, files: tuple[Path, Path]
) -> None:
    reg = await make_client(
        authenticator=auth.Authenticator(htpasswd=files[0], access=files[1], anonymous_pull=True)
    )
    await reg.push_image("team/app", make_image(), tag="v1", headers=ALICE)
    assert (await reg.client.get("/v2/team/app/manifests/v1")).status == 200
    assert (await reg.client.get("/v2/")).status == 401
    assert (await reg.client.post("/v2/team/app/blobs/uploads/")).status == 401


@pytest.mark.parametrize(
    ("uri", "method", "headers", "status"),
    [
        ("/v2/", "GET", {}, 401),
        ("/v2/", "GET", ALICE, 200),
        ("/v2/team/app/manifests/v1", "GET", BOB, 200),
        ("/v2/team/app/blobs/uploads/", "POST", BOB, 403),
        ("/v2/team/app/manifests/v1", "DELETE", CAROL, 403),
        ("/v2/team/app/manifests/v1", "DELETE", ALICE, 200),
        ("/v2/team/app/tags/list?n=1", "GET", {}, 401),
        ("/v2/team/app/manifests/v1", "GET", basic("bob", "wrong"), 401),
        # What the endpoint cannot map to a route and a scope is refused like any denial, never passed.
        ("/v2/team/app/unknown", "GET", ALICE, 403),
        ("/v2/team/app/unknown", "GET", {}, 401),
        ("/v2/team/app/unknown", "GET", basic("alice", "wrong"), 401),
        ("/v2/team/app/manifests/v1", "POST", ALICE, 403),
        ("/v2/team/app/blobs/uploads/", "GET", ALICE, 403),
        ("/v2/Team/../app/manifests/v1", "GET", ALICE, 403),
        ("/v2/team%2Fapp/manifests/v1", "GET", {}, 401),
        ("/auth", "GET", ALICE, 403),
        ("", "GET", ALICE, 403),
    ],
)
async def test_auth_request_endpoint_judges_the_original_request(
    secured: conftest.Registry, uri: str, method: str, headers: dict[str, str], status: int
) -> None:
    resp = await secured.client.get(
        "/auth", headers={"X-Original-URI": uri, "X-Original-Method": method, **headers}
    )
    assert resp.status == status
    assert await resp.read() == b""
    if status == 401:
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="dockyard"'


async def test_auth_request_endpoint_without_auth_still_refuses_what_it_cannot_map(
    registry: conftest.Registry,
) -> None:
    known = await registry.client.get("/auth", headers={"X-Original-URI": "/v2/a/manifests/v1"})
    assert known.status == 200
    for uri in ("/v2/a/unknown", "/v2/A/manifests/v1", "/elsewhere"):
        resp = await registry.client.get("/auth", headers={"X-Original-URI": uri})
        assert resp.status == 403, uri
    assert (await registry.client.get("/auth")).status == 403


async def test_no_password_reaches_the_log(
    secured: conftest.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await secured.client.get("/v2/", headers=basic("alice", "wrong-secret-xyz"))
    await secured.client.get("/v2/", headers=ALICE)
    await secured.client.get("/v2/", headers=basic("ghost", "ghost-secret-xyz"))
    assert "secret-xyz" not in caplog.text
    assert "alice-pw" not in caplog.text


@pytest.mark.parametrize(
    "value",
    [
        "Basic " + base64.b64encode(("alice:" + "hunter2-secret-" * 1000).encode()).decode(),
        "Bearer " + "tok3n-secret-" * 1000,
    ],
)
async def test_an_oversized_authorization_header_is_refused_and_none_of_it_is_logged(
    secured: conftest.Registry, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    caplog.set_level(logging.DEBUG)
    resp = await secured.client.get("/v2/", headers={"Authorization": value})
    assert 400 <= resp.status < 500
    # aiohttp logged the parser's exception at ERROR, quoting the first ~100 bytes of the value.
    credential = value.split(" ", 1)[1]
    for start in range(0, 200, 8):
        assert credential[start : start + 16] not in caplog.text
    assert "secret" not in caplog.text and "Traceback" not in caplog.text
    # The event itself is still logged, as a client's mistake.
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records if "malformed" in r.msg] == [
        ("WARNING", "malformed request from 127.0.0.1")
    ]


@pytest.fixture
def apache_htpasswd(tmp_path: Path) -> Path:
    """An htpasswd file written by Apache's own `htpasswd -B` (what admins already have)."""
    import shutil
    import subprocess

    htpasswd_bin = shutil.which("htpasswd")
    assert htpasswd_bin, "apache2-utils (htpasswd) is installed by `make setup`"
    line = subprocess.run(
        [htpasswd_bin, "-nbB", "-C", "4", "apache", "apache-pw"], capture_output=True, text=True, check=True
    ).stdout.strip()
    path = tmp_path / "htpasswd"
    path.write_text(line + "\n")
    return path


async def test_entries_made_by_apache_htpasswd_dash_b_are_accepted(apache_htpasswd: Path) -> None:
    authn = auth.Authenticator(htpasswd=apache_htpasswd, access=None)
    assert await authn.verify("apache", "apache-pw")
    assert not await authn.verify("apache", "other")


async def test_queued_password_checks_beyond_the_limit_get_429_but_known_credentials_pass(
    make_client: conftest.ClientFactory, files: tuple[Path, Path]
) -> None:
    authenticator = auth.Authenticator(htpasswd=files[0], access=files[1])
    reg = await make_client(authenticator=authenticator)
    assert (await reg.client.get("/v2/", headers=ALICE)).status == 200
    authenticator.max_pending = 0  # as if many bcrypt checks were already waiting
    shed = await reg.client.get("/v2/", headers=basic("alice", "guess"))
    assert (shed.status, await code(shed)) == (429, "TOOMANYREQUESTS")
    assert shed.headers["Retry-After"] == "1"
    assert (await reg.client.get("/v2/", headers=ALICE)).status == 200, "cached credentials need no bcrypt"
    nginx = await reg.client.get("/auth", headers={"X-Original-URI": "/v2/", **basic("bob", "guess")})
    assert nginx.status == 429


async def test_a_removed_access_file_keeps_its_rules_and_a_removed_htpasswd_locks_everyone_out(
    files: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    authn = auth.Authenticator(htpasswd=files[0], access=files[1], clock=clock)
    bob = auth.Identity("bob")
    assert await authn.verify("bob", "bob-pw")  # cached now: the removal below must still win
    files[1].unlink()
    clock.now += 2
    assert not authn.permits(bob, "team/app", auth.Action.PUSH), "rules must not widen when the file goes"
    assert "disappeared" in caplog.text
    files[0].unlink()
    clock.now += 2
    assert not await authn.verify("bob", "bob-pw")
