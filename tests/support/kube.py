"""A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager.

Owns: the throwaway PKI (CA, apiserver serving cert, admin client cert, ServiceAccount signing
key), the three processes (on loopback ports reserved for the plane's lifetime with
`procs.reserve_port`, stopped by their own PIDs in reverse order), the admin kubeconfig, client
certificate and ServiceAccount token kubeconfigs, a `kubectl` runner, an API GET helper, the audit
log reader, the two jobs of the missing node components that tests play (`mark_pods_ready`,
`provide_volume`), the two steps of a ServiceAccount signing key rotation (`rotate_service_account_key`,
`publish_only_the_signing_key`: restarts of kube-apiserver), and `eventually()`, the one bounded polling
helper tests use instead of sleeps.

Must not: know anything about Dockyard (the operator fixture lives in the tests that need it),
leave a process or a temp dir behind (also when startup fails halfway), download anything, or
skip when a binary is missing (it raises with the command that builds it).

There is no scheduler, no kubelet and no volume provisioner: Deployments get ReplicaSets and
Pods (KCM), but Pods stay Pending until a test marks them ready, and a claim binds only to a
volume a test provides.
"""

from __future__ import annotations

import base64
import collections.abc
import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, TypeVar

import lightkube
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import oid

import tests.support
from tests.support import procs

T = TypeVar("T")

START_TIMEOUT = 90.0
# Room for the operator bench: 1,000 registries have two Services each (a /24 ran out after ~127).
SERVICE_CIDR = "10.0.0.0/16"
# Controllers the tests rely on: ownerReference GC, Deployment -> ReplicaSet -> Pod, namespace
# deletion, the `default` ServiceAccount (Pod admission needs it), `kube-root-ca.crt`, DaemonSets,
# binding PersistentVolumeClaims to PersistentVolumes a test creates (there is no provisioner), and
# removing the `kubernetes.io/pvc-protection` finalizer, without which a deleted claim (and its
# namespace) stays Terminating forever.
KCM_CONTROLLERS = (
    "garbagecollector",
    "deployment",
    "replicaset",
    "namespace",
    "serviceaccount",
    "root-ca-cert-publisher",
    "daemonset",
    "persistentvolume-binder",
    "pvc-protection",
    "pv-protection",
)
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}


class ControlPlaneError(procs.ProcessError):
    """The control plane could not start; the message carries the failing component's log tail."""


def eventually(
    probe: collections.abc.Callable[[], T | None],
    *,
    timeout: float = 60.0,
    interval: float = 0.25,
    what: str,
) -> T:
    """Poll `probe` until it returns something truthy and return that; fail after `timeout` s.

    `probe` may raise AssertionError, LookupError (KeyError, IndexError) or an API error (a 404
    while things converge): they count as "not yet", and the last one is shown when time runs
    out, so a failure says what was seen. Anything else is a bug in the test and propagates.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except (AssertionError, LookupError, lightkube.ApiError) as exc:
            last, value = exc, None
        else:
            last = value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)


def kubectl_binary() -> Path:
    """The preinstalled kubectl closest to the apiserver: the Cloud SDK's `kubectl.1.33`.

    It is two minors behind the 1.35 apiserver, outside kubectl's official skew of one, which
    does not matter for the plain get/apply/patch/create-token verbs the tests use.
    """
    env = os.environ.get("KUBECTL")
    if env:
        return Path(env)
    found = shutil.which("kubectl")
    if found is None:
        raise FileNotFoundError("kubectl is not on PATH (set KUBECTL to a kubectl >= 1.33)")
    # PATH's kubectl is the Cloud SDK's version dispatcher; the versioned binaries sit beside it.
    versioned = Path(found).resolve().parent / "kubectl.1.33"
    return versioned if versioned.is_file() else Path(found)


# --- PKI -------------------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    # P-256: kube-apiserver accepts it for serving, client and SA signing keys, and it is far
    # cheaper to generate than RSA-2048 on a busy 2-core machine.
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _issue(
    *,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name | None,
    usage: oid.ObjectIdentifier | None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_name or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=usage is None, path_length=None), critical=True)
    )
    if usage is None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def write_pki(
    directory: Path, *, server_ips: collections.abc.Sequence[str] = ("127.0.0.1", "10.0.0.1")
) -> None:
    """CA, apiserver serving cert (`server_ips`, localhost, kubernetes.default…), admin cert, SA keys."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, "dockyard-test-ca")])
    ca = _issue(subject=ca_name, key=ca_key, ca_key=ca_key, ca_name=None, usage=None)
    _write_key(directory / "ca.key", ca_key)
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    server_key = _key()
    server = _issue(
        subject=x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, "kube-apiserver")]),
        key=server_key,
        ca_key=ca_key,
        ca_name=ca_name,
        usage=oid.ExtendedKeyUsageOID.SERVER_AUTH,
        sans=[
            *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips),
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
        ],
    )
    _write_key(directory / "apiserver.key", server_key)
    (directory / "apiserver.crt").write_bytes(server.public_bytes(serialization.Encoding.PEM))

    # O=system:masters bypasses authorization (like envtest's and local-up-cluster's admin).
    issue_client_cert(directory, name="admin", common_name="admin", organizations=("system:masters",))

    sa_key = _key()
    _write_key(directory / "sa.key", sa_key)
    (directory / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def issue_client_cert(
    directory: Path, *, name: str, common_name: str, organizations: collections.abc.Sequence[str] = ()
) -> None:
    """`<name>.crt`/`<name>.key` in `directory`: a client certificate from its CA (user CN, groups O)."""
    ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    key = _key()
    attributes = [x509.NameAttribute(oid.NameOID.ORGANIZATION_NAME, org) for org in organizations]
    cert = _issue(
        subject=x509.Name([*attributes, x509.NameAttribute(oid.NameOID.COMMON_NAME, common_name)]),
        key=key,
        ca_key=ca_key,
        ca_name=ca.subject,
        usage=oid.ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    _write_key(directory / f"{name}.key", key)
    (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


# --- the control plane -----------------------------------------------------------------------


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) on loopback, for one test session.

    Use as a context manager. CRD files given as `crds` are applied (and awaited Established)
    before KCM starts, so KCM's garbage collector knows their kinds from its first sync instead
    of after its 30 s rediscovery.
    """

    def __init__(
        self,
        *,
        crds: collections.abc.Sequence[Path] = (),
        with_controller_manager: bool = True,
        start_timeout: float = START_TIMEOUT,
        workdir: Path | None = None,
    ) -> None:
        self.crds = list(crds)
        self.with_controller_manager = with_controller_manager
        self.start_timeout = start_timeout
        self._given_workdir = workdir
        self.workdir = Path()  # set by start(): nothing touches the disk before that
        self.api_port = 0  # reserved by start() for the plane's lifetime, restarts of the API server included
        self.server = ""
        self._ports: list[procs.Port] = []
        self.processes: list[procs.Process] = []
        self._apiserver_argv: list[str] = []

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def kubeconfig(self) -> Path:
        """The admin (system:masters) kubeconfig."""
        return self.workdir / "admin.kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    # context manager ------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for name in ("etcd", "kube-apiserver") + (
            ("kube-controller-manager",) if self.with_controller_manager else ()
        ):
            tests.support.tool(name)  # fail early and clearly when a binary is missing
        self.workdir = self._given_workdir or Path(tempfile.mkdtemp(prefix="dockyard-cp-"))
        api = self._reserve()
        self.api_port, self.server = api.number, f"https://127.0.0.1:{api.number}"
        write_pki(self.pki)
        self._write_admin_kubeconfig()
        etcd_url = self._start_etcd()
        self._start_apiserver(etcd_url)
        for crd in self.crds:
            self.apply_crd(crd)
        if self.with_controller_manager:
            self._start_controller_manager()

    def stop(self) -> None:
        """Stop every process in reverse start order, then remove the work directory."""
        errors = []
        for process in reversed(self.processes):
            try:
                process.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(f"{process.name}: {exc}")
        self.processes.clear()
        for port in self._ports:
            port.release()
        self._ports.clear()
        if self._given_workdir is None and self.workdir != Path():
            shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise ControlPlaneError("; ".join(errors))

    # components -----------------------------------------------------------------------------

    def _reserve(self) -> procs.Port:
        port = procs.reserve_port()
        self._ports.append(port)
        return port

    def _spawn(self, name: str, argv: list[str]) -> procs.Process:
        process = procs.Process(name=name, argv=argv, log=self.workdir / f"{name}.log")
        self.processes.append(process)
        return process

    def _start_etcd(self) -> str:
        client, peer = self._reserve().number, self._reserve().number
        url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        etcd = self._spawn(
            "etcd",
            [
                str(tests.support.tool("etcd")),
                "--name=test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=test={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait_http(etcd, f"{url}/health", tls=False)
        return url

    def _start_apiserver(self, etcd_url: str) -> None:
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        argv = [
            str(tests.support.tool("kube-apiserver")),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.api_port}",
            f"--tls-cert-file={self.pki / 'apiserver.crt'}",
            f"--tls-private-key-file={self.pki / 'apiserver.key'}",
            f"--client-ca-file={self.pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.pki / 'sa.pub'}",
            f"--service-account-signing-key-file={self.pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            # The `kubernetes` Endpoints would need a non-loopback advertise address; nothing
            # here uses the in-cluster Service, so the reconciler is off.
            "--endpoint-reconciler-type=none",
            f"--cert-dir={self.workdir / 'apiserver'}",
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            # Never rotated: readers take byte offsets into this one file, and the default (0) still
            # rotates at 100 MB, which the operator bench's 1,000 registries pass.
            "--audit-log-maxsize=100000",
        ]
        if not self.with_controller_manager:
            # Without KCM no `default` ServiceAccount is ever created and Pods would be refused.
            argv.append("--disable-admission-plugins=ServiceAccount")
        self._apiserver_argv = argv
        apiserver = self._spawn("kube-apiserver", argv)
        self._wait_http(apiserver, f"{self.server}/readyz", tls=True)

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver (SIGTERM) and start it again on the same port and etcd.

        Clients see their watches and connections break, as in an upgrade of the control plane.
        """
        (old,) = [process for process in self.processes if process.name == "kube-apiserver"]
        old.stop()
        new = procs.Process(name="kube-apiserver", argv=self._apiserver_argv, log=old.log)
        self.processes[self.processes.index(old)] = new
        self._wait_http(new, f"{self.server}/readyz", tls=True)

    def rotate_service_account_key(self) -> None:
        """The first step of a ServiceAccount key rotation: kube-apiserver restarted signing with a fresh key
        (`sa-<n>.key`) and publishing it (`--service-account-key-file`, hence in its JWKS) beside every key
        published so far, so tokens signed before stay valid."""
        n = len(list(self.pki.glob("sa-*.key"))) + 1
        key = _key()
        _write_key(self.pki / f"sa-{n}.key", key)
        (self.pki / f"sa-{n}.pub").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        signing = "--service-account-signing-key-file="
        self._apiserver_argv = [
            *(a for a in self._apiserver_argv if not a.startswith(signing)),
            f"--service-account-key-file={self.pki / f'sa-{n}.pub'}",
            f"{signing}{self.pki / f'sa-{n}.key'}",
        ]
        self.restart_apiserver()

    def publish_only_the_signing_key(self) -> None:
        """The last step of a rotation: kube-apiserver restarted publishing only its current signing key."""
        signing = next(a for a in self._apiserver_argv if a.startswith("--service-account-signing-key-file="))
        current = signing.split("=", 1)[1].removesuffix(".key") + ".pub"
        self._apiserver_argv = [
            a for a in self._apiserver_argv if not a.startswith("--service-account-key-file=")
        ] + [f"--service-account-key-file={current}"]
        self.restart_apiserver()

    def _start_controller_manager(self) -> None:
        kcm = self._spawn(
            "kube-controller-manager",
            [
                str(tests.support.tool("kube-controller-manager")),
                f"--kubeconfig={self.kubeconfig}",
                f"--controllers={','.join(KCM_CONTROLLERS)}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",  # no health endpoint needed: readiness is observed below
                f"--root-ca-file={self.pki / 'ca.crt'}",
            ],
        )

        # The serviceaccount controller creating `default/default` proves KCM is up and syncing.
        def default_sa() -> bool:
            kcm.check_alive()
            done = self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False)
            return done.returncode == 0

        try:
            eventually(default_sa, timeout=self.start_timeout, interval=0.5, what="KCM's default SA")
        except AssertionError as exc:
            raise ControlPlaneError(f"{exc}\nlast lines of {kcm.log}:\n{procs.tail(kcm.log)}") from None

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        context.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        return context

    def _wait_http(self, process: procs.Process, url: str, *, tls: bool) -> None:
        context = self._ssl_context() if tls else None
        try:
            procs.wait_http(url, watch=[process], timeout=self.start_timeout, context=context, interval=0.5)
        except procs.ProcessError as exc:
            raise ControlPlaneError(str(exc)) from None

    # kubeconfigs and clients ----------------------------------------------------------------

    def _kubeconfig(self, user: dict[str, str]) -> dict[str, Any]:
        ca = base64.b64encode((self.pki / "ca.crt").read_bytes()).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "test", "cluster": {"server": self.server, "certificate-authority-data": ca}}
            ],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user"}}],
            "current-context": "test",
        }

    def _write_admin_kubeconfig(self) -> None:
        def data(name: str) -> str:
            return base64.b64encode((self.pki / name).read_bytes()).decode()

        config = self._kubeconfig(
            {"client-certificate-data": data("admin.crt"), "client-key-data": data("admin.key")}
        )
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def client_kubeconfig(
        self, *, name: str, groups: collections.abc.Sequence[str] = ("system:masters",)
    ) -> Path:
        """A kubeconfig authenticating as user `name` in `groups` with a client certificate.

        A user of its own tells its requests apart from everyone else's in the audit log (`user.username`).
        """
        issue_client_cert(self.pki, name=name, common_name=name, organizations=groups)

        def data(suffix: str) -> str:
            return base64.b64encode((self.pki / f"{name}.{suffix}").read_bytes()).decode()

        path = self.workdir / f"{name}.kubeconfig"
        config = self._kubeconfig({"client-certificate-data": data("crt"), "client-key-data": data("key")})
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def api_json(self, path: str, *, accept: str = "application/json", timeout: float = 60.0) -> Any:
        """GET `path` (e.g. `/api/v1/namespaces`) from kube-apiserver as admin; the decoded JSON.

        Cheaper than `kubectl get -o json` when polled: no process start, no client-side decoding into
        typed objects.
        """
        request = urllib.request.Request(self.server + path, headers={"Accept": accept})  # noqa: S310
        with urllib.request.urlopen(request, timeout=timeout, context=self._ssl_context()) as response:  # noqa: S310
            return json.load(response)

    def service_account_kubeconfig(self, *, namespace: str, name: str, path: Path | None = None) -> Path:
        """A kubeconfig authenticating as ServiceAccount `namespace/name` (TokenRequest, 1 h)."""
        token = self.kubectl("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()
        path = path or self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        path.write_text(yaml.safe_dump(self._kubeconfig({"token": token})))
        path.chmod(0o600)
        return path

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane; with `check`, a failure raises with stderr."""
        argv = [str(kubectl_binary()), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {done.returncode}:\n{done.stderr.strip()}")
        return done

    def apply_crd(self, path: Path) -> None:
        """Apply one CRD file and wait until every CRD in it is Established."""
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        names = [
            doc["metadata"]["name"]
            for doc in yaml.safe_load_all(path.read_text())
            if doc and doc.get("kind") == "CustomResourceDefinition"
        ]
        for name in names:
            self.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")

    def mark_pods_ready(self, *, namespace: str, selector: str) -> list[str]:
        """Play the kubelet: mark every Pod matching `selector` Running and Ready; returns their names.

        The ReplicaSet and Deployment controllers then count them, so the Deployment becomes
        Available the way it would in a real cluster (patching the Deployment's status instead
        would be overwritten by the deployment controller on its next sync).
        """
        pods = self.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "name").stdout.split()
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ready = [
            {"type": kind, "status": "True", "lastTransitionTime": now}
            for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        patch = json.dumps({"status": {"phase": "Running", "conditions": ready}})
        for pod in pods:
            self.kubectl("patch", pod, "-n", namespace, "--subresource=status", "--type=merge", "-p", patch)
        return [pod.removeprefix("pod/") for pod in pods]

    def provide_volume(
        self, *, namespace: str, claim: str, size: str, access_modes: collections.abc.Sequence[str]
    ) -> str:
        """Create a hostPath PersistentVolume reserved for claim `namespace/claim`; KCM binds them.

        There is no dynamic provisioner here; this is the administrator's part. The claimRef
        reserves the volume, so KCM cannot bind it to another test's pending claim that also
        fits. The path is never used, because no kubelet ever mounts it. Returns the PV name.
        """
        name = f"{namespace}-{claim}"[:253]
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": list(access_modes),
                "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Delete",
                "claimRef": {"namespace": namespace, "name": claim},
                "hostPath": {"path": f"/tmp/dockyard-test-volumes/{name}"},
            },
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(volume))
        return name

    def audit_events(self, *, since: int = 0) -> list[dict[str, Any]]:
        """Every audit event so far (Metadata level: who did what to which object, and the code).

        `since`, an `audit_offset()`, leaves out what came before; a line still being written is left for
        the next call.
        """
        with contextlib.suppress(FileNotFoundError), self.audit_log.open("rb") as handle:
            handle.seek(since)
            complete, _, _ = handle.read().rpartition(b"\n")
            return [json.loads(line) for line in complete.decode().splitlines() if line.strip()]
        return []

    def audit_offset(self) -> int:
        """Where the audit log ends now: `audit_events(since=...)` then sees only later requests."""
        try:
            return self.audit_log.stat().st_size
        except FileNotFoundError:
            return 0

    def logs(self) -> dict[str, str]:
        """Last lines of every component's log, for failure messages."""
        return {process.name: procs.tail(process.log) for process in self.processes}
