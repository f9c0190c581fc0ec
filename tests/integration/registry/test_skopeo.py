"""skopeo (Debian) against the session registry: TLS verified against the generated CA, with credentials.

Covers:
- pushing a multi-layer OCI image from an image layout built in Python, and copying it back into a
  fresh layout with the same manifest, config and layer digests and intact blobs;
- `skopeo inspect` (digest, layers, labels) and `skopeo inspect --raw` (the exact manifest bytes);
- `skopeo list-tags` after pushing a second tag;
- `skopeo delete`: the manifest and every tag pointing at it are gone, a second tag of another
  manifest is not, and the layers of the remaining image still pull;
- Docker schema2 (`--format v2s2`): stored and served byte for byte with its own media type;
- a multi-platform OCI index (`--all`): the index and both images round-trip with identical digests;
- zstd-compressed layers keep their media type and pull back;
- a client that does not trust the CA is refused (TLS really is verified), and a wrong password
  is refused with an authentication error.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.registry import harness, images
from tests.integration.registry.clients import skopeo, skopeo_pull, skopeo_push

pytestmark = pytest.mark.integration

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def test_skopeo_pushes_a_multi_layer_image_and_pulls_back_identical_digests(
    registry: harness.Registry, admin: harness.Credentials, cert_dir: Path, tmp_path: Path
) -> None:
    img = images.random_image(label="skopeo-roundtrip", layer_count=4, layer_size=256 * 1024)
    ref = f"{registry.address}/skopeo/roundtrip:v1"

    skopeo_push(img=img, ref=ref, tmp=tmp_path, cert_dir=cert_dir, creds=admin)
    back = skopeo_pull(ref=ref, into=tmp_path / "back", cert_dir=cert_dir, creds=admin)

    assert back.manifest_digest == img.digest
    assert back.config_digest == img.config.digest
    assert back.layer_digests == [layer.blob.digest for layer in img.layers]


def test_skopeo_inspect_reports_the_pushed_digest_layers_and_exact_manifest(
    registry: harness.Registry, admin: harness.Credentials, cert_dir: Path, tmp_path: Path
) -> None:
    img = images.random_image(label="skopeo-inspect", layer_count=2)
    ref = f"{registry.address}/skopeo/inspect:v1"
    skopeo_push(img=img, ref=ref, tmp=tmp_path, cert_dir=cert_dir, creds=admin)

    info = json.loads(
        skopeo("inspect", "--cert-dir", str(cert_dir), "--creds", admin.colon(), f"docker://{ref}").stdout
    )
    raw = skopeo(
        "inspect", "--raw", "--cert-dir", str(cert_dir), "--creds", admin.colon(), f"docker://{ref}"
    ).stdout

    assert info["Digest"] == img.digest
    assert info["Layers"] == [layer.blob.digest for layer in img.layers]
    assert info["Labels"] == {"dev.dockyard.test": "skopeo-inspect"}
    assert info["RepoTags"] == ["v1"]
    assert raw.encode() == img.manifest.data


def test_skopeo_list_tags_shows_every_pushed_tag(
    registry: harness.Registry, admin: harness.Credentials, cert_dir: Path, tmp_path: Path
) -> None:
    img = images.random_image(label="skopeo-tags", layer_count=1)
    for tag in ("v1", "v2", "latest"):
        skopeo_push(
            img=img, ref=f"{registry.address}/skopeo/tags:{tag}", tmp=tmp_path, cert_dir=cert_dir, creds=admin
        )

    listed = json.loads(
        skopeo(
            "list-tags",
            "--cert-dir",
            str(cert_dir),
            "--creds",
            admin.colon(),
            f"docker://{registry.address}/skopeo/tags",
        ).stdout
    )

    assert sorted(listed["Tags"]) == ["latest", "v1", "v2"]


def test_skopeo_delete_removes_the_manifest_and_its_tags_but_not_other_images(
    registry: harness.Registry,
    admin: harness.Credentials,
    client: harness.Client,
    cert_dir: Path,
    tmp_path: Path,
) -> None:
    doomed = images.random_image(label="skopeo-doomed", layer_count=2)
    kept = images.random_image(label="skopeo-kept", layer_count=2)
    repo = "skopeo/delete"
    skopeo_push(
        img=doomed, ref=f"{registry.address}/{repo}:doomed", tmp=tmp_path, cert_dir=cert_dir, creds=admin
    )
    skopeo_push(
        img=doomed,
        ref=f"{registry.address}/{repo}:doomed-alias",
        tmp=tmp_path,
        cert_dir=cert_dir,
        creds=admin,
    )
    skopeo_push(img=kept, ref=f"{registry.address}/{repo}:kept", tmp=tmp_path, cert_dir=cert_dir, creds=admin)

    skopeo(
        "delete",
        "--cert-dir",
        str(cert_dir),
        "--creds",
        admin.colon(),
        f"docker://{registry.address}/{repo}:doomed",
    )

    assert client.get_manifest(repo, doomed.digest).status == 404
    for tag in ("doomed", "doomed-alias"):
        gone = client.get_manifest(repo, tag)
        assert gone.status == 404 and gone.error_codes() == ["MANIFEST_UNKNOWN"], gone.describe()
    listed = client.request("GET", f"/v2/{repo}/tags/list")
    assert listed.status == 200 and listed.json() == {"name": repo, "tags": ["kept"]}, listed.describe()
    back = skopeo_pull(
        ref=f"{registry.address}/{repo}:kept", into=tmp_path / "kept", cert_dir=cert_dir, creds=admin
    )
    assert back.manifest_digest == kept.digest


def test_skopeo_refuses_a_registry_whose_ca_it_does_not_trust(
    registry: harness.Registry, admin: harness.Credentials, tmp_path: Path
) -> None:
    empty_certs = tmp_path / "no-certs"
    empty_certs.mkdir()

    done = skopeo(
        "inspect",
        "--cert-dir",
        str(empty_certs),
        "--creds",
        admin.colon(),
        f"docker://{registry.address}/skopeo/roundtrip:v1",
        check=False,
    )

    assert done.returncode != 0
    assert "certificate" in done.stderr and "unknown authority" in done.stderr, done.stderr


def test_skopeo_with_a_wrong_password_is_refused_as_unauthorized(
    registry: harness.Registry, admin: harness.Credentials, cert_dir: Path, tmp_path: Path
) -> None:
    img = images.random_image(label="skopeo-wrong-password", layer_count=1)
    layout = images.write_layout(directory=tmp_path / "src", tag="src", img=img)
    wrong = harness.Credentials(username=admin.username, password="not-" + admin.password)

    done = skopeo(
        "copy",
        "--quiet",
        f"oci:{layout}:src",
        f"docker://{registry.address}/skopeo/refused:v1",
        "--dest-cert-dir",
        str(cert_dir),
        "--dest-creds",
        wrong.colon(),
        check=False,
    )

    assert done.returncode != 0
    assert "unauthorized" in done.stderr.lower() or "authentication required" in done.stderr.lower(), (
        done.stderr
    )


def test_skopeo_pushes_a_docker_schema2_image_and_the_registry_keeps_its_exact_bytes(
    registry: harness.Registry,
    admin: harness.Credentials,
    client: harness.Client,
    cert_dir: Path,
    tmp_path: Path,
) -> None:
    img = images.random_image(label="skopeo-docker-v2s2", layer_count=2)
    layout = images.write_layout(directory=tmp_path / "src", tag="src", img=img)
    ref = f"docker://{registry.address}/skopeo/docker:v1"
    tls = ["--cert-dir", str(cert_dir), "--creds", admin.colon()]

    skopeo("copy", "--quiet", "--format", "v2s2", f"oci:{layout}:src", ref,
           "--dest-cert-dir", str(cert_dir), "--dest-creds", admin.colon())  # fmt: skip
    raw = skopeo("inspect", "--raw", *tls, ref).stdout.encode()
    skopeo("copy", "--quiet", ref, f"dir:{tmp_path / 'dir'}", "--src-cert-dir", str(cert_dir),
           "--src-creds", admin.colon())  # fmt: skip
    served = client.request("GET", "/v2/skopeo/docker/manifests/v1", headers={"Accept": DOCKER_MANIFEST})

    assert json.loads(raw)["mediaType"] == DOCKER_MANIFEST
    assert served.status == 200 and served.body == raw, served.describe()
    assert served.header("Content-Type") == DOCKER_MANIFEST
    assert served.header("Docker-Content-Digest") == harness.sha256(raw)
    assert (tmp_path / "dir" / "manifest.json").read_bytes() == raw
    assert [layer["digest"] for layer in json.loads(raw)["layers"]] == [
        layer.blob.digest for layer in img.layers
    ]


def test_skopeo_copies_a_multi_platform_index_with_all_its_images_and_back(
    registry: harness.Registry,
    admin: harness.Credentials,
    client: harness.Client,
    cert_dir: Path,
    tmp_path: Path,
) -> None:
    amd64 = images.random_image(label="multi-amd64", layer_count=2)
    arm64 = images.random_image(label="multi-arm64", layer_count=2)
    idx = images.index(platforms=[("amd64", amd64), ("arm64", arm64)])
    layout = images.write_index_layout(directory=tmp_path / "src", tag="src", idx=idx, imgs=[amd64, arm64])
    ref = f"docker://{registry.address}/skopeo/multi:v1"

    skopeo("copy", "--quiet", "--all", f"oci:{layout}:src", ref,
           "--dest-cert-dir", str(cert_dir), "--dest-creds", admin.colon())  # fmt: skip
    skopeo("copy", "--quiet", "--all", ref, f"oci:{tmp_path / 'back'}:back",
           "--src-cert-dir", str(cert_dir), "--src-creds", admin.colon())  # fmt: skip

    assert images.tagged_digest(directory=tmp_path / "back", tag="back") == idx.digest
    served = client.get_manifest("skopeo/multi", "v1")
    assert served.status == 200 and served.body == idx.data, served.describe()
    assert served.header("Content-Type") == images.INDEX
    for img in (amd64, arm64):
        child = client.get_manifest("skopeo/multi", img.digest)
        assert child.status == 200 and child.body == img.manifest.data, child.describe()
        assert (tmp_path / "back" / "blobs" / "sha256" / img.layers[0].blob.digest[7:]).read_bytes() == (
            img.layers[0].blob.data
        )


def test_skopeo_pushes_zstd_layers_and_the_registry_keeps_their_media_type(
    registry: harness.Registry,
    admin: harness.Credentials,
    client: harness.Client,
    cert_dir: Path,
    tmp_path: Path,
) -> None:
    img = images.random_image(label="skopeo-zstd", layer_count=2)
    layout = images.write_layout(directory=tmp_path / "src", tag="src", img=img)
    ref = f"{registry.address}/skopeo/zstd:v1"

    skopeo("copy", "--quiet", "--dest-compress", "--dest-compress-format", "zstd", f"oci:{layout}:src",
           f"docker://{ref}", "--dest-cert-dir", str(cert_dir), "--dest-creds", admin.colon())  # fmt: skip
    back = skopeo_pull(ref=ref, into=tmp_path / "back", cert_dir=cert_dir, creds=admin)

    stored = json.loads(client.get_manifest("skopeo/zstd", "v1").body)
    assert {layer["mediaType"] for layer in stored["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    }
    assert back.config_digest == img.config.digest
    assert back.layer_digests == [layer["digest"] for layer in stored["layers"]]
