"""Registry replicas on one S3 bucket for the integration tests: their flags, starting one, pushing and
checking an image through one (tests/integration/registry/test_s3_*.py)."""

from __future__ import annotations

from pathlib import Path

from tests.integration.registry import harness, images
from tests.support import procs, s3server


def s3_flags(server: s3server.S3Server, prefix: str) -> list[str]:
    return [
        "--storage-driver", "s3", "--s3-endpoint", server.endpoint, "--s3-bucket", server.bucket,
        "--s3-prefix", prefix, "--no-s3-redirect",
    ]  # fmt: skip


def start_replica(tmp: Path, flags: list[str], *, metrics: procs.Port | None = None) -> harness.Registry:
    """`serve --no-tls --no-auth` on the bucket, no local directory at all."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = procs.reserve_port()
    if metrics is not None:
        flags = [*flags, "--metrics-listen", f"127.0.0.1:{metrics.number}"]
    reg = harness.Registry(
        data_dir=tmp,
        host="127.0.0.1",
        port=port.number,
        ca_file=None,
        log_file=tmp / "registry.log",
        argv=[
            str(harness.registry_bin()),
            *("serve", "--listen", f"127.0.0.1:{port.number}", "--no-tls", "--no-auth"),
            *flags,
        ],
        reserved=port,
    )
    reg.start()
    return reg


def push_image(client: harness.Client, repo: str, img: images.Image, tag: str) -> None:
    for blob in img.blobs():
        client.push_blob(repo, blob.data)
    client.push_manifest(repo, tag, img.manifest.data)


def put_manifest_or_push_again(client: harness.Client, repo: str, img: images.Image, tag: str) -> str:
    """PUT a manifest whose blobs were pushed earlier; if gc collected them meanwhile the registry must
    say MANIFEST_BLOB_UNKNOWN, and pushing the blobs again then succeeds. Returns what happened."""
    resp = client.request(
        "PUT",
        f"/v2/{repo}/manifests/{tag}",
        body=img.manifest.data,
        headers={"Content-Type": images.MANIFEST},
    )
    if resp.status == 201:
        return "accepted"
    assert resp.status == 400 and resp.error_codes() == ["MANIFEST_BLOB_UNKNOWN"], resp.describe()
    push_image(client, repo, img, tag)
    return "refused, pushed again"


def assert_pulls_whole(client: harness.Client, repo: str, img: images.Image, tag: str) -> None:
    manifest = client.get_manifest(repo, tag)
    assert manifest.status == 200 and harness.sha256(manifest.body) == img.digest, manifest.describe()
    for blob in img.blobs():
        resp, got, size = client.download_digest(f"/v2/{repo}/blobs/{blob.digest}")
        assert resp.status == 200 and (got, size) == (blob.digest, len(blob.data)), (repo, tag, blob.digest)
