"""dockyard-credential-provider: the kubelet credential provider answering with the Pod's own token.

Covers: the registry host of an image reference (host:port, localhost, Docker Hub's default); the response
carries the request's ServiceAccount token as the password for that host with a cache duration ending a
minute before the token expires (0 for a token without `exp`); a request without a token (tokenAttributes
not configured) or not a CredentialProviderRequest exits 1 with a message on stderr and no token on stdout;
the installed console script speaks the protocol over stdin/stdout; the kubelet configuration and node
RBAC in docs/security.md are exactly those tests/node/test_pod_identity_pull.py proves on a real kubelet.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dockyard_common import credential_provider
from tests.node import pod_identity
from tests.support import ROOT

API = "credentialprovider.kubelet.k8s.io/v1"


def fake_jwt(exp: float | None) -> str:
    def part(doc: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    claims: dict[str, object] = {"sub": "system:serviceaccount:a:b"}
    if exp is not None:
        claims["exp"] = exp
    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


@pytest.mark.parametrize(
    ("image", "host"),
    [
        ("registry.team-a.svc:443/app/web:v1", "registry.team-a.svc:443"),
        ("localhost:30500/app@sha256:" + "0" * 64, "localhost:30500"),
        ("localhost/app", "localhost"),
        ("library/busybox", "docker.io"),
        ("busybox", "docker.io"),
    ],
)
def test_the_registry_host_of_an_image(image: str, host: str) -> None:
    assert credential_provider.registry_host(image) == host


def test_the_token_is_the_password_for_the_images_host_cached_until_a_minute_before_expiry() -> None:
    token = fake_jwt(exp=10_000)
    request = {
        "apiVersion": API,
        "kind": "CredentialProviderRequest",
        "image": "r.example:443/a/b:1",
        "serviceAccountToken": token,
    }
    answer = credential_provider.respond(request, now=9_000)
    assert answer["kind"] == "CredentialProviderResponse"
    assert answer["auth"] == {"r.example:443": {"username": "serviceaccount", "password": token}}
    assert answer["cacheDuration"] == "940s"
    assert (
        credential_provider.respond({**request, "serviceAccountToken": fake_jwt(None)}, now=0)[
            "cacheDuration"
        ]
        == "0s"
    )
    assert credential_provider.respond(request, now=20_000)["cacheDuration"] == "0s"


@pytest.mark.parametrize(
    "request_doc",
    [
        {"apiVersion": API, "kind": "CredentialProviderRequest", "image": "r.example/a"},
        {"apiVersion": API, "kind": "Something", "image": "r.example/a", "serviceAccountToken": "x.y.z"},
    ],
)
def test_a_request_it_cannot_answer_exits_1_with_a_message(request_doc: dict[str, object]) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert credential_provider.main(io.StringIO(json.dumps(request_doc)), out, err) == 1
    assert out.getvalue() == ""
    assert "dockyard-credential-provider:" in err.getvalue()


def test_the_console_script_speaks_the_protocol() -> None:
    script = Path(sys.executable).parent / "dockyard-credential-provider"
    assert script.exists(), "run make setup"
    token = fake_jwt(exp=4_000_000_000)
    request = {
        "apiVersion": API,
        "kind": "CredentialProviderRequest",
        "image": "localhost:30500/x",
        "serviceAccountToken": token,
    }
    done = subprocess.run(
        [str(script)], input=json.dumps(request), capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["auth"]["localhost:30500"]["password"] == token


def test_the_kubelet_configuration_in_the_docs_is_the_one_the_node_test_proves() -> None:
    """docs/security.md shows exactly what tests/node/test_pod_identity_pull.py runs the kubelet with."""
    text = (ROOT / "docs" / "security.md").read_text()
    documents = [
        doc
        for block in text.split("```yaml\n")[1:]
        for doc in yaml.safe_load_all(block.split("```", 1)[0])
        if isinstance(doc, dict)
    ]
    configs = [d for d in documents if d.get("kind") == "CredentialProviderConfig"]
    assert configs == [pod_identity.provider_config()]
    rbac = [d for d in documents if d.get("kind") in ("ClusterRole", "ClusterRoleBinding")]
    assert rbac == pod_identity.node_audience_rbac()
