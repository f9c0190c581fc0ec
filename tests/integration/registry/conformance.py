"""Run the official OCI distribution-spec conformance suite and judge its results strictly.

Owns: the suite's environment (every optional API switched on, TLS verified through SSL_CERT_FILE,
no stray OCI_* variables from the caller's shell), and reading results.yaml and junit.xml. The
suite exits 0 even when its configuration fails to load, so its exit code alone proves nothing.

Must not: run the suite insecure, or accept a skip ("unsupported") or a disabled API as a pass.
"""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import yaml

from tests import support
from tests.integration.registry import harness

# distribution-spec 1.1 defaults leave these off because registries MAY omit them; ours implements
# them, and a switch left off would show as "Disabled" and hide a regression.
OPTIONAL_SWITCHES = {
    "OCI_API_BLOBS_UPLOAD_CANCEL": "true",  # DELETE of an upload session
    "OCI_API_BLOBS_DIGEST_HEADER": "true",  # Docker-Content-Digest required on blob responses
    "OCI_API_MANIFESTS_DIGEST_HEADER": "true",  # ... and on manifest responses
    "OCI_API_MANIFESTS_TAG_PARAM": "true",  # PUT manifest by digest with ?tag= parameters
    # The one thing left off, on purpose: "sparse" manifests whose blobs or child manifests were never
    # pushed. The registry rejects those with MANIFEST_BLOB_UNKNOWN (the spec lets it), because a
    # manifest must never point at content a pull cannot get and gc relies on that invariant.
    # test_a_manifest_naming_a_blob_the_repository_lacks_is_rejected covers that behaviour instead.
    "OCI_DATA_SPARSE": "false",
}
DISABLED_ON_PURPOSE = {"data Sparse Manifests": "Disabled"}

# Every API of this suite revision (state.go), by the name results.yaml uses.
EVERY_API = {
    "Ping",
    "Tag listing", "Tag delete", "Tag delete atomic",
    "Blob upload cancel", "Blob push", "Blob post only", "Blob post put", "Blob chunked", "Blob streaming",
    "Blob mount", "Blob anonymous mount", "Blob get", "Blob get range", "Blob head",
    "Blob delete", "Blob delete atomic",
    "Manifest put by digest", "Manifest put by tag",
    "Manifest put with tag params", "Manifest put with subject",
    "Manifest get by digest", "Manifest get by tag", "Manifest head by digest", "Manifest head by tag",
    "Manifest delete", "Manifest delete atomic",
    "Referrers",
}  # fmt: skip


def _conformance_env(*, address: str, ca: Path, creds: harness.Credentials, results: Path) -> dict[str, str]:
    # Start from a clean slate: a stray OCI_* variable in the developer's shell must not change the run.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCI_")}
    env.update(
        {
            "OCI_REGISTRY": address,
            "OCI_TLS": "enabled",
            "SSL_CERT_FILE": str(ca),
            "OCI_REPO1": "conformance/repo1",
            "OCI_REPO2": "conformance/repo2",
            "OCI_USERNAME": creds.username,
            "OCI_PASSWORD": creds.password,
            "OCI_VERSION": "1.1",
            "OCI_RESULTS_DIR": str(results),
            "OCI_LOG": "warn",
            **OPTIONAL_SWITCHES,
        }
    )
    return env


def _junit_problems(junit: Path) -> list[str]:
    """Every test case that did not pass, with the suite's error text."""
    problems = []
    # The file was just written by the conformance binary this test ran, not by a third party.
    for case in ET.parse(junit).getroot().iter("testcase"):  # noqa: S314
        status = case.get("status", "")
        if status != "passed":
            detail = (case.findtext("system-out") or "").strip()
            problems.append(f"{case.get('name')}: {status}: {detail[:600]}")
    return problems


def assert_conformance_passes(
    *, address: str, ca: Path, creds: harness.Credentials, workdir: Path, server_log: Callable[[], str]
) -> None:
    """Run the suite against `address` (TLS verified with `ca`); every API and data test must pass."""
    results = workdir / "results"
    done = subprocess.run(
        [str(support.tool("conformance"))],
        env=_conformance_env(address=address, ca=ca, creds=creds, results=results),
        cwd=workdir,  # the suite also reads ./oci-conformance.yaml: make sure there is none
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    report = done.stdout[-6000:] + "\n" + done.stderr[-3000:]
    results_yaml = results / "results.yaml"
    assert results_yaml.is_file(), f"conformance wrote no results.yaml (exit {done.returncode}):\n{report}"

    doc = yaml.safe_load(results_yaml.read_text())
    assert doc["config"]["version"] == "1.1"
    assert doc["config"]["registry"] == address
    assert doc["config"]["tls"] == "enabled", "the suite must verify TLS, not run insecure"

    junit_problems = _junit_problems(results / "junit.xml")
    not_passed = {
        f"{group} {name}": status
        for group in ("apis", "data")
        for name, status in doc[group].items()
        if status != "Pass"
    }
    assert not_passed == DISABLED_ON_PURPOSE and not junit_problems, (
        "conformance is not all-pass:\n"
        + "\n".join(f"  {k}: {v}" for k, v in sorted(not_passed.items()) if k not in DISABLED_ON_PURPOSE)
        + "\nfailing tests:\n"
        + "\n".join(f"  {p}" for p in junit_problems)
        + f"\nserver log tail:\n{server_log()}"
    )
    # An API the suite never reached would be missing rather than failed: require all of them.
    assert set(doc["apis"]) == EVERY_API, sorted(EVERY_API ^ set(doc["apis"]))
    assert done.returncode == 0, report
