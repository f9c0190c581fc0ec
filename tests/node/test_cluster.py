"""The node harness itself: a crashed run's leftovers are found and removed before the next node starts.

Covers: `python -m tests.support.cluster up` (what `make cluster-up` runs) starts a detached node that runs a
Pod; every component is then killed with SIGKILL, as a crash would, leaving containerd's shims, the Pod's
container, mounts, cgroups, the node's network namespace and the run's record behind; the next node's start
removes all of it (and the certs.d entry written during the crashed run), comes up Ready, and its own stop
leaves nothing: no process, mount, cgroup, network namespace, `/run/containerd`, record or directory.

Also: while that node is live, a second start on the machine is refused (or waits, `wait=`) and leaves the
live node alone; it is never taken for a crashed run's leftovers.

Runs before this directory's node (the `node` fixture of test_seed_flow.py): two nodes cannot share a machine,
and a node of another run on this machine (a developer's `make cluster-up`, a second `make test`) is waited
for.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import tests.support
from tests.support import cluster, kube

pytestmark = [pytest.mark.integration, pytest.mark.node, pytest.mark.timeout(900)]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.support.cluster", *args],
        cwd=tests.support.ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_a_crashed_node_is_cleaned_up_by_the_next_start(tmp_path: Path) -> None:
    up = _cli("up", "--wait", "1800")
    assert up.returncode == 0, up.stderr[-4000:]
    kubeconfig = Path(up.stdout.split()[-1])
    record = cluster.Record.load()
    assert record is not None
    workdir = record.workdir

    def kubectl(*args: str) -> str:
        argv = [str(kube.kubectl_binary()), f"--kubeconfig={kubeconfig}", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "survivor", "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "c", "image": "localhost/dockyard/busybox:stable", "command": ["sleep", "3600"]}
            ],
        },
    }
    subprocess.run(
        [str(kube.kubectl_binary()), f"--kubeconfig={kubeconfig}", "apply", "-f", "-"],
        input=json.dumps(pod),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    kube.eventually(
        lambda: kubectl("get", "pod", "survivor", "-o", "jsonpath={.status.phase}") == "Running",
        timeout=120,
        what="Pod survivor Running",
    )
    # A second node while this one is live: refused by name, nothing of the live node touched.
    assert cluster.node_is_live()
    second = _cli("up")
    assert second.returncode == 2, second.stderr[-2000:]
    assert "another node is running on this machine" in second.stderr
    assert workdir in second.stderr
    refused = cluster.Cluster(images=[], wait=3)
    with pytest.raises(cluster.ClusterError, match="another node is running"):
        refused.start()
    refused.stop()  # nothing of its own to undo: it must not touch the live node
    assert cluster.Record.load() == record
    assert kubectl("get", "pod", "survivor", "-o", "jsonpath={.status.phase}") == "Running"

    crashed_entry = cluster.CERTS_DIRS[0] / "crashed.example.test:5000"
    crashed_entry.mkdir(parents=True)

    # The crash: every component dies at once; shims, the container and all state stay behind.
    for pid in record.pids.values():
        os.kill(pid, signal.SIGKILL)
    kube.eventually(
        lambda: (
            not any(
                Path(f"/proc/{pid}").exists() and workdir in cluster.cmdline(pid)
                for pid in record.pids.values()
            )
        ),
        timeout=30,
        what="the components to die",
    )
    assert cluster.NETNS in os.listdir("/run/netns")
    assert any(workdir in cluster.cmdline(int(p)) for p in os.listdir("/proc") if p.isdigit()), (
        "no shim survived"
    )

    # etcd held the lock; a crash frees it: the record is a leftover now. Freed once the killed holder's
    # exit closed its files, a moment after its command line went empty (the wait above), so waited for.
    kube.eventually(lambda: not cluster.node_is_live(), timeout=30, what="the crashed node's lock to be free")
    with cluster.Cluster(images=[]) as fresh:
        assert fresh.workdir != Path(workdir)
        assert not Path(workdir).exists()
        assert not crashed_entry.exists()
        nodes = fresh.kubectl("get", "pods", "-A", "-o", "name").stdout
        assert "survivor" not in nodes  # a new etcd: nothing of the crashed cluster
        fresh_workdir = str(fresh.workdir)

    assert cluster.Record.load() is None
    assert cluster.NETNS not in (os.listdir("/run/netns") if Path("/run/netns").is_dir() else [])
    assert not Path(fresh_workdir).exists()
    assert not cluster.mounts_under([workdir, fresh_workdir])
    assert not cluster.kubepods_cgroups()
    assert not [p for p in os.listdir("/proc") if p.isdigit() and fresh_workdir in cluster.cmdline(int(p))]
    if not record.existed.get(str(cluster.CONTAINERD_RUN), True):
        assert not cluster.CONTAINERD_RUN.exists()
