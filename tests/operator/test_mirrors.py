"""spec.mirrors in the operator: the model, the mirrors ConfigMap and pod wiring, and the node hosts.toml.

Aspects covered:
- the model: defaults, the node host derived from the upstream, overlapping prefixes and a node host wired
  twice refused with a message, a bad upstream URL refused by the schema
- the mirrors file the registry reads: prefix, upstream, TTL in seconds, and file paths (never a password)
- the Deployment: `--mirrors` argument, a projected volume of the ConfigMap and the user's Secret keys,
  mounted read-only; no change at all for a registry without mirrors (same config hash, no volume)
- desired children: the ConfigMap only with mirrors, before the Deployment
- the registry reads the rendered file (dockyard_registry.mirrors), so both halves agree on the format
- anonymousPull in the file: explicit always, default on without credentials and off with them, as the
  registry reads it
- containerd's hosts.toml for a mirrored host: upstream as `server`, the registry's mirror path first
  with pull+resolve, its CA, override_path; bad input refused
- the node trust ConfigMap's `_mirrors.json`: round trip, unusable entries reported and never written
- the node agent writes a mirrored host's hosts.toml for containerd only, removes it when the wiring goes,
  and never takes over a directory it did not create
- the node trust publisher wires an image host only when the installer's allowlist names it, at the
  registry's own node port, first registry first (a later one gets MirrorHostConflict), never with
  wireNodes false
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydantic
import pytest

from dockyard_operator import builders, model
from dockyard_operator.builders import deployment, mirrors_config
from dockyard_operator.nodetrust import hostfiles, layout
from dockyard_registry import mirrors as registry_mirrors
from tests.operator import test_nodetrust_controller as nodetrust_tests
from tests.operator.test_builders import container, make_inputs, mounts, volumes
from tests.operator.test_nodetrust_agent import ca_pem

CA = ca_pem("mirror")
HUB: dict[str, Any] = {
    "upstream": "https://registry-1.docker.io",
    "prefix": "hub",
    "nodeHost": "docker.io",
    "credentialsSecretRef": {"name": "hub-login"},
    "caSecretRef": {"name": "hub-ca", "key": "bundle.pem"},
    "ttl": "1h30m",
}


def test_a_mirror_has_defaults_and_derives_its_node_host_from_the_upstream() -> None:
    spec = model.parse_spec({"mirrors": [{"upstream": "https://ghcr.io", "prefix": "ghcr"}]})
    mirror = spec.mirrors[0]
    assert (mirror.ttl, mirror.wire_nodes, mirror.effective_node_host) == ("5m", True, "ghcr.io")
    assert mirror.credentials_secret_ref is None and mirror.ca_secret_ref is None


@pytest.mark.parametrize(
    ("mirrors", "message"),
    [
        (
            [{"upstream": "https://a.io", "prefix": "a"}, {"upstream": "https://b.io", "prefix": "a/b"}],
            "overlap",
        ),
        (
            [
                {"upstream": "https://a.io", "prefix": "a", "nodeHost": "docker.io"},
                {"upstream": "https://b.io", "prefix": "b", "nodeHost": "docker.io"},
            ],
            "wire node host 'docker.io'",
        ),
        ([{"upstream": "ftp://a.io", "prefix": "a"}], "upstream"),
        ([{"upstream": "https://a.io/path", "prefix": "a"}], "upstream"),
        ([{"upstream": "https://a.io", "prefix": "Hub"}], "prefix"),
    ],
)
def test_an_invalid_mirror_list_is_refused_with_a_readable_message(mirrors: list[Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        model.parse_spec({"mirrors": mirrors})
    assert message in model.spec_error_message(caught.value)


def test_the_mirrors_file_names_paths_and_never_a_password() -> None:
    inputs = make_inputs({"mirrors": [HUB, {"upstream": "https://quay.io", "prefix": "quay"}]})
    doc = json.loads(mirrors_config.build(inputs)["data"]["mirrors.yaml"])
    assert doc == {
        "mirrors": [
            {
                "prefix": "hub",
                "upstream": "https://registry-1.docker.io",
                "tagTTL": 5400.0,
                "usernameFile": "/etc/dockyard/mirrors/mirror-0/username",
                "passwordFile": "/etc/dockyard/mirrors/mirror-0/password",
                "caFile": "/etc/dockyard/mirrors/mirror-0/ca.crt",
                "anonymousPull": False,  # the upstream wants credentials: what they unlock stays closed
            },
            {"prefix": "quay", "upstream": "https://quay.io", "tagTTL": 300.0, "anonymousPull": True},
        ]
    }


@pytest.mark.parametrize(("extra", "expected"), [({}, False), ({"anonymousPull": True}, True)])
def test_anonymous_pull_of_a_mirror_follows_its_credentials_unless_set(
    tmp_path: Path, extra: dict[str, Any], expected: bool
) -> None:
    quay = {"upstream": "https://quay.io", "prefix": "q"}  # no credentials: public content, open
    for mirror, wanted in (({**HUB, **extra}, expected), (quay, True)):
        text = mirrors_config.render(model.parse_spec({"mirrors": [mirror]}).mirrors)
        (tmp_path / "mirrors.yaml").write_text(text)
        config = registry_mirrors.load(tmp_path / "mirrors.yaml")
        assert config.entries[0].anonymous_pull is wanted
        prefix = config.entries[0].prefix
        assert config.anonymous_pull_repositories == ((f"{prefix}/**",) if wanted else ())


def test_the_registry_reads_the_file_the_operator_renders(tmp_path: Path) -> None:
    text = mirrors_config.render(model.parse_spec({"mirrors": [HUB]}).mirrors)
    (tmp_path / "mirrors.yaml").write_text(text)
    parsed = registry_mirrors.load(tmp_path / "mirrors.yaml")
    entry = parsed.find("hub/library/nginx")
    assert entry is not None and entry.tag_ttl == 5400.0
    assert entry.credentials is not None
    assert entry.credentials.password_file == Path("/etc/dockyard/mirrors/mirror-0/password")


def test_the_deployment_mounts_the_file_and_the_secret_keys_and_passes_mirrors() -> None:
    dep = deployment.build(make_inputs({"mirrors": [HUB]}))
    registry = container(dep, "registry")
    args = registry["args"]
    assert args[args.index("--mirrors") + 1] == "/etc/dockyard/mirrors/mirrors.yaml"
    assert mounts(registry)["mirrors"] == {
        "name": "mirrors",
        "mountPath": "/etc/dockyard/mirrors",
        "readOnly": True,
    }
    sources = volumes(dep)["mirrors"]["projected"]["sources"]
    assert sources == [
        {"configMap": {"name": "demo-mirrors", "items": [{"key": "mirrors.yaml", "path": "mirrors.yaml"}]}},
        {
            "secret": {
                "name": "hub-login",
                "items": [
                    {"key": "username", "path": "mirror-0/username"},
                    {"key": "password", "path": "mirror-0/password"},
                ],
            }
        },
        {"secret": {"name": "hub-ca", "items": [{"key": "bundle.pem", "path": "mirror-0/ca.crt"}]}},
    ]


def test_a_registry_without_mirrors_is_unchanged() -> None:
    plain = make_inputs()
    dep = deployment.build(plain)
    assert "--mirrors" not in container(dep, "registry")["args"]
    assert "mirrors" not in volumes(dep)
    names = [c["metadata"]["name"] for c in builders.desired_children(plain)]
    assert "demo-mirrors" not in names
    # The hash digests exactly what it did before mirrors existed.
    assert deployment.config_hash(plain) == deployment.config_hash(make_inputs({"mirrors": []}))
    assert deployment.config_hash(plain) != deployment.config_hash(make_inputs({"mirrors": [HUB]}))


def test_the_mirrors_configmap_is_applied_before_the_deployment() -> None:
    children = builders.desired_children(make_inputs({"mirrors": [HUB]}))
    order = [(c["kind"], c["metadata"]["name"]) for c in children]
    assert order.index(("ConfigMap", "demo-mirrors")) < order.index(("Deployment", "demo"))


def test_containerd_hosts_toml_for_a_mirrored_host_tries_the_registry_then_the_upstream() -> None:
    text = layout.mirror_hosts_toml(
        host="docker.io",
        upstream="https://registry-1.docker.io",
        registry_host="reg.team.svc:443",
        prefix="hub",
    )
    assert text.splitlines()[1:] == [
        'server = "https://registry-1.docker.io"',
        "",
        '[host."https://reg.team.svc:443/v2/hub"]',
        '  capabilities = ["pull", "resolve"]',
        '  ca = "/etc/containerd/certs.d/reg.team.svc:443/ca.crt"',
        "  override_path = true",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"upstream": "https://x.io/path"}, "upstream URL"),
        ({"upstream": 'https://x.io"\n[evil]'}, "upstream URL"),
        ({"prefix": "../x"}, "repository prefix"),
        ({"registry_host": "bad host"}, "not a registry host"),
    ],
)
def test_mirror_hosts_toml_refuses_what_could_break_the_file(kwargs: dict[str, str], message: str) -> None:
    args = {
        "host": "docker.io",
        "upstream": "https://registry-1.docker.io",
        "registry_host": "reg:443",
        "prefix": "hub",
    }
    with pytest.raises(layout.LayoutError, match=message):
        layout.mirror_hosts_toml(**{**args, **kwargs})


HUB_WIRING = layout.MirrorWiring(
    upstream="https://registry-1.docker.io", registry="reg.team.svc:443", prefix="hub"
)


def test_mirror_wiring_round_trips_through_the_node_trust_configmap() -> None:
    data = layout.encode({"reg.team.svc:443": (CA, layout.TARGETS)}, mirrors={"docker.io": HUB_WIRING})
    assert json.loads(data[layout.MIRRORS_KEY]) == {
        "docker.io": {
            "upstream": "https://registry-1.docker.io",
            "registry": "reg.team.svc:443",
            "prefix": "hub",
        }
    }
    desired = layout.decode(data)
    assert desired.errors == ()
    assert desired.mirrors == {"docker.io": HUB_WIRING}
    assert layout.encode({"reg.team.svc:443": (CA, layout.TARGETS)}) == {"reg.team.svc..443": CA}


@pytest.mark.parametrize(
    ("mirrors", "error"),
    [
        ({"docker.io": {**HUB_WIRING.to_json(), "registry": "other:443"}}, "whose CA is not published"),
        ({"reg.team.svc:443": HUB_WIRING.to_json()}, "is also a registry host"),
        ({"docker.io": {**HUB_WIRING.to_json(), "prefix": "a b"}}, "not a repository prefix"),
        ({"docker.io": "nope"}, "not an object"),
    ],
)
def test_unusable_mirror_wiring_is_reported_and_never_written(mirrors: dict[str, Any], error: str) -> None:
    data = {"reg.team.svc..443": CA, layout.MIRRORS_KEY: json.dumps(mirrors)}
    desired = layout.decode(data)
    assert desired.mirrors == {}
    assert len(desired.errors) == 1 and error in desired.errors[0]


def test_the_agent_writes_a_mirror_hosts_toml_for_containerd_only_and_removes_it_again(
    tmp_path: Path,
) -> None:
    installer = hostfiles.Installer(host_root=tmp_path)
    data = layout.encode({"reg.team.svc:443": (CA, layout.TARGETS)}, mirrors={"docker.io": HUB_WIRING})
    result = installer.sync(layout.decode(data))
    assert result.errors == []
    toml = tmp_path / "etc/containerd/certs.d/docker.io/hosts.toml"
    assert toml.read_text() == HUB_WIRING.hosts_toml("docker.io")
    assert not (tmp_path / "etc/containerd/certs.d/docker.io/ca.crt").exists()
    assert (tmp_path / "etc/containerd/certs.d/reg.team.svc:443/ca.crt").read_text() == CA
    assert not (tmp_path / "etc/docker/certs.d/docker.io").exists()
    assert not (tmp_path / "etc/containers/certs.d/docker.io").exists()

    installer.sync(layout.decode(layout.encode({"reg.team.svc:443": (CA, layout.TARGETS)})))
    assert not (tmp_path / "etc/containerd/certs.d/docker.io").exists()
    assert (tmp_path / "etc/containerd/certs.d/reg.team.svc:443/ca.crt").exists()


def test_the_agent_never_takes_over_a_hosts_directory_an_administrator_made(tmp_path: Path) -> None:
    mine = tmp_path / "etc/containerd/certs.d/docker.io"
    mine.mkdir(parents=True)
    (mine / "hosts.toml").write_text('server = "https://registry-1.docker.io"\n')
    data = layout.encode({"reg.team.svc:443": (CA, layout.TARGETS)}, mirrors={"docker.io": HUB_WIRING})
    result = hostfiles.Installer(host_root=tmp_path).sync(layout.decode(data))
    assert any("was not created by us" in e for e in result.errors)
    assert (mine / "hosts.toml").read_text() == 'server = "https://registry-1.docker.io"\n'


HUB_MIRROR = {"upstream": "https://registry-1.docker.io", "prefix": "hub", "nodeHost": "docker.io"}
MIRRORED = {**nodetrust_tests.NODEPORT, "mirrors": [HUB_MIRROR]}


async def test_node_trust_wires_an_allowed_mirror_host_to_the_registrys_node_port() -> None:
    api = nodetrust_tests.FakeApi()
    nodetrust_tests.add_registry(api, "demo", spec=MIRRORED, node_port=30500)

    observation = await nodetrust_tests.trust(api, allowed=("docker.io",)).publish()

    assert nodetrust_tests.published(api).mirrors == {
        "docker.io": layout.MirrorWiring(
            upstream="https://registry-1.docker.io", registry="localhost:30500", prefix="hub"
        )
    }
    view = observation.view("team", "demo")
    assert view is not None and view.problems == ()


async def test_node_trust_refuses_to_wire_a_host_the_installer_did_not_allow() -> None:
    api = nodetrust_tests.FakeApi()
    nodetrust_tests.add_registry(api, "demo", spec=MIRRORED, node_port=30500)

    observation = await nodetrust_tests.trust(api).publish()

    assert nodetrust_tests.published(api).mirrors == {}
    view = observation.view("team", "demo")
    assert view is not None
    assert [p.reason for p in view.problems] == ["MirrorHostRefused"]
    assert "docker.io" in view.problems[0].message


async def test_a_second_registry_cannot_take_a_wired_host_and_wireNodes_false_wires_nothing() -> None:
    api = nodetrust_tests.FakeApi()
    nodetrust_tests.add_registry(api, "first", spec=MIRRORED, node_port=30500, created="2026-01-01T00:00:00Z")
    nodetrust_tests.add_registry(
        api, "second", spec=MIRRORED, node_port=30600, created="2026-02-01T00:00:00Z"
    )
    quiet = {**nodetrust_tests.NODEPORT, "mirrors": [{**HUB_MIRROR, "wireNodes": False}]}
    nodetrust_tests.add_registry(api, "quiet", spec=quiet, node_port=30700)

    observation = await nodetrust_tests.trust(api, allowed=("docker.io",)).publish()

    assert nodetrust_tests.published(api).mirrors["docker.io"].registry == "localhost:30500"
    second = observation.view("team", "second")
    assert second is not None and "MirrorHostConflict" in [p.reason for p in second.problems]
    quiet_view = observation.view("team", "quiet")
    assert quiet_view is not None and not [p for p in quiet_view.problems if p.reason.startswith("Mirror")]
