"""docs/install.md's cluster quick start, step by step, as far as it goes without a kubelet.

Covers: with the chart installed and its operator running under the chart's ServiceAccount, the
documented password Secret plus `kubectl apply -f examples/registry.yaml` (unchanged) make a registry
whose claim binds and whose Pod, once running, turns `kubectl get preg` to Ready True; that Pod (the
operator's own template, run locally by tests/support/podrunner.py: registry and nginx) then takes
step 3 exactly: the CA from Secret demo-tls, `skopeo login` as admin with the password on stdin,
`skopeo copy` of an image, and the image reads back with the digest that was pushed. Only step 4 (a
node's containerd pulling) needs a real node: tests/e2e does that on kind.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import lightkube
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import pytest

from dockyard_operator import names
from tests.integration.install import chart, conftest
from tests.integration.operator import cluster
from tests.integration.registry import images
from tests.support import kube, podrunner

pytestmark = pytest.mark.integration

N = names.Names.of("demo")  # the name examples/registry.yaml uses


def skopeo(*args: str, input: str | None = None) -> str:
    """Run skopeo; a failure shows its stderr (its argv holds no secret: passwords go on stdin)."""
    done = subprocess.run(
        ["skopeo", *args], input=input, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"skopeo {args[0]} exited {done.returncode}:\n{done.stderr}"
    return done.stdout


def test_the_quick_start_takes_a_user_from_apply_to_a_pushed_image(
    control_plane: kube.ControlPlane,
    kube_client: lightkube.Client,
    namespace: str,
    charted_operator: conftest.ChartedOperator,
    tmp_path: Path,
) -> None:
    # Step 2: the Secret as `kubectl create secret generic registry-admin --from-literal=password=…`, then
    # the example exactly as shipped.
    password = secrets.token_urlsafe(24)
    kube_client.create(cluster.password_secret("registry-admin", namespace, password))
    control_plane.kubectl("apply", "-n", namespace, "-f", str(chart.EXAMPLES / "registry.yaml"))
    claim: Any = cluster.wait_child(
        kube_client, lightkube.resources.core_v1.PersistentVolumeClaim, N.pvc, namespace
    )
    control_plane.provide_volume(
        namespace=namespace,
        claim=N.pvc,
        size=claim.spec.resources.requests["storage"],
        access_modes=claim.spec.accessModes,
    )
    deployment: Any = cluster.wait_child(
        kube_client, lightkube.resources.apps_v1.Deployment, N.deployment, namespace
    )
    tls: Any = cluster.wait_child(kube_client, lightkube.resources.core_v1.Secret, N.tls_secret, namespace)

    template = deployment.to_dict()["spec"]["template"]
    with podrunner.PodRunner(
        template=template, namespace=namespace, client=kube_client, root=tmp_path / "pod", extra_ports=[5000]
    ) as pod:
        # The Pod runs: what kubelet would report makes the registry Ready.
        control_plane.mark_pods_ready(
            namespace=namespace,
            selector=",".join(f"{k}={v}" for k, v in names.selector_labels("demo").items()),
        )
        cluster.wait_condition(kube_client, "demo", namespace, "Ready", "True", timeout=90)
        listed = control_plane.kubectl("get", "preg", "-n", namespace).stdout
        assert listed.splitlines()[1].split()[:3] == ["demo", f"demo.{namespace}.svc:443", "True"], listed

        # Step 3: trust the CA from demo-tls, log in with the password on stdin, push, read back.
        certs = tmp_path / "certs"
        certs.mkdir()
        (certs / "ca.crt").write_bytes(base64.b64decode(tls.data["ca.crt"]))
        auth = tmp_path / "auth.json"
        host = f"localhost:{pod.port(5443)}"
        login = ["login", f"--authfile={auth}", f"--cert-dir={certs}", "--username=admin", "--password-stdin"]
        skopeo(*login, host, input=password)
        layout = images.write_layout(
            directory=tmp_path / "layout", tag="1", img=images.random_image(label="qs")
        )
        pushed = images.tagged_digest(directory=layout, tag="1")
        skopeo(
            "copy", f"--dest-authfile={auth}", f"--dest-cert-dir={certs}",
            f"oci:{layout}:1", f"docker://{host}/tools/hello:1",
        )  # fmt: skip
        inspected = json.loads(
            skopeo("inspect", f"--authfile={auth}", f"--cert-dir={certs}", f"docker://{host}/tools/hello:1")
        )
        pod.check_alive()

    assert inspected["Digest"] == pushed
    assert password not in charted_operator.operator.output()
