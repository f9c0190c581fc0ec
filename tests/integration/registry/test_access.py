"""Who may do what: htpasswd users with access.yaml rules, anonymous pull, and the nginx `/auth` hook.

Covers:
- a pull-only user pulls (HTTP and skopeo) but every push is 403 DENIED (POST upload, manifest PUT,
  and skopeo's push reports "denied"), cannot PATCH, finish or cancel someone else's upload, and
  delete is 403 DENIED for a push user;
- repository globs: `team/*` allows `team/app` but not `team/a/b` or `other/app`; `tools/**` allows
  any depth;
- a cross-repository mount (with or without `from=`) never copies a blob out of a repository the
  user cannot pull, and a blob is only visible in repositories it was pushed or mounted to;
- no credentials: 401 UNAUTHORIZED with `WWW-Authenticate: Basic realm="dockyard"`; a wrong password
  is 401 too; `/healthz` needs no credentials;
- `--anonymous-pull`: pulls work without credentials, pushes without credentials are challenged
  (401), pushes with credentials still work;
- access.yaml and htpasswd are re-read while running: turning `anonymousPull` on and off,
  `dockyard-registry user remove`, a changed password (the old one stops working) and a narrowed
  access level take effect without a restart; a broken access.yaml neither opens access nor stops
  the registry;
- `GET /auth` (nginx auth_request) answers 200 / 401 with the Basic challenge / 403 from
  X-Original-URI and X-Original-Method, with an empty body, for every kind of API call (pull, push,
  upload steps, delete, a mount whose source the user cannot read);
- with `--access-log` on, no password and no Basic token (right or wrong) ever reaches the log.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.registry import harness, images
from tests.integration.registry.clients import skopeo_pull

pytestmark = pytest.mark.integration

ADMIN = harness.Credentials("boss", harness.new_password())
PULLER = harness.Credentials("reader", harness.new_password())
TEAM = harness.Credentials("teammate", harness.new_password())
PUSHER = harness.Credentials("pusher", harness.new_password())


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Registry]:
    users = [
        harness.User(ADMIN, access="admin"),
        harness.User(PULLER, access="pull"),
        harness.User(TEAM, access="push", repositories=("team/*", "tools/**")),
        harness.User(PUSHER),  # no access.yaml entry: push everywhere, per the contract
    ]
    # --access-log: every request is logged, so the log test below sees each Authorization header pass by.
    with harness.running_registry(
        tmp=tmp_path_factory.mktemp("access"), users=users, extra_args=["--access-log"]
    ) as r:
        yield r


@pytest.fixture(scope="module")
def pushed(reg: harness.Registry) -> images.Image:
    """One image in `team/app`, `other/app` and `open/app`, pushed by the admin."""
    admin = reg.client(ADMIN)
    img = images.random_image(label="access", layer_count=2)
    for repo in ("team/app", "other/app", "open/app"):
        for blob in img.blobs():
            admin.push_blob(repo, blob.data)
        admin.push_manifest(repo, "v1", img.manifest.data)
    return img


def start_upload(client: harness.Client, repo: str) -> harness.Response:
    return client.request("POST", f"/v2/{repo}/blobs/uploads/")


def assert_denied(resp: harness.Response) -> None:
    assert resp.status == 403 and resp.error_codes() == ["DENIED"], resp.describe()


def assert_challenged(resp: harness.Response) -> None:
    assert resp.status == 401, resp.describe()
    assert resp.header("WWW-Authenticate") == 'Basic realm="dockyard"', resp.describe()


def test_pull_only_user_pulls_but_every_push_is_denied(
    reg: harness.Registry, pushed: images.Image, tmp_path: Path
) -> None:
    reader = reg.client(PULLER)

    manifest = reader.get_manifest("team/app", "v1")
    blob = reader.get_blob("team/app", pushed.layers[0].blob.digest)
    upload = start_upload(reader, "team/app")
    put = reader.request(
        "PUT",
        "/v2/team/app/manifests/v2",
        body=pushed.manifest.data,
        headers={"Content-Type": images.MANIFEST},
    )

    assert manifest.status == 200 and manifest.body == pushed.manifest.data, manifest.describe()
    assert blob.status == 200 and blob.body == pushed.layers[0].blob.data
    assert_denied(upload)
    assert_denied(put)
    assert reg.client(ADMIN).get_manifest("team/app", "v2").status == 404


def test_pull_only_user_pulls_with_skopeo_and_skopeo_push_reports_denied(
    reg: harness.Registry, pushed: images.Image, tmp_path: Path
) -> None:
    cert_dir = harness.ca_dir(ca_file=reg.ca, into=tmp_path / "certs")
    back = skopeo_pull(
        ref=f"{reg.address}/team/app:v1", into=tmp_path / "back", cert_dir=cert_dir, creds=PULLER
    )
    assert back.manifest_digest == pushed.digest

    layout = images.write_layout(directory=tmp_path / "src", tag="src", img=pushed)
    done = subprocess.run(
        [
            harness.require_binary("skopeo"), "copy", "--quiet", f"oci:{layout}:src",
            f"docker://{reg.address}/team/denied:v1",
            "--dest-cert-dir", str(cert_dir), "--dest-creds", PULLER.colon(),
        ],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "denied" in done.stderr.lower(), done.stderr


def test_a_pull_only_user_cannot_write_into_someone_elses_upload(reg: harness.Registry) -> None:
    admin, reader = reg.client(ADMIN), reg.client(PULLER)
    started = admin.request("POST", "/v2/open/shared-upload/blobs/uploads/")
    location = harness.upload_path(started)
    octets = {"Content-Type": "application/octet-stream"}

    patched = reader.request("PATCH", location, body=b"injected", headers={**octets, "Content-Range": "0-7"})
    finished = reader.request(
        "PUT", f"{location}{'&' if '?' in location else '?'}digest={harness.sha256(b'')}"
    )
    cancelled = reader.request("DELETE", location)

    for resp in (patched, finished, cancelled):
        assert_denied(resp)
    status = admin.request("GET", location)
    assert status.status == 204 and status.header("Range") in ("0-0", "0--1", None), status.describe()
    assert admin.push_blob("open/shared-upload", b"the admin's own bytes")


def test_push_user_cannot_delete(reg: harness.Registry, pushed: images.Image) -> None:
    resp = reg.client(PUSHER).request("DELETE", f"/v2/open/app/manifests/{pushed.digest}")

    assert_denied(resp)
    assert reg.client(ADMIN).get_manifest("open/app", "v1").status == 200


def test_user_without_access_rules_can_push_anywhere(reg: harness.Registry) -> None:
    digest = reg.client(PUSHER).push_blob("anything/deep/down", b"pushed by a plain htpasswd user")

    assert reg.client(PULLER).get_blob("anything/deep/down", digest).status == 200


@pytest.mark.parametrize(
    ("repo", "allowed"),
    [
        ("team/app", True),
        ("team/a/b", False),  # `*` stays within one path segment
        ("other/app", False),
        ("tools/x", True),
        ("tools/x/y/z", True),  # `**` crosses segments
        ("teams/app", False),
    ],
)
def test_repository_globs_scope_a_push_user(reg: harness.Registry, repo: str, allowed: bool) -> None:
    resp = start_upload(reg.client(TEAM), repo)

    if allowed:
        assert resp.status == 202, resp.describe()
    else:
        assert_denied(resp)


def test_repository_globs_also_scope_pulls(reg: harness.Registry, pushed: images.Image) -> None:
    teammate = reg.client(TEAM)

    assert teammate.get_manifest("team/app", "v1").status == 200
    assert_denied(teammate.get_manifest("other/app", "v1"))


def test_cross_repository_mount_needs_pull_access_to_the_source(
    reg: harness.Registry, pushed: images.Image
) -> None:
    """A digest is not a capability: knowing one must not copy a blob out of a repository one cannot read."""
    teammate = reg.client(TEAM)
    secret = reg.client(ADMIN).push_blob(
        "other/secret", b"a blob that only other/secret holds: " + os.urandom(16)
    )
    shared = pushed.layers[0].blob.digest  # also in team/app, which the teammate may pull

    from_other = teammate.request("POST", f"/v2/team/stolen/blobs/uploads/?mount={secret}&from=other/secret")
    anonymous_mount = teammate.request("POST", f"/v2/team/stolen2/blobs/uploads/?mount={secret}")
    from_team = teammate.request("POST", f"/v2/team/copied/blobs/uploads/?mount={shared}&from=team/app")

    assert from_other.status in (202, 403), from_other.describe()  # an upload session instead, or refused
    assert anonymous_mount.status in (202, 403), anonymous_mount.describe()
    for repo in ("team/stolen", "team/stolen2"):
        leaked = teammate.get_blob(repo, secret)
        assert leaked.status == 404, f"{repo} serves a blob copied from other/secret: {leaked.describe()}"
    assert from_team.status == 201, from_team.describe()
    assert teammate.get_blob("team/copied", shared).body == pushed.layers[0].blob.data


def test_a_blob_is_only_visible_in_repositories_it_was_pushed_or_mounted_to(
    reg: harness.Registry, pushed: images.Image
) -> None:
    admin = reg.client(ADMIN)
    digest = admin.push_blob("team/private-blob", b"only in team/private-blob")

    elsewhere = admin.request("HEAD", f"/v2/open/app/blobs/{digest}")

    assert elsewhere.status == 404, elsewhere.describe()
    assert admin.request("HEAD", f"/v2/team/private-blob/blobs/{digest}").status == 200


def test_requests_without_or_with_wrong_credentials_are_challenged(
    reg: harness.Registry, pushed: images.Image
) -> None:
    anonymous = reg.client(None)
    wrong = reg.client(harness.Credentials(ADMIN.username, harness.new_password()))
    unknown = reg.client(harness.Credentials("nobody", harness.new_password()))

    for client in (anonymous, wrong, unknown):
        base = client.request("GET", "/v2/")
        assert_challenged(base)
        manifest = client.get_manifest("team/app", "v1")
        assert_challenged(manifest)
        assert manifest.error_codes() == ["UNAUTHORIZED"], manifest.describe()
    health = anonymous.request("GET", "/healthz")
    assert health.status == 200 and health.body.strip() == b"ok"


def test_access_yaml_changes_take_effect_without_a_restart(
    reg: harness.Registry, pushed: images.Image
) -> None:
    access_file = reg.data_dir / "auth" / "access.yaml"
    original = access_file.read_text()
    doc = yaml.safe_load(original) or {}
    anonymous = reg.client(None)
    assert_challenged(anonymous.get_manifest("open/app", "v1"))

    harness.write_atomically(access_file, yaml.safe_dump({**doc, "anonymousPull": True}))
    try:
        harness.wait_for(
            "anonymous pull after enabling it in access.yaml",
            lambda: anonymous.get_manifest("open/app", "v1").status == 200,
        )
        assert_challenged(start_upload(anonymous, "open/app"))
    finally:
        harness.write_atomically(access_file, original)
    harness.wait_for(
        "anonymous pull refused again after restoring access.yaml",
        lambda: anonymous.get_manifest("open/app", "v1").status == 401,
    )


def test_removed_user_is_refused_without_a_restart(reg: harness.Registry, pushed: images.Image) -> None:
    leaver = harness.Credentials("leaver", harness.new_password())
    harness.add_user(data_dir=reg.data_dir, name=leaver.username, password=leaver.password, access="pull")
    client = reg.client(leaver)
    harness.wait_for(
        "a user added while running can pull", lambda: client.get_manifest("open/app", "v1").status == 200
    )

    done = harness.run_cli("user", "remove", leaver.username, "--data-dir", str(reg.data_dir))
    assert done.returncode == 0, done.stderr

    harness.wait_for("a removed user is refused", lambda: client.get_manifest("open/app", "v1").status == 401)
    listed = harness.run_cli("user", "list", "--data-dir", str(reg.data_dir))
    assert listed.returncode == 0 and "leaver" not in listed.stdout and PULLER.username in listed.stdout


def test_a_changed_password_takes_effect_without_a_restart(
    reg: harness.Registry, pushed: images.Image
) -> None:
    old = harness.Credentials("rotator", harness.new_password())
    new = harness.Credentials("rotator", harness.new_password())
    harness.add_user(data_dir=reg.data_dir, name=old.username, password=old.password, access="pull")
    harness.wait_for(
        "the new user can pull", lambda: reg.client(old).get_manifest("open/app", "v1").status == 200
    )

    harness.add_user(data_dir=reg.data_dir, name=new.username, password=new.password, access="pull")

    harness.wait_for(
        "the new password works", lambda: reg.client(new).get_manifest("open/app", "v1").status == 200
    )
    assert_challenged(reg.client(old).get_manifest("open/app", "v1"))


def test_narrowing_a_users_access_takes_effect_without_a_restart(
    reg: harness.Registry, pushed: images.Image
) -> None:
    mover = harness.Credentials("demoted", harness.new_password())
    harness.add_user(data_dir=reg.data_dir, name=mover.username, password=mover.password, access="push")
    client = reg.client(mover)
    harness.wait_for("the push user can push", lambda: start_upload(client, "open/app").status == 202)

    harness.add_user(data_dir=reg.data_dir, name=mover.username, password=mover.password, access="pull")

    harness.wait_for(
        "the demoted user is denied push", lambda: start_upload(client, "open/app").status == 403
    )
    assert client.get_manifest("open/app", "v1").status == 200


def test_a_broken_access_yaml_never_opens_access_and_never_stops_the_registry(
    reg: harness.Registry, pushed: images.Image
) -> None:
    access_file = reg.data_dir / "auth" / "access.yaml"
    original = access_file.read_text()
    harness.write_atomically(access_file, "anonymousPull: true\nusers: [this is: not: valid yaml\n")
    try:
        # The registry stats the file at most once a second: keep checking across several of those.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert reg.process is not None and reg.process.alive(), reg.log_tail()
            health = reg.client(None).request("GET", "/healthz")
            assert health.status == 200, f"registry unhealthy after a broken access.yaml: {reg.log_tail()}"
            assert_challenged(reg.client(None).get_manifest("open/app", "v1"))
            assert start_upload(reg.client(PULLER), "open/app").status in (401, 403)
            time.sleep(0.3)
    finally:
        harness.write_atomically(access_file, original)
    harness.wait_for(
        "the admin can push again", lambda: start_upload(reg.client(ADMIN), "open/app").status == 202
    )


def _auth(client: harness.Client, *, method: str, uri: str) -> harness.Response:
    return client.request("GET", "/auth", headers={"X-Original-URI": uri, "X-Original-Method": method})


@pytest.mark.parametrize(
    ("creds", "method", "uri", "status"),
    [
        (PULLER, "GET", "/v2/", 200),
        (PULLER, "HEAD", "/v2/team/app/manifests/v1", 200),
        (PULLER, "GET", "/v2/team/app/tags/list?n=10", 200),
        (PULLER, "GET", "/v2/team/app/referrers/sha256:" + "a" * 64, 200),
        (PULLER, "GET", "/v2/team/app/blobs/sha256:" + "a" * 64, 200),
        (PULLER, "POST", "/v2/team/app/blobs/uploads/", 403),
        (PULLER, "PATCH", "/v2/team/app/blobs/uploads/some-session", 403),
        (PULLER, "PUT", "/v2/team/app/blobs/uploads/some-session?digest=sha256:" + "a" * 64, 403),
        (PULLER, "DELETE", "/v2/team/app/manifests/sha256:" + "a" * 64, 403),
        (TEAM, "PATCH", "/v2/team/app/blobs/uploads/some-session", 200),
        (TEAM, "PUT", "/v2/team/app/manifests/v9", 200),
        (TEAM, "DELETE", "/v2/team/app/manifests/sha256:" + "a" * 64, 403),
        (TEAM, "GET", "/v2/other/app/tags/list", 403),
        # Allowed: the push itself is; the registry then refuses the mount and falls back to an upload
        # (test_cross_repository_mount_needs_pull_access_to_the_source), as the spec asks.
        (TEAM, "POST", "/v2/team/x/blobs/uploads/?mount=sha256:" + "a" * 64 + "&from=other/app", 200),
        (TEAM, "GET", "/v2/tools/a/b/c/manifests/v1", 200),
        (ADMIN, "DELETE", "/v2/other/app/blobs/sha256:" + "a" * 64, 200),
        (ADMIN, "DELETE", "/v2/other/app/manifests/sha256:" + "a" * 64, 200),
        (None, "GET", "/v2/team/app/manifests/v1", 401),
        (None, "GET", "/v2/", 401),
    ],
)
def test_auth_endpoint_maps_each_api_call_to_the_right_permission(
    reg: harness.Registry, creds: harness.Credentials | None, method: str, uri: str, status: int
) -> None:
    resp = _auth(reg.client(creds), method=method, uri=uri)

    assert resp.status == status, f"{creds and creds.username} {method} {uri}: {resp.describe()}"


def test_auth_endpoint_answers_allow_challenge_or_deny_for_nginx(reg: harness.Registry) -> None:
    reader = reg.client(PULLER)

    allowed = _auth(reader, method="GET", uri="/v2/team/app/manifests/v1")
    denied = _auth(reader, method="PUT", uri="/v2/team/app/manifests/v1")
    challenged = _auth(reg.client(None), method="GET", uri="/v2/team/app/manifests/v1")
    scoped = _auth(reg.client(TEAM), method="POST", uri="/v2/other/app/blobs/uploads/")

    assert allowed.status == 200 and allowed.body == b"", allowed.describe()
    assert denied.status == 403 and denied.body == b"", denied.describe()
    assert challenged.status == 401 and challenged.body == b"", challenged.describe()
    assert challenged.header("WWW-Authenticate") == 'Basic realm="dockyard"'
    assert scoped.status == 403, scoped.describe()


def test_no_password_or_basic_token_reaches_the_log_even_with_access_logging(
    reg: harness.Registry, pushed: images.Image
) -> None:
    wrong = harness.Credentials(ADMIN.username, harness.new_password())
    for creds in (ADMIN, PULLER, TEAM, PUSHER, wrong):
        reg.client(creds).get_manifest("team/app", "v1")
        reg.client(creds).request(
            "GET", "/auth", headers={"X-Original-URI": "/v2/", "X-Original-Method": "GET"}
        )
    log = reg.log()

    assert "/v2/team/app/manifests/v1" in log, "access logging is off: this test would prove nothing"
    for creds in (ADMIN, PULLER, TEAM, PUSHER, wrong):
        assert creds.password not in log, f"{creds.username}'s password is in the log"
        assert creds.basic().removeprefix("Basic ") not in log, (
            f"{creds.username}'s Authorization is in the log"
        )


@pytest.fixture(scope="module")
def anonymous_reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Registry]:
    with harness.running_registry(
        tmp=tmp_path_factory.mktemp("anonymous"),
        users=[harness.User(ADMIN, access="admin")],
        extra_args=["--anonymous-pull"],
    ) as r:
        yield r


def test_anonymous_pull_flag_lets_anyone_pull_but_not_push(anonymous_reg: harness.Registry) -> None:
    admin = anonymous_reg.client(ADMIN)
    anonymous = anonymous_reg.client(None)
    img = images.random_image(label="anonymous", layer_count=1)
    for part in img.blobs():
        admin.push_blob("public/app", part.data)
    admin.push_manifest("public/app", "v1", img.manifest.data)

    manifest = anonymous.get_manifest("public/app", "v1")
    blob = anonymous.get_blob("public/app", img.layers[0].blob.digest)
    tags = anonymous.request("GET", "/v2/public/app/tags/list")
    upload = start_upload(anonymous, "public/app")
    delete = anonymous.request("DELETE", f"/v2/public/app/manifests/{img.digest}")

    assert manifest.status == 200 and manifest.body == img.manifest.data, manifest.describe()
    assert blob.status == 200 and blob.body == img.layers[0].blob.data
    assert tags.status == 200 and tags.json() == {"name": "public/app", "tags": ["v1"]}
    assert_challenged(upload)
    assert_challenged(delete)
    assert admin.get_manifest("public/app", "v1").status == 200
