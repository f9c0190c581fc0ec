"""The official OCI distribution-spec conformance suite against the standalone registry (TLS + auth).

Covers:
- every API group of distribution-spec 1.1 — pull, push (monolithic, chunked, streamed, mount,
  anonymous mount, cancel), content discovery (tag list, referrers with artifactType filtering),
  content management (tag, manifest and blob delete) — plus every data shape the suite generates
  (image, index, nested index, artifacts, subjects, sha512, tag parameters, ...) except "sparse"
  manifests, which the registry rejects by design (see conformance.OPTIONAL_SWITCHES; that
  rejection is tested directly here);
- over HTTPS verified against the registry's generated CA (Go honours SSL_CERT_FILE) and with basic
  auth as a user created by `dockyard-registry user add --password-stdin`.

The suite exits 0 even when its configuration fails to load, so its exit code alone proves nothing:
the test reads `results.yaml` (every API and data status) and `junit.xml` (every test case) and
requires each one to be `Pass` — nothing failed, skipped ("unsupported" is reported as a skip) or
disabled but the sparse data set. A failure lists the failing test names with the suite's own messages.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.registry import harness, images
from tests.integration.registry.conformance import assert_conformance_passes

pytestmark = pytest.mark.integration


def test_conformance_suite_passes_every_api_and_data_test_with_tls_and_auth(
    registry: harness.Registry, admin: harness.Credentials, tmp_path: Path
) -> None:
    assert_conformance_passes(
        address=registry.address, ca=registry.ca, creds=admin, workdir=tmp_path, server_log=registry.log_tail
    )


def test_a_manifest_naming_a_blob_the_repository_lacks_is_rejected(client: harness.Client) -> None:
    img = images.random_image(label="sparse", layer_count=2)
    for blob in img.blobs()[:-1]:  # every blob but the last layer
        client.push_blob("conformance/sparse", blob.data)

    resp = client.request(
        "PUT",
        "/v2/conformance/sparse/manifests/v1",
        body=img.manifest.data,
        headers={"Content-Type": images.MANIFEST},
    )

    assert resp.status == 400 and resp.error_codes() == ["MANIFEST_BLOB_UNKNOWN"], resp.describe()
    assert img.layers[-1].blob.digest in resp.body.decode()
    assert client.get_manifest("conformance/sparse", "v1").status == 404
