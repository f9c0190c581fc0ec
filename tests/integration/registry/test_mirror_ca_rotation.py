"""A mirror's upstream CA rotated under a running registry, against a REAL upstream (CNCF Distribution).

The mirror's `caFile` is laid out the way kubelet mounts a Secret key (`ca.crt` -> `..data/ca.crt`, `..data`
-> a directory per version, flipped on update). The upstream's certificate is re-issued by a new CA by
restarting Distribution on the same port and data with the new certificate, and the CA "Secret" is updated.

Covers:
- after the rotation, a cold fetch through the running `dockyard-registry serve` (a manifest and a blob
  pushed after the rotation) succeeds without a restart: the registry loads the changed CA file;
- a CA file swapped for one that cannot be loaded keeps the registry serving with the CA it has (a tag
  re-checked upstream, another cold fetch), and says why in `/status` (`caError`) and in its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.registry import certs, harness, images
from tests.integration.registry.test_mirror_real import UPSTREAM_USER, Upstream, _crane, _distribution, _push
from tests.support import procs

pytestmark = pytest.mark.integration


class CaMount:
    """A CA bundle mounted like a Secret key by kubelet; `swap()` is kubelet's atomic update."""

    def __init__(self, directory: Path, pem: bytes) -> None:
        self.directory = directory
        self.versions = 0
        directory.mkdir()
        self.swap(pem)
        (directory / "ca.crt").symlink_to("..data/ca.crt")

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    def swap(self, pem: bytes) -> None:
        self.versions += 1
        version = self.directory / f"..version-{self.versions}"
        version.mkdir()
        (version / "ca.crt").write_bytes(pem)
        (self.directory / "..data_tmp").symlink_to(version.name)
        os.replace(self.directory / "..data_tmp", self.directory / "..data")


def _status(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310  # a loopback URL of ours
        (entry,) = json.loads(response.read())["mirrors"]
    return dict(entry)


@pytest.fixture
def port() -> Iterator[procs.Port]:
    """The upstream's port, kept across its restart with a new certificate."""
    reserved = procs.reserve_port()
    yield reserved
    reserved.release()


def test_a_rotated_upstream_ca_is_trusted_without_a_restart_and_a_broken_one_keeps_the_old(
    tmp_path: Path, port: procs.Port
) -> None:
    up_dir = tmp_path / "distribution"
    up_dir.mkdir()
    password = harness.new_password()
    htpasswd = up_dir / "htpasswd"
    subprocess.run(
        [harness.require_binary("htpasswd"), "-B", "-i", "-c", str(htpasswd), UPSTREAM_USER],
        input=password, text=True, check=True, capture_output=True,
    )  # fmt: skip
    auth = f"htpasswd:\n  realm: upstream\n  path: {htpasswd}"
    ready = {"Authorization": harness.Credentials(username=UPSTREAM_USER, password=password).basic()}
    first_tls = certs.write_server_tls(directory=tmp_path / "tls-1", ips=["127.0.0.1"])
    mount = CaMount(tmp_path / "ca-secret", first_tls.ca_file.read_bytes())
    # crane trusts what the mount holds, like the registry.
    up_crane = _crane(env={**os.environ, "DOCKER_CONFIG": str(tmp_path / "upcfg"),
                           "SSL_CERT_FILE": str(mount.ca_file)})  # fmt: skip

    def start(tls: certs.ServerTLS) -> contextlib.AbstractContextManager[Upstream]:
        return _distribution(up_dir, auth=auth, password=password, ready=ready, tls=tls, port=port)

    def push(label: str, tag: str) -> images.Image:
        img = images.random_image(label=label, layer_count=1, layer_size=32 * 1024)
        _push(up_crane, img=img, ref=f"127.0.0.1:{port.number}/team/app:{tag}", tmp=tmp_path)
        return img

    (tmp_path / "user").write_text(UPSTREAM_USER + "\n")
    (tmp_path / "pass").write_text(password + "\n")
    doc = {"mirrors": [{"prefix": "hub", "upstream": f"https://127.0.0.1:{port.number}", "tagTTL": 0,
                        "caFile": str(mount.ca_file), "usernameFile": str(tmp_path / "user"),
                        "passwordFile": str(tmp_path / "pass")}]}  # fmt: skip
    (tmp_path / "mirrors.yaml").write_text(json.dumps(doc))
    metrics_port = procs.reserve_port()
    status_url = f"http://127.0.0.1:{metrics_port.number}/status"

    with contextlib.ExitStack() as stack:
        first = stack.enter_context(start(first_tls))
        up_crane("auth", "login", f"127.0.0.1:{port.number}", "--username", UPSTREAM_USER,
                 "--password-stdin", stdin=password)  # fmt: skip
        before = push("ca-before", "v1")
        metrics_port.release()  # the registry binds it now
        reg = stack.enter_context(
            harness.running_registry(
                tmp=tmp_path / "dockyard",
                tls_args=("--no-tls",),
                extra_args=["--no-auth", "--mirrors", str(tmp_path / "mirrors.yaml"),
                            "--metrics-listen", f"127.0.0.1:{metrics_port.number}"],
            )
        )  # fmt: skip
        client = reg.client(None)
        got = client.get_manifest("hub/team/app", "v1")
        assert (got.status, got.body) == (200, before.manifest.data), got.describe()

        # The upstream's certificate re-issued by a new CA (same port, same content); the Secret updated.
        first.process.stop()
        second_tls = certs.write_server_tls(directory=tmp_path / "tls-2", ips=["127.0.0.1"])
        mount.swap(second_tls.ca_file.read_bytes())
        stack.enter_context(start(second_tls))
        after = push("ca-after", "v2")
        # Cold: neither the manifest nor its blobs are cached. The registry looks at its CA file at most
        # every few seconds, so the first tries may still use the old CA (and fail): poll.
        harness.wait_for(
            "a cold fetch through the running mirror after the CA rotation",
            lambda: client.get_manifest("hub/team/app", "v2").status == 200,
            timeout=60,
        )
        layer = after.layers[0].blob
        got = client.get_blob("hub/team/app", layer.digest)
        assert (got.status, got.body) == (200, layer.data), got.describe()
        assert _status(status_url)["caError"] is None

        # A CA file that cannot be loaded: the registry keeps the CA it has and says why.
        broken = push("ca-broken", "v3")  # pushed while crane can still trust the upstream
        mount.swap(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        harness.wait_for(
            "the registry to report the broken CA file",
            lambda: (
                client.get_manifest("hub/team/app", "v1").status == 200
                and _status(status_url)["caError"] is not None
            ),
            timeout=60,
        )
        entry = _status(status_url)
        assert "cannot load the CA bundle" in str(entry["caError"]), entry
        assert str(mount.ca_file) in str(entry["caError"]) and entry["reachable"] is True, entry
        got = client.get_manifest("hub/team/app", "v3")  # a cold fetch, over the CA still trusted
        assert (got.status, got.body) == (200, broken.manifest.data), got.describe()
        layer = broken.layers[0].blob
        got = client.get_blob("hub/team/app", layer.digest)
        assert (got.status, got.body) == (200, layer.data), got.describe()
        log = reg.log()
        assert "cannot load the CA bundle" in log and "changed; loaded it" in log
        assert password not in log
