"""ServiceAccount tokens from a real kube-apiserver as registry passwords.

Covers, against the session control plane (its own ServiceAccount issuer, whose URL the registry learns from
the discovery document it reads through the API server; TokenRequest issues the tokens,
the registry reads discovery and JWKS through the API server with a token of its own ServiceAccount, which
holds `system:service-account-issuer-discovery` and `system:auth-delegator`):
skopeo pushes and pulls with a TokenRequest token for the registry's audience as the Basic password, and
podman pulls, pushes and pulls back with it (a wrong password is unauthorized);
plain HTTP with the same token as Bearer; a token for another audience (the API server's own) is 401
naming the audience; a ServiceAccount no rule names is 403 DENIED; after the ServiceAccount is deleted its
still-unexpired token is refused (TokenReview, `cacheSeconds: 0`); no token reaches the registry's log.
With `--token-realm`, skopeo follows the Bearer challenge to `/token` with the ServiceAccount token as its
Basic password and pushes and pulls with the registry token it gets. `dockyard-credential-provider`,
given a TokenRequest token as the kubelet would pass it, answers credentials the registry accepts.
Behind the operator's nginx (config rendered with the token flow, registry run with the pod's
`--token-realm /token` and `--token-key`): the challenge's realm is /token on whichever host the client
used, skopeo and crane follow it through nginx with a ServiceAccount token and push and pull, skopeo pulls
with a short-lived pull secret's registry token as its password (containerd's way), a token for another
audience is refused at /token with the audience named, and no token reaches either log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dockyard_common import regtoken
from dockyard_operator.builders import nginx_configmap
from tests import support
from tests.integration.registry import fronts, harness, images
from tests.integration.registry.clients import skopeo, skopeo_pull, skopeo_push
from tests.support import kube, procs

pytestmark = pytest.mark.integration


def token(plane: kube.ControlPlane, namespace: str, name: str, *, audience: str | None = None) -> str:
    args = ["create", "token", name, "-n", namespace, "--duration=10m"]
    if audience is not None:
        args.append(f"--audience={audience}")
    return plane.kubectl(*args).stdout.strip()


def _issuer_setup(plane: kube.ControlPlane, namespace: str, tmp_path: Path) -> tuple[Path, str, str, Path]:
    """ServiceAccounts registry/builder/other, the registry's bindings and token, the identities file and
    access rules (builder: push in apps/**).

    Returns the identities file, the access.yaml text, the audience and the registry's own token file.
    """
    audience = f"dockyard.{namespace}"
    for name in ("registry", "builder", "other"):
        plane.kubectl("create", "serviceaccount", name, "-n", namespace)
    for role in ("system:service-account-issuer-discovery", "system:auth-delegator"):
        plane.kubectl(
            "create",
            "clusterrolebinding",
            f"{namespace}-{role.split(':')[-1]}",
            f"--clusterrole={role}",
            f"--serviceaccount={namespace}:registry",
        )
    own_token = tmp_path / "registry.token"
    own_token.write_text(token(plane, namespace, "registry"))
    identities = tmp_path / "identities.yaml"
    identities.write_text(
        yaml.safe_dump(
            {
                "issuers": [
                    {
                        "name": "kubernetes",
                        "kind": "kubernetes",
                        "audience": audience,
                        "apiServer": plane.server,
                        "caFile": str(plane.pki / "ca.crt"),
                        "tokenFile": str(own_token),
                        "tokenReview": {"enabled": True, "cacheSeconds": 0},
                    }
                ]
            }
        )
    )
    access = yaml.safe_dump(
        {
            "serviceAccounts": [
                {"namespace": namespace, "name": "builder", "access": "push", "repositories": ["apps/**"]}
            ]
        }
    )
    return identities, access, audience, own_token


def test_service_account_tokens_push_pull_and_are_refused_for_other_audiences_accounts_and_deletion(
    control_plane: kube.ControlPlane, namespace: str, tmp_path: Path
) -> None:
    plane = control_plane
    identities, access, audience, own_token = _issuer_setup(plane, namespace, tmp_path)
    builder = harness.Credentials("builder", token(plane, namespace, "builder", audience=audience))
    with harness.running_registry(
        tmp=tmp_path, access_yaml=access, extra_args=["--identities", str(identities)]
    ) as reg:
        cert_dir = harness.ca_dir(ca_file=reg.ca, into=tmp_path / "certs")
        ref = f"{reg.address}/apps/web:v1"
        img = images.random_image(label="sa-token", layer_count=2, layer_size=32 * 1024)
        skopeo_push(img=img, ref=ref, tmp=tmp_path, cert_dir=cert_dir, creds=builder)
        pulled = skopeo_pull(ref=ref, into=tmp_path / "pulled", cert_dir=cert_dir, creds=builder)
        assert pulled.manifest_digest == img.digest

        # The kubelet credential provider (KEP-4412) hands the same kind of token back as the password.
        request = {
            "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
            "kind": "CredentialProviderRequest",
            "image": ref,
            "serviceAccountToken": token(plane, namespace, "builder", audience=audience),
        }
        provider = subprocess.run(
            [str(Path(sys.executable).parent / "dockyard-credential-provider")],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        given = json.loads(provider.stdout)["auth"][reg.address]
        kubelet = harness.Credentials(given["username"], given["password"])
        via_provider = reg.client(kubelet).request("GET", f"/v2/apps/web/manifests/{img.digest}")
        assert via_provider.status == 200, via_provider.describe()

        bearer = reg.client(None).request(
            "GET", "/v2/apps/web/tags/list", headers={"Authorization": f"Bearer {builder.password}"}
        )
        assert bearer.status == 200, bearer.describe()

        api_audience = harness.Credentials("builder", token(plane, namespace, "builder"))
        refused = reg.client(api_audience).request("GET", "/v2/apps/web/tags/list")
        assert refused.status == 401, refused.describe()
        assert refused.error_codes() == ["UNAUTHORIZED"]
        assert b"audience" in refused.body
        assert (refused.header("WWW-Authenticate") or "").startswith("Basic realm=")

        other = harness.Credentials("other", token(plane, namespace, "other", audience=audience))
        denied = reg.client(other).request("GET", "/v2/apps/web/tags/list")
        assert denied.status == 403, denied.describe()
        assert denied.error_codes() == ["DENIED"]
        failed = skopeo(
            "copy",
            "--quiet",
            f"docker://{ref}",
            f"oci:{tmp_path / 'other'}:x",
            "--src-cert-dir",
            str(cert_dir),
            "--src-creds",
            other.colon(),
            check=False,
        )
        assert failed.returncode != 0

        plane.kubectl("delete", "serviceaccount", "builder", "-n", namespace)
        # The API server's ServiceAccount cache may lag the delete by a moment: poll, no fixed sleep.
        harness.wait_for(
            "the deleted ServiceAccount's token to be refused",
            lambda: reg.client(builder).request("GET", "/v2/apps/web/tags/list").status == 401,
            timeout=60.0,
        )
        after = reg.client(builder).request("GET", "/v2/apps/web/tags/list")
        assert b"no longer accepts" in after.body, after.describe()
    log = reg.log()
    for secret in (builder.password, other.password, api_audience.password, own_token.read_text()):
        assert secret not in log
        assert secret.split(".")[2] not in log


def test_podman_pulls_and_pushes_with_a_service_account_token_as_its_password(
    control_plane: kube.ControlPlane, namespace: str, tmp_path: Path, podman: harness.Podman
) -> None:
    identities, access, audience, _own = _issuer_setup(control_plane, namespace, tmp_path)
    builder = harness.Credentials("builder", token(control_plane, namespace, "builder", audience=audience))
    with harness.running_registry(
        tmp=tmp_path, access_yaml=access, extra_args=["--identities", str(identities)]
    ) as reg:
        cert_dir = harness.ca_dir(ca_file=reg.ca, into=tmp_path / "certs")
        img = images.random_image(label="sa-token-podman", layer_count=2, layer_size=256 * 1024)
        source, target = f"{reg.address}/apps/podman-source:v1", f"{reg.address}/apps/podman-target:v1"
        skopeo_push(img=img, ref=source, tmp=tmp_path, cert_dir=cert_dir, creds=builder)
        tls = ["--cert-dir", str(cert_dir), "--creds", builder.colon()]
        podman("pull", "--quiet", *tls, source)
        podman("push", "--quiet", *tls, source, f"docker://{target}")
        podman("rmi", "--all", "--force")
        podman("pull", "--quiet", *tls, target)
        back = podman("image", "inspect", "--format", "{{.Id}}", target).stdout.strip()
        assert f"sha256:{back}" == img.config.digest
        wrong = ["--cert-dir", str(cert_dir), "--creds", "builder:not-a-token"]
        refused = podman("pull", "--quiet", *wrong, source, check=False)
        assert refused.returncode != 0 and "unauthorized" in refused.stderr
    assert builder.password not in reg.log()


def test_skopeo_follows_the_bearer_token_flow_with_a_service_account_token_at_token(
    control_plane: kube.ControlPlane, namespace: str, tmp_path: Path
) -> None:
    identities, access, audience, _own = _issuer_setup(control_plane, namespace, tmp_path)
    port = procs.reserve_port()
    data = tmp_path / "data"
    (data / "auth").mkdir(parents=True)
    harness.write_atomically(data / "auth" / "access.yaml", access)
    reg = harness.make_registry(
        data_dir=data,
        log_file=tmp_path / "registry.log",
        port=port.number,
        extra_args=[
            "--identities",
            str(identities),
            "--token-realm",
            f"https://127.0.0.1:{port.number}/token",
            "--access-log",
        ],
    )
    builder = harness.Credentials("builder", token(control_plane, namespace, "builder", audience=audience))
    try:
        reg.start()
        challenge = reg.client(None).request("GET", "/v2/apps/web/tags/list")
        assert challenge.status == 401
        assert (challenge.header("WWW-Authenticate") or "").startswith("Bearer realm=")
        cert_dir = harness.ca_dir(ca_file=reg.ca, into=tmp_path / "certs")
        ref = f"{reg.address}/apps/web:v1"
        img = images.random_image(label="sa-token-flow", layer_count=1, layer_size=16 * 1024)
        skopeo_push(img=img, ref=ref, tmp=tmp_path, cert_dir=cert_dir, creds=builder)
        pulled = skopeo_pull(ref=ref, into=tmp_path / "pulled", cert_dir=cert_dir, creds=builder)
        assert pulled.manifest_digest == img.digest
    finally:
        reg.stop()
        port.release()
    log = reg.log()
    assert "GET /token?" in log, "skopeo did not follow the Bearer challenge"
    assert builder.password not in log


def test_behind_the_operators_nginx_clients_follow_the_bearer_challenge_to_token_on_the_host_they_used(
    control_plane: kube.ControlPlane, namespace: str, tmp_path: Path
) -> None:
    identities, access, audience, _own = _issuer_setup(control_plane, namespace, tmp_path)
    data = tmp_path / "data"
    (data / "auth").mkdir(parents=True)
    harness.write_atomically(data / "auth" / "access.yaml", access)
    key = tmp_path / "token.key"
    key.write_text("ab" * 32)
    realm = "pod-registry"
    # The pod's arguments (deployment.registry_args with identities): no TLS behind nginx, blobs by nginx.
    reg = harness.make_registry(
        data_dir=data,
        log_file=tmp_path / "registry.log",
        tls_args=["--no-tls"],
        extra_args=[
            "--htpasswd", str(data / "auth" / "htpasswd"),
            "--access", str(data / "auth" / "access.yaml"),
            "--accel-redirect", nginx_configmap.BLOB_PREFIX,
            "--identities", str(identities),
            "--token-key", str(key),
            "--token-realm", nginx_configmap.TOKEN_PATH,
            "--realm", realm,
            "--access-log",
        ],
    )  # fmt: skip
    builder = harness.Credentials("builder", token(control_plane, namespace, "builder", audience=audience))
    api_audience = harness.Credentials("builder", token(control_plane, namespace, "builder"))
    reg.start()
    try:
        with fronts.nginx_in_front(
            tmp=tmp_path / "nginx", registry=reg, data_dir=data, token_flow=True
        ) as front:
            challenge = front.client(None).request("GET", "/v2/apps/web/tags/list")
            assert challenge.status == 401, challenge.describe()
            assert challenge.headers.get_all("WWW-Authenticate") == [
                f'Bearer realm="https://{front.address}/token",service="{realm}",scope="repository:apps/web:pull"'
            ]
            other_name = front.client(None).request(
                "GET", "/v2/", headers={"Host": f"localhost:{front.port}"}
            )
            assert other_name.headers.get_all("WWW-Authenticate") == [
                f'Bearer realm="https://localhost:{front.port}/token",service="{realm}"'
            ]

            cert_dir = harness.ca_dir(ca_file=front.ca, into=tmp_path / "certs")
            ref = f"{front.address}/apps/web:v1"
            img = images.random_image(label="sa-token-nginx", layer_count=2, layer_size=64 * 1024)
            skopeo_push(img=img, ref=ref, tmp=tmp_path, cert_dir=cert_dir, creds=builder)
            pulled = skopeo_pull(ref=ref, into=tmp_path / "pulled", cert_dir=cert_dir, creds=builder)
            assert pulled.manifest_digest == img.digest

            crane_env = {
                **os.environ,
                "DOCKER_CONFIG": str(tmp_path / "docker"),
                "SSL_CERT_FILE": str(front.ca),
            }

            def crane(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [str(support.tool("crane")), *args],
                    input=stdin, env=crane_env, capture_output=True, text=True, timeout=180, check=False,
                )  # fmt: skip

            login = crane(
                "auth", "login", front.address, "-u", "builder", "--password-stdin", stdin=builder.password
            )
            assert login.returncode == 0, login.stderr
            copied = crane("copy", ref, f"{front.address}/apps/crane:v1")
            assert copied.returncode == 0, copied.stderr
            assert crane("digest", f"{front.address}/apps/crane:v1").stdout.strip() == img.digest

            # A short-lived pull secret's token (what the operator mints) as the password of a client that
            # follows the Bearer challenge, as containerd does on a node: /token hands the same token back.
            pull_secret = regtoken.mint(
                key=key.read_bytes(), service=realm, subject="puller", grants=[("apps/**", ("pull",))],
                now=int(time.time()), ttl_seconds=3600,
            )  # fmt: skip
            puller = harness.Credentials("puller", pull_secret)
            again = skopeo_pull(ref=ref, into=tmp_path / "pulled-again", cert_dir=cert_dir, creds=puller)
            assert again.manifest_digest == img.digest

            wrong = front.client(api_audience).request(
                "GET", "/token?service=pod-registry&scope=repository:apps/web:pull"
            )
            assert wrong.status == 401, wrong.describe()
            assert b"audience" in wrong.body
            logs = front.logs() + front.nginx_log.read_text()
    finally:
        reg.stop()
    log = reg.log()
    assert "GET /token?" in log, "the clients did not follow the Bearer challenge through nginx"
    for secret in (builder.password, api_audience.password, pull_secret):
        assert secret.split(".")[2] not in log + logs
