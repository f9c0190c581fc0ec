"""oras attaches artifacts to an image and discovers them through the OCI 1.1 referrers API.

Covers:
- `oras attach --artifact-type` to an image pushed with skopeo, over TLS verified with `--ca-file`,
  forced onto the referrers API (`--distribution-spec v1.1-referrers-api`, so no tag-schema fallback
  can hide a missing API);
- `oras discover` lists the artifact with its type and digest, and filters by artifact type;
- a direct `GET /v2/<name>/referrers/<digest>?artifactType=...`: an OCI index with the right
  Content-Type, `OCI-Filters-Applied: artifactType`, only matching descriptors, and an empty (not
  404) index for a type nothing has;
- `oras pull` of the attached artifact returns the attached file byte for byte;
- deleting a referrer's manifest removes it from the subject's referrers list (no dangling entry);
- `oras cp --recursive` copies an image with its referrers into another repository.
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from tests import support
from tests.integration.registry import harness, images
from tests.integration.registry.clients import oras, skopeo_push

pytestmark = pytest.mark.integration

SBOM = "application/vnd.dockyard.test.sbom+json"
SIGNATURE = "application/vnd.dockyard.test.signature"


def attach(
    *,
    registry: harness.Registry,
    creds: harness.Credentials,
    cwd: Path,
    subject: str,
    artifact_type: str,
    name: str,
    content: bytes,
) -> dict[str, object]:
    (cwd / name).write_bytes(content)
    out = oras(
        "attach",
        "--distribution-spec",
        "v1.1-referrers-api",
        "--artifact-type",
        artifact_type,
        "--format",
        "json",
        subject,
        f"{name}:application/json",
        registry=registry,
        creds=creds,
        cwd=cwd,
    )
    doc = json.loads(out)
    assert isinstance(doc, dict)
    return doc


def _referrers(doc: dict[str, object]) -> list[dict[str, object]]:
    """The direct referrers in `oras discover --format json` output (oras 1.3: a `referrers` list)."""
    found = doc.get("referrers")
    assert isinstance(found, list), doc
    return found


@pytest.fixture
def subject(
    registry: harness.Registry, admin: harness.Credentials, cert_dir: Path, tmp_path: Path
) -> images.Image:
    img = images.random_image(label="oras-subject", layer_count=2)
    skopeo_push(img=img, ref=f"{registry.address}/oras/app:v1", tmp=tmp_path, cert_dir=cert_dir, creds=admin)
    return img


def test_oras_attach_then_discover_lists_the_artifact_by_type_and_digest(
    registry: harness.Registry, admin: harness.Credentials, subject: images.Image, tmp_path: Path
) -> None:
    ref = f"{registry.address}/oras/app:v1"
    sbom = attach(
        registry=registry,
        creds=admin,
        cwd=tmp_path,
        subject=ref,
        artifact_type=SBOM,
        name="sbom.json",
        content=b'{"packages": []}\n',
    )
    sig = attach(
        registry=registry,
        creds=admin,
        cwd=tmp_path,
        subject=ref,
        artifact_type=SIGNATURE,
        name="sig.json",
        content=b'{"sig": "x"}\n',
    )

    everything = json.loads(
        oras(
            "discover",
            "--distribution-spec",
            "v1.1-referrers-api",
            "--format",
            "json",
            ref,
            registry=registry,
            creds=admin,
            cwd=tmp_path,
        )
    )
    only_sbom = json.loads(
        oras(
            "discover",
            "--distribution-spec",
            "v1.1-referrers-api",
            "--format",
            "json",
            "--artifact-type",
            SBOM,
            ref,
            registry=registry,
            creds=admin,
            cwd=tmp_path,
        )
    )

    assert everything["digest"] == subject.digest
    listed = {(r["digest"], r["artifactType"]) for r in _referrers(everything)}
    assert listed == {(sbom["digest"], SBOM), (sig["digest"], SIGNATURE)}
    assert [(r["digest"], r["artifactType"]) for r in _referrers(only_sbom)] == [(sbom["digest"], SBOM)]

    pulled = tmp_path / "pulled"
    pulled.mkdir()
    oras(
        "pull",
        "--output",
        str(pulled),
        f"{registry.address}/oras/app@{sbom['digest']}",
        registry=registry,
        creds=admin,
        cwd=tmp_path,
    )
    assert (pulled / "sbom.json").read_bytes() == b'{"packages": []}\n'


def test_referrers_api_filters_by_artifact_type_and_says_so_in_oci_filters_applied(
    registry: harness.Registry,
    admin: harness.Credentials,
    client: harness.Client,
    subject: images.Image,
    tmp_path: Path,
) -> None:
    ref = f"{registry.address}/oras/app:v1"
    sbom = attach(
        registry=registry,
        creds=admin,
        cwd=tmp_path,
        subject=ref,
        artifact_type=SBOM,
        name="sbom.json",
        content=b'{"packages": ["a"]}\n',
    )
    attach(
        registry=registry,
        creds=admin,
        cwd=tmp_path,
        subject=ref,
        artifact_type=SIGNATURE,
        name="sig.json",
        content=b'{"sig": "y"}\n',
    )

    path = f"/v2/oras/app/referrers/{subject.digest}"
    filtered = client.request("GET", f"{path}?artifactType={urllib.parse.quote(SBOM, safe='')}")
    unmatched = client.request("GET", f"{path}?artifactType=application%2Fvnd.dockyard.none")

    assert filtered.status == 200, filtered.describe()
    assert filtered.header("Content-Type") == harness.OCI_INDEX
    assert filtered.header("OCI-Filters-Applied") == "artifactType"
    index = filtered.json()
    assert isinstance(index, dict) and index["schemaVersion"] == 2 and index["mediaType"] == harness.OCI_INDEX
    assert {m["artifactType"] for m in index["manifests"]} == {SBOM}
    assert sbom["digest"] in {m["digest"] for m in index["manifests"]}
    assert unmatched.status == 200, unmatched.describe()
    assert unmatched.header("OCI-Filters-Applied") == "artifactType"
    assert unmatched.json()["manifests"] == []  # type: ignore[index]


def test_a_deleted_referrer_disappears_from_the_referrers_list_and_gc_keeps_the_rest(
    registry: harness.Registry,
    admin: harness.Credentials,
    client: harness.Client,
    subject: images.Image,
    tmp_path: Path,
) -> None:
    ref = f"{registry.address}/oras/app:v1"
    kept = attach(registry=registry, creds=admin, cwd=tmp_path, subject=ref, artifact_type=SBOM,
                  name="sbom.json", content=b'{"packages": ["kept"]}\n')  # fmt: skip
    dropped = attach(registry=registry, creds=admin, cwd=tmp_path, subject=ref, artifact_type=SIGNATURE,
                     name="sig.json", content=b'{"sig": "dropped"}\n')  # fmt: skip

    deleted = client.request("DELETE", f"/v2/oras/app/manifests/{dropped['digest']}")
    listed = client.request("GET", f"/v2/oras/app/referrers/{subject.digest}")

    assert deleted.status == 202, deleted.describe()
    assert listed.status == 200, listed.describe()
    digests = [m["digest"] for m in listed.json()["manifests"]]  # type: ignore[index]
    assert digests == [kept["digest"]], "a deleted referrer is still listed"
    for entry in listed.json()["manifests"]:  # type: ignore[index]
        assert client.get_manifest("oras/app", entry["digest"]).status == 200


def test_oras_copies_an_image_with_its_referrers_to_another_repository(
    registry: harness.Registry,
    admin: harness.Credentials,
    client: harness.Client,
    subject: images.Image,
    tmp_path: Path,
) -> None:
    ref = f"{registry.address}/oras/app:v1"
    sbom = attach(registry=registry, creds=admin, cwd=tmp_path, subject=ref, artifact_type=SBOM,
                  name="sbom.json", content=b'{"packages": ["copied"]}\n')  # fmt: skip
    oras("login", registry.address, registry=registry, creds=admin, cwd=tmp_path)
    auth = str(tmp_path / "oras-auth.json")

    done = subprocess.run(
        [
            str(support.tool("oras")), "cp", "--recursive", "--no-tty",
            "--from-ca-file", str(registry.ca), "--to-ca-file", str(registry.ca),
            "--from-registry-config", auth, "--to-registry-config", auth,
            "--from-distribution-spec", "v1.1-referrers-api", "--to-distribution-spec", "v1.1-referrers-api",
            ref, f"{registry.address}/oras/copy:v1",
        ],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    copied = client.request("GET", f"/v2/oras/copy/referrers/{subject.digest}")
    assert copied.status == 200, copied.describe()
    assert [(m["digest"], m["artifactType"]) for m in copied.json()["manifests"]] == [  # type: ignore[index]
        (sbom["digest"], SBOM)
    ]
    assert client.get_manifest("oras/copy", "v1").body == subject.manifest.data
