"""Node credentials for wired mirrors that take no anonymous pulls (issue 13, nodes).

A mirror whose upstream needs credentials is closed to anonymous pulls by default; the nodes wired to it
then send containerd's `hosts.toml` header, a registry token granting pull on that mirror's prefix only,
which the operator mints (`sources.node_token`), publishes in the node credentials Secret next to the node
trust ConfigMap, and the agent writes into a root-only `hosts.toml`. These tests pin each hop without a
cluster; tests/node/test_seed_flow.py (step 4b) runs the whole chain on a real kubelet and containerd.
"""

from __future__ import annotations

import base64
import dataclasses
import stat
import time
import tomllib
from pathlib import Path
from typing import Any

import jwt
import pytest

from dockyard_operator import model
from dockyard_operator.nodetrust import agent, builders, hostfiles, layout, sources
from dockyard_operator.reconcile import credentials
from dockyard_registry import auth, tokens
from tests.operator import test_nodetrust_controller as nodetrust_tests
from tests.operator.test_nodetrust_agent import ca_pem

CA = ca_pem("mirror")
KEY = "ab" * 32
REGISTRY_HOST = "reg.team.svc:443"
WIRING = layout.MirrorWiring(upstream="https://registry-1.docker.io", registry=REGISTRY_HOST, prefix="hub")


def node_token(now: float | None = None) -> str:
    return sources.node_token(key=KEY, registry="demo", prefix="hub", now=time.time() if now is None else now)


def test_a_hosts_toml_with_a_node_credential_sends_it_to_the_mirror_host_only() -> None:
    token = node_token()
    doc = tomllib.loads(WIRING.hosts_toml("docker.io", token=token))

    assert doc["server"] == "https://registry-1.docker.io"  # the fallback gets no header
    mirror = doc["host"][f"https://{REGISTRY_HOST}/v2/hub"]
    assert mirror["header"] == {"Authorization": f"Bearer {token}"}
    assert mirror["capabilities"] == ["pull", "resolve"] and mirror["override_path"] is True
    assert (
        "header"
        not in tomllib.loads(WIRING.hosts_toml("docker.io"))["host"][f"https://{REGISTRY_HOST}/v2/hub"]
    )


@pytest.mark.parametrize("token", ['a.b.c"\n[host."https://evil"]', "not a token", "a.b", "a.b.c d"])
def test_a_credential_that_could_break_the_file_is_refused(token: str) -> None:
    with pytest.raises(layout.LayoutError, match="not a token"):
        WIRING.hosts_toml("docker.io", token=token)


def test_the_node_credential_is_a_pull_only_token_for_the_prefix_renewed_each_half_day() -> None:
    start = 1_700_000_000 // (12 * 3600) * (12 * 3600)
    token = node_token(start + 60)
    claims = jwt.decode(
        token,
        KEY.encode(),
        algorithms=["HS256"],
        audience="demo",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )

    assert claims["sub"] == sources.NODE_TOKEN_SUBJECT
    assert claims["access"] == [{"type": "repository", "name": "hub/**", "actions": ["pull"]}]
    assert claims["iat"] == start and claims["exp"] == start + sources.NODE_TOKEN_LIFETIME
    assert node_token(start + 12 * 3600 - 1) == token  # one window, one token: no churn
    assert node_token(start + 12 * 3600) != token


async def test_the_registry_lets_a_node_credential_pull_the_mirror_prefix_and_nothing_else() -> None:
    authn = auth.Authenticator(
        htpasswd=None, access=None, registry_tokens=tokens.RegistryTokens(service="demo", key=KEY.encode())
    )
    identity = await authn.authenticate(f"Bearer {node_token()}")

    assert authn.permits(identity, "hub/library/nginx", auth.Action.PULL)
    assert not authn.permits(identity, "hub/library/nginx", auth.Action.PUSH)
    assert not authn.permits(identity, "team/app", auth.Action.PULL)
    other = auth.Authenticator(
        htpasswd=None, access=None, registry_tokens=tokens.RegistryTokens(service="other", key=KEY.encode())
    )
    with pytest.raises(auth.BadCredentialsError):  # another registry's token: refused, not anonymous
        await other.authenticate(f"Bearer {node_token()}")


def test_the_agent_writes_the_credential_into_a_root_only_hosts_toml_and_drops_it_again(
    tmp_path: Path,
) -> None:
    installer = hostfiles.Installer(host_root=tmp_path, targets=("containerd",))
    data = layout.encode({REGISTRY_HOST: (CA, layout.TARGETS)}, mirrors={"docker.io": WIRING})
    toml = tmp_path / "etc/containerd/certs.d/docker.io/hosts.toml"
    ca = tmp_path / f"etc/containerd/certs.d/{REGISTRY_HOST}/ca.crt"
    token = node_token()

    result = installer.sync(dataclasses.replace(layout.decode(data), tokens={"docker.io": token}))
    assert result.errors == [] and result.mirrors == {"docker.io": ("containerd",)}
    assert f'Authorization = "Bearer {token}"' in toml.read_text()
    assert stat.S_IMODE(toml.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.stat().st_mode) == 0o644  # CAs stay readable by every runtime

    installer.sync(layout.decode(data))  # the mirror opened to anonymous pulls: no credential any more
    assert "Authorization" not in toml.read_text()
    assert stat.S_IMODE(toml.stat().st_mode) == 0o644


async def test_the_agent_reads_the_mounted_secret_and_names_a_bad_entry_by_its_key_only(
    tmp_path: Path,
) -> None:
    config, creds, host = tmp_path / "config", tmp_path / "credentials", tmp_path / "host"
    for directory in (config, creds, host):
        directory.mkdir()
    for key, value in layout.encode(
        {REGISTRY_HOST: (CA, layout.TARGETS)}, mirrors={"docker.io": WIRING}
    ).items():
        (config / key).write_text(value)
    token = node_token()
    (creds / "docker.io").write_text(token)
    (creds / "quay.io").write_text("hunter2-not-a-token")
    reported: list[layout.Report] = []

    class Keep:
        async def report(self, report: layout.Report) -> None:
            reported.append(report)

    runner = agent.Agent(
        options=agent.Options(config_dir=config, credentials_dir=creds, node="n1"),
        installer=hostfiles.Installer(host_root=host, targets=("containerd",)),
        reporter=Keep(),
    )
    result = await runner.step()

    assert result is not None
    assert f"Bearer {token}" in (host / "etc/containerd/certs.d/docker.io/hosts.toml").read_text()
    assert [e for e in result.errors if "quay.io" in e] == [
        f"{layout.NODE_CREDENTIALS}: quay.io: not a token"
    ]
    assert "hunter2" not in reported[-1].to_json()
    (creds / "docker.io").write_text(node_token(time.time() + 13 * 3600))  # the next window's token
    assert await runner.step() is not None  # a changed credential alone is a reason to sync


CREDENTIALED = {
    **nodetrust_tests.NODEPORT,
    "mirrors": [
        {"upstream": "https://registry-1.docker.io", "prefix": "hub", "nodeHost": "docker.io",
         "credentialsSecretRef": {"name": "hub-login"}},
        {"upstream": "https://ghcr.io", "prefix": "ghcr"},  # anonymous upstream: nodes pull anonymously
    ],
}  # fmt: skip


def add_token_key(api: nodetrust_tests.FakeApi, name: str) -> None:
    secret = {"kind": "Secret", "metadata": {"name": f"{name}-htpasswd", "namespace": "team"}}
    api.put({**secret, "data": {"token.key": base64.b64encode(KEY.encode()).decode()}})


async def test_node_trust_publishes_a_credential_for_each_wired_mirror_closed_to_anonymous_pulls() -> None:
    api = nodetrust_tests.FakeApi()
    nodetrust_tests.add_registry(api, "demo", spec=CREDENTIALED, node_port=30500)
    add_token_key(api, "demo")

    await nodetrust_tests.trust(api, allowed=("docker.io", "ghcr.io")).publish()

    secret = api.objects[("Secret", nodetrust_tests.OP_NS, builders.CREDENTIALS_NAME)]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert list(data) == ["docker.io"]  # ghcr.io takes anonymous pulls
    verified = tokens.RegistryTokens(service="demo", key=KEY.encode()).verify(data["docker.io"])
    assert verified.grants == (tokens.Grant("hub/**", frozenset({"pull"})),)
    assert secret["metadata"]["ownerReferences"][0]["uid"] == nodetrust_tests.AGENT_ACCOUNT_UID
    config = api.objects[("ConfigMap", nodetrust_tests.OP_NS, builders.NAME)]
    assert data["docker.io"] not in str(config)  # the ConfigMap never carries a credential


async def test_a_mirror_host_that_is_not_wired_gets_no_credential() -> None:
    api = nodetrust_tests.FakeApi()
    nodetrust_tests.add_registry(api, "demo", spec=CREDENTIALED, node_port=30500)
    add_token_key(api, "demo")

    await nodetrust_tests.trust(api, allowed=("ghcr.io",)).publish()  # docker.io refused by the installer

    assert api.objects[("Secret", nodetrust_tests.OP_NS, builders.CREDENTIALS_NAME)]["data"] == {}


def spec_of(mirror: dict[str, Any], *, node_trust: bool = True) -> model.PrivateRegistrySpec:
    return model.parse_spec({"nodeTrust": {"enabled": node_trust}, "mirrors": [mirror]})


def test_a_token_key_is_made_when_nodes_need_a_credential_and_kept_once_made() -> None:
    closed = {
        "upstream": "https://registry-1.docker.io",
        "prefix": "hub",
        "credentialsSecretRef": {"name": "s"},
    }
    assert len(credentials.token_key(spec_of(closed), None)) == 64
    assert credentials.token_key(spec_of({**closed, "anonymousPull": True}), None) == ""
    assert credentials.token_key(spec_of({**closed, "wireNodes": False}), None) == ""
    assert credentials.token_key(spec_of(closed, node_trust=False), None) == ""
    assert credentials.token_key(spec_of(closed), {"token.key": KEY.encode()}) == KEY
