"""Dex as a real external OIDC issuer: its ID tokens as registry credentials.

Covers, with Dex (hack/tools.sh builds it; memory storage) issuing ID tokens by the password grant for a
static user: skopeo pushes and pulls with the ID token as its password through the Docker token flow (the
registry challenges `Bearer realm=/token` on the host skopeo used; skopeo gets a registry token there with
the ID token as its Basic password); the same ID token as a plain Basic password and as a Bearer token reads
the pushed manifest without the flow; an ID token for another client of the same Dex (wrong audience) and
one from a second Dex this registry does not trust (unknown issuer) are refused with 401 naming the failing
check, at /v2/ and at /token; a user of the trusted Dex whom no rule names is 403 DENIED; no ID token
reaches the registry's log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.registry import certs, harness, images
from tests.integration.registry.clients import skopeo_pull, skopeo_push
from tests.support import dex

pytestmark = pytest.mark.integration

CI = dex.User("ci@example.com", harness.new_password())
STRANGER = dex.User("someone@example.com", harness.new_password())
AUDIENCE = "dockyard"


@pytest.fixture(scope="module")
def issuers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dex.Dex, dex.Dex]]:
    """The trusted Dex (clients `dockyard` and `other-app`) and a second, untrusted one."""
    tmp = tmp_path_factory.mktemp("dex")
    tls = certs.write_server_tls(directory=tmp / "tls", ips=["127.0.0.1"])

    def start(name: str, clients: list[str]) -> contextlib.AbstractContextManager[dex.Dex]:
        return dex.running(
            tmp / name, tls_cert=tls.cert_file, tls_key=tls.key_file, ca_file=tls.ca_file,
            clients=clients, users=[CI, STRANGER],
        )  # fmt: skip

    with start("trusted", [AUDIENCE, "other-app"]) as trusted, start("untrusted", [AUDIENCE]) as untrusted:
        yield trusted, untrusted


def test_dex_id_tokens_push_and_pull_and_wrong_audience_or_issuer_are_refused_by_name(
    issuers: tuple[dex.Dex, dex.Dex], tmp_path: Path
) -> None:
    trusted, untrusted = issuers
    identities = tmp_path / "identities.yaml"
    identities.write_text(
        yaml.safe_dump(
            {
                "issuers": [
                    {
                        "name": "dex",
                        "url": trusted.issuer,
                        "audience": AUDIENCE,
                        "caFile": str(trusted.ca_file),
                        "claims": {"user": "email"},
                    }
                ]
            }
        )
    )
    access = yaml.safe_dump(
        {"oidc": [{"issuer": "dex", "users": [CI.email], "access": "push", "repositories": ["ci/**"]}]}
    )
    ci = harness.Credentials("ci", trusted.id_token(client=AUDIENCE, user=CI))
    with harness.running_registry(
        tmp=tmp_path,
        access_yaml=access,
        extra_args=["--identities", str(identities), "--token-realm", "/token", "--access-log"],
    ) as reg:
        challenge = reg.client(None).request("GET", "/v2/ci/app/tags/list")
        assert challenge.header("WWW-Authenticate") == (
            f'Bearer realm="https://{reg.address}/token",service="dockyard",scope="repository:ci/app:pull"'
        )
        cert_dir = harness.ca_dir(ca_file=reg.ca, into=tmp_path / "certs")
        ref = f"{reg.address}/ci/app:v1"
        img = images.random_image(label="dex", layer_count=2, layer_size=32 * 1024)
        skopeo_push(img=img, ref=ref, tmp=tmp_path, cert_dir=cert_dir, creds=ci)
        pulled = skopeo_pull(ref=ref, into=tmp_path / "pulled", cert_dir=cert_dir, creds=ci)
        assert pulled.manifest_digest == img.digest
        assert "GET /token?" in reg.log(), "skopeo did not follow the Bearer challenge"

        basic = reg.client(ci).get_manifest("ci/app", "v1")
        assert basic.status == 200, basic.describe()
        bearer = reg.client(None).request(
            "GET", f"/v2/ci/app/manifests/{img.digest}", headers={"Authorization": f"Bearer {ci.password}"}
        )
        assert bearer.status == 200, bearer.describe()

        refused = {
            "wrong audience": trusted.id_token(client="other-app", user=CI),
            "unknown issuer": untrusted.id_token(client=AUDIENCE, user=CI),
        }
        for check, token in refused.items():
            creds = harness.Credentials("ci", token)
            at_v2 = reg.client(creds).request("GET", "/v2/ci/app/tags/list")
            at_token = reg.client(creds).request(
                "GET", "/token?service=dockyard&scope=repository:ci/app:pull"
            )
            for answer in (at_v2, at_token):
                assert answer.status == 401, (check, answer.describe())
                assert answer.error_codes() == ["UNAUTHORIZED"]
            wanted = b"audience" if check == "wrong audience" else b"issuer is not trusted"
            assert wanted in at_v2.body and wanted in at_token.body, (check, at_v2.describe())

        nobody = harness.Credentials("someone", trusted.id_token(client=AUDIENCE, user=STRANGER))
        denied = reg.client(nobody).request("GET", "/v2/ci/app/tags/list")
        assert denied.status == 403, denied.describe()
        assert denied.error_codes() == ["DENIED"]
    log = reg.log()
    for token in (ci.password, nobody.password, *refused.values()):
        assert token.split(".")[2] not in log
