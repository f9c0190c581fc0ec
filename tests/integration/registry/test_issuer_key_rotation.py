"""A ServiceAccount signing key rotation at a real kube-apiserver, seen by running registries.

Its own control plane (etcd and kube-apiserver, no controller manager), since the rotation restarts the API
server with other keys: first signing with a new key while still publishing the old one, then publishing
only the new one. Two registries read the issuer through the API server as in a pod (discovery and JWKS
with a token of their own ServiceAccount, re-minted after each restart as the kubelet would):
- one with the default keyRefreshSeconds (600, so no scheduled read happens during the test): a token
  signed by the new key names an unknown `kid`, which makes it read the keys again and accept the token;
  a token of the old key stays accepted while the old key is published;
- one with keyRefreshSeconds 3: once the old key is no longer published, a token of the old key that it
  had already verified (and remembered) is refused with 401 naming the unknown key within that bound, while
  the new key's token keeps working.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import yaml

from tests.integration.registry import harness
from tests.support import kube

pytestmark = pytest.mark.integration

NAMESPACE = "rotation"
AUDIENCE = "dockyard.rotation"
JWKS = "application/jwk-set+json, application/json"


@pytest.fixture(scope="module")
def plane() -> Iterator[kube.ControlPlane]:
    with kube.ControlPlane(with_controller_manager=False) as started:
        yield started


def _token(plane: kube.ControlPlane, name: str, *, audience: str | None = AUDIENCE) -> str:
    args = ["create", "token", name, "-n", NAMESPACE, "--duration=10m"]
    if audience is not None:
        args.append(f"--audience={audience}")
    return plane.kubectl(*args).stdout.strip()


def _identities(plane: kube.ControlPlane, own_token: Path, **extra: object) -> str:
    issuer = {
        "name": "kubernetes",
        "kind": "kubernetes",
        "audience": AUDIENCE,
        "apiServer": plane.server,
        "caFile": str(plane.pki / "ca.crt"),
        "tokenFile": str(own_token),
        **extra,
    }
    return yaml.safe_dump({"issuers": [issuer]})


def _status(reg: harness.Registry, token: str) -> harness.Response:
    return reg.client(harness.Credentials("builder", token)).request("GET", "/v2/")


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def test_a_rotated_signing_key_is_accepted_at_once_and_a_dropped_one_refused_within_the_refresh_bound(
    plane: kube.ControlPlane, tmp_path: Path
) -> None:
    plane.kubectl("create", "namespace", NAMESPACE)
    for name in ("registry", "builder"):
        plane.kubectl("create", "serviceaccount", name, "-n", NAMESPACE)
    plane.kubectl(
        "create", "clusterrolebinding", "rotation-issuer-discovery",
        "--clusterrole=system:service-account-issuer-discovery", f"--serviceaccount={NAMESPACE}:registry",
    )  # fmt: skip
    own_token = tmp_path / "registry.token"
    own_token.write_text(_token(plane, "registry", audience=None))
    access = yaml.safe_dump(
        {"serviceAccounts": [{"namespace": NAMESPACE, "name": "builder", "access": "pull"}]}
    )
    (tmp_path / "lazy").mkdir()
    (tmp_path / "lazy" / "identities.yaml").write_text(_identities(plane, own_token))
    (tmp_path / "eager").mkdir()
    (tmp_path / "eager" / "identities.yaml").write_text(_identities(plane, own_token, keyRefreshSeconds=3))
    with (
        harness.running_registry(
            tmp=tmp_path / "lazy", access_yaml=access,
            extra_args=["--identities", str(tmp_path / "lazy" / "identities.yaml")],
        ) as lazy,
        harness.running_registry(
            tmp=tmp_path / "eager", access_yaml=access,
            extra_args=["--identities", str(tmp_path / "eager" / "identities.yaml")],
        ) as eager,
    ):  # fmt: skip
        old = _token(plane, "builder")
        for reg in (lazy, eager):
            assert _status(reg, old).status == 200, _status(reg, old).describe()

        plane.rotate_service_account_key()  # signs with a new key; the old one is still published
        own_token.write_text(_token(plane, "registry", audience=None))
        new = _token(plane, "builder")
        assert _kid(new) != _kid(old), "the API server did not sign with the new key"
        published = {k["kid"] for k in plane.api_json("/openid/v1/jwks", accept=JWKS)["keys"]}
        assert {_kid(old), _kid(new)} <= published
        # The lazy registry read the keys at startup and has no scheduled read before 600 s: only the new
        # kid can make it read them again (at most once per 30 s, so poll).
        harness.wait_for(
            "the new key's token to be accepted", lambda: _status(lazy, new).status == 200, timeout=90
        )
        for reg in (lazy, eager):
            assert _status(reg, old).status == 200, "a token of a key still published was refused"
            assert _status(reg, new).status == 200

        plane.publish_only_the_signing_key()
        own_token.write_text(_token(plane, "registry", audience=None))
        published = {k["kid"] for k in plane.api_json("/openid/v1/jwks", accept=JWKS)["keys"]}
        assert published == {_kid(new)}
        harness.wait_for(
            "the dropped key's token to be refused", lambda: _status(eager, old).status == 401, timeout=60
        )
        refused = _status(eager, old)
        assert refused.error_codes() == ["UNAUTHORIZED"]
        assert b"signing key is unknown" in refused.body, refused.describe()
        assert _status(eager, new).status == 200
    for reg in (lazy, eager):
        log = reg.log()
        for secret in (old, new, own_token.read_text()):
            assert secret.split(".")[2] not in log
