"""Mirrors on nodes beyond containerd: the registries.conf.d drop-in (podman, skopeo, CRI-O) and Docker.

Covers:
- the drop-in's rendering: per wired image host a `[[registry]]` keeping its own location (the fallback)
  whose first mirror is the registry's mirror prefix; bad input refused; the header marks it as ours;
- the agent writes it only where the node has `etc/containers/registries.conf.d`, with the crio target, and
  reports the hosts wired for containerd and cri-o/podman plus the reload CRI-O needs;
- it removes its own drop-in once no mirror is wired, and never overwrites a file it did not write;
- with the docker target the agent touches no daemon.json and reports Docker as not wired;
- the report carries wired runtimes and notes through its JSON, and an agent without mirrors reports the
  same JSON as before;
- node trust counts, per wired image host, the nodes whose agents wired it and the notes they sent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard_operator.nodetrust import builders as nt_builders
from dockyard_operator.nodetrust import hostfiles, layout, sources
from tests.operator import test_nodetrust_controller as nodetrust_tests
from tests.operator.test_nodetrust_agent import ca_pem

CA = ca_pem("mirror-runtimes")
HUB = layout.MirrorWiring(upstream="https://registry-1.docker.io", registry="localhost:30500", prefix="hub")
GHCR = layout.MirrorWiring(upstream="https://ghcr.io", registry="localhost:30500", prefix="mirrors/ghcr")
REGISTRY = {"localhost:30500": (CA, layout.TARGETS)}


def test_the_drop_in_gives_each_image_host_the_mirror_first_and_itself_as_fallback() -> None:
    text = layout.registries_conf({"ghcr.io": GHCR, "docker.io": HUB})
    assert text.startswith(layout.REGISTRIES_CONF_HEADER)
    assert text == (
        layout.REGISTRIES_CONF_HEADER
        + '\n[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n\n'
        + '[[registry.mirror]]\nlocation = "localhost:30500/hub"\n'
        + '\n[[registry]]\nprefix = "ghcr.io"\nlocation = "ghcr.io"\n\n'
        + '[[registry.mirror]]\nlocation = "localhost:30500/mirrors/ghcr"\n'
    )


@pytest.mark.parametrize(
    "mirrors",
    [
        {'docker.io"\n[x]': HUB},
        {"docker.io": layout.MirrorWiring(upstream=HUB.upstream, registry=HUB.registry, prefix='a"b')},
    ],
)
def test_the_drop_in_refuses_what_could_break_the_file(mirrors: dict[str, layout.MirrorWiring]) -> None:
    with pytest.raises(layout.LayoutError):
        layout.registries_conf(mirrors)


def sync(
    root: Path,
    *,
    mirrors: dict[str, layout.MirrorWiring],
    targets: tuple[layout.Target, ...] = layout.TARGETS,
) -> hostfiles.SyncResult:
    installer = hostfiles.Installer(host_root=root, targets=targets)
    return installer.sync(layout.decode(layout.encode(REGISTRY, mirrors=mirrors)))


def test_the_agent_writes_the_drop_in_where_the_node_has_the_directory_and_reports_it(tmp_path: Path) -> None:
    conf_d = tmp_path / layout.REGISTRIES_CONF_DIR
    conf_d.mkdir(parents=True)
    result = sync(tmp_path, mirrors={"docker.io": HUB})
    assert result.errors == []
    assert (conf_d / layout.REGISTRIES_CONF_FILE).read_text() == layout.registries_conf({"docker.io": HUB})
    assert result.mirrors == {"docker.io": ("containerd", "cri-o/podman")}
    assert layout.CRIO_RELOAD in result.notes and "systemctl reload crio" in layout.CRIO_RELOAD


def test_without_the_directory_or_the_crio_target_no_drop_in_is_written(tmp_path: Path) -> None:
    result = sync(tmp_path, mirrors={"docker.io": HUB})
    assert not (tmp_path / layout.REGISTRIES_CONF_DIR).exists()
    assert result.mirrors == {"docker.io": ("containerd",)} and layout.CRIO_RELOAD not in result.notes
    (tmp_path / layout.REGISTRIES_CONF_DIR).mkdir(parents=True)
    only_containerd = sync(tmp_path, mirrors={"docker.io": HUB}, targets=("containerd",))
    assert not (tmp_path / layout.REGISTRIES_CONF_DIR / layout.REGISTRIES_CONF_FILE).exists()
    assert only_containerd.notes == []


def test_the_drop_in_goes_with_the_last_mirror_and_a_foreign_file_is_left_alone(tmp_path: Path) -> None:
    conf_d = tmp_path / layout.REGISTRIES_CONF_DIR
    conf_d.mkdir(parents=True)
    sync(tmp_path, mirrors={"docker.io": HUB})
    sync(tmp_path, mirrors={})
    assert not (conf_d / layout.REGISTRIES_CONF_FILE).exists()
    (conf_d / layout.REGISTRIES_CONF_FILE).write_text('[[registry]]\nlocation = "mine"\n')
    result = sync(tmp_path, mirrors={"docker.io": HUB})
    assert any("not written by us" in e for e in result.errors)
    assert (conf_d / layout.REGISTRIES_CONF_FILE).read_text() == '[[registry]]\nlocation = "mine"\n'


def test_docker_is_reported_as_not_wired_and_daemon_json_is_never_touched(tmp_path: Path) -> None:
    result = sync(tmp_path, mirrors={"docker.io": HUB}, targets=("docker",))
    assert result.notes == [layout.DOCKER_NOT_WIRED]
    assert "daemon.json" in layout.DOCKER_NOT_WIRED and "docker.io only" in layout.DOCKER_NOT_WIRED
    assert not (tmp_path / "etc/docker/daemon.json").exists() and result.mirrors == {}
    assert sync(tmp_path, mirrors={}, targets=("docker",)).notes == []


def test_the_report_carries_wired_runtimes_and_notes_and_is_unchanged_without_mirrors() -> None:
    report = layout.Report(
        node="n1", applied="abc", hosts={}, mirrors={"docker.io": ("containerd",)}, notes=("docker: x",)
    )
    assert layout.Report.from_json(report.to_json()) == report
    plain = layout.Report(node="n1", applied="abc", hosts={"h": ("f",)})
    assert plain.to_json() == '{"applied":"abc","errors":[],"hosts":{"h":["f"]},"node":"n1"}'


async def test_node_trust_counts_the_nodes_wired_to_each_mirror_and_their_notes() -> None:
    api = nodetrust_tests.FakeApi()
    spec = {
        **nodetrust_tests.NODEPORT,
        "mirrors": [{"upstream": HUB.upstream, "prefix": "hub", "nodeHost": "docker.io"}],
    }
    nodetrust_tests.add_registry(api, "demo", spec=spec, node_port=30500)
    ds = nt_builders.daemonset(namespace=nodetrust_tests.OP_NS, image="operator:test")
    ds["status"] = {"desiredNumberScheduled": 2}
    api.put(ds)
    nt = nodetrust_tests.trust(api, allowed=("docker.io",))
    first = await nt.publish()
    view = first.view("team", "demo")
    assert view is not None and view.mirror_hosts == ("docker.io",)
    assert first.mirror_nodes("team", "demo") == {"docker.io": sources.MirrorNodes(wired=0)}
    for node, mirrors, notes in (
        ("n1", {"docker.io": ("containerd", "cri-o/podman")}, (layout.CRIO_RELOAD,)),
        ("n2", {}, (layout.DOCKER_NOT_WIRED,)),
    ):
        report = layout.Report(node=node, applied="x", hosts={}, mirrors=mirrors, notes=notes)
        meta = {
            "name": f"agent-{node}",
            "namespace": nodetrust_tests.OP_NS,
            "labels": dict(nt_builders.LABELS),
            "annotations": {layout.REPORT_ANNOTATION: report.to_json()},
        }
        api.put({"kind": "Pod", "metadata": meta})

    second = await nt.publish()

    found = second.mirror_nodes("team", "demo")["docker.io"]
    assert found.wired == 1
    assert found.notes == (f"{layout.CRIO_RELOAD} (1 nodes)", f"{layout.DOCKER_NOT_WIRED} (1 nodes)")
    assert second.summary(("team", "demo")) != first.summary(("team", "demo"))
