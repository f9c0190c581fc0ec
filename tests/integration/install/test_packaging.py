"""Images, kind configuration, scripts and examples, checked as files (no Docker engine, no cluster).

Covers: both Dockerfiles build in two stages from the same digest-pinned python:3.11-slim-bookworm, end
as a numeric non-root user (the chart's runAsUser for the operator, the registry Pod's user for the
registry, whose `dockyard-registry` is on PATH) with no compiler or package manager run in the final stage,
and carry OCI labels; every COPY source is let in by .dockerignore, which keeps everything else
(venv, git, tests, caches) out; kind-config.yaml points containerd at certs.d and maps the NodePort the
node-trust example uses; the shell scripts parse; every example is a valid PrivateRegistry for the
operator's model and tells how to create each Secret it references.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockyard_operator import model
from tests.integration.install import chart

DOCKERFILES = [chart.ROOT / "operator" / "Dockerfile", chart.ROOT / "registry_image" / "Dockerfile"]
PINNED_PYTHON = re.compile(r"^python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}$")


def stages(dockerfile: Path) -> list[list[str]]:
    """Instructions per stage (continuation lines joined); the ARGs before the first FROM are stage 0."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    result: list[list[str]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            result.append([])
        result[-1].append(line)
    return result


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_builds_in_two_stages_from_a_digest_pinned_slim_python(dockerfile: Path) -> None:
    preamble, *built = stages(dockerfile)
    (arg,) = [line for line in preamble if line.startswith("ARG PYTHON_IMAGE=")]
    assert PINNED_PYTHON.match(arg.split("=", 1)[1])
    assert len(built) == 2
    assert [stage[0].split()[1] for stage in built] == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_both_images_share_one_base_digest() -> None:
    args = {line for f in DOCKERFILES for line in stages(f)[0] if line.startswith("ARG PYTHON_IMAGE=")}
    assert len(args) == 1


def _user(dockerfile: Path) -> int:
    users = [line.split()[1] for line in stages(dockerfile)[-1] if line.startswith("USER ")]
    assert len(users) == 1 and re.fullmatch(r"\d+:\d+", users[0]), (
        "a numeric user lets Kubernetes check runAsNonRoot"
    )
    uid, gid = (int(part) for part in users[0].split(":"))
    assert uid == gid and uid != 0
    return uid


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_final_stage_runs_non_root_with_no_build_tooling(dockerfile: Path) -> None:
    _user(dockerfile)
    runs = " ".join(line for line in stages(dockerfile)[-1] if line.startswith("RUN "))
    for tool in ("apt-get", "apk", "pip ", "gcc", "make "):
        assert tool not in runs, f"{tool.strip()} runs in the final stage"


def test_operator_image_user_is_the_charts_run_as_user() -> None:
    pod = chart.only(chart.render(), "Deployment")["spec"]["template"]["spec"]
    assert _user(DOCKERFILES[0]) == pod["securityContext"]["runAsUser"]


def test_registry_image_matches_what_the_operator_runs_in_each_registry_pod() -> None:
    from dockyard_operator.builders import deployment

    dockerfile = DOCKERFILES[1]
    assert _user(dockerfile) == deployment.REGISTRY_UID, "the registry Pod's runAsUser and fsGroup"
    final = stages(dockerfile)[-1]
    assert 'ENTRYPOINT ["dockyard-registry"]' in final, "the operator runs `dockyard-registry` from PATH"
    assert any(line.startswith("ENV PATH=/opt/dockyard/bin:") for line in final)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_final_stage_carries_the_oci_labels(dockerfile: Path) -> None:
    labels = " ".join(line for line in stages(dockerfile)[-1] if line.startswith("LABEL "))
    for key in ("title", "description", "version", "revision", "licenses", "source", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels


def _context_allows(path: str, rules: list[str]) -> bool:
    """Whether .dockerignore `rules` (last match wins, `!` re-includes) let `path` into the context."""
    allowed = True
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            allowed = negate
    return allowed


def test_every_copy_source_is_in_the_build_context_and_nothing_else_is() -> None:
    rules = [
        line.strip()
        for line in (chart.ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for dockerfile in DOCKERFILES:
        for line in (line for stage in stages(dockerfile) for line in stage if line.startswith("COPY ")):
            parts = [p for p in line.split()[1:] if not p.startswith("--")]
            if any(p.startswith("--from") for p in line.split()):
                continue
            for source in parts[:-1]:
                assert _context_allows(source.rstrip("/"), rules), f"{dockerfile}: {source} is ignored"
    for outside in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/__init__.py",
        "deploy/install.yaml",
        "crds/x.yaml",
    ):
        assert not _context_allows(outside, rules), f"{outside} would be sent to the Docker daemon"


def test_kind_config_points_containerd_at_certs_d_and_maps_the_examples_node_port() -> None:
    config = yaml.safe_load((chart.ROOT / "kind-config.yaml").read_text())
    patches = "\n".join(config["containerdConfigPatches"])
    assert re.search(r'config_path\s*=\s*"/etc/containerd/certs\.d"', patches)
    example = chart.load_yaml(chart.EXAMPLES / "nodeport-node-trust.yaml")[0]
    node_port = example["spec"]["expose"]["nodePort"]
    (node,) = config["nodes"]
    assert {
        "containerPort": node_port,
        "hostPort": node_port,
        "listenAddress": "127.0.0.1",
        "protocol": "TCP",
    } in node["extraPortMappings"]


@pytest.mark.parametrize("script", ["kind-up.sh", "install-manifest.sh"])
def test_shell_scripts_parse(script: str) -> None:
    done = subprocess.run(["bash", "-n", str(chart.ROOT / "hack" / script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_install_manifest_script_rejects_an_unknown_option_with_exit_code_2() -> None:
    done = subprocess.run(
        ["bash", str(chart.ROOT / "hack" / "install-manifest.sh"), "--frobnicate"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "usage: hack/install-manifest.sh [--check]" in done.stderr


def _referenced_secrets(spec: dict[str, Any]) -> set[str]:
    found = {user["passwordSecretRef"]["name"] for user in spec.get("auth", {}).get("users", [])}
    if spec.get("tls", {}).get("mode") == "Secret":
        found.add(spec["tls"]["secretName"])
    return found


@pytest.mark.parametrize("example", sorted(p.name for p in chart.EXAMPLES.glob("*.yaml")))
def test_example_is_a_valid_registry_and_says_how_to_create_its_secrets(example: str) -> None:
    path = chart.EXAMPLES / example
    (doc,) = chart.load_yaml(path)
    assert (doc["apiVersion"], doc["kind"]) == ("dockyard.dev/v1alpha1", "PrivateRegistry")
    model.parse_spec(doc["spec"])
    comments = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    for secret in _referenced_secrets(doc["spec"]):
        assert re.search(rf"kubectl create secret \w+ {re.escape(secret)}\b", comments), secret
