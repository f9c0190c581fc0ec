"""A real single-node Kubernetes cluster on this machine: local processes, no Docker, no VM.

Owns: the node's network namespace (`dockyard-node`, a veth pair, node IP 10.213.0.2), containerd with
Debian's runc and CNI bridge, etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
kube-proxy (iptables) and CoreDNS, all started with `nsenter --net` into that namespace (not `ip netns
exec`, which also remounts /sys and hides the cgroup tree from the kubelet and runc); their PKI and
kubeconfigs; importing locally built images into containerd's `k8s.io` namespace; hostPath volumes for
claims; optionally the kubelet's image credential providers (`CredentialProviders`: their config and
executables, written into the run's directory); and undoing everything the node did to the machine.

Why a network namespace: the kubelet refuses a loopback node IP, and this machine may only send traffic
to loopback or to namespaces it made itself. Inside, NodePorts answer on 127.0.0.1 (kube-proxy sets
`route_localnet`), so `localhost:<nodePort>` is the registry for the kubelet and for clients run with
`Cluster.inside(...)`; from the machine, the API server is `https://10.213.0.2:6443`.

What the node changes outside its own directory, and how it is undone (`clean_up`, also run first when
a crashed earlier run left its record behind):
- processes: every component is stopped by its PID; containerd's shims and the containers themselves
  (found by their cgroups under `kubepods` and by command lines naming this run's directory) are killed;
- mounts under the run's directory and `/run/netns/cni-*` (pod network namespaces), unmounted;
- the `kubepods` cgroups in every hierarchy, removed leaf first;
- the node's network namespace, deleted: with it go the veth pair, the bridge, and every iptables rule
  and sysctl that kubelet, kube-proxy and the CNI plugins set inside it;
- the global sysctls the kubelet sets (`kernel.panic`, `kernel.panic_on_oops`, `vm.overcommit_memory`),
  restored to the values recorded before the start;
- entries the run created in `/etc/{containerd,docker,containers}/certs.d` (the node-trust agent
  writes there through hostPath), `/var/lib/kubelet` (its `device-plugins/` is hard-coded) and
  `/run/containerd`, removed; entries that were there before are never touched.

The record of a run is `/run/dockyard-cluster.json`: one node per machine (the cgroup tree, the certs.d
directories and containerd's `/run/containerd` are global). A live node holds `/run/dockyard-cluster.lock`
(flock; the starting process, then the node's etcd, which inherits it): a second start waits for it or is
refused (`wait`), and never mistakes a live node for a crashed run's leftovers. A record whose lock is free
is a crash's. `python -m tests.support.cluster up|down`
(`make cluster-up` / `make cluster-down`) runs the same code for humans, detached from the shell.

Must not: send traffic anywhere but loopback and the node's namespace, skip when a kernel feature is
missing (`preflight()` names the missing piece), leave anything behind, or know about Dockyard beyond
the names of the images it imports.
"""

from __future__ import annotations

import argparse
import base64
import collections.abc
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

import tests.support
from tests.support import kube, procs

NETNS = "dockyard-node"
HOST_VETH = "dy-host0"
NODE_VETH = "dy-node0"
HOST_IP = "10.213.0.1"
NODE_IP = "10.213.0.2"
NODE_NAME = "dockyard-node"
POD_CIDR = "10.214.0.0/24"
SERVICE_CIDR = "10.215.0.0/24"
KUBERNETES_SERVICE_IP = "10.215.0.1"
API_PORT = 6443
BRIDGE = "dockyard0"
RECORD = Path("/run/dockyard-cluster.json")
LOCK = Path("/run/dockyard-cluster.lock")
CERTS_DIRS = (Path("/etc/containerd/certs.d"), Path("/etc/docker/certs.d"), Path("/etc/containers/certs.d"))
KUBELET_FIXED = Path("/var/lib/kubelet")
CONTAINERD_RUN = Path("/run/containerd")
GLOBAL_SYSCTLS = ("kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CNI_BIN = Path("/usr/lib/cni")
RUNC = Path("/usr/sbin/runc")
PAUSE_IMAGE = "localhost/dockyard/pause:3.10"
START_TIMEOUT = 120.0
STOP_GRACE = 10.0
COMPONENTS = (  # in start order
    "containerd",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "coredns",
)


class ClusterError(RuntimeError):
    """The cluster could not start or stop; the message names the component and carries its log tail."""


# --- small helpers -------------------------------------------------------------------------------


def _run(*argv: str, check: bool = True, input: str | None = None, timeout: float = 60) -> str:
    done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise ClusterError(
            f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout


def _die_with_parent() -> None:
    # The test session's components die with pytest (even on SIGKILL); `cluster up` detaches instead.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _read_sysctl(name: str) -> str:
    return (Path("/proc/sys") / name).read_text().strip()


def _write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        (Path("/proc/sys") / name).write_text(value)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _kill_all(pids: collections.abc.Iterable[int], *, grace: float) -> None:
    """SIGTERM every pid, wait up to `grace` seconds for all of them together, SIGKILL the rest."""
    pids = [pid for pid in pids if _pid_alive(pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_pid_alive(pid) for pid in pids):
        for pid in pids:  # reap our own children so they do not linger as zombies
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


def mounts_under(prefixes: collections.abc.Iterable[str]) -> list[str]:
    """Mount points at or under any of `prefixes`, deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == p or point.startswith(p.rstrip("/") + "/") for p in prefixes):
            points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


def _unmount(points: collections.abc.Iterable[str]) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    for point in points:
        libc.umount2(point.encode(), 2)  # MNT_DETACH: a busy mount goes as soon as it can


def kubepods_cgroups() -> list[Path]:
    """Every cgroup directory named kubepods* (and below), in every v1 hierarchy and v2, deepest first."""
    found: list[Path] = []
    if not CGROUP_ROOT.is_dir():
        return found
    for hierarchy in CGROUP_ROOT.iterdir():
        for top in hierarchy.glob("kubepods*"):
            if top.is_dir():
                found.extend(p for p in top.rglob("*") if p.is_dir())
                found.append(top)
    return sorted(found, key=lambda p: -len(p.parts))


def _cgroup_pids(groups: collections.abc.Iterable[Path]) -> set[int]:
    pids: set[int] = set()
    for group in groups:
        with contextlib.suppress(OSError):
            pids.update(int(line) for line in (group / "cgroup.procs").read_text().split())
    return pids


# --- the record of a run: enough to undo it even after a crash -------------------------------------


@dataclasses.dataclass
class Record:
    workdir: str
    pids: dict[str, int] = dataclasses.field(default_factory=dict)
    sysctls: dict[str, str] = dataclasses.field(default_factory=dict)
    certs_before: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    existed: dict[str, bool] = dataclasses.field(default_factory=dict)
    netns_before: list[str] = dataclasses.field(default_factory=list)

    def save(self) -> None:
        tmp = RECORD.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=1))
        tmp.replace(RECORD)

    @classmethod
    def load(cls) -> Record | None:
        try:
            return cls(**json.loads(RECORD.read_text()))
        except FileNotFoundError:
            return None


def _try_lock() -> int | None:
    """The machine's node lock as an open descriptor (not inherited unless passed on), or None: held."""
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def node_is_live() -> bool:
    """Whether a node (this run's or another's) holds the machine's node lock right now."""
    fd = _try_lock()
    if fd is None:
        return True
    os.close(fd)
    return False


def _netns_entries() -> list[str]:
    directory = Path("/run/netns")
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def clean_up(record: Record, *, log: collections.abc.Callable[[str], None] = lambda _: None) -> list[str]:
    """Undo everything a run did (see the module docstring); returns what was left and could not go."""
    workdir = record.workdir
    # 1. components, then whatever still runs for this node: shims, containers (kubepods cgroups). A PID is
    # only trusted while its command line names the run's directory (every component's does): after a
    # reboot the record may outlive the processes, and their PIDs may belong to anyone.
    _kill_all([pid for pid in record.pids.values() if workdir in cmdline(pid)], grace=STOP_GRACE)
    strays = {
        pid
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit())
        if pid != os.getpid() and workdir in cmdline(pid)
    }
    groups = kubepods_cgroups()
    _kill_all(strays | _cgroup_pids(groups), grace=2.0)
    # 2. mounts: the run's directory (overlay snapshots, pod volumes), pod netns files, shim state.
    new_netns = [
        name for name in _netns_entries() if name.startswith("cni-") and name not in record.netns_before
    ]
    _unmount(mounts_under([workdir, *(f"/run/netns/{name}" for name in new_netns)]))
    for name in new_netns:
        with contextlib.suppress(OSError):
            (Path("/run/netns") / name).unlink()
    # 3. cgroups (empty now), leaf first; a cgroup still busy shows up in `left`.
    for group in kubepods_cgroups():
        with contextlib.suppress(OSError):
            group.rmdir()
    # 4. the node's network namespace: veth pair, bridge, iptables rules and per-namespace sysctls.
    if NETNS in _netns_entries():
        _run("ip", "netns", "delete", NETNS, check=False)
    # 5. global sysctls the kubelet changed.
    for name, value in record.sysctls.items():
        _write_sysctl(name, value)
    # 6. files outside the run's directory: only entries that were not there before.
    for directory in CERTS_DIRS:
        before = set(record.certs_before.get(str(directory), []))
        if directory.is_dir():
            for entry in directory.iterdir():
                if entry.name not in before:
                    log(f"removing {entry} (written during the run)")
                    shutil.rmtree(entry, ignore_errors=True)
    for path in (KUBELET_FIXED, CONTAINERD_RUN, *CERTS_DIRS):
        if not record.existed.get(str(path), True):
            _unmount(mounts_under([str(path)]))
            shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(workdir, ignore_errors=True)
    RECORD.unlink(missing_ok=True)
    left = []
    if NETNS in _netns_entries():
        left.append(f"network namespace {NETNS}")
    left += [str(group) for group in kubepods_cgroups()]
    left += mounts_under([workdir])
    left += [str(pid) for pid in record.pids.values() if _pid_alive(pid) and workdir in cmdline(pid)]
    return left


# --- preflight: name the exact missing piece -----------------------------------------------------------


def preflight() -> list[str]:
    """What this machine lacks for a node, one sentence each (empty: nothing)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root: the node needs network namespaces, mounts and cgroups (run as root)")
    for tool in ("ip", "nsenter", "iptables", "conntrack", "containerd", "ctr"):
        if shutil.which(tool) is None:
            missing.append(f"`{tool}` is not on PATH (hack/setup.sh installs it from Debian)")
    if not RUNC.is_file():
        missing.append(f"{RUNC} (Debian's runc; crun refuses hybrid cgroup layouts)")
    for plugin in ("bridge", "host-local", "portmap"):
        if not (CNI_BIN / plugin).is_file():
            missing.append(f"CNI plugin {CNI_BIN / plugin} (Debian's containernetworking-plugins)")
    if "overlay" not in Path("/proc/filesystems").read_text():
        missing.append("the overlay file system (kernel: CONFIG_OVERLAY_FS) for containerd's snapshotter")
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        missing.append("br_netfilter (kernel: CONFIG_BRIDGE_NETFILTER; /proc/sys/net/bridge is absent)")
    if not (CGROUP_ROOT / "memory").is_dir() and not (CGROUP_ROOT / "cgroup.controllers").exists():
        missing.append(f"a cgroup memory controller under {CGROUP_ROOT}")
    return missing


# --- the cluster -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Component:
    name: str
    pid: int
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return _pid_alive(self.pid)

    def check_alive(self) -> None:
        if not self.alive():
            raise ClusterError(
                f"{self.name} (pid {self.pid}) exited; last lines of {self.log}:\n{procs.tail(self.log)}"
            )


@dataclasses.dataclass(frozen=True)
class CredentialProviders:
    """Kubelet image credential providers: `--image-credential-provider-config` and `-bin-dir`.

    `config` is the CredentialProviderConfig (kubelet.config.k8s.io/v1) as written to the kubelet's
    directory; `executables` maps each provider's name (the file the kubelet runs from its bin dir) to
    the text of an executable written there (e.g. a shell wrapper that execs a Python module).
    """

    config: dict[str, Any]
    executables: dict[str, str]


class Cluster:
    """One real node. Use as a context manager (tests) or `start(detach=True)` / `stop_recorded()` (CLI).

    `images` are `(name, archive)` pairs imported into containerd before the kubelet starts; the pause
    image must be among them.
    """

    def __init__(
        self,
        *,
        images: collections.abc.Sequence[tuple[str, Path]] = (),
        detach: bool = False,
        wait: float = 0.0,
        credential_providers: CredentialProviders | None = None,
    ):
        self.images = list(images)
        self.credential_providers = credential_providers
        self.detach = detach
        self.wait = wait  # seconds to wait for another live node on this machine to stop
        self._lock: int | None = None
        self.workdir = Path()
        self.components: list[Component] = []
        self.record: Record | None = None
        self.log_lines: list[str] = []

    # paths ---------------------------------------------------------------------------------------------

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def kubeconfig(self) -> Path:
        """The admin (system:masters) kubeconfig for clients on this machine (server: the node IP)."""
        return self.workdir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{NODE_IP}:{API_PORT}"

    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    def component_log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    # lifecycle -----------------------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _say(self, text: str) -> None:
        self.log_lines.append(text)
        print(f"cluster: {text}", file=sys.stderr, flush=True)

    def start(self) -> None:
        missing = preflight()
        if missing:
            raise ClusterError("this machine cannot run the node: " + "; ".join(missing))
        for name in COMPONENTS:
            if name == "containerd":
                continue  # Debian's, checked by preflight()
            tests.support.tool(name)  # fail early, naming the build command
        self._acquire_machine()
        leftover = Record.load()  # with the lock free, only a crashed run can have left it
        if leftover is not None:
            self._say(f"an earlier run left {leftover.workdir} behind: cleaning it up first")
            left = clean_up(leftover, log=self._say)
            if left:
                raise ClusterError(f"could not remove an earlier run's leftovers: {left}")
        self.workdir = Path(tempfile.mkdtemp(prefix="dockyard-node-"))
        self.workdir.chmod(0o755)  # kubelet volume paths must be reachable by containers' non-root users
        (self.workdir / "logs").mkdir()
        self.record = Record(
            workdir=str(self.workdir),
            sysctls={name: _read_sysctl(name) for name in GLOBAL_SYSCTLS},
            certs_before={
                str(d): sorted(p.name for p in d.iterdir()) if d.is_dir() else [] for d in CERTS_DIRS
            },
            existed={str(p): p.exists() for p in (KUBELET_FIXED, CONTAINERD_RUN, *CERTS_DIRS)},
            netns_before=_netns_entries(),
        )
        self.record.save()
        started = time.monotonic()
        self._network()
        self._pki()
        self._start_containerd()
        self._import_images()
        self._start_etcd()
        self._start_apiserver()
        self._start_controller_manager()
        self._start_scheduler()
        self._start_kubelet()
        self._start_proxy()
        self._start_coredns()
        self._wait_ready()
        self._say(
            f"node {NODE_NAME} Ready in {time.monotonic() - started:.1f}s; kubeconfig {self.kubeconfig}"
        )

    def _acquire_machine(self) -> None:
        deadline = time.monotonic() + self.wait
        said = False
        while (fd := _try_lock()) is None:
            if time.monotonic() >= deadline:
                record = Record.load()
                raise ClusterError(
                    "another node is running on this machine"
                    + (f" ({record.workdir})" if record else "")
                    + (f"; waited {self.wait:.0f}s" if self.wait else "")
                    + ": `make cluster-down` stops it, or let the run that started it finish"
                )
            if not said:
                self._say(f"another node runs on this machine: waiting up to {self.wait:.0f}s for it to stop")
                said = True
            time.sleep(2.0)
        self._lock = fd

    def _release_machine(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def stop(self) -> None:
        """Stop everything and undo what the node changed; raises when something could not be removed."""
        if self.record is None:
            self._release_machine()
            return
        # Node components and controllers first, the API server and etcd last (it waits for clients).
        order = [
            "kubelet",
            "kube-proxy",
            "coredns",
            "kube-scheduler",
            "kube-controller-manager",
            "containerd",
        ]
        first = [c for c in self.components if c.name in order]
        with concurrent.futures.ThreadPoolExecutor() as pool:
            list(pool.map(lambda c: _kill_all([c.pid], grace=STOP_GRACE), first))
        left = clean_up(self.record, log=self._say)
        for component in self.components:
            if component.popen is not None:
                with contextlib.suppress(Exception):
                    component.popen.wait(timeout=1)
        self.components.clear()
        self.record = None
        self._release_machine()
        if left:
            raise ClusterError(f"the node left these behind: {left}")

    # the network namespace ---------------------------------------------------------------------------

    def _network(self) -> None:
        _run("ip", "netns", "add", NETNS)
        _run("ip", "link", "add", HOST_VETH, "type", "veth", "peer", "name", NODE_VETH)
        _run("ip", "link", "set", NODE_VETH, "netns", NETNS)
        _run("ip", "addr", "add", f"{HOST_IP}/24", "dev", HOST_VETH)
        _run("ip", "link", "set", HOST_VETH, "up")
        self.inside("ip", "addr", "add", f"{NODE_IP}/24", "dev", NODE_VETH)
        self.inside("ip", "link", "set", NODE_VETH, "up")
        self.inside("ip", "link", "set", "lo", "up")
        # No default route inside: nothing in the node can reach past the machine. Host → Service IPs
        # go through the node (clients here use the node IP and NodePorts instead).
        for name, value in (
            ("net/ipv4/ip_forward", "1"),
            ("net/bridge/bridge-nf-call-iptables", "1"),
            ("net/bridge/bridge-nf-call-ip6tables", "1"),
        ):
            self.inside("sh", "-c", f"echo {value} > /proc/sys/{name}")

    def inside(
        self,
        *argv: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the node's network namespace (mounts and cgroups stay the machine's)."""
        done = subprocess.run(
            ["nsenter", f"--net=/run/netns/{NETNS}", "--", *argv],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        if check and done.returncode != 0:
            raise ClusterError(
                f"{' '.join(argv)} (in the node) exited {done.returncode}:\n{done.stderr.strip()}"
            )
        return done

    # PKI and kubeconfigs -----------------------------------------------------------------------------------

    def _pki(self) -> None:
        kube.write_pki(self.pki, server_ips=("127.0.0.1", NODE_IP, KUBERNETES_SERVICE_IP))
        for name, cn, orgs in (
            ("kubelet", f"system:node:{NODE_NAME}", ("system:nodes",)),
            ("kube-proxy", "system:kube-proxy", ()),
            ("kube-scheduler", "system:kube-scheduler", ()),
            ("kube-controller-manager", "system:kube-controller-manager", ()),
            ("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)),
        ):
            kube.issue_client_cert(self.pki, name=name, common_name=cn, organizations=orgs)
        self._write_kubeconfig(self.kubeconfig, user="admin", server=self.server)
        for user in ("admin", "kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager"):
            self._write_kubeconfig(
                self._inner_kubeconfig(user), user=user, server=f"https://127.0.0.1:{API_PORT}"
            )

    def _inner_kubeconfig(self, user: str) -> Path:
        return self.workdir / f"{user}.inner.kubeconfig"

    def _write_kubeconfig(self, path: Path, *, user: str, server: str) -> None:
        def data(name: str) -> str:
            return base64.b64encode((self.pki / name).read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "dockyard-node",
                    "cluster": {"server": server, "certificate-authority-data": data("ca.crt")},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": data(f"{user}.crt"),
                        "client-key-data": data(f"{user}.key"),
                    },
                }
            ],
            "contexts": [{"name": "dockyard-node", "context": {"cluster": "dockyard-node", "user": user}}],
            "current-context": "dockyard-node",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    # components ---------------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], *, hold_lock: bool = False) -> Component:
        """Start a component in the node's namespace; `hold_lock`: it inherits the machine's node lock."""
        log = self.component_log(name)
        with log.open("ab") as out:
            popen = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{NETNS}", "--", *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(self._lock,) if hold_lock and self._lock is not None else (),
                preexec_fn=None if self.detach else _die_with_parent,
                start_new_session=self.detach,
            )
        component = Component(name=name, pid=popen.pid, log=log, popen=popen)
        self.components.append(component)
        assert self.record is not None
        self.record.pids[name] = popen.pid
        self.record.save()
        return component

    def _wait(self, component: Component, probe: collections.abc.Callable[[], bool], *, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            component.check_alive()
            with contextlib.suppress(Exception):
                if probe():
                    return
            time.sleep(0.3)
        raise ClusterError(
            f"{component.name}: {what} not reached after {START_TIMEOUT:.0f}s; "
            f"last lines of {component.log}:\n{procs.tail(component.log)}"
        )

    def _start_containerd(self) -> None:
        base = self.workdir / "containerd"
        cni_conf = self.workdir / "cni" / "net.d"
        cni_conf.mkdir(parents=True)
        (cni_conf / "10-dockyard.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": "node-pods",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isGateway": True,
                            "ipMasq": True,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_CIDR}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(self.workdir / "cni" / "ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                },
                indent=1,
            )
        )
        config = f"""version = 2
root = "{base}/root"
state = "{base}/state"
# Plugins that would write outside this run's directory or are of no use on this node.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{base}/containerd.sock.ttrpc"
[debug]
  address = "{base}/debug.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # runc cannot lower oom_score_adj below its parent's without CAP_SYS_RESOURCE (sandboxes fail otherwise).
  restrict_oom_score_adj = true
  enable_unprivileged_ports = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{RUNC}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    # Where the node-trust agent writes hosts.toml; containerd reads it on every pull, no restart.
    config_path = "{CERTS_DIRS[0]}"
"""
        base.mkdir()
        (base / "config.toml").write_text(config)
        containerd = self._spawn("containerd", ["containerd", "--config", str(base / "config.toml")])
        self._wait(containerd, lambda: self.ctr("version", check=False).returncode == 0, what="its socket")

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`ctr` against this node's containerd, in the Kubernetes namespace."""
        done = subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise ClusterError(f"ctr {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def _import_images(self) -> None:
        for name, archive in self.images:
            self.ctr("images", "import", str(archive))
            if name not in self.ctr("images", "ls", "-q").stdout.split():
                raise ClusterError(f"importing {archive} did not produce image {name}")

    def _start_etcd(self) -> None:
        etcd = self._spawn(
            "etcd",
            [
                str(tests.support.tool("etcd")),
                "--name=node",
                f"--data-dir={self.workdir / 'etcd'}",
                "--listen-client-urls=http://127.0.0.1:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=node=http://127.0.0.1:2380",
                "--unsafe-no-fsync",
                "--log-level=warn",
                "--listen-metrics-urls=http://127.0.0.1:2381",
            ],
            hold_lock=True,  # etcd starts no children: the lock is free exactly when it is gone
        )
        self._wait(
            etcd,
            lambda: self.inside("bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/2379", check=False).returncode == 0,
            what="its client port",
        )

    def _start_apiserver(self) -> None:
        pki = self.pki
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(tests.support.tool("kube-apiserver")),
                "--etcd-servers=http://127.0.0.1:2379",
                "--bind-address=0.0.0.0",
                f"--secure-port={API_PORT}",
                f"--advertise-address={NODE_IP}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                f"--cert-dir={self.workdir / 'apiserver'}",
            ],
        )
        self._wait(
            apiserver,
            lambda: self.kubectl("get", "--raw=/readyz", check=False).returncode == 0,
            what="/readyz",
        )

    def _start_controller_manager(self) -> None:
        self._spawn(
            "kube-controller-manager",
            [
                str(tests.support.tool("kube-controller-manager")),
                f"--kubeconfig={self._inner_kubeconfig('admin')}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--root-ca-file={self.pki / 'ca.crt'}",
                f"--service-account-private-key-file={self.pki / 'sa.key'}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
            ],
        )

    def _start_scheduler(self) -> None:
        self._spawn(
            "kube-scheduler",
            [
                str(tests.support.tool("kube-scheduler")),
                f"--kubeconfig={self._inner_kubeconfig('kube-scheduler')}",
                f"--authentication-kubeconfig={self._inner_kubeconfig('kube-scheduler')}",
                f"--authorization-kubeconfig={self._inner_kubeconfig('kube-scheduler')}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
            ],
        )

    def _start_kubelet(self) -> None:
        root = self.workdir / "kubelet"
        root.mkdir()
        resolv = self.workdir / "resolv.conf"
        resolv.write_text(f"nameserver {NODE_IP}\n")  # never the machine's resolver
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "readOnlyPort": 0,
            "address": NODE_IP,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "failSwapOn": False,
            "clusterDNS": [NODE_IP],
            "clusterDomain": "cluster.local",
            "resolvConf": str(resolv),
            # Small disks: never evict or collect images because the machine's disk is busy.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "healthzBindAddress": "127.0.0.1",
            "serializeImagePulls": False,
            "registerNode": True,
        }
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        argv = [
            str(tests.support.tool("kubelet")),
            f"--config={root / 'config.yaml'}",
            f"--kubeconfig={self._inner_kubeconfig('kubelet')}",
            f"--root-dir={root}",
            f"--cert-dir={root / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
        ]
        if self.credential_providers is not None:
            argv += self._credential_provider_flags(self.workdir / "credential-providers")
        self._spawn("kubelet", argv)

    def _credential_provider_flags(self, directory: Path) -> list[str]:
        """Write the providers' config and executables under `directory`; the kubelet flags naming them."""
        assert self.credential_providers is not None
        bin_dir = directory / "bin"
        bin_dir.mkdir(parents=True)
        for name, text in self.credential_providers.executables.items():
            executable = bin_dir / name
            executable.write_text(text)
            executable.chmod(0o755)
        config = directory / "config.yaml"
        config.write_text(yaml.safe_dump(self.credential_providers.config, sort_keys=False))
        return [
            f"--image-credential-provider-config={config}",
            f"--image-credential-provider-bin-dir={bin_dir}",
        ]

    def _start_proxy(self) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self._inner_kubeconfig("kube-proxy"))},
            "mode": "iptables",
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": POD_CIDR,
            # 127.0.0.0/8: NodePorts answer on localhost inside the node (kube-proxy sets route_localnet).
            "nodePortAddresses": ["127.0.0.0/8", f"{NODE_IP}/32"],
            "conntrack": {"maxPerCore": 0, "min": 0},  # leave the machine-wide nf_conntrack_max alone
            "metricsBindAddress": "127.0.0.1:10249",
            "healthzBindAddress": "127.0.0.1:10256",
        }
        path = self.workdir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        self._spawn("kube-proxy", [str(tests.support.tool("kube-proxy")), f"--config={path}"])

    def _start_coredns(self) -> None:
        corefile = self.workdir / "Corefile"
        corefile.write_text(f""".:53 {{
    bind {NODE_IP}
    errors
    ready 127.0.0.1:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {self._inner_kubeconfig("admin")} dockyard-node
        pods insecure
    }}
    cache 30
}}
""")
        # No `forward`: the node has no way out, and names outside the cluster must not leave it.
        coredns = self._spawn("coredns", [str(tests.support.tool("coredns")), "-conf", str(corefile)])
        self._wait(
            coredns,
            lambda: self.inside("bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8181", check=False).returncode == 0,
            what="its ready port",
        )

    def _wait_ready(self) -> None:
        kubelet = next(c for c in self.components if c.name == "kubelet")

        def node_ready() -> bool:
            for component in self.components:
                component.check_alive()
            out = self.kubectl(
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                check=False,
            )
            return out.stdout.strip() == "True"

        self._wait(kubelet, node_ready, what="Node Ready")

        def default_account() -> bool:
            return (
                self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0
            )

        kcm = next(c for c in self.components if c.name == "kube-controller-manager")
        self._wait(kcm, default_account, what="the default ServiceAccount")

    # clients ------------------------------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """kubectl against the node's API server (from this machine, through the node IP)."""
        argv = [str(kube.kubectl_binary()), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {done.returncode}:\n{done.stderr.strip()}")
        return done

    def host_volume(
        self, *, name: str, size: str, uid: int, gid: int, claim: tuple[str, str] | None = None
    ) -> Path:
        """A hostPath PersistentVolume on the node, owned by `uid:gid` (hostPath ignores fsGroup)."""
        path = self.workdir / "volumes" / name
        path.mkdir(parents=True)
        os.chown(path, uid, gid)
        path.chmod(0o2770)
        volume: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(path), "type": "Directory"},
            },
        }
        if claim is not None:
            volume["spec"]["claimRef"] = {"namespace": claim[0], "name": claim[1]}
        self.kubectl("apply", "-f", "-", input=json.dumps(volume))
        return path

    def pid(self, name: str) -> int:
        """The PID of a running component (e.g. to prove containerd was never restarted)."""
        return next(c.pid for c in self.components if c.name == name)

    def alive(self, name: str) -> bool:
        return next(c for c in self.components if c.name == name).alive()

    def logs(self, *, lines: int = 60) -> dict[str, str]:
        """The last lines of every component's log (attached to failing tests)."""
        return {c.name: procs.tail(c.log, lines=lines) for c in self.components}


# --- make cluster-up / cluster-down --------------------------------------------------------------------


def image_list() -> list[tuple[str, Path]]:
    """`(image name, archive)` of every image the node runs, built (or found cached) by hack/images.sh."""
    out = _run("bash", str(tests.support.ROOT / "hack" / "images.sh"), timeout=3600)
    pairs = []
    for line in out.splitlines():
        if line.strip():
            name, archive = line.split()
            pairs.append((name, Path(archive)))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.cluster", description=__doc__.split("\n")[0]
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="up: wait this long for another live node on this machine to stop (default: refuse at once)",
    )
    args = parser.parse_args(argv)
    if args.action == "up":
        cluster = Cluster(images=image_list(), detach=True, wait=args.wait)
        try:
            cluster.start()
        except ClusterError as exc:
            cluster.stop()
            print(f"cluster: {exc}", file=sys.stderr)
            return 2
        except BaseException:
            cluster.stop()
            raise
        print(cluster.kubeconfig)
        print(
            f"cluster: export KUBECONFIG={cluster.kubeconfig}; clients for localhost:<nodePort> run with "
            f"`nsenter --net=/run/netns/{NETNS} -- <command>`; `make cluster-down` stops it",
            file=sys.stderr,
        )
        return 0
    record = Record.load()
    if args.action == "status":
        if record is None:
            print("cluster: not running", file=sys.stderr)
            return 1
        alive = {name: _pid_alive(pid) for name, pid in record.pids.items()}
        print(json.dumps({"workdir": record.workdir, "live": node_is_live(), "alive": alive}, indent=1))
        return 0
    if record is None:
        print("cluster: nothing to stop", file=sys.stderr)
        return 0
    left = clean_up(record, log=lambda text: print(f"cluster: {text}", file=sys.stderr))
    if left:
        print(f"cluster: could not remove {left}", file=sys.stderr)
        return 1
    print("cluster: stopped and cleaned up", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
